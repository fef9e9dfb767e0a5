"""GISTEmbed: InfoNCE whose in-batch negatives are filtered by a frozen guide model."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb._numerics import propagate_nan
from jaxemb.losses._common import as_float, l2_normalize, masked_logsumexp

# torch.nn.CosineSimilarity's default eps (sentence-transformers' GISTEmbedLoss uses it).
_COS_EPS = 1e-8


def gist_info_nce(
    anchors: ArrayLike,
    positives: ArrayLike,
    guide_anchors: ArrayLike,
    guide_positives: ArrayLike,
    negatives: ArrayLike | None = None,
    guide_negatives: ArrayLike | None = None,
    *,
    temperature: float = 0.01,
    margin_strategy: str = "absolute",
    margin: float = 0.0,
    contrast_anchors: bool = True,
    contrast_positives: bool = True,
) -> jax.Array:
    """GISTEmbed loss: cosine InfoNCE with guide-filtered false negatives.

    The row of anchor ``i`` concatenates the cosine blocks ``a·pᵀ``, ``a·aᵀ`` (when
    ``contrast_anchors``), ``p·pᵀ`` (when ``contrast_positives``) and ``a·nᵀ`` (when negatives
    are given; ``n_j`` is the single negative of anchor ``j``, a candidate for every anchor).
    The frozen guide gives the threshold ``g_i = cos(ga_i, gp_i)``; in every block an entry
    whose guide similarity (same block, guide embeddings) exceeds ``g_i − margin``
    (``"absolute"``) or ``g_i − |g_i|·margin`` (``"relative"``) is dropped (logit −inf), except
    the true positive ``(i, i)`` of the ``a·pᵀ`` block. The loss is the cross-entropy of the
    row divided by ``τ`` with target ``i``, averaged over anchors.

    As in sentence-transformers, the diagonals of ``a·aᵀ`` and ``p·pᵀ`` (each anchor's and
    each positive's similarity with itself) are always dropped, whatever the guide says: the
    guide rule alone would keep them when the guide rates a pair as identical (``g_i = 1``, a
    duplicate pair, with ``margin=0``). Guide embeddings receive no gradient.

    Args:
      anchors: ``[batch, dim]`` float.
      positives: ``[batch, dim]``; row ``i`` is the positive of ``anchors[i]``.
      guide_anchors: the guide model's anchor embeddings, ``[batch, guide_dim]``.
      guide_positives: the guide's positive embeddings, ``[batch, guide_dim]``.
      negatives: optional ``[batch, dim]``, one negative per anchor.
      guide_negatives: the guide's negatives, ``[batch, guide_dim]``; required exactly when
        ``negatives`` is given.
      temperature: ``τ > 0`` (default 0.01 as in sentence-transformers).
      margin_strategy: ``"absolute"`` or ``"relative"``.
      margin: ``≥ 0``; 0 with ``"absolute"`` drops candidates the guide rates above the positive.
      contrast_anchors: include the anchor–anchor block.
      contrast_positives: include the positive–positive block.

    Returns:
      A float32 scalar, the mean over anchors.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import gist_info_nce
      >>> x = jnp.eye(3)
      >>> # margin 0.1 drops only the self-similarities (guide 1 > g_i - 0.1 = 0.9); per row
      >>> # the positive logit is 1/τ = 2 and 2 + 2 + 2 other logits are 0: log(e**2 + 6) - 2
      >>> round(float(gist_info_nce(x, x, x, x, temperature=0.5, margin=0.1)), 4)
      0.5944
      >>> # with margin 0 a guide that rates anchor and positive identical (g_i = 1) drops
      >>> # nothing by its rule, but the self-similarities are always excluded: the same loss
      >>> round(float(gist_info_nce(x, x, x, x, temperature=0.5)), 4)
      0.5944

    References:
      Solatorio, "GISTEmbed: Guided In-sample Selection of Training Negatives for Text
      Embedding Fine-tuning", 2024. Reference implementation: sentence-transformers 6.3
      ``GISTEmbedLoss`` (``temperature=0.01``, ``margin_strategy="absolute"``, ``margin=0.0``,
      ``contrast_anchors=True``, ``contrast_positives=True``; cosine via
      ``torch.nn.CosineSimilarity``, eps 1e-8).
    """
    anchors = v.check_array(anchors, "anchors", ndim=2)
    positives = v.check_array(positives, "positives", ndim=2)
    if np.shape(positives) != np.shape(anchors):
        raise ValueError(
            f"positives must be [batch, dim] like anchors {v.shape_str(anchors)}; "
            f"got {v.shape_str(positives)}"
        )
    guide_anchors = v.check_array(guide_anchors, "guide_anchors", ndim=2)
    if np.shape(guide_anchors)[0] != np.shape(anchors)[0]:
        raise ValueError(
            f"guide_anchors must have the batch size of anchors {v.shape_str(anchors)}; "
            f"got {v.shape_str(guide_anchors)}"
        )
    guide_positives = v.check_array(guide_positives, "guide_positives", ndim=2)
    if np.shape(guide_positives) != np.shape(guide_anchors):
        raise ValueError(
            f"guide_positives must be [batch, guide_dim] like guide_anchors "
            f"{v.shape_str(guide_anchors)}; got {v.shape_str(guide_positives)}"
        )
    if (negatives is None) != (guide_negatives is None):
        raise ValueError(
            "negatives and guide_negatives must be given together; got "
            f"negatives={'None' if negatives is None else v.shape_str(negatives)}, "
            f"guide_negatives={'None' if guide_negatives is None else v.shape_str(guide_negatives)}"
        )
    if negatives is not None:
        negatives = v.check_array(negatives, "negatives", ndim=2)
        if np.shape(negatives) != np.shape(anchors):
            raise ValueError(
                f"negatives must be [batch, dim] like anchors {v.shape_str(anchors)} (one per "
                f"anchor); got {v.shape_str(negatives)}"
            )
        guide_negatives = v.check_array(guide_negatives, "guide_negatives", ndim=2)
        if np.shape(guide_negatives) != np.shape(guide_anchors):
            raise ValueError(
                f"guide_negatives must be [batch, guide_dim] like guide_anchors "
                f"{v.shape_str(guide_anchors)}; got {v.shape_str(guide_negatives)}"
            )
    v.check_positive(temperature, "temperature")
    v.check_choice(margin_strategy, "margin_strategy", ("absolute", "relative"))
    v.check_positive(margin, "margin", strict=False)
    for name, flag in (
        ("contrast_anchors", contrast_anchors),
        ("contrast_positives", contrast_positives),
    ):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be a bool; got {flag!r}")
    if negatives is not None:
        negatives, guide_negatives = jnp.asarray(negatives), jnp.asarray(guide_negatives)
    return _gist(
        jnp.asarray(anchors),
        jnp.asarray(positives),
        jnp.asarray(guide_anchors),
        jnp.asarray(guide_positives),
        negatives,
        guide_negatives,
        temperature,
        margin,
        margin_strategy=margin_strategy,
        contrast_anchors=contrast_anchors,
        contrast_positives=contrast_positives,
    )


@functools.partial(
    jax.jit, static_argnames=("margin_strategy", "contrast_anchors", "contrast_positives")
)
@propagate_nan
def _gist(
    a,
    p,
    ga,
    gp,
    n,
    gn,
    temperature,
    margin,
    *,
    margin_strategy,
    contrast_anchors,
    contrast_positives,
):
    def unit(x):
        return l2_normalize(as_float(x), eps=_COS_EPS)

    def guide(x):
        return jax.lax.stop_gradient(unit(x))

    a, p, ga, gp = unit(a), unit(p), guide(ga), guide(gp)
    batch = a.shape[0]
    inv_t = 1.0 / jnp.asarray(temperature, a.dtype)
    margin = jnp.asarray(margin, ga.dtype)

    guide_ap = ga @ gp.T
    g = jnp.diagonal(guide_ap)[:, None]  # the guide's anchor–positive similarity
    threshold = g - margin if margin_strategy == "absolute" else g - jnp.abs(g) * margin
    eye = jnp.arange(batch)[:, None] == jnp.arange(batch)[None, :]

    a_scaled = a * inv_t
    blocks = [(a_scaled @ p.T, ~((guide_ap > threshold) & ~eye))]
    if contrast_anchors:
        blocks.append((a_scaled @ a.T, ~(ga @ ga.T > threshold) & ~eye))
    if contrast_positives:
        blocks.append(((p * inv_t) @ p.T, ~(gp @ gp.T > threshold) & ~eye))
    if n is not None:
        n, gn = unit(n), guide(gn)
        blocks.append((a_scaled @ n.T, ~(ga @ gn.T > threshold)))
    # One log-sum-exp over the concatenated row, assembled from the per-block ones.
    lse = jnp.stack([masked_logsumexp(logits, keep) for logits, keep in blocks])
    log_z = jax.nn.logsumexp(lse, axis=0)
    positive = jnp.sum(a_scaled * p, axis=-1)
    return jnp.mean(log_z - positive)
