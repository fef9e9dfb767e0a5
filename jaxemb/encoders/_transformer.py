"""A Transformer text encoder in Flax NNX that reproduces Hugging Face ``BertModel`` exactly.

One configurable stack covers BERT-style post-LN encoders (what published embedding checkpoints
use) and pre-LN encoders, with learned, sinusoidal, rotary (with linear interpolation and
NTK-aware scaling), ALiBi and KERPLE positions. Parameters are float32; ``compute_dtype`` selects
float32 or bfloat16 matmuls (softmax and layer norms always run in float32). Every parameter carries
logical axis names (``vocab``, ``positions``, ``embed``, ``heads``, ``mlp``) in its ``out_sharding``
metadata; :func:`param_shardings` maps them onto a mesh, so the same module trains replicated,
tensor-parallel or FSDP-sharded.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxemb import _validate as v
from jaxemb.encoders._attention import attend

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}
NORM_POSITIONS = ("post", "pre")
POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "kerple_log", "kerple_power")
ROPE_SCALINGS = (None, "linear", "ntk")
INITS = ("normal", "mimetic")
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

#: Default logical-axis → mesh-axis rules: Megatron-style tensor parallelism over ``model``
#: (heads and MLP columns split, everything else replicated). For FSDP use
#: ``(("embed", "data"),)``; axes not named in the rules are replicated.
TENSOR_PARALLEL_RULES: tuple[tuple[str, str | None], ...] = (("heads", "model"), ("mlp", "model"))


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of :class:`TransformerEncoder` (defaults are BERT-base's).

    Args:
      vocab_size: token vocabulary size.
      hidden_size: model width ``H`` (divisible by ``num_heads``).
      num_layers: number of encoder layers.
      num_heads: attention heads.
      intermediate_size: MLP width.
      max_positions: length of the learned position table; longer inputs raise ``ValueError``
        (other position schemes have no table and accept any length).
      type_vocab_size: token-type (segment) vocabulary; 0 disables token-type embeddings.
      layer_norm_eps: layer-norm epsilon (``1e-12`` in BERT).
      activation: ``"gelu"`` (erf, BERT's ``hidden_act="gelu"``), ``"gelu_tanh"``, ``"relu"``,
        ``"silu"``.
      norm_position: ``"post"`` (BERT: ``LN(x + f(x))`` and a layer norm on the embeddings) or
        ``"pre"`` (``x + f(LN(x))`` and a final layer norm).
      position: ``"learned"``, ``"sinusoidal"``, ``"rope"``, ``"alibi"``, ``"kerple_log"``,
        ``"kerple_power"``.
      dropout: dropout rate on embeddings and residual branches.
      attention_dropout: dropout rate on attention probabilities (defaults to ``dropout``).
      rope_base: rotary base ``θ``.
      rope_scaling: ``None``, ``"linear"`` (position interpolation: positions divided by
        ``rope_scaling_factor``) or ``"ntk"`` (NTK-aware: base multiplied by
        ``factor ** (d / (d - 2))``), as compared in LongEmbed.
      rope_scaling_factor: context-extension factor ``≥ 1``.
      compute_dtype: ``"float32"`` or ``"bfloat16"``.
      init: ``"normal"`` (BERT: N(0, ``initializer_range``²) weights, zero biases) or
        ``"mimetic"`` (attention weights initialised so ``W_q W_kᵀ ≈ α₁Z + β₁I`` and
        ``W_v W_o ≈ α₂Z − β₂I`` per head).
      initializer_range: standard deviation of the normal initialiser.
      mimetic_alpha: ``(α₁, α₂)``.
      mimetic_beta: ``(β₁, β₂)``.
      pad_token_id: id of the padding token (used to build a default attention mask).

    Examples:
      >>> from jaxemb.encoders import TransformerConfig
      >>> TransformerConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4,
      ...                   intermediate_size=64).head_dim
      8

    References:
      Devlin et al. 2019 (BERT) and Hugging Face ``transformers.BertConfig`` defaults.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    activation: str = "gelu"
    norm_position: str = "post"
    position: str = "learned"
    dropout: float = 0.1
    attention_dropout: float | None = None
    rope_base: float = 10000.0
    rope_scaling: str | None = None
    rope_scaling_factor: float = 1.0
    compute_dtype: str = "float32"
    init: str = "normal"
    initializer_range: float = 0.02
    mimetic_alpha: tuple[float, float] = (0.7, 0.4)
    mimetic_beta: tuple[float, float] = (0.7, 0.4)
    pad_token_id: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size"):
            v.check_int(getattr(self, name), name, minimum=1)
        v.check_int(self.max_positions, "max_positions", minimum=1)
        v.check_int(self.type_vocab_size, "type_vocab_size", minimum=0)
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size must be divisible by num_heads; got hidden_size={self.hidden_size}, "
                f"num_heads={self.num_heads}"
            )
        v.check_choice(self.activation, "activation", tuple(ACTIVATIONS))
        v.check_choice(self.norm_position, "norm_position", NORM_POSITIONS)
        v.check_choice(self.position, "position", POSITIONS)
        v.check_choice(self.rope_scaling, "rope_scaling", ROPE_SCALINGS)
        v.check_choice(self.compute_dtype, "compute_dtype", tuple(COMPUTE_DTYPES))
        v.check_choice(self.init, "init", INITS)
        v.check_positive(self.layer_norm_eps, "layer_norm_eps")
        v.check_positive(self.rope_base, "rope_base")
        v.check_positive(self.initializer_range, "initializer_range")
        for name in ("dropout", "attention_dropout"):
            rate = getattr(self, name)
            if rate is not None and not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1); got {rate!r}")
        if not self.rope_scaling_factor >= 1.0:
            raise ValueError(f"rope_scaling_factor must be >= 1; got {self.rope_scaling_factor!r}")
        if self.position == "rope" and self.head_dim % 2:
            raise ValueError(
                f"position='rope' needs an even head dimension; got hidden_size/num_heads = "
                f"{self.head_dim}"
            )
        for name in ("mimetic_alpha", "mimetic_beta"):
            pair = getattr(self, name)
            if len(pair) != 2:
                raise ValueError(f"{name} must be a pair (for q·k and v·o); got {pair!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def dtype(self):
        return COMPUTE_DTYPES[self.compute_dtype]

    @property
    def position_table_size(self) -> int:
        """Rows of the learned position table (``max_positions`` here; RoBERTa-style configs,
        whose positions start after the padding index, have more)."""
        return self.max_positions

    @property
    def attention_output_dropout(self) -> bool:
        """Whether dropout applies to the attention branch before its residual (BERT: yes;
        DistilBERT drops only the attention probabilities)."""
        return True


class EncoderOutput(NamedTuple):
    """What :class:`TransformerEncoder` returns.

    Attributes:
      last_hidden_state: ``[B, T, H]`` float32 output of the last layer (after the final layer
        norm for pre-LN).
      hidden_states: ``None`` or a tuple of ``num_layers + 1`` arrays ``[B, T, H]``: the
        embedding output then each layer's output (Hugging Face ``output_hidden_states``).
    """

    last_hidden_state: jax.Array
    hidden_states: tuple[jax.Array, ...] | None


# ---------------------------------------------------------------------------------------------
# Position schemes
# ---------------------------------------------------------------------------------------------


def sinusoidal_table(length: int, dim: int) -> np.ndarray:
    """The fixed ``[length, dim]`` sin/cos table of Vaswani et al. (sin on even, cos on odd)."""
    pos = np.arange(length, dtype=np.float64)[:, None]
    inv = np.exp(-math.log(10000.0) * np.arange(0, dim, 2, dtype=np.float64) / dim)[None, :]
    table = np.zeros((length, dim), np.float64)
    table[:, 0::2] = np.sin(pos * inv)
    table[:, 1::2] = np.cos(pos * inv)[:, : dim // 2]
    return table.astype(np.float32)


def rope_frequencies(config: TransformerConfig, length: int) -> tuple[jax.Array, jax.Array]:
    """``cos, sin`` tables ``[T, head_dim]`` for rotary embeddings with the configured scaling."""
    d = config.head_dim
    base = config.rope_base
    positions = jnp.arange(length, dtype=jnp.float32)
    if config.rope_scaling == "ntk":
        base = base * config.rope_scaling_factor ** (d / (d - 2))
    elif config.rope_scaling == "linear":
        positions = positions / config.rope_scaling_factor
    inv_freq = 1.0 / (base ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    angles = positions[:, None] * inv_freq[None, :]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate ``x [B, T, A, d]`` by position (GPT-NeoX / Hugging Face ``rotate_half`` layout)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[None, :, None, :] + rotated * sin[None, :, None, :]


def alibi_slopes(num_heads: int) -> np.ndarray:
    """ALiBi head slopes: ``2^(-8i/n)`` for a power of two ``n``, interleaved otherwise."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_two(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: num_heads - closest]
    return np.asarray(slopes, np.float32)


def _relative_distance(length: int) -> jax.Array:
    pos = jnp.arange(length, dtype=jnp.float32)
    return jnp.abs(pos[:, None] - pos[None, :])


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


def _meta(*names: str | None) -> dict:
    return {"out_sharding": names, "eager_sharding": False}


def _linear(
    din: int,
    dout: int,
    axes: tuple[str | None, str | None],
    cfg,
    rngs,
    *,
    use_bias: bool = True,
) -> nnx.Linear:
    return nnx.Linear(
        din,
        dout,
        use_bias=use_bias,
        dtype=cfg.dtype,
        kernel_init=nnx.initializers.normal(cfg.initializer_range),
        kernel_metadata=_meta(*axes),
        bias_metadata=_meta(axes[1]),
        rngs=rngs,
    )


def _layer_norm(
    cfg, rngs: nnx.Rngs, *, epsilon: float | None = None, use_bias: bool = True
) -> nnx.LayerNorm:
    """A float32 layer norm over ``hidden_size`` (epsilon: the config's ``layer_norm_eps``)."""
    return nnx.LayerNorm(
        cfg.hidden_size,
        epsilon=cfg.layer_norm_eps if epsilon is None else epsilon,
        use_bias=use_bias,
        dtype=jnp.float32,
        use_fast_variance=False,
        scale_metadata=_meta("embed"),
        bias_metadata=_meta("embed"),
        rngs=rngs,
    )


def _mimetic_factors(
    key: jax.Array, heads: int, d: int, dh: int, alpha: float, beta: float, sign: float
) -> tuple[jax.Array, jax.Array]:
    """Per-head ``A [heads, d, dh]``, ``B [heads, dh, d]``: ``A_h B_h`` is the best rank-dh fit
    (truncated SVD) of ``αZ_h + sign·βI`` with ``Z_h ~ N(0, 1/d)``."""
    z = jax.random.normal(key, (heads, d, d), jnp.float32) / math.sqrt(d)
    target = alpha * z + sign * beta * jnp.eye(d, dtype=jnp.float32)[None]
    u, s, vt = jnp.linalg.svd(target)
    root = jnp.sqrt(s[:, :dh])
    return u[:, :, :dh] * root[:, None, :], root[:, :, None] * vt[:, :dh, :]


class SelfAttention(nnx.Module):
    """Multi-head self-attention with additive position biases and a key-padding mask."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        h = cfg.hidden_size
        self.cfg = cfg
        self.query = _linear(h, h, ("embed", "heads"), cfg, rngs)
        self.key = _linear(h, h, ("embed", "heads"), cfg, rngs)
        self.value = _linear(h, h, ("embed", "heads"), cfg, rngs)
        self.out = _linear(h, h, ("heads", "embed"), cfg, rngs)
        rate = cfg.dropout if cfg.attention_dropout is None else cfg.attention_dropout
        self.attn_dropout = nnx.Dropout(rate)
        if cfg.position in ("kerple_log", "kerple_power"):
            # Per-head r1, r2 > 0 (clamped at 1e-2 in the forward), initialised as in KERPLE.
            key = rngs.params()
            k1, k2 = jax.random.split(key)
            self.kerple_r1 = nnx.Param(
                jax.random.uniform(k1, (cfg.num_heads,), minval=0.0, maxval=2.0),
                **_meta(None),
            )
            self.kerple_r2 = nnx.Param(
                jax.random.uniform(k2, (cfg.num_heads,), minval=0.0, maxval=1.0),
                **_meta(None),
            )
        if cfg.init == "mimetic":
            self._mimetic_init(rngs)

    def _mimetic_init(self, rngs: nnx.Rngs):
        cfg = self.cfg
        d, dh, heads = cfg.hidden_size, cfg.head_dim, cfg.num_heads
        (a1, a2), (b1, b2) = cfg.mimetic_alpha, cfg.mimetic_beta
        qa, kb = _mimetic_factors(rngs.params(), heads, d, dh, a1, b1, 1.0)
        va, ob = _mimetic_factors(rngs.params(), heads, d, dh, a2, b2, -1.0)
        self.query.kernel[...] = rearrange(qa, "a d k -> d (a k)")
        self.key.kernel[...] = rearrange(kb, "a k d -> d (a k)")
        self.value.kernel[...] = rearrange(va, "a d k -> d (a k)")
        self.out.kernel[...] = rearrange(ob, "a k d -> (a k) d")

    def position_bias(self, length: int) -> jax.Array | None:
        """Additive ``[A, T, T]`` bias for ALiBi / KERPLE, ``None`` for other schemes."""
        cfg = self.cfg
        if cfg.position == "alibi":
            slopes = jnp.asarray(alibi_slopes(cfg.num_heads))
            return -slopes[:, None, None] * _relative_distance(length)[None]
        if cfg.position in ("kerple_log", "kerple_power"):
            r1 = jnp.maximum(self.kerple_r1[...], 1e-2)[:, None, None]
            r2 = jnp.maximum(self.kerple_r2[...], 1e-2)[:, None, None]
            dist = _relative_distance(length)[None]
            if cfg.position == "kerple_log":
                return -r1 * jnp.log1p(r2 * dist)
            return -r1 * dist**r2
        return None

    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array,
        rope: tuple[jax.Array, jax.Array] | None,
        rngs: nnx.Rngs | None,
        attention_bias: jax.Array | None = None,
    ) -> jax.Array:
        """Attention of ``x [B, T, H]`` over the keys ``mask [B, T]`` keeps; ``attention_bias``
        (``[B or 1, A, T, T]`` float32, e.g. MPNet's relative position buckets) is added to the
        scores with the position scheme's bias."""
        cfg = self.cfg
        split = lambda t: rearrange(t, "b t (a d) -> b t a d", a=cfg.num_heads)  # noqa: E731
        q, k, val = split(self.query(x)), split(self.key(x)), split(self.value(x))
        if rope is not None:
            q, k = apply_rope(q, *rope).astype(q.dtype), apply_rope(k, *rope).astype(k.dtype)
        # Heads-major operands [b, a, t, d]: XLA:CPU runs the batched products ~2.5x faster in
        # this layout than with the head axis between the sequence and feature axes.
        q, k, val = (rearrange(t, "b t a d -> b a t d") for t in (q, k, val))
        bias = self.position_bias(x.shape[1])
        bias = None if bias is None else bias[None]
        if attention_bias is not None:
            bias = attention_bias if bias is None else bias + attention_bias
        ctx = attend(
            q,
            k,
            val,
            mask[:, None, None, :],
            scale=cfg.head_dim**-0.5,
            bias=bias,
            dropout=self.attn_dropout,
            rngs=rngs,
        )
        return self.out(rearrange(ctx, "b a t d -> b t (a d)"))


class TransformerLayer(nnx.Module):
    """One encoder layer: self-attention and MLP, each with a residual and a layer norm.

    ``norm_position="post"`` computes ``x = LN(x + Drop(Attn(x)))``, ``x = LN(x + Drop(MLP(x)))``
    (BERT); ``"pre"`` computes ``x = x + Drop(Attn(LN(x)))``, ``x = x + Drop(MLP(LN(x)))``.
    """

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.attention = SelfAttention(cfg, rngs=rngs)
        self.attention_norm = _layer_norm(cfg, rngs)
        h, i = cfg.hidden_size, cfg.intermediate_size
        self.intermediate = _linear(h, i, ("embed", "mlp"), cfg, rngs)
        self.output = _linear(i, h, ("mlp", "embed"), cfg, rngs)
        self.output_norm = _layer_norm(cfg, rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.act = ACTIVATIONS[cfg.activation]

    def _mlp(self, x: jax.Array) -> jax.Array:
        return self.output(self.act(self.intermediate(x)))

    def __call__(self, x, mask, rope, rngs, attention_bias=None):
        dtype = self.cfg.dtype
        if self.cfg.norm_position == "post":
            a = self.attention(x.astype(dtype), mask, rope, rngs, attention_bias)
            if self.cfg.attention_output_dropout:
                a = self.dropout(a, rngs=rngs)
            x = self.attention_norm(x + a.astype(jnp.float32))
            m = self._mlp(x.astype(dtype))
            return self.output_norm(x + self.dropout(m, rngs=rngs).astype(jnp.float32))
        a = self.attention(self.attention_norm(x).astype(dtype), mask, rope, rngs, attention_bias)
        if self.cfg.attention_output_dropout:
            a = self.dropout(a, rngs=rngs)
        x = x + a.astype(jnp.float32)
        m = self._mlp(self.output_norm(x).astype(dtype))
        return x + self.dropout(m, rngs=rngs).astype(jnp.float32)


class TransformerEncoder(nnx.Module):
    """A Transformer encoder ``input_ids [B, T] -> EncoderOutput(last_hidden_state [B, T, H])``.

    With ``norm_position="post"``, ``position="learned"`` and ``activation="gelu"`` (the
    defaults) the computation is exactly Hugging Face ``BertModel``'s: word + position +
    token-type embeddings, a layer norm, then post-LN layers in which padded keys
    (``attention_mask == 0``) get zero attention weight, so padding never changes the states
    of real tokens. Weights of BERT-family checkpoints load with
    :func:`~jaxemb.encoders.load_hf_encoder`.

    Dropout is active in NNX training mode (``model.train()``, the default) and needs ``rngs``
    with a ``dropout`` stream at call time; ``model.eval()`` turns it off.

    Args:
      config: a :class:`TransformerConfig`.
      rngs: parameter RNG streams.

    Call args:
      input_ids: ``[B, T]`` integer token ids (or ``None`` when ``inputs_embeds`` is given).
      attention_mask: ``[B, T]`` with 1/True for real tokens; ``None`` means all real.
      token_type_ids: ``[B, T]`` segment ids (default zeros).
      inputs_embeds: ``[B, T, H]`` float embeddings used instead of the token table (e.g. image
        patches in :class:`~jaxemb.encoders.ViTEncoder`); position/type embeddings still apply.
      output_hidden_states: also return every layer's output.
      rngs: dropout RNG streams (training mode with ``dropout > 0`` only).

    Returns:
      :class:`EncoderOutput`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb.encoders import TransformerConfig, TransformerEncoder
      >>> cfg = TransformerConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
      ...                         intermediate_size=32, max_positions=8, dropout=0.0)
      >>> enc = TransformerEncoder(cfg, rngs=nnx.Rngs(0))
      >>> ids = jnp.array([[2, 7, 9, 3], [2, 5, 3, 0]])
      >>> out = enc(ids, ids != 0, output_hidden_states=True)
      >>> out.last_hidden_state.shape, len(out.hidden_states)
      ((2, 4, 16), 3)

    References:
      Devlin et al. 2019 (BERT); Hugging Face ``transformers`` ``BertModel`` (reference for
      exact parity); Su et al. 2021 (RoPE), Chen et al. 2023 (position interpolation),
      bloc97 2023 (NTK-aware scaling), Zhu et al. 2024 (LongEmbed); Press et al. 2022 (ALiBi);
      Chi et al. 2022 (KERPLE); Trockman & Kolter 2023 (mimetic initialisation).
    """

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, TransformerConfig):
            raise ValueError(f"config must be a TransformerConfig; got {type(config).__name__}")
        cfg = self.config = config
        init = nnx.initializers.normal(cfg.initializer_range)
        self.word_embeddings = nnx.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            embedding_init=init,
            embedding_metadata=_meta("vocab", "embed"),
            rngs=rngs,
        )
        self.position_embeddings = (
            nnx.Embed(
                cfg.position_table_size,
                cfg.hidden_size,
                embedding_init=init,
                embedding_metadata=_meta("positions", "embed"),
                rngs=rngs,
            )
            if cfg.position == "learned"
            else None
        )
        self.token_type_embeddings = (
            nnx.Embed(
                cfg.type_vocab_size,
                cfg.hidden_size,
                embedding_init=init,
                embedding_metadata=_meta(None, "embed"),
                rngs=rngs,
            )
            if cfg.type_vocab_size > 0
            else None
        )
        # Post-LN (BERT) normalises the embeddings; pre-LN normalises the final output instead.
        self.embeddings_norm = _layer_norm(cfg, rngs) if cfg.norm_position == "post" else None
        self.final_norm = _layer_norm(cfg, rngs) if cfg.norm_position == "pre" else None
        self.dropout = nnx.Dropout(cfg.dropout)
        self.layers = nnx.List([TransformerLayer(cfg, rngs=rngs) for _ in range(cfg.num_layers)])

    def _check_inputs(self, input_ids, attention_mask, token_type_ids, inputs_embeds):
        cfg = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if input_ids is not None:
            input_ids = v.check_array(input_ids, "input_ids", ndim=2, kind="int")
            shape = tuple(input_ids.shape)
            if isinstance(input_ids, np.ndarray) and input_ids.size:
                lo, hi = int(input_ids.min()), int(input_ids.max())
                if lo < 0 or hi >= cfg.vocab_size:
                    raise ValueError(
                        f"input_ids must be in [0, vocab_size={cfg.vocab_size}); got values in "
                        f"[{lo}, {hi}]"
                    )
        else:
            inputs_embeds = v.check_array(inputs_embeds, "inputs_embeds", ndim=3, kind="number")
            shape = tuple(inputs_embeds.shape[:2])
            if inputs_embeds.shape[2] != cfg.hidden_size:
                raise ValueError(
                    f"inputs_embeds must be [B, T, hidden_size={cfg.hidden_size}]; got "
                    f"{v.shape_str(inputs_embeds)}"
                )
        if shape[1] < 1:
            raise ValueError(f"inputs must have at least one position; got shape {list(shape)}")
        if cfg.position == "learned" and shape[1] > cfg.max_positions:
            raise ValueError(
                f"sequence length {shape[1]} is longer than the position table "
                f"(max_positions={cfg.max_positions}); truncate the inputs (Embedder.encode "
                "does) or use a relative position scheme"
            )
        for name, arr in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if arr is not None:
                arr = v.check_array(arr, name, ndim=2, kind="number")
                if tuple(arr.shape) != shape:
                    raise ValueError(
                        f"{name} must have the shape of the inputs {list(shape)}; got "
                        f"{v.shape_str(arr)}"
                    )
        if token_type_ids is not None and cfg.type_vocab_size == 0:
            raise ValueError("token_type_ids given but the config has type_vocab_size=0")
        return shape

    def _learned_positions(self, input_ids: jax.Array | None, batch: int, length: int) -> jax.Array:
        """The learned position embeddings ``[1 or B, T, H]`` added to the token embeddings:
        positions ``0 .. T-1`` (subclasses compute them from the ids, e.g. RoBERTa)."""
        del input_ids, batch
        return self.position_embeddings.embedding[...][:length][None]

    def _attention_bias(self, length: int) -> jax.Array | None:
        """An additive attention bias ``[B or 1, A, T, T]`` shared by every layer (``None``
        here; MPNet's relative position buckets)."""
        del length
        return None

    def __call__(
        self,
        input_ids: jax.Array | None,
        attention_mask: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
        *,
        inputs_embeds: jax.Array | None = None,
        output_hidden_states: bool = False,
        rngs: nnx.Rngs | None = None,
    ) -> EncoderOutput:
        cfg = self.config
        batch, length = self._check_inputs(input_ids, attention_mask, token_type_ids, inputs_embeds)
        if attention_mask is None:
            mask = jnp.ones((batch, length), bool)
        else:
            mask = jnp.asarray(attention_mask).astype(bool)
        if inputs_embeds is None:
            x = self.word_embeddings.embedding[...][jnp.asarray(input_ids)]
        else:
            x = jnp.asarray(inputs_embeds, jnp.float32)
        if self.token_type_embeddings is not None:
            types = (
                jnp.zeros((batch, length), jnp.int32)
                if token_type_ids is None
                else jnp.asarray(token_type_ids)
            )
            x = x + self.token_type_embeddings.embedding[...][types]
        if self.position_embeddings is not None:
            x = x + self._learned_positions(input_ids, batch, length)
        elif cfg.position == "sinusoidal":
            x = x + jnp.asarray(sinusoidal_table(length, cfg.hidden_size))[None]
        if self.embeddings_norm is not None:
            x = self.embeddings_norm(x)
        x = self.dropout(x, rngs=rngs)
        rope = rope_frequencies(cfg, length) if cfg.position == "rope" else None
        bias = self._attention_bias(length)
        hidden = [x]
        for layer in self.layers:
            x = layer(x, mask, rope, rngs, bias)
            hidden.append(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return EncoderOutput(
            last_hidden_state=x.astype(jnp.float32),
            hidden_states=tuple(hidden) if output_hidden_states else None,
        )


def param_shardings(
    module: nnx.Module,
    mesh: Mesh,
    rules: Sequence[tuple[str, str | None]] = TENSOR_PARALLEL_RULES,
):
    """``NamedSharding`` for every parameter of ``module`` from its logical axis names.

    Args:
      module: an NNX module whose parameters carry ``out_sharding`` logical names (every
        encoder in :mod:`jaxemb.encoders` does).
      mesh: the device mesh, with ``AxisType.Auto`` axes so XLA propagates the parameter
        shardings through the computation (with explicit axes, sharded contractions need
        ``out_sharding`` annotations this encoder does not write).
      rules: ``(logical_axis, mesh_axis_or_None)`` pairs; unnamed logical axes replicate.

    Returns:
      An ``nnx.State`` of ``NamedSharding`` with the structure of ``nnx.state(module)``; put the
      parameters on the mesh with ``nnx.update(module, jax.device_put(nnx.state(module), s))``.

    Examples:
      >>> import jax
      >>> from flax import nnx
      >>> from jaxemb.encoders import TransformerConfig, TransformerEncoder, param_shardings
      >>> cfg = TransformerConfig(vocab_size=20, hidden_size=8, num_layers=1, num_heads=2,
      ...                         intermediate_size=16, max_positions=4)
      >>> enc = TransformerEncoder(cfg, rngs=nnx.Rngs(0))
      >>> auto = (jax.sharding.AxisType.Auto,) * 2
      >>> mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=auto)
      >>> s = param_shardings(enc, mesh)
      >>> s["layers"][0]["intermediate"]["kernel"].spec
      P(None, 'model')

    References:
      Flax NNX "Scale up with sharding" guide (logical axis annotations).
    """
    if not isinstance(mesh, Mesh):
        raise ValueError(f"mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}")
    table = dict(rules)
    for logical, axis in table.items():
        if axis is not None and axis not in mesh.axis_names:
            raise ValueError(
                f"rules map {logical!r} to mesh axis {axis!r}, which the mesh "
                f"{tuple(mesh.axis_names)} does not have"
            )
    state = nnx.state(module)

    def one(var):
        names = var.get_metadata().get("out_sharding") or (None,) * jnp.ndim(var[...])
        spec = PartitionSpec(*(table.get(n) if n is not None else None for n in names))
        return NamedSharding(mesh, spec)

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
