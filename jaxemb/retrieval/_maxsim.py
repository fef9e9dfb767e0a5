"""Late-interaction (ColBERT) scoring: MaxSim between multi-vector queries and documents.

``MaxSim(q, d) = Σ_i w_i · max_{j: d_mask_j} ⟨q_i, d_j⟩`` where ``w`` is the query mask (1 for a
real token, 0 for padding; a float mask weights the tokens, as sentence-transformers multiplies
by it) and the maximum runs over the document tokens its mask keeps. Scores are raw inner
products: nothing is normalised here (ColBERT heads L2-normalise each token beforehand, see
:class:`~jaxemb.retrieval.TokenEmbeddingHead`).

:func:`_maxsim_scores` is the jit-able core ``[Q, N]`` (the scoring kernel of the one search
engine's MaxSim metric and of :func:`~jaxemb.losses.multi_vector_info_nce`); the public
functions validate in Python first, then score the documents in chunks of ``chunk_size`` so the
``[Q, chunk, Tq, Td]`` similarity block stays bounded.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxemb._validate import check_array, check_int, shape_str

# Similarity elements of one scored [Q, chunk, Tq, Td] block when chunk_size is left to the
# default: on CPU a block that stays in cache (4 MiB) scores ~2.5x faster per pair than one
# of 128 MiB (measured at Q=16, Tq=32, Td=180, D=128); accelerators prefer large blocks.
_BLOCK_ELEMENTS_CPU = 1 << 20
# maxsim_pairwise's batched [chunk, Tq, Td] blocks: ~3x faster per pair at 1 MiB than at 11 MiB.
_BLOCK_ELEMENTS_CPU_PAIRS = 1 << 18
_BLOCK_ELEMENTS = 1 << 25


def _fill(dtype) -> Any:
    # Masked document tokens take the dtype's least finite value (as sentence-transformers'
    # masked_fill with finfo.min): they can never win the max over a real, even negative, score.
    return jnp.finfo(dtype).min


def _compute_dtype(x: jax.Array):
    return jnp.promote_types(x.dtype, jnp.float32)


def _finish(s, q_weight, q_keep, length_normalize: bool):
    """Sums the per-query-token maxima ``s`` ``[..., Tq]`` weighted by the query mask."""
    dt = jnp.promote_types(s.dtype, jnp.float32)
    w = q_weight.astype(dt)
    # where (not a product): a NaN/inf in a padded query position must not reach the sum.
    total = jnp.sum(jnp.where(q_keep, s.astype(dt) * w, 0.0), axis=-1)
    if length_normalize:
        total = total / jnp.maximum(jnp.sum(q_keep, axis=-1), 1).astype(dt)
    return total


def _maxsim_scores(q, q_mask, d, d_mask, *, length_normalize: bool = False) -> jax.Array:
    """MaxSim of every query against every document, ``[Q, N]`` float32 (jit-able core).

    No validation and no chunking: callers (the search engine, the losses, :func:`maxsim`)
    validate and bound the ``[Q, N, Tq, Td]`` block themselves.

    Args:
      q: ``[Q, Tq, D]`` query token embeddings (any float dtype; computed in at least float32).
      q_mask: ``[Q, Tq]`` bool, int or float: nonzero keeps a query token, a float value weights
        it (sentence-transformers multiplies the per-token maxima by the mask).
      d: ``[N, Td, D]`` document token embeddings.
      d_mask: ``[N, Td]``: nonzero keeps a document token.
      length_normalize: divide by the number of kept query tokens (MeanMaxSim).

    Returns:
      ``[Q, N]`` float32 (float64 for float64 inputs under x64); ``-inf`` for a document with
      no kept token, NaN for a query with none.
    """
    dt = jnp.promote_types(_compute_dtype(q), _compute_dtype(d))
    q = jnp.asarray(q).astype(dt)
    d = jnp.asarray(d).astype(dt)
    q_keep = jnp.asarray(q_mask) != 0
    d_keep = jnp.asarray(d_mask) != 0
    # One matmul [Q·Tq, D] x [D, N·Td], then the masked max over each document's tokens.
    s = jnp.einsum("qsh,nth->qnst", q, d, precision=jax.lax.Precision.HIGHEST)
    s = jnp.where(d_keep[None, :, None, :], s, _fill(dt))
    s = jnp.max(s, axis=-1)  # [Q, N, Tq]
    total = _finish(s, jnp.asarray(q_mask)[:, None, :], q_keep[:, None, :], length_normalize)
    total = jnp.where(jnp.any(d_keep, axis=-1)[None, :], total, -jnp.inf)
    return jnp.where(jnp.any(q_keep, axis=-1)[:, None], total, jnp.nan)


def _maxsim_pairwise_scores(q, q_mask, d, d_mask, *, length_normalize: bool = False):
    """MaxSim of ``q[i]`` against ``d[i]``, ``[B]`` float32 (jit-able core, as above)."""
    dt = jnp.promote_types(_compute_dtype(q), _compute_dtype(d))
    q = jnp.asarray(q).astype(dt)
    d = jnp.asarray(d).astype(dt)
    q_keep = jnp.asarray(q_mask) != 0
    d_keep = jnp.asarray(d_mask) != 0
    s = jnp.einsum("bsh,bth->bst", q, d, precision=jax.lax.Precision.HIGHEST)
    s = jnp.where(d_keep[:, None, :], s, _fill(dt))
    s = jnp.max(s, axis=-1)  # [B, Tq]
    total = _finish(s, jnp.asarray(q_mask), q_keep, length_normalize)
    total = jnp.where(jnp.any(d_keep, axis=-1), total, -jnp.inf)
    return jnp.where(jnp.any(q_keep, axis=-1), total, jnp.nan)


@functools.partial(jax.jit, static_argnames=("chunk", "length_normalize"))
def _maxsim_chunked(q, q_mask, d, d_mask, *, chunk: int, length_normalize: bool):
    n = d.shape[0]
    score = functools.partial(_maxsim_scores, length_normalize=length_normalize)
    if chunk >= n:
        return score(q, q_mask, d, d_mask)
    # Documents are sliced in place (no padded copy of the corpus): the last chunk ends at row
    # n, re-scoring a few rows of the previous one to the same values.
    out = jax.eval_shape(score, q, q_mask, d[:1], d_mask[:1])
    out = jnp.zeros((q.shape[0], n), out.dtype)

    def body(j, out):
        start = jnp.minimum(j * chunk, n - chunk)
        d_j = jax.lax.dynamic_slice_in_dim(d, start, chunk, 0)
        m_j = jax.lax.dynamic_slice_in_dim(d_mask, start, chunk, 0)
        return jax.lax.dynamic_update_slice_in_dim(out, score(q, q_mask, d_j, m_j), start, 1)

    return jax.lax.fori_loop(0, -(-n // chunk), body, out)


@functools.partial(jax.jit, static_argnames=("chunk", "length_normalize"))
def _maxsim_pairwise_chunked(q, q_mask, d, d_mask, *, chunk: int, length_normalize: bool):
    n = q.shape[0]
    score = functools.partial(_maxsim_pairwise_scores, length_normalize=length_normalize)
    if chunk >= n:
        return score(q, q_mask, d, d_mask)
    out = jax.eval_shape(score, q[:1], q_mask[:1], d[:1], d_mask[:1])
    out = jnp.zeros((n,), out.dtype)

    def body(j, out):
        start = jnp.minimum(j * chunk, n - chunk)  # the last chunk ends at row n

        def rows(x):
            return jax.lax.dynamic_slice_in_dim(x, start, chunk, 0)

        scores = score(rows(q), rows(q_mask), rows(d), rows(d_mask))
        return jax.lax.dynamic_update_slice_in_dim(out, scores, start, 0)

    return jax.lax.fori_loop(0, -(-n // chunk), body, out)


def _default_chunk(x: Any, per_item: int, cpu_budget: int) -> int:
    """Items per scored block: ``cpu_budget`` similarities on CPU, 2**25 on accelerators."""
    concrete = isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)
    devices = x.devices() if concrete else None
    platform = next(iter(devices)).platform if devices else jax.default_backend()
    budget = cpu_budget if platform == "cpu" else _BLOCK_ELEMENTS
    return max(1, budget // max(1, per_item))


@jax.jit
def _nonzero_rows(x: jax.Array) -> jax.Array:
    return jnp.any(x != 0, axis=-1)


def _pad_ragged(items: Sequence[Any], name: str) -> tuple[np.ndarray, np.ndarray]:
    """A list of ``[T_i, D]`` arrays as zero-padded ``[n, max T_i, D]`` and its length mask."""
    arrays = [check_array(x, f"{name}[{i}]", ndim=2, allow_empty=True) for i, x in enumerate(items)]
    if not arrays:
        raise ValueError(f"{name} must not be empty; got an empty list")
    widths = {int(a.shape[1]) for a in arrays}
    if len(widths) != 1:
        raise ValueError(
            f"{name} must hold [tokens, dim] arrays of one width; got widths {sorted(widths)} "
            f"({', '.join(shape_str(a) for a in arrays[:5])})"
        )
    t = max(int(a.shape[0]) for a in arrays)
    if t == 0:
        raise ValueError(f"{name} must hold at least one token; every item has 0 tokens")
    dtype = np.result_type(*[np.dtype(a.dtype) for a in arrays])
    out = np.zeros((len(arrays), t, widths.pop()), dtype)
    mask = np.zeros((len(arrays), t), bool)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = np.asarray(a)
        mask[i, : a.shape[0]] = True
    return out, mask


def _side(tokens: Any, mask: Any, name: str, mask_name: str) -> tuple[Any, Any, bool]:
    """Validates one side; returns ``(tokens [n, T, D], mask [n, T], from_zero_rows)``.

    A ``[T, D]`` array is one item (a batch of one); a list of ``[T_i, D]`` arrays is padded.
    Without a mask, all-zero token rows are padding (sentence-transformers' rule for padded
    tensors) and a list's lengths give the mask.
    """
    if isinstance(tokens, (list, tuple)) and tokens and hasattr(tokens[0], "shape"):
        if mask is not None:
            raise ValueError(
                f"{mask_name} must be None when {name} is a list of [tokens, dim] arrays (the "
                f"lengths give the mask); pad {name} to [batch, tokens, dim] to pass a mask"
            )
        tokens, mask = _pad_ragged(tokens, name)
    tokens = check_array(tokens, name, ndim=(2, 3), kind="float")
    if tokens.ndim == 2:
        tokens = tokens[None]
        if mask is not None and np.ndim(mask) == 1:
            mask = mask[None]
    derived = mask is None
    if derived:
        mask = _nonzero_rows(jnp.asarray(tokens))
    mask = check_array(mask, mask_name, ndim=2, kind="number")
    if tuple(mask.shape) != tuple(tokens.shape[:2]):
        raise ValueError(
            f"{mask_name} must be [batch, tokens] = [{tokens.shape[0]}, {tokens.shape[1]}] to "
            f"match {name} {shape_str(tokens)}; got {shape_str(mask)}"
        )
    return tokens, mask, derived


def _check_nonempty(mask: Any, name: str, derived: bool, what: str) -> None:
    """Raises if a concrete mask keeps no token of some item (rows listed)."""
    if isinstance(mask, jax.core.Tracer):
        return
    m = np.asarray(mask)
    bad = np.flatnonzero(~np.any(m != 0, axis=1))
    if bad.size:
        shown = ", ".join(str(int(i)) for i in bad[:10])
        more = f" and {bad.size - 10} more" if bad.size > 10 else ""
        how = "has only all-zero token rows (padding without a mask)" if derived else "masks"
        raise ValueError(
            f"{name} {how} every token of {bad.size} {what}(s): [{shown}]{more}; each {what} "
            "needs at least one kept token"
        )


def _prepare(q_tokens, q_mask, d_tokens, d_mask, length_normalize):
    q, qm, q_derived = _side(q_tokens, q_mask, "q_tokens", "q_mask")
    d, dm, d_derived = _side(d_tokens, d_mask, "d_tokens", "d_mask")
    if q.shape[2] != d.shape[2]:
        raise ValueError(
            f"d_tokens {shape_str(d)} must have the embedding width of q_tokens {shape_str(q)} "
            f"(axis 2: {q.shape[2]} vs {d.shape[2]})"
        )
    if not isinstance(length_normalize, bool):
        raise ValueError(f"length_normalize must be a bool; got {length_normalize!r}")
    _check_nonempty(qm, "q_tokens" if q_derived else "q_mask", q_derived, "query")
    _check_nonempty(dm, "d_tokens" if d_derived else "d_mask", d_derived, "document")
    return q, qm, d, dm


def maxsim(
    q_tokens: ArrayLike | Sequence[ArrayLike],
    q_mask: ArrayLike | None,
    d_tokens: ArrayLike | Sequence[ArrayLike],
    d_mask: ArrayLike | None,
    *,
    length_normalize: bool = False,
    chunk_size: int | None = None,
) -> jax.Array:
    """Late-interaction (ColBERT MaxSim) scores of every query against every document.

    ``scores[i, j] = Σ_s q_mask[i, s] · max_{t: d_mask[j, t] ≠ 0} ⟨q[i, s], d[j, t]⟩``: each
    query token takes its best match among the document's kept tokens, and the matches are
    summed over the query's tokens. Masked document tokens never win the maximum (they are
    excluded, not zeroed, so a negative best match stays negative); masked query tokens add 0.
    No normalisation is applied: pass L2-normalised tokens for ColBERT's cosine MaxSim.

    Args:
      q_tokens: [Q, Tq, D] query token embeddings (float), a single query [Tq, D], or a list of
        [Tq_i, D] arrays (zero-padded here, the mask from their lengths).
      q_mask: [Q, Tq] (or [Tq] with a single query) bool/int/float; nonzero keeps a token and
        the per-token maxima are multiplied by it (a float mask weights tokens). ``None``:
        all-zero token rows are padding, as sentence-transformers does for padded tensors.
      d_tokens: [N, Td, D] document token embeddings, the same D; or [Td, D]; or a list.
      d_mask: [N, Td] (or [Td]); nonzero keeps a document token. ``None`` as for ``q_mask``.
      length_normalize: divide each score by its query's number of kept tokens (MeanMaxSim).
      chunk_size: documents scored at a time (bounds the [Q, chunk, Tq, Td] similarity block);
        default: as many as keep it under 2**20 elements on CPU (it stays in cache), 2**25 on
        accelerators.

    Returns:
      [Q, N] float32. float16/bfloat16 inputs are computed in float32 (sentence-transformers
      rounds each token similarity to the input dtype first, ~1e-3 relative in bfloat16);
      float64 inputs under x64 are computed in float64.
      Under a caller's ``jax.jit`` (where masks cannot be checked) a document with no kept
      token scores ``-inf`` and a query with none scores NaN. NaN in a kept token gives NaN.

    Raises:
      ValueError: on wrong ranks or dtypes, masks that do not match their tokens, different
        embedding widths, a query or document with no kept token (listed by index), empty
        batches, a bad ``chunk_size``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.retrieval import maxsim
      >>> q = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])  # one query, two tokens
      >>> d = jnp.array([[[1.0, 0.0], [0.6, 0.8]], [[-1.0, 0.0], [0.0, 0.0]]])
      >>> d_mask = jnp.array([[1, 1], [1, 0]])  # document 1 has one real token
      >>> scores = maxsim(q, None, d, d_mask)  # [Q, N] = [1, 2]: [1 + 0.8, -1 + 0]
      >>> scores.shape, [round(float(s), 3) for s in scores[0]]
      ((1, 2), [1.8, -1.0])

    References:
      Khattab & Zaharia, "ColBERT: Efficient and Effective Passage Search via Contextualized
      Late Interaction over BERT", SIGIR 2020. Reference implementation:
      sentence-transformers 6.3 ``util.maxsim(a, b, a_mask, b_mask, length_normalize=False)``,
      whose values, mask semantics (document mask excludes tokens from the max via the dtype
      minimum, query mask multiplies the maxima, ``None`` masks from all-zero rows), float32
      output and MeanMaxSim option this matches. Differences: the argument order here is
      ``(q_tokens, q_mask, d_tokens, d_mask)``; empty batches and all-masked queries or
      documents raise (sentence-transformers returns zeros, ``0`` and the sentinel ``-1e9``).
    """
    q, qm, d, dm = _prepare(q_tokens, q_mask, d_tokens, d_mask, length_normalize)
    n, td = d.shape[0], d.shape[1]
    if chunk_size is None:
        chunk = _default_chunk(d, q.shape[0] * q.shape[1] * td, _BLOCK_ELEMENTS_CPU)
    else:
        check_int(chunk_size, "chunk_size", minimum=1)
        chunk = int(chunk_size)
    return _maxsim_chunked(
        jnp.asarray(q),
        jnp.asarray(qm),
        jnp.asarray(d),
        jnp.asarray(dm),
        chunk=min(chunk, n),
        length_normalize=length_normalize,
    )


def maxsim_pairwise(
    q_tokens: ArrayLike | Sequence[ArrayLike],
    q_mask: ArrayLike | None,
    d_tokens: ArrayLike | Sequence[ArrayLike],
    d_mask: ArrayLike | None,
    *,
    length_normalize: bool = False,
    chunk_size: int | None = None,
) -> jax.Array:
    """MaxSim of each query with its own document: ``scores[i] = maxsim(q[i], d[i])``.

    The pairwise form of :func:`maxsim` (the same masking and weighting), for scoring aligned
    (query, document) pairs, e.g. a positive and its hard negatives, without the [B, B] block.

    Args:
      q_tokens: [B, Tq, D] query token embeddings (or one [Tq, D] query, or a list).
      q_mask: [B, Tq]; nonzero keeps a token, a float value weights it. ``None``: all-zero
        token rows are padding.
      d_tokens: [B, Td, D] document token embeddings: the same B and D (Td may differ).
      d_mask: [B, Td]; nonzero keeps a token. ``None`` as above.
      length_normalize: divide by the number of kept query tokens (MeanMaxSim).
      chunk_size: pairs scored at a time (bounds the [chunk, Tq, Td] similarity block);
        default: as many as keep it under 2**18 elements on CPU, 2**25 on accelerators.

    Returns:
      [B] float32 (under a caller's ``jax.jit``: ``-inf`` for an empty document, NaN for an
      empty query).

    Raises:
      ValueError: as :func:`maxsim` (``chunk_size`` too), and when queries and documents
        differ in number.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.retrieval import maxsim_pairwise
      >>> q = jnp.array([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]])
      >>> d = jnp.array([[[0.6, 0.8]], [[-1.0, 0.0]]])
      >>> # no masks: all-zero rows are padding (query 1 has one token)
      >>> [round(float(s), 3) for s in maxsim_pairwise(q, None, d, None)]
      [1.4, -1.0]

    References:
      Khattab & Zaharia, ColBERT, SIGIR 2020. Reference implementation: sentence-transformers
      6.3 ``util.maxsim_pairwise(a, b, a_mask, b_mask)`` (values, masks and [B] float32 output
      as there; argument order and the refusals as in :func:`maxsim`).
    """
    q, qm, d, dm = _prepare(q_tokens, q_mask, d_tokens, d_mask, length_normalize)
    if q.shape[0] != d.shape[0]:
        raise ValueError(
            f"d_tokens {shape_str(d)} must hold one document per query of q_tokens "
            f"{shape_str(q)} (axis 0: {q.shape[0]} vs {d.shape[0]})"
        )
    if chunk_size is None:
        chunk = _default_chunk(d, q.shape[1] * d.shape[1], _BLOCK_ELEMENTS_CPU_PAIRS)
    else:
        check_int(chunk_size, "chunk_size", minimum=1)
        chunk = int(chunk_size)
    return _maxsim_pairwise_chunked(
        jnp.asarray(q),
        jnp.asarray(qm),
        jnp.asarray(d),
        jnp.asarray(dm),
        chunk=min(chunk, q.shape[0]),
        length_normalize=length_normalize,
    )
