"""soft_target_info_nce, cwcl and soft_label_kl against independent NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from losses_reference import logsumexp, normalize, numeric_grad
from tolerances import assert_f32_close

from jaxemb.losses import cwcl, soft_label_kl, soft_target_info_nce
from jaxemb.parallel import shard_batch

# ---------------------------------------------------------------------------------------------
# NumPy float64 references
# ---------------------------------------------------------------------------------------------


def np_soft_ce(a, b, targets, t):
    """mean_i −Σ_j t_ij log softmax_j(cos(a_i, b_j)/τ), row by row."""
    a, b = normalize(a), normalize(b)
    total = 0.0
    for i in range(len(a)):
        logits = np.array([a[i] @ b[j] for j in range(len(b))]) / t
        log_sm = logits - logsumexp(logits)
        total += -np.sum(np.asarray(targets, np.float64)[i] * log_sm)
    return total / len(a)


def np_cwcl(a, b, f, t):
    f = normalize(f)
    w = np.array([[(1.0 + f[i] @ f[j]) / 2.0 for j in range(len(f))] for i in range(len(f))])
    targets = w / w.sum(axis=1, keepdims=True)
    return np_soft_ce(a, b, targets, t) + np_soft_ce(b, a, targets, t)


def np_soft_label_kl(q, cands, judge, t):
    total = 0.0
    for i in range(len(q)):
        qi = normalize(q[i])
        sims = np.array([qi @ normalize(c) for c in cands[i]])
        p = np.exp(sims / t - logsumexp(sims / t))
        qq = np.exp(judge[i] / t - logsumexp(np.asarray(judge[i], np.float64) / t))
        kl_qp = np.sum(qq * np.log(qq / p))
        kl_pq = np.sum(p * np.log(p / qq))
        total += 0.5 * (kl_qp + kl_pq)
    return total / len(q)


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------


def _pairs(rng, n=6, d=4):
    a = rng.normal(size=(n, d))
    b = a + 0.7 * rng.normal(size=(n, d))
    a[3] = a[2]  # duplicate rows
    b[n - 1] = b[1]
    return a.astype(np.float32), b.astype(np.float32)


def _targets(rng, n, m=None):
    w = rng.uniform(size=(n, m or n))
    w[0] = 1.0  # a row of ties
    w[1, : (m or n) // 2] = 0.0  # zeros in the targets
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _grad_check(loss, ref, args, argnums, rtol=2e-3, atol=2e-4):
    got = jax.grad(loss, argnums=argnums)(*args)
    args64 = [np.asarray(x, np.float64) for x in args]
    for g, k in zip(got, argnums, strict=True):

        def f(x, k=k):
            a = list(args64)
            a[k] = x
            return ref(*a)

        np.testing.assert_allclose(g, numeric_grad(f, args64[k]), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# soft_target_info_nce
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [0.05, 0.5])
def test_soft_target_value_and_grad(rng, t):
    a, b = _pairs(rng)
    tg = _targets(rng, 6)
    got = soft_target_info_nce(a, b, tg, temperature=t)
    np.testing.assert_allclose(got, np_soft_ce(a, b, tg, t), rtol=1e-5)
    _grad_check(
        lambda x, y, w: soft_target_info_nce(x, y, w, temperature=t),
        lambda x, y, w: np_soft_ce(x, y, w, t),
        (a, b, tg),
        argnums=(0, 1, 2),
        atol=2e-4 if t >= 0.5 else 2e-3,
    )


def test_soft_target_rectangular_and_one_hot(rng):
    a, _ = _pairs(rng)
    b = rng.normal(size=(9, 4)).astype(np.float32)  # positives plus extra candidates
    tg = _targets(rng, 6, 9)
    np.testing.assert_allclose(
        soft_target_info_nce(a, b, tg, temperature=0.2), np_soft_ce(a, b, tg, 0.2), rtol=1e-5
    )
    # one-hot targets give plain InfoNCE: mean_i lse_j(l_ij) − l_i,i
    eye = np.eye(6, 9, dtype=np.float32)
    logits = normalize(a) @ normalize(b).T / 0.2
    expect = np.mean(logsumexp(logits, axis=1) - logits[np.arange(6), np.arange(6)])
    np.testing.assert_allclose(soft_target_info_nce(a, b, eye, temperature=0.2), expect, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# cwcl
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [0.1, 1.0])
def test_cwcl_value_and_grad(rng, t):
    a, b = _pairs(rng)
    f = rng.normal(size=(6, 3)).astype(np.float32)  # frozen modality, its own width
    f[5] = f[0]
    got = cwcl(a, b, f, temperature=t)
    np.testing.assert_allclose(got, np_cwcl(a, b, f, t), rtol=1e-5)
    _grad_check(
        lambda x, y: cwcl(x, y, f, temperature=t),
        lambda x, y: np_cwcl(x, y, f, t),
        (a, b),
        argnums=(0, 1),
        atol=2e-4 if t >= 0.5 else 1e-3,
    )


def test_cwcl_no_gradient_into_frozen(rng):
    a, b = _pairs(rng)
    f = rng.normal(size=(6, 5)).astype(np.float32)
    g = jax.grad(lambda z: cwcl(a, b, z, temperature=0.3))(f)
    assert np.all(np.asarray(g) == 0.0)
    # yet the frozen embeddings do change the value
    assert not np.isclose(
        float(cwcl(a, b, f, temperature=0.3)), float(cwcl(a, b, -f[::-1], temperature=0.3))
    )


def test_cwcl_antipodal_frozen_gives_two_way_info_nce(rng):
    # cos(f_0, f_1) = −1 ⇒ w = I ⇒ t = I: the sum of both InfoNCE directions
    a = rng.normal(size=(2, 4)).astype(np.float32)
    b = rng.normal(size=(2, 4)).astype(np.float32)
    f = np.array([[1.0, 2.0], [-1.0, -2.0]], np.float32)
    logits = normalize(a) @ normalize(b).T / 0.5
    idx = np.arange(2)
    expect = np.mean(logsumexp(logits, axis=1) - logits[idx, idx]) + np.mean(
        logsumexp(logits, axis=0) - logits[idx, idx]
    )
    np.testing.assert_allclose(cwcl(a, b, f, temperature=0.5), expect, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# soft_label_kl
# ---------------------------------------------------------------------------------------------


def _lists(rng, n=5, k=4, d=4):
    q = rng.normal(size=(n, d)).astype(np.float32)
    c = (q[:, None, :] + rng.normal(size=(n, k, d))).astype(np.float32)
    c[0, 2] = c[0, 1]  # duplicate candidates
    judge = rng.uniform(size=(n, k)).astype(np.float32)
    judge[1] = 0.5  # a row of tied judge scores
    return q, c, judge


@pytest.mark.parametrize("t", [0.1, 1.0])
def test_soft_label_kl_value_and_grad(rng, t):
    q, c, judge = _lists(rng)
    got = soft_label_kl(q, c, judge, temperature=t)
    np.testing.assert_allclose(got, np_soft_label_kl(q, c, judge, t), rtol=1e-5)
    _grad_check(
        lambda x, y, j: soft_label_kl(x, y, j, temperature=t),
        lambda x, y, j: np_soft_label_kl(x, y, j, t),
        (q, c, judge),
        argnums=(0, 1, 2),
        atol=2e-4 if t >= 0.5 else 1e-3,
    )


def test_soft_label_kl_default_temperature_and_zero(rng):
    q, c, judge = _lists(rng)
    judge = judge * 0.05  # keep the τ = 0.01 distributions away from float64 underflow
    np.testing.assert_allclose(
        soft_label_kl(q, c, judge), np_soft_label_kl(q, c, judge, 0.01), rtol=1e-4
    )
    # judge scores equal to the cosine similarities: P = Q, loss 0
    sims = np.einsum("bd,bkd->bk", normalize(q), normalize(c)).astype(np.float32)
    np.testing.assert_allclose(soft_label_kl(q, c, sims, temperature=0.1), 0.0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# sharding, robustness, validation
# ---------------------------------------------------------------------------------------------


def test_sharded_matches_single_device(rng, mesh8):
    n = 16
    a = rng.normal(size=(n, 6)).astype(np.float32)
    b = (a + 0.5 * rng.normal(size=(n, 6))).astype(np.float32)
    f = rng.normal(size=(n, 3)).astype(np.float32)
    tg = _targets(rng, n)
    c = (a[:, None, :] + rng.normal(size=(n, 3, 6))).astype(np.float32)
    judge = rng.normal(size=(n, 3)).astype(np.float32)
    cases = [
        (lambda x, y, w: soft_target_info_nce(x, y, w, temperature=0.2), (a, b, tg)),
        (lambda x, y, z: cwcl(x, y, z, temperature=0.2), (a, b, f)),
        (lambda x, y, j: soft_label_kl(x, y, j, temperature=0.1), (a, c, judge)),
    ]
    for fn, args in cases:
        g = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
        v1, g1 = g(*args)
        sharded = shard_batch(mesh8, args)
        assert all(len(x.sharding.device_set) == 8 for x in sharded)
        v8, g8 = g(*sharded)
        np.testing.assert_allclose(v8, v1, rtol=1e-5)
        for x, y in zip(g8, g1, strict=True):
            assert_f32_close(x, y)


def _robust_cases(rng):
    a = rng.normal(size=(8, 4)).astype(np.float32)
    b = (a + 0.3 * rng.normal(size=(8, 4))).astype(np.float32)
    za, zb = a.copy(), b.copy()
    za[2] = 0.0
    zb[5] = 0.0
    eq = np.ones((8, 4), np.float32)
    return [("tiny temperature", a, b, 1e-3), ("norm 1e4", a * 1e4, b * 1e4, 0.1),
            ("all equal", eq, eq, 0.1), ("zero vectors", za, zb, 0.1)]  # fmt: skip


_TG = np.full((8, 8), 1 / 8, np.float32)
_ROBUST = {
    "soft_target": lambda x, y, t: soft_target_info_nce(x, y, _TG, temperature=t),
    "cwcl": lambda x, y, t: cwcl(x, y, x, temperature=t),
    "soft_label_kl": lambda x, y, t: soft_label_kl(
        x, jnp.stack([y, x, -y], axis=1), jnp.linspace(0.0, 1.0, 24).reshape(8, 3), temperature=t
    ),
}


@pytest.mark.parametrize("name", sorted(_ROBUST))
def test_robust_finite_values_and_grads(rng, name):
    for case, x, y, t in _robust_cases(rng):
        val, grads = jax.value_and_grad(_ROBUST[name], argnums=(0, 1))(x, y, t)
        assert np.isfinite(val), (name, case)
        for g in grads:
            assert np.isfinite(np.asarray(g)).all(), (name, case)


def test_bfloat16_accumulates_in_float32(rng):
    a, b = _pairs(rng)
    tg = _targets(rng, 6)
    q, c, judge = _lists(rng)
    bf = lambda x: jnp.asarray(x, jnp.bfloat16)  # noqa: E731
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    out = soft_target_info_nce(bf(a), bf(b), bf(tg), temperature=0.5)
    # bf16 targets are no longer exactly row-stochastic; the reference uses the same rounded ones
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, np_soft_ce(f64(bf(a)), f64(bf(b)), f64(bf(tg)), 0.5), rtol=1e-5)
    out = cwcl(bf(a), bf(b), bf(a), temperature=0.5)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, np_cwcl(f64(bf(a)), f64(bf(b)), f64(bf(a)), 0.5), rtol=1e-5)
    out = soft_label_kl(bf(q), bf(c), bf(judge), temperature=0.5)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(
        out, np_soft_label_kl(f64(bf(q)), f64(bf(c)), f64(bf(judge)), 0.5), rtol=1e-5
    )


_A = np.ones((4, 3), np.float32)
_T = np.full((4, 4), 0.25, np.float32)
_C = np.ones((4, 2, 3), np.float32)
_J = np.zeros((4, 2), np.float32)
_I32 = np.int32


def _st(a=_A, b=_A, t=_T, temperature=1.0):
    return soft_target_info_nce(a, b, t, temperature=temperature)


def _cw(a=_A, b=_A, f=_A, temperature=1.0):
    return cwcl(a, b, f, temperature=temperature)


def _kl(q=_A, c=_C, j=_J, temperature=0.01):
    return soft_label_kl(q, c, j, temperature=temperature)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: _st(a=_A[0]), "a must have rank 2"),
        (lambda: _st(b=_A[:, :2]), r"b \[4, 2\] must match a \[4, 3\]"),
        (lambda: _st(t=_T[:3]), r"targets must be .*\[4, 4\].*got \[3, 4\]"),
        (lambda: _st(t=_T[0]), "targets must have rank 2"),
        (lambda: _st(t=_T - 0.5), "non-negative"),
        (lambda: _st(t=_T * 2), "sum to 1"),
        (lambda: _st(t=_T.astype(_I32)), "targets must have a float dtype"),
        (lambda: _st(a=_A.astype(_I32)), "a must have a float dtype"),
        (lambda: _st(temperature=0.0), "temperature"),
        (lambda: _cw(b=_A[:3]), r"b must have the same shape as a \[4, 3\]"),
        (lambda: _cw(f=_A[:3]), r"frozen_a \[3, 3\] must match a \[4, 3\]"),
        (lambda: _cw(f=_A[0]), "frozen_a must have rank 2"),
        (lambda: _cw(f=_A.astype(np.int8)), "frozen_a must have a float dtype"),
        (lambda: _cw(temperature=-1.0), "temperature"),
        (lambda: _kl(c=_C[:3]), r"candidates \[3, 2, 3\] must match queries \[4, 3\]"),
        (lambda: _kl(c=_C[..., :2]), r"candidates \[4, 2, 2\] must match queries"),
        (lambda: _kl(c=_C[0]), "candidates must have rank 3"),
        (lambda: _kl(j=_J[:, :1]), r"judge_scores must be \[batch, n_candidates\] = \[4, 2\]"),
        (lambda: _kl(j=_J[0]), "judge_scores must have rank 2"),
        (lambda: _kl(j=_J.astype(_I32)), "judge_scores must have a float dtype"),
        (lambda: _kl(temperature=0.0), "temperature"),
        (lambda: _kl(q=_A[:0], c=_C[:0], j=_J[:0]), "empty"),
    ],
)
def test_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_temperature_is_required_keyword():
    with pytest.raises(TypeError, match="temperature"):
        soft_target_info_nce(_A, _A, _T)
    with pytest.raises(TypeError, match="temperature"):
        cwcl(_A, _A, _A)
    with pytest.raises(TypeError):
        soft_target_info_nce(_A, _A, _T, 0.1)  # keyword-only


def test_traced_targets_skip_value_checks(rng):
    # Inside the user's jit the targets are tracers: only shapes are checked, values pass.
    a, b = _pairs(rng)
    tg = _targets(rng, 6)
    f = jax.jit(lambda x, y, w: soft_target_info_nce(x, y, w, temperature=0.3))
    np.testing.assert_allclose(f(a, b, tg), np_soft_ce(a, b, tg, 0.3), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# hypothesis invariants
# ---------------------------------------------------------------------------------------------

_PROP = settings(max_examples=20, deadline=None)


@_PROP
@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([4, 6]))
def test_property_batch_permutation(seed, n):
    r = np.random.default_rng(seed)
    a, b = _pairs(r, n=n)
    f = r.normal(size=(n, 3)).astype(np.float32)
    tg = _targets(r, n)
    q, c, judge = _lists(r, n=n)
    p = r.permutation(n)
    for got, ref in [
        (soft_target_info_nce(a[p], b[p], tg[p][:, p], temperature=0.3),
         soft_target_info_nce(a, b, tg, temperature=0.3)),
        (cwcl(a[p], b[p], f[p], temperature=0.3), cwcl(a, b, f, temperature=0.3)),
        (soft_label_kl(q[p], c[p], judge[p], temperature=0.2),
         soft_label_kl(q, c, judge, temperature=0.2)),
    ]:  # fmt: skip
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # candidates may also be permuted within each list (together with their judge scores)
    k = r.permutation(c.shape[1])
    np.testing.assert_allclose(
        soft_label_kl(q, c[:, k], judge[:, k], temperature=0.2),
        soft_label_kl(q, c, judge, temperature=0.2),
        rtol=1e-5,
        atol=1e-6,
    )


@_PROP
@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([4, 6]))
def test_property_scaling_invariance(seed, n):
    r = np.random.default_rng(seed)
    a, b = _pairs(r, n=n)
    f = r.normal(size=(n, 3)).astype(np.float32)
    tg = _targets(r, n)
    q, c, judge = _lists(r, n=n)
    s = lambda *shape: r.uniform(0.01, 100.0, size=shape).astype(np.float32)  # noqa: E731
    for got, ref in [
        (soft_target_info_nce(a * s(n, 1), b * s(n, 1), tg, temperature=0.3),
         soft_target_info_nce(a, b, tg, temperature=0.3)),
        (cwcl(a * s(n, 1), b * s(n, 1), f * s(n, 1), temperature=0.3),
         cwcl(a, b, f, temperature=0.3)),
        (soft_label_kl(q * s(n, 1), c * s(n, c.shape[1], 1), judge, temperature=0.2),
         soft_label_kl(q, c, judge, temperature=0.2)),
    ]:  # fmt: skip
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@_PROP
@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([4, 6]), t=st.sampled_from([0.1, 1.0]))
def test_property_soft_label_kl_is_jeffreys_divergence(seed, n, t):
    # ½(KL(Q‖P) + KL(P‖Q)) = ½ Σ_k (Q_k − P_k)(log Q_k − log P_k) ≥ 0, zero iff P = Q.
    r = np.random.default_rng(seed)
    q, c, judge = _lists(r, n=n)
    sims = np.einsum("bd,bkd->bk", normalize(q), normalize(c))
    log_p = sims / t - logsumexp(sims / t)[:, None]
    log_q = judge / t - logsumexp(np.asarray(judge, np.float64) / t)[:, None]
    expect = 0.5 * np.mean(np.sum((np.exp(log_q) - np.exp(log_p)) * (log_q - log_p), axis=1))
    got = float(soft_label_kl(q, c, judge, temperature=t))
    assert got >= 0.0
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-7)
