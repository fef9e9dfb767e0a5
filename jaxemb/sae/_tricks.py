"""SAE training tricks: input normalisation, schedules and dead-latent resampling.

* Input normalisation: an SAE module may carry an :class:`InputScale` variable ``input_scale``
  (a scalar ``s``; the dense variants always have one, 1 by default; :func:`fit_input_norm` adds
  it to others such as :class:`TopKSAE`). The SAE then works on ``s · x``: ``encode`` multiplies its
  input by ``s`` and ``decode`` divides its output by ``s``, so callers always see the original
  units while the parameters (and losses such as the L1 penalty) live in the normalised space
  where ``E‖s·x‖² = d_in``. :func:`fit_input_norm` sets ``s`` from a data sample;
  :func:`fold_input_norm` folds it into the weights (``s = 1`` afterwards) for export.
* Schedules for ``make_train_step(..., schedules=...)``: :func:`l1_warmup`, :func:`k_anneal`,
  and :func:`lr_schedule` (an optax schedule for the optimiser).
* Dead-latent resampling: :func:`resample_dead`, a pure function on a ``TrainState``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.sae._base import check_batch, check_sae, unit_norm_rows


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


# ---------------------------------------------------------------------------------------------
# schedules


def l1_warmup(l1_coef: float, *, warmup_steps: int) -> optax.Schedule:
    """Linear warm-up of a sparsity coefficient from 0 to ``l1_coef`` over ``warmup_steps``.

    Pass it to ``make_train_step(..., schedules={"l1_coef": ...})`` (``"l0_coef"`` for
    :class:`JumpReluSAE`); the coefficient at step ``t`` is ``l1_coef · min(t / warmup_steps, 1)``.

    Args:
      l1_coef: final coefficient ``λ >= 0``.
      warmup_steps: steps to reach it (``0``: constant ``λ``).

    Returns:
      An optax schedule ``step -> λ_t``.

    Examples:
      >>> from jaxemb import sae
      >>> sched = sae.l1_warmup(5.0, warmup_steps=100)
      >>> [float(sched(t)) for t in (0, 50, 100, 1000)]
      [0.0, 2.5, 5.0, 5.0]

    References:
      Anthropic, "Circuits Updates — April 2023" (λ warmed up over the first 5% of training);
      SAELens ``l1_warm_up_steps``.
    """
    v.check_positive(l1_coef, "l1_coef", strict=False)
    v.check_int(warmup_steps, "warmup_steps", minimum=0)
    if warmup_steps == 0:
        return optax.constant_schedule(float(l1_coef))
    return optax.linear_schedule(0.0, float(l1_coef), warmup_steps)


def k_anneal(k_start: int, k_end: int, *, steps: int) -> optax.Schedule:
    """Number of active latents decreasing linearly from ``k_start`` to ``k_end`` (int32).

    ``k_t = round(k_start + (k_end − k_start) · min(t / steps, 1))``. Pass it as
    ``make_train_step(..., schedules={"k": ...})`` to a variant whose ``training_loss`` takes
    ``k`` (:class:`BatchTopKSAE`); the selection is computed at width ``k_start`` and masked down.

    Args:
      k_start: ``k`` at step 0 (the largest).
      k_end: final ``k``, ``1 <= k_end <= k_start``.
      steps: annealing steps.

    Returns:
      An optax schedule ``step -> int32 k_t``.

    Examples:
      >>> from jaxemb import sae
      >>> sched = sae.k_anneal(64, 8, steps=100)
      >>> [int(sched(t)) for t in (0, 50, 100, 500)]
      [64, 36, 8, 8]

    References:
      Bussmann et al., "BatchTopK Sparse Autoencoders" (2024) and SAELens' TopK ``k`` annealing
      (start dense, anneal ``k`` down); Gao et al. (2024) discuss annealing ``k`` as well.
    """
    v.check_int(k_start, "k_start", minimum=1)
    v.check_int(k_end, "k_end", minimum=1, maximum=k_start)
    v.check_int(steps, "steps", minimum=1)
    lin = optax.linear_schedule(float(k_start), float(k_end), steps)

    def schedule(step):
        return jnp.round(lin(step)).astype(jnp.int32)

    schedule.k_max = k_start  # read by make_train_step for the static selection width
    return schedule


def lr_schedule(
    peak_lr: float, *, total_steps: int, warmup_steps: int = 0, decay_steps: int = 0
) -> optax.Schedule:
    """Learning rate with linear warm-up, a constant middle and a linear decay to 0 at the end.

    ``0 → peak_lr`` over ``warmup_steps``, constant, then ``peak_lr → 0`` over the last
    ``decay_steps`` of ``total_steps``. Use it as ``optax.adam(sae.lr_schedule(...))``.

    Args:
      peak_lr: the constant learning rate.
      total_steps: length of training.
      warmup_steps: linear warm-up steps at the start.
      decay_steps: linear decay steps at the end (``warmup + decay <= total``).

    Returns:
      An optax schedule.

    Examples:
      >>> from jaxemb import sae
      >>> sched = sae.lr_schedule(1.0, total_steps=100, warmup_steps=10, decay_steps=20)
      >>> [round(float(sched(t)), 3) for t in (0, 5, 10, 80, 90, 100)]
      [0.0, 0.5, 1.0, 1.0, 0.5, 0.0]

    References:
      SAELens ``lr_warm_up_steps`` / ``lr_decay_steps`` (linear); Anthropic, "Circuits Updates
      — April 2023" (LR decayed to 0 over the last 20% of training).
    """
    v.check_positive(peak_lr, "peak_lr")
    v.check_int(total_steps, "total_steps", minimum=1)
    v.check_int(warmup_steps, "warmup_steps", minimum=0)
    v.check_int(decay_steps, "decay_steps", minimum=0)
    if warmup_steps + decay_steps > total_steps:
        raise ValueError(
            f"warmup_steps + decay_steps must be <= total_steps={total_steps}; "
            f"got {warmup_steps} + {decay_steps}"
        )
    peak = float(peak_lr)
    pieces = [optax.linear_schedule(0.0, peak, warmup_steps)] if warmup_steps else []
    pieces.append(optax.constant_schedule(peak))
    boundaries = [warmup_steps] if warmup_steps else []
    if decay_steps:
        pieces.append(optax.linear_schedule(peak, 0.0, decay_steps))
        boundaries.append(total_steps - decay_steps)
    if len(pieces) == 1:
        return pieces[0]
    return optax.join_schedules(pieces, boundaries)


# ---------------------------------------------------------------------------------------------
# dead-latent resampling

# Per-latent parameters that resampling resets to zero besides W_enc/b_enc/W_dec.
_RESET_TO_ZERO = ("b_enc", "b_mag", "r_mag")


def latent_axis(name: str, value: jax.Array, d_sae: int) -> int | None:
    """The axis of a parameter that indexes latents (``W_enc``: 1; ``b_dec``: none; else 0)."""
    if name == "W_enc":
        return 1
    if name == "b_dec" or value.ndim == 0 or value.shape[0] != d_sae:
        return None
    return 0


def _mask_latents(tree: dict, dead: jax.Array, d_sae: int, fill: dict | None = None) -> dict:
    """Replaces the dead latents' slices by ``fill[name]`` (no fill: every per-latent one by 0)."""
    out = {}
    for name, value in tree.items():
        axis = latent_axis(name, value, d_sae)
        if axis is None or (fill is not None and name not in fill):
            out[name] = value
            continue
        shape = [1] * value.ndim
        shape[axis] = d_sae
        m = dead.reshape(shape)
        new = jnp.zeros_like(value) if fill is None else fill[name]
        out[name] = jnp.where(m, new.astype(value.dtype), value)
    return out


def reset_moments(opt_state: Any, params: dict, dead: jax.Array, d_sae: int) -> Any:
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
            return _mask_latents(node, dead, d_sae)
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
    from jaxemb.sae._train import TrainState

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
    return _resample(state, graphdef, jnp.asarray(x), key, dead, float(encoder_scale), model.d_sae)


def _resample(state, graphdef, x, key, dead, encoder_scale, d_sae):
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
    new_params = _mask_latents(params, dead, d_sae, fill)
    opt_state = reset_moments(state.opt_state, params, dead, d_sae)
    counts = jnp.where(dead, 0, state.dead.tokens_since_fired).astype(jnp.int32)
    return state._replace(
        params=new_params, opt_state=opt_state, dead=state.dead._replace(tokens_since_fired=counts)
    )
