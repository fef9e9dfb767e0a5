"""Dead-latent bookkeeping: tokens since each latent last fired, as a pure functional state."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.sae._base import SparseCode, check_code

_INT32_MAX = int(np.iinfo(np.int32).max)


class DeadLatentState(NamedTuple):
    """Tokens seen since each latent last fired.

    Attributes:
      tokens_since_fired: ``[d_sae]`` int32 counter, saturating at ``2**31 − 1`` so a latent
        that never fires stays dead instead of wrapping around.
    """

    tokens_since_fired: jax.Array


def dead_latents_init(d_sae: int) -> DeadLatentState:
    """A fresh :class:`DeadLatentState`: every latent has just "fired" (counter 0).

    Args:
      d_sae: number of latents.

    Returns:
      ``DeadLatentState(tokens_since_fired=zeros([d_sae], int32))``.

    Examples:
      >>> from jaxemb.sae import dead_latents_init
      >>> dead_latents_init(3).tokens_since_fired.tolist()
      [0, 0, 0]

    References:
      eai-sparsify ``Trainer.num_tokens_since_fired``.
    """
    v.check_int(d_sae, "d_sae", minimum=1)
    return DeadLatentState(jnp.zeros((d_sae,), jnp.int32))


def fired_latents(code: Any, d_sae: int) -> jax.Array:
    """``[d_sae]`` bool: which latents are non-zero in at least one row of ``code``.

    ``code`` is a :class:`SparseCode` (``[N, k]``) or a dense ``[N, d_sae]`` activation matrix.
    """
    if isinstance(code, SparseCode):
        active = code.values != 0
        return jnp.zeros((d_sae,), jnp.bool_).at[code.indices.reshape(-1)].max(active.reshape(-1))
    return jnp.any(jnp.asarray(code) != 0, axis=0)


def check_code_or_dense(code: Any, d_sae: int | None, name: str = "code") -> int:
    """Validates a sparse or dense code; returns ``d_sae`` (inferred for dense codes)."""
    if isinstance(code, SparseCode):
        if d_sae is None:
            raise ValueError(f"d_sae must be given when {name} is a SparseCode")
        v.check_int(d_sae, "d_sae", minimum=1)
        check_code(code, name, d_sae=d_sae)
        return d_sae
    code = v.check_array(code, name, ndim=2, kind="float")
    if d_sae is not None and code.shape[1] != d_sae:
        raise ValueError(f"{name} must be [batch, d_sae={d_sae}]; got {v.shape_str(code)}")
    return code.shape[1]


def dead_latents_update(state: DeadLatentState, code: Any, num_tokens: int) -> DeadLatentState:
    """Advances the counters by a batch: fired latents reset to 0, the others add ``num_tokens``.

    A latent fires when its activation is non-zero in at least one row. (eai-sparsify counts
    every index in the top-k as fired, even with a zero activation; the two agree whenever the
    ``k``-th largest activation of each row is positive.) Counters saturate at ``2**31 − 1``.

    Args:
      state: the current :class:`DeadLatentState`.
      code: this batch's :class:`SparseCode` (``[N, k]``) or dense ``[N, d_sae]`` activations.
      num_tokens: number of tokens (rows) the batch held, usually ``N``.

    Returns:
      The new :class:`DeadLatentState`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import SparseCode, dead_latents_init, dead_latents_update
      >>> s = dead_latents_init(4)
      >>> code = SparseCode(jnp.array([[1.0], [0.0]]), jnp.array([[2], [3]]))
      >>> dead_latents_update(s, code, 2).tokens_since_fired.tolist()
      [2, 2, 0, 2]

    References:
      eai-sparsify ``Trainer.fit`` (``num_tokens_since_fired += num_tokens_in_step``;
      ``num_tokens_since_fired[did_fire] = 0``).
    """
    _check_state(state)
    d_sae = state.tokens_since_fired.shape[0]
    check_code_or_dense(code, d_sae)
    if v.is_concrete(num_tokens):
        n = np.asarray(num_tokens)
        if n.ndim != 0 or not np.issubdtype(n.dtype, np.integer) or n < 0:
            raise ValueError(f"num_tokens must be an integer >= 0; got {num_tokens!r}")
    return _update(state, code, jnp.asarray(num_tokens, jnp.int32))


def _update(state: DeadLatentState, code: Any, num_tokens: jax.Array) -> DeadLatentState:
    counts = state.tokens_since_fired
    fired = fired_latents(code, counts.shape[0])
    grown = jnp.where(counts > _INT32_MAX - num_tokens, _INT32_MAX, counts + num_tokens)
    return DeadLatentState(jnp.where(fired, 0, grown).astype(jnp.int32))


def dead_mask(state: DeadLatentState, dead_threshold: int) -> jax.Array:
    """``[d_sae]`` bool: latents that have not fired for more than ``dead_threshold`` tokens.

    Args:
      state: a :class:`DeadLatentState`.
      dead_threshold: tokens without firing after which a latent counts as dead (strictly more).

    Returns:
      ``[d_sae]`` bool mask, ``tokens_since_fired > dead_threshold``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import DeadLatentState, dead_mask
      >>> dead_mask(DeadLatentState(jnp.array([0, 10, 11])), 10).tolist()
      [False, False, True]

    References:
      eai-sparsify ``Trainer`` (``num_tokens_since_fired > dead_feature_threshold``, default
      10,000,000 tokens).
    """
    _check_state(state)
    check_threshold(dead_threshold)
    return state.tokens_since_fired > dead_threshold


def check_threshold(dead_threshold: Any) -> None:
    v.check_int(dead_threshold, "dead_threshold", minimum=0, maximum=_INT32_MAX)


def _check_state(state: Any) -> None:
    if not isinstance(state, DeadLatentState):
        raise ValueError(f"state must be a DeadLatentState; got {type(state).__name__}")
    v.check_array(state.tokens_since_fired, "state.tokens_since_fired", ndim=1, kind="int")


def as_counts(tokens_since_fired: ArrayLike | DeadLatentState) -> jax.Array:
    """The ``[d_sae]`` counter of a :class:`DeadLatentState`, or the array itself."""
    if isinstance(tokens_since_fired, DeadLatentState):
        tokens_since_fired = tokens_since_fired.tokens_since_fired
    tokens_since_fired = v.check_array(tokens_since_fired, "tokens_since_fired", ndim=1, kind="int")
    return jnp.asarray(tokens_since_fired)
