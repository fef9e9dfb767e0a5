"""quantize_embeddings, Hamming / int8 search and search_with_rescoring against NumPy.

The NumPy references below are written independently of jaxemb: bits are packed with explicit
powers of two, buckets follow the sentence-transformers 6.3 formula in the embeddings' working
dtype, search is a stable brute-force sort and rescoring the recipe's float inner product.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxemb.retrieval import quantize_embeddings, search, search_with_rescoring

# ---------------------------------------------------------------- NumPy references


def _np_pack(bits):
    """MSB-first packing of a {0, 1} array along the last axis, zero-padded to whole bytes."""
    d = bits.shape[-1]
    nb = -(-d // 8)
    padded = np.zeros(bits.shape[:-1] + (nb * 8,), np.int64)
    padded[..., :d] = bits
    weights = 2 ** np.arange(7, -1, -1)
    return (padded.reshape(bits.shape[:-1] + (nb, 8)) * weights).sum(-1)


def _np_unpack(codes, d):
    c = codes.astype(np.int64) % 256
    bits = (c[..., None] // (2 ** np.arange(7, -1, -1))) % 2
    return bits.reshape(codes.shape[:-1] + (-1,))[..., :d]


def _np_quantize(x, precision, ranges=None, cal=None):
    x = np.asarray(x)
    if precision == "float32":
        return x.astype(np.float32)
    if precision.endswith("binary"):
        packed = _np_pack((x > 0).astype(np.int64))
        if precision == "ubinary":
            return packed.astype(np.uint8)
        return (packed - 128).astype(np.int8)  # in [-128, 127]: no wrap-around needed
    if ranges is None:
        src = x if cal is None else np.asarray(cal)
        ranges = np.stack([src.min(axis=0), src.max(axis=0)])
    lo, hi = np.asarray(ranges, np.float32)
    step = (hi - lo) / np.float32(255)
    step = np.where(step == 0, np.float32(1), step).astype(np.float32)
    w = np.result_type(x.dtype, np.float32)  # float16 and float32 work in float32, float64 in 64
    b = np.floor((x.astype(w) - lo.astype(w)) / step.astype(w))
    b = np.minimum(np.maximum(b, 0), 255).astype(np.int64)
    return b.astype(np.uint8) if precision == "uint8" else (b - 128).astype(np.int8)


def _np_hamming(q, c):
    return _np_unpack(q[:, None, :] ^ c[None, :, :], 8 * q.shape[1]).sum(-1)


def _stable_top(scores, k, *, ascending):
    order = np.argsort(scores if ascending else -scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def _np_rescoring(q, codes, k, mult, precision, docs=None, ranges=None):
    """sentence-transformers' recipe in NumPy float64, ties by shortlist position."""
    d = q.shape[1]
    if precision.endswith("binary"):
        qc = _np_quantize(q, precision)
        s = -_np_hamming(qc.view(np.uint8), codes.view(np.uint8))
    else:
        qc = _np_quantize(q, precision, ranges=ranges)
        s = qc.astype(np.int64) @ codes.astype(np.int64).T
    _, cand = _stable_top(s, min(k * mult, codes.shape[0]), ascending=False)
    if docs is not None:
        cd = np.asarray(docs, np.float64)[cand]
    elif precision.endswith("binary"):
        cd = _np_unpack(codes.view(np.uint8)[cand] ^ (0x80 if precision == "binary" else 0), d)
    else:
        lo, hi = np.asarray(ranges, np.float32)
        step = (hi - lo) / np.float32(255)
        step = np.where(step == 0, 1, step)
        cd = (codes[cand].astype(np.float64) + (128 if precision == "int8" else 0)) * step + lo
    r = np.einsum("qd,qkd->qk", q.astype(np.float64), cd.astype(np.float64))
    v, pos = _stable_top(r, k, ascending=False)
    return v, np.take_along_axis(cand, pos, axis=1)


# ---------------------------------------------------------------- quantize_embeddings


def _edge_inputs(rng, d):
    """Random rows, the calibration min and max themselves, out-of-range rows, +-0 and every
    bucket edge ``min + j * step`` (exact float32 values on the edges)."""
    cal = (rng.standard_normal((40, d)) * 0.7).astype(np.float32)
    ranges = np.stack([cal.min(0), cal.max(0)])
    step = (ranges[1] - ranges[0]) / np.float32(255)
    edges = (ranges[0] + np.arange(256, dtype=np.float32)[:, None] * step).astype(np.float32)
    x = np.concatenate(
        [
            rng.standard_normal((20, d)).astype(np.float32) * 3,  # many out of range
            cal[:3],
            ranges,
            np.zeros((1, d), np.float32),
            -np.zeros((1, d), np.float32),
            edges,
        ]
    )
    return x, cal, ranges


@pytest.mark.parametrize("precision", ["float32", "int8", "uint8", "binary", "ubinary"])
@pytest.mark.parametrize("d", [5, 16, 19])
def test_quantize_equals_numpy_reference(rng, precision, d):
    x, cal, ranges = _edge_inputs(rng, d)
    x[:, 0] = np.where(np.arange(len(x)) % 2, x[:, 0], 0.25)
    const = x.copy()
    const[:, 1] = 0.5  # a constant column: zero step counts as 1
    cases = [
        (x, {}),
        (x, {"calibration_embeddings": cal}),
        (x, {"ranges": ranges}),
        (const, {}),
        (x.astype(np.float64) * 1.001, {"calibration_embeddings": cal.astype(np.float64)}),
        (x.astype(np.float16), {"calibration_embeddings": cal.astype(np.float16)}),
        (x[0], {"ranges": ranges}),  # one embedding [D]
        (x[:1], {"calibration_embeddings": cal[:1]}),
    ]
    for emb, kw in cases:
        got = quantize_embeddings(emb, precision, **kw)
        ref = _np_quantize(emb, precision, kw.get("ranges"), kw.get("calibration_embeddings"))
        assert isinstance(got, jax.Array)
        assert got.dtype == ref.dtype and got.shape == ref.shape, (kw.keys(), got.dtype)
        np.testing.assert_array_equal(np.asarray(got), ref)
    if precision.endswith("int8"):
        got = np.asarray(quantize_embeddings(x, precision, ranges=ranges))
        off = 128 if precision == "int8" else 0
        # out-of-range values clip to the end buckets and both ends are reached
        assert got.astype(np.int64).min() + off == 0 and got.astype(np.int64).max() + off == 255


def test_quantize_packing_layout_and_empty_rows():
    x = np.array([[1.0, -1.0, 0.0, 2.0, 0.5, -0.5, 3.0, 1.0, 1.0]], np.float32)
    # bits 1001 1011 | 1000 0000 (MSB first, last byte zero-padded)
    assert np.asarray(quantize_embeddings(x, "ubinary")).tolist() == [[0b10011011, 0b10000000]]
    assert np.asarray(quantize_embeddings(x, "binary")).tolist() == [[155 - 128, 0]]
    for precision, shape, dtype in [
        ("int8", (0, 9), jnp.int8),
        ("uint8", (0, 9), jnp.uint8),
        ("binary", (0, 2), jnp.int8),
        ("ubinary", (0, 2), jnp.uint8),
        ("float32", (0, 9), jnp.float32),
    ]:
        out = quantize_embeddings(np.zeros((0, 9), np.float64), precision)
        assert out.shape == shape and out.dtype == dtype


def test_quantize_bad_inputs(rng):
    x = rng.standard_normal((6, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"precision must be one of .*'int8'.*'ubinary'"):
        quantize_embeddings(x, "int4")
    with pytest.raises(ValueError, match=r"ranges must be \[2, 4\] .*; got \[2, 3\]"):
        quantize_embeddings(x, "int8", ranges=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"ranges must be \[2, 4\] .*; got \[3, 4\]"):
        quantize_embeddings(x, "uint8", ranges=np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"ranges must have min \(row 0\) <= max"):
        quantize_embeddings(x, "uint8", ranges=np.array([[1.0] * 4, [0.0] * 4]))
    with pytest.raises(ValueError, match=r"ranges \[2, 4\] has NaN or inf"):
        quantize_embeddings(x, "uint8", ranges=np.array([[0.0] * 4, [np.inf] * 4]))
    with pytest.raises(ValueError, match=r"calibration_embeddings must be \[M, 4\] .*got \[9, 5\]"):
        quantize_embeddings(x, "int8", calibration_embeddings=np.zeros((9, 5), np.float32))
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"embeddings \[6, 4\] has NaN values in row\(s\) \[3\]"):
        quantize_embeddings(bad, "binary")
    with pytest.raises(ValueError, match="embeddings must have at least one feature column"):
        quantize_embeddings(np.zeros((3, 0), np.float32), "ubinary")
    with pytest.raises(ValueError, match="embeddings must have a float dtype"):
        quantize_embeddings(x.astype(np.int8), "int8")
    with pytest.raises(ValueError, match="from a single embedding"):
        quantize_embeddings(x[:1], "int8")
    with pytest.raises(ValueError, match="must be a concrete array"):
        jax.jit(lambda e: quantize_embeddings(e, "binary"))(x)


# ---------------------------------------------------------------- code metrics in search


def test_hamming_search_ties_chunks_and_binary_codes(rng):
    corpus = rng.integers(0, 256, (203, 3), dtype=np.uint8)
    corpus[150] = corpus[190] = corpus[3]  # exact duplicates: lower index first
    queries = rng.integers(0, 256, (23, 3), dtype=np.uint8)
    queries[0] = corpus[3]
    ref_d, ref_i = _stable_top(_np_hamming(queries, corpus), 25, ascending=True)
    assert (np.diff(ref_d, axis=1) == 0).sum() > 100  # ties really exercised
    for chunk, q_chunk in [(7, 10), (96, 1024)]:  # 96 takes the grouped pre-filter
        dist, idx = search(
            queries, corpus, 25, metric="hamming", chunk_size=chunk, query_chunk_size=q_chunk
        )
        assert dist.dtype == jnp.int32 and idx.dtype == jnp.int32
        np.testing.assert_array_equal(np.asarray(idx), ref_i)
        np.testing.assert_array_equal(np.asarray(dist), ref_d)
    # binary (int8) codes are the same bytes with the top bit flipped: same distances
    b_q, b_c = (queries ^ 0x80).view(np.int8), (corpus ^ 0x80).view(np.int8)
    dist, idx = search(b_q, b_c, 25, metric="hamming", chunk_size=7, query_chunk_size=10)
    np.testing.assert_array_equal(np.asarray(idx), ref_i)
    np.testing.assert_array_equal(np.asarray(dist), ref_d)


def test_int8_dot_search_exact_int32(rng):
    corpus = rng.integers(-128, 128, (130, 40), dtype=np.int8)
    corpus[100] = corpus[7]
    corpus[0] = -128  # extreme products: 128 * 128 * 40 in int32
    queries = rng.integers(-128, 128, (9, 40), dtype=np.int8)
    queries[0] = -128
    ref = queries.astype(np.int64) @ corpus.astype(np.int64).T
    ref_s, ref_i = _stable_top(ref, 12, ascending=False)
    s, i = search(queries, corpus, 12, metric="int8_dot", chunk_size=32)
    assert s.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(i), ref_i)
    np.testing.assert_array_equal(np.asarray(s), ref_s)
    assert ref_s[0, 0] == 128 * 128 * 40
    # uint8 codes (and a uint8 x int8 mix) are widened to int32 exactly
    cu = rng.integers(0, 256, (130, 40), dtype=np.uint8)
    ref_s, ref_i = _stable_top(
        queries.astype(np.int64) @ cu.astype(np.int64).T, 12, ascending=False
    )
    s, i = search(queries, cu, 12, metric="int8_dot", chunk_size=32)
    np.testing.assert_array_equal(np.asarray(i), ref_i)
    np.testing.assert_array_equal(np.asarray(s), ref_s)


@pytest.mark.parametrize("metric", ["hamming", "int8_dot"])
def test_code_metrics_sharded_over_mesh8(rng, mesh8, metric):
    n = 61  # does not divide over 8 devices: the last shard is padded
    if metric == "hamming":
        corpus = rng.integers(0, 256, (n, 2), dtype=np.uint8)
        queries = rng.integers(0, 256, (7, 2), dtype=np.uint8)
    else:
        corpus = rng.integers(-3, 4, (n, 5), dtype=np.int8)
        queries = rng.integers(-3, 4, (7, 5), dtype=np.int8)
    corpus[n - 1] = corpus[0]  # a tie across the first and last shard
    if metric == "hamming":
        ref_v, ref_i = _stable_top(_np_hamming(queries, corpus), 15, ascending=True)
    else:
        ref = queries.astype(np.int64) @ corpus.astype(np.int64).T
        ref_v, ref_i = _stable_top(ref, 15, ascending=False)
    v, i = search(queries, corpus, 15, metric=metric, chunk_size=3, mesh=mesh8)
    np.testing.assert_array_equal(np.asarray(i), ref_i)
    np.testing.assert_array_equal(np.asarray(v), ref_v)


def test_code_metric_validation(rng):
    c = rng.integers(0, 256, (10, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"corpus must be packed bits .*uint8 or int8.*float32"):
        search(c, c.astype(np.float32), 2, metric="hamming")
    with pytest.raises(ValueError, match="queries must be int8 codes .*int32"):
        search(c.astype(np.int32), c, 2, metric="int8_dot")
    with pytest.raises(ValueError, match=r"both be ubinary \(uint8\) or both binary \(int8\)"):
        search(c.view(np.int8), c, 2, metric="hamming")
    with pytest.raises(ValueError, match="metric must be one of"):
        search(c, c, 2, metric="jaccard")


# ---------------------------------------------------------------- search_with_rescoring


def _dyadic(rng, n, d):
    """Multiples of 1/8 in [-1, 1]: rescored inner products are exact, so ties are exact."""
    return (rng.integers(-8, 9, (n, d)) / 8).astype(np.float32)


def test_rescoring_binary_shortlist_float_and_bit_rescoring(rng):
    d = 20
    docs = _dyadic(rng, 90, d)
    docs[60] = docs[5]
    queries = _dyadic(rng, 11, d)
    for precision in ["ubinary", "binary"]:
        codes = np.asarray(quantize_embeddings(docs, precision))
        for rescore in [docs, None]:
            s, i = search_with_rescoring(
                queries, codes, 6, precision=precision, rescore_embeddings=rescore,
                rescore_multiplier=3, chunk_size=16, query_chunk_size=4,
            )  # fmt: skip
            ref_s, ref_i = _np_rescoring(queries, codes, 6, 3, precision, docs=rescore)
            assert s.dtype == jnp.float32 and i.dtype == jnp.int32 and i.shape == (11, 6)
            np.testing.assert_array_equal(np.asarray(i), ref_i)
            np.testing.assert_array_equal(np.asarray(s), ref_s)


def test_rescoring_int8_dequantized_and_int8_documents(rng, mesh8):
    d = 12
    # ranges with a dyadic step (255/128 / 255 = 1/128): dequantized values are exact
    ranges = np.stack([np.full(d, -1.0), np.full(d, -1.0 + 255 / 128)]).astype(np.float32)
    docs = _dyadic(rng, 70, d)
    queries = _dyadic(rng, 9, d)
    for precision in ["int8", "uint8"]:
        codes = np.asarray(quantize_embeddings(docs, precision, ranges=ranges))
        s, i = search_with_rescoring(
            queries, codes, 5, precision=precision, ranges=ranges, rescore_multiplier=4
        )
        ref_s, ref_i = _np_rescoring(queries, codes, 5, 4, precision, ranges=ranges)
        np.testing.assert_array_equal(np.asarray(i), ref_i)
        np.testing.assert_array_equal(np.asarray(s), ref_s)
    # binary shortlist, raw int8 documents for rescoring (the blog's recipe), sharded search
    int8_docs = np.asarray(quantize_embeddings(docs, "int8", ranges=ranges))
    bin_codes = np.asarray(quantize_embeddings(docs, "ubinary"))
    s, i = search_with_rescoring(
        queries, bin_codes, 5, rescore_embeddings=int8_docs, rescore_multiplier=40, mesh=mesh8
    )
    ref_s, ref_i = _np_rescoring(queries, bin_codes, 5, 40, "ubinary", docs=int8_docs)
    np.testing.assert_array_equal(np.asarray(i), ref_i)
    np.testing.assert_array_equal(np.asarray(s), ref_s)


def test_rescoring_bad_inputs(rng):
    q = rng.standard_normal((4, 16)).astype(np.float32)
    codes = np.asarray(quantize_embeddings(rng.standard_normal((10, 16)), "ubinary"))
    with pytest.raises(ValueError, match="precision must be one of"):
        search_with_rescoring(q, codes, 2, precision="float32")
    with pytest.raises(ValueError, match=r"corpus_codes must be ubinary codes \[N, 2\].*\[10, 3\]"):
        search_with_rescoring(q, np.zeros((10, 3), np.uint8), 2)
    with pytest.raises(ValueError, match=r"corpus_codes must be binary codes .*uint8"):
        search_with_rescoring(q, codes, 2, precision="binary")
    with pytest.raises(ValueError, match=r"rescore_embeddings must be \[10, 16\] .*\[10, 8\]"):
        search_with_rescoring(q, codes, 2, rescore_embeddings=np.zeros((10, 8), np.float32))
    with pytest.raises(ValueError, match="rescore_multiplier must be >= 1"):
        search_with_rescoring(q, codes, 2, rescore_multiplier=0)
    with pytest.raises(ValueError, match="k must be <= the corpus size 10"):
        search_with_rescoring(q, codes, 11)
    with pytest.raises(ValueError, match=r"ranges must be \[2, 16\]"):
        search_with_rescoring(q, codes.view(np.int8).repeat(8, 1), 2, precision="int8",
                              ranges=np.zeros((2, 4)))  # fmt: skip
