"""funnel_search, fit_pca / apply_pca and fit_leanvec against NumPy references and invariants.

The references are written here in NumPy float64: the Matryoshka funnel as stable sorts over
re-normalised prefixes, PCA by the SVD of the centred data, and LeanVec-OOD's objective from
its definition ``Σ_q Σ_x (qᵀx − qᵀABᵀx)²`` plus the block Frank–Wolfe iteration of the paper.
"""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxemb import analysis
from jaxemb.retrieval import (
    PCA,
    apply_pca,
    fit_leanvec,
    fit_pca,
    funnel_search,
    search,
)
from tests.tolerances import assert_f32_close

# One set of shapes for every funnel call (XLA compiles each stage once).
N, D, Q, K = 256, 48, 12, 5
STAGES = ((8, 40), (24, 12), (None, None))

# ---------------------------------------------------------------- NumPy references


def _np_unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _np_funnel(q, c, k, stages, metric):
    """Shortlist with the first prefix over the corpus, then re-rank the shortlist per stage."""
    q, c = np.asarray(q, np.float64), np.asarray(c, np.float64)
    cand = np.broadcast_to(np.arange(c.shape[0]), (q.shape[0], c.shape[0]))
    for width, keep in stages:
        width = c.shape[1] if width is None else width
        keep = k if keep is None else keep
        qp, cp = q[:, :width], c[:, :width]
        if metric == "cosine":
            qp, cp = _np_unit(qp), _np_unit(cp)
        s = np.einsum("qd,qkd->qk", qp, cp[cand])
        order = np.argsort(-s, axis=1, kind="stable")[:, :keep]  # ties: earlier position
        cand = np.take_along_axis(cand, order, axis=1)
        scores = np.take_along_axis(s, order, axis=1)
    return scores, cand


def _np_recall(ids, exact):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, exact)])


def _np_ood_loss(q, x, a, b):
    """``Σ_q Σ_x (qᵀx − qᵀABᵀx)²`` / (n_q n_x), straight from the definition."""
    full = q @ x.T
    reduced = (q @ a) @ (x @ b).T
    return np.mean((full - reduced) ** 2)


def _matryoshka(rng, n, d):
    """Rows whose leading coordinates carry most of the variance, as Matryoshka embeddings."""
    return (rng.normal(size=(n, d)) * np.linspace(2.0, 0.2, d)).astype(np.float32)


# ---------------------------------------------------------------- funnel_search


@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_funnel_matches_numpy_funnel(metric):
    rng = np.random.default_rng(1)
    c, q = _matryoshka(rng, N, D), _matryoshka(rng, Q, D)
    scores, ids = funnel_search(q, c, K, stages=STAGES, metric=metric)
    want_scores, want_ids = _np_funnel(q, c, K, STAGES, metric)
    assert ids.shape == (Q, K) and ids.dtype == np.int32 and scores.dtype == np.float32
    np.testing.assert_array_equal(ids, want_ids)
    assert_f32_close(scores, want_scores)
    # The final scores are full-width similarities, and the funnel finds most exact neighbours.
    _, exact = _np_funnel(q, c, K, ((None, None),), metric)
    assert _np_recall(np.asarray(ids), exact) >= 0.6


def test_funnel_whole_corpus_shortlist_is_exact_search_and_shards(mesh8):
    rng = np.random.default_rng(2)
    c, q = _matryoshka(rng, N, D), _matryoshka(rng, Q, D)
    # Shortlisting the whole corpus leaves the last stage to rank everything: exact search.
    scores, ids = funnel_search(q, c, K, stages=((8, N), (None, None)))
    want_scores, want_ids = search(q, c, K)
    np.testing.assert_array_equal(ids, want_ids)
    assert_f32_close(scores, want_scores)
    # A corpus split over the 8-device mesh gives the single-device answer.
    sharded = jax.device_put(c, NamedSharding(mesh8, P("data")))
    s_scores, s_ids = funnel_search(q, sharded, K, stages=STAGES)
    scores, ids = funnel_search(q, c, K, stages=STAGES)
    np.testing.assert_array_equal(s_ids, ids)
    assert_f32_close(s_scores, scores)


def test_funnel_bad_inputs():
    rng = np.random.default_rng(3)
    c, q = _matryoshka(rng, 20, 8), _matryoshka(rng, 2, 8)
    bad = {
        "widths must increase": ((4, 10), (4, 5), (None, None)),
        "width must be <= the embedding width D=8": ((4, 10), (9, 3)),
        "keep must be >= k=3": ((4, 2), (None, None)),
        "keep must be <= the corpus size N=20": ((4, 30), (None, None)),
        "keep counts must not increase": ((4, 6), (6, 8), (None, None)),
        "last stage must keep k=3": ((4, 10), (None, 5)),
        "stages must be a non-empty sequence": (),
        r"stages\[0\] must be a \(width, keep\) pair": ((4,),),
        r"stages\[0\] width must be >= 1": ((0, 10), (None, None)),
    }
    for msg, stages in bad.items():
        with pytest.raises(ValueError, match=msg):
            funnel_search(q, c, 3, stages=stages)
    # the default stages need D > 256
    with pytest.raises(ValueError, match="width must be <= the embedding width D=8"):
        funnel_search(q, c, 3)
    ok = ((4, 10), (None, None))
    with pytest.raises(ValueError, match="metric"):
        funnel_search(q, c, 3, stages=ok, metric="l2")
    with pytest.raises(ValueError, match="k must be <= the corpus size"):
        funnel_search(q, c, 21, stages=ok)
    with pytest.raises(ValueError, match="queries must not be empty"):
        funnel_search(q[:0], c, 3, stages=ok)
    with pytest.raises(ValueError, match="queries must not have an empty axis"):
        funnel_search(q[:, :0], c[:, :0], 3, stages=ok)
    with pytest.raises(ValueError, match="must match"):
        funnel_search(q[:, :4], c, 3, stages=ok)
    nan = c.copy()
    nan[7, -1] = np.nan  # beyond the first stage's prefix: still refused
    with pytest.raises(ValueError, match=r"corpus \[20, 8\] has NaN or inf values in 1 row"):
        funnel_search(q, nan, 3, stages=ok)


# ---------------------------------------------------------------- PCA


def test_pca_matches_numpy_svd_and_shares_whitening():
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(200, 12)) @ rng.normal(size=(12, 12)) + 3.0).astype(np.float32)
    pca = fit_pca(x, 5)
    assert isinstance(pca, PCA) and pca.components.shape == (12, 5)
    x64 = x.astype(np.float64)
    mean = x64.mean(0)
    _, s, vt = np.linalg.svd(x64 - mean, full_matrices=False)
    ref = vt[:5].T
    comps = np.asarray(pca.components, np.float64)
    # Columns agree up to sign; the sign is the one whose largest-magnitude entry is positive.
    signs = np.sign(np.sum(comps * ref, axis=0))
    assert_f32_close(comps, ref * signs[None, :], rtol=1e-3, scale_tol=1e-4)
    top = comps[np.argmax(np.abs(comps), axis=0), np.arange(5)]
    assert np.all(top > 0)
    assert_f32_close(pca.explained_variance, s[:5] ** 2 / 199, rtol=1e-4)
    assert_f32_close(pca.mean, mean)
    assert_f32_close(apply_pca(x, pca), (x64 - mean) @ comps, rtol=1e-4, scale_tol=1e-5)
    assert_f32_close(apply_pca(x, pca, center=False), x64 @ comps, rtol=1e-4, scale_tol=1e-5)
    # BERT-whitening keeps the same directions, each scaled by 1 / sqrt(variance + eps).
    w = analysis.fit_whitening(x, k=5, eps=1e-3)
    want = comps / np.sqrt(np.asarray(pca.explained_variance, np.float64) + 1e-3)[None, :]
    assert_f32_close(w.projection, want, rtol=1e-5, scale_tol=1e-6)


def test_pca_bad_inputs():
    x = np.ones((6, 4), np.float32)
    with pytest.raises(ValueError, match="dim must be <= the data width D=4"):
        fit_pca(x, 5)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        fit_pca(x, 0)
    with pytest.raises(ValueError, match="x must have at least 2 rows"):
        fit_pca(x[:1], 1)
    with pytest.raises(ValueError, match="x must not have an empty axis"):
        fit_pca(x[:, :0], 1)
    nan = x.copy()
    nan[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"x \[6, 4\] has NaN or inf values in 1 row"):
        fit_pca(nan, 2)
    pca = fit_pca(np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32), 2)
    with pytest.raises(ValueError, match=r"x must have the width of the fitted PCA \[N, 4\]"):
        apply_pca(x[:, :3], pca)
    with pytest.raises(ValueError, match="pca must be a PCA"):
        apply_pca(x, (pca.mean, pca.components))


# ---------------------------------------------------------------- LeanVec

DIM = 4


def _ood_problem(seed):
    """Data with most variance in one half of a rotated basis; queries that look (almost)
    only at DIM directions of the other half, where the data varies little."""
    rng = np.random.default_rng(seed)
    d = 32
    rot = np.linalg.qr(rng.normal(size=(d, d)))[0]
    # distinct variances: the eigenvectors the iteration starts from are well determined
    data_scale = np.concatenate([np.linspace(4.0, 2.5, 16), np.linspace(1.2, 0.6, 16)])
    query_scale = np.concatenate([np.full(16, 0.1), np.linspace(3.0, 2.0, DIM), np.full(12, 0.1)])
    data = (rng.normal(size=(1000, d)) * data_scale) @ rot.T
    queries = (rng.normal(size=(400, d)) * query_scale) @ rot.T
    return data.astype(np.float32), queries[:300].astype(np.float32), queries[300:]


def _np_frank_wolfe(q, x, dim, n_iter):
    """The block Frank–Wolfe of LeanVec-OOD in float64: start at the top eigenvectors of Kx,
    oracle -UVᵀ over the spectral-norm ball, steps 1 / (t + 2), best iterate kept."""
    kq, kx = q.T @ q / len(q), x.T @ x / len(x)
    eye = np.eye(len(kq))

    def loss(a, b):
        m = eye - a @ b.T
        return np.trace(m.T @ kq @ m @ kx)

    def lmo(g):
        u, _, vt = np.linalg.svd(g, full_matrices=False)
        return -u @ vt

    def step(x, grad, g, f):  # no step for a stationary block (Frank–Wolfe gap ~ 0)
        s = lmo(grad)
        return (1 - g) * x + g * s if np.sum(grad * (x - s)) > 1e-4 * f + 1e-12 else x

    lam, vecs = np.linalg.eigh(kx)
    a = b = vecs[:, ::-1][:, :dim]
    best = (loss(a, b), a, b)
    for t in range(n_iter):
        g = 1.0 / (t + 2)
        a = step(a, -2 * kq @ (eye - a @ b.T) @ kx @ b, g, loss(a, b))
        b = step(b, -2 * kx @ (eye - a @ b.T).T @ kq @ a, g, loss(a, b))
        if loss(a, b) < best[0]:
            best = (loss(a, b), a, b)
    return best


def test_leanvec_ood_beats_pca_on_shifted_queries():
    data, fit_queries, eval_queries = _ood_problem(5)
    ood = fit_leanvec(data, fit_queries, dim=DIM, method="ood", n_iter=30)
    idl = fit_leanvec(data, dim=DIM, method="id")
    assert ood.query_projection.shape == ood.data_projection.shape == (32, DIM)
    # LeanVec-ID is the PCA of the data, for queries and data alike.
    comps = np.asarray(fit_pca(data, DIM).components)
    np.testing.assert_array_equal(idl.query_projection, comps)
    np.testing.assert_array_equal(idl.data_projection, comps)

    _, exact = search(eval_queries.astype(np.float32), data, 10, metric="dot")

    def recall(lv):
        q = eval_queries @ np.asarray(lv.query_projection, np.float64)
        x = data @ np.asarray(lv.data_projection, np.float64)
        _, ids = search(q.astype(np.float32), x.astype(np.float32), 10, metric="dot")
        return _np_recall(np.asarray(ids), np.asarray(exact))

    r_ood, r_pca = recall(ood), recall(idl)
    assert r_ood > r_pca + 0.4, (r_ood, r_pca)
    assert r_ood > 0.6, r_ood

    # The objective, evaluated from its definition on the fitting sample, matches a float64
    # NumPy run of the same iteration and improves on the in-distribution start.
    q64, x64 = fit_queries.astype(np.float64), data.astype(np.float64)
    a, b = np.asarray(ood.query_projection, np.float64), np.asarray(ood.data_projection, np.float64)
    _, ref_a, ref_b = _np_frank_wolfe(q64, x64, DIM, 30)
    got, want = _np_ood_loss(q64, x64, a, b), _np_ood_loss(q64, x64, ref_a, ref_b)
    start = _np_ood_loss(q64, x64, *(2 * [np.linalg.eigh(x64.T @ x64)[1][:, ::-1][:, :DIM]]))
    assert got < 0.5 * start, (got, start)
    np.testing.assert_allclose(got, want, rtol=1e-3)
    assert_f32_close(a @ b.T, ref_a @ ref_b.T, rtol=1e-2, scale_tol=1e-3)


def test_leanvec_bad_inputs():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(10, 6)).astype(np.float32)
    q = rng.normal(size=(4, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="dim must be <= the data width D=6"):
        fit_leanvec(x, q, dim=7, method="ood")
    with pytest.raises(ValueError, match="dim must be >= 1"):
        fit_leanvec(x, dim=0)
    with pytest.raises(ValueError, match="method must be one of"):
        fit_leanvec(x, q, dim=2, method="pca")
    with pytest.raises(ValueError, match="queries must be given for method='ood'"):
        fit_leanvec(x, dim=2, method="ood")
    with pytest.raises(ValueError, match="queries are not used by method='id'"):
        fit_leanvec(x, q, dim=2)
    with pytest.raises(ValueError, match="n_iter is not used by method='id'"):
        fit_leanvec(x, dim=2, n_iter=5)
    with pytest.raises(ValueError, match="n_iter must be >= 1"):
        fit_leanvec(x, q, dim=2, method="ood", n_iter=0)
    with pytest.raises(ValueError, match="must match"):
        fit_leanvec(x, q[:, :5], dim=2, method="ood")
    with pytest.raises(ValueError, match="queries must not be empty"):
        fit_leanvec(x, q[:0], dim=2, method="ood")
    with pytest.raises(ValueError, match="data must not have an empty axis"):
        fit_leanvec(x[:, :0], dim=1)
    nan = q.copy()
    nan[1, 0] = np.inf
    with pytest.raises(ValueError, match=r"queries \[4, 6\] has NaN or inf values in 1 row"):
        fit_leanvec(x, nan, dim=2, method="ood")
