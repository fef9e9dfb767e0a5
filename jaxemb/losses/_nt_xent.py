"""SimCLR's NT-Xent loss (normalised temperature-scaled cross-entropy)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.losses._common import l2_normalize, masked_logsumexp


def nt_xent(
    z1: ArrayLike,
    z2: ArrayLike,
    *,
    temperature: float = 0.5,
    labels: ArrayLike | None = None,
) -> jax.Array:
    """NT-Xent: SimCLR's two-view contrastive loss over the global batch.

    The two views are stacked into ``z = concat(z1, z2)`` (``[2N, D]``) and L2-normalised; the
    logits are ``z zᵀ / τ`` with each row's self-similarity removed, and the positive of row ``i``
    is its other view. The loss is the mean cross-entropy over the ``2N`` rows.

    With ``labels`` it becomes the pair-wise supervised form of pytorch-metric-learning's
    ``NTXentLoss``: every pair of distinct rows with equal labels (the two views of an example
    share its label) is a positive; the denominator of a positive pair ``(i, p)`` holds that
    positive plus every row whose label differs from ``i``'s; the loss is the mean over all
    positive pairs. With all-distinct labels this equals the unsupervised loss.

    Args:
      z1: first view, ``[batch, dim]`` float.
      z2: second view, ``[batch, dim]`` float; row ``i`` is the positive of ``z1[i]``.
      temperature: softmax temperature ``τ > 0`` (SimCLR uses 0.1–0.5).
      labels: optional integer class labels ``[batch]`` shared by both views.

    Returns:
      A float32 scalar, the mean over rows (or over positive pairs with ``labels``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import nt_xent
      >>> z = jnp.eye(4)
      >>> # aligned views, 6 orthogonal negatives per row: log(e**2 + 6) - 2
      >>> round(float(nt_xent(z, z, temperature=0.5)), 4)
      0.5944

    References:
      Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations"
      (SimCLR), ICML 2020. Supervised pair form: pytorch-metric-learning ``NTXentLoss``
      (``temperature=0.07`` there; jaxemb defaults to SimCLR's 0.5).
    """
    z1 = v.check_array(z1, "z1", ndim=2)
    z2 = v.check_array(z2, "z2", ndim=2)
    v.check_same_shape(z1, "z1", z2, "z2")
    if z1.shape[0] < 2:
        raise ValueError(
            "z1 must hold at least 2 rows: with one pair there is no negative and the loss is "
            f"0 whatever the embeddings; got shape {v.shape_str(z1)}"
        )
    v.check_positive(temperature, "temperature")
    if labels is not None:
        labels = v.check_labels(labels, "labels", z1.shape[0])
    return _nt_xent(z1, z2, temperature, labels)


@jax.jit
def _nt_xent(z1, z2, temperature, labels):
    n = z1.shape[0]
    z = l2_normalize(jnp.concatenate([z1, z2], axis=0))
    logits = (z @ z.T) / temperature
    idx = jnp.arange(2 * n)
    not_self = idx[:, None] != idx[None, :]
    if labels is None:
        target = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
        lse = masked_logsumexp(logits, not_self)
        return jnp.mean(lse - logits[idx, target])
    lab = jnp.concatenate([labels, labels])
    same = lab[:, None] == lab[None, :]
    pos = same & not_self
    neg = ~same
    # log(exp(s_ip) + Σ_neg exp(s_in)) for every (i, p) pair, via logaddexp with the row's
    # negative log-sum-exp (-inf, handled without NaN gradients, for a row without negatives).
    neg_lse = masked_logsumexp(logits, neg)[:, None]
    has_neg = jnp.isfinite(neg_lse)
    denom = jnp.where(has_neg, jnp.logaddexp(logits, jnp.where(has_neg, neg_lse, 0.0)), logits)
    per_pair = jnp.where(pos, denom - logits, 0.0)
    return jnp.sum(per_pair) / jnp.maximum(jnp.sum(pos), 1)
