"""Input validation shared by every public function.

Checks run in Python on static shapes and dtypes, before any tracing, and raise ``ValueError``
messages that name the argument, what was expected and what arrived. They work on NumPy arrays,
``jax.Array`` and tracers alike (only ``.shape`` and ``.dtype`` are read), so a public function can
validate even when a user calls it inside their own ``jax.jit``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def shape_str(x: Any) -> str:
    """Formats the shape of ``x`` as ``[a, b, c]``."""
    return "[" + ", ".join(str(d) for d in np.shape(x)) + "]"


def _dtype(x: Any) -> np.dtype:
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype


def check_array(
    x: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    kind: str = "float",
    allow_empty: bool = False,
) -> None:
    """Checks rank, dtype kind and non-emptiness of an array argument.

    Args:
      x: the argument.
      name: its name, used in the message.
      ndim: required rank (or tuple of allowed ranks); ``None`` accepts any rank.
      kind: ``"float"`` (floating point, including bfloat16), ``"int"`` (integer or bool),
        ``"number"`` (either) or ``"any"``.
      allow_empty: whether a zero-length leading axis is acceptable.

    Raises:
      ValueError: naming ``name``, the expectation and what was seen.
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        if isinstance(x, (numbers.Number, list, tuple)):
            x = np.asarray(x)
        else:
            raise ValueError(f"{name} must be an array; got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if len(x.shape) not in allowed:
            want = " or ".join(f"rank {r}" for r in allowed)
            raise ValueError(f"{name} must have {want}; got shape {shape_str(x)}")
    dt = _dtype(x)
    is_float = jnp.issubdtype(dt, jnp.floating)
    is_int = jnp.issubdtype(dt, jnp.integer) or jnp.issubdtype(dt, jnp.bool_)
    ok = {
        "float": is_float,
        "int": is_int,
        "number": is_float or is_int,
        "any": True,
    }[kind]
    if not ok:
        raise ValueError(f"{name} must have a {kind} dtype; got {dt} with shape {shape_str(x)}")
    if not allow_empty and len(x.shape) > 0 and x.shape[0] == 0:
        raise ValueError(f"{name} must not be empty; got shape {shape_str(x)}")


def check_same_shape(a: Any, name_a: str, b: Any, name_b: str) -> None:
    """Checks that two arrays have identical shapes."""
    if tuple(np.shape(a)) != tuple(np.shape(b)):
        raise ValueError(
            f"{name_b} must have the same shape as {name_a} {shape_str(a)}; got {shape_str(b)}"
        )


def check_axis_match(a: Any, name_a: str, axis_a: int, b: Any, name_b: str, axis_b: int) -> None:
    """Checks that ``a.shape[axis_a] == b.shape[axis_b]``."""
    if np.shape(a)[axis_a] != np.shape(b)[axis_b]:
        raise ValueError(
            f"{name_b} {shape_str(b)} must match {name_a} {shape_str(a)} "
            f"(axis {axis_b} of {name_b} vs axis {axis_a} of {name_a})"
        )


def is_concrete(value: Any) -> bool:
    """Whether ``value`` has a concrete value readable in Python (not a tracer)."""
    return not isinstance(value, jax.core.Tracer)


def check_positive(value: Any, name: str, *, strict: bool = True) -> None:
    """Checks ``value > 0`` (or ``>= 0`` when ``strict=False``) for concrete scalars.

    Traced values (a learnable temperature inside a user's jit) cannot be read and are let
    through.
    """
    if not is_concrete(value):
        return
    v = np.asarray(value)
    if v.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {shape_str(v)}")
    if not np.isfinite(v) or (v <= 0 if strict else v < 0):
        rel = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be a finite number {rel}; got {v.item()!r}")


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> None:
    """Checks that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")


def check_labels(labels: Any, name: str, batch: int) -> None:
    """Checks integer labels of shape ``[batch]``."""
    check_array(labels, name, ndim=1, kind="int")
    if labels.shape[0] != batch:
        raise ValueError(f"{name} must have shape [{batch}] (one per row); got {shape_str(labels)}")


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None):
    """Checks a Python integer hyperparameter within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}; got {value}")
