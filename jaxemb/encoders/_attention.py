"""The attention core every encoder family shares: softmax(q·kᵀ·scale + bias) v over kept keys.

One function, three execution paths picked at trace time: with dropout on the attention
probabilities (training), the whole batch's probabilities are materialised and dropped out; on
CPU without dropout, a few batch rows at a time, so each row's ``[heads, T, T]`` scores stay in
cache (about twice as fast at T = 256 as the whole batch through memory); on GPU/TPU,
``jax.nn.dot_product_attention`` (cuDNN's fused kernel for bfloat16/float16 on NVIDIA GPUs when it
supports the shapes, XLA's otherwise).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from jaxemb import _validate as v

#: Scores of a batch row (heads × T × T float32 values) that the CPU path keeps in cache.
_CPU_ROW_BUDGET = 1 << 21


def _probs(q, k, keep, bias, scale):
    """Float32 softmax weights ``[b, K, G, t, s]`` of ``q [b, K, G, t, d]`` over ``k [b, K, s,
    d]``; ``keep`` ``[b, 1, 1, t|1, s]`` bool, ``bias`` ``[b|1, K, G, t, s]`` or ``None``."""
    scores = jnp.einsum("bngqd,bnkd->bngqk", q, k, preferred_element_type=jnp.float32)
    scores = scores * jnp.float32(scale)
    if bias is not None:
        scores = scores + bias
    scores = jnp.where(keep, scores, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores, axis=-1)


def _fused(q, k, val, keep, bias, scale):
    """``jax.nn.dot_product_attention`` on ``[B, T, heads, d]`` operands (GQA native)."""
    args = dict(
        query=rearrange(q, "b a t d -> b t a d"),
        key=rearrange(k, "b n s d -> b s n d"),
        value=rearrange(val, "b n s d -> b s n d"),
        bias=bias,
        mask=keep,
        scale=float(scale),
    )
    if q.dtype in (jnp.bfloat16, jnp.float16) and jax.default_backend() == "gpu":
        try:
            out = jax.nn.dot_product_attention(**args, implementation="cudnn")
            return rearrange(out, "b t a d -> b a t d")
        except Exception:  # shapes, mask or GPU cuDNN does not support: XLA's attention
            pass
    out = jax.nn.dot_product_attention(**args, implementation="xla")
    return rearrange(out, "b t a d -> b a t d")


def attend(
    q: jax.Array,
    k: jax.Array,
    value: jax.Array,
    keep: jax.Array,
    *,
    scale: float,
    bias: jax.Array | None = None,
    dropout: nnx.Dropout | None = None,
    rngs: nnx.Rngs | None = None,
) -> jax.Array:
    """Multi-head (or grouped-query) softmax attention of heads-major operands.

    ``ctx[b, h, t] = Σ_s p[b, h, t, s] v[b, g(h), s]`` with ``p = softmax_s(q[b, h, t] ·
    k[b, g(h), s] · scale + bias[b, h, t, s])`` over the keys ``keep`` allows, where query head
    ``h`` reads key/value head ``g(h) = h // (A / K)``. Scores and softmax are float32 whatever
    the operands' dtype.

    Args:
      q: ``[B, A, T, d]`` queries.
      k: ``[B, K, S, d]`` keys, ``A`` a multiple of ``K``.
      value: ``[B, K, S, d]`` values.
      keep: bool, broadcastable to ``[B, 1, T, S]`` with its batch axis ``B`` (``[B, 1, 1, S]``
        for a key-padding mask); ``False`` keys get zero weight.
      scale: multiplies ``q·k`` (``d ** -0.5`` for most models).
      bias: ``None`` or float32 ``[B or 1, A, T, S]`` added to the scores (ALiBi, relative
        position buckets).
      dropout: the attention-probability dropout (active in training mode with a rate > 0).
      rngs: dropout RNG streams.

    Returns:
      ``[B, A, T, d]`` in ``value``'s dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.encoders._attention import attend
      >>> q = k = value = jnp.ones((2, 4, 3, 8))
      >>> keep = jnp.array([[1, 1, 0], [1, 1, 1]], bool)[:, None, None, :]
      >>> attend(q, k[:, :2], value[:, :2], keep, scale=8 ** -0.5).shape
      (2, 4, 3, 8)

    References:
      Vaswani et al. 2017; Ainslie et al. 2023 (GQA); ``transformers``' ``eager_attention_forward``
      (the reference's float32 scores, ``scaling`` multiplied in); JAX
      ``jax.nn.dot_product_attention``.
    """
    batch, heads, length, dim = q.shape
    kv = k.shape[1]
    if heads % kv or k.shape != value.shape or k.shape[0] != batch or k.shape[3] != dim:
        raise ValueError(
            f"attend needs q [B, A, T, d] and k, v [B, K, S, d] with A a multiple of K; got "
            f"{v.shape_str(q)}, {v.shape_str(k)}, {v.shape_str(value)}"
        )
    dropout_on = dropout is not None and not dropout.deterministic and dropout.rate > 0
    if not dropout_on and jax.default_backend() != "cpu":
        return _fused(q, k, value, keep, bias, scale).astype(value.dtype)
    qg = rearrange(q, "b (n g) t d -> b n g t d", n=kv)
    keep5 = keep[:, :, None]  # [B, 1, 1, T|1, S]
    bias5 = None if bias is None else rearrange(bias, "b (n g) t s -> b n g t s", n=kv)
    if dropout_on:
        p = _probs(qg, k, keep5, bias5, scale)
        p = dropout(p, rngs=rngs).astype(value.dtype)
        ctx = jnp.einsum("bngqk,bnkd->bngqd", p, value)
        return rearrange(ctx, "b n g t d -> b (n g) t d")
    rows = max(1, _CPU_ROW_BUDGET // (heads * length * k.shape[2]))
    per_row = bias5 is not None and bias5.shape[0] > 1

    def one_row(row):  # lax.map vectorises `rows` of them at a time
        rq, rk, rv, rkeep = (t[None] for t in row[:4])
        rbias = row[4][None] if per_row else bias5
        p = _probs(rq, rk, rkeep, rbias, scale).astype(rv.dtype)
        return jnp.einsum("bngqk,bnkd->bngqd", p, rv)[0]

    keep5 = jnp.broadcast_to(keep5, (batch, *keep5.shape[1:]))
    inputs = (qg, k, value, keep5, bias5) if per_row else (qg, k, value, keep5)
    ctx = jax.lax.map(one_row, inputs, batch_size=min(rows, batch))
    return rearrange(ctx, "b n g t d -> b (n g) t d")
