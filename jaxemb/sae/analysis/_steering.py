"""Steering with SAE latents: add a decoder direction, or clamp a latent of the code."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxemb import _validate as v
from jaxemb.sae._base import SparseCode, check_batch, check_sae


def _check_latent(latent: Any, d_sae: int, name: str = "latent") -> None:
    if isinstance(latent, bool) or not isinstance(latent, (int, np.integer)):
        raise ValueError(f"{name} must be an integer latent index; got {latent!r}")
    if not 0 <= int(latent) < d_sae:
        raise ValueError(f"{name} must be in [0, d_sae={d_sae}); got {latent}")


def _check_scalar(value: Any, name: str) -> None:
    if not v.is_concrete(value):
        return
    a = np.asarray(value)
    if a.ndim != 0 or not (np.issubdtype(a.dtype, np.number)) or np.issubdtype(a.dtype, np.bool_):
        raise ValueError(f"{name} must be a real scalar; got {value!r}")
    if not np.isfinite(a):
        raise ValueError(f"{name} must be finite; got {value!r}")


def steer(model: Any, x: Any, latent: int, strength: Any) -> jax.Array:
    """Steers inputs along a latent's decoder direction: ``x + strength · W_dec[latent]``.

    The decoder row is added as stored. For a model with an input scale ``s``
    (:func:`~jaxemb.sae.fit_input_norm`), decoder rows live in the scaled space, so raising the
    latent's activation by ``a`` moves a reconstruction by ``a · W_dec[latent] / s``: pass
    ``strength = a / s`` for that.

    Args:
      model: an SAE module (any :mod:`jaxemb.sae` variant).
      x: ``[N, d_in]`` or ``[d_in]`` float embeddings.
      latent: index of the latent in ``[0, d_sae)``.
      strength: scalar multiple of the decoder row to add (negative steers away).

    Returns:
      Array of ``x``'s shape.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.TopKSAE(2, 3, k=1, rngs=nnx.Rngs(0))
      >>> model.W_dec[...] = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
      >>> sae.analysis.steer(model, jnp.array([[1.0, 1.0]]), 2, 5.0).tolist()
      [[4.0, 5.0]]

    References:
      "Concept Steerers: Leveraging K-Sparse Autoencoders for Controllable Generations"
      (Kim and Ghadiyaram, 2025): add the scaled decoder direction of a concept latent;
      O'Neill et al. (2024) steer semantic search the same way.
    """
    check_sae(model)
    x = v.check_array(x, "x", ndim=(1, 2), kind="float")
    if np.shape(x)[-1] != model.d_in:
        raise ValueError(f"x must be [N, d_in={model.d_in}] or [d_in]; got {v.shape_str(x)}")
    _check_latent(latent, model.d_sae)
    _check_scalar(strength, "strength")
    x = jnp.asarray(x)
    row = model.W_dec[...][int(latent)]
    if x.ndim == 2:
        row = row[None, :]
    return (x + jnp.asarray(strength, row.dtype) * row).astype(jnp.result_type(x, row))


def clamp(model: Any, x: Any, latent: int, value: Any) -> jax.Array:
    """Sets one latent of the code to ``value``, decodes, and adds the reconstruction error back.

    ``out = decode(code with latent := value) + (x − decode(code))`` with ``code = encode(x)``:
    only the part of ``x`` the SAE explains changes, so clamping a latent to its current value
    returns ``x`` (up to rounding). For a sparse code the latent's entries are zeroed and a new
    ``(value, latent)`` entry is appended, which is the same as setting it in the dense code.

    Args:
      model: an SAE module with ``encode`` and ``decode``.
      x: ``[N, d_in]`` float embeddings.
      latent: index of the latent in ``[0, d_sae)``.
      value: scalar (or ``[N]``) activation to clamp it to (0 ablates the latent).

    Returns:
      ``[N, d_in]`` edited embeddings.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.TopKSAE(2, 2, k=1, rngs=nnx.Rngs(0))
      >>> model.W_enc[...] = jnp.eye(2)
      >>> model.W_dec[...] = jnp.eye(2)
      >>> x = jnp.array([[3.0, 1.0]])                  # code: latent 0 = 3, error [0, 1]
      >>> sae.analysis.clamp(model, x, 0, 10.0).tolist()
      [[10.0, 1.0]]
      >>> sae.analysis.clamp(model, x, 1, 4.0).tolist()
      [[3.0, 5.0]]

    References:
      O'Neill et al., "Disentangling Dense Embeddings with Sparse Autoencoders" (2024),
      Sec. 6 (feature-clamped semantic search with the SAE error term added back); Templeton
      et al., "Scaling Monosemanticity" (2024), feature clamping.
    """
    check_sae(model)
    check_batch(x, model.d_in)
    _check_latent(latent, model.d_sae)
    x = jnp.asarray(x)
    n = x.shape[0]
    if v.is_concrete(value) and np.ndim(value) == 1:
        value = v.check_array(value, "value", ndim=1, kind="number")
        if np.shape(value)[0] != n:
            raise ValueError(f"value must be a scalar or [N={n}]; got {v.shape_str(value)}")
    else:
        _check_scalar(value, "value")
    code = model.encode(x)
    x_hat = model.decode(code)
    if isinstance(code, SparseCode):
        vals = jnp.asarray(code.values)
        new_col = jnp.broadcast_to(jnp.asarray(value, vals.dtype), (n,))[:, None]
        hit = code.indices == int(latent)
        edited = SparseCode(
            jnp.concatenate([jnp.where(hit, jnp.zeros_like(vals), vals), new_col], axis=1),
            jnp.concatenate(
                [code.indices, jnp.full((n, 1), int(latent), code.indices.dtype)], axis=1
            ),
        )
    else:
        z = jnp.asarray(code)
        edited = z.at[:, int(latent)].set(jnp.broadcast_to(jnp.asarray(value, z.dtype), (n,)))
    return model.decode(edited) + (x - x_hat)
