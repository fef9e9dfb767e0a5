"""The one exact top-k engine of jaxemb: chunked brute force with a running top-k merge.

Every exact nearest-neighbour search in the package runs here: :func:`search` (float vectors,
packed bits, int8 codes), :func:`maxsim_search` (multi-vector documents), the k-means
assignment step, and the neighbour graphs of ``jaxemb.analysis`` (intrinsic dimension,
hubness, the kNN probe). The entry point for them is :func:`_topk`.

**Scores.** A metric is a registered pair of pure functions (:class:`_Metric`): ``prepare``
casts/normalises/packs a block of rows once, ``tile`` scores a corpus chunk against a query
block as a ``[chunk, query_block]`` array where larger is better (``-d²`` for ``l2``,
``-popcount(q XOR c)`` for ``hamming``). Integer metrics also give ``rows``, the exact score of
gathered candidate rows, and a static bound on ``|score|``.

**Running top-k.** The corpus is scored in chunks of ``chunk`` rows (queries in blocks of
``q_block``), and every chunk's top-k candidates are merged into a running top-k with
``jax.lax.top_k`` on the concatenation ``[running, chunk candidates]``. ``top_k`` puts the
lower position first among equal values, the running list always holds lower corpus indices
than the chunk and the candidates are kept in increasing row order, so ties are broken by the
lower corpus index, exactly as a stable brute-force sort. Within a chunk an exact
grouped-maximum pre-filter (see :func:`_chunk_candidates`) avoids running ``top_k`` over every
score; for integer metrics the candidates' scores are recomputed from their rows, so the
``[chunk, query_block]`` tile is never written to memory (only its group maxima are).
Integer scores whose bound is below ``2**24`` are selected as float32 (exact, and XLA's CPU
``top_k`` is much faster on float32 than on int32) and returned as int32.

**Meshes.** With the corpus split over mesh axes (``shard="corpus"``), each device searches
its contiguous shard and the per-device lists, gathered in device order (hence global-index
order), are merged the same way. Searching a set against itself with its rows split over the
mesh (``shard="queries"``), each device searches for its own rows against the gathered set,
and the result stays split like the input. ``exclude_self`` leaves out each query's own row.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from jaxemb._validate import (
    check_array,
    check_axis_match,
    check_choice,
    check_int,
    is_concrete,
    shape_str,
)

_METRICS = ("cosine", "dot", "l2", "hamming", "int8_dot")
# Metrics over integer codes: scores are int32 and exact.
_CODE_METRICS = ("hamming", "int8_dot")
_CODE_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8))
_NORM_EPS = 1e-12
# Default corpus rows per chunk of search(); Hamming chunks never store their [chunk, queries]
# distances (only group minima), so they can be larger: fewer, cheaper merges.
_DEFAULT_CHUNK = 4096
_HAMMING_CHUNK = 32768


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
    return ~jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim)))


def _check_finite_rows(x: Any, name: str) -> None:
    """Raises ``ValueError`` listing the rows of a concrete ``[N, ...]`` array with NaN or inf."""
    if isinstance(x, jax.core.Tracer):
        return
    bad = np.flatnonzero(np.asarray(_nonfinite_rows(x)))
    if bad.size:
        shown = ", ".join(str(int(i)) for i in bad[:10])
        more = f" and {bad.size - 10} more" if bad.size > 10 else ""
        raise ValueError(
            f"{name} {shape_str(x)} has NaN or inf values in {bad.size} row(s): [{shown}]{more}"
        )


# ---------------------------------------------------------------------------------------------
# Score functions: a small registry of (prepare, tile[, rows]) per metric
# ---------------------------------------------------------------------------------------------


class _Metric(NamedTuple):
    """How one metric scores: pure functions of prepared row blocks (pytrees, rows first).

    Attributes:
      prepare: ``(rows, dtype) -> prepared`` once per query block and per corpus chunk
        (``dtype``: the float compute dtype; integer metrics ignore it).
      tile: ``(q_prepared [Qb, ...], c_prepared [C, ...]) -> [C, Qb]`` scores, larger is better.
      rows: integer metrics only: ``(q_prepared [Qb, ...], c_rows [Qb, M, ...]) -> [Qb, M]``,
        the exact scores of gathered candidate rows (equal to the tile's entries).
      max_abs: integer metrics only: ``(queries, corpus) -> int``, a static bound on
        ``|score|`` from the raw inputs' shapes and dtypes.
      prepare_corpus: the corpus side's ``prepare`` when it differs from the queries' (e.g.
        decoding compressed rows); ``None`` uses ``prepare``.

    The engine functions accept a registered name or a ``_Metric`` built by the caller (under
    its ``jax.jit``, closing over traced arrays such as codebooks).
    """

    prepare: Callable[[Any, Any], Any]
    tile: Callable[[Any, Any], jax.Array]
    rows: Callable[[Any, Any], jax.Array] | None = None
    max_abs: Callable[[Any, Any], int] | None = None
    prepare_corpus: Callable[[Any, Any], Any] | None = None


def _matmul_t(q: jax.Array, c: jax.Array) -> jax.Array:
    return jnp.matmul(c, q.T, precision=jax.lax.Precision.HIGHEST)


def _unit_rows(x: jax.Array, dtype) -> jax.Array:
    x = x.astype(dtype)
    norm = jnp.sqrt(jnp.sum(x * x, axis=1, keepdims=True))
    return x / jnp.maximum(norm, _NORM_EPS)


def _l2_prepare(x: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    x = x.astype(dtype)
    return x, jnp.sum(x * x, axis=1)


def _l2_tile(q, c) -> jax.Array:
    (q, q_sq), (c, c_sq) = q, c
    return -jnp.maximum(c_sq[:, None] + q_sq[None, :] - 2.0 * _matmul_t(q, c), 0.0)


def _pack_words(x: jax.Array, dtype=None) -> jax.Array:
    """Packed bits ``[n, B]`` (uint8 or int8) as uint32 words ``[n, ceil(B / 4)]``.

    The bytes are reinterpreted, not converted (``binary`` codes are ``ubinary - 128`` as int8,
    i.e. the same bytes with the top bit flipped, so XOR of two codes of one kind is the same
    either way); zero bytes pad the last word and add nothing to a XOR.
    """
    del dtype
    if x.dtype == jnp.int8:
        x = jax.lax.bitcast_convert_type(x, jnp.uint8)
    n, b = x.shape
    pad = -b % 4
    if pad:
        x = jnp.pad(x, ((0, 0), (0, pad)))
    return jax.lax.bitcast_convert_type(x.reshape(n, (b + pad) // 4, 4), jnp.uint32)


# Up to this many words the Hamming tile is a sum of per-word [C, Qb] popcounts (vectorised
# along the queries, fused into one loop with the group maxima); wider codes reduce in place.
_UNROLLED_WORDS = 32


def _hamming_tile(q: jax.Array, c: jax.Array) -> jax.Array:
    words = q.shape[1]
    if words > _UNROLLED_WORDS:
        x = jax.lax.population_count(jnp.bitwise_xor(c[:, None, :], q[None, :, :]))
        return -jnp.sum(x.astype(jnp.int32), axis=2)
    qt = q.T
    total = jax.lax.population_count(c[:, 0][:, None] ^ qt[0][None, :]).astype(jnp.int32)
    for w in range(1, words):
        total = total + jax.lax.population_count(c[:, w][:, None] ^ qt[w][None, :]).astype(
            jnp.int32
        )
    return -total


def _hamming_rows(q: jax.Array, c_rows: jax.Array) -> jax.Array:
    x = jax.lax.population_count(jnp.bitwise_xor(c_rows, q[:, None, :]))
    return -jnp.sum(x.astype(jnp.int32), axis=2)


def _code_max(x: Any) -> int:
    return 128 if np.dtype(x.dtype) == np.int8 else 255


def _int8_prepare(x: jax.Array, dtype=None) -> jax.Array:
    # int8 x int8 goes to the integer matmul as is; a uint8 side is widened (exact).
    del dtype
    return x if x.dtype == jnp.int8 else x.astype(jnp.int32)


def _int8_operands(q: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    if c.dtype != q.dtype:
        return q.astype(jnp.int32), c.astype(jnp.int32)
    return q, c


def _int8_tile(q: jax.Array, c: jax.Array) -> jax.Array:
    q, c = _int8_operands(q, c)
    return jax.lax.dot_general(c, q, (((1,), (1,)), ((), ())), preferred_element_type=jnp.int32)


def _int8_rows(q: jax.Array, c_rows: jax.Array) -> jax.Array:
    q, c_rows = _int8_operands(q, c_rows)
    return jnp.einsum("qd,qmd->qm", q, c_rows, preferred_element_type=jnp.int32)


def _maxsim_prepare(x: tuple[jax.Array, jax.Array], dtype) -> tuple[jax.Array, jax.Array]:
    tokens, mask = x
    return tokens.astype(dtype), mask


def _maxsim_tile(q, c, *, length_normalize: bool = False) -> jax.Array:
    # imported here: _maxsim may import this module
    from jaxemb.retrieval._maxsim import _maxsim_scores  # noqa: PLC0415

    return _maxsim_scores(q[0], q[1], c[0], c[1], length_normalize=length_normalize).T


_REGISTRY: dict[str, _Metric] = {
    "dot": _Metric(lambda x, dtype: x.astype(dtype), _matmul_t),
    "cosine": _Metric(_unit_rows, _matmul_t),
    "l2": _Metric(_l2_prepare, _l2_tile),
    "hamming": _Metric(
        _pack_words, _hamming_tile, _hamming_rows, lambda q, c: 8 * 4 * (-(-q.shape[1] // 4))
    ),
    "int8_dot": _Metric(
        _int8_prepare, _int8_tile, _int8_rows, lambda q, c: q.shape[1] * _code_max(q) * _code_max(c)
    ),
    # multi-vector rows: (tokens [n, T, D], mask [n, T]); ColBERT late interaction
    "maxsim": _Metric(_maxsim_prepare, _maxsim_tile),
    "maxsim_mean": _Metric(_maxsim_prepare, functools.partial(_maxsim_tile, length_normalize=True)),
}


# ---------------------------------------------------------------------------------------------
# Layouts: which mesh axes split the rows
# ---------------------------------------------------------------------------------------------


def _row_layout(x: Any) -> tuple[Mesh, tuple[str, ...]] | None:
    """The mesh and axis names that split the rows of a concrete ``x``, or ``None``.

    ``None`` (replicated rows, a single shard, rows not divisible by the shard count, or a
    traced ``x`` whose sharding is unknown) selects the single-program path.
    """
    if not isinstance(x, jax.Array) or not is_concrete(x):
        return None
    sharding = getattr(x, "sharding", None)
    if not isinstance(sharding, NamedSharding) or not sharding.spec:
        return None
    first = sharding.spec[0]
    if first is None:
        return None
    axes = tuple(first) if isinstance(first, tuple) else (first,)
    shards = math.prod(sharding.mesh.shape[a] for a in axes)
    if shards == 1 or x.shape[0] % shards:
        return None
    return sharding.mesh, axes


def _detect_mesh(corpus: Any) -> Mesh | None:
    """The mesh of a concrete ``corpus`` whose rows are split along a ``data`` axis."""
    sharding = getattr(corpus, "sharding", None)
    if isinstance(corpus, jax.core.Tracer) or not isinstance(sharding, NamedSharding):
        return None
    spec = sharding.spec
    first = spec[0] if len(spec) else None
    names = first if isinstance(first, tuple) else (first,)
    if "data" in names and sharding.mesh.shape["data"] > 1:
        return sharding.mesh
    return None


def _shard_index(mesh: Mesh, axes: tuple[str, ...]) -> jax.Array:
    """Linear index of this shard along ``axes`` (major to minor), inside ``shard_map``."""
    index = jnp.zeros((), jnp.int32)
    for a in axes:
        index = index * mesh.shape[a] + jax.lax.axis_index(a)
    return index


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------


def _as_metric(metric: str | _Metric) -> _Metric:
    return metric if isinstance(metric, _Metric) else _REGISTRY[metric]


def _num_rows(x: Any) -> int:
    return jax.tree.leaves(x)[0].shape[0]


def _compute_dtype(q: Any, c: Any):
    """The float dtype both sides are scored in (at least float32)."""
    dtype = jnp.promote_types(jax.tree.leaves(q)[0].dtype, jax.tree.leaves(c)[0].dtype)
    return jnp.promote_types(dtype, jnp.float32)


def _score_dtype(q: Any, c: Any, metric: str | _Metric):
    return jnp.int32 if _as_metric(metric).rows is not None else _compute_dtype(q, c)


def _select_dtype(q: Any, c: Any, metric: str | _Metric):
    """The dtype scores are compared in: float32 for integer scores it holds exactly."""
    m = _as_metric(metric)
    if m.rows is not None and m.max_abs(q, c) < 2**24:
        return jnp.float32
    return _score_dtype(q, c, metric)


def _lowest(dtype) -> Any:
    """The padding score: below every real score (``-inf``, or the least int32)."""
    if jnp.issubdtype(dtype, jnp.integer):
        return jnp.iinfo(dtype).min
    return -jnp.inf


def _group_size(chunk: int, kk: int) -> int:
    """Rows per group of the pre-filter: 1 (plain ``top_k``) or a power of two dividing the
    chunk, near ``sqrt(chunk / kk)`` (it balances ``top_k`` over ``chunk / group`` group maxima
    against the merge of ``kk * group`` candidates), with at least ``4 * kk`` groups. At most
    32: XLA's CPU code for the fused tile-and-group-max loop is much slower beyond."""
    group = 1
    while (
        group < 32
        and chunk % (2 * group) == 0
        and chunk // (2 * group) >= 4 * kk
        and (2 * group) ** 2 * kk <= 2 * chunk
    ):
        group *= 2
    return group if group >= 8 else 1


def _chunk_candidates(
    s_t, kk: int, group: int, exact: Callable | None = None, to_select: Callable | None = None
):
    """Candidates ``(values, positions)`` ``[Qb, n]`` holding each query's top ``kk`` of a chunk.

    ``s_t`` is ``[C, Qb]``. With ``group > 1`` the chunk's rows are cut into contiguous groups
    of ``group`` rows; the ``kk`` groups with the largest maxima (ties: lower group first)
    contain the top ``kk`` rows, lower-index rows first among ties, because every group holding
    a needed row has a maximum at least that row's value and lower groups win ties. Those
    groups' rows are returned in increasing position, so a stable ``top_k`` over them breaks
    ties by the lower row. This is exact and reads the scores once with a cheap ``max``
    instead of running ``top_k`` over the whole chunk. ``exact(positions [Qb, n]) -> [Qb, n]``,
    when given, recomputes the candidates' scores (bit-equal to ``s_t``'s) instead of
    gathering them from ``s_t``, which then only feeds the group maxima. ``to_select``, a
    strictly increasing conversion to the dtype ``top_k`` compares in, is applied to the group
    maxima and the candidates only, so the tile is reduced in its own dtype.
    """
    conv = to_select or (lambda x: x)
    c, nq = s_t.shape
    if group == 1:
        v, i = jax.lax.top_k(conv(s_t).T, kk)
        return v, i
    s3 = s_t.reshape(c // group, group, nq)
    _, gid = jax.lax.top_k(conv(jnp.max(s3, axis=1)).T, kk)  # [Qb, kk]
    gid = jnp.sort(gid, axis=1)
    within = jnp.arange(group, dtype=jnp.int32)
    pos = (gid[:, :, None] * group + within[None, None, :]).reshape(nq, kk * group)
    pos = pos.astype(jnp.int32)
    if exact is not None:
        return conv(exact(pos)), pos
    cand = s3[gid[:, :, None], within[None, None, :], jnp.arange(nq)[:, None, None]]
    return conv(cand.reshape(nq, kk * group)), pos


def _local_search(
    q, c, n_valid, offset, *, k: int, chunk: int, metric: str | _Metric, q_index=None
):
    """Top-k of ``q`` against the rows of ``c`` ``[M, ...]`` with a running merge over chunks.

    ``q`` and ``c`` are raw rows (pytrees with rows first for multi-part metrics). Chunks are
    sliced in place (no padded or prepared copy of the corpus): chunk ``j`` covers rows
    ``[j * chunk, (j + 1) * chunk)``; the last one starts at ``M - chunk`` instead, and rows it
    shares with the previous chunk are masked. Rows at position ``>= n_valid`` are padding and
    masked too, and so is row ``offset + r == q_index[i]`` for query ``i`` when ``q_index``
    ([Qb] global query rows) is given. Returned indices are ``offset + row``; values are in
    :func:`_select_dtype` (larger is better).
    """
    m = _as_metric(metric)
    prepare_corpus = m.prepare_corpus or m.prepare
    dtype = _compute_dtype(q, c)
    sel = _select_dtype(q, c, m)
    low = _lowest(sel)
    score_low = _lowest(_score_dtype(q, c, m))
    to_select = None
    if _score_dtype(q, c, m) != sel:  # exact integer scores compared as float32

        def to_select(s):
            return jnp.where(s == score_low, low, s.astype(sel))

    qp = m.prepare(q, dtype)
    rows_total = _num_rows(c)
    n_chunks = -(-rows_total // chunk)
    nq = _num_rows(q)
    kk = min(k, chunk)
    group = _group_size(chunk, kk)

    def body(j, carry):
        vals, idx = carry
        begin = j * chunk
        start = jnp.minimum(begin, rows_total - chunk)
        cj = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, chunk, 0), c)
        cp = prepare_corpus(cj, dtype)
        rows = start + jnp.arange(chunk, dtype=jnp.int32)
        valid = (rows >= begin) & (rows < n_valid)

        def keep_mask(pos_rows, query_axis):
            # pos_rows: chunk positions; query_axis: where the queries run in the result
            ok = valid[pos_rows]
            if q_index is None:
                return ok
            qi = jnp.expand_dims(q_index, query_axis)
            return ok & (rows[pos_rows] + offset != qi)

        def finish(s, keep):
            if not jnp.issubdtype(s.dtype, jnp.integer):
                # -0.0 and 0.0 are equal for a brute-force sort but ordered by lax.top_k;
                # real scores are also kept above -inf, which marks padding.
                s = jnp.where(s == 0, jnp.zeros_like(s), jnp.maximum(s, jnp.finfo(s.dtype).min))
            return jnp.where(keep, s, score_low)

        all_rows = jnp.arange(chunk, dtype=jnp.int32)[:, None]
        s_t = finish(m.tile(qp, cp), keep_mask(all_rows, 0))
        exact = None
        if m.rows is not None and group > 1:

            def exact(pos):  # [Qb, n] positions -> their scores, recomputed from the rows
                c_rows = jax.tree.map(lambda a: jnp.take(a, pos, axis=0), cp)
                return finish(m.rows(qp, c_rows), keep_mask(pos, 1))

        v_new, i_new = _chunk_candidates(s_t, kk, group, exact, to_select)
        i_new = i_new + (start + offset).astype(jnp.int32)
        # Running list first: it holds lower indices, and top_k favours lower positions.
        v_all = jnp.concatenate([vals, v_new], axis=1)
        i_all = jnp.concatenate([idx, i_new], axis=1)
        v, pos = jax.lax.top_k(v_all, k)
        return v, jnp.take_along_axis(i_all, pos, axis=1)

    init = (
        jnp.full((nq, k), low, sel),
        jnp.full((nq, k), jnp.iinfo(jnp.int32).max, jnp.int32),
    )
    return jax.lax.fori_loop(0, n_chunks, body, init)


def _blocked_queries(fn, q, q_block: int, q_index=None):
    """Applies ``fn`` to query blocks of ``q_block`` rows (padding the last) and concatenates.

    ``q`` may be a pytree of row-major arrays; with ``q_index`` ([Q] global query rows) ``fn``
    is called as ``fn(q_block_rows, q_index=q_index_block)``.
    """
    nq = _num_rows(q)
    args = (q,) if q_index is None else (q, q_index)

    def call(args):
        return fn(args[0]) if q_index is None else fn(args[0], q_index=args[1])

    if nq <= q_block:
        return call(args)
    n_blocks = -(-nq // q_block)

    def blocks(a):
        a = jnp.pad(a, ((0, n_blocks * q_block - nq),) + ((0, 0),) * (a.ndim - 1))
        return a.reshape(n_blocks, q_block, *a.shape[1:])

    vals, idx = jax.lax.map(call, jax.tree.map(blocks, args))
    k = vals.shape[-1]
    return vals.reshape(-1, k)[:nq], idx.reshape(-1, k)[:nq]


def _topk(
    q: Any,
    c: Any,
    k: int,
    *,
    metric: str | _Metric,
    chunk: int,
    q_block: int,
    layout: tuple[Mesh, tuple[str, ...]] | None = None,
    shard: str = "corpus",
    exclude_self: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """The engine's entry point (traceable; call it under ``jax.jit``): exact top-k of every query.

    Args:
      q: queries, rows first (an array, or a pytree such as ``(tokens, mask)``).
      c: corpus rows of the same structure.
      k: neighbours per query, ``<= N`` (``<= N - 1`` with ``exclude_self``).
      metric: a key of ``_REGISTRY`` or a :class:`_Metric`.
      chunk: corpus rows scored at a time (clamped to the rows each program holds).
      q_block: queries scored at a time.
      layout: ``(mesh, axes)`` splitting the rows; ``None`` runs one program.
      shard: with a layout, ``"corpus"`` (each device searches its contiguous corpus shard
        for all queries; the results are replicated) or ``"queries"`` (each device searches
        for its own query rows against the whole corpus, gathered; the results are split like
        ``q``, whose rows must divide evenly between the shards, as ``_row_layout`` ensures).
      exclude_self: ``q`` and ``c`` are the same set: query ``i`` never lists row ``i``.

    Returns:
      ``(scores, indices)`` ``[Q, k]`` best first, ties to the lower corpus row; scores are
      larger-is-better (``-d²`` for ``l2``, ``-distance`` for ``hamming``), int32 for the
      integer metrics, else the float compute dtype; indices int32 global corpus rows.
    """
    out_dtype = _score_dtype(q, c, metric)
    nq = _num_rows(q)
    local = functools.partial(_local_search, k=k, metric=metric)
    if layout is None:
        n = _num_rows(c)
        q_index = jnp.arange(nq, dtype=jnp.int32) if exclude_self else None
        fn = functools.partial(local, c=c, n_valid=n, offset=0, chunk=min(chunk, n))
        vals, idx = _blocked_queries(fn, q, q_block, q_index)
        return vals.astype(out_dtype), idx
    mesh, axes = layout
    spec = P(axes)
    if shard == "queries":

        def per_shard(q_local, c_all):
            n = _num_rows(c_all)
            rows = _num_rows(q_local)
            q_index = None
            if exclude_self:
                first = _shard_index(mesh, axes) * rows
                q_index = first + jnp.arange(rows, dtype=jnp.int32)
            fn = functools.partial(local, c=c_all, n_valid=n, offset=0, chunk=min(chunk, n))
            return _blocked_queries(fn, q_local, q_block, q_index)

        vals, idx = jax.shard_map(
            per_shard,
            mesh=mesh,
            in_specs=(jax.tree.map(lambda _: spec, q), jax.tree.map(lambda _: P(), c)),
            out_specs=(spec, spec),
            axis_names=set(axes),
            check_vma=False,
        )(q, c)
        return vals.astype(out_dtype), idx

    n = _num_rows(c)
    n_dev = math.prod(mesh.shape[a] for a in axes)
    n_local = -(-n // n_dev)
    if n_dev * n_local != n:
        pad_rows = n_dev * n_local - n

        def pad(a):
            a = jnp.pad(a, ((0, pad_rows),) + ((0, 0),) * (a.ndim - 1))
            return jax.lax.with_sharding_constraint(a, NamedSharding(mesh, spec))

        c = jax.tree.map(pad, c)
    kk = min(k, n_local)

    def per_device(q_all, c_local):
        d = _shard_index(mesh, axes)
        offset = (d * n_local).astype(jnp.int32)
        n_valid = jnp.clip(n - d * n_local, 0, n_local)
        q_index = jnp.arange(nq, dtype=jnp.int32) if exclude_self else None
        fn = functools.partial(
            _local_search,
            c=c_local,
            n_valid=n_valid,
            offset=offset,
            k=kk,
            chunk=min(chunk, n_local),
            metric=metric,
        )
        vals, idx = _blocked_queries(fn, q_all, q_block, q_index)
        # [n_dev, Q, kk] in device order = global index order; merge keeps lower index first.
        vals = jax.lax.all_gather(vals, axes)
        idx = jax.lax.all_gather(idx, axes)
        vals = jnp.moveaxis(vals, 0, 1).reshape(nq, n_dev * kk)
        idx = jnp.moveaxis(idx, 0, 1).reshape(nq, n_dev * kk)
        v, pos = jax.lax.top_k(vals, k)
        return v, jnp.take_along_axis(idx, pos, axis=1)

    vals, idx = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(jax.tree.map(lambda _: P(), q), jax.tree.map(lambda _: spec, c)),
        out_specs=(P(), P()),
        axis_names=set(axes),
        check_vma=False,
    )(q, c)
    return vals.astype(out_dtype), idx


def _public_scores(vals: jax.Array, metric: str) -> jax.Array:
    """Engine scores (larger is better) as :func:`search` returns them."""
    if metric == "l2":
        return jnp.where(vals == 0, jnp.zeros_like(vals), -vals)
    if metric == "hamming":
        return -vals
    return vals


@functools.partial(jax.jit, static_argnames=("k", "chunk", "q_block", "metric", "layout"))
def _search_jit(queries, corpus, *, k, chunk, q_block, metric, layout):
    vals, idx = _topk(
        queries, corpus, k, metric=metric, chunk=chunk, q_block=q_block, layout=layout
    )
    return _public_scores(vals, metric), idx


def _search_layout(mesh: Mesh | None, corpus: Any) -> tuple[Mesh, tuple[str, ...]] | None:
    if mesh is None:
        mesh = _detect_mesh(corpus)
    if mesh is None or mesh.shape["data"] == 1:
        return None
    return mesh, ("data",)


def search(
    queries: ArrayLike,
    corpus: ArrayLike,
    k: int,
    *,
    metric: str = "cosine",
    chunk_size: int | None = None,
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
        shifted back to end at row N and its rows already scored are masked. ``None``: 4096,
        or 32768 for ``hamming`` (its distances are reduced to per-group minima as they are
        computed, so a chunk holds ``chunk_size / 32`` values per query, not ``chunk_size``).
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
    if chunk_size is None:
        chunk_size = _HAMMING_CHUNK if metric == "hamming" else _DEFAULT_CHUNK
    check_int(chunk_size, "chunk_size", minimum=1)
    check_int(query_chunk_size, "query_chunk_size", minimum=1)
    if mesh is not None and (not isinstance(mesh, Mesh) or "data" not in mesh.axis_names):
        raise ValueError(f"mesh must be a jax.sharding.Mesh with a 'data' axis; got {mesh!r}")
    if check_finite and metric not in _CODE_METRICS:
        _check_finite_rows(queries, "queries")
        _check_finite_rows(corpus, "corpus")
    k, chunk_size, query_chunk_size = int(k), int(chunk_size), int(query_chunk_size)
    return _search_jit(
        jnp.asarray(queries),
        jnp.asarray(corpus),
        k=k,
        chunk=chunk_size,
        q_block=query_chunk_size,
        metric=metric,
        layout=_search_layout(mesh, corpus),
    )


@jax.jit
def _nonfinite_kept(tokens: jax.Array, mask: jax.Array) -> jax.Array:
    bad = ~jnp.all(jnp.isfinite(tokens), axis=2) & (mask != 0)
    return jnp.any(bad, axis=1)


def _check_finite_tokens(tokens: Any, mask: Any, name: str) -> None:
    """Raises listing the items of concrete ``tokens`` [n, T, D] with NaN/inf in a kept token."""
    if isinstance(tokens, jax.core.Tracer) or isinstance(mask, jax.core.Tracer):
        return
    bad = np.flatnonzero(np.asarray(_nonfinite_kept(jnp.asarray(tokens), jnp.asarray(mask))))
    if bad.size:
        shown = ", ".join(str(int(i)) for i in bad[:10])
        more = f" and {bad.size - 10} more" if bad.size > 10 else ""
        raise ValueError(
            f"{name} {shape_str(tokens)} has NaN or inf values in a kept token of {bad.size} "
            f"item(s): [{shown}]{more}"
        )


# Similarity elements of one scored [query_block, chunk, Tq, Td] block when chunk_size is left
# to the default (as maxsim's).
_MAXSIM_BLOCK_ELEMENTS = 1 << 25


def maxsim_search(
    q_tokens: ArrayLike,
    q_mask: ArrayLike | None,
    d_tokens: ArrayLike,
    d_mask: ArrayLike | None,
    k: int,
    *,
    length_normalize: bool = False,
    chunk_size: int | None = None,
    query_chunk_size: int = 64,
    mesh: Mesh | None = None,
    check_finite: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Exact top-k late-interaction (ColBERT MaxSim) search over multi-vector documents.

    Scores every query against every document with :func:`~jaxemb.retrieval.maxsim` (the same
    masks, weights and values) on the engine of :func:`search`: documents in chunks, queries in
    blocks, a running top-k, and on a mesh each device searches its contiguous document shard.
    The result equals a stable brute-force sort of ``maxsim(q_tokens, q_mask, d_tokens,
    d_mask)``: scores descending, ties broken by the lower document index.

    Args:
      q_tokens: [Q, Tq, D] query token embeddings (float), one query [Tq, D], or a list of
        [Tq_i, D] arrays (padded, the mask from their lengths).
      q_mask: [Q, Tq] (or [Tq]); nonzero keeps a query token and the per-token maxima are
        multiplied by it. ``None``: all-zero token rows are padding.
      d_tokens: [N, Td, D] document token embeddings with the same D, [Td, D], or a list.
      d_mask: [N, Td] (or [Td]); nonzero keeps a document token. ``None`` as for ``q_mask``.
      k: number of documents per query, ``1 <= k <= N``.
      length_normalize: divide each score by its query's number of kept tokens (MeanMaxSim).
      chunk_size: documents scored at a time; default: as many as keep the
        ``[query_chunk_size, chunk, Tq, Td]`` similarity block under 2**25 elements.
      query_chunk_size: queries scored at a time.
      mesh: a mesh with a ``data`` axis to split the documents over; ``None`` uses the mesh of
        ``d_tokens`` already sharded along ``data``, else one device.
      check_finite: raise if a concrete kept token holds NaN or inf, naming the items.

    Returns:
      ``(scores, indices)``, both [Q, k]: float32 MaxSim scores in descending order and int32
      document rows.

    Raises:
      ValueError: on wrong ranks or dtypes, masks that do not match their tokens, different
        embedding widths, a query or document with no kept token, ``k`` outside ``[1, N]``,
        bad chunk sizes or a mesh without a ``data`` axis, non-finite kept tokens.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.retrieval import maxsim_search
      >>> q = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])  # one query, two tokens
      >>> d = jnp.array([[[1.0, 0.0], [0.0, 0.0]], [[0.6, 0.8], [0.0, 1.0]],
      ...                [[0.0, 1.0], [0.0, 0.0]]])  # three documents of two tokens
      >>> d_mask = jnp.array([[1, 0], [1, 1], [1, 0]])  # MaxSim: 1 + 0, 0.6 + 1, 0 + 1
      >>> scores, idx = maxsim_search(q, None, d, d_mask, 2)
      >>> idx.tolist(), [round(float(s), 3) for s in scores[0]]
      ([[1, 0]], [1.6, 1.0])

    References:
      Khattab & Zaharia, "ColBERT: Efficient and Effective Passage Search via Contextualized
      Late Interaction over BERT", SIGIR 2020 (exhaustive MaxSim re-ranking). The scores are
      sentence-transformers 6.3 ``util.maxsim`` 's (see :func:`~jaxemb.retrieval.maxsim`),
      ranked as ``torch.topk`` over them would, ties to the lower index.
    """
    from jaxemb.retrieval._maxsim import _prepare  # noqa: PLC0415 (validation as maxsim's)

    q, qm, d, dm = _prepare(q_tokens, q_mask, d_tokens, d_mask, length_normalize)
    n = d.shape[0]
    check_int(k, "k", minimum=1)
    if k > n:
        raise ValueError(
            f"k must be <= the number of documents {n} (d_tokens {shape_str(d)}); got {k}"
        )
    check_int(query_chunk_size, "query_chunk_size", minimum=1)
    q_block = min(int(query_chunk_size), q.shape[0])
    if chunk_size is None:
        chunk = max(1, _MAXSIM_BLOCK_ELEMENTS // (q_block * q.shape[1] * d.shape[1]))
    else:
        check_int(chunk_size, "chunk_size", minimum=1)
        chunk = int(chunk_size)
    if mesh is not None and (not isinstance(mesh, Mesh) or "data" not in mesh.axis_names):
        raise ValueError(f"mesh must be a jax.sharding.Mesh with a 'data' axis; got {mesh!r}")
    if check_finite:
        _check_finite_tokens(q, qm, "q_tokens")
        _check_finite_tokens(d, dm, "d_tokens")
    return _search_jit(
        (jnp.asarray(q), jnp.asarray(qm)),
        (jnp.asarray(d), jnp.asarray(dm)),
        k=int(k),
        chunk=chunk,
        q_block=q_block,
        metric="maxsim_mean" if length_normalize else "maxsim",
        layout=_search_layout(mesh, d),
    )
