"""nt_xent and matryoshka against independent NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from losses_reference import normalize, numeric_grad
from losses_reference import nt_xent as np_nt_xent
from tolerances import assert_f32_close

from jaxemb.losses import matryoshka, nt_xent
from jaxemb.parallel import shard_batch


def _views(rng, n=8, d=6, noise=0.5):
    z1 = rng.normal(size=(n, d))
    z2 = z1 + noise * rng.normal(size=(n, d))
    return z1.astype(np.float32), z2.astype(np.float32)


@pytest.mark.parametrize("t", [0.05, 0.5, 1.0])
def test_nt_xent_value_and_grad(rng, t):
    z1, z2 = _views(rng)
    got = nt_xent(z1, z2, temperature=t)
    np.testing.assert_allclose(got, np_nt_xent(z1, z2, t), rtol=1e-5)
    g1, g2 = jax.grad(lambda a, b: nt_xent(a, b, temperature=t), argnums=(0, 1))(z1, z2)
    z1d, z2d = z1.astype(np.float64), z2.astype(np.float64)
    ref1 = numeric_grad(lambda a: np_nt_xent(a, z2d, t), z1d)
    ref2 = numeric_grad(lambda b: np_nt_xent(z1d, b, t), z2d)
    np.testing.assert_allclose(g1, ref1, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(g2, ref2, rtol=2e-3, atol=2e-4)


def test_nt_xent_labels_pml_semantics(rng):
    z1, z2 = _views(rng, n=10)
    labels = np.array([0, 1, 0, 2, 1, 3, 3, 0, 4, 2])
    got = nt_xent(z1, z2, temperature=0.1, labels=labels)
    np.testing.assert_allclose(got, np_nt_xent(z1, z2, 0.1, labels), rtol=1e-5)
    # all-distinct labels reduce to the unsupervised loss
    np.testing.assert_allclose(
        nt_xent(z1, z2, temperature=0.3, labels=np.arange(10)),
        nt_xent(z1, z2, temperature=0.3),
        rtol=1e-6,
    )
    # a single class has no negatives: every pair's loss is log(1) = 0, with finite gradients
    g = jax.grad(lambda a: nt_xent(a, z2, temperature=0.1, labels=np.zeros(10, int)))(z1)
    assert np.isfinite(np.asarray(g)).all()


def test_nt_xent_duplicates_zero_vectors_and_extremes(rng):
    z1, z2 = _views(rng)
    z1[3] = z1[2]
    z2[5] = 0.0
    for t, scale in [(1e-3, 1.0), (0.5, 1e4)]:
        val, g = jax.value_and_grad(lambda a, s=scale, tt=t: nt_xent(a * s, z2, temperature=tt))(z1)
        assert np.isfinite(val) and np.isfinite(np.asarray(g)).all()
    np.testing.assert_allclose(nt_xent(z1, z2, temperature=0.5), np_nt_xent(z1, z2, 0.5), rtol=1e-5)


def test_nt_xent_bfloat16_accumulates_in_float32(rng):
    z1, z2 = _views(rng)
    out = nt_xent(jnp.asarray(z1, jnp.bfloat16), jnp.asarray(z2, jnp.bfloat16), temperature=0.5)
    assert out.dtype == jnp.float32
    ref = np_nt_xent(
        np.asarray(jnp.asarray(z1, jnp.bfloat16), np.float64),
        np.asarray(jnp.asarray(z2, jnp.bfloat16), np.float64),
        0.5,
    )
    np.testing.assert_allclose(out, ref, rtol=1e-5)


def test_nt_xent_sharded_matches_single_device(rng, mesh8):
    z1, z2 = _views(rng, n=16)
    labels = np.arange(16) % 5
    f = jax.jit(jax.value_and_grad(lambda a, b, y: nt_xent(a, b, temperature=0.2, labels=y)))
    v1, g1 = f(z1, z2, labels)
    s1, s2, sl = shard_batch(mesh8, (z1, z2, labels))
    v8, g8 = f(s1, s2, sl)
    np.testing.assert_allclose(v8, v1, rtol=1e-5)
    assert_f32_close(g8, g1)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda z: nt_xent(z[0], z[0][:-1]), "z2"),
        (lambda z: nt_xent(z[0][0], z[0][0]), "z1"),
        (lambda z: nt_xent(z[0], z[0], temperature=0.0), "temperature"),
        (lambda z: nt_xent(z[0], z[0], temperature=-1.0), "temperature"),
        (lambda z: nt_xent(z[0].astype(np.int32), z[0].astype(np.int32)), "float"),
        (lambda z: nt_xent(z[0], z[0], labels=np.zeros(3, int)), "labels"),
        (lambda z: nt_xent(z[0][:0], z[0][:0]), "empty"),
    ],
)
def test_nt_xent_validation(call, match):
    z = (np.ones((4, 3), np.float32),)
    with pytest.raises(ValueError, match=match):
        call(z)


def test_matryoshka_sums_truncated_renormalised_losses(rng):
    z1, z2 = _views(rng, d=8)
    dims, weights = (8, 4, 2), (1.0, 0.5, 2.0)
    loss = matryoshka(nt_xent, dims, weights)
    expect = sum(
        w * np_nt_xent(normalize(z1[:, :m]), normalize(z2[:, :m]), 0.5)
        for m, w in zip(dims, weights)
    )
    np.testing.assert_allclose(loss(z1, z2, temperature=0.5), expect, rtol=1e-5)
    # labels (rank-1 ints) are passed through untouched
    labels = np.arange(8) % 3
    expect = sum(np_nt_xent(z1[:, :m], z2[:, :m], 0.5, labels) for m in dims)
    np.testing.assert_allclose(
        matryoshka(nt_xent, dims)(z1, z2, temperature=0.5, labels=labels), expect, rtol=1e-5
    )


def test_matryoshka_sampled_dims(rng):
    z1, z2 = _views(rng, d=8)
    dims = (8, 4, 2, 1)
    loss = matryoshka(nt_xent, dims, n_dims_per_step=2)
    per_dim = [np_nt_xent(z1[:, :m], z2[:, :m], 0.5) for m in dims]
    key = jax.random.key(3)
    chosen = np.asarray(jax.random.choice(key, 4, (2,), replace=False))
    np.testing.assert_allclose(
        loss(z1, z2, temperature=0.5, key=key), sum(per_dim[i] for i in chosen), rtol=1e-5
    )
    with pytest.raises(ValueError, match="key"):
        loss(z1, z2)


def test_matryoshka_validation(rng):
    z1, z2 = _views(rng, d=8)
    with pytest.raises(ValueError, match="dims"):
        matryoshka(nt_xent, dims=(16, 4))(z1, z2)
    with pytest.raises(ValueError, match="weights"):
        matryoshka(nt_xent, dims=(8, 4), weights=(1.0,))
    with pytest.raises(ValueError, match="dims"):
        matryoshka(nt_xent, dims=(8, 0))
    with pytest.raises(ValueError, match="n_dims_per_step"):
        matryoshka(nt_xent, dims=(8, 4), n_dims_per_step=3)
