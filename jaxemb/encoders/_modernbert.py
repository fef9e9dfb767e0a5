"""The ModernBERT family (``model_type`` ``modernbert``): Hugging Face ``ModernBertModel``.

ModernBERT is a pre-LN encoder without biases: token embeddings and a layer norm, then layers of
fused-QKV attention with rotary positions and a GeGLU MLP, and a final layer norm. Layers
alternate between global attention (every ``global_attn_every_n_layers``-th layer, the first
included) and sliding-window attention over ``local_attention // 2`` tokens on each side, each
kind with its own rotary base. gte-modernbert, granite-embedding-r2 and the ModernBERT
embedders of nomic are ModernBERT checkpoints.

Positions count real tokens only (``cumsum(attention_mask) - 1``), so a padded batch gives each
sequence the states it gets run alone, as ModernBERT's unpadded (flash-attention) execution
does; with padding on the right (or left: rotary attention depends on position differences
only) this is also ``transformers``' padded result.
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
from jaxemb.encoders._bert import HF_ACTIVATION_NAMES, hf_activation, require_keys
from jaxemb.encoders._family import Family, TensorPlan
from jaxemb.encoders._transformer import (
    ACTIVATIONS,
    COMPUTE_DTYPES,
    EncoderOutput,
    _layer_norm,
    _linear,
    _meta,
)

#: The attention kinds of ``layer_types`` (``transformers`` 5 names).
LAYER_TYPES = ("full_attention", "sliding_attention")


def default_layer_types(num_layers: int, every: int) -> tuple[str, ...]:
    """Global attention in layers ``0, every, 2·every, …``, sliding-window attention elsewhere."""
    return tuple(LAYER_TYPES[1] if i % every else LAYER_TYPES[0] for i in range(num_layers))


@dataclasses.dataclass(frozen=True)
class ModernBertConfig:
    """Hyper-parameters of :class:`ModernBertEncoder` (defaults are ModernBERT-base's).

    Args:
      vocab_size: token vocabulary size.
      hidden_size: model width ``H`` (divisible by ``num_heads``, with an even head dimension).
      num_layers: number of layers.
      num_heads: attention heads.
      intermediate_size: GeGLU width (the input projection is twice as wide).
      max_positions: the context the model was trained for (``max_position_embeddings``);
        :class:`~jaxemb.encoders.Embedder` truncates to it. Rotary positions have no table, so
        the encoder itself accepts longer inputs, as ``transformers`` does.
      activation: GeGLU activation ``"gelu"`` (erf), ``"gelu_tanh"``, ``"relu"`` or ``"silu"``.
      norm_eps: layer-norm epsilon.
      norm_bias: whether the layer norms have a bias.
      attention_bias: whether the QKV and output projections have biases.
      mlp_bias: whether the MLP projections have biases.
      global_rope_theta: rotary base of the global-attention layers.
      local_rope_theta: rotary base of the sliding-window layers.
      local_attention: the sliding window; a token sees ``local_attention // 2`` tokens on each
        side.
      global_attn_every_n_layers: layer ``i`` attends globally when ``i`` is a multiple of it.
      layer_types: an explicit ``"full_attention"`` / ``"sliding_attention"`` per layer (wins
        over ``global_attn_every_n_layers``); ``None`` follows the pattern.
      embedding_dropout: dropout rate after the embedding norm.
      attention_dropout: dropout rate on attention weights and on the attention output.
      mlp_dropout: dropout rate on the gated MLP activations.
      compute_dtype: ``"float32"`` or ``"bfloat16"`` (matmuls; norms and softmax stay float32).
      initializer_range: standard deviation of the normal initialiser.
      pad_token_id: id of the padding token.

    Examples:
      >>> from jaxemb.encoders import ModernBertConfig
      >>> cfg = ModernBertConfig(vocab_size=100, hidden_size=32, num_layers=4, num_heads=4,
      ...                        intermediate_size=48, local_attention=8)
      >>> cfg.attention_kinds
      ('full_attention', 'sliding_attention', 'sliding_attention', 'full_attention')

    References:
      Warner et al. 2024 (ModernBERT); Hugging Face ``transformers.ModernBertConfig``.
    """

    vocab_size: int = 50368
    hidden_size: int = 768
    num_layers: int = 22
    num_heads: int = 12
    intermediate_size: int = 1152
    max_positions: int = 8192
    activation: str = "gelu"
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    global_rope_theta: float = 160000.0
    local_rope_theta: float = 10000.0
    local_attention: int = 128
    global_attn_every_n_layers: int = 3
    layer_types: tuple[str, ...] | None = None
    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0
    mlp_dropout: float = 0.0
    compute_dtype: str = "float32"
    initializer_range: float = 0.02
    pad_token_id: int = 50283

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size"):
            v.check_int(getattr(self, name), name, minimum=1)
        v.check_int(self.max_positions, "max_positions", minimum=1)
        v.check_int(self.local_attention, "local_attention", minimum=0)
        v.check_int(self.global_attn_every_n_layers, "global_attn_every_n_layers", minimum=1)
        v.check_int(self.pad_token_id, "pad_token_id", minimum=0)
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError(
                "hidden_size must be num_heads times an even head dimension (rotary positions); "
                f"got hidden_size={self.hidden_size}, num_heads={self.num_heads}"
            )
        v.check_choice(self.activation, "activation", tuple(ACTIVATIONS))
        v.check_choice(self.compute_dtype, "compute_dtype", tuple(COMPUTE_DTYPES))
        for name in ("norm_bias", "attention_bias", "mlp_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False; got {getattr(self, name)!r}")
        for name in ("norm_eps", "global_rope_theta", "local_rope_theta", "initializer_range"):
            v.check_positive(getattr(self, name), name)
        for name in ("embedding_dropout", "attention_dropout", "mlp_dropout"):
            rate = getattr(self, name)
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1); got {rate!r}")
        if self.layer_types is not None:
            kinds = tuple(self.layer_types)
            if len(kinds) != self.num_layers or any(k not in LAYER_TYPES for k in kinds):
                raise ValueError(
                    f"layer_types must give one of {LAYER_TYPES} for each of the num_layers="
                    f"{self.num_layers} layers; got {self.layer_types!r}"
                )
            object.__setattr__(self, "layer_types", kinds)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def dtype(self):
        return COMPUTE_DTYPES[self.compute_dtype]

    @property
    def attention_kinds(self) -> tuple[str, ...]:
        """``"full_attention"`` or ``"sliding_attention"`` for each layer."""
        if self.layer_types is not None:
            return self.layer_types
        return default_layer_types(self.num_layers, self.global_attn_every_n_layers)


def _norm(cfg: ModernBertConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return _layer_norm(cfg, rngs, epsilon=cfg.norm_eps, use_bias=cfg.norm_bias)


def rotary_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """``cos, sin`` ``[B, T, head_dim]`` (float32) of integer ``positions [B, T]``, with the
    ``rotate_half`` layout of ``transformers`` (frequencies repeated over the two halves)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq[None, None, :]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def _rotate(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotary embedding of ``x [B, T, A, d]`` in float32, cast back to ``x``'s dtype."""
    xf = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    return (xf * cos[:, :, None, :] + rotated * sin[:, :, None, :]).astype(x.dtype)


class ModernBertAttention(nnx.Module):
    """Fused-QKV self-attention with rotary positions, global or over a sliding window."""

    def __init__(self, cfg: ModernBertConfig, *, rngs: nnx.Rngs):
        h = cfg.hidden_size
        self.cfg = cfg
        self.qkv = _linear(h, 3 * h, ("embed", "heads"), cfg, rngs, use_bias=cfg.attention_bias)
        self.out = _linear(h, h, ("heads", "embed"), cfg, rngs, use_bias=cfg.attention_bias)
        self.attn_dropout = nnx.Dropout(cfg.attention_dropout)
        self.out_dropout = nnx.Dropout(cfg.attention_dropout)

    def __call__(self, x, keep, rope, rngs):
        """``x [B, T, H]`` (compute dtype), ``keep [B, 1, 1 or T, T]`` bool (the keys each
        query attends to), ``rope`` ``(cos, sin)`` ``[B, T, d]`` -> ``[B, T, H]``."""
        cfg = self.cfg
        q, k, val = rearrange(
            self.qkv(x), "b t (three a d) -> three b t a d", three=3, a=cfg.num_heads
        )
        q, k = _rotate(q, *rope), _rotate(k, *rope)
        q, k, val = (rearrange(t, "b t a d -> b a t d") for t in (q, k, val))
        ctx = attend(
            q,
            k,
            val,
            keep,
            scale=cfg.head_dim**-0.5,
            dropout=self.attn_dropout,
            rngs=rngs,
        )
        return self.out_dropout(self.out(rearrange(ctx, "b a t d -> b t (a d)")), rngs=rngs)


class ModernBertMLP(nnx.Module):
    """GeGLU: ``wo(Drop(act(a) · g))`` with ``[a, g]`` the two halves of ``wi(x)``."""

    def __init__(self, cfg: ModernBertConfig, *, rngs: nnx.Rngs):
        h, i = cfg.hidden_size, cfg.intermediate_size
        self.wi = _linear(h, 2 * i, ("embed", "mlp"), cfg, rngs, use_bias=cfg.mlp_bias)
        self.wo = _linear(i, h, ("mlp", "embed"), cfg, rngs, use_bias=cfg.mlp_bias)
        self.dropout = nnx.Dropout(cfg.mlp_dropout)
        self.act = ACTIVATIONS[cfg.activation]

    def __call__(self, x, rngs):
        a, g = jnp.split(self.wi(x), 2, axis=-1)
        return self.wo(self.dropout(self.act(a) * g, rngs=rngs))


class ModernBertLayer(nnx.Module):
    """``x = x + Attn(LN(x))``, ``x = x + MLP(LN(x))``; layer 0 has no attention norm (the
    embeddings are normalised already)."""

    def __init__(self, cfg: ModernBertConfig, index: int, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.sliding = cfg.attention_kinds[index] == "sliding_attention"
        self.attention_norm = _norm(cfg, rngs) if index > 0 else None
        self.attention = ModernBertAttention(cfg, rngs=rngs)
        self.mlp_norm = _norm(cfg, rngs)
        self.mlp = ModernBertMLP(cfg, rngs=rngs)

    def __call__(self, x, keep, rope, rngs):
        dtype = self.cfg.dtype
        y = x if self.attention_norm is None else self.attention_norm(x)
        x = x + self.attention(y.astype(dtype), keep, rope, rngs).astype(jnp.float32)
        m = self.mlp(self.mlp_norm(x).astype(dtype), rngs)
        return x + m.astype(jnp.float32)


class ModernBertEncoder(nnx.Module):
    """ModernBERT ``input_ids [B, T] -> EncoderOutput(last_hidden_state [B, T, H])``.

    The computation of Hugging Face ``ModernBertModel``: token embeddings, a layer norm and
    dropout; pre-LN layers of fused-QKV rotary attention (global, or within
    ``local_attention // 2`` positions on each side, each kind with its own rotary base) and a
    GeGLU MLP; a final layer norm. Padded keys (``attention_mask == 0``) get zero weight and
    positions count real tokens only, so every sequence of a padded batch (padded on either side)
    gets the states it gets alone, as ModernBERT's unpadded execution computes them. Checkpoints
    load with :func:`~jaxemb.encoders.load_hf_encoder`.

    Dropout (``embedding_dropout``, ``attention_dropout``, ``mlp_dropout``) is active in NNX
    training mode (the default after construction) and needs ``rngs`` with a ``dropout`` stream
    at call time; ``model.eval()`` turns it off (:func:`~jaxemb.encoders.load_hf_encoder`
    returns the encoder in eval mode).

    Args:
      config: a :class:`ModernBertConfig`.
      rngs: parameter RNG streams.

    Call args:
      input_ids: ``[B, T]`` integer token ids.
      attention_mask: ``[B, T]`` with 1/True for real tokens; ``None`` means all real.
      output_hidden_states: also return the embedding output and each layer's output (the
        last one after the final norm, as ``transformers`` returns them).
      rngs: dropout RNG streams (training mode with a dropout rate > 0 only).

    Returns:
      :class:`~jaxemb.encoders.EncoderOutput`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb.encoders import ModernBertConfig, ModernBertEncoder
      >>> cfg = ModernBertConfig(vocab_size=50, hidden_size=16, num_layers=3, num_heads=2,
      ...                        intermediate_size=24, local_attention=4, pad_token_id=0)
      >>> enc = ModernBertEncoder(cfg, rngs=nnx.Rngs(0))
      >>> ids = jnp.array([[2, 7, 9, 3], [2, 5, 3, 0]])
      >>> out = enc(ids, ids != 0, output_hidden_states=True)
      >>> out.last_hidden_state.shape, len(out.hidden_states)
      ((2, 4, 16), 4)

    References:
      Warner et al. 2024, "Smarter, Better, Faster, Longer: A Modern Bidirectional Encoder"
      (ModernBERT); Hugging Face ``transformers`` ``ModernBertModel`` (reference for exact
      parity); Su et al. 2021 (RoPE); Shazeer 2020 (GLU variants).
    """

    def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, ModernBertConfig):
            raise ValueError(f"config must be a ModernBertConfig; got {type(config).__name__}")
        cfg = self.config = config
        self.tok_embeddings = nnx.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            embedding_init=nnx.initializers.normal(cfg.initializer_range),
            embedding_metadata=_meta("vocab", "embed"),
            rngs=rngs,
        )
        self.embeddings_norm = _norm(cfg, rngs)
        self.dropout = nnx.Dropout(cfg.embedding_dropout)
        self.layers = nnx.List([ModernBertLayer(cfg, n, rngs=rngs) for n in range(cfg.num_layers)])
        self.final_norm = _norm(cfg, rngs)

    def _check_inputs(self, input_ids, attention_mask) -> tuple[int, int]:
        cfg = self.config
        input_ids = v.check_array(input_ids, "input_ids", ndim=2, kind="int")
        shape = tuple(input_ids.shape)
        if shape[1] < 1:
            raise ValueError(f"inputs must have at least one position; got shape {list(shape)}")
        if isinstance(input_ids, np.ndarray) and input_ids.size:
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= cfg.vocab_size:
                raise ValueError(
                    f"input_ids must be in [0, vocab_size={cfg.vocab_size}); got values in "
                    f"[{lo}, {hi}]"
                )
        if attention_mask is not None:
            mask = v.check_array(attention_mask, "attention_mask", ndim=2, kind="number")
            if tuple(mask.shape) != shape:
                raise ValueError(
                    f"attention_mask must have the shape of input_ids {list(shape)}; got "
                    f"{v.shape_str(mask)}"
                )
        return shape

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
            mask = jnp.ones((batch, length), bool)
        else:
            mask = jnp.asarray(attention_mask).astype(bool)
        # Positions of the unpadded sequences: real tokens are numbered 0, 1, ... in order.
        positions = jnp.maximum(jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1, 0)
        keys = mask[:, None, None, :]
        distance = jnp.abs(positions[:, :, None] - positions[:, None, :])[:, None]
        window = keys & (distance <= cfg.local_attention // 2)
        ropes = {
            "full_attention": rotary_tables(positions, cfg.head_dim, cfg.global_rope_theta),
            "sliding_attention": rotary_tables(positions, cfg.head_dim, cfg.local_rope_theta),
        }
        x = self.tok_embeddings.embedding[...][jnp.asarray(input_ids)]
        x = self.dropout(self.embeddings_norm(x), rngs=rngs)
        hidden = [x]
        for layer in self.layers:
            kind = "sliding_attention" if layer.sliding else "full_attention"
            x = layer(x, window if layer.sliding else keys, ropes[kind], rngs)
            hidden.append(x)
        x = self.final_norm(x)
        hidden[-1] = x
        return EncoderOutput(
            last_hidden_state=x.astype(jnp.float32),
            hidden_states=tuple(hidden) if output_hidden_states else None,
        )


# ---------------------------------------------------------------------------------------------
# config.json and the checkpoint layout
# ---------------------------------------------------------------------------------------------


def _rope_thetas(hf: dict[str, Any], where: str) -> tuple[float, float]:
    """``(global θ, local θ)`` from ``rope_parameters`` (transformers 5) or the legacy
    ``global_rope_theta`` / ``local_rope_theta`` keys, refusing any scaled RoPE."""
    scaling = hf.get("rope_scaling")
    if scaling is not None and (
        not isinstance(scaling, dict) or scaling.get("rope_type", scaling.get("type")) != "default"
    ):
        raise ValueError(
            f"{where}: rope_scaling {scaling!r} is not supported; only unscaled ('default') "
            "rotary positions are"
        )
    thetas = {
        "full_attention": float(hf.get("global_rope_theta", 160000.0)),
        "sliding_attention": float(hf.get("local_rope_theta", 10000.0)),
    }
    params = hf.get("rope_parameters")
    if params is not None:
        if not isinstance(params, dict) or not set(params) <= set(LAYER_TYPES):
            raise ValueError(
                f"{where}: rope_parameters {params!r} is not supported; ModernBERT's gives the "
                f"rotary parameters of each of {LAYER_TYPES}"
            )
        for kind, p in params.items():
            if p is None:
                continue
            rope_type = p.get("rope_type", p.get("type", "default"))
            if rope_type != "default":
                raise ValueError(
                    f"{where}: rope_parameters[{kind!r}] rope_type {rope_type!r} is not "
                    "supported; only 'default' (unscaled) rotary positions are"
                )
            if "rope_theta" in p:
                thetas[kind] = float(p["rope_theta"])
    return thetas["full_attention"], thetas["sliding_attention"]


def modernbert_config_from_hf(hf: dict[str, Any], where: str = "config.json") -> ModernBertConfig:
    """A ModernBERT ``config.json`` (transformers 4.48+ or 5.x) as a :class:`ModernBertConfig`.

    Settings of task heads (``classifier_*``, ``decoder_bias``, ``sparse_*``) and of the
    attention kernel (``deterministic_flash_attn``, ``reference_compile``) are ignored; settings
    this encoder does not reproduce raise a ``ValueError`` naming the key and value.
    """
    require_keys(
        hf, ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"), where
    )
    hidden, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
    if hf.get("head_dim") not in (None, hidden // heads):
        raise ValueError(
            f"{where}: head_dim {hf['head_dim']!r} is not supported; ModernBERT's attention uses "
            f"hidden_size / num_attention_heads = {hidden // heads}"
        )
    if hf.get("is_causal") or hf.get("is_decoder"):
        raise ValueError(f"{where}: a causal ModernBERT (is_causal / is_decoder) is not supported")
    num_layers = int(hf["num_hidden_layers"])
    every = int(hf.get("global_attn_every_n_layers", 3))
    local = int(hf.get("local_attention", 128))
    if "sliding_window" in hf and hf["sliding_window"] != local // 2:
        raise ValueError(
            f"{where}: sliding_window {hf['sliding_window']!r} disagrees with local_attention "
            f"{local} (ModernBERT's sliding window is local_attention // 2)"
        )
    layer_types = hf.get("layer_types")
    if layer_types is not None:
        layer_types = tuple(layer_types)
        bad = [k for k in layer_types if k not in LAYER_TYPES]
        if bad or len(layer_types) != num_layers:
            raise ValueError(
                f"{where}: layer_types {list(layer_types)!r} is not supported; expected one of "
                f"{LAYER_TYPES} for each of the {num_layers} layers"
            )
        if layer_types == default_layer_types(num_layers, every):
            layer_types = None
    global_theta, local_theta = _rope_thetas(hf, where)
    pad = hf.get("pad_token_id")
    return ModernBertConfig(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=hidden,
        num_layers=num_layers,
        num_heads=heads,
        intermediate_size=int(hf.get("intermediate_size", 1152)),
        max_positions=int(hf.get("max_position_embeddings", 8192)),
        activation=hf_activation(hf, where, "hidden_activation"),
        norm_eps=float(hf.get("norm_eps", 1e-5)),
        norm_bias=bool(hf.get("norm_bias", False)),
        attention_bias=bool(hf.get("attention_bias", False)),
        mlp_bias=bool(hf.get("mlp_bias", False)),
        global_rope_theta=global_theta,
        local_rope_theta=local_theta,
        local_attention=local,
        global_attn_every_n_layers=every,
        layer_types=layer_types,
        embedding_dropout=float(hf.get("embedding_dropout", 0.0)),
        attention_dropout=float(hf.get("attention_dropout", 0.0)),
        mlp_dropout=float(hf.get("mlp_dropout", 0.0)),
        initializer_range=float(hf.get("initializer_range", 0.02)),
        pad_token_id=50283 if pad is None else int(pad),
    )


def modernbert_config_to_hf(cfg: ModernBertConfig) -> dict[str, Any]:
    """The ``config.json`` of ``ModernBertModel`` for ``cfg`` (read by transformers 4.48+ and
    5.x: both the ``rope_parameters`` / ``layer_types`` and the legacy keys)."""
    if cfg.activation not in HF_ACTIVATION_NAMES:
        raise ValueError(f"activation {cfg.activation!r} has no transformers name")
    return {
        "architectures": ["ModernBertModel"],
        "model_type": "modernbert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_activation": HF_ACTIVATION_NAMES[cfg.activation],
        "max_position_embeddings": cfg.max_positions,
        "norm_eps": cfg.norm_eps,
        "norm_bias": cfg.norm_bias,
        "attention_bias": cfg.attention_bias,
        "mlp_bias": cfg.mlp_bias,
        "local_attention": cfg.local_attention,
        "global_attn_every_n_layers": cfg.global_attn_every_n_layers,
        "layer_types": list(cfg.attention_kinds),
        "global_rope_theta": cfg.global_rope_theta,
        "local_rope_theta": cfg.local_rope_theta,
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": cfg.global_rope_theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": cfg.local_rope_theta},
        },
        "embedding_dropout": cfg.embedding_dropout,
        "attention_dropout": cfg.attention_dropout,
        "mlp_dropout": cfg.mlp_dropout,
        "initializer_range": cfg.initializer_range,
        "pad_token_id": cfg.pad_token_id,
        "torch_dtype": "float32",
    }


def modernbert_tensor_plan(cfg: ModernBertConfig) -> TensorPlan:
    """Every ``ModernBertModel`` tensor and where it goes (``nn.Linear`` ``[out, in]``
    transposed)."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    plan: TensorPlan = {
        "embeddings.tok_embeddings.weight": (
            (cfg.vocab_size, h),
            ("tok_embeddings", "embedding"),
            False,
        ),
    }

    def norm(name: str, path: tuple) -> None:
        plan[name + ".weight"] = ((h,), (*path, "scale"), False)
        if cfg.norm_bias:
            plan[name + ".bias"] = ((h,), (*path, "bias"), False)

    def linear(name: str, path: tuple, din: int, dout: int, bias: bool) -> None:
        plan[name + ".weight"] = ((dout, din), (*path, "kernel"), True)
        if bias:
            plan[name + ".bias"] = ((dout,), (*path, "bias"), False)

    norm("embeddings.norm", ("embeddings_norm",))
    for n in range(cfg.num_layers):
        p, ours = f"layers.{n}.", ("layers", n)
        if n > 0:
            norm(p + "attn_norm", (*ours, "attention_norm"))
        linear(p + "attn.Wqkv", (*ours, "attention", "qkv"), h, 3 * h, cfg.attention_bias)
        linear(p + "attn.Wo", (*ours, "attention", "out"), h, h, cfg.attention_bias)
        norm(p + "mlp_norm", (*ours, "mlp_norm"))
        linear(p + "mlp.Wi", (*ours, "mlp", "wi"), h, 2 * i, cfg.mlp_bias)
        linear(p + "mlp.Wo", (*ours, "mlp", "wo"), i, h, cfg.mlp_bias)
    norm("final_norm", ("final_norm",))
    return plan


MODERNBERT = Family(
    name="ModernBERT",
    model_types=("modernbert",),
    encoder_class=ModernBertEncoder,
    config_class=ModernBertConfig,
    config_from_hf=modernbert_config_from_hf,
    config_to_hf=modernbert_config_to_hf,
    tensor_plan=modernbert_tensor_plan,
    checkpoint_prefixes=("model.",),
    tokenizer_class="PreTrainedTokenizerFast",
    examples=(
        "Alibaba-NLP/gte-modernbert-base",
        "ibm-granite/granite-embedding-english-r2",
        "nomic-ai/modernbert-embed-base",
    ),
)
