"""supcon, debiased/hard-negative NT-Xent and dhn_nce against independent NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from losses_reference import logsumexp, normalize, numeric_grad
from tolerances import EPS32, assert_f32_close

from jaxemb.losses import debiased_nt_xent, dhn_nce, hard_negative_nt_xent, nt_xent, supcon
from jaxemb.parallel import shard_batch

# ---------------------------------------------------------------------------------------------
# NumPy float64 references, written from the papers / reference scripts (loops, plain exp).
# ---------------------------------------------------------------------------------------------


def np_supcon(x, labels, t):
    """pytorch-metric-learning SupConLoss: cosine, denominator over a != i, AvgNonZeroReducer,
    zero when the batch has no positive pair or no negative pair."""
    labels = np.asarray(labels)
    z = normalize(x)
    s = z @ z.T / t
    b = len(z)
    pairs = [(i, j) for i in range(b) for j in range(b) if i != j]
    has_pos = any(labels[i] == labels[j] for i, j in pairs)
    has_neg = any(labels[i] != labels[j] for i, j in pairs)
    if not (has_pos and has_neg):
        return 0.0
    losses = []
    for i in range(b):
        positives = [p for p in range(b) if p != i and labels[p] == labels[i]]
        if not positives:
            losses.append(0.0)
            continue
        denom = logsumexp(np.array([s[i, a] for a in range(b) if a != i]))
        losses.append(-np.mean([s[i, p] - denom for p in positives]))
    losses = np.array(losses)
    above = losses > 0
    return losses[above].mean() if above.any() else 0.0


def np_dcl_hcl(z1, z2, t, tau_plus, beta=None):
    """chingyaoc/DCL (beta=None: plain sum of negatives) and joshr17/HCL (estimator='hard')."""
    b = len(z1)
    o1, o2 = normalize(z1), normalize(z2)
    out = np.concatenate([o1, o2])
    full = np.exp(out @ out.T / t)
    mask = np.ones((b, 2 * b), bool)
    for i in range(b):
        mask[i, i] = False
        mask[i, i + b] = False
    mask = np.concatenate([mask, mask])
    neg = full[mask].reshape(2 * b, -1)
    pos = np.exp(np.sum(o1 * o2, axis=-1) / t)
    pos = np.concatenate([pos, pos])
    n = 2 * b - 2
    if beta is None:
        s = neg.sum(-1)
    else:
        imp = neg**beta
        s = (imp * neg).sum(-1) / imp.mean(-1)
    ng = (-tau_plus * n * pos + s) / (1 - tau_plus)
    ng = np.maximum(ng, n * np.e ** (-1 / t))
    return np.mean(-np.log(pos / (pos + ng)))


def np_dcl_clamped_rows(z1, z2, t, tau_plus, beta):
    """How many rows the clamp N·e^{-1/τ} decides (to make sure a test exercises it)."""
    b = len(z1)
    out = normalize(np.concatenate([z1, z2]))
    s = out @ out.T / t
    cnt = 0
    for i in range(2 * b):
        p = (i + b) % (2 * b)
        negs = np.array([s[i, j] for j in range(2 * b) if j not in (i, p)])
        w = np.exp(beta * negs) / np.mean(np.exp(beta * negs))
        ng = (np.sum(w * np.exp(negs)) - tau_plus * len(negs) * np.exp(s[i, p])) / (1 - tau_plus)
        cnt += ng < len(negs) * np.exp(-1 / t)
    return cnt


def np_dhn(a, b, t, beta1, beta2, alpha):
    """DHN-NCE / HN-NCE as in the MedCLIP-SAM and HN-NCE papers (sum of both directions)."""
    logits = normalize(a) @ normalize(b).T / t

    def direction(lg, beta):
        n = len(lg)
        total = 0.0
        for i in range(n):
            others = [j for j in range(n) if j != i]
            norm = sum(np.exp(beta * lg[i, k]) for k in others)
            neg = sum((n - 1) * np.exp(beta * lg[i, j]) / norm * np.exp(lg[i, j]) for j in others)
            total += -np.log(np.exp(lg[i, i]) / (alpha * np.exp(lg[i, i]) + neg))
        return total / n

    return direction(logits, beta1) + direction(logits.T, beta2)


def np_two_way_info_nce(a, b, t):
    logits = normalize(a) @ normalize(b).T / t
    idx = np.arange(len(a))
    rows = np.mean(logsumexp(logits, axis=1) - logits[idx, idx])
    cols = np.mean(logsumexp(logits, axis=0) - logits[idx, idx])
    return rows + cols


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------


def _views(rng, n=6, d=4, noise=0.6):
    z1 = rng.normal(size=(n, d))
    z2 = z1 + noise * rng.normal(size=(n, d))
    z1[3] = z1[2]  # duplicate row (a perfectly hard negative)
    z2[1] = z1[0] + 0.05 * rng.normal(size=d)  # a near-duplicate across views
    return z1.astype(np.float32), z2.astype(np.float32)


LABELS = np.array([0, 1, 0, 2, 1, 3, 0, 4])  # classes 2, 3, 4 are singletons (no positive)


def _grad_check(loss, ref, args, rtol=2e-3, atol=2e-4):
    """jax.grad of ``loss`` w.r.t. every float argument vs central differences of ``ref``."""
    n = len(args)
    got = jax.grad(loss, argnums=tuple(range(n)))(*args)
    args64 = [np.asarray(x, np.float64) for x in args]
    for k in range(n):

        def f(x, k=k):
            a = list(args64)
            a[k] = x
            return ref(*a)

        np.testing.assert_allclose(got[k], numeric_grad(f, args64[k]), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# supcon
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_supcon_value_and_grad(rng, t):
    x = rng.normal(size=(8, 4)).astype(np.float32)
    x[5] = x[4]  # duplicate rows with different labels
    x[6] = x[0]  # duplicate rows with the same label
    np.testing.assert_allclose(supcon(x, LABELS, temperature=t), np_supcon(x, LABELS, t), rtol=1e-5)
    _grad_check(lambda e: supcon(e, LABELS, temperature=t), lambda e: np_supcon(e, LABELS, t), (x,))


def test_supcon_default_temperature_and_reduction(rng):
    x = rng.normal(size=(8, 4)).astype(np.float32)
    np.testing.assert_allclose(supcon(x, LABELS), np_supcon(x, LABELS, 0.1), rtol=1e-5)
    # The reduction averages over the anchors that have positives (5 of 8 here), not all 8.
    z = normalize(x)
    s = z @ z.T / 0.1
    per = []
    for i in range(8):
        pos = [p for p in range(8) if p != i and LABELS[p] == LABELS[i]]
        if pos:
            lse = logsumexp(np.delete(s[i], i))
            per.append(np.mean([lse - s[i, p] for p in pos]))
    assert len(per) == 5
    np.testing.assert_allclose(supcon(x, LABELS), np.mean(per), rtol=1e-5)


def test_supcon_degenerate_batches(rng):
    x = rng.normal(size=(6, 3)).astype(np.float32)
    # every label distinct: no anchor has a positive -> 0
    assert float(supcon(x, np.arange(6))) == 0.0
    # one class only: no negative pair anywhere -> 0 (PML's SupConLoss returns zero losses)
    assert float(supcon(x, np.zeros(6, int))) == 0.0
    # a single row
    assert float(supcon(x[:1], np.zeros(1, int))) == 0.0
    for labels in (np.arange(6), np.zeros(6, int)):
        g = jax.grad(lambda e, y=labels: supcon(e, y))(x)
        assert np.all(np.asarray(g) == 0.0)


def test_supcon_hand_computed():
    # anchors 0/1 share a class at cosine 1, the others are orthogonal: log(e^(1/τ) + 2) − 1/τ
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], np.float32)
    got = supcon(x, np.array([0, 0, 1, 1]), temperature=0.5)
    np.testing.assert_allclose(got, np.log(np.exp(2.0) + 2.0) - 2.0, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# debiased_nt_xent / hard_negative_nt_xent
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t, tau_plus", [(0.5, 0.1), (0.2, 0.05), (1.0, 0.3)])
def test_debiased_value_and_grad(rng, t, tau_plus):
    z1, z2 = _views(rng)
    got = debiased_nt_xent(z1, z2, temperature=t, tau_plus=tau_plus)
    np.testing.assert_allclose(got, np_dcl_hcl(z1, z2, t, tau_plus), rtol=1e-5)
    _grad_check(
        lambda a, b: debiased_nt_xent(a, b, temperature=t, tau_plus=tau_plus),
        lambda a, b: np_dcl_hcl(a, b, t, tau_plus),
        (z1, z2),
    )


@pytest.mark.parametrize("t, tau_plus, beta", [(0.5, 0.1, 1.0), (0.2, 0.1, 0.5), (0.5, 0.0, 2.0)])
def test_hard_negative_value_and_grad(rng, t, tau_plus, beta):
    z1, z2 = _views(rng)
    got = hard_negative_nt_xent(z1, z2, temperature=t, tau_plus=tau_plus, beta=beta)
    np.testing.assert_allclose(got, np_dcl_hcl(z1, z2, t, tau_plus, beta), rtol=1e-5)
    _grad_check(
        lambda a, b: hard_negative_nt_xent(a, b, temperature=t, tau_plus=tau_plus, beta=beta),
        lambda a, b: np_dcl_hcl(a, b, t, tau_plus, beta),
        (z1, z2),
    )


def test_debiased_defaults_match_reference_scripts(rng):
    z1, z2 = _views(rng)
    np.testing.assert_allclose(debiased_nt_xent(z1, z2), np_dcl_hcl(z1, z2, 0.5, 0.1), rtol=1e-5)
    np.testing.assert_allclose(
        hard_negative_nt_xent(z1, z2), np_dcl_hcl(z1, z2, 0.5, 0.1, 1.0), rtol=1e-5
    )
    # beta = 0 is DCL
    np.testing.assert_allclose(
        hard_negative_nt_xent(z1, z2, beta=0.0), debiased_nt_xent(z1, z2), rtol=1e-5
    )


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_debiased_clamp_branch(rng, beta):
    # A large class prior makes (S − τ⁺·N·pos) negative for well-aligned rows: the clamp decides.
    z1 = rng.normal(size=(6, 4))
    z2 = z1 + 0.05 * rng.normal(size=(6, 4))
    z2[4] = rng.normal(size=4)  # one poorly aligned pair keeps some rows unclamped
    z1, z2 = z1.astype(np.float32), z2.astype(np.float32)
    t, tau_plus = 0.5, 0.9
    clamped = np_dcl_clamped_rows(z1, z2, t, tau_plus, beta)
    assert 0 < clamped < 12
    got = hard_negative_nt_xent(z1, z2, temperature=t, tau_plus=tau_plus, beta=beta)
    np.testing.assert_allclose(got, np_dcl_hcl(z1, z2, t, tau_plus, beta), rtol=1e-5)
    _grad_check(
        lambda a, b: hard_negative_nt_xent(a, b, temperature=t, tau_plus=tau_plus, beta=beta),
        lambda a, b: np_dcl_hcl(a, b, t, tau_plus, beta),
        (z1, z2),
    )


def test_debiased_hand_computed():
    z = np.eye(4, dtype=np.float32)
    # pos = e², six negatives of 1: Ng = (6 − 0.1·6·e²)/0.9 ≥ 6·e^{−2}
    ng = (6 - 0.6 * np.e**2) / 0.9
    expect = np.log1p(ng / np.e**2)
    np.testing.assert_allclose(debiased_nt_xent(z, z, tau_plus=0.1), expect, rtol=1e-6)
    # τ⁺ = 0.5: Ng = (6 − 3e²)/0.5 < 0, so the clamp 6e^{−2} wins
    np.testing.assert_allclose(
        debiased_nt_xent(z, z, tau_plus=0.5), np.log1p(6 * np.e**-2 / np.e**2), rtol=1e-6
    )


# ---------------------------------------------------------------------------------------------
# dhn_nce
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "t, beta1, beta2, alpha",
    [(0.6, 0.15, 0.15, 0.0), (0.2, 1.0, 0.0, 0.0), (0.5, 0.5, 2.0, 0.5), (0.1, 0.0, 0.0, 1.0)],
)
def test_dhn_nce_value_and_grad(rng, t, beta1, beta2, alpha):
    a, b = _views(rng)
    got = dhn_nce(a, b, temperature=t, beta1=beta1, beta2=beta2, alpha=alpha)
    np.testing.assert_allclose(got, np_dhn(a, b, t, beta1, beta2, alpha), rtol=1e-5, atol=1e-6)
    _grad_check(
        lambda x, y: dhn_nce(x, y, temperature=t, beta1=beta1, beta2=beta2, alpha=alpha),
        lambda x, y: np_dhn(x, y, t, beta1, beta2, alpha),
        (a, b),
    )


def test_dhn_nce_defaults_and_direction_swap(rng):
    a, b = _views(rng)
    np.testing.assert_allclose(dhn_nce(a, b), np_dhn(a, b, 0.6, 0.15, 0.15, 0.0), rtol=1e-5)
    # swapping the modalities swaps the roles of beta1 and beta2
    np.testing.assert_allclose(
        dhn_nce(a, b, beta1=0.3, beta2=1.5), dhn_nce(b, a, beta1=1.5, beta2=0.3), rtol=1e-5
    )
    assert not np.isclose(
        float(dhn_nce(a, b, beta1=0.3, beta2=1.5)), float(dhn_nce(b, a, beta1=0.3, beta2=1.5))
    )


def test_dhn_nce_hand_computed():
    x = np.eye(3, dtype=np.float32)
    # l_ii = 1/τ, negatives at 0 with unit weight: per direction log(2 + α e^{1/τ}) − 1/τ
    for alpha in (0.0, 1.0):
        expect = 2 * (np.log(2 + alpha * np.e**2) - 2)
        # logits of magnitude 1/τ = 2: float32 rounding of the loss is a few eps32 · 2
        got = dhn_nce(x, x, temperature=0.5, alpha=alpha)
        np.testing.assert_allclose(got, expect, rtol=1e-6, atol=16 * EPS32 * 2)


# ---------------------------------------------------------------------------------------------
# sharding, robustness, validation
# ---------------------------------------------------------------------------------------------

_SHARDED = {
    "supcon": lambda x, y, lab: supcon(x, lab, temperature=0.2),
    "debiased": lambda x, y, lab: debiased_nt_xent(x, y, temperature=0.3, tau_plus=0.1),
    "hard": lambda x, y, lab: hard_negative_nt_xent(x, y, temperature=0.3, tau_plus=0.1),
    "dhn": lambda x, y, lab: dhn_nce(x, y, temperature=0.6, beta1=0.5, beta2=0.15, alpha=0.3),
}


@pytest.mark.parametrize("name", sorted(_SHARDED))
def test_sharded_matches_single_device(rng, mesh8, name):
    x = rng.normal(size=(16, 6)).astype(np.float32)
    y = (x + 0.5 * rng.normal(size=(16, 6))).astype(np.float32)
    labels = np.arange(16) % 5
    f = jax.jit(jax.value_and_grad(_SHARDED[name], argnums=(0, 1)))
    v1, g1 = f(x, y, labels)
    sx, sy, sl = shard_batch(mesh8, (x, y, labels))
    assert len(sx.sharding.device_set) == 8
    v8, g8 = f(sx, sy, sl)
    np.testing.assert_allclose(v8, v1, rtol=1e-5)
    for a, b in zip(g8, g1, strict=True):
        assert_f32_close(a, b)


def _robust_inputs(rng):
    x = rng.normal(size=(8, 4)).astype(np.float32)
    y = (x + 0.3 * rng.normal(size=(8, 4))).astype(np.float32)
    zeros = x.copy()
    zeros[2] = 0.0
    equal = np.ones((8, 4), np.float32)
    return [
        ("tiny temperature", x, y, 1e-3),
        ("norm 1e4", x * 1e4, y * 1e4, 0.1),
        ("all equal", equal, equal, 0.1),
        ("zero vectors", zeros, np.where(np.arange(8)[:, None] == 5, 0.0, y), 0.1),
    ]


_ROBUST = {
    "supcon": lambda x, y, t: supcon(x, np.arange(8) % 3, temperature=t),
    "debiased": lambda x, y, t: debiased_nt_xent(x, y, temperature=t),
    "hard": lambda x, y, t: hard_negative_nt_xent(x, y, temperature=t, beta=2.0),
    "dhn": lambda x, y, t: dhn_nce(x, y, temperature=t, beta1=1.0, beta2=0.15, alpha=0.5),
}


@pytest.mark.parametrize("name", sorted(_ROBUST))
def test_robust_finite_values_and_grads(rng, name):
    fn = _ROBUST[name]
    for case, x, y, t in _robust_inputs(rng):
        val, grads = jax.value_and_grad(fn, argnums=(0, 1))(x, y, t)
        assert np.isfinite(val), (name, case)
        for g in grads:
            assert np.isfinite(np.asarray(g)).all(), (name, case)


_REFS = {
    "supcon": lambda x, y: np_supcon(x, np.arange(8) % 3, 0.1),
    "debiased": lambda x, y: np_dcl_hcl(x, y, 0.5, 0.1),
    "hard": lambda x, y: np_dcl_hcl(x, y, 0.5, 0.1, 2.0),
    "dhn": lambda x, y: np_dhn(x, y, 0.5, 1.0, 0.15, 0.5),
}


@pytest.mark.parametrize("name", sorted(_ROBUST))
def test_bfloat16_accumulates_in_float32(rng, name):
    x = rng.normal(size=(8, 4)).astype(np.float32)
    y = (x + 0.3 * rng.normal(size=(8, 4))).astype(np.float32)
    xb, yb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.bfloat16)
    t = 0.1 if name == "supcon" else 0.5
    out = _ROBUST[name](xb, yb, t)
    assert out.dtype == jnp.float32
    ref = _REFS[name](np.asarray(xb, np.float64), np.asarray(yb, np.float64))
    np.testing.assert_allclose(out, ref, rtol=1e-5)


_Z = np.ones((4, 3), np.float32)
_Y = np.array([0, 0, 1, 1])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: supcon(_Z[0], _Y), "embeddings must have rank 2"),
        (lambda: supcon(_Z.astype(np.int32), _Y), "embeddings must have a float dtype"),
        (lambda: supcon(_Z, _Y[:3]), r"labels must have shape \[4\]"),
        (lambda: supcon(_Z, _Y.astype(np.float32)), "labels must have a int dtype"),
        (lambda: supcon(_Z, _Y, temperature=0.0), "temperature"),
        (lambda: supcon(_Z[:0], _Y[:0]), "empty"),
        (lambda: debiased_nt_xent(_Z, _Z[:3]), r"z2 must have the same shape as z1 \[4, 3\]"),
        (lambda: debiased_nt_xent(_Z, _Z[:, :2]), "z2 must have the same shape"),
        (lambda: debiased_nt_xent(_Z[0], _Z[0]), "z1 must have rank 2"),
        (lambda: debiased_nt_xent(_Z[:1], _Z[:1]), "at least 2 rows"),
        (lambda: debiased_nt_xent(_Z, _Z, temperature=-0.1), "temperature"),
        (lambda: debiased_nt_xent(_Z, _Z, tau_plus=1.0), r"tau_plus must .* \[0.0, 1.0\)"),
        (lambda: debiased_nt_xent(_Z, _Z, tau_plus=-0.1), "tau_plus"),
        (lambda: hard_negative_nt_xent(_Z, _Z, beta=-1.0), "beta must .* >= 0"),
        (lambda: hard_negative_nt_xent(_Z, _Z, tau_plus=1.5), "tau_plus"),
        (lambda: hard_negative_nt_xent(_Z.astype(np.int32), _Z), "z1 must have a float dtype"),
        (lambda: dhn_nce(_Z, _Z[:3]), r"b must have the same shape as a \[4, 3\]; got \[3, 3\]"),
        (lambda: dhn_nce(_Z, _Z[:, :2]), "b must have the same shape"),
        (lambda: dhn_nce(_Z[None], _Z[None]), "a must have rank 2"),
        (lambda: dhn_nce(_Z[:1], _Z[:1]), "at least 2 rows"),
        (lambda: dhn_nce(_Z, _Z.astype(np.int64)), "b must have a float dtype"),
        (lambda: dhn_nce(_Z, _Z, temperature=0.0), "temperature"),
        (lambda: dhn_nce(_Z, _Z, beta1=-0.1), "beta1"),
        (lambda: dhn_nce(_Z, _Z, beta2=-0.1), "beta2"),
        (lambda: dhn_nce(_Z, _Z, alpha=-1.0), "alpha"),
    ],
)
def test_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_validation_happens_before_tracing():
    # Wrong shapes raise the library's ValueError even when called inside the user's jit.
    with pytest.raises(ValueError, match="z2 must have the same shape"):
        jax.jit(lambda a, b: debiased_nt_xent(a, b))(_Z, _Z[:3])
    # A traced temperature / tau_plus (e.g. a schedule) is accepted and gives the eager value.
    z1, z2 = _views(np.random.default_rng(1))
    f = jax.jit(lambda a, b, t, tp: hard_negative_nt_xent(a, b, temperature=t, tau_plus=tp))
    np.testing.assert_allclose(
        f(z1, z2, 0.4, 0.2), hard_negative_nt_xent(z1, z2, temperature=0.4, tau_plus=0.2), rtol=1e-6
    )


# ---------------------------------------------------------------------------------------------
# hypothesis invariants
# ---------------------------------------------------------------------------------------------

_PROP = settings(max_examples=20, deadline=None)


def _draw(seed, n, d=5):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, d)).astype(np.float32)
    y = (x + r.normal(size=(n, d))).astype(np.float32)
    labels = r.integers(0, 3, size=n)
    return r, x, y, labels


_PERM = {
    "supcon": lambda x, y, lab: supcon(x, lab, temperature=0.3),
    "debiased": lambda x, y, lab: debiased_nt_xent(x, y, temperature=0.3, tau_plus=0.2),
    "hard": lambda x, y, lab: hard_negative_nt_xent(x, y, temperature=0.3, beta=1.5),
    "dhn": lambda x, y, lab: dhn_nce(x, y, temperature=0.3, beta1=0.7, beta2=0.2, alpha=0.4),
}


@_PROP
@given(
    seed=st.integers(0, 2**31 - 1), n=st.sampled_from([4, 6]), name=st.sampled_from(sorted(_PERM))
)
def test_property_batch_permutation(seed, n, name):
    r, x, y, labels = _draw(seed, n)
    perm = r.permutation(n)
    fn = _PERM[name]
    np.testing.assert_allclose(
        fn(x[perm], y[perm], labels[perm]), fn(x, y, labels), rtol=1e-5, atol=1e-6
    )


@_PROP
@given(
    seed=st.integers(0, 2**31 - 1), n=st.sampled_from([4, 6]), name=st.sampled_from(sorted(_PERM))
)
def test_property_scaling_invariance(seed, n, name):
    r, x, y, labels = _draw(seed, n)
    sx = r.uniform(0.01, 100.0, size=(n, 1)).astype(np.float32)
    sy = r.uniform(0.01, 100.0, size=(n, 1)).astype(np.float32)
    fn = _PERM[name]
    np.testing.assert_allclose(fn(x * sx, y * sy, labels), fn(x, y, labels), rtol=1e-4, atol=1e-5)


@_PROP
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.sampled_from([2, 4, 6]),
    t=st.sampled_from([0.05, 0.3, 1.0]),
)
def test_property_no_prior_no_hardness_is_nt_xent(seed, n, t):
    _, x, y, _ = _draw(seed, n)
    ref = nt_xent(x, y, temperature=t)
    # nt_xent forms lse − l_pos from float32 logits of size 1/τ, so near-zero losses carry an
    # absolute rounding error of about eps32/τ; hence the atol, in both checks (a loss of 1e-12
    # cannot be relatively exact in float32: its float64 value differs by 2e-17 = 1.6e-5 rel.).
    atol = 1e-7 / t
    for got in (
        debiased_nt_xent(x, y, temperature=t, tau_plus=0.0),
        hard_negative_nt_xent(x, y, temperature=t, tau_plus=0.0, beta=0.0),
    ):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=atol)
        np.testing.assert_allclose(got, np_dcl_hcl(x, y, t, 0.0), rtol=1e-5, atol=atol)


@_PROP
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.sampled_from([2, 4, 6]),
    t=st.sampled_from([0.05, 0.3, 1.0]),
)
def test_property_dhn_alpha1_beta0_is_two_way_info_nce(seed, n, t):
    _, x, y, _ = _draw(seed, n)
    got = dhn_nce(x, y, temperature=t, alpha=1.0, beta1=0.0, beta2=0.0)
    np.testing.assert_allclose(got, np_two_way_info_nce(x, y, t), rtol=1e-5, atol=1e-6)
