"""Tests of the geometry diagnostics, CKA, anchors, whitening and TCAV of jaxemb.analysis.

Each function is compared with an independent NumPy (float64) implementation written here
(brute-force pairwise matrices), with cases whose answer is known in closed form, and with
inputs sharded over the 8-device mesh.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from matplotlib.figure import Figure

from jaxemb import analysis
from jaxemb.analysis import plots
from jaxemb.analysis._geometry import _pick_anchors, _row_layout

# ---------------------------------------------------------------------------------------------
# Independent NumPy (float64) references
# ---------------------------------------------------------------------------------------------


def np_normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def np_anisotropy(x):
    u = np_normalize(x)
    c = u @ u.T
    n = len(x)
    return (c.sum() - np.trace(c)) / (n * (n - 1))


def np_isotropy(x):
    x = np.asarray(x, np.float64)
    _, u = np.linalg.eigh(np.cov(x, rowvar=False))
    z = np.concatenate([np.exp(x @ u).sum(0), np.exp(-x @ u).sum(0)])
    return z.min() / z.max()


def np_sorted_neighbour_dists(x):
    x = np.asarray(x, np.float64)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)


def np_lid_per_point(x, k):
    r = np_sorted_neighbour_dists(x)[:, :k]
    return -1.0 / np.mean(np.log(r / r[:, -1:]), axis=1)


def np_twonn(x, method="mle", discard=0.1):
    r = np_sorted_neighbour_dists(x)
    mu = r[:, 1] / r[:, 0]
    n = len(x)
    if method == "mle":
        return n / np.sum(np.log(mu))
    keep = int(n * (1 - discard))
    xs = np.log(np.sort(mu))[:keep]
    ys = -np.log(1 - np.arange(1, keep + 1) / n)
    return np.sum(xs * ys) / np.sum(xs**2)


def np_hubness(x, k):
    u = np_normalize(x)
    s = u @ u.T
    np.fill_diagonal(s, -np.inf)
    n = len(x)
    counts = np.zeros(n, int)
    for i in range(n):
        order = np.lexsort((np.arange(n), -s[i]))[:k]  # by similarity, then lower index
        counts[order] += 1
    c = counts.astype(np.float64)
    dev = c - c.mean()
    skew = np.mean(dev**3) / np.mean(dev**2) ** 1.5
    return skew, np.mean(counts == 0), counts


def np_hsic(K, L, debiased):
    n = len(K)
    if not debiased:
        H = np.eye(n) - np.ones((n, n)) / n
        return np.trace(K @ H @ L @ H) / (n - 1) ** 2
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    one = np.ones(n)
    return (
        np.trace(K @ L)
        + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ K @ L @ one)
    ) / (n * (n - 3))


def np_cka(K, L, debiased=False):
    return np_hsic(K, L, debiased) / np.sqrt(np_hsic(K, K, debiased) * np_hsic(L, L, debiased))


def np_rbf_gram(x, sigma):
    x = np.asarray(x, np.float64)
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * sigma**2 * np.median(d2)))


def np_linear_gram(x):
    x = np.asarray(x, np.float64)
    return x @ x.T  # uncentred: the estimators centre (or are translation invariant)


def np_farthest(x, n, first):
    x = np.asarray(x, np.float64)
    chosen = [first]
    mind = ((x - x[first]) ** 2).sum(1)
    for _ in range(n - 1):
        m = mind.copy()
        m[chosen] = -1
        nxt = int(np.argmax(m))
        chosen.append(nxt)
        mind = np.minimum(mind, ((x - x[nxt]) ** 2).sum(1))
    return chosen


def np_logistic_direction(pos, neg, l2, steps=20000, lr=0.5):
    """Binary logistic regression by gradient descent on the log-odds weights ``w``.

    The two-class softmax penalty ``l2 (‖w₀‖² + ‖w₁‖²)/2`` is smallest at ``w₁ = −w₀ = w/2``,
    i.e. it equals ``l2 ‖w‖² / 4`` on ``w = w₁ − w₀``.
    """
    x = np.concatenate([pos, neg]).astype(np.float64)
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ w + b)))
        g = p - y
        w -= lr * (x.T @ g / len(y) + 0.5 * l2 * w)
        b -= lr * g.mean()
    return w / np.linalg.norm(w)


def random_orthogonal(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def manifold(rng, n, intrinsic, ambient):
    """Gaussian data on a random ``intrinsic``-dimensional linear subspace of R^ambient."""
    basis = np.linalg.qr(rng.normal(size=(ambient, intrinsic)))[0]
    return (rng.normal(size=(n, intrinsic)) @ basis.T + 3.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Anisotropy and isotropy
# ---------------------------------------------------------------------------------------------


def test_anisotropy_matches_numpy_and_known_cases(rng):
    x = (rng.normal(size=(57, 9)) + 0.7).astype(np.float32)
    np.testing.assert_allclose(analysis.anisotropy(x), np_anisotropy(x), rtol=1e-5)
    same = np.outer(rng.uniform(0.5, 2.0, size=10), rng.normal(size=6)).astype(np.float32)
    assert float(analysis.anisotropy(same)) == pytest.approx(1.0, abs=1e-5)
    pm = np.array([[1.0, 2.0], [-1.0, -2.0]], np.float32)  # opposite directions
    assert float(analysis.anisotropy(pm)) == pytest.approx(-1.0, abs=1e-6)


def test_isotropy_matches_numpy_and_known_cases(rng):
    x = (rng.normal(size=(80, 6)) * np.linspace(0.3, 1.2, 6) + 0.2).astype(np.float32)
    np.testing.assert_allclose(analysis.isotropy(x), np_isotropy(x), rtol=1e-4)
    gauss = rng.normal(size=(20000, 8)).astype(np.float32)
    assert float(analysis.isotropy(gauss)) > 0.9  # Z(u) ≈ N·e^{1/2} in every direction
    stretched = gauss * np.array([4.0] + [1.0] * 7, np.float32)
    assert float(analysis.isotropy(stretched)) < 0.01  # e^{8} vs e^{1/2}


# ---------------------------------------------------------------------------------------------
# Intrinsic dimension
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1024, 13])
def test_lid_mle_matches_numpy(rng, chunk_size):
    x = rng.normal(size=(70, 5)).astype(np.float32)
    per = np_lid_per_point(x, 8)
    got = analysis.lid_mle(x, 8, per_point=True, chunk_size=chunk_size)
    assert got.shape == (70,)
    np.testing.assert_allclose(got, per, rtol=2e-3)
    np.testing.assert_allclose(
        analysis.lid_mle(x, 8, chunk_size=chunk_size), 1 / np.mean(1 / per), rtol=2e-3
    )


@pytest.mark.parametrize("method", ["mle", "fit"])
def test_lid_twonn_matches_numpy(rng, method):
    x = rng.normal(size=(70, 5)).astype(np.float32)
    np.testing.assert_allclose(
        analysis.lid_twonn(x, method=method, chunk_size=16), np_twonn(x, method), rtol=2e-3
    )


def test_intrinsic_dimension_of_linear_manifold(rng):
    x = manifold(rng, 2000, 3, 12)
    assert float(analysis.lid_mle(x, 20, chunk_size=512)) == pytest.approx(3.0, rel=0.15)
    assert float(analysis.lid_twonn(x, chunk_size=512)) == pytest.approx(3.0, rel=0.15)
    assert float(analysis.lid_twonn(x, method="fit", chunk_size=512)) == pytest.approx(
        3.0, rel=0.15
    )


# ---------------------------------------------------------------------------------------------
# Hubness
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1024, 7])
def test_hubness_matches_numpy(rng, chunk_size):
    x = rng.normal(size=(60, 20)).astype(np.float32)
    got = analysis.hubness(x, 5, chunk_size=chunk_size)
    skew, anti, counts = np_hubness(x, 5)
    np.testing.assert_array_equal(got.k_occurrence, counts)
    assert int(np.sum(got.k_occurrence)) == 60 * 5
    np.testing.assert_allclose(got.skewness, skew, rtol=1e-5, atol=1e-5)  # float32 moments
    assert float(got.antihub_fraction) == pytest.approx(anti)


def test_hubness_hand_case_with_ties():
    # Rows 1 and 2 share a direction (cosine 1) whatever their norms.
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [1.0, 0.1]], np.float32)
    h = analysis.hubness(x, 1)
    # 0 -> 3, 1 -> 2, 2 -> 1, 3 -> 0.
    assert h.k_occurrence.tolist() == [1, 1, 1, 1]
    assert float(h.antihub_fraction) == 0.0
    # Angles 0, 16.7, -16.7, 31.0 degrees.
    star = np.array([[1.0, 0.0], [1.0, 0.3], [1.0, -0.3], [1.0, 0.6]], np.float32)
    h = analysis.hubness(star, 1)  # 0 -> 1 (tie with 2: lower index), 1 -> 3, 2 -> 0, 3 -> 1
    assert h.k_occurrence.tolist() == [1, 2, 0, 1]
    assert float(h.antihub_fraction) == 0.25


# ---------------------------------------------------------------------------------------------
# CKA
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_matches_numpy(rng, debiased):
    x = rng.normal(size=(40, 7)) + 1.0
    y = np.tanh(x @ rng.normal(size=(7, 5))) + 0.3 * rng.normal(size=(40, 5))
    got = analysis.linear_cka(x.astype(np.float32), y.astype(np.float32), debiased=debiased)
    want = np_cka(np_linear_gram(x), np_linear_gram(y), debiased)
    np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.mark.parametrize(("sigma", "debiased"), [(None, False), (0.5, False), (0.8, True)])
def test_rbf_cka_matches_numpy(rng, sigma, debiased):
    x = rng.normal(size=(37, 6))
    y = np.tanh(x @ rng.normal(size=(6, 4))) + 0.3 * rng.normal(size=(37, 4))
    got = analysis.rbf_cka(
        x.astype(np.float32), y.astype(np.float32), sigma=sigma, debiased=debiased, chunk_size=8
    )
    s = 1.0 if sigma is None else sigma
    want = np_cka(np_rbf_gram(x, s), np_rbf_gram(y, s), debiased)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_cka_known_invariances(rng):
    x = rng.normal(size=(48, 6)).astype(np.float32)
    q = random_orthogonal(rng, 6).astype(np.float32)
    y = rng.normal(size=(48, 3)).astype(np.float32)
    for fn, debiased in (
        (analysis.linear_cka, False),
        (analysis.linear_cka, True),
        (analysis.rbf_cka, False),
    ):
        assert float(fn(x, x, debiased=debiased)) == pytest.approx(1.0, abs=1e-5)
        base = float(fn(x, y, debiased=debiased))
        assert float(fn(2.5 * x @ q, y, debiased=debiased)) == pytest.approx(base, abs=1e-4)
        assert float(fn(x, 0.1 * y, debiased=debiased)) == pytest.approx(base, abs=1e-4)
    # The debiased RBF estimator: 1 for identical inputs (its invariances follow from the
    # kernel's, checked above, and its value is checked against NumPy).
    assert float(analysis.rbf_cka(x, x, debiased=True)) == pytest.approx(1.0, abs=1e-5)
    # Independent random features: biased CKA well below 1, debiased near 0.
    assert float(analysis.linear_cka(x, y)) < 0.5
    assert abs(float(analysis.linear_cka(x, y, debiased=True))) < 0.2


# ---------------------------------------------------------------------------------------------
# Relative representations, anchors, whitening
# ---------------------------------------------------------------------------------------------


def test_relative_representation_matches_numpy_and_is_rotation_invariant(rng):
    x = rng.normal(size=(30, 8)).astype(np.float32)
    idx = analysis.pick_anchors(x, 5, key=3)
    rel = analysis.relative_representation(x, x[np.asarray(idx)])
    assert rel.shape == (30, 5)
    np.testing.assert_allclose(rel, np_normalize(x) @ np_normalize(x[np.asarray(idx)]).T, atol=1e-5)
    q = random_orthogonal(rng, 8).astype(np.float32)
    xr = 3.0 * x @ q
    np.testing.assert_allclose(
        analysis.relative_representation(xr, xr[np.asarray(idx)]), rel, atol=1e-5
    )


def test_pick_anchors_methods(rng):
    x = rng.normal(size=(50, 4)).astype(np.float32)
    for method in ("random", "kmeans++", "farthest"):
        idx = np.asarray(analysis.pick_anchors(x, 10, method=method, key=1))
        assert idx.dtype == np.int32 and idx.shape == (10,)
        assert len(set(idx.tolist())) == 10 and idx.min() >= 0 and idx.max() < 50
        again = analysis.pick_anchors(x, 10, method=method, key=jax.random.key(1))
        np.testing.assert_array_equal(idx, again)
    far = np.asarray(analysis.pick_anchors(x, 10, method="farthest", key=2))
    assert far.tolist() == np_farthest(x, 10, int(far[0]))
    # Five well-separated clusters: k-means++ and farthest-point put one anchor in each.
    centres = 100.0 * rng.normal(size=(5, 4))
    labels = np.repeat(np.arange(5), 20)
    clusters = (centres[labels] + 0.01 * rng.normal(size=(100, 4))).astype(np.float32)
    for method in ("kmeans++", "farthest"):
        idx = np.asarray(analysis.pick_anchors(clusters, 5, method=method, key=0))
        assert sorted(labels[idx].tolist()) == [0, 1, 2, 3, 4]
    # All rows identical: k-means++ still returns distinct indices.
    dup = np.ones((6, 3), np.float32)
    assert len(set(analysis.pick_anchors(dup, 6, method="kmeans++").tolist())) == 6


def test_kmeans_plus_plus_sampling_distribution():
    # First anchor uniform, second ∝ squared distance to the first:
    # P(second = j) = (1/N) Σ_i d²(i, j) / Σ_l d²(i, l), computed here in float64.
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [0.5, 0.5]], np.float32)
    d2 = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    want = (d2 / d2.sum(1, keepdims=True)).mean(0)
    keys = jax.random.split(jax.random.key(0), 4000)
    picks = jax.vmap(lambda k: _pick_anchors(jnp.asarray(x), k, n=2, method="kmeans++"))(keys)
    freq = np.bincount(np.asarray(picks[:, 1]), minlength=5) / 4000
    np.testing.assert_allclose(freq, want, atol=0.025)  # about 3 standard errors
    np.testing.assert_allclose(
        np.bincount(np.asarray(picks[:, 0]), minlength=5) / 4000, 0.2, atol=0.025
    )


@pytest.mark.parametrize("k", [None, 3])
def test_whitening_matches_numpy(rng, k):
    x = (rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6)) + 2.0).astype(np.float32)
    w = analysis.fit_whitening(x, k=k, eps=0.0)
    kk = 6 if k is None else k
    assert w.mean.shape == (6,) and w.projection.shape == (6, kk)
    x64 = x.astype(np.float64)
    lam, u = np.linalg.eigh(np.cov(x64, rowvar=False))
    lam, u = lam[::-1][:kk], u[:, ::-1][:, :kk]
    ref = u / np.sqrt(lam)
    np.testing.assert_allclose(w.mean, x64.mean(0), rtol=1e-5)
    # Column signs are a convention: compare the sign-free W Wᵀ.
    np.testing.assert_allclose(
        np.asarray(w.projection) @ np.asarray(w.projection).T, ref @ ref.T, rtol=1e-3, atol=1e-5
    )
    z = np.asarray(analysis.whiten(x, w), np.float64)
    assert z.shape == (200, kk)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(kk), atol=1e-3)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    # New data goes through the same affine map.
    new = rng.normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_allclose(
        analysis.whiten(new, w), (new - x64.mean(0)) @ np.asarray(w.projection), atol=1e-4
    )


# ---------------------------------------------------------------------------------------------
# TCAV
# ---------------------------------------------------------------------------------------------


def test_concept_activation_vector_matches_numpy_logistic_regression(rng):
    direction = np.array([1.0, -2.0, 0.5, 0.0, 0.0])
    direction /= np.linalg.norm(direction)
    pos = (rng.normal(size=(40, 5)) + 0.8 * direction).astype(np.float32)
    neg = (rng.normal(size=(50, 5)) - 0.8 * direction).astype(np.float32)
    cav = analysis.concept_activation_vector(pos, neg, l2=0.05)
    assert float(np.linalg.norm(cav.vector)) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(cav.vector, np_logistic_direction(pos, neg, 0.05), atol=2e-3)
    assert float(np.dot(cav.vector, direction)) > 0.8  # points towards the concept
    pred = np.concatenate([pos, neg]) @ np.asarray(cav.vector) + float(cav.bias) > 0
    truth = np.r_[np.ones(40, bool), np.zeros(50, bool)]
    assert cav.accuracy == pytest.approx(np.mean(pred == truth))
    # Swapping the roles flips the direction.
    flipped = analysis.concept_activation_vector(neg, pos, l2=0.05)
    np.testing.assert_allclose(flipped.vector, -np.asarray(cav.vector), atol=1e-4)


def test_tcav_score(rng):
    grads = rng.normal(size=(101, 6)).astype(np.float32)
    v = rng.normal(size=6).astype(np.float32)
    want = np.mean(grads.astype(np.float64) @ v.astype(np.float64) > 0)
    assert float(analysis.tcav_score(grads, v)) == pytest.approx(want)
    cav = analysis.CAV(vector=jnp.asarray(v), bias=jnp.zeros(()), accuracy=1.0)
    assert float(analysis.tcav_score(grads, cav)) == pytest.approx(want)
    aligned = np.abs(grads) * np.sign(v)  # every directional derivative positive
    assert float(analysis.tcav_score(aligned, v)) == 1.0
    assert float(analysis.tcav_score(-aligned, v)) == 0.0


# ---------------------------------------------------------------------------------------------
# Sharded inputs
# ---------------------------------------------------------------------------------------------


def test_sharded_inputs_match_unsharded(rng, mesh8):
    # Deterministic functions are checked against the NumPy reference (which the unsharded
    # path matches in the tests above); random and iterative ones against the unsharded call.
    sharding = NamedSharding(mesh8, P("data"))
    x = rng.normal(size=(64, 10)).astype(np.float32)
    y = (x @ rng.normal(size=(10, 4)) + rng.normal(size=(64, 4))).astype(np.float32)
    xs, ys = jax.device_put(x, sharding), jax.device_put(y, sharding)
    assert len(xs.sharding.device_set) == 8
    # The kNN-based functions and RBF CKA take their shard_map path for these inputs.
    assert _row_layout(xs) == (mesh8, ("data",)) and _row_layout(x) is None
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # noqa: E731

    close(analysis.anisotropy(xs), np_anisotropy(x))
    close(analysis.isotropy(xs), analysis.isotropy(x))
    per = analysis.lid_mle(xs, 6, per_point=True, chunk_size=16)
    np.testing.assert_allclose(per, np_lid_per_point(x, 6), rtol=2e-3)
    np.testing.assert_allclose(analysis.lid_twonn(xs, chunk_size=16), np_twonn(x), rtol=2e-3)
    skew, anti, counts = np_hubness(x, 4)
    hs = analysis.hubness(xs, 4, chunk_size=16)
    np.testing.assert_array_equal(hs.k_occurrence, counts)
    np.testing.assert_allclose(hs.skewness, skew, rtol=1e-5, atol=1e-5)
    for debiased in (False, True):
        np.testing.assert_allclose(
            analysis.linear_cka(xs, ys, debiased=debiased),
            np_cka(np_linear_gram(x), np_linear_gram(y), debiased),
            rtol=1e-4,
        )
    np.testing.assert_allclose(
        analysis.rbf_cka(xs, ys, chunk_size=16),
        np_cka(np_rbf_gram(x, 1.0), np_rbf_gram(y, 1.0)),
        rtol=1e-4,
    )
    close(analysis.relative_representation(xs, x[:5]), np_normalize(x) @ np_normalize(x[:5]).T)
    for method in ("random", "kmeans++", "farthest"):
        np.testing.assert_array_equal(
            analysis.pick_anchors(xs, 6, method=method, key=4),
            analysis.pick_anchors(x, 6, method=method, key=4),
        )
    ws, w = analysis.fit_whitening(xs, k=5), analysis.fit_whitening(x, k=5)
    np.testing.assert_allclose(analysis.whiten(xs, ws), analysis.whiten(x, w), atol=1e-4)
    cs = analysis.concept_activation_vector(xs[:32] + 1.0, xs[32:] - 1.0)
    c = analysis.concept_activation_vector(x[:32] + 1.0, x[32:] - 1.0)
    np.testing.assert_allclose(cs.vector, c.vector, atol=1e-4)
    assert float(analysis.tcav_score(xs, x[0])) == pytest.approx(np.mean(x @ x[0] > 0))


def test_bfloat16_inputs_computed_in_float32(rng):
    x = rng.normal(size=(40, 6)).astype(np.float32)
    xb = jnp.asarray(x, jnp.bfloat16)
    x32 = np.asarray(xb.astype(jnp.float32))  # the values bfloat16 can hold
    for fn in (
        analysis.anisotropy,
        lambda a: analysis.lid_mle(a, 5),
        lambda a: analysis.linear_cka(a, a[:, :3]),
    ):
        out = fn(xb)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(out, fn(x32), rtol=1e-6)


def test_jit_inside_user_code(rng):
    x = jnp.asarray(rng.normal(size=(32, 5)), jnp.float32)

    @jax.jit
    def metrics(x):
        return analysis.lid_mle(x, 5, chunk_size=8), analysis.linear_cka(x, x[:, :3])

    lid, cka = metrics(x)
    np.testing.assert_allclose(lid, 1 / np.mean(1 / np_lid_per_point(np.asarray(x), 5)), rtol=2e-3)
    xn = np.asarray(x, np.float64)
    np.testing.assert_allclose(
        cka, np_cka(np_linear_gram(xn), np_linear_gram(xn[:, :3])), rtol=1e-4
    )


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def test_similarity_histogram_and_projection_2d(rng, tmp_path):
    pos = rng.uniform(0.3, 1.0, size=50)
    neg = rng.uniform(-0.5, 0.5, size=80)
    fig = plots.similarity_histogram(pos, neg, bins=20)
    assert isinstance(fig, Figure)
    heights = [sum(p.get_height() for p in c) for c in fig.axes[0].containers]
    # Density histograms: each integrates to 1 over its bins.
    widths = [c[0].get_width() for c in fig.axes[0].containers]
    np.testing.assert_allclose(np.array(heights) * np.array(widths), [1.0, 1.0], rtol=1e-6)
    assert plots.save(fig, tmp_path / "sims.png").read_bytes()[:4] == b"\x89PNG"

    x = rng.normal(size=(40, 6)) * np.array([5.0, 2.0, 0.1, 0.1, 0.1, 0.1]) + 1.0
    labels = np.repeat(np.arange(4), 10)
    fig = plots.projection_2d(x, labels)
    points = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    order = np.argsort(labels, kind="stable")
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    want = xc @ vt[:2].T
    got = points
    for j in range(2):  # each principal axis up to sign
        sgn = np.sign(np.dot(got[:, j], want[order, j]))
        np.testing.assert_allclose(got[:, j], sgn * want[order, j], rtol=1e-4, atol=1e-4)
    assert len(fig.axes[0].collections) == 4
    assert plots.save(plots.projection_2d(x), tmp_path / "proj.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_validation():
    x = np.ones((5, 3), np.float32) * np.arange(5, dtype=np.float32)[:, None]
    with pytest.raises(ValueError, match=r"k must be <= N - 1 = 4 .*got k=5"):
        analysis.lid_mle(x, 5)
    with pytest.raises(ValueError, match=r"k must be <= N - 1 = 4"):
        analysis.hubness(x, 10)
    for k in (0, -2):
        with pytest.raises(ValueError, match="k must be >= 1"):
            analysis.hubness(x, k)
    with pytest.raises(ValueError, match="k must be an integer"):
        analysis.lid_mle(x, 2.5)
    bad = x.copy()
    bad[1, 0] = np.nan
    bad[3, 2] = np.inf
    for fn in (
        analysis.anisotropy,
        analysis.isotropy,
        lambda a: analysis.lid_mle(a, 2),
        analysis.lid_twonn,
        lambda a: analysis.hubness(a, 2),
        lambda a: analysis.linear_cka(a, x),
        lambda a: analysis.rbf_cka(x, a),
        analysis.fit_whitening,
        lambda a: analysis.pick_anchors(a, 2),
        lambda a: analysis.tcav_score(a, np.ones(3, np.float32)),
        lambda a: analysis.concept_activation_vector(a, x),
    ):
        with pytest.raises(ValueError, match=r"NaN/inf in 2 of 5 rows \(rows 1, 3\)"):
            fn(bad)
    with pytest.raises(
        ValueError, match=r"y must have one row per row of x \[5, 3\].*got \[4, 3\]"
    ):
        analysis.linear_cka(x, x[:4])
    with pytest.raises(ValueError, match="y must have one row per row of x"):
        analysis.rbf_cka(x, x[:4])
    with pytest.raises(ValueError, match="at least 4 rows"):
        analysis.linear_cka(x[:3], x[:3], debiased=True)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        analysis.rbf_cka(x, x, sigma=0.0)
    with pytest.raises(ValueError, match=r"anchors must have the width of x \[5, 3\]"):
        analysis.relative_representation(x, np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"x must have the width of the fitted whitening"):
        analysis.whiten(np.ones((2, 4), np.float32), analysis.fit_whitening(x))
    with pytest.raises(ValueError, match="k must be <= 3"):
        analysis.fit_whitening(x, k=4)
    with pytest.raises(ValueError, match="n must be <= 5"):
        analysis.pick_anchors(x, 6)
    with pytest.raises(ValueError, match="method must be one of"):
        analysis.pick_anchors(x, 2, method="kmeans")
    with pytest.raises(ValueError, match="method must be one of"):
        analysis.lid_twonn(x, method="linear")
    with pytest.raises(ValueError, match=r"neg_x must have the width of pos_x"):
        analysis.concept_activation_vector(x, np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"cav must be a vector \[3\]"):
        analysis.tcav_score(x, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="x must have rank 2"):
        analysis.anisotropy(np.ones(5, np.float32))
    with pytest.raises(ValueError, match="at least 2 rows"):
        analysis.isotropy(x[:1])
    with pytest.raises(ValueError, match="pos_sims must be a non-empty 1-D"):
        plots.similarity_histogram(np.ones((2, 2)), np.ones(3))
    with pytest.raises(ValueError, match=r"labels must have one entry per row of x \(5\)"):
        plots.projection_2d(x, np.arange(4))
    with pytest.raises(ValueError, match="method must be one of"):
        plots.projection_2d(x, method="tsne")
