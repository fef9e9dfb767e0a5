"""Numerical building blocks shared by the losses (private)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# torch.nn.functional.normalize's default eps, so truncated/normalised embeddings agree with the
# PyTorch references bit for bit in float32.
NORM_EPS = 1e-12


def as_float(x: jax.Array) -> jax.Array:
    """Promotes inputs to at least float32 (bfloat16/float16 accumulate in float32)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def l2_normalize(x: jax.Array, *, axis: int = -1, eps: float = NORM_EPS) -> jax.Array:
    """``x / max(‖x‖, eps)`` along ``axis`` (``torch.nn.functional.normalize`` semantics).

    The norm is computed with a safe square root so zero vectors give zero, with finite gradient.
    """
    x = as_float(x)
    sq = jnp.sum(x * x, axis=axis, keepdims=True)
    safe = jnp.where(sq > eps * eps, sq, 1.0)
    norm = jnp.where(sq > eps * eps, jnp.sqrt(safe), eps)
    return x / norm


def masked_logsumexp(logits: jax.Array, mask: jax.Array, *, axis: int = -1) -> jax.Array:
    """Log-sum-exp of ``logits`` over entries where ``mask`` is True (``-inf`` when none)."""
    neg = jnp.finfo(logits.dtype).min
    m = jnp.max(jnp.where(mask, logits, neg), axis=axis, keepdims=True)
    m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
    # Masked entries become exp(-inf) = 0 *before* exponentiating, so no inf·0 in the gradient.
    s = jnp.sum(jnp.exp(jnp.where(mask, logits - m, -jnp.inf)), axis=axis, keepdims=True)
    # Rows with no admissible entry give -inf with a zero (not NaN) gradient; a NaN among the
    # admissible entries stays NaN (it must not read as "no entry").
    has_any = s > 0
    empty = jnp.where(jnp.isnan(s), jnp.nan, -jnp.inf)
    out = jnp.where(has_any, jnp.log(jnp.where(has_any, s, 1.0)) + m, empty)
    return jnp.squeeze(out, axis=axis)
