"""Range checks for scalar loss hyperparameters (private)."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxemb import _validate as v


def check_scalar(value: Any, name: str, *, low: float, high: float | None = None) -> None:
    """Checks ``low <= value`` (and ``value < high`` when given) for a concrete real scalar.

    Traced values (a hyperparameter scheduled inside a user's jit) cannot be read and pass.
    """
    if not v.is_concrete(value):
        return
    x = np.asarray(value)
    if x.ndim != 0 or not (
        np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
    ):
        raise ValueError(f"{name} must be a real scalar; got {value!r}")
    bad = not np.isfinite(x) or x < low or (high is not None and x >= high)
    if bad:
        want = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be a finite number {want}; got {x.item()!r}")
