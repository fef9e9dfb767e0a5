"""InfoNCE computed in row blocks: never materialises the [batch, batch] logits."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.losses._common import as_float, l2_normalize
from jaxemb.losses._info_nce import check_info_nce_inputs


def blocked_info_nce(
    anchors: ArrayLike,
    positives: ArrayLike,
    negatives: ArrayLike | None = None,
    *,
    temperature: float = 0.05,
    similarity: str = "cosine",
    symmetric: bool = False,
    block_size: int = 128,
) -> jax.Array:
    """InfoNCE (default ``info_nce`` options) evaluated ``block_size`` anchors at a time.

    Equals :func:`jaxemb.losses.info_nce` with ``directions=("query_to_doc",)``,
    ``partition_mode="joint"``, no hardness weighting, and ``symmetric`` either way — value and
    gradients — but holds at most ``[block_size, batch·(1+H)]`` logits at once. The row
    log-sum-exps are a ``jax.custom_vjp``: the forward pass scans over row blocks keeping only
    the ``[batch]`` log-sum-exps; the backward pass recomputes each block's softmax and returns
    its anchor gradient directly while accumulating the candidates' gradient in the scan carry.
    The peak memory therefore grows as ``block_size × batch`` instead of ``batch²``, which is
    what lets :func:`jaxemb.parallel.grad_cache` scale the batch at fixed memory. A batch that
    is not a multiple of ``block_size`` is padded internally (padded rows are masked out).

    Args:
      anchors: queries ``q``, ``[batch, dim]`` float.
      positives: documents ``p``, ``[batch, dim]``; row ``i`` is the positive of ``anchors[i]``.
      negatives: optional hard negatives ``[batch, num_negatives, dim]`` (a candidate for every
        anchor, as in ``info_nce``).
      temperature: ``τ > 0``.
      similarity: ``"cosine"`` or ``"dot"``.
      symmetric: the CLIP/ALIGN loss ``½(CE(rows) + CE(columns))`` as in ``info_nce`` (the
        column direction scores each positive against all anchors, also in blocks).
      block_size: anchors per block (≥ 1); a block larger than the batch is one block.

    Returns:
      A float32 scalar, the mean over anchors.

    Examples:
      >>> import jax
      >>> from jaxemb.losses import info_nce
      >>> from jaxemb.parallel import blocked_info_nce
      >>> q, p = jax.random.normal(jax.random.key(0), (2, 10, 4))
      >>> a = blocked_info_nce(q, p, temperature=0.1, block_size=3)
      >>> b = info_nce(q, p, temperature=0.1)
      >>> bool(abs(a - b) < 1e-5 * abs(b))
      True

    References:
      Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup",
      RepL4NLP 2021; Milakov & Gimelshein, "Online normalizer calculation for softmax", 2018.
      Semantics of sentence-transformers v6 ``CachedMultipleNegativesRankingLoss`` (which
      also computes the loss over mini-batches of anchors), defaults as ``info_nce``.
    """
    check_info_nce_inputs(anchors, positives, negatives)
    if negatives is not None:
        negatives = jnp.asarray(negatives)
    v.check_positive(temperature, "temperature")
    v.check_choice(similarity, "similarity", ("cosine", "dot"))
    if not isinstance(symmetric, bool):
        raise ValueError(f"symmetric must be a bool; got {symmetric!r}")
    v.check_int(block_size, "block_size", minimum=1)
    return _blocked_info_nce(
        jnp.asarray(anchors),
        jnp.asarray(positives),
        negatives,
        temperature,
        similarity=similarity,
        symmetric=symmetric,
        block_size=min(block_size, np.shape(anchors)[0]),
    )


@functools.partial(jax.jit, static_argnames=("similarity", "symmetric", "block_size"))
def _blocked_info_nce(q, p, n, temperature, *, similarity, symmetric, block_size):
    q, p = as_float(q), as_float(p)
    if similarity == "cosine":
        q, p = l2_normalize(q), l2_normalize(p)
    docs = p
    if n is not None and n.shape[1] > 0:
        n = as_float(n)
        if similarity == "cosine":
            n = l2_normalize(n)
        docs = jnp.concatenate([p, jnp.swapaxes(n, 0, 1).reshape(-1, n.shape[-1])], axis=0)
    inv_t = 1.0 / jnp.asarray(temperature, q.dtype)
    q_scaled = q * inv_t
    positive = jnp.sum(q_scaled * p, axis=-1)
    log_z = row_logsumexp(q_scaled, docs, block_size)
    if symmetric:  # column direction: positive p_i against every anchor (no hard negatives)
        log_z = 0.5 * (log_z + row_logsumexp(p * inv_t, q, block_size))
    return jnp.mean(log_z - positive)


def _blocks(x: jax.Array, block: int) -> jax.Array:
    """[n, d] -> [n_blocks, block, d], zero-padding the last block."""
    pad = -x.shape[0] % block
    if pad:
        x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)], axis=0)
    return x.reshape(-1, block, *x.shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def row_logsumexp(rows: jax.Array, cols: jax.Array, block: int) -> jax.Array:
    """``logsumexp(rows @ cols.T, axis=1)`` ([n] from [n, d] × [m, d]), ``block`` rows at a time."""
    return _row_lse_fwd(rows, cols, block)[0]


def _row_lse_fwd(rows, cols, block):
    n = rows.shape[0]

    def one(r):
        return jax.nn.logsumexp(r @ cols.T, axis=1)

    lse = jax.lax.map(one, _blocks(rows, block)).reshape(-1)[:n]
    return lse, (rows, cols, lse)


def _row_lse_bwd(block, res, g):
    rows, cols, lse = res
    n = rows.shape[0]
    # Padded rows get g = 0, so they add nothing to the candidates' gradient.
    xs = (_blocks(rows, block), _blocks(lse[:, None], block)[..., 0], _blocks(g[:, None], block))

    def body(d_cols, blk):
        r, l, gb = blk
        weights = jnp.exp(r @ cols.T - l[:, None]) * gb  # softmax · cotangent, [block, m]
        return d_cols + weights.T @ r, weights @ cols

    d_cols, d_rows = jax.lax.scan(body, jnp.zeros_like(cols), xs)
    return d_rows.reshape(-1, rows.shape[1])[:n], d_cols


row_logsumexp.defvjp(_row_lse_fwd, _row_lse_bwd)
