"""AuxK (Gao et al. 2024): dead latents reconstruct the residual, in eai-sparsify semantics."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxemb.sae._base import sum_squared_error
from jaxemb.sae._kernels import (
    _sparse_decode,
    encoder_pre_activations,
    gather_pre_activations,
    row_top_k,
)


def auxk_loss(
    pre: jax.Array,
    residual: jax.Array,
    W_dec: jax.Array,
    dead_mask: jax.Array,
    tv: jax.Array,
    encoder: tuple[jax.Array, ...] | None = None,
) -> jax.Array:
    # encoder = (x, W_enc, b_enc, b_dec) that produced pre: the gradient then reaches the encoder
    # through the k_aux selected columns only (same values and gradients as plain autodiff).
    d_sae, d_in = W_dec.shape
    k_aux_nominal = max(d_in // 2, 1)  # sparsify: y.shape[-1] // 2 (guarded for d_in = 1)
    k_aux = min(k_aux_nominal, d_sae)  # static; rows beyond n_dead are masked below
    n_dead = jnp.sum(dead_mask).astype(residual.dtype)
    scale = jnp.minimum(n_dead / k_aux_nominal, 1.0)

    def aux(pre, W_dec, encoder):
        if encoder is not None:  # recomputed here, so pre is only formed when latents are dead
            pre = encoder_pre_activations(*encoder)
        masked = jnp.where(dead_mask[None, :], jax.nn.relu(pre), -jnp.inf)
        if encoder is None:
            values, indices = row_top_k(masked, k_aux)
        else:
            _, indices = row_top_k(jax.lax.stop_gradient(masked), k_aux)
            values = jax.nn.relu(gather_pre_activations(pre, indices, *encoder))
        # With n_dead < k_aux the tail of the top-k holds live latents at -inf: drop them, which
        # is sparsify's top-min(k_aux, n_dead).
        values = jnp.where(dead_mask[indices], values, 0.0)
        e_hat = _sparse_decode(values, indices, W_dec)
        return (scale * sum_squared_error(e_hat, residual) / tv).astype(out_dtype)

    out_dtype = jnp.promote_types(residual.dtype, tv.dtype)
    if encoder is None:
        return aux(pre, W_dec, None)
    # AuxK is exactly 0 (value and gradient) without dead latents: skip its top_k and decode.
    return jax.lax.cond(
        n_dead > 0, aux, lambda *_: jnp.zeros((), out_dtype), None, W_dec, tuple(encoder)
    )
