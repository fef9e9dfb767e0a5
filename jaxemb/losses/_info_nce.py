"""InfoNCE with in-batch and hard negatives (sentence-transformers MultipleNegativesRankingLoss)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.losses._common import as_float, l2_normalize, masked_logsumexp

_DIRECTIONS = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
_PARTITION_MODES = ("joint", "per_direction")
_HARDNESS_MODES = (None, "in_batch_negatives", "hard_negatives", "all_negatives")
_SIMILARITIES = ("cosine", "dot")


def info_nce(
    anchors: ArrayLike,
    positives: ArrayLike,
    negatives: ArrayLike | None = None,
    *,
    temperature: float = 0.05,
    similarity: str = "cosine",
    directions: Sequence[str] = ("query_to_doc",),
    partition_mode: str = "joint",
    hardness_mode: str | None = None,
    hardness_strength: float = 0.0,
    symmetric: bool = False,
    negative_mask: ArrayLike | None = None,
) -> jax.Array:
    """InfoNCE over the global batch: in-batch negatives, hard negatives and extra directions.

    Anchor (query) ``q_i`` is scored against every candidate document
    ``d_all = concat(p, n[:, 0], ..., n[:, H-1])`` (the positives, then each column of hard
    negatives, shared by every anchor); its target is its own positive ``p_i``. With
    ``s`` the similarity and ``τ`` the temperature the per-anchor loss is
    ``logZ_i − s(q_i, p_i)/τ`` and the result is the mean over anchors. The blocks of the
    partition function, selected by ``directions`` and all scaled by ``1/τ``:

    - ``"query_to_doc"`` (always present): ``s(q_i, d_all)``.
    - ``"query_to_query"``: ``s(q_i, q_j)`` for every other anchor ``j ≠ i``.
    - ``"doc_to_query"``: ``s(q_j, p_i)`` for every anchor ``j`` (p_i against all anchors).
    - ``"doc_to_doc"``: ``s(p_i, d_all)`` without the documents of query ``i`` (its positive and
      its own hard negatives).

    ``partition_mode="joint"`` takes one log-sum-exp over the concatenated row;
    ``"per_direction"`` averages the per-block log-sum-exps.

    Hardness weighting (Lan et al. 2025) adds ``α · stop_grad(s(q_i, d_j))`` (not divided by
    ``τ``) to the ``query_to_doc`` logits of the selected negatives: ``"in_batch_negatives"``
    — every document of another anchor (other positives *and* other anchors' hard negatives);
    ``"hard_negatives"`` — only anchor ``i``'s own hard negatives; ``"all_negatives"`` — every
    document except the positive.

    ``symmetric=True`` is the CLIP/ALIGN loss ``½(CE(rows) + CE(columns))`` over ``q pᵀ/τ``,
    i.e. ``directions=("query_to_doc", "doc_to_query")`` with ``partition_mode="per_direction"``
    (sentence-transformers' ``MultipleNegativesSymmetricRankingLoss``); hard negatives, when
    given, join the row (anchor → documents) direction as in sentence-transformers v6.

    Where jaxemb's spec (losses.md §1.1) and sentence-transformers v6 differ, this follows
    sentence-transformers: (1) the hardness term uses the configured similarity (the dot
    product when ``similarity="dot"``), not always the cosine; (2) ``partition_mode=
    "per_direction"`` with ``"query_to_query"`` or ``"doc_to_doc"`` is rejected (those blocks
    never contain the positive); (3) repeated entries in ``directions`` count once.

    Args:
      anchors: queries ``q``, ``[batch, dim]`` float.
      positives: documents ``p``, ``[batch, dim]``; row ``i`` is the positive of ``anchors[i]``.
      negatives: optional hard negatives ``n``, ``[batch, num_negatives, dim]``; ``n[i, k]``
        belongs to anchor ``i`` and is a negative for every anchor.
      temperature: ``τ > 0`` (sentence-transformers' ``scale = 1/τ``; default ``scale=20``).
      similarity: ``"cosine"`` (inputs L2-normalised, torch's eps 1e-12) or ``"dot"``.
      directions: subset of ``("query_to_doc", "query_to_query", "doc_to_query",
        "doc_to_doc")`` that contains ``"query_to_doc"``.
      partition_mode: ``"joint"`` or ``"per_direction"``.
      hardness_mode: ``None``, ``"in_batch_negatives"``, ``"hard_negatives"`` or
        ``"all_negatives"``.
      hardness_strength: ``α ≥ 0`` (Lan et al. use 9 with in-batch negatives, EmbeddingGemma 5
        with hard negatives).
      symmetric: the CLIP/ALIGN two-direction loss (see above); needs the default
        ``directions`` and ``partition_mode``.
      negative_mask: optional ``[batch, batch · (1 + num_negatives)]`` bool over the
        ``query_to_doc`` candidates (columns ordered as ``d_all``): False drops a candidate
        from anchor ``i``'s partition function (a suspected false negative, e.g. from
        ``jaxemb.negatives.false_negative_mask`` or ``unpg_filter``); the positive ``(i, i)``
        is always kept. Other directions are unaffected.

    Returns:
      A float32 scalar, the mean over anchors.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import info_nce
      >>> q = jnp.eye(3)
      >>> # each anchor: positive logit 1/τ = 2, two orthogonal in-batch negatives at 0
      >>> round(float(info_nce(q, q, temperature=0.5)), 4)  # log(e**2 + 2) - 2
      0.2395
      >>> round(float(info_nce(q, q, temperature=0.5, symmetric=True)), 4)
      0.2395

    References:
      van den Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018;
      Henderson et al., "Efficient Natural Language Response Suggestion for Smart Reply", 2017;
      Li et al., "Towards General Text Embeddings with Multi-stage Contrastive Learning" (GTE,
      all four directions, joint); Lan et al., "LLaVE", 2025 (hardness weighting); Radford et
      al. (CLIP) and Jia et al. (ALIGN) for the symmetric loss. Reference implementation:
      sentence-transformers v6 ``MultipleNegativesRankingLoss`` (``scale=20.0`` i.e.
      ``τ=0.05``, ``similarity_fct=cos_sim``, ``directions=("query_to_doc",)``,
      ``partition_mode="joint"``, ``hardness_mode=None``, ``hardness_strength=0.0``) and
      ``MultipleNegativesSymmetricRankingLoss``.
    """
    check_info_nce_inputs(anchors, positives, negatives)
    v.check_positive(temperature, "temperature")
    v.check_choice(similarity, "similarity", _SIMILARITIES)
    if isinstance(directions, str) or not isinstance(directions, Sequence):
        raise ValueError(
            f"directions must be a tuple of names from {list(_DIRECTIONS)}; got {directions!r}"
        )
    for name in directions:
        v.check_choice(name, "directions entries", _DIRECTIONS)
    if "query_to_doc" not in directions:
        raise ValueError(
            f"directions must contain 'query_to_doc' (it holds the positive pair); "
            f"got {tuple(directions)!r}"
        )
    v.check_choice(partition_mode, "partition_mode", _PARTITION_MODES)
    if partition_mode == "per_direction" and {"query_to_query", "doc_to_doc"} & set(directions):
        raise ValueError(
            "partition_mode='per_direction' needs every direction to contain the positive pair; "
            f"'query_to_query' and 'doc_to_doc' do not (got directions={tuple(directions)!r}); "
            "use partition_mode='joint'"
        )
    v.check_choice(hardness_mode, "hardness_mode", _HARDNESS_MODES)
    v.check_positive(hardness_strength, "hardness_strength", strict=False)
    if not isinstance(symmetric, bool):
        raise ValueError(f"symmetric must be a bool; got {symmetric!r}")
    if symmetric:
        if set(directions) != {"query_to_doc"} or partition_mode != "joint":
            raise ValueError(
                "symmetric=True fixes directions=('query_to_doc', 'doc_to_query') and "
                "partition_mode='per_direction'; leave directions and partition_mode at their "
                f"defaults (got directions={tuple(directions)!r}, "
                f"partition_mode={partition_mode!r})"
            )
        directions, partition_mode = ("query_to_doc", "doc_to_query"), "per_direction"
    # Canonical order (as sentence-transformers' dict of blocks); duplicates count once.
    dirs = tuple(name for name in _DIRECTIONS if name in directions)
    if negatives is not None:
        negatives = jnp.asarray(negatives)
    if negative_mask is not None:
        b = np.shape(anchors)[0]
        n_docs = b * (1 + (0 if negatives is None else np.shape(negatives)[1]))
        negative_mask = v.check_array(negative_mask, "negative_mask", ndim=2, kind="int")
        if tuple(negative_mask.shape) != (b, n_docs):
            raise ValueError(
                f"negative_mask must be [batch, batch · (1 + num_negatives)] = [{b}, {n_docs}] "
                f"(one entry per query_to_doc candidate); got {v.shape_str(negative_mask)}"
            )
        negative_mask = jnp.asarray(negative_mask, bool)
    return _info_nce(
        jnp.asarray(anchors),
        jnp.asarray(positives),
        negatives,
        negative_mask,
        temperature,
        hardness_strength,
        similarity=similarity,
        directions=dirs,
        partition_mode=partition_mode,
        hardness_mode=hardness_mode,
    )


@functools.partial(
    jax.jit, static_argnames=("similarity", "directions", "partition_mode", "hardness_mode")
)
def _info_nce(
    q, p, n, keep, temperature, strength, *, similarity, directions, partition_mode, hardness_mode
):
    q, p = as_float(q), as_float(p)
    batch = q.shape[0]
    if similarity == "cosine":
        q, p = l2_normalize(q), l2_normalize(p)
    docs = p
    if n is not None and n.shape[1] > 0:
        n = as_float(n)
        if similarity == "cosine":
            n = l2_normalize(n)
        # [B, H, D] -> [H*B, D]: each negative column follows the positives, as in ST's cat(docs).
        docs = jnp.concatenate([p, jnp.swapaxes(n, 0, 1).reshape(-1, n.shape[-1])], axis=0)
    inv_t = 1.0 / jnp.asarray(temperature, q.dtype)
    n_docs = docs.shape[0]

    # 1/τ is folded into the [B, D] anchors so the matmul emits the logits directly (no extra
    # pass over the [B, B·(1+H)] block).
    q_scaled = q * inv_t
    logits_raw = q_scaled @ docs.T  # [B, B·(1+H)]
    logits_qd = logits_raw
    positive = jnp.sum(q_scaled * p, axis=-1)
    rows = jnp.arange(batch)[:, None]
    cols = jnp.arange(n_docs)[None, :]
    if hardness_mode is not None:
        own = (cols % batch) == rows  # the positive and the own hard negatives of anchor i
        selected = {
            "in_batch_negatives": ~own,
            "hard_negatives": own & (cols >= batch),
            "all_negatives": cols != rows,
        }[hardness_mode]
        # α · stop_grad(s(q_i, d_j)), not divided by τ: s = τ · logit.
        penalty = jax.lax.stop_gradient(logits_raw) * (jnp.asarray(strength, q.dtype) / inv_t)
        logits_qd = logits_raw + jnp.where(selected, penalty, 0.0)

    if keep is None:
        lse = [jax.nn.logsumexp(logits_qd, axis=1)]
    else:  # dropped candidates leave the partition function; the positive always stays
        lse = [masked_logsumexp(logits_qd, keep | (cols == rows))]
    if "query_to_query" in directions:
        logits_qq = q_scaled @ q.T
        lse.append(masked_logsumexp(logits_qq, rows != jnp.arange(batch)[None, :]))
    if "doc_to_query" in directions:
        # Row i of this block is s(q_j, p_i) over anchors j: a column of the q·pᵀ block.
        lse.append(jax.nn.logsumexp(logits_raw[:, :batch], axis=0))
    if "doc_to_doc" in directions:
        logits_dd = (p * inv_t) @ docs.T
        lse.append(masked_logsumexp(logits_dd, (cols % batch) != rows))

    if len(lse) == 1:
        log_z = lse[0]
    elif partition_mode == "joint":
        log_z = jax.nn.logsumexp(jnp.stack(lse), axis=0)
    else:
        log_z = sum(lse) / len(lse)
    return jnp.mean(log_z - positive)


def check_info_nce_inputs(anchors, positives, negatives=None) -> None:
    """Validates ``anchors``/``positives`` ``[B, D]`` and optional ``negatives`` ``[B, H, D]``."""
    anchors = v.check_array(anchors, "anchors", ndim=2)
    positives = v.check_array(positives, "positives", ndim=2)
    if np.shape(positives) != np.shape(anchors):
        raise ValueError(
            f"positives must be [batch, dim] like anchors {v.shape_str(anchors)}; "
            f"got {v.shape_str(positives)}"
        )
    if negatives is not None:
        negatives = v.check_array(negatives, "negatives", ndim=3, allow_empty=True)
        b, d = np.shape(anchors)
        if np.shape(negatives)[0] != b or np.shape(negatives)[2] != d:
            raise ValueError(
                f"negatives must be [batch, num_negatives, dim] = [{b}, H, {d}] to match anchors "
                f"{v.shape_str(anchors)}; got {v.shape_str(negatives)}"
            )
