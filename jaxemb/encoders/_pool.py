"""Mask-aware pooling of token states into one vector per sequence (sentence-transformers rules)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from jaxemb import _validate as v

POOL_METHODS = (
    "cls",
    "mean",
    "max",
    "mean_sqrt_len",
    "weighted_mean",
    "last_token",
    "first_last_mean",
    "attention",
)


class AttentionPool(nnx.Module):
    """Multi-head attention pooling with a learned query (Set Transformer's PMA with one seed).

    Each head ``h`` scores tokens by ``q_h · (W_k x_t)_h / sqrt(d_h)``; padded tokens get zero
    weight; the heads' weighted sums of ``W_v x_t`` are concatenated and projected by ``W_o``.

    Args:
      hidden_size: token width ``H`` (divisible by ``num_heads``).
      num_heads: attention heads.
      rngs: parameter RNG streams.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb.encoders import AttentionPool, pool
      >>> attn = AttentionPool(8, num_heads=2, rngs=nnx.Rngs(0))
      >>> pool(jnp.ones((3, 5, 8)), jnp.ones((3, 5)), "attention", attention=attn).shape
      (3, 8)

    References:
      Lee et al. 2019, "Set Transformer" (pooling by multihead attention); Lin et al. 2017,
      "A Structured Self-attentive Sentence Embedding".
    """

    def __init__(self, hidden_size: int, *, num_heads: int = 1, rngs: nnx.Rngs):
        v.check_int(hidden_size, "hidden_size", minimum=1)
        v.check_int(num_heads, "num_heads", minimum=1)
        if hidden_size % num_heads:
            raise ValueError(
                f"hidden_size must be divisible by num_heads; got {hidden_size} and {num_heads}"
            )
        self.num_heads = num_heads
        self.hidden_size = hidden_size
        head_dim = hidden_size // num_heads
        self.query = nnx.Param(jax.random.normal(rngs.params(), (num_heads, head_dim)) * 0.02)
        self.key = nnx.Linear(hidden_size, hidden_size, rngs=rngs)
        self.value = nnx.Linear(hidden_size, hidden_size, rngs=rngs)
        self.out = nnx.Linear(hidden_size, hidden_size, rngs=rngs)

    def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
        split = lambda t: rearrange(t, "b t (a d) -> b t a d", a=self.num_heads)  # noqa: E731
        k, val = split(self.key(hidden)), split(self.value(hidden))
        q = self.query[...]
        scores = jnp.einsum("ad,btad->bat", q, k) / jnp.sqrt(jnp.float32(q.shape[-1]))
        scores = jnp.where(mask[:, None, :], scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1)
        return self.out(rearrange(jnp.einsum("bat,btad->bad", weights, val), "b a d -> b (a d)"))


def _first_real(mask: jax.Array) -> jax.Array:
    """Index of the first real token (handles left padding, as sentence-transformers does)."""
    return jnp.argmax(mask.astype(jnp.int32), axis=1)


def _gather(hidden: jax.Array, index: jax.Array) -> jax.Array:
    return jnp.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0]


def _pool_one(hidden, mask, method, attention):
    maskf = mask.astype(jnp.float32)[..., None]
    if method == "cls":
        return _gather(hidden, _first_real(mask))
    if method == "max":
        return jnp.max(jnp.where(maskf > 0, hidden, -jnp.inf), axis=1)
    if method in ("mean", "mean_sqrt_len"):
        total = jnp.sum(hidden * maskf, axis=1)
        count = jnp.maximum(jnp.sum(maskf, axis=1), 1e-9)
        return total / (count if method == "mean" else jnp.sqrt(count))
    if method == "weighted_mean":
        length = hidden.shape[1]
        steps = jnp.arange(1, length + 1, dtype=jnp.float32)[None, :]
        weights = (steps - _first_real(mask).astype(jnp.float32)[:, None])[..., None] * maskf
        return jnp.sum(hidden * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)
    if method == "last_token":
        length = hidden.shape[1]
        from_end = jnp.argmax(mask[:, ::-1].astype(jnp.int32), axis=1)
        any_real = jnp.any(mask, axis=1)
        last = jnp.where(any_real, length - 1 - from_end, 0)
        return _gather(hidden * maskf, last)
    if method == "attention":
        return attention(hidden, mask)
    raise AssertionError(method)


def pool(
    hidden: jax.Array | Sequence[jax.Array],
    mask: jax.Array,
    method: str | Sequence[str] = "mean",
    *,
    attention: AttentionPool | None = None,
) -> jax.Array:
    """Pool token states ``[B, T, H]`` into sequence embeddings ``[B, H]``; padding never leaks in.

    Methods (``mask`` is 1/True on real tokens):

    - ``cls``: the first real token (position 0 with right padding).
    - ``mean``: ``Σ_t m_t h_t / max(Σ_t m_t, 1e-9)``.
    - ``max``: element-wise max over real tokens (``-inf`` for a sequence without any).
    - ``mean_sqrt_len``: ``Σ_t m_t h_t / sqrt(max(Σ_t m_t, 1e-9))``.
    - ``weighted_mean``: weights ``1, 2, …`` counted from the first real token (SGPT).
    - ``last_token``: the last real token (decoder-style embedders; zeros without any).
    - ``first_last_mean``: ``mean`` pooling of ``(hidden[1] + hidden[-1]) / 2``, where
      ``hidden`` is the tuple of ``output_hidden_states`` (index 0 is the embedding layer), as in
      WhiteningBERT / SimCSE's ``avg_first_last``.
    - ``attention``: a learned-query :class:`AttentionPool` passed as ``attention``.

    A sequence of methods concatenates their outputs in the given order (sentence-transformers'
    multi-mode ``Pooling``).

    Args:
      hidden: ``[B, T, H]`` token states, or for ``first_last_mean`` the hidden-state tuple.
      mask: ``[B, T]`` attention mask (bool or 0/1).
      method: one of the methods above, or a sequence of them.
      attention: the :class:`AttentionPool` module for ``method="attention"``.

    Returns:
      ``[B, H · len(methods)]`` float32.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.encoders import pool
      >>> h = jnp.arange(12.0).reshape(1, 4, 3)
      >>> pool(h, jnp.array([[1, 1, 0, 0]]), "mean")
      Array([[1.5, 2.5, 3.5]], dtype=float32)
      >>> pool(h, jnp.array([[1, 1, 0, 0]]), "last_token")
      Array([[3., 4., 5.]], dtype=float32)

    References:
      Reimers & Gurevych 2019 (Sentence-BERT) and ``sentence_transformers`` ``Pooling`` (the
      semantics matched here, including the ``1e-9`` clamp and left-padding handling);
      Muennighoff 2022 (SGPT, weighted mean); Huang et al. 2021 (WhiteningBERT).
    """
    methods = (method,) if isinstance(method, str) else tuple(method)
    if not methods:
        raise ValueError("method must name at least one pooling method; got an empty sequence")
    for m in methods:
        v.check_choice(m, "method", POOL_METHODS)
    if "first_last_mean" in methods:
        if isinstance(hidden, (list, tuple)):
            layers = list(hidden)
        else:
            hidden = v.check_array(hidden, "hidden", ndim=4, kind="float")
            layers = list(hidden)
        if len(layers) < 2:
            raise ValueError(
                "first_last_mean needs the hidden-state tuple (embeddings and at least one layer); "
                f"got {len(layers)} arrays"
            )
        first_last = (jnp.asarray(layers[1]) + jnp.asarray(layers[-1])) / 2
        states = jnp.asarray(layers[-1])
    else:
        states = hidden
        first_last = None
    states = v.check_array(states, "hidden", ndim=3, kind="float")
    mask = v.check_array(mask, "mask", ndim=2, kind="number")
    if tuple(mask.shape) != tuple(states.shape[:2]):
        raise ValueError(
            f"mask must be [B, T] = {list(states.shape[:2])} to match hidden; got "
            f"{v.shape_str(mask)}"
        )
    if "attention" in methods:
        if not isinstance(attention, AttentionPool):
            raise ValueError(
                "method 'attention' needs attention=AttentionPool(...); got "
                f"{type(attention).__name__}"
            )
        if attention.hidden_size != states.shape[-1]:
            raise ValueError(
                f"attention pool width {attention.hidden_size} does not match hidden width "
                f"{states.shape[-1]}"
            )
    states = jnp.asarray(states, jnp.float32)
    mask = jnp.asarray(mask).astype(bool)
    outs = []
    for m in methods:
        if m == "first_last_mean":
            outs.append(_pool_one(jnp.asarray(first_last, jnp.float32), mask, "mean", None))
        else:
            outs.append(_pool_one(states, mask, m, attention))
    return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
