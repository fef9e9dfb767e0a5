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
) -> Any:
    """Checks rank, dtype kind and non-emptiness of an array argument.

    Args:
      x: the argument.
      name: its name, used in the message.
      ndim: required rank (or tuple of allowed ranks); ``None`` accepts any rank.
      kind: ``"float"`` (floating point, including bfloat16), ``"int"`` (integer or bool),
        ``"number"`` (either) or ``"any"``.
      allow_empty: whether zero-length axes are acceptable. By default every axis must be
        non-empty: an empty batch and an empty feature axis (``[batch, 0]``) are both refused,
        since a loss or statistic over them is meaningless.

    Returns:
      ``x`` as an array: unchanged when it already is one (NumPy, ``jax.Array`` or a tracer),
      else ``np.asarray(x)`` (nested lists and tuples are accepted wherever arrays are).

    Raises:
      ValueError: naming ``name``, the expectation and what was seen.
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        if isinstance(x, (numbers.Number, list, tuple)):
            try:
                x = np.asarray(x)
            except ValueError as e:  # ragged nested lists
                raise ValueError(f"{name} must be a rectangular array; got {e}") from None
            if x.dtype == object or x.dtype.kind in "US":
                raise ValueError(f"{name} must be an array of numbers; got {x.dtype} values")
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
    if not allow_empty and 0 in tuple(x.shape):
        if x.shape[0] == 0:
            raise ValueError(f"{name} must not be empty; got shape {shape_str(x)}")
        axis = tuple(x.shape).index(0)
        raise ValueError(
            f"{name} must not have an empty axis (axis {axis} has length 0, e.g. an empty "
            f"feature axis); got shape {shape_str(x)}"
        )
    return x


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


def _real_scalar(value: Any, name: str) -> np.ndarray | None:
    """``value`` as a 0-d NumPy array of a real dtype, or ``None`` for a traced value.

    Strings, booleans, complex numbers, ``None`` and arrays of more than one element are
    refused with a ``ValueError`` naming ``name``.
    """
    if not is_concrete(value):
        return None
    if isinstance(value, (str, bytes, bool, np.bool_)) or value is None:
        raise ValueError(f"{name} must be a real number; got {value!r}")
    try:
        x = np.asarray(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number; got {value!r}") from None
    if x.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {shape_str(x)}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name} must be a real number; got {value!r}")
    return x


def check_positive(value: Any, name: str, *, strict: bool = True) -> None:
    """Checks ``value > 0`` (or ``>= 0`` when ``strict=False``) for concrete real scalars.

    Traced values (a learnable temperature inside a user's jit) cannot be read and are let
    through.
    """
    v = _real_scalar(value, name)
    if v is None:
        return
    if not np.isfinite(v) or (v <= 0 if strict else v < 0):
        rel = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be a finite number {rel}; got {v.item()!r}")


def check_scalar(value: Any, name: str, *, low: float, high: float | None = None) -> None:
    """Checks ``low <= value`` (and ``value < high`` when given) for a concrete real scalar.

    Traced values (a hyperparameter scheduled inside a user's jit) cannot be read and pass.
    """
    x = _real_scalar(value, name)
    if x is None:
        return
    bad = not np.isfinite(x) or x < low or (high is not None and x >= high)
    if bad:
        want = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be a finite number {want}; got {x.item()!r}")


def check_finite_scalar(value: Any, name: str) -> None:
    """Checks that a concrete hyperparameter is a finite real number (any sign)."""
    x = _real_scalar(value, name)
    if x is not None and not np.isfinite(x):
        raise ValueError(f"{name} must be a finite number; got {x.item()!r}")


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> None:
    """Checks that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")


def check_labels(labels: Any, name: str, batch: int) -> Any:
    """Checks integer labels of shape ``[batch]``; returns them as an array."""
    labels = check_array(labels, name, ndim=1, kind="int")
    if labels.shape[0] != batch:
        raise ValueError(f"{name} must have shape [{batch}] (one per row); got {shape_str(labels)}")
    return labels


def check_index_range(indices: Any, name: str, upper: int, what: str) -> None:
    """Checks that concrete integer ``indices`` lie in ``[0, upper)`` (traced ones pass).

    ``what`` names the bound in the message, e.g. ``"d_sae"``.
    """
    if is_concrete(indices) and np.size(indices):
        lo, hi = int(np.min(indices)), int(np.max(indices))
        if lo < 0 or hi >= upper:
            raise ValueError(f"{name} must lie in [0, {what}={upper}); got values in [{lo}, {hi}]")


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None):
    """Checks a Python integer hyperparameter within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}; got {value}")
