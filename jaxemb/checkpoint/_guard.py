"""The divergence guard: a run whose loss or state stops being finite stops, loudly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or state; nothing non-finite was saved."""


def _is_float(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        return isinstance(leaf, float)
    return jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.complexfloating)


@jax.jit
def _count_nonfinite_device(leaves: list[jax.Array]) -> list[jax.Array]:
    return [jnp.sum(~jnp.isfinite(x), dtype=jnp.int32) for x in leaves]


def count_nonfinite(leaves: list[Any]) -> list[int]:
    """The number of NaN or infinite entries of each leaf (0 for non-float leaves).

    ``jax.Array`` leaves are reduced on their devices in one jitted call (also when they are
    sharded over several hosts: every process gets the global count); NumPy and Python leaves
    on the host.
    """
    counts = [0] * len(leaves)
    device = [i for i, x in enumerate(leaves) if isinstance(x, jax.Array) and _is_float(x)]
    if device:
        for i, c in zip(device, _count_nonfinite_device([leaves[i] for i in device]), strict=True):
            counts[i] = int(c)
    for i, x in enumerate(leaves):
        if not isinstance(x, jax.Array) and _is_float(x):
            counts[i] = int(np.sum(~np.isfinite(np.asarray(x))))
    return counts


def _name(path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/") or "(the value)"


def check_finite(
    step: int,
    values: Mapping[str, Any],
    *,
    last_good_step: int | None = None,
    checkpoint_dir: Any = None,
) -> None:
    """Raises :class:`DivergenceError` when any floating value of ``values`` is NaN or infinite.

    Called by every experiment on the loss before each checkpoint save and at the end, and by
    :meth:`Checkpointer.save` on the state it is asked to write, so a diverged run stops with
    one paragraph (the step, which quantity, the last good checkpoint) instead of reporting a
    NaN as a result or saving it as its newest step.

    Args:
      step: the training step the values belong to.
      values: ``{name: array or scalar or pytree}``, e.g. ``{"loss": loss}`` or
        ``{"state": state}``; every floating leaf is checked.
      last_good_step: the newest checkpoint kept (``None``: none was saved yet).
      checkpoint_dir: where that checkpoint lives, for the message.

    Raises:
      DivergenceError: naming the step, the first non-finite quantity (its path inside the
        pytree and how many of its entries are NaN or infinite) and the checkpoint to resume
        from.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.checkpoint import DivergenceError, check_finite
      >>> check_finite(10, {"loss": jnp.float32(0.5)})  # finite: nothing happens
      >>> try:
      ...     check_finite(20, {"loss": jnp.float32(jnp.nan)}, last_good_step=10)
      ... except DivergenceError as e:
      ...     print(str(e)[:48])
      Training diverged at step 20: loss is not finite

    References:
      The practice of big_vision / t5x trainers, which abort on a NaN loss (``check_nan`` style)
      rather than checkpoint it.
    """
    if not isinstance(values, Mapping) or not values:
        raise ValueError(f"values must be a non-empty mapping of name -> value; got {values!r}")
    flat = []
    for key, value in values.items():
        items, _ = jax.tree_util.tree_flatten_with_path(value)
        for path, leaf in items:
            suffix = _name(path) if path else ""
            flat.append((f"{key}/{suffix}" if suffix else str(key), leaf))
    counts = count_nonfinite([leaf for _, leaf in flat])
    for (name, leaf), bad in zip(flat, counts, strict=True):
        if bad:
            size = int(np.prod(np.shape(leaf))) if np.shape(leaf) else 1
            raise DivergenceError(
                divergence_message(step, name, bad, size, last_good_step, checkpoint_dir)
            )


def divergence_message(
    step: int,
    name: str,
    bad: int,
    size: int,
    last_good_step: int | None,
    checkpoint_dir: Any,
) -> str:
    """The one-paragraph report of a diverged run."""
    what = "is not finite" if size == 1 else f"holds {bad} of {size} values that are not finite"
    if last_good_step is None:
        kept = "No checkpoint was saved before it."
    else:
        where = f" in {checkpoint_dir}" if checkpoint_dir is not None else ""
        kept = f"The last good checkpoint, step {last_good_step}{where}, was kept."
    hint = (
        "The same settings would diverge again: lower the learning rate, add warm-up or "
        "gradient clipping, or look for NaN/inf in the input data (a run with changed settings "
        "needs a new checkpoint directory)."
    )
    return (
        f"Training diverged at step {step}: {name} {what} (NaN or infinite), so the run stopped "
        f"and this state was not saved. {kept} {hint}"
    )
