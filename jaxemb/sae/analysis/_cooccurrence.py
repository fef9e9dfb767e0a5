"""Co-firing counts of latent pairs (streamed) and their normalised association strengths."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxemb import _validate as v
from jaxemb.sae._base import SparseCode, check_code


def _is_single_code(x: Any) -> bool:
    return isinstance(x, SparseCode) or hasattr(x, "shape")


def cooccurrence(codes_or_batches: Any, d_sae: int) -> jax.Array:
    """Counts how often every pair of latents fires on the same row, streaming over batches.

    A latent fires on a row when its activation there is non-zero (as in
    :func:`~jaxemb.sae.metrics.firing_frequency`). ``counts[i, j]`` is the number of rows on
    which latents ``i`` and ``j`` both fire, so the diagonal holds each latent's firing count.
    Sparse codes are counted by a jitted scatter-add of the ``k²`` active pairs of each row
    (``O(N·k²)``, whatever ``d_sae``; an index repeated within a row counts once); dense codes
    by the matmul ``Bᵀ B`` of their binary activation matrix.

    Args:
      codes_or_batches: one code — a :class:`~jaxemb.sae.SparseCode` (``[N, k]``) or dense
        ``[N, d_sae]`` activations — or an iterable of such codes (e.g. ``model.encode`` of
        each batch of a dataset).
      d_sae: number of latents.

    Returns:
      ``[d_sae, d_sae]`` int32 symmetric matrix of co-firing counts.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import SparseCode, analysis
      >>> code = SparseCode(jnp.array([[1.0, 2.0], [3.0, 0.0]]), jnp.array([[0, 2], [2, 1]]))
      >>> analysis.cooccurrence(code, 3).tolist()   # row 2's latent 1 has value 0: not firing
      [[1, 0, 1], [0, 0, 0], [1, 0, 2]]
      >>> dense = jnp.array([[1.0, 0.0, 1.0], [0.0, 0.5, 0.5]])
      >>> analysis.cooccurrence([dense, dense], 3).tolist()
      [[2, 0, 2], [0, 2, 2], [2, 2, 4]]

    References:
      O'Neill et al., "Disentangling Dense Embeddings with Sparse Autoencoders" (2024),
      Sec. 4 (co-occurrence of SAE features over a corpus).
    """
    v.check_int(d_sae, "d_sae", minimum=1)
    batches = [codes_or_batches] if _is_single_code(codes_or_batches) else codes_or_batches
    try:
        batches = iter(batches)
    except TypeError:
        raise ValueError(
            "codes_or_batches must be a SparseCode, a [N, d_sae] array or an iterable of them; "
            f"got {type(codes_or_batches).__name__}"
        ) from None
    counts = jnp.zeros((d_sae, d_sae), jnp.int32)
    for i, code in enumerate(batches):
        name = f"codes_or_batches[{i}]"
        if isinstance(code, SparseCode):
            check_code(code, name, d_sae=d_sae)
            if code.values.shape[0] == 0:
                continue
            counts = _cooc_sparse(counts, jnp.asarray(code.values), jnp.asarray(code.indices))
        else:
            code = v.check_array(code, name, ndim=2, kind="number", allow_empty=True)
            if code.shape[1] != d_sae:
                raise ValueError(f"{name} must be [N, d_sae={d_sae}]; got {v.shape_str(code)}")
            if code.shape[0] == 0:
                continue
            counts = _cooc_dense(counts, jnp.asarray(code))
    return counts


@functools.partial(jax.jit, donate_argnums=(0,))
def _cooc_sparse(counts, values, indices):
    k = indices.shape[1]
    active = values != 0
    same = (indices[:, :, None] == indices[:, None, :]) & active[:, None, :]
    earlier = jnp.tril(jnp.ones((k, k), jnp.bool_), -1)  # [a, b]: b < a
    first = active & ~jnp.any(same & earlier[None, :, :], axis=2)  # first active occurrence
    w = (first[:, :, None] & first[:, None, :]).astype(jnp.int32)  # [N, k, k]
    rows = jnp.broadcast_to(indices[:, :, None], w.shape)
    cols = jnp.broadcast_to(indices[:, None, :], w.shape)
    return counts.at[rows.reshape(-1), cols.reshape(-1)].add(w.reshape(-1))


@functools.partial(jax.jit, donate_argnums=(0,))
def _cooc_dense(counts, acts):
    b = (acts != 0).astype(jnp.float32)
    # Exact in float32 while a batch has fewer than 2**24 rows.
    pair = jnp.matmul(b.T, b, precision=jax.lax.Precision.HIGHEST)
    return counts + jnp.round(pair).astype(jnp.int32)


_NORMALIZATIONS = ("conditional", "jaccard", "cosine")


def normalized_cooccurrence(counts: Any, *, method: str = "conditional") -> jax.Array:
    """Turns co-firing counts into association strengths in ``[0, 1]``.

    With ``f_i = counts[i, i]`` (firing counts) and ``c_ij = counts[i, j]``:

    * ``"conditional"`` (default, O'Neill et al.): ``c_ij / f_i``, the fraction of the rows
      where ``i`` fires on which ``j`` fires too, ``P(j | i)``. Not symmetric: a rare, specific
      latent ``j`` that always fires with a general latent ``i`` has ``P(i | j) = 1`` while
      ``P(j | i)`` is small — the asymmetry that orients feature families.
    * ``"jaccard"``: ``c_ij / (f_i + f_j − c_ij)``.
    * ``"cosine"``: ``c_ij / sqrt(f_i f_j)`` (Ochiai coefficient).

    Entries whose denominator is zero (a latent that never fired) are 0. The diagonal is 1 for
    every latent that fired.

    Args:
      counts: ``[d_sae, d_sae]`` counts from :func:`cooccurrence`.
      method: ``"conditional"``, ``"jaccard"`` or ``"cosine"``.

    Returns:
      ``[d_sae, d_sae]`` float32.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import analysis
      >>> counts = jnp.array([[4, 2], [2, 2]])
      >>> analysis.normalized_cooccurrence(counts).tolist()
      [[1.0, 0.5], [1.0, 1.0]]
      >>> analysis.normalized_cooccurrence(counts, method="jaccard").tolist()
      [[1.0, 0.5], [0.5, 1.0]]

    References:
      O'Neill et al., "Disentangling Dense Embeddings with Sparse Autoencoders" (2024),
      Sec. 4 (co-occurrence normalised by each feature's activation count).
    """
    counts = v.check_array(counts, "counts", ndim=2, kind="number")
    if counts.shape[0] != counts.shape[1]:
        raise ValueError(
            f"counts must be a square [d_sae, d_sae] matrix; got {v.shape_str(counts)}"
        )
    v.check_choice(method, "method", _NORMALIZATIONS)
    return _normalize(jnp.asarray(counts), method)


@functools.partial(jax.jit, static_argnames=("method",))
def _normalize(counts, method):
    c = counts.astype(jnp.float32)
    f = jnp.diagonal(c)
    if method == "conditional":
        den = jnp.broadcast_to(f[:, None], c.shape)
    elif method == "jaccard":
        den = f[:, None] + f[None, :] - c
    else:
        den = jnp.sqrt(f[:, None] * f[None, :])
    return jnp.where(den > 0, c / jnp.where(den > 0, den, 1.0), 0.0)
