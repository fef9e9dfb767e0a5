"""Dead-latent resampling (Anthropic's recipe), a pure function on a ``TrainState``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.sae._base import check_batch, check_sae, param_axes, unit_norm_rows
from jaxemb.sae._scaling import scale_inputs
from jaxemb.sae._state import TrainState

# Per-latent parameters that resampling resets to zero besides W_enc/b_enc/W_dec.
_RESET_TO_ZERO = ("b_enc", "b_mag", "r_mag")


def latent_axis(axes: tuple[str | None, ...] | None) -> int | None:
    """The axis named ``"latent"`` in a parameter's logical axes (``None``: no latent axis)."""
    return None if axes is None or "latent" not in axes else axes.index("latent")


def _mask_latents(
    tree: dict, dead: jax.Array, axes: dict, d_sae: int, fill: dict | None = None
) -> dict:
    """Replaces the dead latents' slices by ``fill[name]`` (no fill: every per-latent one by 0)."""
    out = {}
    for name, value in tree.items():
        axis = latent_axis(axes.get(name))
        if axis is None or (fill is not None and name not in fill):
            out[name] = value
            continue
        shape = [1] * value.ndim
        shape[axis] = d_sae
        m = dead.reshape(shape)
        new = jnp.zeros_like(value) if fill is None else fill[name]
        out[name] = jnp.where(m, new.astype(value.dtype), value)
    return out


def reset_moments(opt_state: Any, params: dict, dead: jax.Array, axes: dict, d_sae: int) -> Any:
    """Zeroes every optimiser-state entry shaped like ``params`` at the dead latents.

    Walks the optax state and, in each sub-tree that is a dict with the same keys as ``params``
    (Adam's ``mu`` and ``nu``, momentum traces...), zeroes the dead latents' rows/columns.
    Step counters and other scalars are untouched.
    """
    keys = set(params)

    def is_param_dict(node):
        return isinstance(node, dict) and set(node) == keys

    def fix(node):
        if is_param_dict(node):
            return _mask_latents(node, dead, axes, d_sae)
        return node

    return jax.tree.map(fix, opt_state, is_leaf=is_param_dict)


def resample_dead(
    state: Any,
    model: nnx.Module,
    x: ArrayLike,
    *,
    key: jax.Array,
    dead: ArrayLike | None = None,
    encoder_scale: float = 0.2,
) -> Any:
    """Re-initialises dead latents towards high-loss inputs (Anthropic's resampling), purely.

    1. Per-input loss ``ℓ_n = ‖x_n − x̂_n‖²`` under ``state``'s parameters; each latent draws an
       input ``n`` with probability ``∝ ℓ_n²``.
    2. For each dead latent ``j``: with ``u = (s·x_n − b_dec) / ‖s·x_n − b_dec‖`` (the input in
       the SAE's normalised space, relative to the decoder bias) ``W_dec[j] = u``,
       ``W_enc[:, j] = encoder_scale · mean_alive ‖W_enc[:, i]‖ · u``, ``b_enc[j] = 0`` (and a
       Gated SAE's ``r_mag[j] = b_mag[j] = 0``).
    3. The optimiser's moments of those rows/columns are zeroed and their dead counters reset.

    Live latents, ``b_dec`` and every other parameter are untouched.

    Args:
      state: a ``TrainState`` from :func:`make_train_step`.
      model: the module the state belongs to (its structure and buffers are read, not its
        parameter values).
      x: ``[N, d_in]`` float inputs to sample from (raw units), e.g. a large batch.
      key: PRNG key for the sampling.
      dead: optional ``[d_sae]`` bool mask; default ``tokens_since_fired > model.dead_threshold``.
      encoder_scale: the 0.2 of the recipe.

    Returns:
      The new ``TrainState``.

    Examples:
      >>> import jax, optax, numpy as np
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.ReluSAE(4, 6, rngs=nnx.Rngs(0))
      >>> train_step, state = sae.make_train_step(model, optax.adam(1e-3))
      >>> x = jax.random.normal(jax.random.key(1), (32, 4))
      >>> dead = np.array([True, False, False, False, False, True])
      >>> new = sae.resample_dead(state, model, x, key=jax.random.key(2), dead=dead)
      >>> W = np.asarray(new.params["W_dec"])
      >>> np.round(np.linalg.norm(W[dead], axis=1), 4).tolist()
      [1.0, 1.0]

    References:
      Bricken et al., "Towards Monosemanticity" (2023), and Anthropic, "Circuits Updates —
      April 2023" (resampling with probability ∝ loss², encoder norm 0.2 × mean alive norm,
      Adam state reset); SAELens ``resample_neurons`` (removed in later versions).
    """
    if not isinstance(state, TrainState):
        raise ValueError(f"state must be a TrainState; got {type(state).__name__}")
    check_sae(model)
    check_batch(x, model.d_in)
    v.check_positive(encoder_scale, "encoder_scale", strict=False)
    if dead is not None:
        dead = v.check_array(dead, "dead", ndim=1, kind="int")
        if np.shape(dead)[0] != model.d_sae:
            raise ValueError(f"dead must be [d_sae={model.d_sae}]; got {v.shape_str(dead)}")
        dead = jnp.asarray(dead, jnp.bool_)
    else:
        threshold = getattr(model, "dead_threshold", None)
        if threshold is None:
            raise ValueError("dead must be given for a model without dead_threshold")
        dead = state.dead.tokens_since_fired > threshold
    graphdef = nnx.graphdef(model)
    axes = param_axes(model)
    return _resample(
        state, graphdef, jnp.asarray(x), key, dead, float(encoder_scale), axes, model.d_sae
    )


def _resample(state, graphdef, x, key, dead, encoder_scale, axes, d_sae):
    params = state.params
    buffers = state.buffers if state.buffers is not None else {}
    m = nnx.merge(graphdef, params, buffers) if buffers else nnx.merge(graphdef, params)
    x_hat = jax.lax.stop_gradient(m(x).reconstruction)
    f32 = jnp.promote_types(x.dtype, jnp.float32)
    xs = scale_inputs(m, x).astype(f32)
    err = jnp.sum(jnp.square(x.astype(f32) - x_hat.astype(f32)), axis=1)
    weight = jnp.square(err / jnp.maximum(jnp.max(err), jnp.finfo(f32).tiny))
    logits = jnp.where(weight > 0, jnp.log(jnp.maximum(weight, jnp.finfo(f32).tiny)), -jnp.inf)
    # An all-zero loss (perfect reconstruction) falls back to uniform sampling.
    logits = jnp.where(jnp.all(weight <= 0), jnp.zeros_like(logits), logits)
    picks = jax.random.categorical(key, logits, shape=(d_sae,))
    centred = xs[picks] - params["b_dec"].astype(f32)[None, :]
    u = unit_norm_rows(centred)  # [d_sae, d_in]
    W_enc = params["W_enc"]
    enc_norms = jnp.linalg.norm(W_enc.astype(f32), axis=0)
    alive = ~dead
    n_alive = jnp.sum(alive)
    mean_alive = jnp.where(
        n_alive > 0, jnp.sum(jnp.where(alive, enc_norms, 0.0)) / jnp.maximum(n_alive, 1), 1.0
    )
    fill = {"W_dec": u, "W_enc": (encoder_scale * mean_alive * u).T}
    for name in _RESET_TO_ZERO:
        if name in params:
            fill[name] = jnp.zeros_like(params[name])
    new_params = _mask_latents(params, dead, axes, d_sae, fill)
    opt_state = reset_moments(state.opt_state, params, dead, axes, d_sae)
    counts = jnp.where(dead, 0, state.dead.tokens_since_fired).astype(jnp.int32)
    return state._replace(
        params=new_params, opt_state=opt_state, dead=state.dead._replace(tokens_since_fired=counts)
    )
