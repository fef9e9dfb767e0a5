"""The jitted, pure SAE training step shared by every variant."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.sae._base import (
    check_batch,
    check_sae,
    param_axes,
    remove_parallel_grad,
    unit_norm_rows,
)
from jaxemb.sae._dead import _update, check_threshold, dead_latents_init
from jaxemb.sae._loss import loss_keywords
from jaxemb.sae._resample import _resample
from jaxemb.sae._state import TrainState


def make_train_step(
    model: nnx.Module,
    tx: Any,
    *,
    donate: bool = True,
    schedules: Mapping[str, Callable[[jax.Array], ArrayLike]] | None = None,
    resample_every: int | None = None,
    resample_seed: int = 0,
    resample_encoder_scale: float = 0.2,
):
    """Builds a jitted, pure SAE training step and its initial state, for any variant.

    One step: evaluate each schedule at the current step and pass the values as keywords to
    ``model.training_loss(x, dead_mask=..., **values)``; loss and gradients with respect to the
    ``nnx.Param`` variables; if ``model.normalize_decoder``, remove the gradient component
    parallel to each decoder row; the optax update; renormalise the decoder rows to unit norm;
    store the module's other variables as updated by the loss (BatchTopK's running threshold);
    advance the dead-latent counters by the batch's ``N`` tokens; every ``resample_every``
    steps, :func:`resample_dead` with this batch as the sample. The order is eai-sparsify's
    ``Trainer``.

    The step is written for the global batch: feed ``x`` sharded over a mesh's ``data`` axis
    (``jaxemb.parallel.shard_batch``) and it runs data-parallel with the single-device result.

    Args:
      model: an SAE module (:class:`TopKSAE`, :class:`ReluSAE`, ...); its current values (after
        :func:`init_b_dec` / :func:`fit_input_norm`) become the initial state.
      tx: an ``optax.GradientTransformation``, e.g. ``optax.adam(lr)`` or
        ``optax.adam(sae.lr_schedule(...))`` for LR warm-up/decay.
      donate: donate the input state's buffers to the output (the state passed in must not be
        used again).
      schedules: optional ``{keyword: schedule}`` of step-dependent hyperparameters of
        ``training_loss``: ``"l1_coef"`` (:class:`ReluSAE`, :class:`GatedSAE`; see
        :func:`l1_warmup`), ``"l0_coef"`` (:class:`JumpReluSAE`), ``"k"`` (:class:`BatchTopKSAE`;
        a non-increasing schedule such as :func:`k_anneal`). Their values at each step appear in
        the metrics under the same names.
      resample_every: resample dead latents (``tokens_since_fired > model.dead_threshold``)
        after every this many steps; ``None`` never.
      resample_seed: seed of the resampling draws (folded with the step).
      resample_encoder_scale: see :func:`resample_dead`.

    Returns:
      ``(train_step, state)``: ``train_step(state, x) -> (state, metrics)`` with ``x``
      ``[N, d_in]`` float and ``metrics`` the loss's dict of scalars; ``state`` a
      :class:`TrainState` holding copies of the model's variables (copy them back with
      ``nnx.update(model, state.params)`` or :func:`sync`).

    Examples:
      >>> import jax, optax
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.TopKSAE(8, 32, k=2, rngs=nnx.Rngs(0))
      >>> x = jax.random.normal(jax.random.key(1), (64, 8))
      >>> sae.init_b_dec(model, x)
      >>> train_step, state = sae.make_train_step(model, optax.adam(1e-2))
      >>> for _ in range(50):
      ...     state, metrics = train_step(state, x)
      >>> nnx.update(model, state.params)
      >>> int(state.step), bool(metrics["fvu"] < 0.9)
      (50, True)

    References:
      eai-sparsify ``Trainer.fit``; Flax NNX performance guide (``nnx.split``/``nnx.merge``
      around a pure ``jax.jit`` step); Anthropic, "Circuits Updates — April 2023" (resampling,
      λ warm-up, LR decay).
    """
    check_sae(model)
    if not hasattr(model, "training_loss"):
        raise ValueError(f"model must define training_loss(x, *, dead_mask); got {type(model)}")
    if not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise ValueError(f"tx must be an optax.GradientTransformation; got {type(tx).__name__}")
    schedules = dict(schedules or {})
    accepted = loss_keywords(model)
    for name, sched in schedules.items():
        if not callable(sched):
            raise ValueError(f"schedules[{name!r}] must be callable step -> value; got {sched!r}")
        if name == "dead_mask" or (accepted is not None and name not in accepted):
            ok = sorted((accepted or set()) - {"x", "dead_mask", "k_max"})
            raise ValueError(
                f"schedules key {name!r} is not a hyperparameter of "
                f"{type(model).__name__}.training_loss; expected one of {ok}"
            )
    static_kwargs: dict[str, Any] = {}
    if "k" in schedules:
        k0 = int(getattr(schedules["k"], "k_max", schedules["k"](0)))
        if accepted is None or "k_max" in accepted:
            static_kwargs["k_max"] = max(k0, int(getattr(model, "k", 1)))
    if resample_every is not None:
        v.check_int(resample_every, "resample_every", minimum=1)
    v.check_int(resample_seed, "resample_seed")
    v.check_positive(resample_encoder_scale, "resample_encoder_scale", strict=False)

    graphdef, param_state, buffer_state = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(jnp.copy, nnx.to_pure_dict(param_state))
    buffers = jax.tree.map(jnp.copy, nnx.to_pure_dict(buffer_state))
    d_in, d_sae = model.d_in, model.d_sae
    normalize = bool(getattr(model, "normalize_decoder", False))
    threshold = getattr(model, "dead_threshold", None)
    if threshold is not None:
        check_threshold(threshold)
    if resample_every is not None and threshold is None:
        raise ValueError("resample_every needs a model with a dead_threshold")
    resample_key = jax.random.key(resample_seed)
    axes = param_axes(model)

    def merge(p, b):
        return nnx.merge(graphdef, p, b) if b else nnx.merge(graphdef, p)

    def step(state: TrainState, x: jax.Array):
        hp = {name: sched(state.step) for name, sched in schedules.items()}
        counts = state.dead.tokens_since_fired
        mask = None if threshold is None else counts > threshold

        def loss_fn(p):
            m = merge(p, state.buffers)
            loss, metrics, out = m.training_loss(x, dead_mask=mask, **hp, **static_kwargs)
            new_buffers = (
                nnx.to_pure_dict(nnx.state(m, nnx.Not(nnx.Param))) if state.buffers else {}
            )
            return loss, (metrics, out.code, new_buffers)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (_, (metrics, code, new_buffers)), grads = grad_fn(state.params)
        new_buffers = jax.lax.stop_gradient(new_buffers)
        if normalize:
            grads = {**grads, "W_dec": remove_parallel_grad(grads["W_dec"], state.params["W_dec"])}
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if normalize:
            params = {**params, "W_dec": unit_norm_rows(params["W_dec"])}
        dead = _update(state.dead, code, jnp.int32(x.shape[0]))
        metrics = {**metrics, **{n: jnp.asarray(val) for n, val in hp.items()}}
        new = TrainState(params, opt_state, dead, state.step + 1, new_buffers or state.buffers)
        if resample_every is not None:
            do = (new.step % resample_every) == 0
            key = jax.random.fold_in(resample_key, new.step)
            dmask = new.dead.tokens_since_fired > threshold
            new = jax.lax.cond(
                do & jnp.any(dmask),
                lambda s: _resample(
                    s, graphdef, x, key, dmask, resample_encoder_scale, axes, d_sae
                ),
                lambda s: s,
                new,
            )
        return new, metrics

    jitted = jax.jit(step, donate_argnums=(0,) if donate else ())

    def train_step(state: TrainState, x: ArrayLike):
        if not isinstance(state, TrainState):
            raise ValueError(f"state must be a TrainState; got {type(state).__name__}")
        check_batch(x, d_in)
        return jitted(state, x)

    state = TrainState(
        params=params,
        opt_state=tx.init(params),
        dead=dead_latents_init(d_sae),
        step=jnp.zeros((), jnp.int32),
        buffers=buffers,
    )
    return train_step, state
