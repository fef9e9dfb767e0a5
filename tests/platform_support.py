"""What this CPU lets XLA do: some tests depend on it and say so explicitly."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest


@functools.cache
def xla_converts_float16() -> bool:
    """Whether XLA:CPU can convert float32 to float16 here.

    On x86-64 CPUs without F16C (pre-2012 CPUs, some virtual machines, and any machine run with
    ``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2``) XLA lowers the conversion to the compiler-rt call
    ``__truncsfhf2``, which jaxlib does not register on Linux, and every float16 computation
    fails with "Symbols not found: __truncsfhf2" (openxla/xla issue #6787).
    """
    try:
        jnp.asarray([1.5], jnp.float32).astype(jnp.float16).block_until_ready()
    except jax.errors.JaxRuntimeError:
        return False
    return True


def needs_xla_float16():
    """Marks a float16 case as an expected, strict failure where XLA cannot compute float16."""
    return pytest.mark.xfail(
        not xla_converts_float16(),
        reason="XLA:CPU cannot convert to float16 on a CPU without F16C (openxla/xla#6787)",
        raises=jax.errors.JaxRuntimeError,
        strict=True,
    )
