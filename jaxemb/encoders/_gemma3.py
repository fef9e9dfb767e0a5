"""The Gemma3 text family (``model_type`` ``gemma3_text``): ``transformers`` ``Gemma3TextModel``.

EmbeddingGemma-300m is a Gemma3 text decoder run with bidirectional attention and mean-pooled:
RMSNorm with the ``(1 + w)`` convention, grouped-query attention with q/k RMSNorm and
``query_pre_attn_scalar`` scaling, sliding-window local layers and global layers each with
their own RoPE base, embeddings scaled by ``√hidden_size``, four norms per layer, GeGLU.
``Gemma3ForCausalLM`` checkpoints load too (``model.`` prefix; the LM head is ignored).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from jaxemb import _validate as v
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
class Gemma3Config(DecoderConfig):
    """Hyper-parameters of :class:`Gemma3Encoder` (defaults are EmbeddingGemma-300m's).

    Besides :class:`~jaxemb.encoders._decoder.DecoderConfig`'s fields (``vocab_size``,
    ``hidden_size``, ``num_layers``, ``num_heads``, ``num_kv_heads``, ``head_dim``,
    ``intermediate_size``, ``max_positions``, ``rms_norm_eps``, ``activation``,
    ``attention_bias``, ``attention_dropout``, ``rope_base`` and ``rope_scaling_factor`` of the
    global layers, ``layer_types``, ``sliding_window``, ``tie_word_embeddings``,
    ``pad_token_id``, ``compute_dtype``, ``initializer_range``):

    Args:
      rope_local_base: RoPE base of the sliding-window layers (``rope_local_base_freq``).
      rope_local_scaling_factor: their linear RoPE scaling factor (1: none).
      query_pre_attn_scalar: attention scores are scaled by ``query_pre_attn_scalar ** -0.5``.
      use_bidirectional_attention: every token sees every other (EmbeddingGemma); the sliding
        layers then see keys with ``|q − k| ≤ sliding_window // 2`` (transformers' reading of
        the window for bidirectional attention). ``False``: causal, the sliding layers see
        ``q − k < sliding_window``.
      sliding_pattern: with ``layer_types=None``, every ``sliding_pattern``-th layer is global
        and the others slide (``sliding_window_pattern`` of older configs, 6).

    Examples:
      >>> from jaxemb.encoders import Gemma3Config
      >>> cfg = Gemma3Config(vocab_size=100, hidden_size=32, num_layers=3, num_heads=4,
      ...                    num_kv_heads=1, head_dim=8, intermediate_size=64,
      ...                    sliding_window=8, sliding_pattern=3)
      >>> cfg.layer_types
      ('sliding_attention', 'sliding_attention', 'full_attention')
      >>> cfg.layer_window(0), cfg.layer_window(2)
      (5, None)

    References:
      Gemma Team 2025 (Gemma 3); Vera et al. 2025 (EmbeddingGemma); Hugging Face
      ``transformers.Gemma3TextConfig``.
    """

    vocab_size: int = 262144
    hidden_size: int = 768
    num_layers: int = 24
    num_heads: int = 3
    num_kv_heads: int = 1
    head_dim: int = 256
    intermediate_size: int = 1152
    max_positions: int = 2048
    activation: str = "gelu_tanh"
    rope_base: float = 1000000.0
    sliding_window: int | None = 512
    tie_word_embeddings: bool = True
    rope_local_base: float = 10000.0
    rope_local_scaling_factor: float = 1.0
    query_pre_attn_scalar: float = 256.0
    use_bidirectional_attention: bool = True
    sliding_pattern: int = 6

    def __post_init__(self):
        v.check_int(self.sliding_pattern, "sliding_pattern", minimum=1)
        super().__post_init__()
        v.check_positive(self.rope_local_base, "rope_local_base")
        v.check_positive(self.query_pre_attn_scalar, "query_pre_attn_scalar")
        if not self.rope_local_scaling_factor >= 1.0:
            raise ValueError(
                f"rope_local_scaling_factor must be >= 1; got {self.rope_local_scaling_factor!r}"
            )
        if not isinstance(self.use_bidirectional_attention, bool):
            raise ValueError(
                "use_bidirectional_attention must be a bool; got "
                f"{self.use_bidirectional_attention!r}"
            )

    def default_layer_types(self) -> tuple[str, ...]:
        return tuple(
            SLIDING_ATTENTION if (n + 1) % self.sliding_pattern else FULL_ATTENTION
            for n in range(self.num_layers)
        )

    @property
    def causal(self) -> bool:
        return not self.use_bidirectional_attention

    @property
    def norm_unit_offset(self) -> bool:
        return True

    @property
    def sandwich_norms(self) -> bool:
        return True

    @property
    def embed_scale(self) -> float:
        return math.sqrt(self.hidden_size)

    @property
    def attention_scale(self) -> float:
        return float(self.query_pre_attn_scalar) ** -0.5

    def layer_window(self, layer: int) -> int | None:
        if self.layer_types[layer] != SLIDING_ATTENTION:
            return None
        if self.use_bidirectional_attention:
            # transformers keeps sliding_window // 2 + 1 as an exclusive bound on |q - k| then
            return self.sliding_window // 2 + 1
        return self.sliding_window

    def layer_rope(self, layer: int) -> tuple[float, float]:
        if self.layer_types[layer] == SLIDING_ATTENTION:
            return self.rope_local_base, self.rope_local_scaling_factor
        return self.rope_base, self.rope_scaling_factor


class Gemma3Encoder(DecoderEncoder):
    """Gemma3 text model as an encoder: ``input_ids [B, T] -> EncoderOutput``.

    The computation of ``transformers`` ``Gemma3TextModel``: token embeddings times
    ``√hidden_size`` (rounded to the compute dtype), then layers
    ``x += N₂(Attn(N₁(x)))``, ``x += N₄(GeGLU(N₃(x)))`` with RMSNorms scaling by ``(1 + w)``,
    grouped-query attention with q/k RMSNorm, scores scaled by ``query_pre_attn_scalar⁻½``,
    RoPE at positions ``0 .. T-1`` with the local base on sliding-window layers and the global
    base on the others, a final RMSNorm. With ``use_bidirectional_attention`` (EmbeddingGemma)
    attention is bidirectional and the sliding layers see ``|q − k| ≤ sliding_window // 2``;
    otherwise causal. Padded keys get no attention weight.

    Args:
      config: a :class:`Gemma3Config`.
      rngs: parameter RNG streams.

    Call args:
      input_ids: ``[B, T]`` integer token ids.
      attention_mask: ``[B, T]``, 1 for real tokens; ``None``: all real.
      output_hidden_states: also return the scaled embeddings and each layer's output (the last
        after the final norm), ``num_layers + 1`` arrays ``[B, T, H]``.
      rngs: dropout streams (training mode with ``attention_dropout > 0`` only).

    Returns:
      :class:`~jaxemb.encoders.EncoderOutput`; ``last_hidden_state`` is ``[B, T, H]`` float32.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb.encoders import Gemma3Config, Gemma3Encoder
      >>> cfg = Gemma3Config(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
      ...                    num_kv_heads=1, head_dim=8, intermediate_size=32,
      ...                    sliding_window=4, sliding_pattern=2)
      >>> enc = Gemma3Encoder(cfg, rngs=nnx.Rngs(0))
      >>> ids = jnp.array([[2, 5, 7, 9, 1], [2, 8, 1, 0, 0]])
      >>> enc(ids, ids != 0).last_hidden_state.shape
      (2, 5, 16)

    References:
      Gemma Team 2025 (Gemma 3); Vera et al. 2025 (EmbeddingGemma); Hugging Face
      ``transformers`` ``Gemma3TextModel`` (reference for exact parity).
    """

    config_class = Gemma3Config


def _rope_sections(
    hf: dict[str, Any], where: str
) -> tuple[tuple[float, float], tuple[float, float]]:
    """``((θ, factor) global, (θ, factor) local)`` from either config layout: transformers 5's
    ``rope_parameters`` per layer type, or ``rope_theta`` / ``rope_local_base_freq`` /
    ``rope_scaling`` (which applies to the global layers)."""
    params = hf.get("rope_parameters")
    if params is None:
        params = {}
    if not isinstance(params, dict) or any(
        k not in (FULL_ATTENTION, SLIDING_ATTENTION) for k in params
    ):
        raise ValueError(
            f"{where}: rope_parameters must map {FULL_ATTENTION!r} and {SLIDING_ATTENTION!r} to "
            f"RoPE settings; got {params!r}"
        )
    full = dict(params.get(FULL_ATTENTION) or {})
    if hf.get("rope_scaling"):
        if not isinstance(hf["rope_scaling"], dict):
            raise ValueError(
                f"{where}: rope_scaling must be a JSON object; got {hf['rope_scaling']!r}"
            )
        full.update(hf["rope_scaling"])
    local = dict(params.get(SLIDING_ATTENTION) or {})
    return (
        rope_from_hf(
            full, hf.get("rope_theta", 1000000.0), where, f"rope_parameters.{FULL_ATTENTION}"
        ),
        rope_from_hf(
            local,
            hf.get("rope_local_base_freq", 10000.0),
            where,
            f"rope_parameters.{SLIDING_ATTENTION}",
        ),
    )


def gemma3_config_from_hf(hf: dict[str, Any], where: str = "config.json") -> Gemma3Config:
    """A ``gemma3_text`` ``config.json`` (transformers 4.5x or 5.x) as a :class:`Gemma3Config`."""
    require_keys(
        hf, ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"), where
    )
    if hf.get("attn_logit_softcapping") is not None:
        raise ValueError(
            f"{where}: attn_logit_softcapping {hf['attn_logit_softcapping']!r} is not supported "
            "(tanh soft-capping of attention scores is not implemented); only null is"
        )
    act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in HF_ACTIVATIONS:
        raise ValueError(
            f"{where}: hidden_activation {act!r} is not supported; supported: "
            f"{sorted(HF_ACTIVATIONS)}"
        )
    (theta, factor), (local_theta, local_factor) = _rope_sections(hf, where)
    layers = int(hf["num_hidden_layers"])
    pattern = int(hf.get("sliding_window_pattern", 6))
    types = hf.get("layer_types")
    window = hf.get("sliding_window", 4096)
    heads = int(hf["num_attention_heads"])
    pad = hf.get("pad_token_id", 0)
    return Gemma3Config(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=int(hf.get("head_dim") or 256),
        intermediate_size=int(hf.get("intermediate_size", 9216)),
        max_positions=int(hf.get("max_position_embeddings", 131072)),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        activation=HF_ACTIVATIONS[act],
        attention_bias=bool(hf.get("attention_bias", False)),
        attention_dropout=float(hf.get("attention_dropout") or 0.0),
        rope_base=theta,
        rope_scaling_factor=factor,
        rope_local_base=local_theta,
        rope_local_scaling_factor=local_factor,
        layer_types=None if types is None else tuple(types),
        sliding_pattern=pattern,
        sliding_window=None if window is None else int(window),
        query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
        use_bidirectional_attention=bool(hf.get("use_bidirectional_attention") or False),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
        pad_token_id=int(pad) if isinstance(pad, int) else 0,
        initializer_range=float(hf.get("initializer_range", 0.02)),
    )


def gemma3_config_to_hf(cfg: Gemma3Config) -> dict[str, Any]:
    """The ``config.json`` of ``Gemma3TextModel`` for ``cfg`` (transformers 5 layout)."""
    scalar = cfg.query_pre_attn_scalar
    return {
        "architectures": ["Gemma3TextModel"],
        "model_type": "gemma3_text",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_activation": HF_ACTIVATION_NAMES[cfg.activation],
        "max_position_embeddings": cfg.max_positions,
        "rms_norm_eps": cfg.rms_norm_eps,
        "attention_bias": cfg.attention_bias,
        "attention_dropout": cfg.attention_dropout,
        "query_pre_attn_scalar": int(scalar) if float(scalar).is_integer() else scalar,
        "rope_parameters": {
            FULL_ATTENTION: rope_to_hf(cfg.rope_base, cfg.rope_scaling_factor),
            SLIDING_ATTENTION: rope_to_hf(cfg.rope_local_base, cfg.rope_local_scaling_factor),
        },
        "sliding_window": cfg.sliding_window,
        "sliding_window_pattern": cfg.sliding_pattern,
        "layer_types": list(cfg.layer_types),
        "use_bidirectional_attention": cfg.use_bidirectional_attention,
        "attn_logit_softcapping": None,
        "final_logit_softcapping": None,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "pad_token_id": cfg.pad_token_id,
        "initializer_range": cfg.initializer_range,
        "use_cache": True,
        "dtype": "float32",
    }


def gemma3_tensor_plan(cfg: Gemma3Config) -> TensorPlan:
    """Every ``Gemma3TextModel`` tensor and where it goes."""
    return decoder_tensor_plan(cfg)


GEMMA3 = Family(
    name="Gemma3",
    model_types=("gemma3_text",),
    encoder_class=Gemma3Encoder,
    config_class=Gemma3Config,
    config_from_hf=gemma3_config_from_hf,
    config_to_hf=gemma3_config_to_hf,
    tensor_plan=gemma3_tensor_plan,
    checkpoint_prefixes=("model.",),
    examples=("google/embeddinggemma-300m",),
)
