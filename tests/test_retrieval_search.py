"""jaxemb.retrieval.search against a NumPy float64 brute force (stable sort, lower index wins)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxemb.retrieval import search


def _ref_scores(q, c, metric):
    q = np.asarray(q, np.float64)
    c = np.asarray(c, np.float64)
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    if metric == "l2":
        return -((q[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    return q @ c.T


def _brute_force(q, c, k, metric):
    """(scores, indices) by a stable sort: larger similarity / smaller distance first."""
    s = _ref_scores(q, c, metric)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(s, order, axis=1)
    return (-top if metric == "l2" else top), order


def _int_data(rng, n, d, lo=-2, hi=3):
    # Small integers: every product and sum is exact in float32, so ties are exact ties.
    return rng.integers(lo, hi, (n, d)).astype(np.float32)


@pytest.mark.parametrize("metric", ["dot", "l2"])
@pytest.mark.parametrize("chunk_size", [7, 64, 1000])
def test_exact_ties_match_brute_force(rng, metric, chunk_size):
    corpus = _int_data(rng, 203, 6)
    corpus[150] = corpus[3]  # exact duplicates: the lower index must come first
    corpus[190] = corpus[3]
    queries = _int_data(rng, 23, 6)
    queries[0] = corpus[3]
    scores, idx = search(
        queries, corpus, 25, metric=metric, chunk_size=chunk_size, query_chunk_size=10
    )
    ref_s, ref_i = _brute_force(queries, corpus, 25, metric)
    assert scores.shape == (23, 25) and idx.shape == (23, 25)
    assert idx.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(idx), ref_i)
    np.testing.assert_array_equal(np.asarray(scores, np.float64), ref_s)
    # many exact ties exist, so the tie order really was exercised
    assert (np.diff(ref_s, axis=1) == 0).sum() > 100


@pytest.mark.parametrize(
    ("metric", "k", "chunk_size"), [("dot", 1, 64), ("l2", 3, 96), ("dot", 5, 200), ("l2", 2, 504)]
)
def test_group_prefilter_heavy_ties(rng, metric, k, chunk_size):
    # chunk_size // 8 >= 4 * k selects the grouped-maximum pre-filter; scores take only a few
    # distinct values, so the k-th value is tied across many rows and groups.
    corpus = _int_data(rng, 1000, 2, lo=0, hi=5)
    queries = _int_data(rng, 40, 2, lo=0, hi=5)
    scores, idx = search(queries, corpus, k, metric=metric, chunk_size=chunk_size)
    ref_s, ref_i = _brute_force(queries, corpus, k, metric)
    np.testing.assert_array_equal(np.asarray(idx), ref_i)
    np.testing.assert_array_equal(np.asarray(scores, np.float64), ref_s)


def test_group_prefilter_tie_inside_a_higher_group():
    # Chunk of 64 rows in groups of 8 (k=2 takes the grouped path). Row 40 (group 5) scores 10
    # and row 41 (same group) ties with row 3 (group 0) at 5: the lower row, 3, must win.
    corpus = np.zeros((64, 1), np.float32)
    corpus[40], corpus[41], corpus[3] = 10.0, 5.0, 5.0
    scores, idx = search(np.ones((1, 1), np.float32), corpus, 2, metric="dot", chunk_size=64)
    assert idx.tolist() == [[40, 3]] and scores.tolist() == [[10.0, 5.0]]


def test_cosine_exact_ties_with_dyadic_rows(rng):
    # Rows with four entries +-1 (norm 2) and their x2 copies normalise to exact +-0.5
    # entries, so cosine scores are exact and the scaled copies tie exactly.
    d = 8
    base = np.zeros((40, d), np.float32)
    for r in range(40):
        cols = rng.choice(d, 4, replace=False)
        base[r, cols] = rng.choice([-1.0, 1.0], 4)
    corpus = np.concatenate([base, 2.0 * base[:20]], axis=0)
    queries = base[::3]
    scores, idx = search(queries, corpus, 30, metric="cosine", chunk_size=9)
    ref_s, ref_i = _brute_force(queries, corpus, 30, "cosine")
    np.testing.assert_array_equal(np.asarray(idx), ref_i)
    np.testing.assert_allclose(np.asarray(scores), ref_s, rtol=0, atol=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_random_float_data_close_to_float64(rng, metric):
    corpus = rng.standard_normal((500, 16)).astype(np.float32)
    queries = rng.standard_normal((30, 16)).astype(np.float32)
    scores, idx = search(queries, corpus, 10, metric=metric, chunk_size=64)
    ref_s, _ = _brute_force(queries, corpus, 10, metric)
    np.testing.assert_allclose(np.asarray(scores), ref_s, rtol=1e-5, atol=1e-4)
    # the returned rows really have the returned scores
    full = _ref_scores(queries, corpus, metric)
    picked = np.take_along_axis(full, np.asarray(idx), axis=1)
    np.testing.assert_allclose(-picked if metric == "l2" else picked, ref_s, atol=1e-4)


def test_k_equals_corpus_and_chunk_larger_than_corpus(rng):
    corpus = _int_data(rng, 11, 4)
    queries = _int_data(rng, 5, 4)
    scores, idx = search(queries, corpus, 11, metric="dot", chunk_size=4096)
    ref_s, ref_i = _brute_force(queries, corpus, 11, "dot")
    np.testing.assert_array_equal(np.asarray(idx), ref_i)
    np.testing.assert_array_equal(np.asarray(scores), ref_s)
    assert sorted(np.asarray(idx)[0].tolist()) == list(range(11))


@pytest.mark.parametrize(
    ("metric", "n"), [("dot", 13), ("l2", 13), ("cosine", 13), ("dot", 203), ("l2", 203)]
)
def test_sharded_over_mesh8_equals_unsharded(rng, mesh8, metric, n):
    corpus = _int_data(rng, n, 6)
    corpus[n - 1] = corpus[0]  # a tie across the first and last device shards
    queries = _int_data(rng, 9, 6)
    k = 10
    s1, i1 = search(queries, corpus, k, metric=metric, chunk_size=5)
    s8, i8 = search(queries, corpus, k, metric=metric, chunk_size=5, mesh=mesh8)
    np.testing.assert_array_equal(np.asarray(i8), np.asarray(i1))
    np.testing.assert_allclose(np.asarray(s8), np.asarray(s1), rtol=1e-6, atol=1e-6)
    if metric != "cosine":
        ref_s, ref_i = _brute_force(queries, corpus, k, metric)
        np.testing.assert_array_equal(np.asarray(i8), ref_i)
        np.testing.assert_array_equal(np.asarray(s8), ref_s)


def test_mesh_detected_from_corpus_sharding(rng, mesh8):
    corpus = _int_data(rng, 64, 6)
    queries = _int_data(rng, 7, 6)
    sharded = jax.device_put(corpus, NamedSharding(mesh8, P("data")))
    s, i = search(queries, sharded, 12, metric="l2", chunk_size=3)
    ref_s, ref_i = _brute_force(queries, corpus, 12, "l2")
    np.testing.assert_array_equal(np.asarray(i), ref_i)
    np.testing.assert_array_equal(np.asarray(s), ref_s)


def test_bfloat16_inputs_computed_in_float32(rng):
    corpus = _int_data(rng, 70, 6)  # small integers are exact in bfloat16
    queries = _int_data(rng, 5, 6)
    s, i = search(
        jnp.asarray(queries, jnp.bfloat16),
        jnp.asarray(corpus, jnp.bfloat16),
        9,
        metric="l2",
        chunk_size=16,
    )
    ref_s, ref_i = _brute_force(queries, corpus, 9, "l2")
    assert s.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(i), ref_i)
    np.testing.assert_array_equal(np.asarray(s), ref_s)


def test_works_under_jit(rng):
    corpus = _int_data(rng, 50, 4)
    queries = _int_data(rng, 6, 4)
    s, i = jax.jit(lambda q, c: search(q, c, 5, metric="dot", chunk_size=8))(queries, corpus)
    ref_s, ref_i = _brute_force(queries, corpus, 5, "dot")
    np.testing.assert_array_equal(np.asarray(i), ref_i)
    np.testing.assert_array_equal(np.asarray(s), ref_s)


def test_validation_errors(rng):
    c = rng.standard_normal((10, 4)).astype(np.float32)
    q = rng.standard_normal((3, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="k must be <= the corpus size 10"):
        search(q, c, 11)
    with pytest.raises(ValueError, match="k must be >= 1"):
        search(q, c, 0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        search(q, c, -3)
    with pytest.raises(ValueError, match="k must be an integer"):
        search(q, c, 2.5)
    with pytest.raises(ValueError, match=r"corpus \[10, 5\] must match queries \[3, 4\]"):
        search(q, rng.standard_normal((10, 5)).astype(np.float32), 2)
    with pytest.raises(ValueError, match="metric must be one of"):
        search(q, c, 2, metric="euclid")
    with pytest.raises(ValueError, match="queries must have rank 2"):
        search(q[0], c, 2)
    with pytest.raises(ValueError, match="corpus must have a float dtype"):
        search(q, c.astype(np.int32), 2)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        search(q, c, 2, chunk_size=0)
    bad = c.copy()
    bad[2, 1] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(
        ValueError, match=r"corpus \[10, 4\] has NaN or inf .* 2 row\(s\): \[2, 7\]"
    ):
        search(q, bad, 2)
    qbad = q.copy()
    qbad[1] = np.nan
    with pytest.raises(ValueError, match=r"queries .* \[1\]"):
        search(qbad, c, 2)
