"""Supervised contrastive loss (SupCon, Khosla et al. 2020)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb._numerics import propagate_nan
from jaxemb.losses._common import l2_normalize, masked_logsumexp


def supcon(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    temperature: float = 0.1,
) -> jax.Array:
    """Supervised contrastive loss over a labelled batch (pytorch-metric-learning semantics).

    The embeddings are L2-normalised and ``s_ij = cos(x_i, x_j) / τ``. For an anchor ``i`` with
    positives ``P(i) = {p ≠ i : y_p = y_i}``::

        ℓ_i = −1/|P(i)| Σ_{p∈P(i)} [ s_ip − log Σ_{a≠i} exp(s_ia) ]

    Anchors without a positive (singleton labels) give ``ℓ_i = 0`` and are skipped. The result
    is the mean of ``ℓ_i`` over the anchors whose loss is strictly positive
    (pytorch-metric-learning's ``AvgNonZeroReducer``), and ``0`` when the batch holds no positive
    pair or no negative pair at all (e.g. every label equal), as in PML's ``SupConLoss``.

    Args:
      embeddings: ``[batch, dim]`` float; normalised inside (cosine similarity).
      labels: ``[batch]`` integer class labels.
      temperature: softmax temperature ``τ > 0`` (PML default 0.1).

    Returns:
      A float32 scalar: the mean over anchors with a positive loss (0 if there are none).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import supcon
      >>> x = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
      >>> # every anchor: its positive at cosine 1, two negatives at 0: log(e + 2) − 1
      >>> round(float(supcon(x, jnp.array([0, 0, 1, 1]), temperature=1.0)), 4)
      0.5514

    References:
      Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020.
      pytorch-metric-learning ``SupConLoss(temperature=0.1)`` with its default
      ``CosineSimilarity`` distance and ``AvgNonZeroReducer`` (adapted there from
      HobbitLong/SupContrast).
    """
    embeddings = v.check_array(embeddings, "embeddings", ndim=2)
    labels = v.check_labels(labels, "labels", embeddings.shape[0])
    v.check_positive(temperature, "temperature")
    return _supcon(embeddings, labels, temperature)


@jax.jit
@propagate_nan
def _supcon(embeddings, labels, temperature):
    b = embeddings.shape[0]
    z = l2_normalize(embeddings)
    logits = (z @ z.T) / temperature
    idx = jnp.arange(b)
    not_self = idx[:, None] != idx[None, :]
    same = labels[:, None] == labels[None, :]
    pos = same & not_self
    # Denominator: every other row (positives and negatives), PML's pos_mask + neg_mask.
    lse = masked_logsumexp(logits, not_self)
    lse = jnp.where(jnp.isfinite(lse), lse, 0.0)  # a batch of one row: no entries at all
    log_prob = logits - lse[:, None]
    n_pos = jnp.sum(pos, axis=1)
    per_anchor = -jnp.sum(jnp.where(pos, log_prob, 0.0), axis=1) / jnp.maximum(n_pos, 1)
    # AvgNonZeroReducer: mean over the strictly positive per-anchor losses.
    above = per_anchor > 0
    count = jnp.sum(above)
    mean = jnp.sum(jnp.where(above, per_anchor, 0.0)) / jnp.maximum(count, 1)
    has_pairs = jnp.any(pos) & jnp.any(~same)
    return jnp.where(has_pairs, mean, 0.0)
