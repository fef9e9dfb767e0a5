"""Step schedules of SAE hyperparameters: λ warm-up, k annealing and the learning rate.

:func:`l1_warmup` and :func:`k_anneal` go to ``make_train_step(..., schedules=...)``;
:func:`lr_schedule` is an optax schedule for the optimiser.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from jaxemb import _validate as v


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
