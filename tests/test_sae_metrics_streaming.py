"""sae.metrics.reconstruction_metrics: streaming sums equal the metrics of the whole dataset."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxemb.sae import SparseCode, metrics


def np_metrics(x, x_hat, dense, eps=1e-8):
    """The dataset-level metrics in float64, written from their definitions."""
    x, x_hat, z = (np.asarray(a, np.float64) for a in (x, x_hat, dense))
    sse = np.sum((x - x_hat) ** 2)
    tv = np.sum((x - x.mean(0)) ** 2)
    nx = np.maximum(np.linalg.norm(x, axis=1), eps)
    nh = np.maximum(np.linalg.norm(x_hat, axis=1), eps)
    freq = np.mean(z != 0, axis=0)
    return {
        "rows": len(x),
        "fvu": sse / tv,
        "explained_variance": 1 - sse / tv,
        "mse": sse / x.size,
        "cosine": np.mean(np.sum(x * x_hat, 1) / (nx * nh)),
        "shrinkage": np.mean(np.linalg.norm(x_hat, axis=1) / nx),
        "l0": np.mean(np.sum(z != 0, 1)),
        "l1": np.mean(np.sum(np.abs(z), 1)),
        "firing_frequency": freq,
        "dead_fraction": np.mean(freq == 0),
    }


def _data(rng, n=50, d_in=6, d_sae=10, k=3, offset=20.0):
    # a large common offset: the variance must not come from Σ‖x‖² − ‖Σx‖² / n
    x = (rng.normal(size=(n, d_in)) + offset).astype(np.float32)
    x_hat = (x + 0.3 * rng.normal(size=x.shape)).astype(np.float32)
    idx = np.stack([rng.choice(d_sae - 2, k, replace=False) for _ in range(n)]).astype(np.int32)
    val = rng.uniform(0.5, 2.0, size=(n, k)).astype(np.float32)
    val[::4, -1] = 0.0  # zero values do not fire
    idx[::3, 1] = idx[::3, 0]  # a repeated index counts once per row (its values add up)
    dense = np.zeros((n, d_sae), np.float32)
    np.add.at(dense, (np.arange(n)[:, None].repeat(k, 1), idx), val)
    return x, x_hat, SparseCode(jnp.asarray(val), jnp.asarray(idx)), dense


def _stream(m, x, x_hat, code, cuts):
    state = m.init()
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        part = (
            SparseCode(code.values[a:b], code.indices[a:b])
            if isinstance(code, SparseCode)
            else code[a:b]
        )
        state = m.update(state, x[a:b], x_hat[a:b], part)
    return m.compute(state)


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
def test_streaming_equals_whole_dataset_reference(rng, sparse):
    x, x_hat, code, dense = _data(rng)
    m = metrics.reconstruction_metrics(6, 10)
    got = _stream(m, x, x_hat, code if sparse else jnp.asarray(dense), [0, 7, 8, 31, 50])
    want = np_metrics(x, x_hat, dense)
    assert set(got) == set(want)
    for key, value in want.items():
        np.testing.assert_allclose(np.asarray(got[key]), value, rtol=2e-5, atol=1e-7, err_msg=key)
    # the one-shot functions on the concatenation agree (fvu up to the float32 variance)
    np.testing.assert_allclose(got["l0"], metrics.l0(jnp.asarray(dense)), rtol=1e-6)
    np.testing.assert_allclose(got["cosine"], metrics.cosine(x, x_hat), rtol=1e-5)
    np.testing.assert_allclose(got["firing_frequency"], metrics.firing_frequency(code, 10))
    assert float(got["dead_fraction"]) == pytest.approx(0.2)  # latents 8 and 9 never fire


def test_sharded_batches_give_the_unsharded_sums(rng, mesh8):
    x, x_hat, code, dense = _data(rng, n=64)
    m = metrics.reconstruction_metrics(6, 10)
    plain = m.compute(m.update(m.init(), x, x_hat, code))
    rows = NamedSharding(mesh8, P("data"))
    sx, sh = jax.device_put(x, rows), jax.device_put(x_hat, rows)
    scode = SparseCode(*(jax.device_put(a, rows) for a in code))
    sharded = m.compute(m.update(m.init(), sx, sh, scode))
    for key in plain:
        np.testing.assert_allclose(
            np.asarray(sharded[key]), np.asarray(plain[key]), rtol=1e-5, err_msg=key
        )


def test_nan_input_gives_nan_and_bad_input_is_named(rng):
    x, x_hat, code, _ = _data(rng, n=8)
    m = metrics.reconstruction_metrics(6, 10)
    x_nan = x.copy()
    x_nan[3, 2] = np.nan
    out = m.compute(m.update(m.init(), x_nan, x_hat, code))
    assert np.isnan(float(out["fvu"])) and np.isnan(float(out["mse"]))
    with pytest.raises(ValueError, match="d_in=6"):
        m.update(m.init(), x[:, :5], x_hat[:, :5], code)
    with pytest.raises(ValueError, match="one row per row of x"):
        m.update(m.init(), x, x_hat, SparseCode(code.values[:4], code.indices[:4]))
    with pytest.raises(ValueError, match="d_sae"):
        m.update(m.init(), x, x_hat, SparseCode(code.values, code.indices + 5))
    with pytest.raises(ValueError, match="at least one row"):
        m.compute(m.init())
    with pytest.raises(ValueError, match="state must be a ReconstructionState"):
        m.update({}, x, x_hat, code)
    with pytest.raises(ValueError, match="d_sae"):
        metrics.reconstruction_metrics(6, 0)
