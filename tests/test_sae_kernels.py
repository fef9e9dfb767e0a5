"""Sparse SAE kernels: sparse_decode and topk_encode (custom VJPs) vs NumPy float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxemb.sae._kernels as K
from jaxemb import sae

# ---------------------------------------------------------------------------------------------
# NumPy references


def np_sparse_decode(values, indices, W):
    out = np.zeros((values.shape[0], W.shape[1]))
    for n in range(values.shape[0]):
        for j in range(values.shape[1]):
            out[n] += values[n, j] * W[indices[n, j]]
    return out


def np_sparse_decode_grads(values, indices, W, g):
    """Gradients of Σ g ⊙ sparse_decode(values, indices, W)."""
    d_values = np.zeros(values.shape)
    d_W = np.zeros(W.shape)
    for n in range(values.shape[0]):
        for j in range(values.shape[1]):
            d_values[n, j] = g[n] @ W[indices[n, j]]
            d_W[indices[n, j]] += values[n, j] * g[n]
    return d_values, d_W


def np_topk(x, W_enc, b_enc, b_dec, k):
    pre = (x - b_dec) @ W_enc + b_enc
    acts = np.maximum(pre, 0.0)
    idx = np.argsort(-acts, axis=1, kind="stable")[:, :k]  # ties to the lower index
    return np.take_along_axis(acts, idx, axis=1), idx, pre


def np_topk_grads(x, W_enc, b_enc, b_dec, k, gv):
    """Gradients of Σ gv ⊙ values for values = top_k(relu(pre), k), via the dense chain rule."""
    _, idx, pre = np_topk(x, W_enc, b_enc, b_dec, k)
    d_pre = np.zeros(pre.shape)
    rows = np.arange(x.shape[0])[:, None]
    d_pre[rows, idx] = gv * (pre[rows, idx] > 0)
    xc = x - b_dec
    d_xc = d_pre @ W_enc.T
    return d_xc, xc.T @ d_pre, d_pre.sum(0), -d_xc.sum(0)


def _f64(*arrays):
    return [np.asarray(a, np.float64) for a in arrays]


# ---------------------------------------------------------------------------------------------
# sparse_decode


def _decode_case(rng, n=6, k=4, d_sae=10, d_in=5):
    values = rng.normal(size=(n, k)).astype(np.float32)
    indices = rng.integers(0, d_sae, (n, k)).astype(np.int32)
    indices[0, :4] = [3, 3, 3, 1]  # repeated indices in a row
    indices[1, :2] = [7, 7]
    values[2] = 0.0  # an all-zero row
    values[3, 1] = 0.0
    W = rng.normal(size=(d_sae, d_in)).astype(np.float32)
    g = rng.normal(size=(n, d_in)).astype(np.float32)
    return values, indices, W, g


@pytest.mark.parametrize("k", [4])
def test_sparse_decode_values_and_grads_match_numpy(rng, k):
    values, indices, W, g = _decode_case(rng)
    values, indices = values[:, :k], indices[:, :k]
    ref = np_sparse_decode(*_f64(values), indices, *_f64(W))
    fn = jax.jit(sae.sparse_decode)
    np.testing.assert_allclose(fn(values, indices, W), ref, rtol=1e-5, atol=1e-5)

    def loss(vals, W_):
        return jnp.sum(sae.sparse_decode(vals, indices, W_) * g)

    d_values, d_W = jax.jit(jax.grad(loss, argnums=(0, 1)))(values, W)
    r_values, r_W = np_sparse_decode_grads(*_f64(values), indices, *_f64(W, g))
    np.testing.assert_allclose(d_values, r_values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_W, r_W, rtol=1e-5, atol=1e-5)
    # Rows never selected get exact zeros (the scatter touches only the selected rows).
    unselected = np.setdiff1d(np.arange(W.shape[0]), indices)
    assert unselected.size > 0
    assert np.all(np.asarray(d_W)[unselected] == 0.0)


def test_sparse_decode_equals_densify_matmul_and_vmaps(rng):
    values, indices, W, _ = _decode_case(rng)
    dense = sae.densify(sae.SparseCode(jnp.asarray(values), jnp.asarray(indices)), W.shape[0])
    np.testing.assert_allclose(
        sae.sparse_decode(values, indices, W), np.asarray(dense) @ W, rtol=1e-5, atol=1e-5
    )
    # vmap over a leading batch of codes (and its gradient) equals the per-item results.
    vb, ib = np.stack([values, values[::-1]]), np.stack([indices, indices[::-1]])
    out = jax.vmap(lambda v, i: K._sparse_decode(v, i, jnp.asarray(W)))(vb, ib)
    for b in range(2):
        np.testing.assert_allclose(
            out[b], np_sparse_decode(*_f64(vb[b]), ib[b], *_f64(W)), rtol=1e-5, atol=1e-5
        )
    grads = jax.vmap(jax.grad(lambda v, i: jnp.sum(K._sparse_decode(v, i, jnp.asarray(W)))))(vb, ib)
    for b in range(2):
        ref, _ = np_sparse_decode_grads(*_f64(vb[b]), ib[b], *_f64(W), np.ones((6, 5)))
        np.testing.assert_allclose(grads[b], ref, rtol=1e-5, atol=1e-5)


def test_sparse_decode_bfloat16_accumulates_in_float32(rng):
    values, indices, W, g = _decode_case(rng, n=4, k=8, d_sae=10, d_in=3)
    vb, Wb = jnp.asarray(values, jnp.bfloat16), jnp.asarray(W, jnp.bfloat16)
    d_values, d_W = jax.grad(
        lambda v, W_: jnp.sum(K._sparse_decode(v, indices, W_).astype(jnp.float32) * g), (0, 1)
    )(vb, Wb)
    assert d_values.dtype == jnp.bfloat16 and d_W.dtype == jnp.bfloat16
    r_values, r_W = np_sparse_decode_grads(*_f64(vb), indices, *_f64(Wb, g))
    np.testing.assert_allclose(np.asarray(d_W, np.float64), r_W, rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(np.asarray(d_values, np.float64), r_values, rtol=2e-2, atol=2e-2)


# ---------------------------------------------------------------------------------------------
# topk_encode


def _encoder_case(rng, n=7, d_in=5, d_sae=12):
    x = rng.normal(size=(n, d_in)).astype(np.float32)
    W_enc = rng.normal(size=(d_in, d_sae)).astype(np.float32)
    b_enc = -np.abs(rng.normal(size=(d_sae,))).astype(np.float32)
    b_enc[[2, 5]] = [0.7, 0.3]
    b_dec = rng.normal(size=(d_in,)).astype(np.float32)
    x[0] = b_dec  # row 0: pre = b_enc has only 2 positives, so fewer than k of its values are > 0
    return x, W_enc, b_enc, b_dec


@pytest.mark.parametrize("k", [4])
def test_topk_encode_values_and_grads_match_numpy(rng, k):
    x, W_enc, b_enc, b_dec = _encoder_case(rng)
    values, indices = jax.jit(lambda *a: sae.topk_encode(*a, k=k))(x, W_enc, b_enc, b_dec)
    r_values, r_idx, pre = np_topk(*_f64(x, W_enc, b_enc, b_dec), k)
    assert np.any(r_values == 0.0), "the case must include rows with fewer than k positives"
    np.testing.assert_array_equal(indices, r_idx)
    np.testing.assert_allclose(values, r_values, rtol=1e-5, atol=1e-5)
    # Bit-identical to plain lax.top_k of the module's pre-activations.
    plain = jax.lax.top_k(jax.nn.relu((x - b_dec[None, :]) @ W_enc + b_enc[None, :]), k)
    np.testing.assert_array_equal(values, plain[0])

    gv = rng.normal(size=(x.shape[0], k)).astype(np.float32)

    def loss(*args):
        return jnp.sum(sae.topk_encode(*args, k=k)[0] * gv)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(x, W_enc, b_enc, b_dec)
    refs = np_topk_grads(*_f64(x, W_enc, b_enc, b_dec), k, gv.astype(np.float64))
    for name, got, ref in zip(("x", "W_enc", "b_enc", "b_dec"), grads, refs, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=name)
    unselected = np.setdiff1d(np.arange(W_enc.shape[1]), r_idx[r_values > 0])
    assert unselected.size > 0 and np.all(np.asarray(grads[1])[:, unselected] == 0.0)


def _check_topk_encode(rng, x, W_enc, b_enc, b_dec, k):
    """topk_encode's values, indices and the gradients of a random linear function of the values
    against the NumPy float64 references; returns the reference values."""
    values, indices = jax.jit(lambda *a: sae.topk_encode(*a, k=k))(x, W_enc, b_enc, b_dec)
    r_values, r_idx, _ = np_topk(*_f64(x, W_enc, b_enc, b_dec), k)
    np.testing.assert_array_equal(indices, r_idx)
    np.testing.assert_allclose(values, r_values, rtol=1e-5, atol=1e-5)
    gv = rng.normal(size=(x.shape[0], k)).astype(np.float32)
    grads = jax.jit(jax.grad(lambda *a: jnp.sum(sae.topk_encode(*a, k=k)[0] * gv), (0, 1, 2, 3)))(
        x, W_enc, b_enc, b_dec
    )
    refs = np_topk_grads(*_f64(x, W_enc, b_enc, b_dec), k, gv.astype(np.float64))
    for name, got, ref in zip(("x", "W_enc", "b_enc", "b_dec"), grads, refs, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=name)
    return r_values


def test_topk_encode_row_blocked_path_matches_numpy(rng, monkeypatch):
    """Large batches are encoded block of rows by block of rows (padding the last block)."""
    monkeypatch.setattr(K, "_BLOCK_BYTES", 3 * 12 * 4)  # 3 rows of [*, 12] per block
    x, W_enc, b_enc, b_dec = _encoder_case(rng, n=10, d_sae=12)
    assert K._row_blocks(10, 12) == 4  # 4 blocks of 3 rows, 2 padding rows
    _check_topk_encode(rng, x, W_enc, b_enc, b_dec, k=3)


def np_row_top_k(scores, k):
    """top_k per row in lax.top_k's order: value descending, then index ascending."""
    idx = np.stack([np.lexsort((np.arange(row.size), -row))[:k] for row in scores])
    return np.take_along_axis(scores, idx, axis=1), idx


@pytest.mark.parametrize(
    ("d", "k", "group"), [(256, 2, 32), (256, 4, 16), (96, 3, 8), (100, 3, 0), (64, 5, 0)]
)
@pytest.mark.parametrize("relu", [False, True])
def test_row_top_k_equals_top_k_of_whole_rows(rng, d, k, group, relu):
    """The grouped top-k (candidates from the k groups with the largest maxima) returns exactly
    lax.top_k's values and indices, ties included: scores are small integers (many ties, also
    across groups), one row is all equal, one has fewer than k positives, one is mostly -inf,
    and in one a tie is split between the last group (larger maximum) and the first."""
    assert K._group_size(d, k) == group  # the grouped path (group > 0) or the plain fallback
    scores = rng.integers(-3, 4, size=(12, d)).astype(np.float32)
    scores[0] = 1.0
    scores[1] = -1.0
    scores[1, [d - 1, 7]] = 2.0  # two positives, both outside the first group
    scores[2] = -np.inf
    scores[2, d // 2 :: 17] = 0.5
    scores[3] = -3.0
    scores[3, [d - 3, d - 2, 0]] = [3.0, 2.0, 2.0]  # the 2 of the first group must come first
    values, indices = jax.jit(lambda s: K.row_top_k(s, k, relu=relu))(scores)
    ref_scores = np.maximum(scores, 0.0) if relu else scores
    ref_values, ref_idx = np_row_top_k(ref_scores, k)
    np.testing.assert_array_equal(indices, ref_idx)
    np.testing.assert_array_equal(values, ref_values)
    plain = jax.lax.top_k(jax.nn.relu(scores) if relu else jnp.asarray(scores), k)
    np.testing.assert_array_equal(indices, plain[1])


def test_topk_encode_grouped_top_k_path_matches_numpy(rng):
    """At d_sae = 256, k = 4 the encoder takes its top-k through 16-wide groups."""
    x, W_enc, b_enc, b_dec = _encoder_case(rng, n=24, d_sae=256)
    k = 4
    assert K._group_size(256, k) == 16
    r_values = _check_topk_encode(rng, x, W_enc, b_enc, b_dec, k)
    assert np.any(r_values == 0.0) and np.any(r_values > 0.0)  # both kinds of slot were checked


def test_topk_sae_loss_grads_equal_plain_autodiff(rng):
    """TopKSAE's training loss (FVU + AuxK with dead latents) through the kernels equals the
    same loss written with plain autodiff (dense top_k and gather) to float32 rounding."""
    d_in, d_sae, k, n = 6, 24, 3, 32
    model = sae.TopKSAE(d_in, d_sae, k=k, rngs=nnx.Rngs(1), aux_coef=0.5)
    x = jnp.asarray(rng.normal(size=(n, d_in)), jnp.float32)
    mask = jnp.asarray(np.arange(d_sae) % 3 == 0)  # 8 dead latents, k_aux = d_in // 2 = 3
    graphdef, params = nnx.split(model, nnx.Param)

    def ours(p):
        return nnx.merge(graphdef, p).training_loss(x, dead_mask=mask)[0]

    def plain(p):
        W_enc, b_enc, W_dec, b_dec = (p[n][...] for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
        pre = (x - b_dec[None, :]) @ W_enc + b_enc[None, :]
        vals, idx = jax.lax.top_k(jax.nn.relu(pre), k)
        recon = jnp.einsum("nk,nkd->nd", vals, W_dec[idx]) + b_dec[None, :]
        tv = jnp.sum(jnp.square(x - x.mean(0)[None, :]))
        fvu = jnp.sum(jnp.square(x - recon)) / tv
        e = jax.lax.stop_gradient(x - recon)
        k_aux = d_in // 2
        a_vals, a_idx = jax.lax.top_k(jnp.where(mask[None, :], jax.nn.relu(pre), -jnp.inf), k_aux)
        e_hat = jnp.einsum("nk,nkd->nd", a_vals, W_dec[a_idx])
        scale = jnp.minimum(mask.sum() / k_aux, 1.0)
        return fvu + 0.5 * scale * jnp.sum(jnp.square(e_hat - e)) / tv

    (l1, g1) = jax.jit(jax.value_and_grad(ours))(params)
    (l2, g2) = jax.jit(jax.value_and_grad(plain))(params)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        a, b = np.asarray(g1[name][...]), np.asarray(g2[name][...])
        assert np.abs(b).max() > 0, name
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max(), err_msg=name)
    # Without dead latents AuxK is skipped (lax.cond) and is exactly zero.
    no_dead = jnp.zeros((d_sae,), bool)
    assert float(model.training_loss(x, dead_mask=no_dead)[1]["auxk"]) == 0.0


@pytest.mark.parametrize("block_bytes", [None, 4 * 32 * 4])
def test_kernels_sharded_over_mesh_equal_unsharded(mesh8, rng, monkeypatch, block_bytes):
    if block_bytes is not None:  # also the row-blocked encoder (4 blocks of 4 rows)
        monkeypatch.setattr(K, "_BLOCK_BYTES", block_bytes)
    x, W_enc, b_enc, b_dec = _encoder_case(rng, n=16, d_in=4, d_sae=32)
    W_dec = rng.normal(size=(32, 4)).astype(np.float32)
    k = 3

    def loss(x, W_enc, b_enc, b_dec, W_dec):
        values, indices = sae.topk_encode(x, W_enc, b_enc, b_dec, k=k)
        recon = sae.sparse_decode(values, indices, W_dec) + b_dec[None, :]
        return jnp.sum(jnp.square(x - recon))

    fn = jax.jit(jax.value_and_grad(loss, argnums=(1, 2, 3, 4)))
    ref_loss, ref_grads = fn(x, W_enc, b_enc, b_dec, W_dec)
    xs = jax.device_put(x, NamedSharding(mesh8, P("data", None)))
    with jax.set_mesh(mesh8):
        got_loss, got_grads = fn(xs, W_enc, b_enc, b_dec, W_dec)
    np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-5)
    for a, b in zip(got_grads, ref_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_topk_train_step_runs_with_kernels(rng):
    model = sae.TopKSAE(8, 32, k=2, rngs=nnx.Rngs(0))
    x = jnp.asarray(rng.normal(size=(64, 8)), jnp.float32)
    train_step, state = sae.make_train_step(model, optax.adam(1e-2))
    first = None
    for _ in range(30):
        state, metrics = train_step(state, x)
        first = float(metrics["fvu"]) if first is None else first
    assert float(metrics["fvu"]) < first


def test_kernel_validation_errors():
    W = jnp.zeros((5, 3))
    with pytest.raises(ValueError, match="indices"):
        sae.sparse_decode(jnp.zeros((2, 2)), jnp.zeros((2, 3), jnp.int32), W)
    with pytest.raises(ValueError, match="indices"):
        sae.sparse_decode(jnp.zeros((2, 2)), jnp.zeros((2, 2)), W)
    with pytest.raises(
        ValueError, match=r"indices must lie in \[0, d_sae=5\); got values in \[0, 5\]"
    ):
        sae.sparse_decode(jnp.ones((1, 2)), jnp.array([[0, 5]]), W)
    with pytest.raises(ValueError, match=r"got values in \[-1, 0\]"):
        sae.sparse_decode(jnp.ones((1, 2)), jnp.array([[0, -1]]), W)
    with pytest.raises(ValueError, match="k must be in"):
        sae.topk_encode(jnp.zeros((2, 3)), jnp.zeros((3, 5)), jnp.zeros(5), jnp.zeros(3), k=6)
    with pytest.raises(ValueError, match="x must be"):
        sae.topk_encode(jnp.zeros((2, 4)), jnp.zeros((3, 5)), jnp.zeros(5), jnp.zeros(3), k=2)
    with pytest.raises(ValueError, match="b_enc"):
        sae.topk_encode(jnp.zeros((2, 3)), jnp.zeros((3, 5)), jnp.zeros(4), jnp.zeros(3), k=2)
