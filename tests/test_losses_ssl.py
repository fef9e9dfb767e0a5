"""Self-supervised losses (alignment, uniformity, VICReg, Barlow Twins, LDReg, CARE) against
independent NumPy float64 references written here from the papers' reference code."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from losses_reference import logsumexp, normalize, numeric_grad
from tolerances import assert_f32_close

from jaxemb.losses import (
    alignment,
    barlow_twins,
    care_equivariance,
    ldreg,
    uniformity,
    vicreg,
)
from jaxemb.parallel import shard_batch

# ---------------------------------------------------------------------------------------------
# NumPy float64 references
# ---------------------------------------------------------------------------------------------


def np_alignment(a, b, alpha=2.0):
    # align_loss: (x - y).norm(p=2, dim=1).pow(alpha).mean() on normalised features
    d = np.linalg.norm(normalize(a) - normalize(b), axis=1)
    return np.mean(d**alpha)


def np_uniformity(x, t=2.0):
    # uniform_loss: torch.pdist(x).pow(2).mul(-t).exp().mean().log(), pdist = pairs i < j
    x = normalize(x)
    n = len(x)
    sq = [np.sum((x[i] - x[j]) ** 2) for i in range(n) for j in range(i + 1, n)]
    return logsumexp(-t * np.array(sq)) - np.log(len(sq))


def np_vicreg(z1, z2, sim=25.0, var=25.0, cov=1.0):
    z1 = np.asarray(z1, np.float64)
    z2 = np.asarray(z2, np.float64)
    repr_loss = np.mean((z1 - z2) ** 2)

    def terms(z):
        n, d = z.shape
        zc = z - z.mean(axis=0)
        std = np.sqrt(zc.var(axis=0, ddof=1) + 1e-4)
        c = zc.T @ zc / (n - 1)
        off = [c[i, j] ** 2 for i in range(d) for j in range(d) if i != j]
        return np.mean(np.maximum(1.0 - std, 0.0)), np.sum(off) / d

    s1, c1 = terms(z1)
    s2, c2 = terms(z2)
    return sim * repr_loss + var * (s1 / 2 + s2 / 2) + cov * (c1 + c2)


def np_barlow(z1, z2, lam=5e-3):
    def bn(z):  # BatchNorm1d(affine=False), training mode: biased variance, eps 1e-5
        z = np.asarray(z, np.float64)
        return (z - z.mean(axis=0)) / np.sqrt(z.var(axis=0) + 1e-5)

    n, d = np.shape(z1)
    c = bn(z1).T @ bn(z2) / n
    on = sum((1.0 - c[i, i]) ** 2 for i in range(d))
    off = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return on + lam * off


def np_ldreg(xq, xr, k, beta=1.0):
    """LDReg with query points ``xq`` (differentiated) and reference points ``xr`` (held fixed):
    lid_mom_est sorts the distances to the batch, drops the self distance a[:, 0] and uses
    m = mean(a[:, 1:k]), w = a[:, k]."""
    xq = np.asarray(xq, np.float64)
    xr = np.asarray(xr, np.float64)
    n = len(xq)
    logs = []
    for i in range(n):
        d = np.sort([np.linalg.norm(xq[i] - xr[j]) for j in range(n) if j != i])
        m = d[: k - 1].mean()
        w = d[k - 1]
        logs.append(np.log(m / (w - m)))
    return -beta * np.mean(logs)


def np_care(z, za, normalize_rows=True, num_chunks=1):
    z = np.asarray(z, np.float64)
    za = np.asarray(za, np.float64)
    if normalize_rows:
        z, za = normalize(z), normalize(za)
    m = len(z) // num_chunks
    total = 0.0
    for c in range(num_chunks):
        a, b = z[c * m : (c + 1) * m], za[c * m : (c + 1) * m]
        g, gb = a @ a.T, b @ b.T
        rows = [sum((g[i, j] - gb[i, j]) ** 2 for j in range(m) if j != i) for i in range(m)]
        total += 2 * np.mean(rows)
    return total / num_chunks


def _views(rng, n=8, d=5, noise=0.5, scale=1.0):
    z1 = scale * rng.normal(size=(n, d))
    z2 = z1 + noise * scale * rng.normal(size=(n, d))
    return z1.astype(np.float32), z2.astype(np.float32)


def _f64(x):
    return np.asarray(x, np.float64)


def _check_grads(loss, ref, args, rtol=2e-3, atol=2e-4):
    """jax.grad of ``loss`` w.r.t. every argument vs central differences of ``ref``."""
    grads = jax.grad(loss, argnums=tuple(range(len(args))))(*args)
    args64 = [_f64(a) for a in args]
    for i, g in enumerate(grads):

        def f(x, i=i):
            return ref(*[x if j == i else a for j, a in enumerate(args64)])

        np.testing.assert_allclose(g, numeric_grad(f, args64[i]), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# Values and gradients vs NumPy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [2.0, 1.0, 3.5])
def test_alignment_value_and_grad(rng, alpha):
    a, b = _views(rng)
    a[2] *= 7.0  # scale differences are normalised away
    np.testing.assert_allclose(alignment(a, b, alpha=alpha), np_alignment(a, b, alpha), rtol=1e-5)
    _check_grads(
        lambda x, y: alignment(x, y, alpha=alpha), lambda x, y: np_alignment(x, y, alpha), (a, b)
    )


def test_alignment_identical_pairs_have_zero_finite_gradient(rng):
    # rows whose normalisation is exact in float32: coincident pairs give exactly 0
    e = np.array([[4.0, 0.0, 0.0], [0.0, -0.5, 0.0], [0.0, 0.0, 2.0]], np.float32)
    a, _ = _views(rng, d=3)
    for alpha in (0.5, 1.0, 2.0):
        f = jax.value_and_grad(lambda x, y, al=alpha: alignment(x, y, alpha=al), argnums=(0, 1))
        val, grads = f(e, e.copy())
        assert float(val) == 0.0
        for g in grads:  # a zero (not NaN) gradient even where ‖·‖^α has no derivative
            np.testing.assert_array_equal(np.asarray(g), 0.0)
        # pairs equal up to float32 rounding of the normalisation: tiny value, finite gradients
        val, grads = f(a, a.copy())
        assert float(val) < (1e-6) ** alpha
        assert all(np.isfinite(np.asarray(g)).all() for g in grads)


@pytest.mark.parametrize("t", [2.0, 0.5, 10.0])
def test_uniformity_value_and_grad(rng, t):
    x, _ = _views(rng, n=7)
    x[3] = x[1]  # a duplicate row: ‖x_i − x_j‖ = 0 must have a finite gradient
    np.testing.assert_allclose(uniformity(x, t=t), np_uniformity(x, t), rtol=1e-5)
    _check_grads(lambda z: uniformity(z, t=t), lambda z: np_uniformity(z, t), (x,))


def test_uniformity_square_on_circle_by_hand():
    # 4 corners of a square on the unit circle: 4 sides with ‖·‖² = 2, 2 diagonals with 4
    x = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.float32) * 3.0
    for t in (2.0, 1.0):
        expect = math.log((4 * math.exp(-2 * t) + 2 * math.exp(-4 * t)) / 6)
        np.testing.assert_allclose(uniformity(x, t=t), expect, rtol=1e-6)
    # a collapsed batch has uniformity log(1) = 0
    np.testing.assert_allclose(uniformity(np.ones((5, 3), np.float32)), 0.0, atol=1e-6)


@pytest.mark.parametrize(
    "weights, scale", [((25.0, 25.0, 1.0), 0.6), ((1.0, 0.5, 2.0), 1.5), ((0.0, 1.0, 0.0), 0.3)]
)
def test_vicreg_value_and_grad(rng, weights, scale):
    z1, z2 = _views(rng, n=8, d=4, scale=scale)
    sim, var, cov = weights
    kw = dict(sim_weight=sim, var_weight=var, cov_weight=cov)
    np.testing.assert_allclose(vicreg(z1, z2, **kw), np_vicreg(z1, z2, *weights), rtol=1e-5)
    _check_grads(lambda a, b: vicreg(a, b, **kw), lambda a, b: np_vicreg(a, b, *weights), (z1, z2))


def _whitened(n, d, seed=0):
    """Columns with zero mean and unbiased covariance exactly I (orthonormal, ⟂ ones)."""
    r = np.random.default_rng(seed)
    m = np.concatenate([np.ones((n, 1)), r.normal(size=(n, d))], axis=1)
    q, _ = np.linalg.qr(m)
    return q[:, 1:] * np.sqrt(n - 1)


def test_vicreg_identical_whitened_views_by_hand():
    z = _whitened(16, 4)
    # invariance 0; std = sqrt(1 + 1e-4) > 1 so variance 0; covariance off-diagonals 0
    np.testing.assert_allclose(vicreg(z.astype(np.float32), z.astype(np.float32)), 0.0, atol=2e-5)
    # shrunk by 0.5: std = sqrt(0.25 + 1e-4) per feature and view; the views' terms average
    half = (0.5 * z).astype(np.float32)
    expect = 25.0 * (1.0 - math.sqrt(0.25 + 1e-4))
    np.testing.assert_allclose(vicreg(half, half), expect, rtol=1e-5)


@pytest.mark.parametrize("lam", [5e-3, 0.0, 0.7])
def test_barlow_twins_value_and_grad(rng, lam):
    z1, z2 = _views(rng, n=8, d=4, scale=3.0)
    z2[5] = z2[4]  # duplicate rows
    np.testing.assert_allclose(barlow_twins(z1, z2, lambda_=lam), np_barlow(z1, z2, lam), rtol=1e-5)
    _check_grads(
        lambda a, b: barlow_twins(a, b, lambda_=lam),
        lambda a, b: np_barlow(a, b, lam),
        (z1, z2),
        rtol=3e-3,
        atol=5e-4,
    )


def test_barlow_twins_identical_decorrelated_views_by_hand():
    n, d = 16, 4
    z = _whitened(n, d, seed=1) * 5.0 + 3.0
    # biased var = 25 (n-1)/n; C = I · var/(var + 1e-5): loss = d · (1e-5/(var + 1e-5))²
    var = 25.0 * (n - 1) / n
    expect = d * (1e-5 / (var + 1e-5)) ** 2
    got = barlow_twins(z.astype(np.float32), z.astype(np.float32))
    assert abs(float(got) - expect) < 1e-6
    # anti-correlated second view: C = −I, on-diagonal (1 − (−1))² = 4 per feature
    got = barlow_twins(z.astype(np.float32), (-z).astype(np.float32), lambda_=0.3)
    np.testing.assert_allclose(got, 4.0 * d, rtol=1e-4)


@pytest.mark.parametrize("k, beta", [(2, 1.0), (4, 0.5), (7, 2.0)])
def test_ldreg_value_and_grad(rng, k, beta):
    x, _ = _views(rng, n=8, d=3, scale=2.0)
    np.testing.assert_allclose(ldreg(x, k=k, beta=beta), np_ldreg(x, x, k, beta), rtol=1e-5)
    # the neighbours are held fixed (reference = batch.detach()): only the query moves
    g = jax.grad(lambda z: ldreg(z, k=k, beta=beta))(x)
    ref = numeric_grad(lambda q: np_ldreg(q, _f64(x), k, beta), _f64(x))
    np.testing.assert_allclose(g, ref, rtol=2e-3, atol=2e-4)
    # ... which differs from differentiating through both ends of every distance
    full = numeric_grad(lambda q: np_ldreg(q, q, k, beta), _f64(x))
    assert not np.allclose(ref, full, rtol=1e-2, atol=1e-3)


def test_ldreg_known_neighbour_distances_by_hand():
    x = np.array([[0.0], [1.0], [3.0], [7.0]], np.float32)
    # k=2: LID = r1/(r2 − r1): point 0: 1/(3−1); 1: 1/(2−1); 3: 2/(3−2); 7: 4/(6−4)
    expect = -np.mean(np.log([0.5, 1.0, 2.0, 2.0]))
    np.testing.assert_allclose(ldreg(x, k=2), expect, rtol=1e-6)
    # k=3: μ = mean(r1, r2), w = r3: point 0: 2/(7−2); 1: 1.5/(6−1.5); 3: 2.5/(4−2.5); 7: 5/(7−5)
    lids = [2 / 5, 1.5 / 4.5, 2.5 / 1.5, 5 / 2]
    np.testing.assert_allclose(ldreg(x, k=3, beta=3.0), -3.0 * np.mean(np.log(lids)), rtol=1e-6)


def test_ldreg_duplicates_and_ties_exact():
    # small integers: the Gram-matrix distances are exact in float32, so duplicates give 0
    r = np.random.default_rng(5)
    x = r.integers(-3, 4, size=(8, 3)).astype(np.float32)
    x[6] = x[1]
    x[7] = x[1]
    np.testing.assert_allclose(ldreg(x, k=4), np_ldreg(x, x, 4), rtol=1e-5)


@pytest.mark.parametrize("normalize_rows, chunks", [(True, 1), (False, 1), (True, 2), (False, 4)])
def test_care_value_and_grad(rng, normalize_rows, chunks):
    z, za = _views(rng, n=8, d=3)
    kw = dict(normalize=normalize_rows, num_chunks=chunks)
    np.testing.assert_allclose(
        care_equivariance(z, za, **kw), np_care(z, za, normalize_rows, chunks), rtol=1e-5
    )
    _check_grads(
        lambda a, b: care_equivariance(a, b, **kw),
        lambda a, b: np_care(a, b, normalize_rows, chunks),
        (z, za),
    )


def test_care_orthogonal_maps_are_free(rng):
    z, _ = _views(rng, n=8, d=4)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    np.testing.assert_allclose(care_equivariance(z, z @ q.astype(np.float32)), 0.0, atol=1e-5)
    assert float(care_equivariance(z, z * np.array([1, 2, 1, 1], np.float32))) > 1e-2


# ---------------------------------------------------------------------------------------------
# Sharding, robustness, dtypes
# ---------------------------------------------------------------------------------------------

ALL = {
    "alignment": (lambda a, b: alignment(a, b, alpha=1.5), 2),
    "uniformity": (lambda a: uniformity(a, t=2.0), 1),
    "vicreg": (lambda a, b: vicreg(a, b), 2),
    "barlow_twins": (lambda a, b: barlow_twins(a, b, lambda_=0.01), 2),
    "ldreg": (lambda a: ldreg(a, k=5, beta=0.5), 1),
    "care": (lambda a, b: care_equivariance(a, b, num_chunks=2), 2),
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_sharded_matches_single_device(rng, mesh8, name):
    loss, nargs = ALL[name]
    args = _views(rng, n=16, d=6)[:nargs]
    f = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(nargs))))
    v1, g1 = f(*args)
    sharded = shard_batch(mesh8, args)
    assert all(len(a.addressable_shards) == 8 for a in sharded)
    v8, g8 = f(*sharded)
    np.testing.assert_allclose(v8, v1, rtol=1e-5)
    for a, b in zip(g8, g1, strict=True):
        assert_f32_close(a, b)


def _extreme_inputs(rng):
    z1, z2 = _views(rng, n=8, d=4)
    zero = z1.copy()
    zero[2] = 0.0
    return {
        "norm_1e4": (z1 * 1e4, z2 * 1e4),
        "all_equal": (np.ones_like(z1), np.ones_like(z2)),
        "zero_rows": (zero, z2),
        "all_zero": (np.zeros_like(z1), np.zeros_like(z2)),
    }


@pytest.mark.parametrize("name", sorted(ALL))
def test_finite_values_and_gradients_on_extremes(rng, name):
    loss, nargs = ALL[name]
    for case, args in _extreme_inputs(rng).items():
        args = args[:nargs]
        val, grads = jax.value_and_grad(loss, argnums=tuple(range(nargs)))(*args)
        assert np.isfinite(float(val)), (name, case)
        for g in grads:
            assert np.isfinite(np.asarray(g)).all(), (name, case)


def test_extreme_values_match_references(rng):
    ex = _extreme_inputs(rng)
    z, z2 = ex["zero_rows"]
    np.testing.assert_allclose(uniformity(z), np_uniformity(z), rtol=1e-5)
    np.testing.assert_allclose(alignment(z, z2), np_alignment(z, z2), rtol=1e-5)
    np.testing.assert_allclose(care_equivariance(z, z2), np_care(z, z2), rtol=1e-5)
    a, b = ex["norm_1e4"]
    np.testing.assert_allclose(vicreg(a, b), np_vicreg(a, b), rtol=1e-4)
    np.testing.assert_allclose(barlow_twins(a, b), np_barlow(a, b), rtol=1e-4)
    np.testing.assert_allclose(ldreg(a, k=3), np_ldreg(a, a, 3), rtol=1e-4)
    # collapsed batches: VICReg pays the full variance hinge, Barlow Twins Σ(1 − 0)² = dim,
    # LDReg is defined as 0 (no neighbourhood to measure)
    ones = np.ones((8, 4), np.float32)
    np.testing.assert_allclose(vicreg(ones, ones), 25.0 * (1 - math.sqrt(1e-4)), rtol=1e-6)
    np.testing.assert_allclose(barlow_twins(ones, ones), 4.0, rtol=1e-6)
    assert float(ldreg(ones, k=3)) == 0.0


@pytest.mark.parametrize("name", sorted(ALL))
def test_bfloat16_accumulates_in_float32(rng, name):
    loss, nargs = ALL[name]
    args = _views(rng, n=8, d=4, scale=2.0)[:nargs]
    bf = [jnp.asarray(a, jnp.bfloat16) for a in args]
    out = loss(*bf)
    assert out.dtype == jnp.float32
    rounded = [np.asarray(a, np.float32) for a in bf]
    np.testing.assert_allclose(out, loss(*rounded), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

_X = np.ones((6, 3), np.float32)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: alignment(_X, _X[:-1]), r"b must be \[batch, dim\] like a \[6, 3\]; got \[5, 3\]"),
        (lambda: alignment(_X, _X[:, :2]), "b must be"),
        (lambda: alignment(_X[0], _X[0]), "a must have rank 2"),
        (lambda: alignment(_X.astype(np.int32), _X.astype(np.int32)), "float"),
        (lambda: alignment(_X, _X, alpha=0.0), "alpha"),
        (lambda: alignment(_X, _X, alpha=-1.0), "alpha"),
        (lambda: alignment(_X[:0], _X[:0]), "empty"),
        (lambda: uniformity(_X, t=0.0), "t must be"),
        (lambda: uniformity(_X, t=-2.0), "t must be"),
        (lambda: uniformity(_X[:1]), "at least 2 rows"),
        (lambda: uniformity(_X[None]), "x must have rank 2"),
        (lambda: uniformity(_X.astype(bool)), "float"),
        (lambda: vicreg(_X, _X[:-1]), "z2 must be"),
        (lambda: vicreg(_X[:1], _X[:1]), "at least 2 rows"),
        (lambda: vicreg(_X, _X, var_weight=-1.0), "var_weight"),
        (lambda: vicreg(_X, _X, sim_weight=float("nan")), "sim_weight"),
        (lambda: vicreg(_X, _X, cov_weight=-0.1), "cov_weight"),
        (lambda: vicreg(_X.astype(np.int64), _X.astype(np.int64)), "float"),
        (lambda: barlow_twins(_X, _X, lambda_=-1e-3), "lambda_"),
        (lambda: barlow_twins(_X, _X[:, :2]), "z2 must be"),
        (lambda: barlow_twins(_X[:1], _X[:1]), "at least 2 rows"),
        (lambda: ldreg(_X, k=6), r"k must be < batch size.*k=6.*\[6, 3\]"),
        (lambda: ldreg(_X, k=10), "k must be < batch size"),
        (lambda: ldreg(_X, k=1), "k must be >= 2"),
        (lambda: ldreg(_X, k=2.0), "k must be an integer"),
        (lambda: ldreg(_X, k=2, beta=-1.0), "beta"),
        (lambda: ldreg(_X[0], k=2), "x must have rank 2"),
        (lambda: ldreg(_X[:2], k=1), "at least 3 rows"),
        (lambda: care_equivariance(_X, _X[:-1]), "z_aug must be"),
        (lambda: care_equivariance(_X, _X, num_chunks=4), "num_chunks must divide"),
        (lambda: care_equivariance(_X, _X, num_chunks=0), "num_chunks"),
        (lambda: care_equivariance(_X, _X, normalize=1), "normalize"),
    ],
)
def test_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_validation_happens_before_tracing():
    # Wrong shapes are rejected by the public function even inside a user's jit.
    with pytest.raises(ValueError, match="z2"):
        jax.jit(lambda a, b: vicreg(a, b))(_X, _X[:-1])


# ---------------------------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------------------------

_N = 8


def _data(seed, d=4):
    r = np.random.default_rng(seed)
    z1 = r.normal(size=(_N, d)).astype(np.float32)
    z2 = (z1 + 0.5 * r.normal(size=(_N, d))).astype(np.float32)
    return z1, z2


_PERM_LOSSES = {
    "alignment": (lambda a, b: alignment(a, b, alpha=2.0), 2),
    "uniformity": (lambda a: uniformity(a), 1),
    "vicreg": (lambda a, b: vicreg(a, b), 2),
    "barlow_twins": (lambda a, b: barlow_twins(a, b), 2),
    "ldreg": (lambda a: ldreg(a, k=3), 1),
    "care": (lambda a, b: care_equivariance(a, b), 2),
}


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), perm=st.permutations(list(range(_N))))
def test_batch_permutation_invariance(seed, perm):
    args = _data(seed)
    perm = np.asarray(perm)
    for name, (loss, nargs) in _PERM_LOSSES.items():
        a = args[:nargs]
        np.testing.assert_allclose(
            loss(*[x[perm] for x in a]), loss(*a), rtol=2e-5, atol=1e-6, err_msg=name
        )


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    scales=st.lists(st.floats(1e-2, 1e2), min_size=_N, max_size=_N),
)
def test_row_scaling_invariance(seed, scales):
    z1, z2 = _data(seed)
    s = np.asarray(scales, np.float32)[:, None]
    np.testing.assert_allclose(alignment(z1 * s, z2), alignment(z1, z2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        alignment(z1, z2 * s[::-1], alpha=1.0), alignment(z1, z2, alpha=1.0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(uniformity(z1 * s), uniformity(z1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        care_equivariance(z1 * s, z2), care_equivariance(z1, z2), rtol=1e-5, atol=1e-6
    )
