"""The state an SAE training step reads and writes, and copying it back into the module."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
from flax import nnx


class TrainState(NamedTuple):
    """Everything one SAE training step reads and writes (a pytree; checkpoint it with orbax).

    Attributes:
      params: the module's ``nnx.Param`` values as a plain dict (``W_enc``, ``b_enc``, ``W_dec``,
        ``b_dec`` and any variant-specific ones); copy them back with
        ``nnx.update(model, state.params)``.
      opt_state: the optax optimiser state.
      dead: the :class:`DeadLatentState`.
      step: int32 scalar, number of steps taken.
      buffers: the module's other variables (``input_scale``, BatchTopK's running
        ``threshold``...) as a plain dict, updated by the step where the variant updates them;
        copy everything back with :func:`sync` (or ``nnx.update(model, state.buffers)``).
    """

    params: dict[str, Any]
    opt_state: Any
    dead: Any
    step: jax.Array
    buffers: dict[str, Any] | None = None


def sync(model: nnx.Module, state: TrainState) -> None:
    """Copies a :class:`TrainState`'s parameters and buffers back into ``model``, in place.

    Args:
      model: the module :func:`make_train_step` was built from.
      state: a state returned by its ``train_step``.

    Returns:
      None.

    Examples:
      >>> import jax, optax
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.BatchTopKSAE(8, 32, k=2, rngs=nnx.Rngs(0), threshold_start_step=-1)
      >>> train_step, state = sae.make_train_step(model, optax.adam(1e-2))
      >>> state, _ = train_step(state, jax.random.normal(jax.random.key(1), (64, 8)))
      >>> sae.sync(model, state)
      >>> bool(model.threshold[...] > 0)
      True
    """
    if not isinstance(state, TrainState):
        raise ValueError(f"state must be a TrainState; got {type(state).__name__}")
    nnx.update(model, state.params)
    if state.buffers:
        nnx.update(model, state.buffers)
