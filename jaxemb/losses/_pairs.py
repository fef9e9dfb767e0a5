"""Contrastive pair losses with sentence-transformers semantics (labelled pairs, 1 = similar)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb._numerics import propagate_nan
from jaxemb.losses import _st_ops as st
from jaxemb.losses._common import as_float

_SIAMESE_DISTANCES = ("cosine", "euclidean", "manhattan")


def _check_pairs(a, b, labels):
    a, b, labels = st.to_array(a), st.to_array(b), st.to_array(labels)
    st.check_embeddings(a, "a")
    st.check_like(a, "a", b, "b")
    st.check_vector(labels, "labels", a.shape[0])
    if v.is_concrete(labels):
        values = np.unique(np.asarray(labels, np.float64))
        if not np.isin(values, (0.0, 1.0)).all():
            raise ValueError(
                "labels must be 1 (similar pair) or 0 (dissimilar pair); got values "
                f"{values[~np.isin(values, (0.0, 1.0))][:5].tolist()}"
            )
    return a, b, labels


def _siamese_distance(a, b, distance):
    # sentence-transformers SiameseDistanceMetric: torch's pairwise_distance (eps 1e-6 added to
    # the difference) and 1 - torch.nn.functional.cosine_similarity (eps 1e-8).
    if distance == "euclidean":
        return st.torch_pairwise_distance(a, b, p=2)
    if distance == "manhattan":
        return st.torch_pairwise_distance(a, b, p=1)
    return 1.0 - st.torch_cosine_similarity(a, b)


def contrastive_pair(
    a: ArrayLike,
    b: ArrayLike,
    labels: ArrayLike,
    *,
    margin: float = 0.5,
    distance: str = "cosine",
) -> jax.Array:
    """Contrastive loss on labelled pairs: ``mean ½[y·d² + (1−y)·relu(margin − d)²]``.

    ``y = 1`` pulls the pair together, ``y = 0`` pushes it beyond ``margin``; other label values
    (which sentence-transformers would use as weights of the two terms) are refused with a
    ``ValueError`` when the labels are concrete. Distances are
    sentence-transformers' ``SiameseDistanceMetric``:

    - ``"cosine"``: ``1 − F.cosine_similarity(a, b)`` (each norm clamped to 1e-8);
    - ``"euclidean"``: ``F.pairwise_distance(a, b, p=2) = ‖a − b + 1e-6‖₂``;
    - ``"manhattan"``: ``‖a − b + 1e-6‖₁``.

    Args:
      a: ``[batch, dim]`` float.
      b: ``[batch, dim]`` float; row ``i`` pairs with ``a[i]``.
      labels: ``[batch]`` pair labels (1 similar, 0 dissimilar; int, bool or float).
      margin: ``>= 0``; dissimilar pairs closer than this are penalised.
      distance: ``"cosine"``, ``"euclidean"`` or ``"manhattan"``.

    Returns:
      A float32 scalar, the mean over pairs (``size_average=True``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import contrastive_pair
      >>> a = jnp.array([[1.0, 0.0], [1.0, 0.0]])
      >>> b = jnp.array([[0.0, 1.0], [1.0, 1.0]])
      >>> # similar pair at d = 1: 0.5; dissimilar at d = 1 - 1/sqrt(2): 0.5 * (0.5 - d)^2
      >>> round(float(contrastive_pair(a, b, jnp.array([1, 0]))), 4)
      0.2607

    References:
      Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an Invariant Mapping",
      CVPR 2006. sentence-transformers ``ContrastiveLoss`` (``COSINE_DISTANCE``, ``margin=0.5``,
      ``size_average=True``).
    """
    a, b, labels = _check_pairs(a, b, labels)
    st.check_margin(margin)
    v.check_choice(distance, "distance", _SIAMESE_DISTANCES)
    return _contrastive_pair(a, b, labels, margin, distance)


@functools.partial(jax.jit, static_argnames=("distance",))
@propagate_nan
def _contrastive_pair(a, b, labels, margin, distance):
    d = _siamese_distance(as_float(a), as_float(b), distance)
    y = st.as_labels(labels).astype(d.dtype)
    losses = 0.5 * (y * d**2 + (1.0 - y) * jax.nn.relu(margin - d) ** 2)
    return jnp.mean(losses)


def online_contrastive(
    a: ArrayLike, b: ArrayLike, labels: ArrayLike, *, margin: float = 0.5
) -> jax.Array:
    """Online contrastive loss: the contrastive loss summed over the hard pairs only.

    With cosine distances ``d = 1 − cos(a, b)`` (``F.cosine_similarity``, eps 1e-8), positives
    (``labels == 1``) and negatives (``labels == 0``; any other label, which sentence-transformers
    silently ignores, is refused with a ``ValueError`` when the labels are concrete):

    - hard negatives: negatives with ``d < max(d of positives)`` (``mean(d of negatives)`` when
      the batch has no positive);
    - hard positives: positives with ``d > min(d of negatives)`` (``mean(d of positives)`` when
      the batch has no negative).

    Loss ``Σ_hard pos d² + Σ_hard neg relu(margin − d)²`` — a **sum**, not a mean, and without the
    ½ of :func:`contrastive_pair`, exactly as sentence-transformers v6. The thresholds select
    pairs and carry no gradient.

    Args:
      a: ``[batch, dim]`` float.
      b: ``[batch, dim]`` float; row ``i`` pairs with ``a[i]``.
      labels: ``[batch]`` pair labels, 1 similar and 0 dissimilar (int, bool or float).
      margin: ``>= 0``.

    Returns:
      A float32 scalar, the sum over the selected hard pairs.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import online_contrastive
      >>> c = jnp.array([0.9, 0.4, 0.7, 0.1])  # cosines: distances 0.1, 0.6 | 0.3, 0.9
      >>> a = jnp.tile(jnp.array([1.0, 0.0]), (4, 1))
      >>> b = jnp.stack([c, jnp.sqrt(1 - c**2)], axis=1)
      >>> # hard positive 0.6 (> 0.3): 0.36; hard negative 0.3 (< 0.6): (0.5 - 0.3)^2
      >>> round(float(online_contrastive(a, b, jnp.array([1, 1, 0, 0]))), 4)
      0.4

    References:
      sentence-transformers ``OnlineContrastiveLoss`` (``COSINE_DISTANCE``, ``margin=0.5``;
      v6 thresholds: ``poss.max() if len(poss) else negs.mean()`` and
      ``negs.min() if len(negs) else poss.mean()``).
    """
    a, b, labels = _check_pairs(a, b, labels)
    st.check_margin(margin)
    return _online_contrastive(a, b, labels, margin)


@jax.jit
@propagate_nan
def _online_contrastive(a, b, labels, margin):
    d = 1.0 - st.torch_cosine_similarity(as_float(a), as_float(b))
    labels = st.as_labels(labels)
    is_pos = labels == 1
    is_neg = labels == 0
    ds = jax.lax.stop_gradient(d)
    n_pos = jnp.sum(is_pos)
    n_neg = jnp.sum(is_neg)
    max_pos = jnp.max(jnp.where(is_pos, ds, -jnp.inf))
    min_neg = jnp.min(jnp.where(is_neg, ds, jnp.inf))
    mean_pos = jnp.sum(jnp.where(is_pos, ds, 0.0)) / jnp.maximum(n_pos, 1)
    mean_neg = jnp.sum(jnp.where(is_neg, ds, 0.0)) / jnp.maximum(n_neg, 1)
    neg_threshold = jnp.where(n_pos > 0, max_pos, mean_neg)
    pos_threshold = jnp.where(n_neg > 0, min_neg, mean_pos)
    hard_neg = is_neg & (ds < neg_threshold)
    hard_pos = is_pos & (ds > pos_threshold)
    positive_loss = jnp.sum(jnp.where(hard_pos, d**2, 0.0))
    negative_loss = jnp.sum(jnp.where(hard_neg, jax.nn.relu(margin - d) ** 2, 0.0))
    return positive_loss + negative_loss
