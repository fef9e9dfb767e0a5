"""Input normalisation of an SAE: the scale ``s`` with ``E‖s·x‖² = d_in``, fitted and folded.

An SAE module may carry an :class:`InputScale` variable ``input_scale`` (a scalar ``s``; the
dense variants always have one, 1 by default; :func:`fit_input_norm` adds it to others such as
:class:`~jaxemb.sae.TopKSAE`). The SAE then works on ``s · x``: ``encode`` multiplies its input by
``s`` and ``decode`` divides its output by ``s``, so callers always see the original units while
the parameters (and losses such as the L1 penalty) live in the normalised space where
``E‖s·x‖² = d_in``. :func:`fit_input_norm` sets ``s`` from a data sample; :func:`fold_input_norm`
folds it into the weights (``s = 1`` afterwards) for export.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from jaxemb.sae._base import check_batch, check_sae


class InputScale(nnx.Variable):
    """A non-trainable scalar ``s`` by which an SAE multiplies its inputs (``nnx.Variable``)."""


def input_scale(model: Any) -> jax.Array:
    """The model's input scale ``s`` (a float32 scalar; 1 for a model without one)."""
    scale = getattr(model, "input_scale", None)
    if scale is None:
        return jnp.ones((), jnp.float32)
    return scale[...]


def scale_inputs(model: Any, x: jax.Array) -> jax.Array:
    """``s · x`` in ``x``'s dtype: raw inputs to the SAE's normalised space."""
    if getattr(model, "input_scale", None) is None:
        return x
    s = input_scale(model)
    return (x * s.astype(x.dtype)).astype(x.dtype)


def unscale_outputs(model: Any, x_hat: jax.Array) -> jax.Array:
    """``x̂ / s``: a reconstruction in the normalised space back to the input units."""
    if getattr(model, "input_scale", None) is None:
        return x_hat
    s = input_scale(model)
    return (x_hat / s.astype(x_hat.dtype)).astype(x_hat.dtype)


def _check_scale_attr(model: Any) -> None:
    scale = getattr(model, "input_scale", None)
    if scale is not None and not isinstance(scale, InputScale):
        raise ValueError(
            f"model.input_scale must be an InputScale variable; got {type(scale).__name__}"
        )


def fit_input_norm(model: nnx.Module, x: ArrayLike) -> jax.Array:
    """Sets ``model.input_scale`` so that the SAE sees inputs with ``E‖s·x‖² = d_in``.

    ``s = sqrt(d_in / mean_n ‖x_n‖²)`` from a sample ``x`` of raw inputs. Whatever was in
    ``b_dec`` keeps its place in input units (it is multiplied by ``s_new / s_old``), so calling
    this after :func:`init_b_dec` is right; call it before :func:`make_train_step` snapshots the
    state. ``encode`` then scales its input by ``s`` and ``decode`` divides by ``s``, so the
    model's reconstruction is in the original units.

    Args:
      model: an SAE module. The dense variants (:class:`ReluSAE`, :class:`GatedSAE`,
        :class:`JumpReluSAE`, :class:`BatchTopKSAE`) always carry ``input_scale``; other
        modules (:class:`TopKSAE`) get one added here, so their variables stay plain
        ``nnx.Param`` until normalisation is asked for.
      x: ``[N, d_in]`` float sample of raw training inputs.

    Returns:
      The new scale ``s`` (float32 scalar).

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.ReluSAE(4, 8, rngs=nnx.Rngs(0))
      >>> x = 10.0 * jnp.ones((3, 4))                   # ‖x‖² = 400, d_in = 4
      >>> round(float(sae.fit_input_norm(model, x)), 4)
      0.1

    References:
      Anthropic, "Circuits Updates — April 2023" (inputs scaled so ``E‖x‖² = d_in``); SAELens
      ``normalize_activations="expected_average_only_in"``.
    """
    check_sae(model)
    _check_scale_attr(model)
    check_batch(x, model.d_in)
    x = jnp.asarray(x)
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean_sq = float(jnp.mean(jnp.sum(jnp.square(x32), axis=1)))
    if not np.isfinite(mean_sq) or mean_sq <= 0.0:
        raise ValueError(f"x must have finite, non-zero mean squared norm; got {mean_sq!r}")
    if getattr(model, "input_scale", None) is None:
        model.input_scale = InputScale(jnp.ones((), jnp.float32))
    s_old = model.input_scale[...]
    s_new = jnp.asarray(np.sqrt(model.d_in / mean_sq), s_old.dtype)
    b = model.b_dec[...]
    model.b_dec.set_value((b * (s_new / s_old)).astype(b.dtype))
    model.input_scale.set_value(s_new)
    return s_new


def fold_input_norm(model: nnx.Module) -> None:
    """Folds ``input_scale`` into the weights so the model computes the same with ``s = 1``.

    ``(s·x − b_dec) W_enc = (x − b_dec/s)(s·W_enc)`` and ``(z W_dec + b_dec)/s = z (W_dec/s) +
    b_dec/s``: ``W_enc ← s·W_enc``, ``W_dec ← W_dec/s``, ``b_dec ← b_dec/s``, ``s ← 1``. The
    encoding and the reconstruction are unchanged; use it before exporting to tools that know
    nothing of the scale (SAELens folds its normalisation the same way).

    Args:
      model: an SAE module with ``W_enc``, ``W_dec``, ``b_dec`` and ``input_scale``.

    Returns:
      None; the model is updated in place.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.ReluSAE(4, 8, rngs=nnx.Rngs(0))
      >>> x = 10.0 * jnp.arange(8.0).reshape(2, 4)
      >>> _ = sae.fit_input_norm(model, x)
      >>> before = model(x).reconstruction
      >>> sae.fold_input_norm(model)
      >>> float(model.input_scale[...]), bool(np.allclose(model(x).reconstruction, before))
      (1.0, True)

    References:
      SAELens ``fold_activation_norm_scaling_factor``.
    """
    check_sae(model)
    _check_scale_attr(model)
    if getattr(model, "input_scale", None) is None:
        return
    s = model.input_scale[...]
    for name, f in (("W_enc", lambda w: w * s), ("W_dec", lambda w: w / s), ("b_dec", None)):
        p = getattr(model, name)
        value = p[...]
        new = value / s if f is None else f(value)
        p.set_value(new.astype(value.dtype))
    model.input_scale.set_value(jnp.ones_like(s))
