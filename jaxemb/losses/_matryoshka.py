"""Matryoshka wrapper: a loss evaluated on nested prefixes of the embedding dimensions."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxemb import _validate as v
from jaxemb.losses._common import l2_normalize


def matryoshka(
    loss_fn: Callable[..., jax.Array],
    dims: Sequence[int],
    weights: Sequence[float] | None = None,
    n_dims_per_step: int | None = None,
    *,
    argnums: Sequence[int] | None = None,
) -> Callable[..., jax.Array]:
    """Wraps ``loss_fn`` so it is summed over nested prefixes of the embedding dimensions.

    For every ``m`` in ``dims`` each embedding argument is truncated to its first ``m`` features
    and re-normalised (``x[..., :m] / max(‖x[..., :m]‖, 1e-12)``), ``loss_fn`` is evaluated on
    the truncated arguments, and the result is ``Σ_m w_m · L_m``. Embedding arguments are the
    positional arguments listed in ``argnums`` (default: every positional floating-point array
    of rank ≥ 2, i.e. ``[batch, dim]`` embeddings and ``[batch, n, dim]`` negatives; labels and
    scores are left alone). Keyword arguments are passed through unchanged.

    With ``n_dims_per_step`` set, each call evaluates a random subset of that many dims (the
    others contribute nothing that step); the returned function then needs ``key=``.

    Args:
      loss_fn: a loss ``loss_fn(*embeddings, **kwargs) -> scalar``.
      dims: the prefix sizes, e.g. ``(768, 512, 256, 128, 64)``; each ≥ 1 and ≤ the
        embedding width (checked at call time).
      weights: one weight per dim; default all 1 (sentence-transformers' default).
      n_dims_per_step: evaluate only this many randomly chosen dims per call.
      argnums: indices of the positional arguments to truncate.

    Returns:
      A function with ``loss_fn``'s signature (plus keyword ``key`` when ``n_dims_per_step`` is
      set) returning the weighted float32 sum.

    Examples:
      >>> import jax
      >>> from jaxemb.losses import matryoshka, nt_xent
      >>> loss = matryoshka(nt_xent, dims=(8, 4, 2))
      >>> z1, z2 = jax.random.normal(jax.random.key(0), (2, 16, 8))
      >>> float(loss(z1, z2, temperature=0.5)) > 0
      True

    References:
      Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022; sentence-transformers
      ``MatryoshkaLoss`` (truncate, ``F.normalize``, weights default to 1, ``n_dims_per_step``
      default -1 = all dims).
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable; got {type(loss_fn).__name__}")
    dims, weights = check_dims_and_weights(dims, weights)
    if weights is None:
        weights = (1.0,) * len(dims)
    if n_dims_per_step is not None and n_dims_per_step != -1:
        v.check_int(n_dims_per_step, "n_dims_per_step", minimum=1, maximum=len(dims))
    sample = n_dims_per_step is not None and 0 < n_dims_per_step < len(dims)

    def is_embedding(i, x):
        if argnums is not None:
            return i in argnums
        return hasattr(x, "ndim") and x.ndim >= 2 and jnp.issubdtype(x.dtype, jnp.floating)

    @functools.wraps(loss_fn)
    def wrapped(*args, key: jax.Array | None = None, **kwargs):
        # nested lists are arrays too (as for every loss)
        args = tuple(np.asarray(x) if isinstance(x, list) else x for x in args)
        emb = [i for i, x in enumerate(args) if is_embedding(i, x)]
        if not emb:
            raise ValueError("matryoshka found no embedding arguments ([batch, dim] float arrays)")
        for i in emb:
            width = args[i].shape[-1]
            if max(dims) > width:
                raise ValueError(
                    f"dims must be <= the embedding width; argument {i} has shape "
                    f"{v.shape_str(args[i])} but dims contains {max(dims)}"
                )
        if sample:
            if key is None:
                raise ValueError("key is required when n_dims_per_step samples a subset of dims")
            chosen = jax.random.choice(key, len(dims), (n_dims_per_step,), replace=False)
            active = jnp.zeros(len(dims), bool).at[chosen].set(True)
        total = jnp.zeros((), jnp.float32)
        for j, (m, w) in enumerate(zip(dims, weights)):
            truncated = list(args)
            for i in emb:
                truncated[i] = l2_normalize(args[i][..., :m])
            term = w * loss_fn(*truncated, **kwargs)
            total = total + (jnp.where(active[j], term, 0.0) if sample else term)
        return total

    return wrapped


def check_dims_and_weights(
    dims: Any, weights: Any
) -> tuple[tuple[int, ...], tuple[float, ...] | None]:
    """Validates Matryoshka ``dims`` (distinct positive ints) and optional per-dim ``weights``.

    Either order of the dims is fine (sentence-transformers lists them largest first); a
    repeated dim would count the same prefix twice, and negative, non-finite or all-zero
    weights make the objective meaningless: all are refused.
    """
    try:
        dims = tuple(dims)
    except TypeError:
        raise ValueError(f"dims must be a sequence of positive integers; got {dims!r}") from None
    if not dims:
        raise ValueError("dims must be a non-empty sequence of positive integers; got ()")
    for d in dims:
        v.check_int(d, "dims entries", minimum=1)
    if len(set(dims)) != len(dims):
        repeated = sorted({d for d in dims if dims.count(d) > 1})
        raise ValueError(f"dims must be distinct; got {dims} (repeated: {repeated})")
    if weights is None:
        return dims, None
    try:
        weights = tuple(weights)
    except TypeError:
        raise ValueError(f"weights must be a sequence of numbers; got {weights!r}") from None
    if len(weights) != len(dims):
        raise ValueError(
            f"weights must have one entry per dim ({len(dims)}); got {len(weights)} entries"
        )
    for w in weights:
        v.check_scalar(w, "weights entries", low=0.0)
    weights = tuple(float(w) for w in weights)
    if not any(weights):
        raise ValueError(f"weights must not all be 0 (the loss would be 0); got {weights}")
    return dims, weights
