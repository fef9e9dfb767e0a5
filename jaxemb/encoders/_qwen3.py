"""The Qwen3 family (``model_type`` ``qwen3``): ``transformers`` ``Qwen3Model`` checkpoints.

Qwen3-Embedding (0.6B, 4B, 8B) is a Qwen3 decoder read at its last token: causal attention,
RMSNorm, grouped-query attention with RMSNorm on each head's queries and keys, RoPE, SwiGLU.
``Qwen3ForCausalLM`` checkpoints load too (``model.`` prefix; the LM head is ignored).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxemb.encoders._bert import HF_ACTIVATION_NAMES, HF_ACTIVATIONS, require_keys
from jaxemb.encoders._decoder import (
    FULL_ATTENTION,
    SLIDING_ATTENTION,
    DecoderConfig,
    DecoderEncoder,
    decoder_tensor_plan,
    rope_from_hf,
    rope_to_hf,
)
from jaxemb.encoders._family import Family, TensorPlan


@dataclasses.dataclass(frozen=True)
class Qwen3Config(DecoderConfig):
    """Hyper-parameters of :class:`Qwen3Encoder` (defaults are Qwen3-Embedding-0.6B's).

    Attention scores are scaled by ``1 / √head_dim`` and RMSNorm multiplies by ``w``.

    Args:
      vocab_size: token vocabulary size.
      hidden_size: model width ``H``.
      num_layers: decoder layers.
      num_heads: query heads ``A``.
      num_kv_heads: key/value heads ``K`` (``A`` divisible by ``K``).
      head_dim: per-head width ``d`` (Qwen3 sets it apart from ``H / A``; even).
      intermediate_size: SwiGLU width.
      max_positions: longest input accepted (``max_position_embeddings``).
      rms_norm_eps: RMSNorm epsilon.
      activation: ``"silu"`` (SwiGLU, Qwen3's ``hidden_act``), ``"gelu_tanh"``, ``"gelu"``,
        ``"relu"``.
      attention_bias: biases on the q/k/v/o projections (``attention_bias``).
      attention_dropout: dropout on attention probabilities in training mode.
      rope_base: RoPE ``θ`` (``rope_theta``).
      rope_scaling_factor: linear RoPE scaling factor (1: none).
      layer_types: ``"full_attention"`` / ``"sliding_attention"`` per layer (default: all full).
      sliding_window: the causal window of sliding layers (keys with ``q − k < window``).
      tie_word_embeddings: recorded for export (the encoder has no LM head).
      pad_token_id: the padding id.
      compute_dtype: ``"float32"`` or ``"bfloat16"`` matmuls (norms and softmax in float32).
      initializer_range: standard deviation of the normal initialiser.

    Examples:
      >>> from jaxemb.encoders import Qwen3Config
      >>> cfg = Qwen3Config(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4,
      ...                   num_kv_heads=2, head_dim=8, intermediate_size=64)
      >>> cfg.layer_types, cfg.num_heads // cfg.num_kv_heads
      (('full_attention', 'full_attention'), 2)

    References:
      Yang et al. 2025 (Qwen3); Zhang et al. 2025 (Qwen3 Embedding); Hugging Face
      ``transformers.Qwen3Config``.
    """

    vocab_size: int = 151669
    hidden_size: int = 1024
    num_layers: int = 28
    num_heads: int = 16
    num_kv_heads: int = 8
    head_dim: int = 128
    intermediate_size: int = 3072
    max_positions: int = 32768
    rope_base: float = 1000000.0
    tie_word_embeddings: bool = True
    pad_token_id: int = 151643


class Qwen3Encoder(DecoderEncoder):
    """Qwen3 as a text encoder: ``input_ids [B, T] -> EncoderOutput(last_hidden_state)``.

    The computation of ``transformers`` ``Qwen3Model``: token embeddings, pre-norm decoder
    layers (``x += Attn(RMSNorm(x))``, ``x += SwiGLU(RMSNorm(x))``) with causal grouped-query
    attention, q/k RMSNorm over each head and RoPE at positions ``0 .. T-1``, then a final
    RMSNorm. Padding may be on either side (Qwen3-Embedding pads on the left and pools the last
    token); padded keys get no attention weight.

    Args:
      config: a :class:`Qwen3Config`.
      rngs: parameter RNG streams.

    Call args:
      input_ids: ``[B, T]`` integer token ids.
      attention_mask: ``[B, T]``, 1 for real tokens; ``None``: all real.
      output_hidden_states: also return the embeddings and each layer's output (the last after
        the final norm), ``num_layers + 1`` arrays ``[B, T, H]``.
      rngs: dropout streams (training mode with ``attention_dropout > 0`` only).

    Returns:
      :class:`~jaxemb.encoders.EncoderOutput`; ``last_hidden_state`` is ``[B, T, H]`` float32.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb.encoders import Qwen3Config, Qwen3Encoder
      >>> cfg = Qwen3Config(vocab_size=50, hidden_size=16, num_layers=2, num_heads=4,
      ...                   num_kv_heads=2, head_dim=4, intermediate_size=32, pad_token_id=0)
      >>> enc = Qwen3Encoder(cfg, rngs=nnx.Rngs(0))
      >>> ids = jnp.array([[0, 5, 7, 9], [4, 8, 3, 2]])  # the first row left-padded
      >>> out = enc(ids, ids != 0, output_hidden_states=True)
      >>> out.last_hidden_state.shape, len(out.hidden_states)
      ((2, 4, 16), 3)

    References:
      Yang et al. 2025 (Qwen3); Zhang et al. 2025 (Qwen3 Embedding); Hugging Face
      ``transformers`` ``Qwen3Model`` (reference for exact parity).
    """

    config_class = Qwen3Config


def _first_id(value: Any) -> int | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def qwen3_config_from_hf(hf: dict[str, Any], where: str = "config.json") -> Qwen3Config:
    """A ``qwen3`` ``config.json`` (transformers 4.5x or 5.x) as a :class:`Qwen3Config`."""
    require_keys(
        hf, ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"), where
    )
    act = hf.get("hidden_act", "silu")
    if act not in HF_ACTIVATIONS:
        raise ValueError(
            f"{where}: hidden_act {act!r} is not supported; supported: {sorted(HF_ACTIVATIONS)}"
        )
    # transformers: rope_scaling (older files) or rope_parameters, θ from there or rope_theta
    rope = hf.get("rope_scaling") or hf.get("rope_parameters")
    key = "rope_scaling" if hf.get("rope_scaling") else "rope_parameters"
    theta, factor = rope_from_hf(rope, hf.get("rope_theta", 10000.0), where, key)
    layers = int(hf["num_hidden_layers"])
    window = hf.get("sliding_window") if hf.get("use_sliding_window", False) else None
    types = hf.get("layer_types")
    if types is None:
        first = int(hf.get("max_window_layers", 28))
        types = [
            SLIDING_ATTENTION if window is not None and n >= first else FULL_ATTENTION
            for n in range(layers)
        ]
    if SLIDING_ATTENTION in list(types) and window is None:
        raise ValueError(
            f"{where}: layer_types has sliding_attention layers but use_sliding_window is "
            f"{hf.get('use_sliding_window')!r} and sliding_window {hf.get('sliding_window')!r}; "
            "transformers runs no window then"
        )
    pad = _first_id(hf.get("pad_token_id"))
    if pad is None:
        pad = _first_id(hf.get("eos_token_id"))
    heads = int(hf["num_attention_heads"])
    return Qwen3Config(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=int(hf.get("head_dim") or 128),
        intermediate_size=int(hf.get("intermediate_size", 22016)),
        max_positions=int(hf.get("max_position_embeddings", 32768)),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        activation=HF_ACTIVATIONS[act],
        attention_bias=bool(hf.get("attention_bias", False)),
        attention_dropout=float(hf.get("attention_dropout") or 0.0),
        rope_base=theta,
        rope_scaling_factor=factor,
        layer_types=tuple(types),
        sliding_window=None if window is None else int(window),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        pad_token_id=0 if pad is None else pad,
        initializer_range=float(hf.get("initializer_range", 0.02)),
    )


def qwen3_config_to_hf(cfg: Qwen3Config) -> dict[str, Any]:
    """The ``config.json`` of ``Qwen3Model`` for ``cfg`` (transformers 5 layout)."""
    return {
        "architectures": ["Qwen3Model"],
        "model_type": "qwen3",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": HF_ACTIVATION_NAMES[cfg.activation],
        "max_position_embeddings": cfg.max_positions,
        "rms_norm_eps": cfg.rms_norm_eps,
        "attention_bias": cfg.attention_bias,
        "attention_dropout": cfg.attention_dropout,
        "rope_parameters": rope_to_hf(cfg.rope_base, cfg.rope_scaling_factor),
        "use_sliding_window": cfg.sliding_window is not None,
        "sliding_window": cfg.sliding_window,
        "max_window_layers": cfg.num_layers,
        "layer_types": list(cfg.layer_types),
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "pad_token_id": cfg.pad_token_id,
        "initializer_range": cfg.initializer_range,
        "use_cache": True,
        "dtype": "float32",
    }


def qwen3_tensor_plan(cfg: Qwen3Config) -> TensorPlan:
    """Every ``Qwen3Model`` tensor and where it goes."""
    return decoder_tensor_plan(cfg)


QWEN3 = Family(
    name="Qwen3",
    model_types=("qwen3",),
    encoder_class=Qwen3Encoder,
    config_class=Qwen3Config,
    config_from_hf=qwen3_config_from_hf,
    config_to_hf=qwen3_config_to_hf,
    tensor_plan=qwen3_tensor_plan,
    checkpoint_prefixes=("model.",),
    examples=(
        "Qwen/Qwen3-Embedding-0.6B",
        "Qwen/Qwen3-Embedding-4B",
        "Qwen/Qwen3-Embedding-8B",
    ),
)
