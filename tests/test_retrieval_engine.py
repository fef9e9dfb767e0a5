"""The one search engine (jaxemb.retrieval._search) on what the other test files do not reach.

The grouped pre-filter with candidates recomputed from their rows (integer metrics), integer
scores selected in int32 when float32 could not hold them, MaxSim over multi-vector documents
(``maxsim_search``), and self-search with rows split over two mesh axes. Every answer is
compared with a NumPy brute force written here (stable sort: ties to the lower index).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tolerances import assert_f32_close

from jaxemb.parallel import make_mesh
from jaxemb.retrieval import maxsim_search, search
from jaxemb.retrieval._search import _group_size, _topk


def _stable_top(scores, k):
    """Larger score first, ties to the lower column (a stable sort)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def _np_hamming(q, c):
    return np.unpackbits(q[:, None, :] ^ c[None, :, :], axis=-1).sum(-1).astype(np.int64)


def _np_maxsim(q, qm, d, dm, length_normalize=False):
    q, d = np.asarray(q, np.float64), np.asarray(d, np.float64)
    s = np.einsum("qsh,nth->qnst", q, d)
    s = np.where(dm[None, :, None, :] != 0, s, -np.inf).max(-1)  # [Q, N, Tq]
    total = (s * qm[:, None, :]).sum(-1)
    if length_normalize:
        total = total / (qm != 0).sum(-1)[:, None]
    return total


def test_group_size_is_exact_power_of_two_divisor():
    assert _group_size(4096, 10) == 16 and _group_size(16384, 10) == 32
    assert _group_size(64, 2) == 8 and _group_size(96, 25) == 1  # too few groups: plain top_k
    assert _group_size(100, 1) == 1  # 8 does not divide 100


def test_hamming_and_int8_recomputed_candidates_with_heavy_ties(rng):
    # chunk 128, k 3: groups of 8 rows, candidates recomputed from their rows. One-byte codes
    # with 4 set bits take few distinct distances, so the k-th value ties across groups.
    corpus = np.array([rng.permutation([1] * 4 + [0] * 4) for _ in range(300)], np.uint8)
    corpus = np.packbits(corpus, axis=1)
    corpus[[40, 41, 170]] = corpus[7]  # duplicates in the same and in a later group
    queries = corpus[[7, 0, 1, 2, 250]] ^ np.uint8(1)
    assert _group_size(128, 3) == 8
    ref_d, ref_i = _stable_top(-_np_hamming(queries, corpus), 3)
    assert (ref_d[:, :1] == ref_d).all(axis=1).any()  # a 3-way tie really occurs
    dist, idx = search(queries, corpus, 3, metric="hamming", chunk_size=128, query_chunk_size=2)
    np.testing.assert_array_equal(np.asarray(idx), ref_i)
    np.testing.assert_array_equal(np.asarray(dist), -ref_d)
    assert dist.dtype == jnp.int32

    codes = rng.integers(-2, 3, (300, 4)).astype(np.int8)  # small values: many exact ties
    ref_s, ref_i = _stable_top(codes[:5].astype(np.int64) @ codes.T.astype(np.int64), 3)
    s, i = search(codes[:5], codes, 3, metric="int8_dot", chunk_size=128, query_chunk_size=2)
    np.testing.assert_array_equal(np.asarray(i), ref_i)
    np.testing.assert_array_equal(np.asarray(s), ref_s)


def test_float_scores_in_groups_of_32_with_heavy_ties(rng):
    # chunk 2048, k 2: 64 groups of 32 rows, candidates gathered from the float tile; five
    # distinct scores, so the top values tie across many groups.
    corpus = rng.integers(0, 5, (2100, 1)).astype(np.float32)
    queries = np.array([[1.0], [-1.0], [0.5]], np.float32)
    assert _group_size(2048, 2) == 32
    ref_s, ref_i = _stable_top(queries.astype(np.float64) @ corpus.T.astype(np.float64), 2)
    s, i = search(queries, corpus, 2, metric="dot", chunk_size=2048)
    np.testing.assert_array_equal(np.asarray(i), ref_i)
    np.testing.assert_array_equal(np.asarray(s), ref_s)


def test_int8_dot_beyond_float32_precision_selects_in_int32():
    # uint8 x uint8 over 300 dims reaches 300 * 255**2 > 2**24: neighbouring scores 1 apart
    # are not distinct in float32 (spacing 2 there), so selection must compare int32.
    d = 300
    corpus = np.full((6, d), 255, np.uint8)
    corpus[:, 0] = [252, 253, 254, 255, 250, 251]  # scores 1 apart near 1.95e7, rising order
    query = np.full((1, d), 255, np.uint8)
    query[0, 0] = 1
    ref = query.astype(np.int64) @ corpus.T.astype(np.int64)
    assert ref.min() > 2**24
    ref_s, ref_i = _stable_top(ref, 6)
    s, i = search(query, corpus, 6, metric="int8_dot", chunk_size=128)
    np.testing.assert_array_equal(np.asarray(i), ref_i)
    np.testing.assert_array_equal(np.asarray(s), ref_s)


def _multi_vector(rng, n, t, dim):
    # small integers: every MaxSim sum is exact in float32, so ties are exact ties
    tokens = rng.integers(-2, 3, (n, t, dim)).astype(np.float32)
    mask = (rng.random((n, t)) < 0.7).astype(np.int32)
    mask[:, 0] = 1
    return tokens, mask


@pytest.mark.parametrize("length_normalize", [False, True])
def test_maxsim_search_matches_numpy_brute_force(rng, length_normalize):
    d, dm = _multi_vector(rng, 37, 4, 3)
    d[30], dm[30] = d[5], dm[5]  # a duplicate: the lower index first
    q, qm = _multi_vector(rng, 5, 3, 3)
    ref = _np_maxsim(q, qm, d, dm, length_normalize)
    ref_s, ref_i = _stable_top(ref, 8)
    s, i = maxsim_search(
        q, qm, d, dm, 8, length_normalize=length_normalize, chunk_size=10, query_chunk_size=2
    )
    assert s.shape == (5, 8) and s.dtype == jnp.float32 and i.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(i), ref_i)
    assert_f32_close(s, ref_s, scale_tol=1e-6)


def test_maxsim_search_sharded_over_mesh8_and_validation(rng, mesh8):
    d, dm = _multi_vector(rng, 37, 4, 3)  # 37 documents: the last shard is padded
    q, qm = _multi_vector(rng, 5, 3, 3)
    ref_s, ref_i = _stable_top(_np_maxsim(q, qm, d, dm), 8)
    s, i = maxsim_search(q, qm, d, dm, 8, chunk_size=3, mesh=mesh8)
    np.testing.assert_array_equal(np.asarray(i), ref_i)
    assert_f32_close(s, ref_s, scale_tol=1e-6)

    with pytest.raises(ValueError, match="k must be <= the number of documents 37"):
        maxsim_search(q, qm, d, dm, 38)
    with pytest.raises(ValueError, match="query_chunk_size must be >= 1"):
        maxsim_search(q, qm, d, dm, 2, query_chunk_size=0)
    with pytest.raises(ValueError, match="mask must be"):
        maxsim_search(q, qm, d, dm[:, :3], 2)
    bad = d.copy()
    bad[4, 0, 1] = np.nan  # a kept token (column 0 is always kept)
    with pytest.raises(ValueError, match=r"d_tokens \[37, 4, 3\] has NaN .* 1 item\(s\): \[4\]"):
        maxsim_search(q, qm, bad, dm, 2)
    empty = dm.copy()
    empty[9] = 0
    with pytest.raises(ValueError, match="d_mask"):
        maxsim_search(q, qm, d, empty, 2)


def test_self_search_rows_split_over_two_mesh_axes(rng):
    # Rows split over ("data", "model") = 4 x 2 shards: shard order is data-major in both
    # layouts (each device's own rows; each device's corpus shard), and row i never lists i.
    mesh = make_mesh(data=4, model=2)
    layout = (mesh, ("data", "model"))
    x = rng.integers(-2, 3, (48, 3)).astype(np.float32)
    x[40] = x[2]  # exact duplicates across shards
    ref = -((x[:, None, :] - x[None, :, :]) ** 2).sum(-1).astype(np.float64)
    np.fill_diagonal(ref, -np.inf)
    ref_s, ref_i = _stable_top(ref, 5)
    xs = jax.device_put(x, NamedSharding(mesh, P(("data", "model"))))
    for shard in ("queries", "corpus"):
        fn = jax.jit(
            lambda a, shard=shard: _topk(
                a,
                a,
                5,
                metric="l2",
                chunk=4,
                q_block=3,
                layout=layout,
                shard=shard,
                exclude_self=True,
            )
        )
        s, i = fn(xs)
        np.testing.assert_array_equal(np.asarray(i), ref_i, err_msg=shard)
        np.testing.assert_array_equal(np.asarray(s), ref_s, err_msg=shard)
