"""Momentum encoder (EMA), key queue, MoCo loss and MoCHi negatives vs NumPy references."""

import collections
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxemb.encoders import MLPEncoder
from jaxemb.parallel import KeyQueue, ema_update, mochi_negatives, moco_info_nce, shard_batch


def _unit(x):
    x = np.asarray(x, np.float64)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(n > 0, x / np.where(n > 0, n, 1), 0.0)


# ------------------------------------------------------------------------------------------------
# ema_update


def test_ema_update_formula_on_nnx_states():
    target = nnx.state(MLPEncoder(4, 3, hidden=(5,), rngs=nnx.Rngs(0)), nnx.Param)
    online = nnx.state(MLPEncoder(4, 3, hidden=(5,), rngs=nnx.Rngs(1)), nnx.Param)
    for m in (0.0, 0.9, 0.999, 1.0):
        new = ema_update(target, online, momentum=m)
        assert jax.tree.structure(new) == jax.tree.structure(target)
        for t, o, n in zip(jax.tree.leaves(target), jax.tree.leaves(online), jax.tree.leaves(new)):
            want = m * np.asarray(t, np.float64) + (1 - m) * np.asarray(o, np.float64)
            np.testing.assert_allclose(np.asarray(n), want, rtol=1e-6, atol=1e-7)


def test_ema_update_jits_with_traced_momentum_and_keeps_integer_leaves():
    target = {"w": jnp.ones((2, 2)), "count": jnp.array(3, jnp.int32)}
    online = {"w": jnp.zeros((2, 2)), "count": jnp.array(9, jnp.int32)}
    new = jax.jit(lambda t, o, m: ema_update(t, o, momentum=m))(target, online, 0.25)
    np.testing.assert_allclose(np.asarray(new["w"]), 0.25)
    assert int(new["count"]) == 3 and new["count"].dtype == jnp.int32


def test_ema_update_updates_a_module():
    key_enc = MLPEncoder(4, 3, hidden=(5,), rngs=nnx.Rngs(0))
    query_enc = MLPEncoder(4, 3, hidden=(5,), rngs=nnx.Rngs(1))
    nnx.update(key_enc, ema_update(nnx.state(key_enc), nnx.state(query_enc), momentum=0.0))
    x = jnp.ones((2, 4))
    np.testing.assert_allclose(np.asarray(key_enc(x)), np.asarray(query_enc(x)), rtol=1e-6)


def test_ema_update_validation():
    t = {"a": jnp.ones(2), "b": jnp.ones(3)}
    with pytest.raises(ValueError, match="same pytree structure"):
        ema_update(t, {"a": jnp.ones(2)}, momentum=0.9)
    with pytest.raises(ValueError, match=r"\['b'\] must have the target's shape \[3\]; got \[4\]"):
        ema_update(t, {"a": jnp.ones(2), "b": jnp.ones(4)}, momentum=0.9)
    for bad in (1.5, -0.1, np.ones(2), float("nan")):
        with pytest.raises(ValueError, match="momentum"):
            ema_update(t, t, momentum=bad)


# ------------------------------------------------------------------------------------------------
# KeyQueue


def test_queue_is_fifo_against_deque(rng):
    size, dim = 10, 3
    queue = KeyQueue.init(size, dim)
    update = jax.jit(KeyQueue.update)
    ref = collections.deque([np.zeros(dim)] * size, maxlen=size)  # newest at the right
    written = 0
    for batch in (4, 3, 10, 1, 7, 5, 2):
        keys = rng.normal(size=(batch, dim)).astype(np.float32)
        queue = update(queue, keys)
        ref.extend(keys)
        written += batch
        assert int(queue.ptr) == written % size
        # reading the ring buffer from ptr (oldest) round to ptr - 1 (newest) gives the deque
        order = (int(queue.ptr) + np.arange(size)) % size
        np.testing.assert_array_equal(np.asarray(queue.keys)[order], np.stack(ref))


def test_queue_with_size_a_multiple_of_batch_matches_moco_slices(rng):
    queue = KeyQueue.init(8, 2)
    b1, b2, b3 = (rng.normal(size=(4, 2)).astype(np.float32) for _ in range(3))
    for b in (b1, b2, b3):
        queue = queue.update(b)
    np.testing.assert_array_equal(np.asarray(queue.keys), np.concatenate([b3, b2]))
    assert int(queue.ptr) == 4


def test_queue_init_and_no_gradient():
    q = KeyQueue.init(16, 5, key=jax.random.key(0))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(q.keys), axis=1), 1.0, rtol=1e-6)
    assert np.all(np.asarray(KeyQueue.init(3, 2).keys) == 0)
    g = jax.grad(lambda k: jnp.sum(KeyQueue.init(4, 2).update(k).keys))(jnp.ones((2, 2)))
    assert np.all(np.asarray(g) == 0)


def test_queue_validation():
    queue = KeyQueue.init(4, 2)
    with pytest.raises(ValueError, match="queue size 4 must be at least the global batch"):
        queue.update(jnp.ones((5, 2)))
    with pytest.raises(ValueError, match=r"keys must be \[batch, 2\]"):
        queue.update(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="size must be >= 1"):
        KeyQueue.init(0, 2)


# ------------------------------------------------------------------------------------------------
# moco_info_nce


def _np_moco(q, k, queue, t, extra=None):
    qn, kn, Q = _unit(q), _unit(k), _unit(queue)
    cands = [kn[:, None, :], np.broadcast_to(Q, (len(q),) + Q.shape)]
    if extra is not None:
        cands.append(_unit(extra))
    c = np.concatenate(cands, axis=1)  # [B, 1 + K + E, D]
    logits = np.einsum("bd,bjd->bj", qn, c) / t
    m = logits.max(1, keepdims=True)
    p = np.exp(logits - m)
    lse = np.log(p.sum(1)) + m[:, 0]
    loss = np.mean(lse - logits[:, 0])
    soft = p / p.sum(1, keepdims=True)
    g_hat = (np.einsum("bj,bjd->bd", soft, c) - c[:, 0]) / t / len(q)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    grad_q = (g_hat - qn * np.sum(qn * g_hat, axis=1, keepdims=True)) / norm
    return loss, grad_q


@pytest.mark.parametrize("n_extra", [None, 3])
def test_moco_info_nce_value_and_grad(rng, n_extra):
    q = rng.normal(size=(6, 4)).astype(np.float32)
    k = (q + 0.3 * rng.normal(size=(6, 4))).astype(np.float32)
    queue = KeyQueue.init(10, 4, key=jax.random.key(1))
    extra = None if n_extra is None else rng.normal(size=(6, n_extra, 4)).astype(np.float32)
    t = 0.2
    loss, grads = jax.value_and_grad(
        lambda q, k, keys, e: moco_info_nce(q, k, keys, temperature=t, extra_negatives=e),
        argnums=(0, 1, 2, 3),
    )(q, k, queue.keys, extra)
    want, want_gq = _np_moco(q, k, np.asarray(queue.keys), t, extra)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grads[0]), want_gq, rtol=1e-4, atol=1e-6)
    # no gradient into the keys, the queue or the extra negatives
    for g in grads[1:]:
        if g is not None:
            assert np.all(np.asarray(g) == 0)
    # the KeyQueue itself is accepted
    np.testing.assert_allclose(
        float(moco_info_nce(q, k, queue, temperature=t, extra_negatives=extra)), want, rtol=1e-5
    )


def test_moco_info_nce_sharded_equals_single_device(mesh8, rng):
    q = rng.normal(size=(16, 8)).astype(np.float32)
    k = rng.normal(size=(16, 8)).astype(np.float32)
    keys = rng.normal(size=(32, 8)).astype(np.float32)
    qs, ks = shard_batch(mesh8, (q, k))
    with jax.set_mesh(mesh8):
        got = jax.jit(lambda q, k, Q: moco_info_nce(q, k, Q, temperature=0.1))(qs, ks, keys)
    np.testing.assert_allclose(float(got), _np_moco(q, k, keys, 0.1)[0], rtol=1e-5)


def test_moco_info_nce_validation():
    q = jnp.ones((4, 3))
    with pytest.raises(ValueError, match=r"k must be \[batch, dim\] like q \[4, 3\]; got \[4, 2\]"):
        moco_info_nce(q, jnp.ones((4, 2)), jnp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"queue must be \[size, 3\]"):
        moco_info_nce(q, q, jnp.ones((5, 2)))
    with pytest.raises(ValueError, match="temperature"):
        moco_info_nce(q, q, jnp.ones((5, 3)), temperature=0.0)
    with pytest.raises(ValueError, match=r"extra_negatives must be \[batch, n_extra, dim\]"):
        moco_info_nce(q, q, jnp.ones((5, 3)), extra_negatives=jnp.ones((3, 2, 3)))


# ------------------------------------------------------------------------------------------------
# mochi_negatives


def _fit_mix(h, a, b):
    """Best ``λ`` with ``h ∝ λ a + (1 − λ) b`` and the residual of that fit (all unit rows)."""
    # h is normalised, so fit h ≈ s (λ a + (1 − λ) b) = x a + y b by least squares, λ = x/(x+y)
    basis = np.stack([a, b], axis=1)
    coef, *_ = np.linalg.lstsq(basis, h, rcond=None)
    resid = np.linalg.norm(basis @ coef - h)
    x, y = coef
    return (x / (x + y) if abs(x + y) > 1e-9 else np.nan), resid, x + y


def test_mochi_mixes_come_from_the_hard_set(rng):
    b, k, d, n_hard = 4, 20, 6, 4
    q = rng.normal(size=(b, d)).astype(np.float32)
    queue = rng.normal(size=(k, d)).astype(np.float32)
    out = np.asarray(
        mochi_negatives(q, queue, jax.random.key(3), n_hard=n_hard, n_mix=6, n_mix_query=5)
    )
    assert out.shape == (b, 11, d)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)
    qn, Q = _unit(q), _unit(queue)
    hard = np.argsort(-(qn @ Q.T), axis=1)[:, :n_hard]  # NumPy top-N by cosine
    for i in range(b):
        H = Q[hard[i]]
        for h in out[i, :6]:  # α n_a + (1 − α) n_b, α ∈ [0, 1], n_a, n_b in the hard set
            fits = [_fit_mix(h, H[a], H[c]) for a, c in itertools.product(range(n_hard), repeat=2)]
            ok = [
                (r < 1e-5 and s > 0 and -1e-5 <= lam <= 1 + 1e-5) or (a_eq and r < 1e-5)
                for (lam, r, s), a_eq in zip(
                    fits, [a == c for a, c in itertools.product(range(n_hard), repeat=2)]
                )
            ]
            assert any(ok), (i, h)
        for h in out[i, 6:]:  # β q + (1 − β) n_j, β ∈ [0, 0.5]
            fits = [_fit_mix(h, qn[i], H[a]) for a in range(n_hard)]
            assert any(r < 1e-5 and s > 0 and -1e-5 <= lam <= 0.5 + 1e-5 for lam, r, s in fits)


def test_mochi_coefficient_ranges():
    q = np.array([[1.0, 0.0, 0.0]], np.float32)
    # hard set for N = 2: a (cos 0.8) and b (cos 0.6); c is the easiest negative
    a, b = np.array([0.8, 0.6, 0.0]), np.array([0.6, 0.0, 0.8])
    queue = np.array([b, [-1.0, 0.0, 0.0], a], np.float32)
    n = 2000
    out = np.asarray(mochi_negatives(q, queue, jax.random.key(1), n_hard=2, n_mix=n, n_mix_query=n))
    assert out.shape == (1, 2 * n, 3)
    # negative-negative mixes: pairs (a, a), (b, b) give λ = 1, 0; pairs (a, b), (b, a) give
    # λ = α or 1 − α, uniform on (0, 1): a quarter of all λ in (0.25, 0.75), mean 0.5
    fits = [_fit_mix(h, a, b) for h in out[0, :n]]
    assert max(r for _, r, _ in fits) < 1e-5  # every mix lies in span(a, b)
    lam = np.array([lam for lam, _, _ in fits])
    assert lam.min() >= -1e-4 and lam.max() <= 1 + 1e-4
    assert 0.2 < np.mean(np.abs(lam - 0.5) < 0.25) < 0.3
    assert abs(np.mean(lam) - 0.5) < 0.03
    # query mixes β q + (1 − β) n_j: n_j is a (z = 0) or b (y = 0), each about half the time,
    # and β is spread over (0, 0.5) with mean 0.25
    qd = q[0].astype(np.float64)
    uses_a = np.abs(out[0, n:, 2]) < 1e-6
    assert 0.45 < uses_a.mean() < 0.55
    betas = np.array(
        [_fit_mix(h, qd, a if ua else b)[0] for h, ua in zip(out[0, n:], uses_a, strict=True)]
    )
    assert betas.min() >= -1e-5 and betas.max() <= 0.5 + 1e-5
    assert abs(betas.mean() - 0.25) < 0.02
    assert np.mean(betas < 0.25) > 0.4


def test_mochi_has_no_gradient_and_feeds_moco(rng):
    q = rng.normal(size=(4, 3)).astype(np.float32)
    queue = rng.normal(size=(8, 3)).astype(np.float32)

    def total(q):
        h = mochi_negatives(q, queue, jax.random.key(0), n_hard=3, n_mix=2, n_mix_query=2)
        return jnp.sum(h)

    assert np.all(np.asarray(jax.grad(total)(q)) == 0)
    h = mochi_negatives(q, queue, jax.random.key(0), n_hard=3, n_mix=2, n_mix_query=2)
    got = moco_info_nce(q, q, queue, temperature=0.2, extra_negatives=h)
    np.testing.assert_allclose(float(got), _np_moco(q, q, queue, 0.2, np.asarray(h))[0], rtol=1e-5)
    # hard negatives make the loss larger than the queue alone
    assert float(got) > float(moco_info_nce(q, q, queue, temperature=0.2))


def test_mochi_validation():
    q, queue, key = jnp.ones((2, 3)), jnp.ones((5, 3)), jax.random.key(0)
    with pytest.raises(ValueError, match="n_hard must be <= 5"):
        mochi_negatives(q, queue, key, n_hard=6, n_mix=1, n_mix_query=1)
    with pytest.raises(ValueError, match="n_hard must be >= 1"):
        mochi_negatives(q, queue, key, n_hard=0, n_mix=1, n_mix_query=1)
    with pytest.raises(ValueError, match="n_mix must be >= 0"):
        mochi_negatives(q, queue, key, n_hard=2, n_mix=-1, n_mix_query=1)
    with pytest.raises(ValueError, match="key must be a single PRNG key"):
        mochi_negatives(q, queue, 0, n_hard=2, n_mix=1, n_mix_query=1)
    with pytest.raises(ValueError, match=r"queue must be \[size, 3\]"):
        mochi_negatives(q, jnp.ones((5, 4)), key, n_hard=2, n_mix=1, n_mix_query=1)
    assert mochi_negatives(q, queue, key, n_hard=2, n_mix=0, n_mix_query=0).shape == (2, 0, 3)
