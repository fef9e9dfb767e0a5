"""Triplet losses with sentence-transformers semantics: explicit triplets and batch mining."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb._numerics import propagate_nan
from jaxemb.losses import _st_ops as st
from jaxemb.losses._common import as_float

_TRIPLET_DISTANCES = ("euclidean", "cosine", "manhattan")


def triplet_margin(
    anchors: ArrayLike,
    positives: ArrayLike,
    negatives: ArrayLike,
    *,
    margin: float = 5.0,
    distance: str = "euclidean",
) -> jax.Array:
    """Triplet margin loss ``mean relu(d(a, p) − d(a, n) + margin)`` over explicit triplets.

    Distances follow sentence-transformers v6 ``TripletDistanceMetric``:

    - ``"euclidean"``: ``‖a − p‖₂`` (``-util.pairwise_euclidean_sim``, no eps; its gradient at a
      zero difference is 0 rather than NaN);
    - ``"manhattan"``: ``‖a − p‖₁``;
    - ``"cosine"``: ``1 − cos(a, p)`` with ``F.normalize`` (eps 1e-12).

    Args:
      anchors: ``[batch, dim]`` float.
      positives: ``[batch, dim]`` float; row ``i`` is the positive of ``anchors[i]``.
      negatives: ``[batch, dim]`` float; row ``i`` is the negative of ``anchors[i]``.
      margin: ``>= 0``; how much farther the negative must be than the positive.
      distance: ``"euclidean"``, ``"cosine"`` or ``"manhattan"``.

    Returns:
      A float32 scalar, the mean over the batch.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import triplet_margin
      >>> a = jnp.zeros((2, 2))
      >>> p = jnp.array([[3.0, 0.0], [0.0, 1.0]])
      >>> n = jnp.array([[0.0, 4.0], [0.0, 10.0]])
      >>> # row 0: 3 - 4 + 5 = 4; row 1: 1 - 10 + 5 < 0 -> 0
      >>> float(triplet_margin(a, p, n))
      2.0

    References:
      Schroff et al., "FaceNet: A Unified Embedding for Face Recognition and Clustering",
      CVPR 2015. sentence-transformers ``TripletLoss`` (``distance_metric=EUCLIDEAN``,
      ``triplet_margin=5``).
    """
    anchors, positives, negatives = map(st.to_array, (anchors, positives, negatives))
    st.check_embeddings(anchors, "anchors")
    st.check_like(anchors, "anchors", positives, "positives")
    st.check_like(anchors, "anchors", negatives, "negatives")
    st.check_margin(margin)
    v.check_choice(distance, "distance", _TRIPLET_DISTANCES)
    return _triplet_margin(anchors, positives, negatives, margin, distance)


def _triplet_distance(a, b, distance):
    if distance == "euclidean":
        return st.safe_norm(a - b)
    if distance == "manhattan":
        return jnp.sum(jnp.abs(a - b), axis=-1)
    return 1.0 - st.st_pairwise_cos_sim(a, b)


@functools.partial(jax.jit, static_argnames=("distance",))
@propagate_nan
def _triplet_margin(anchors, positives, negatives, margin, distance):
    a, p, n = as_float(anchors), as_float(positives), as_float(negatives)
    d_pos = _triplet_distance(a, p, distance)
    d_neg = _triplet_distance(a, n, distance)
    return jnp.mean(jax.nn.relu(d_pos - d_neg + margin))


def _check_batch(embeddings, labels):
    embeddings, labels = st.to_array(embeddings), st.to_array(labels)
    st.check_embeddings(embeddings, "embeddings")
    labels = v.check_labels(labels, "labels", embeddings.shape[0])
    return embeddings, labels


def _hardest(embeddings, labels):
    """Per-anchor hardest positive and hardest negative distance, as sentence-transformers.

    Hardest positive: ``max_j mask_pos · d`` (0 for an anchor without positives). Hardest
    negative: ``min_j d + max_k d · (1 − mask_neg)`` — for an anchor without negatives this is
    the row maximum. ``max``/``min`` send their gradient to the first extremal index (torch).
    """
    x = as_float(embeddings)
    labels = st.as_labels(labels)
    d = st.st_euclidean_distance_matrix(x)
    n = x.shape[0]
    same = labels[:, None] == labels[None, :]
    not_self = ~jnp.eye(n, dtype=bool)
    mask_pos = (same & not_self).astype(d.dtype)
    mask_neg = (~same).astype(d.dtype)
    hardest_pos = st.first_max(mask_pos * d)
    row_max = st.first_max(d)
    hardest_neg = st.first_min(d + row_max[:, None] * (1.0 - mask_neg))
    return hardest_pos, hardest_neg


def batch_hard_triplet(
    embeddings: ArrayLike, labels: ArrayLike, *, margin: float = 5.0
) -> jax.Array:
    """Batch-hard triplet loss: each anchor's hardest positive against its hardest negative.

    Euclidean distances are computed as sentence-transformers does (``‖x_i‖² − 2⟨x_i,x_j⟩ +
    ‖x_j‖²``, clamped at 0, zero distances kept at exactly 0 with zero gradient). For anchor
    ``i``: ``hp_i = max_{j≠i, y_j=y_i} d_ij`` (0 when ``i`` has no positive) and
    ``hn_i = min_{y_j≠y_i} d_ij`` (when ``i`` has no negative, sentence-transformers' masking
    yields the row maximum ``max_j d_ij``). Loss ``mean_i max(hp_i − hn_i + margin, 0)``; every
    anchor counts in the mean.

    Args:
      embeddings: ``[batch, dim]`` float.
      labels: ``[batch]`` integer class labels.
      margin: ``>= 0``.

    Returns:
      A float32 scalar, the mean over anchors.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import batch_hard_triplet
      >>> x = jnp.array([[0.0], [1.0], [3.0], [7.0]])
      >>> y = jnp.array([0, 0, 1, 1])
      >>> # (hp, hn) per anchor: (1, 3), (1, 2), (4, 2), (4, 6) -> (3 + 4 + 7 + 3) / 4
      >>> float(batch_hard_triplet(x, y))
      4.25

    References:
      Hermans et al., "In Defense of the Triplet Loss for Person Re-Identification", 2017.
      sentence-transformers ``BatchHardTripletLoss`` (``euclidean_distance``, ``margin=5``).
    """
    embeddings, labels = _check_batch(embeddings, labels)
    st.check_margin(margin)
    return _batch_hard(embeddings, labels, margin)


@jax.jit
@propagate_nan
def _batch_hard(embeddings, labels, margin):
    hp, hn = _hardest(embeddings, labels)
    tl = hp - hn + margin
    return jnp.mean(jnp.where(tl < 0, 0.0, tl))


def batch_hard_soft_margin_triplet(embeddings: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Batch-hard triplet loss with a soft margin: ``mean_i softplus(hp_i − hn_i)``.

    Same mining as :func:`batch_hard_triplet` (hardest positive, hardest negative, Euclidean,
    sentence-transformers masking); ``softplus`` is torch's (``x`` itself above 20).

    Args:
      embeddings: ``[batch, dim]`` float.
      labels: ``[batch]`` integer class labels.

    Returns:
      A float32 scalar, the mean over anchors.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import batch_hard_soft_margin_triplet
      >>> x = jnp.array([[0.0], [1.0], [3.0], [7.0]])
      >>> y = jnp.array([0, 0, 1, 1])
      >>> # mean of log(1 + e^t) for hp - hn = -2, -1, 2, -2
      >>> round(float(batch_hard_soft_margin_triplet(x, y)), 4)
      0.6735

    References:
      Hermans et al., "In Defense of the Triplet Loss for Person Re-Identification", 2017.
      sentence-transformers ``BatchHardSoftMarginTripletLoss`` (``euclidean_distance``).
    """
    embeddings, labels = _check_batch(embeddings, labels)
    return _batch_hard_soft(embeddings, labels)


def _torch_softplus(x):
    # torch.nn.functional.softplus(beta=1, threshold=20): linear above the threshold.
    return jnp.where(x > 20.0, x, jnp.log1p(jnp.exp(jnp.minimum(x, 20.0))))


@jax.jit
@propagate_nan
def _batch_hard_soft(embeddings, labels):
    hp, hn = _hardest(embeddings, labels)
    return jnp.mean(_torch_softplus(hp - hn))


def batch_all_triplet(
    embeddings: ArrayLike, labels: ArrayLike, *, margin: float = 5.0
) -> jax.Array:
    """Batch-all triplet loss: every valid triplet, averaged over those with a positive loss.

    Valid triplets are ``(a, p, n)`` with ``p ≠ a``, ``y_p = y_a`` and ``y_n ≠ y_a``; each has
    loss ``max(d_ap − d_an + margin, 0)`` (sentence-transformers' Euclidean distances). The sum
    of all triplet losses is divided by ``(number of triplets with loss > 1e-16) + 1e-16``, so a
    batch without any such triplet gives 0.

    Args:
      embeddings: ``[batch, dim]`` float.
      labels: ``[batch]`` integer class labels.
      margin: ``>= 0``.

    Returns:
      A float32 scalar, the mean over the positive-loss triplets. Compute is ``O(batch³)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import batch_all_triplet
      >>> x = jnp.array([[0.0], [1.0], [3.0], [7.0]])
      >>> y = jnp.array([0, 0, 1, 1])
      >>> # positive triplet losses 3, 4, 6, 7, 2, 3 (two more are 0) -> 25 / 6
      >>> round(float(batch_all_triplet(x, y)), 4)
      4.1667

    References:
      Hermans et al., "In Defense of the Triplet Loss for Person Re-Identification", 2017.
      sentence-transformers ``BatchAllTripletLoss`` (``euclidean_distance``, ``margin=5``).
    """
    embeddings, labels = _check_batch(embeddings, labels)
    st.check_margin(margin)
    return _batch_all(embeddings, labels, margin)


@jax.jit
@propagate_nan
def _batch_all(embeddings, labels, margin):
    x = as_float(embeddings)
    labels = st.as_labels(labels)
    d = st.st_euclidean_distance_matrix(x)
    n = x.shape[0]
    same = labels[:, None] == labels[None, :]
    pos = same & ~jnp.eye(n, dtype=bool)
    valid = (pos[:, :, None] & ~same[:, None, :]).astype(d.dtype)
    tl = valid * (d[:, :, None] - d[:, None, :] + margin)
    tl = jnp.where(tl < 0, 0.0, tl)
    num_positive = jnp.sum(tl > 1e-16).astype(d.dtype)
    return jnp.sum(tl) / (num_positive + 1e-16)


def batch_semi_hard_triplet(
    embeddings: ArrayLike, labels: ArrayLike, *, margin: float = 5.0
) -> jax.Array:
    """Batch semi-hard triplet loss (FaceNet mining, TF-Addons / sentence-transformers semantics).

    For every positive pair ``(a, p)`` (``p ≠ a``, same label) the negative is the closest one
    *farther* than the positive, ``min {d_an : y_n ≠ y_a, d_an > d_ap}``; when no negative is
    farther, the farthest negative ``max_n d_an`` is used instead (0 when ``a`` has no
    negative). Loss ``Σ_(a,p) max(d_ap − d_an* + margin, 0) / max(#positive pairs, 1e-16)``
    with sentence-transformers' Euclidean distances, so a batch without positive pairs gives 0.
    Mining uses a per-row sort and search (``O(batch² log batch)``), as sentence-transformers v6.

    Args:
      embeddings: ``[batch, dim]`` float.
      labels: ``[batch]`` integer class labels.
      margin: ``>= 0``.

    Returns:
      A float32 scalar, the mean over positive pairs.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import batch_semi_hard_triplet
      >>> x = jnp.array([[0.0], [1.0], [3.0], [7.0]])
      >>> y = jnp.array([0, 0, 1, 1])
      >>> # (d_ap, chosen d_an) per pair: (1, 3), (1, 2), (4, 3 = farthest), (4, 6)
      >>> float(batch_semi_hard_triplet(x, y))
      4.0

    References:
      Schroff et al., "FaceNet: A Unified Embedding for Face Recognition and Clustering",
      CVPR 2015; TensorFlow Addons ``triplet_semihard_loss``. sentence-transformers
      ``BatchSemiHardTripletLoss`` (``euclidean_distance``, ``margin=5``).
    """
    embeddings, labels = _check_batch(embeddings, labels)
    st.check_margin(margin)
    return _batch_semi_hard(embeddings, labels, margin)


@jax.jit
@propagate_nan
def _batch_semi_hard(embeddings, labels, margin):
    x = as_float(embeddings)
    labels = st.as_labels(labels)
    d = st.st_euclidean_distance_matrix(x)
    n = x.shape[0]
    adjacency = labels[:, None] == labels[None, :]
    # Closest negative strictly farther than d[a, p]: sort each row's negatives (same-label
    # entries, the anchor itself included, are +inf) and search; the gradient reaches the
    # chosen negative, the first one in a stable sort among ties.
    negatives = jnp.where(adjacency, jnp.inf, d)
    sorted_neg = jnp.sort(negatives, axis=1, stable=True)
    positions = jax.vmap(lambda row, q: jnp.searchsorted(row, q, side="right"))(
        jax.lax.stop_gradient(sorted_neg), jax.lax.stop_gradient(d)
    )
    outside = jnp.take_along_axis(sorted_neg, jnp.minimum(positions, n - 1), axis=1)
    # Farthest negative (TF-Addons' masked maximum; 0 for an anchor without negatives).
    row_min = st.first_min(d)[:, None]
    inside = (st.first_max((d - row_min) * (~adjacency).astype(d.dtype)))[:, None] + row_min
    semi_hard = jnp.where(jnp.isfinite(outside), outside, inside)
    loss_mat = d - semi_hard + margin
    mask_pos = adjacency.astype(d.dtype) - jnp.eye(n, dtype=d.dtype)
    num_pos = jnp.sum(mask_pos)
    return jnp.sum(jnp.maximum(loss_mat * mask_pos, 0.0)) / jnp.maximum(num_pos, 1e-16)
