"""Top-activating examples of every latent, streamed over a dataset."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxemb import _validate as v
from jaxemb.sae._base import SparseCode, _densify, check_code


def top_activating(
    encode_fn: Callable[[Any], Any],
    batches: Iterable[Any],
    d_sae: int,
    *,
    top_n: int = 9,
    threshold: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """The ``top_n`` rows of a dataset that activate each latent most, computed by streaming.

    Each batch is encoded, its per-latent top ``top_n`` is merged with the running top
    ``top_n``, and row indices count rows over all batches in order (global row indices).
    Activations at or below ``threshold`` do not count as activating; slots left empty (a latent
    that fired on fewer than ``top_n`` rows) hold value ``−inf`` and index ``−1``. Ties go to
    the earlier row, so the result equals a stable sort of the whole activation matrix.

    Args:
      encode_fn: maps a ``[n_i, d_in]`` batch to a :class:`~jaxemb.sae.SparseCode`
        (``[n_i, k]``) or dense ``[n_i, d_sae]`` activations, e.g. ``model.encode`` (wrap it in
        ``jax.jit`` or ``nnx.jit`` for speed).
      batches: iterable of ``[n_i, d_in]`` arrays (any ``n_i``).
      d_sae: number of latents.
      top_n: examples kept per latent.
      threshold: activations must exceed it to count (``-inf`` counts every row).

    Returns:
      ``(values [d_sae, top_n] float32, example_indices [d_sae, top_n] int32)``, each row in
      decreasing order of activation.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import analysis
      >>> batches = [jnp.array([[1.0, 0.0], [3.0, 0.0]]), jnp.array([[2.0, 5.0]])]
      >>> vals, idx = analysis.top_activating(lambda x: x, batches, 2, top_n=2)
      >>> idx.tolist()
      [[1, 2], [2, -1]]
      >>> vals.tolist()
      [[3.0, 2.0], [5.0, -inf]]

    References:
      Bricken et al., "Towards Monosemanticity" (2023), feature dashboards; SAELens /
      sae_dashboard top-k activating examples.
    """
    if not callable(encode_fn):
        raise ValueError(f"encode_fn must be callable; got {type(encode_fn).__name__}")
    v.check_int(d_sae, "d_sae", minimum=1)
    v.check_int(top_n, "top_n", minimum=1)
    if not isinstance(threshold, (int, float, np.floating, np.integer)) or np.isnan(threshold):
        raise ValueError(f"threshold must be a number; got {threshold!r}")
    values = jnp.full((d_sae, top_n), -jnp.inf, jnp.float32)
    indices = jnp.full((d_sae, top_n), -1, jnp.int32)
    offset = 0
    for i, batch in enumerate(batches):
        batch = v.check_array(batch, f"batches[{i}]", ndim=2, kind="float", allow_empty=True)
        n = batch.shape[0]
        if n == 0:
            continue
        acts = encode_fn(batch)
        name = f"encode_fn(batches[{i}])"
        if isinstance(acts, SparseCode):
            check_code(acts, name)
            if acts.values.shape[0] != n:
                raise ValueError(f"{name} must have {n} rows; got {v.shape_str(acts.values)}")
            acts = _densify(acts.values, acts.indices, d_sae)
        else:
            acts = v.check_array(acts, name, ndim=2, kind="float")
            if tuple(acts.shape) != (n, d_sae):
                raise ValueError(f"{name} must be [{n}, d_sae={d_sae}]; got {v.shape_str(acts)}")
        values, indices = _merge(
            values, indices, jnp.asarray(acts), jnp.int32(offset), jnp.float32(threshold)
        )
        offset += n
    return values, indices


@functools.partial(jax.jit, donate_argnums=(0, 1))
def _merge(values, indices, acts, offset, threshold):
    top_n = values.shape[1]
    a = acts.astype(jnp.float32).T  # [d_sae, n]
    a = jnp.where(a > threshold, a, -jnp.inf)
    new_v, new_i = jax.lax.top_k(a, min(top_n, a.shape[1]))
    new_i = jnp.where(jnp.isfinite(new_v), new_i + offset, -1)
    # Running entries come first, so on ties top_k keeps the earlier rows.
    cat_v = jnp.concatenate([values, new_v], axis=1)
    cat_i = jnp.concatenate([indices, new_i], axis=1)
    out_v, pos = jax.lax.top_k(cat_v, top_n)
    return out_v, jnp.take_along_axis(cat_i, pos, axis=1)
