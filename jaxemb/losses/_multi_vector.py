"""In-batch contrastive loss over late-interaction (ColBERT MaxSim) scores."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxemb import _validate as v

# jaxemb.retrieval re-exports this loss, so its MaxSim core is imported where it is used (an
# import at the top would be circular when jaxemb.losses is imported first).


def _tokens_and_mask(tokens: Any, mask: Any, name: str, mask_name: str, lead: tuple[int, ...]):
    """Validates ``tokens [*lead, T, D]`` and ``mask [*lead, T]`` (``None``: all-zero rows pad)."""
    from jaxemb.retrieval._maxsim import _check_nonempty

    rank = len(lead) + 2
    tokens = v.check_array(tokens, name, ndim=rank)
    if tuple(tokens.shape[: len(lead)]) != lead:
        want = ", ".join(str(x) for x in lead)
        raise ValueError(
            f"{name} must be [{want}, tokens, dim] to match q_tokens (one row per query); "
            f"got {v.shape_str(tokens)}"
        )
    derived = mask is None
    if derived:
        mask = jnp.any(jnp.asarray(tokens) != 0, axis=-1)
    mask = v.check_array(mask, mask_name, ndim=rank - 1, kind="number")
    if tuple(mask.shape) != tuple(tokens.shape[:-1]):
        raise ValueError(
            f"{mask_name} must be {list(tokens.shape[:-1])} to match {name} "
            f"{v.shape_str(tokens)} (one entry per token); got {v.shape_str(mask)}"
        )
    if not isinstance(mask, jax.core.Tracer):
        what = {"q_tokens": "query", "p_tokens": "document"}.get(
            name, "negative (row i·H + k of [B·H, Tn])"
        )
        flat = np.asarray(mask).reshape(-1, mask.shape[-1])
        _check_nonempty(flat, name if derived else mask_name, derived, what)
    return tokens, mask


def multi_vector_info_nce(
    q_tokens: ArrayLike,
    q_mask: ArrayLike | None,
    p_tokens: ArrayLike,
    p_mask: ArrayLike | None,
    n_tokens: ArrayLike | None = None,
    n_mask: ArrayLike | None = None,
    *,
    temperature: float = 1.0,
    length_normalize: bool = False,
) -> jax.Array:
    """InfoNCE over MaxSim scores: ColBERT's in-batch contrastive loss for multi-vector models.

    Query ``i`` is scored by :func:`~jaxemb.retrieval.maxsim` against every candidate document
    ``d_all = concat(p, n[:, 0], ..., n[:, H-1])`` (the positives of the whole batch, then each
    column of hard negatives); its target is its own positive. With ``s`` the MaxSim score the
    loss is ``mean_i [logsumexp_j s(q_i, d_j)/τ − s(q_i, p_i)/τ]`` (cross-entropy, as
    :func:`~jaxemb.losses.info_nce` with MaxSim in place of the cosine).

    Written for the global batch: jitted on batch-sharded inputs (e.g. from
    :func:`jaxemb.parallel.shard_batch`) every query still meets every document of the global
    batch (XLA gathers the document side), so the value and gradients equal the single-device
    ones, as sentence-transformers' ``gather_across_devices=True``.

    Args:
      q_tokens: [B, Tq, D] query token embeddings (float).
      q_mask: [B, Tq]; nonzero keeps a query token (a float value weights it, as in
        :func:`~jaxemb.retrieval.maxsim`); ``None``: all-zero token rows are padding.
      p_tokens: [B, Tp, D] positive document tokens; row ``i`` is the positive of query ``i``.
      p_mask: [B, Tp]; nonzero keeps a document token (e.g. the attention mask minus the
        punctuation skip-list from :class:`~jaxemb.retrieval.TokenEmbeddingHead`).
      n_tokens: optional hard negatives [B, H, Tn, D]; ``n[i, k]`` belongs to query ``i`` and is
        a negative for every query.
      n_mask: [B, H, Tn] for ``n_tokens`` (``None``: all-zero rows are padding).
      temperature: ``τ > 0``; sentence-transformers' ``scale = 1/τ`` (default 1: MaxSim sums
        one similarity per query token, so it is not rescaled as a cosine is).
      length_normalize: score with MeanMaxSim (MaxSim divided by the number of kept query
        tokens); then a temperature near 1/(mean query length) suits.

    Returns:
      A float32 scalar, the mean over queries. Under a caller's ``jax.jit`` (masks unchecked) a
      document with no kept token drops out of every partition function and an empty query
      gives NaN.

    Raises:
      ValueError: on wrong ranks, token or mask shapes that do not match, different embedding
        widths, a query or document with no kept token, a bad temperature.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import multi_vector_info_nce
      >>> q = jnp.eye(3)[:, None, :]  # 3 queries of one token each
      >>> # MaxSim with itself is 1, with the others 0: log(e + 2) - 1
      >>> round(float(multi_vector_info_nce(q, None, q, None)), 4)
      0.5514

    References:
      Khattab & Zaharia, "ColBERT", SIGIR 2020; Santhanam et al., "ColBERTv2", NAACL 2022
      (in-batch negatives over MaxSim); van den Oord et al. 2018 (InfoNCE). Reference
      implementation: sentence-transformers 6.3
      ``multi_vector_encoder.losses.MultiVectorMultipleNegativesRankingLoss`` (``scale=1.0``,
      ``model.similarity`` = ``util.maxsim``), whose value this matches; it orders the
      candidates query-major (``[p_i, n_i0, n_i1, ...]`` per query), which changes no value.
    """
    q_tokens = v.check_array(q_tokens, "q_tokens", ndim=3)
    b, _, d = q_tokens.shape
    q_tokens, q_mask = _tokens_and_mask(q_tokens, q_mask, "q_tokens", "q_mask", (b,))
    p_tokens, p_mask = _tokens_and_mask(p_tokens, p_mask, "p_tokens", "p_mask", (b,))
    if p_tokens.shape[2] != d:
        raise ValueError(
            f"p_tokens {v.shape_str(p_tokens)} must have the embedding width of q_tokens "
            f"{v.shape_str(q_tokens)} (axis 2: {d} vs {p_tokens.shape[2]})"
        )
    if n_tokens is None:
        if n_mask is not None:
            raise ValueError(f"n_mask must be None without n_tokens; got {v.shape_str(n_mask)}")
    else:
        n_tokens = v.check_array(n_tokens, "n_tokens", ndim=4)
        n_tokens, n_mask = _tokens_and_mask(
            n_tokens, n_mask, "n_tokens", "n_mask", (b, n_tokens.shape[1])
        )
        if n_tokens.shape[3] != d:
            raise ValueError(
                f"n_tokens {v.shape_str(n_tokens)} must have the embedding width of q_tokens "
                f"{v.shape_str(q_tokens)} (axis 3: {d} vs {n_tokens.shape[3]})"
            )
        n_tokens, n_mask = jnp.asarray(n_tokens), jnp.asarray(n_mask)
    v.check_positive(temperature, "temperature")
    if not isinstance(length_normalize, bool):
        raise ValueError(f"length_normalize must be a bool; got {length_normalize!r}")
    return _multi_vector_info_nce(
        jnp.asarray(q_tokens),
        jnp.asarray(q_mask),
        jnp.asarray(p_tokens),
        jnp.asarray(p_mask),
        n_tokens,
        n_mask,
        temperature,
        length_normalize=length_normalize,
    )


@functools.partial(jax.jit, static_argnames=("length_normalize",))
def _multi_vector_info_nce(q, qm, p, pm, n, nm, temperature, *, length_normalize):
    from jaxemb.retrieval._maxsim import _maxsim_scores

    batch = q.shape[0]
    inv_t = 1.0 / jnp.asarray(temperature, jnp.float32)
    blocks = [_maxsim_scores(q, qm, p, pm, length_normalize=length_normalize)]  # [B, B]
    if n is not None:
        h = n.shape[1]
        # [B, H, Tn, D] -> [H·B, Tn, D]: each negative column follows the positives.
        n_flat = jnp.swapaxes(n, 0, 1).reshape(h * batch, *n.shape[2:])
        nm_flat = jnp.swapaxes(nm, 0, 1).reshape(h * batch, nm.shape[2])
        blocks.append(_maxsim_scores(q, qm, n_flat, nm_flat, length_normalize=length_normalize))
    logits = jnp.concatenate(blocks, axis=1) * inv_t  # [B, B·(1+H)]
    positive = jnp.diagonal(blocks[0]) * inv_t
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - positive)
