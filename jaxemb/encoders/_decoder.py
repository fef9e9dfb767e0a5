"""Decoder-style Transformer stacks used as text embedders (Qwen3, Gemma3), in Flax NNX.

The pieces the decoder families share: RMSNorm (``w · x̂`` or Gemma's ``(1 + w) · x̂``, always
computed in float32), grouped-query attention with RMSNorm on each head's queries and keys,
rotary positions with a base per layer, causal / bidirectional / sliding-window masks combined
with the padding mask, and a gated MLP (SwiGLU or GeGLU-tanh). :class:`DecoderEncoder` stacks
them; each family (:mod:`jaxemb.encoders._qwen3`, :mod:`jaxemb.encoders._gemma3`) subclasses
:class:`DecoderConfig` with its own ``config.json`` mapping and says, through a few properties,
how its layers differ (norm convention, sandwich norms, embedding scale, attention scale, which
layers slide, which RoPE base each layer uses).

Positions are ``0 .. T-1`` for every row whatever the padding, as ``transformers`` computes them
when only an ``attention_mask`` is given; rotary attention depends only on relative positions,
so left and right padding give the same states for the real tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange
from flax import nnx

from jaxemb import _validate as v
from jaxemb.encoders._attention import attend
from jaxemb.encoders._family import TensorPlan
from jaxemb.encoders._transformer import (
    ACTIVATIONS,
    COMPUTE_DTYPES,
    EncoderOutput,
    _linear,
    _meta,
    apply_rope,
)

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"
LAYER_TYPES = (FULL_ATTENTION, SLIDING_ATTENTION)


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Hyper-parameters shared by the decoder families (a base class: use
    :class:`~jaxemb.encoders.Qwen3Config` or :class:`~jaxemb.encoders.Gemma3Config`).

    Args:
      vocab_size: token vocabulary size.
      hidden_size: model width ``H``.
      num_layers: decoder layers.
      num_heads: query heads ``A``.
      num_kv_heads: key/value heads ``K`` (grouped-query attention: ``A`` divisible by ``K``).
      head_dim: per-head width ``d`` (need not be ``H / A``; even, for RoPE).
      intermediate_size: gated-MLP width.
      max_positions: longest input accepted (``max_position_embeddings``).
      rms_norm_eps: RMSNorm epsilon.
      activation: gate activation, ``"silu"`` (SwiGLU) or ``"gelu_tanh"`` (GeGLU); also
        ``"gelu"``, ``"relu"``.
      attention_bias: biases on the q/k/v/o projections.
      attention_dropout: dropout rate on attention probabilities (training mode only).
      rope_base: rotary base ``θ`` (of the global layers where the family has two).
      rope_scaling_factor: linear RoPE scaling (position interpolation) factor ``≥ 1`` of the
        layers using ``rope_base``; 1 is plain RoPE.
      layer_types: ``"full_attention"`` or ``"sliding_attention"`` per layer (``None``: the
        family's default pattern).
      sliding_window: the window of the sliding layers, as ``config.json`` writes it.
      tie_word_embeddings: recorded for export (the encoder has no output head).
      pad_token_id: id of the padding token.
      compute_dtype: ``"float32"`` or ``"bfloat16"`` (matmuls; norms and softmax stay float32).
      initializer_range: standard deviation of the normal initialiser.

    References:
      Ainslie et al. 2023 (grouped-query attention); Zhang & Sennrich 2019 (RMSNorm); Su et al.
      2021 (RoPE); Shazeer 2020 (gated MLPs); Hugging Face ``transformers`` ``Qwen3Model`` and
      ``Gemma3TextModel``.
    """

    vocab_size: int = 32000
    hidden_size: int = 1024
    num_layers: int = 2
    num_heads: int = 8
    num_kv_heads: int = 8
    head_dim: int = 128
    intermediate_size: int = 4096
    max_positions: int = 2048
    rms_norm_eps: float = 1e-6
    activation: str = "silu"
    attention_bias: bool = False
    attention_dropout: float = 0.0
    rope_base: float = 10000.0
    rope_scaling_factor: float = 1.0
    layer_types: tuple[str, ...] | None = None
    sliding_window: int | None = None
    tie_word_embeddings: bool = False
    pad_token_id: int = 0
    compute_dtype: str = "float32"
    initializer_range: float = 0.02

    def __post_init__(self):
        for name in (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "intermediate_size",
            "max_positions",
        ):
            v.check_int(getattr(self, name), name, minimum=1)
        v.check_int(self.pad_token_id, "pad_token_id", minimum=0)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads must be a multiple of num_kv_heads; got num_heads={self.num_heads}, "
                f"num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even (rotary positions); got {self.head_dim}")
        v.check_choice(self.activation, "activation", tuple(ACTIVATIONS))
        v.check_choice(self.compute_dtype, "compute_dtype", tuple(COMPUTE_DTYPES))
        v.check_positive(self.rms_norm_eps, "rms_norm_eps")
        v.check_positive(self.rope_base, "rope_base")
        v.check_positive(self.initializer_range, "initializer_range")
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"attention_dropout must be in [0, 1); got {self.attention_dropout!r}")
        if not self.rope_scaling_factor >= 1.0:
            raise ValueError(f"rope_scaling_factor must be >= 1; got {self.rope_scaling_factor!r}")
        if not isinstance(self.attention_bias, bool):
            raise ValueError(f"attention_bias must be a bool; got {self.attention_bias!r}")
        if not isinstance(self.tie_word_embeddings, bool):
            raise ValueError(
                f"tie_word_embeddings must be a bool; got {self.tie_word_embeddings!r}"
            )
        types = self.default_layer_types() if self.layer_types is None else self.layer_types
        if isinstance(types, str) or not all(isinstance(t, str) for t in types):
            raise ValueError(f"layer_types must be a sequence of strings; got {types!r}")
        types = tuple(types)
        if len(types) != self.num_layers:
            raise ValueError(
                f"layer_types must name one type per layer (num_layers={self.num_layers}); got "
                f"{len(types)}: {types}"
            )
        bad = sorted({t for t in types if t not in LAYER_TYPES})
        if bad:
            raise ValueError(f"layer_types must be among {LAYER_TYPES}; got {bad}")
        object.__setattr__(self, "layer_types", types)
        if self.sliding_window is not None:
            v.check_int(self.sliding_window, "sliding_window", minimum=1)
        if SLIDING_ATTENTION in types and self.sliding_window is None:
            raise ValueError(
                "layer_types has sliding_attention layers but sliding_window is None; give the "
                "window"
            )

    # -- what a family says about its layers --------------------------------------------------

    def default_layer_types(self) -> tuple[str, ...]:
        """``layer_types`` when none are given (every layer global here)."""
        return (FULL_ATTENTION,) * self.num_layers

    @property
    def dtype(self):
        return COMPUTE_DTYPES[self.compute_dtype]

    @property
    def causal(self) -> bool:
        """Whether a token attends only to itself and earlier tokens."""
        return True

    @property
    def norm_unit_offset(self) -> bool:
        """RMSNorm scales by ``1 + w`` (Gemma) instead of ``w``."""
        return False

    @property
    def sandwich_norms(self) -> bool:
        """Norms after attention and MLP too (Gemma's four norms per layer) instead of the
        pre-norm pair (``input_layernorm``, ``post_attention_layernorm`` before the MLP)."""
        return False

    @property
    def embed_scale(self) -> float | None:
        """Factor on the token embeddings (Gemma: ``√H``), or ``None``."""
        return None

    @property
    def attention_scale(self) -> float:
        """Factor on ``q · k`` (``1 / √head_dim`` here)."""
        return self.head_dim**-0.5

    def layer_window(self, layer: int) -> int | None:
        """Keys with ``|query position − key position| < window`` (earlier keys only when
        causal) are visible to layer ``layer``; ``None``: no window."""
        return self.sliding_window if self.layer_types[layer] == SLIDING_ATTENTION else None

    def layer_rope(self, layer: int) -> tuple[float, float]:
        """``(base θ, linear scaling factor)`` of layer ``layer``'s rotary positions."""
        del layer
        return self.rope_base, self.rope_scaling_factor


# ---------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------


def rope_tables(
    head_dim: int, base: float, factor: float, length: int
) -> tuple[jax.Array, jax.Array]:
    """``cos, sin`` ``[T, head_dim]`` float32 for positions ``0 .. T-1``, with linearly scaled
    frequencies ``θ^(-2i/d) / factor`` (``transformers``' ``default`` and ``linear`` RoPE)."""
    inv_freq = 1.0 / (base ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    inv_freq = inv_freq / jnp.float32(factor)
    angles = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def attention_keep(padding: jax.Array, *, causal: bool, window: int | None) -> jax.Array:
    """Which keys each query sees: ``[B, T, T]`` bool from a key-padding mask ``[B, T]``.

    ``causal`` keeps keys at or before the query; ``window`` keeps keys closer than ``window``
    positions (``q − k < window`` when causal, ``|q − k| < window`` otherwise).
    """
    length = padding.shape[1]
    q = jnp.arange(length)[:, None]
    k = jnp.arange(length)[None, :]
    allowed = jnp.ones((length, length), bool)
    if causal:
        allowed = allowed & (k <= q)
    if window is not None:
        allowed = allowed & (jnp.abs(q - k) < window)
    return allowed[None] & padding[:, None, :]


class RMSNorm(nnx.Module):
    """``x / √(mean(x²) + ε)`` times ``w`` (or ``1 + w``), computed in float32.

    Args:
      dim: normalised (last) axis length.
      eps: ε.
      unit_offset: scale by ``1 + w`` with ``w`` initialised to 0 (Gemma) instead of ``w``
        initialised to 1 (Llama, Qwen).
      axis: logical axis name of the scale (``"embed"``; ``None`` for per-head norms).
      rngs: unused (parameters are constant-initialised); kept for the NNX constructor shape.
    """

    def __init__(
        self, dim: int, *, eps: float, unit_offset: bool, axis: str | None, rngs: nnx.Rngs
    ):
        del rngs
        self.eps = eps
        self.unit_offset = unit_offset
        init = jnp.zeros if unit_offset else jnp.ones
        self.scale = nnx.Param(init((dim,), jnp.float32), **_meta(axis))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
        w = self.scale[...].astype(jnp.float32)
        w = (1.0 + w if self.unit_offset else w).reshape((1,) * (x.ndim - 1) + w.shape)
        return x * w


class DecoderAttention(nnx.Module):
    """Grouped-query self-attention with per-head q/k RMSNorm and rotary positions.

    ``q_proj [H, A·d]``, ``k_proj``/``v_proj [H, K·d]``, ``o_proj [A·d, H]`` (as ``nnx.Linear``,
    so kernels are the transpose of ``transformers``' ``[out, in]`` weights); query head ``h``
    reads key/value head ``h // (A / K)``.
    """

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        h, d = cfg.hidden_size, cfg.head_dim
        a, kv = cfg.num_heads, cfg.num_kv_heads
        bias = cfg.attention_bias
        self.q_proj = _linear(h, a * d, ("embed", "heads"), cfg, rngs, use_bias=bias)
        self.k_proj = _linear(h, kv * d, ("embed", "heads"), cfg, rngs, use_bias=bias)
        self.v_proj = _linear(h, kv * d, ("embed", "heads"), cfg, rngs, use_bias=bias)
        self.o_proj = _linear(a * d, h, ("heads", "embed"), cfg, rngs, use_bias=bias)
        norm = dict(eps=cfg.rms_norm_eps, unit_offset=cfg.norm_unit_offset, axis=None, rngs=rngs)
        self.q_norm = RMSNorm(d, **norm)
        self.k_norm = RMSNorm(d, **norm)
        self.attn_dropout = nnx.Dropout(cfg.attention_dropout)

    def __call__(
        self,
        x: jax.Array,
        keep: jax.Array,
        rope: tuple[jax.Array, jax.Array],
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        cfg = self.cfg
        dtype = cfg.dtype
        split = lambda t: rearrange(t, "b t (a d) -> b t a d", d=cfg.head_dim)  # noqa: E731
        q = apply_rope(self.q_norm(split(self.q_proj(x))), *rope).astype(dtype)
        k = apply_rope(self.k_norm(split(self.k_proj(x))), *rope).astype(dtype)
        val = split(self.v_proj(x))
        q, k, val = (rearrange(t, "b t n d -> b n t d") for t in (q, k, val))
        ctx = attend(
            q,
            k,
            val,
            keep[:, None],
            scale=cfg.attention_scale,
            dropout=self.attn_dropout,
            rngs=rngs,
        )
        return self.o_proj(rearrange(ctx, "b a t d -> b t (a d)"))


class GatedMLP(nnx.Module):
    """``down(act(gate(x)) · up(x))`` without biases (SwiGLU with ``silu``, GeGLU with
    ``gelu_tanh``)."""

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
        h, i = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = _linear(h, i, ("embed", "mlp"), cfg, rngs, use_bias=False)
        self.up_proj = _linear(h, i, ("embed", "mlp"), cfg, rngs, use_bias=False)
        self.down_proj = _linear(i, h, ("mlp", "embed"), cfg, rngs, use_bias=False)
        self.act = ACTIVATIONS[cfg.activation]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
    """One decoder layer.

    Pre-norm (Qwen3): ``x += Attn(N₁(x))``, ``x += MLP(N₂(x))``. Sandwich (Gemma3):
    ``x += N₂(Attn(N₁(x)))``, ``x += N₄(MLP(N₃(x)))``. The residual stream is float32.
    """

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.self_attn = DecoderAttention(cfg, rngs=rngs)
        self.mlp = GatedMLP(cfg, rngs=rngs)
        h = cfg.hidden_size
        norm = dict(eps=cfg.rms_norm_eps, unit_offset=cfg.norm_unit_offset, axis="embed", rngs=rngs)
        self.input_layernorm = RMSNorm(h, **norm)
        self.post_attention_layernorm = RMSNorm(h, **norm)
        if cfg.sandwich_norms:
            self.pre_feedforward_layernorm = RMSNorm(h, **norm)
            self.post_feedforward_layernorm = RMSNorm(h, **norm)
        else:
            self.pre_feedforward_layernorm = None
            self.post_feedforward_layernorm = None

    def __call__(self, x, keep, rope, rngs):
        dtype = self.cfg.dtype
        a = self.self_attn(self.input_layernorm(x).astype(dtype), keep, rope, rngs)
        a = a.astype(jnp.float32)
        if self.post_feedforward_layernorm is None:
            x = x + a
            m = self.mlp(self.post_attention_layernorm(x).astype(dtype)).astype(jnp.float32)
            return x + m
        x = x + self.post_attention_layernorm(a)
        m = self.mlp(self.pre_feedforward_layernorm(x).astype(dtype)).astype(jnp.float32)
        return x + self.post_feedforward_layernorm(m)


class DecoderEncoder(nnx.Module):
    """A decoder stack as an encoder: ``input_ids [B, T] -> EncoderOutput(last_hidden_state)``.

    The common body of :class:`~jaxemb.encoders.Qwen3Encoder` and
    :class:`~jaxemb.encoders.Gemma3Encoder` (use those). ``embed_tokens`` (scaled by the
    config's ``embed_scale``), the layers with the attention mask of their type (causal or not,
    sliding or global) and their RoPE base, then the final ``norm``. Attention dropout is active
    in NNX training mode (needs ``rngs`` with a ``dropout`` stream); loaded models are in eval
    mode.

    Args:
      config: the family's :class:`DecoderConfig` subclass.
      rngs: parameter RNG streams.

    Call args:
      input_ids: ``[B, T]`` integer token ids.
      attention_mask: ``[B, T]``, 1/True for real tokens (left or right padding); ``None``: all
        real.
      output_hidden_states: also return ``num_layers + 1`` states ``[B, T, H]`` as
        ``transformers`` 5 does: the (scaled) embeddings, each layer's output, the last one
        after the final norm.
      rngs: dropout RNG streams (training mode only).

    Returns:
      :class:`~jaxemb.encoders.EncoderOutput` with float32 ``last_hidden_state [B, T, H]``.
    """

    config_class: type = DecoderConfig

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, self.config_class):
            raise ValueError(
                f"config must be a {self.config_class.__name__}; got {type(config).__name__}"
            )
        cfg = self.config = config
        self.embed_tokens = nnx.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            embedding_init=nnx.initializers.normal(cfg.initializer_range),
            embedding_metadata=_meta("vocab", "embed"),
            rngs=rngs,
        )
        self.layers = nnx.List([DecoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(
            cfg.hidden_size,
            eps=cfg.rms_norm_eps,
            unit_offset=cfg.norm_unit_offset,
            axis="embed",
            rngs=rngs,
        )

    def _check_inputs(self, input_ids: Any, attention_mask: Any) -> tuple[int, int]:
        cfg = self.config
        input_ids = v.check_array(input_ids, "input_ids", ndim=2, kind="int")
        batch, length = (int(n) for n in input_ids.shape)
        if isinstance(input_ids, np.ndarray):
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= cfg.vocab_size:
                raise ValueError(
                    f"input_ids must be in [0, vocab_size={cfg.vocab_size}); got values in "
                    f"[{lo}, {hi}]"
                )
        if length > cfg.max_positions:
            raise ValueError(
                f"sequence length {length} is longer than max_positions={cfg.max_positions} "
                "(the model's max_position_embeddings); truncate the inputs (Embedder.encode "
                "does)"
            )
        if attention_mask is not None:
            attention_mask = v.check_array(attention_mask, "attention_mask", ndim=2, kind="number")
            if tuple(attention_mask.shape) != (batch, length):
                raise ValueError(
                    f"attention_mask must have the shape of input_ids {[batch, length]}; got "
                    f"{v.shape_str(attention_mask)}"
                )
        return batch, length

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        *,
        output_hidden_states: bool = False,
        rngs: nnx.Rngs | None = None,
    ) -> EncoderOutput:
        cfg = self.config
        batch, length = self._check_inputs(input_ids, attention_mask)
        if attention_mask is None:
            padding = jnp.ones((batch, length), bool)
        else:
            padding = jnp.asarray(attention_mask).astype(bool)
        x = self.embed_tokens.embedding[...][jnp.asarray(input_ids)]
        if cfg.embed_scale is not None:
            # transformers multiplies in the weights' dtype (bfloat16 rounds √H)
            scale = jnp.asarray(cfg.embed_scale, jnp.float32).astype(cfg.dtype)
            x = (x.astype(cfg.dtype) * scale).astype(jnp.float32)
        masks: dict[int | None, jax.Array] = {}
        ropes: dict[tuple[float, float], tuple[jax.Array, jax.Array]] = {}
        hidden = [x]
        for n, layer in enumerate(self.layers):
            window = cfg.layer_window(n)
            if window not in masks:
                masks[window] = attention_keep(padding, causal=cfg.causal, window=window)
            base, factor = cfg.layer_rope(n)
            if (base, factor) not in ropes:
                ropes[base, factor] = rope_tables(cfg.head_dim, base, factor, length)
            x = layer(x, masks[window], ropes[base, factor], rngs)
            hidden.append(x)
        x = self.norm(x)
        hidden[-1] = x
        return EncoderOutput(
            last_hidden_state=x,
            hidden_states=tuple(hidden) if output_hidden_states else None,
        )


# ---------------------------------------------------------------------------------------------
# config.json and checkpoint layout shared by the decoder families
# ---------------------------------------------------------------------------------------------

#: RoPE types of ``transformers`` reproduced here.
ROPE_TYPES = ("default", "linear")


def rope_from_hf(params: Any, default_theta: float, where: str, key: str) -> tuple[float, float]:
    """``(θ, linear factor)`` from one ``transformers`` RoPE parameter dict (``rope_parameters``
    of transformers 5 or the older ``rope_scaling``); refuses RoPE types not reproduced."""
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise ValueError(f"{where}: {key} must be a JSON object; got {params!r}")
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise ValueError(
            f"{where}: {key} rope_type {rope_type!r} is not supported; supported: "
            f"{', '.join(ROPE_TYPES)}"
        )
    partial = params.get("partial_rotary_factor", 1.0)
    if partial not in (None, 1, 1.0):
        raise ValueError(
            f"{where}: {key} partial_rotary_factor {partial!r} is not supported; only 1.0 (the "
            "whole head rotated) is"
        )
    theta = float(params.get("rope_theta", default_theta))
    factor = float(params["factor"]) if rope_type == "linear" else 1.0
    return theta, factor


def rope_to_hf(theta: float, factor: float) -> dict[str, Any]:
    """The ``rope_parameters`` entry transformers 5 writes for ``(θ, linear factor)``."""
    if factor == 1.0:
        return {"rope_theta": theta, "rope_type": "default"}
    return {"factor": factor, "rope_theta": theta, "rope_type": "linear"}


def decoder_tensor_plan(cfg: DecoderConfig) -> TensorPlan:
    """Every tensor of a ``transformers`` decoder base model (``embed_tokens``,
    ``layers.{i}.self_attn.{q,k,v,o}_proj``, ``q_norm``/``k_norm``, the layer norms,
    ``mlp.{gate,up,down}_proj``, ``norm``) and where it lives in :class:`DecoderEncoder`."""
    h, d, i = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    q, kv = cfg.num_heads * d, cfg.num_kv_heads * d
    plan: TensorPlan = {
        "embed_tokens.weight": ((cfg.vocab_size, h), ("embed_tokens", "embedding"), False),
        "norm.weight": ((h,), ("norm", "scale"), False),
    }
    linears = {
        "self_attn.q_proj": (h, q, cfg.attention_bias),
        "self_attn.k_proj": (h, kv, cfg.attention_bias),
        "self_attn.v_proj": (h, kv, cfg.attention_bias),
        "self_attn.o_proj": (q, h, cfg.attention_bias),
        "mlp.gate_proj": (h, i, False),
        "mlp.up_proj": (h, i, False),
        "mlp.down_proj": (i, h, False),
    }
    norms = {"self_attn.q_norm": d, "self_attn.k_norm": d}
    names = ["input_layernorm", "post_attention_layernorm"]
    if cfg.sandwich_norms:
        names += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
    norms.update({name: h for name in names})
    for n in range(cfg.num_layers):
        prefix, ours = f"layers.{n}.", ("layers", n)
        for name, (din, dout, bias) in linears.items():
            path = (*ours, *name.split("."))
            plan[prefix + name + ".weight"] = ((dout, din), (*path, "kernel"), True)
            if bias:
                plan[prefix + name + ".bias"] = ((dout,), (*path, "bias"), False)
        for name, dim in norms.items():
            plan[prefix + name + ".weight"] = ((dim,), (*ours, *name.split("."), "scale"), False)
    return plan
