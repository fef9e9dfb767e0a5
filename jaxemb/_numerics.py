"""Numerical guards shared by the losses and metrics (private)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def _is_float_array(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.inexact)


def propagate_nan(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Makes ``fn`` return NaN (in every float output) when any float array input holds NaN.

    Losses and metrics that select entries by comparisons (hinges, hard-example mining,
    threshold masks, ranks, counts above a threshold) silently drop a NaN, since every
    comparison with NaN is false, and return a plausible finite number. Wrapped with this, a
    NaN anywhere in the inputs reaches the result. The check is one ``isnan`` reduction per
    input, traced into the same program; gradients of finite inputs are unchanged.

    Use it under ``jax.jit`` (inputs are arrays there); non-array arguments pass through.
    """

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        out = fn(*args, **kwargs)
        inputs = [x for x in jax.tree.leaves((args, kwargs)) if _is_float_array(x)]
        if not inputs:
            return out
        bad = jnp.any(jnp.stack([jnp.any(jnp.isnan(x)) for x in inputs]))
        return jax.tree.map(lambda y: jnp.where(bad, jnp.nan, y) if _is_float_array(y) else y, out)

    return wrapped
