"""The MPNet family (``model_type`` ``mpnet``): Hugging Face ``MPNetModel`` checkpoints.

MPNet is a post-LN BERT without token types, with RoBERTa-style learned positions (counted from
the input ids after the padding index, which MPNet fixes at 1) and a T5-style relative position
bias: relative distances are bucketed (exact below 8, logarithmic up to 128, by direction) and a
table ``[buckets, heads]`` (``encoder.relative_attention_bias``) adds one learned score per
bucket and head, computed once and shared by every layer. all-mpnet-base-v2 and
multi-qa-mpnet-base are MPNet.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np
from einops import rearrange
from flax import nnx

from jaxemb import _validate as v
from jaxemb.encoders._bert import (
    HF_ACTIVATION_NAMES,
    bert_embeddings_plan,
    bert_layer_plan,
    check_post_ln_learned,
    hf_activation,
    require_keys,
)
from jaxemb.encoders._family import Family, TensorPlan
from jaxemb.encoders._roberta import padded_position_ids
from jaxemb.encoders._transformer import TransformerConfig, TransformerEncoder, _meta

#: ``MPNetEmbeddings`` counts positions after this padding index, whatever ``pad_token_id`` is.
MPNET_PADDING_IDX = 1
#: ``MPNetEncoder.compute_position_bias`` buckets relative positions into this many buckets
#: (its default argument, whatever ``relative_attention_num_buckets`` says) ...
MPNET_NUM_BUCKETS = 32
#: ... with logarithmic buckets up to this distance.
MPNET_MAX_DISTANCE = 128


def relative_position_buckets(
    length: int, num_buckets: int = MPNET_NUM_BUCKETS, max_distance: int = MPNET_MAX_DISTANCE
) -> np.ndarray:
    """The bucket ``[T, T]`` of each (query, key) pair's relative position, as MPNet computes it.

    For ``n = query - key``: keys after the query (``n < 0``) use the upper half of the buckets;
    ``|n|`` below ``num_buckets // 4`` gets its own bucket, larger distances share buckets
    logarithmically up to ``max_distance`` (the last bucket beyond). The logarithm is taken in
    float32 as ``transformers`` does.

    Args:
      length: sequence length ``T``.
      num_buckets: the number of buckets (both directions).
      max_distance: distances from here on share the last bucket.

    Returns:
      ``[T, T]`` int32 bucket indices in ``[0, num_buckets)``.

    Examples:
      >>> from jaxemb.encoders._mpnet import relative_position_buckets
      >>> relative_position_buckets(4).tolist()
      [[0, 17, 18, 19], [1, 0, 17, 18], [2, 1, 0, 17], [3, 2, 1, 0]]

    References:
      Raffel et al. 2020 (T5 relative position buckets); Song et al. 2020 (MPNet); Hugging Face
      ``transformers`` ``MPNetEncoder.relative_position_bucket``.
    """
    pos = np.arange(length, dtype=np.int64)
    n = pos[:, None] - pos[None, :]  # -(key - query)
    half = num_buckets // 2
    out = np.where(n < 0, half, 0)
    n = np.abs(n)
    max_exact = half // 2
    # float32 as torch computes it; n < max_exact (log of 0 included) is not used
    scaled = (
        np.log(np.maximum(n, max_exact).astype(np.float32) / np.float32(max_exact))
        / np.float32(math.log(max_distance / max_exact))
        * np.float32(half - max_exact)
    )
    large = max_exact + scaled.astype(np.int64)
    large = np.minimum(large, half - 1)
    return (out + np.where(n < max_exact, n, large)).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class MPNetConfig(TransformerConfig):
    """Hyper-parameters of :class:`MPNetEncoder` (defaults are mpnet-base's).

    The fields are :class:`~jaxemb.encoders.TransformerConfig`'s (post-LN, learned positions,
    no token types) plus the relative position table. ``max_positions`` is the longest input:
    the checkpoint's ``max_position_embeddings - 2`` (positions start after the padding index 1).

    Args:
      vocab_size: token vocabulary size (30527 in mpnet-base).
      max_positions: longest input (the position table has ``max_positions + 2`` rows).
      pad_token_id: the padding id of the tokenizer (positions always treat id 1 as padding,
        as ``MPNetEmbeddings`` does).
      relative_attention_num_buckets: rows of the relative position table (at least 32: the
        positions are always bucketed into 32 buckets, as in ``transformers``).
      **kwargs: the other :class:`~jaxemb.encoders.TransformerConfig` fields.

    Examples:
      >>> from jaxemb.encoders import MPNetConfig
      >>> MPNetConfig().position_table_size
      514

    References:
      Song et al. 2020 (MPNet); Hugging Face ``transformers.MPNetConfig``.
    """

    vocab_size: int = 30527
    type_vocab_size: int = 0
    pad_token_id: int = 1
    relative_attention_num_buckets: int = 32

    def __post_init__(self):
        super().__post_init__()
        check_post_ln_learned(self, "MPNetConfig")
        if self.type_vocab_size != 0:
            raise ValueError(
                f"type_vocab_size must be 0 (MPNet has no token types); got {self.type_vocab_size}"
            )
        v.check_int(
            self.relative_attention_num_buckets,
            "relative_attention_num_buckets",
            minimum=MPNET_NUM_BUCKETS,
        )

    @property
    def padding_idx(self) -> int:
        """The id whose tokens get the padding position (1, fixed in MPNet)."""
        return MPNET_PADDING_IDX

    @property
    def position_table_size(self) -> int:
        return self.max_positions + MPNET_PADDING_IDX + 1


class MPNetEncoder(TransformerEncoder):
    """An MPNet encoder ``input_ids [B, T] -> EncoderOutput`` (``MPNetModel``).

    Word + position embeddings (positions from the ids as in
    :class:`~jaxemb.encoders.RobertaEncoder`, padding index 1), a layer norm, then post-LN
    layers whose attention scores get ``relative_attention_bias[bucket(q - k), head]``
    (:func:`relative_position_buckets` of the token indices), the same in every layer. Equals
    ``MPNetModel(...).last_hidden_state`` with left or right padding; loads with
    :func:`~jaxemb.encoders.load_hf_encoder`.

    Args:
      config: an :class:`MPNetConfig`.
      rngs: parameter RNG streams.

    Call args and returns: as :class:`~jaxemb.encoders.TransformerEncoder` (``input_ids``
    ``[B, T]``, ``attention_mask`` ``[B, T]``, no ``token_type_ids`` -> ``EncoderOutput`` with
    ``last_hidden_state`` ``[B, T, H]``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb.encoders import MPNetConfig, MPNetEncoder
      >>> cfg = MPNetConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
      ...                   intermediate_size=32, max_positions=8, dropout=0.0)
      >>> enc = MPNetEncoder(cfg, rngs=nnx.Rngs(0))
      >>> ids = jnp.array([[0, 7, 9, 2], [0, 5, 2, 1]])
      >>> enc(ids, ids != 1).last_hidden_state.shape
      (2, 4, 16)

    References:
      Song et al. 2020 (MPNet); Raffel et al. 2020 (relative position buckets); Hugging Face
      ``transformers`` ``MPNetModel``.
    """

    def __init__(self, config: MPNetConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, MPNetConfig):
            raise ValueError(f"config must be an MPNetConfig; got {type(config).__name__}")
        super().__init__(config, rngs=rngs)
        self.relative_attention_bias = nnx.Embed(
            config.relative_attention_num_buckets,
            config.num_heads,
            embedding_init=nnx.initializers.normal(config.initializer_range),
            embedding_metadata=_meta(None, None),
            rngs=rngs,
        )

    def _learned_positions(self, input_ids, batch, length):
        del batch
        table = self.position_embeddings.embedding[...]
        pad = self.config.padding_idx
        if input_ids is None:
            return table[pad + 1 : pad + 1 + length][None]
        return table[padded_position_ids(input_ids, pad)]

    def _attention_bias(self, length: int) -> jax.Array:
        buckets = relative_position_buckets(length)
        values = self.relative_attention_bias.embedding[...][buckets]  # [T, T, A]
        return rearrange(values, "q k a -> 1 a q k")


def mpnet_config_from_hf(hf: dict[str, Any], where: str = "config.json") -> MPNetConfig:
    """An MPNet ``config.json`` as an :class:`MPNetConfig` (``max_positions`` is the usable
    length ``max_position_embeddings - 2``)."""
    require_keys(
        hf, ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"), where
    )
    table = int(hf.get("max_position_embeddings", 512))
    if table - MPNET_PADDING_IDX - 1 < 1:
        raise ValueError(
            f"{where}: max_position_embeddings {table} leaves no position after the padding "
            f"index {MPNET_PADDING_IDX}"
        )
    buckets = hf.get("relative_attention_num_buckets", 32)
    if not isinstance(buckets, int) or buckets < MPNET_NUM_BUCKETS:
        raise ValueError(
            f"{where}: relative_attention_num_buckets {buckets!r} is not supported; MPNetModel "
            f"always buckets relative positions into {MPNET_NUM_BUCKETS}, so the table needs at "
            f"least {MPNET_NUM_BUCKETS} rows"
        )
    pad = hf.get("pad_token_id", 1)
    return MPNetConfig(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=int(hf["num_attention_heads"]),
        intermediate_size=int(hf.get("intermediate_size", 3072)),
        max_positions=table - MPNET_PADDING_IDX - 1,
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        activation=hf_activation(hf, where),
        dropout=float(hf.get("hidden_dropout_prob", 0.1)),
        attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
        initializer_range=float(hf.get("initializer_range", 0.02)),
        pad_token_id=MPNET_PADDING_IDX if pad is None else int(pad),
        relative_attention_num_buckets=buckets,
    )


def mpnet_config_to_hf(cfg: MPNetConfig) -> dict[str, Any]:
    """The ``config.json`` of ``MPNetModel`` for ``cfg``."""
    check_post_ln_learned(cfg, "MPNetConfig")
    return {
        "architectures": ["MPNetModel"],
        "model_type": "mpnet",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": HF_ACTIVATION_NAMES[cfg.activation],
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": (
            cfg.dropout if cfg.attention_dropout is None else cfg.attention_dropout
        ),
        "max_position_embeddings": cfg.position_table_size,
        "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps,
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "pad_token_id": cfg.pad_token_id,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }


MPNET_LAYER_NAMES = {
    "query": "attention.attn.q",
    "key": "attention.attn.k",
    "value": "attention.attn.v",
    "out": "attention.attn.o",
    "attention_norm": "attention.LayerNorm",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "output_norm": "output.LayerNorm",
}


def mpnet_tensor_plan(cfg: MPNetConfig) -> TensorPlan:
    """Every ``MPNetModel`` tensor (the pooler excepted) and where it goes."""
    plan = bert_embeddings_plan(cfg)
    plan.update(
        {
            "encoder.relative_attention_bias.weight": (
                (cfg.relative_attention_num_buckets, cfg.num_heads),
                ("relative_attention_bias", "embedding"),
                False,
            ),
        }
    )
    for n in range(cfg.num_layers):
        plan.update(bert_layer_plan(cfg, f"encoder.layer.{n}.", n, MPNET_LAYER_NAMES))
    return plan


MPNET = Family(
    name="MPNet",
    model_types=("mpnet",),
    encoder_class=MPNetEncoder,
    config_class=MPNetConfig,
    config_from_hf=mpnet_config_from_hf,
    config_to_hf=mpnet_config_to_hf,
    tensor_plan=mpnet_tensor_plan,
    checkpoint_prefixes=("mpnet.",),
    tokenizer_class="MPNetTokenizerFast",
    examples=(
        "sentence-transformers/all-mpnet-base-v2",
        "sentence-transformers/multi-qa-mpnet-base-dot-v1",
    ),
)
