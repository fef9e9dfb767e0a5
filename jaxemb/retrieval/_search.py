"""Exact nearest-neighbour search: chunked brute force with a running top-k merge.

The corpus is scored in chunks of ``chunk_size`` rows (queries in blocks of
``query_chunk_size``), and every chunk's top-k candidates are merged into a running top-k with
``jax.lax.top_k`` on the concatenation ``[running, chunk candidates]``. ``top_k`` puts the lower
position first among equal values, the running list always holds lower corpus indices than the
chunk and the candidates are kept in increasing row order, so ties are broken by the lower
corpus index, exactly as a stable brute-force sort. Within a chunk an exact grouped-maximum
pre-filter (see ``_chunk_candidates``) avoids running ``top_k`` over every score. Over a
device mesh the corpus is split along the ``data`` axis with ``jax.shard_map``: each device
searches its contiguous shard, and the per-device lists (gathered in device order, hence in
global-index order) are merged the same way.

Compressed codes use the same machinery with exact int32 scores: ``hamming`` scores packed bits
by ``-popcount(q XOR c)`` over uint32 words, ``int8_dot`` multiplies int8 codes with int32
accumulation; padding then scores the least int32 instead of ``-inf``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from jaxemb._validate import check_array, check_axis_match, check_choice, check_int, shape_str

_METRICS = ("cosine", "dot", "l2", "hamming", "int8_dot")
# Metrics over integer codes: scores are int32 and exact.
_CODE_METRICS = ("hamming", "int8_dot")
_CODE_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8))
_NORM_EPS = 1e-12


def _as_matrix(x: Any, name: str, metric: str = "cosine") -> Any:
    if not hasattr(x, "shape") and isinstance(x, (list, tuple)):
        x = np.asarray(x, np.uint8 if metric in _CODE_METRICS else None)
    if metric in _CODE_METRICS:
        check_array(x, name, ndim=2, kind="any")
        if np.dtype(x.dtype) not in _CODE_DTYPES:
            what = "packed bits" if metric == "hamming" else "int8 codes"
            raise ValueError(
                f"{name} must be {what} with dtype uint8 or int8 for metric={metric!r}; "
                f"got {np.dtype(x.dtype)} with shape {shape_str(x)}"
            )
    else:
        check_array(x, name, ndim=2, kind="float")
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature column; got {shape_str(x)}")
    return x


@jax.jit
def _nonfinite_rows(x: jax.Array) -> jax.Array:
    return ~jnp.all(jnp.isfinite(x), axis=1)


def _check_finite_rows(x: Any, name: str) -> None:
    """Raises ``ValueError`` listing the rows of a concrete ``[N, D]`` array with NaN or inf."""
    if isinstance(x, jax.core.Tracer):
        return
    bad = np.flatnonzero(np.asarray(_nonfinite_rows(x)))
    if bad.size:
        shown = ", ".join(str(int(i)) for i in bad[:10])
        more = f" and {bad.size - 10} more" if bad.size > 10 else ""
        raise ValueError(
            f"{name} {shape_str(x)} has NaN or inf values in {bad.size} row(s): [{shown}]{more}"
        )


def _pack_words(x: jax.Array) -> jax.Array:
    """Packed bits ``[n, B]`` (uint8 or int8) as uint32 words ``[n, ceil(B / 4)]``.

    The bytes are reinterpreted, not converted (``binary`` codes are ``ubinary - 128`` as int8,
    i.e. the same bytes with the top bit flipped, so XOR of two codes of one kind is the same
    either way); zero bytes pad the last word and add nothing to a XOR.
    """
    if x.dtype == jnp.int8:
        x = jax.lax.bitcast_convert_type(x, jnp.uint8)
    n, b = x.shape
    pad = -b % 4
    if pad:
        x = jnp.pad(x, ((0, 0), (0, pad)))
    return jax.lax.bitcast_convert_type(x.reshape(n, (b + pad) // 4, 4), jnp.uint32)


def _prepare(x: jax.Array, metric: str) -> tuple[jax.Array, jax.Array | None]:
    """Casts to the compute dtype; returns the (normalised) rows and, for l2, squared norms."""
    if metric == "hamming":
        return _pack_words(x), None
    if metric == "int8_dot":
        # int8 x int8 goes to the integer matmul as is; a uint8 side is widened (exact).
        return (x if x.dtype == jnp.int8 else x.astype(jnp.int32)), None
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if metric == "cosine":
        norm = jnp.sqrt(jnp.sum(x * x, axis=1, keepdims=True))
        return x / jnp.maximum(norm, _NORM_EPS), None
    if metric == "l2":
        return x, jnp.sum(x * x, axis=1)
    return x, None


def _scores_t(q, q_sq, c, c_sq, metric: str) -> jax.Array:
    """Similarity ``[C, Qb]`` (corpus rows first) where larger is better (``-d²`` for l2).

    ``hamming`` gives ``-popcount(c XOR q)`` and ``int8_dot`` the integer inner product, both
    int32 and exact.
    """
    if metric == "hamming":
        x = jax.lax.population_count(jnp.bitwise_xor(c[:, None, :], q[None, :, :]))
        return -jnp.sum(x.astype(jnp.int32), axis=2)
    if metric == "int8_dot":
        if c.dtype != q.dtype:
            c, q = c.astype(jnp.int32), q.astype(jnp.int32)
        return jax.lax.dot_general(c, q, (((1,), (1,)), ((), ())), preferred_element_type=jnp.int32)
    s = jnp.matmul(c, q.T, precision=jax.lax.Precision.HIGHEST)
    if metric == "l2":
        s = -jnp.maximum(c_sq[:, None] + q_sq[None, :] - 2.0 * s, 0.0)
    # -0.0 and 0.0 are equal for the brute-force reference but ordered by lax.top_k; real
    # scores are also kept above -inf, which marks padding.
    finfo = jnp.finfo(s.dtype)
    return jnp.where(s == 0, jnp.zeros_like(s), jnp.maximum(s, finfo.min))


def _chunk_candidates(s_t, kk: int, group: int):
    """Candidates ``(values, positions)`` ``[Qb, n]`` holding each query's top ``kk`` of a chunk.

    ``s_t`` is ``[C, Qb]``. With ``group > 1`` the chunk's rows are cut into contiguous groups
    of ``group`` rows; the ``kk`` groups with the largest maxima (ties: lower group first)
    contain the top ``kk`` rows, lower-index rows first among ties, because every group holding
    a needed row has a maximum at least that row's value and lower groups win ties. Those
    groups' rows are returned in increasing position, so a stable ``top_k`` over them breaks
    ties by the lower row. This is exact and reads the scores once with a cheap ``max``
    instead of running ``top_k`` over the whole chunk.
    """
    c, nq = s_t.shape
    if group == 1:
        v, i = jax.lax.top_k(s_t.T, kk)
        return v, i
    s3 = s_t.reshape(c // group, group, nq)
    _, gid = jax.lax.top_k(jnp.max(s3, axis=1).T, kk)  # [Qb, kk]
    gid = jnp.sort(gid, axis=1)
    within = jnp.arange(group, dtype=jnp.int32)
    cand = s3[gid[:, :, None], within[None, None, :], jnp.arange(nq)[:, None, None]]
    pos = gid[:, :, None] * group + within[None, None, :]
    return cand.reshape(nq, kk * group), pos.reshape(nq, kk * group).astype(jnp.int32)


_GROUP = 8


def _lowest(dtype) -> Any:
    """The padding score: below every real score (``-inf``, or the least int32)."""
    if jnp.issubdtype(dtype, jnp.integer):
        return jnp.iinfo(dtype).min
    return -jnp.inf


def _score_dtype(q: jax.Array, metric: str):
    return jnp.int32 if metric in _CODE_METRICS else q.dtype


def _local_search(q, c, n_valid, offset, *, k: int, chunk: int, metric: str):
    """Top-k of ``q`` against the rows of ``c`` ``[M, D]`` with a running merge over chunks.

    Chunks are sliced in place (no padded or normalised copy of the corpus): chunk ``j``
    covers rows ``[j * chunk, (j + 1) * chunk)``; the last one starts at ``M - chunk`` instead,
    and rows it shares with the previous chunk are masked. Rows at position ``>= n_valid`` are
    padding and masked too. Returned indices are ``offset + row``.
    """
    q, q_sq = _prepare(q, metric)
    m, d = c.shape
    n_chunks = -(-m // chunk)
    nq = q.shape[0]
    kk = min(k, chunk)
    group = _GROUP if chunk % _GROUP == 0 and chunk // _GROUP >= 4 * kk else 1
    score_dtype = _score_dtype(q, metric)
    low = _lowest(score_dtype)

    def body(j, carry):
        vals, idx = carry
        begin = j * chunk
        start = jnp.minimum(begin, m - chunk)
        cj, cj_sq = _prepare(jax.lax.dynamic_slice(c, (start, 0), (chunk, d)), metric)
        s_t = _scores_t(q, q_sq, cj, cj_sq, metric)
        rows = start + jnp.arange(chunk, dtype=jnp.int32)
        s_t = jnp.where(((rows >= begin) & (rows < n_valid))[:, None], s_t, low)
        v_new, i_new = _chunk_candidates(s_t, kk, group)
        i_new = i_new + (start + offset).astype(jnp.int32)
        # Running list first: it holds lower indices, and top_k favours lower positions.
        v_all = jnp.concatenate([vals, v_new], axis=1)
        i_all = jnp.concatenate([idx, i_new], axis=1)
        v, pos = jax.lax.top_k(v_all, k)
        return v, jnp.take_along_axis(i_all, pos, axis=1)

    init = (
        jnp.full((nq, k), low, score_dtype),
        jnp.full((nq, k), jnp.iinfo(jnp.int32).max, jnp.int32),
    )
    return jax.lax.fori_loop(0, n_chunks, body, init)


def _blocked_queries(fn, q, q_block: int):
    """Applies ``fn`` to query blocks of ``q_block`` rows (padding the last) and concatenates."""
    nq = q.shape[0]
    if nq <= q_block:
        return fn(q)
    n_blocks = -(-nq // q_block)
    qp = jnp.pad(q, ((0, n_blocks * q_block - nq), (0, 0)))
    vals, idx = jax.lax.map(fn, qp.reshape(n_blocks, q_block, q.shape[1]))
    k = vals.shape[-1]
    return vals.reshape(-1, k)[:nq], idx.reshape(-1, k)[:nq]


@functools.partial(jax.jit, static_argnames=("k", "chunk", "q_block", "metric"))
def _search_single(queries, corpus, *, k, chunk, q_block, metric):
    n = corpus.shape[0]
    fn = functools.partial(
        _local_search, c=corpus, n_valid=n, offset=0, k=k, chunk=chunk, metric=metric
    )
    return _blocked_queries(lambda qb: fn(qb), queries, q_block)


@functools.partial(jax.jit, static_argnames=("k", "chunk", "q_block", "metric", "mesh", "n_local"))
def _search_sharded(queries, corpus, *, k, chunk, q_block, metric, mesh, n_local):
    n = corpus.shape[0]
    n_dev = mesh.shape["data"]
    c = corpus
    if n_dev * n_local != n:
        c = jnp.pad(corpus, ((0, n_dev * n_local - n), (0, 0)))
        c = jax.lax.with_sharding_constraint(c, NamedSharding(mesh, P("data")))

    def per_device(q, c_local):
        d = jax.lax.axis_index("data")
        offset = (d * n_local).astype(jnp.int32)
        n_valid = jnp.clip(n - d * n_local, 0, n_local)
        kk = min(k, n_local)
        fn = functools.partial(
            _local_search,
            c=c_local,
            n_valid=n_valid,
            offset=offset,
            k=kk,
            chunk=chunk,
            metric=metric,
        )
        vals, idx = _blocked_queries(fn, q, q_block)
        # [n_dev, Q, kk] in device order = global index order; merge keeps lower index first.
        vals = jax.lax.all_gather(vals, "data")
        idx = jax.lax.all_gather(idx, "data")
        vals = jnp.moveaxis(vals, 0, 1).reshape(q.shape[0], n_dev * kk)
        idx = jnp.moveaxis(idx, 0, 1).reshape(q.shape[0], n_dev * kk)
        v, pos = jax.lax.top_k(vals, k)
        return v, jnp.take_along_axis(idx, pos, axis=1)

    return jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(P(), P("data")),
        out_specs=(P(), P()),
        axis_names={"data"},
        check_vma=False,
    )(queries, c)


def _detect_mesh(corpus: Any) -> Mesh | None:
    sharding = getattr(corpus, "sharding", None)
    if isinstance(corpus, jax.core.Tracer) or not isinstance(sharding, NamedSharding):
        return None
    spec = sharding.spec
    first = spec[0] if len(spec) else None
    names = first if isinstance(first, tuple) else (first,)
    if "data" in names and sharding.mesh.shape["data"] > 1:
        return sharding.mesh
    return None


def search(
    queries: ArrayLike,
    corpus: ArrayLike,
    k: int,
    *,
    metric: str = "cosine",
    chunk_size: int = 4096,
    query_chunk_size: int = 1024,
    mesh: Mesh | None = None,
    check_finite: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Exact top-k search of every query against the corpus.

    Scores ``[query_block, chunk_size]`` tiles, keeps a running top-k over corpus chunks and, on
    a mesh, searches each device's contiguous corpus shard and merges the per-device lists. The
    result equals a brute-force stable sort: scores descending (ascending distance for ``l2``
    and ``hamming``), ties broken by the lower corpus index.

    Args:
      queries: [Q, D] floating point; for ``hamming`` packed bits [Q, B], for ``int8_dot``
        int8/uint8 codes [Q, D] (see ``quantize_embeddings``).
      corpus: [N, D] floating point, the same D; for the code metrics [N, B] or [N, D] codes.
      k: number of neighbours, ``1 <= k <= N``.
      metric: ``"cosine"`` (rows L2-normalised with eps 1e-12, then dot product), ``"dot"``
        (inner product, as ``faiss.IndexFlatIP``), ``"l2"`` (squared Euclidean distance,
        as ``faiss.IndexFlatL2``), ``"hamming"`` (number of differing bits between packed
        codes, XOR then popcount, as ``faiss.IndexBinaryFlat``; queries and corpus both
        ``ubinary`` uint8 or both ``binary`` int8) or ``"int8_dot"`` (inner product of int8 or
        uint8 codes accumulated exactly in int32, as usearch's ``i8``/``ip`` index; exact while
        ``D * 255**2 < 2**31``).
      chunk_size: corpus rows scored at a time. It need not divide N: the last chunk is
        shifted back to end at row N and its rows already scored are masked.
      query_chunk_size: queries scored at a time (bounds memory to
        ``query_chunk_size * chunk_size`` scores).
      mesh: a mesh with a ``data`` axis to split the corpus over; ``None`` uses the mesh of a
        ``corpus`` already sharded along ``data`` with a ``NamedSharding``, else one device.
      check_finite: raise if a concrete float input holds NaN or inf, naming the rows.

    Returns:
      ``(scores, indices)``, both [Q, k]: for ``cosine``/``dot`` the similarities in descending
      order; for ``l2`` the squared distances in ascending order (float32, or float64 inputs
      under x64); for ``hamming`` the int32 bit distances in ascending order; for
      ``int8_dot`` the int32 inner products in descending order. ``indices`` are int32
      global corpus rows.

    Raises:
      ValueError: on wrong ranks or dtypes, mismatched widths, ``k`` outside ``[1, N]``, a bad
        metric or chunk size, or non-finite rows (listed by index).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.retrieval import search
      >>> corpus = jnp.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 1.0]])
      >>> scores, idx = search(jnp.array([[1.0, 0.0]]), corpus, 3, metric="cosine")
      >>> idx.tolist(), [round(float(s), 3) for s in scores[0]]
      ([[0, 2, 3]], [1.0, 1.0, 0.707])
      >>> dist, idx = search(jnp.array([[1.0, 0.0]]), corpus, 2, metric="l2")
      >>> idx.tolist(), dist.tolist()
      ([[0, 2]], [[0.0, 1.0]])
      >>> codes = jnp.array([[0b1111_0000], [0b0000_1111], [0b1111_0001]], jnp.uint8)
      >>> dist, idx = search(codes[:1], codes, 3, metric="hamming")
      >>> idx.tolist(), dist.tolist(), dist.dtype
      ([[0, 2, 1]], [[0, 1, 8]], dtype('int32'))

    References:
      Johnson, Douze & Jégou, "Billion-scale similarity search with GPUs" (2017): exact
      ``IndexFlatIP``/``IndexFlatL2`` search, whose score conventions this matches (faiss
      returns squared L2 distances; ``IndexBinaryFlat`` Hamming distances).
      ``jax.lax.top_k`` keeps the lower index first on ties.
    """
    check_choice(metric, "metric", _METRICS)
    queries = _as_matrix(queries, "queries", metric)
    corpus = _as_matrix(corpus, "corpus", metric)
    check_axis_match(queries, "queries", 1, corpus, "corpus", 1)
    if metric == "hamming" and np.dtype(queries.dtype) != np.dtype(corpus.dtype):
        raise ValueError(
            "queries and corpus must both be ubinary (uint8) or both binary (int8) codes for "
            f"metric='hamming'; got queries {np.dtype(queries.dtype)} {shape_str(queries)} and "
            f"corpus {np.dtype(corpus.dtype)} {shape_str(corpus)}"
        )
    n = corpus.shape[0]
    check_int(k, "k", minimum=1)
    if k > n:
        raise ValueError(f"k must be <= the corpus size {n} (corpus {shape_str(corpus)}); got {k}")
    check_int(chunk_size, "chunk_size", minimum=1)
    check_int(query_chunk_size, "query_chunk_size", minimum=1)
    if mesh is not None and (not isinstance(mesh, Mesh) or "data" not in mesh.axis_names):
        raise ValueError(f"mesh must be a jax.sharding.Mesh with a 'data' axis; got {mesh!r}")
    if check_finite and metric not in _CODE_METRICS:
        _check_finite_rows(queries, "queries")
        _check_finite_rows(corpus, "corpus")
    k, chunk_size, query_chunk_size = int(k), int(chunk_size), int(query_chunk_size)
    if mesh is None:
        mesh = _detect_mesh(corpus)
    queries = jnp.asarray(queries)
    corpus = jnp.asarray(corpus)
    if mesh is None or mesh.shape["data"] == 1:
        chunk = min(chunk_size, n)
        vals, idx = _search_single(
            queries, corpus, k=k, chunk=chunk, q_block=query_chunk_size, metric=metric
        )
    else:
        n_dev = mesh.shape["data"]
        n_local = -(-n // n_dev)
        chunk = min(chunk_size, n_local)
        vals, idx = _search_sharded(
            queries,
            corpus,
            k=k,
            chunk=chunk,
            q_block=query_chunk_size,
            metric=metric,
            mesh=mesh,
            n_local=n_local,
        )
    if metric == "l2":
        vals = jnp.where(vals == 0, jnp.zeros_like(vals), -vals)
    elif metric == "hamming":
        vals = -vals
    return vals, idx
