"""PyTorch/sentence-transformers-faithful numerical pieces for the pair, triplet and score losses.

sentence-transformers builds its losses from a handful of torch primitives whose edge cases
(eps placement, what happens at a zero distance, which index a ``max`` sends its gradient to)
decide the exact numbers. The helpers here reproduce those primitives in JAX (private module).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxemb import _validate as v
from jaxemb.losses._common import l2_normalize

# torch.nn.functional.cosine_similarity's default eps (norms are clamped to it, separately).
COSINE_EPS = 1e-8
# torch.nn.functional.pairwise_distance's default eps (added to the difference).
PAIRWISE_DISTANCE_EPS = 1e-6
HIGHEST = jax.lax.Precision.HIGHEST


def safe_norm(x: jax.Array, *, axis: int = -1, keepdims: bool = False) -> jax.Array:
    """Euclidean norm with a zero (not NaN) gradient at the zero vector, like torch's."""
    sq = jnp.sum(x * x, axis=axis, keepdims=keepdims)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def torch_cosine_similarity(a: jax.Array, b: jax.Array, *, eps: float = COSINE_EPS) -> jax.Array:
    """Row-wise ``torch.nn.functional.cosine_similarity``: ``Σ (a/max(‖a‖,eps))·(b/max(‖b‖,eps))``.

    As in ATen, the clamp to ``eps`` happens outside autograd: the gradient flows through the
    unclamped norm (which is zero at the zero vector).
    """

    def clamped_norm(x):
        n = safe_norm(x, keepdims=True)
        return n + jax.lax.stop_gradient(jnp.maximum(n, eps) - n)

    return jnp.sum((a / clamped_norm(a)) * (b / clamped_norm(b)), axis=-1)


def st_pairwise_cos_sim(a: jax.Array, b: jax.Array) -> jax.Array:
    """sentence-transformers ``util.pairwise_cos_sim``: ``F.normalize`` (eps 1e-12) then dot."""
    return jnp.sum(l2_normalize(a) * l2_normalize(b), axis=-1)


def torch_pairwise_distance(a: jax.Array, b: jax.Array, *, p: int) -> jax.Array:
    """``torch.nn.functional.pairwise_distance(a, b, p)``: ``‖a − b + 1e-6‖_p`` row-wise."""
    diff = a - b + PAIRWISE_DISTANCE_EPS
    if p == 1:
        return jnp.sum(jnp.abs(diff), axis=-1)
    return safe_norm(diff)


def first_max(x: jax.Array, axis: int = 1) -> jax.Array:
    """``x.max(axis)`` with torch semantics: value of, and gradient to, the first maximal entry."""
    idx = jnp.expand_dims(jnp.argmax(x, axis=axis), axis)
    return jnp.squeeze(jnp.take_along_axis(x, idx, axis=axis), axis)


def first_min(x: jax.Array, axis: int = 1) -> jax.Array:
    """``x.min(axis)`` with torch semantics: value of, and gradient to, the first minimal entry."""
    idx = jnp.expand_dims(jnp.argmin(x, axis=axis), axis)
    return jnp.squeeze(jnp.take_along_axis(x, idx, axis=axis), axis)


def st_euclidean_distance_matrix(x: jax.Array) -> jax.Array:
    """sentence-transformers ``BatchHardTripletLossDistanceFunction.euclidean_distance``.

    ``‖x_i‖² − 2⟨x_i, x_j⟩ + ‖x_j‖²`` from one Gram matrix (so the diagonal is exactly 0),
    clamped at 0, then ``sqrt`` except where the squared distance is exactly 0 — those entries
    are 0 with a zero gradient (ST's ``mask · 1e-16`` trick).
    """
    dot = jnp.matmul(x, x.T, precision=HIGHEST)
    sq = jnp.diagonal(dot)
    d2 = sq[None, :] - 2.0 * dot + sq[:, None]
    d2 = jnp.where(d2 < 0, 0.0, d2)
    zero = d2 == 0
    return jnp.where(zero, 0.0, jnp.sqrt(jnp.where(zero, 1.0, d2)))


def to_array(x: Any) -> Any:
    """Leaves arrays (and tracers) alone; turns lists and scalars into NumPy arrays."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return x
    return np.asarray(x)


def check_embeddings(x: Any, name: str) -> None:
    """A ``[batch, dim]`` float array."""
    x = v.check_array(x, name, ndim=2)
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature; got shape {v.shape_str(x)}")


def check_like(ref: Any, ref_name: str, x: Any, name: str) -> None:
    """A float array with exactly ``ref``'s shape."""
    x = v.check_array(x, name, ndim=2)
    if tuple(x.shape) != tuple(ref.shape):
        raise ValueError(
            f"{name} must be [batch, dim] like {ref_name} {v.shape_str(ref)}; got {v.shape_str(x)}"
        )


def check_vector(x: Any, name: str, batch: int, *, kind: str = "number") -> None:
    """A ``[batch]`` array (labels, scores or margins), one entry per row."""
    x = v.check_array(x, name, ndim=1, kind=kind)
    if x.shape[0] != batch:
        raise ValueError(f"{name} must have shape [{batch}] (one per row); got {v.shape_str(x)}")


def check_margin(margin: Any) -> None:
    """``margin >= 0`` (finite)."""
    v.check_positive(margin, "margin", strict=False)


def as_labels(labels: Any) -> jax.Array:
    """Labels as a JAX array (bool becomes int so comparisons behave as in torch)."""
    labels = jnp.asarray(labels)
    if labels.dtype == np.bool_:
        labels = labels.astype(jnp.int32)
    return labels
