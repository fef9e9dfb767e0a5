"""The RoBERTa and XLM-RoBERTa families (``model_type`` ``roberta``, ``xlm-roberta``).

``RobertaModel`` and ``XLMRobertaModel`` are BERT with one difference that matters for exact
parity: positions are computed from the input ids, counting only non-padding tokens and starting
after the padding index (fairseq's ``make_positions``), so padding tokens get position
``padding_idx`` and the table has ``padding_idx + 1`` rows more than the longest input.
all-distilroberta-v1 (RoBERTa), multilingual-e5, bge-m3 and paraphrase-multilingual-mpnet-base-v2
(XLM-RoBERTa) are such checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxemb import _validate as v
from jaxemb.encoders._bert import (
    bert_config_from_hf,
    bert_config_to_hf,
    bert_tensor_plan,
    check_post_ln_learned,
)
from jaxemb.encoders._family import Family
from jaxemb.encoders._transformer import TransformerConfig, TransformerEncoder


def padded_position_ids(input_ids: jax.Array, padding_idx: int) -> jax.Array:
    """Position ids ``[B, T]`` as ``transformers`` computes them for RoBERTa-style models.

    Each non-padding token gets ``padding_idx + (its rank among the row's non-padding tokens)``
    and each padding token (``input_ids == padding_idx``) gets ``padding_idx``, so the positions
    of the real tokens do not depend on padding on either side.

    Args:
      input_ids: ``[B, T]`` integer token ids.
      padding_idx: the padding token id.

    Returns:
      ``[B, T]`` int32 position ids.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.encoders._roberta import padded_position_ids
      >>> padded_position_ids(jnp.array([[0, 5, 2, 1, 1], [1, 1, 0, 7, 2]]), 1).tolist()
      [[2, 3, 4, 1, 1], [1, 1, 2, 3, 4]]

    References:
      Hugging Face ``transformers`` ``RobertaEmbeddings.create_position_ids_from_input_ids``
      (fairseq ``utils.make_positions``).
    """
    real = (jnp.asarray(input_ids) != padding_idx).astype(jnp.int32)
    return jnp.cumsum(real, axis=1) * real + padding_idx


@dataclasses.dataclass(frozen=True)
class RobertaConfig(TransformerConfig):
    """Hyper-parameters of :class:`RobertaEncoder` (defaults are roberta-base's).

    The fields are :class:`~jaxemb.encoders.TransformerConfig`'s; ``norm_position`` must be
    ``"post"`` and ``position`` ``"learned"``. ``max_positions`` is the longest input accepted:
    the checkpoint's ``max_position_embeddings - pad_token_id - 1`` (512 for a 514-row table),
    since positions start after the padding index.

    Args:
      vocab_size: token vocabulary size (50265 for roberta-base, 250002 for XLM-R).
      max_positions: longest input (the position table has ``max_positions + pad_token_id + 1``
        rows).
      type_vocab_size: token-type vocabulary (1 in published checkpoints; at least 1).
      layer_norm_eps: layer-norm epsilon (``1e-5`` in published checkpoints).
      pad_token_id: the padding id, which is also the padding index of the positions.
      **kwargs: the other :class:`~jaxemb.encoders.TransformerConfig` fields.

    Examples:
      >>> from jaxemb.encoders import RobertaConfig
      >>> cfg = RobertaConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4,
      ...                     intermediate_size=64, max_positions=16)
      >>> cfg.position_table_size
      18

    References:
      Liu et al. 2019 (RoBERTa); Hugging Face ``transformers.RobertaConfig``.
    """

    vocab_size: int = 50265
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1

    def __post_init__(self):
        super().__post_init__()
        check_post_ln_learned(self, type(self).__name__)
        v.check_int(self.type_vocab_size, "type_vocab_size", minimum=1)
        v.check_int(self.pad_token_id, "pad_token_id", minimum=0)

    @property
    def padding_idx(self) -> int:
        """The id whose tokens get the padding position (``pad_token_id``)."""
        return self.pad_token_id

    @property
    def position_table_size(self) -> int:
        return self.max_positions + self.padding_idx + 1


@dataclasses.dataclass(frozen=True)
class XLMRobertaConfig(RobertaConfig):
    """Hyper-parameters of an XLM-RoBERTa :class:`RobertaEncoder` (``model_type``
    ``xlm-roberta``; the same architecture as :class:`RobertaConfig`, defaults of
    xlm-roberta-base).

    Args:
      vocab_size: token vocabulary size (250002 for xlm-roberta-base).
      **kwargs: the other :class:`RobertaConfig` fields.

    Examples:
      >>> from jaxemb.encoders import XLMRobertaConfig
      >>> XLMRobertaConfig().position_table_size
      514

    References:
      Conneau et al. 2020 (XLM-R); Hugging Face ``transformers.XLMRobertaConfig``.
    """

    vocab_size: int = 250002


class RobertaEncoder(TransformerEncoder):
    """A RoBERTa / XLM-RoBERTa encoder ``input_ids [B, T] -> EncoderOutput``.

    :class:`~jaxemb.encoders.TransformerEncoder` (BERT) with the position ids computed from the
    input ids (:func:`padded_position_ids`): padding tokens (``input_ids == pad_token_id``) get
    position ``pad_token_id`` and the others count up from ``pad_token_id + 1``, so left and
    right padding give the real tokens the same states. With ``inputs_embeds`` the positions are
    ``pad_token_id + 1, pad_token_id + 2, ...``. Equals ``RobertaModel`` / ``XLMRobertaModel``
    ``last_hidden_state``; loads with :func:`~jaxemb.encoders.load_hf_encoder`.

    Args:
      config: a :class:`RobertaConfig` (or :class:`XLMRobertaConfig`).
      rngs: parameter RNG streams.

    Call args and returns: as :class:`~jaxemb.encoders.TransformerEncoder` (``input_ids``
    ``[B, T]``, ``attention_mask`` ``[B, T]``, ... -> ``EncoderOutput`` with
    ``last_hidden_state`` ``[B, T, H]``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb.encoders import RobertaConfig, RobertaEncoder
      >>> cfg = RobertaConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
      ...                     intermediate_size=32, max_positions=8, dropout=0.0)
      >>> enc = RobertaEncoder(cfg, rngs=nnx.Rngs(0))
      >>> ids = jnp.array([[0, 7, 9, 2], [1, 0, 5, 2]])  # pad id 1: the second row left-padded
      >>> enc(ids, ids != 1).last_hidden_state.shape
      (2, 4, 16)

    References:
      Liu et al. 2019 (RoBERTa); Conneau et al. 2020 (XLM-R); Hugging Face ``transformers``
      ``RobertaModel`` and ``XLMRobertaModel``.
    """

    def __init__(self, config: RobertaConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, RobertaConfig):
            raise ValueError(f"config must be a RobertaConfig; got {type(config).__name__}")
        super().__init__(config, rngs=rngs)

    def _learned_positions(self, input_ids, batch, length):
        del batch
        table = self.position_embeddings.embedding[...]
        pad = self.config.padding_idx
        if input_ids is None:
            return table[pad + 1 : pad + 1 + length][None]
        return table[padded_position_ids(input_ids, pad)]


def _hf_pad_token_id(hf: dict[str, Any], where: str, default: int) -> int:
    pad = hf.get("pad_token_id", default)
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(
            f"{where}: pad_token_id {pad!r} is not supported; positions are counted from the "
            "padding index, which must be a non-negative integer"
        )
    return pad


def _roberta_config_from_hf(cls: type, hf: dict[str, Any], where: str) -> RobertaConfig:
    for key in ("is_decoder", "add_cross_attention"):
        if hf.get(key, False):
            raise ValueError(
                f"{where}: {key} {hf[key]!r} is not supported; only the bidirectional encoder is"
            )
    base = bert_config_from_hf(hf, where)  # refuses other position_embedding_type / hidden_act
    pad = _hf_pad_token_id(hf, where, 1)
    table = int(hf.get("max_position_embeddings", 512))
    if table - pad - 1 < 1:
        raise ValueError(
            f"{where}: max_position_embeddings {table} leaves no position after the padding "
            f"index {pad} (positions start at pad_token_id + 1)"
        )
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    fields.update(max_positions=table - pad - 1, pad_token_id=pad)
    return cls(**fields)


def roberta_config_from_hf(hf: dict[str, Any], where: str = "config.json") -> RobertaConfig:
    """A RoBERTa ``config.json`` as a :class:`RobertaConfig` (``max_positions`` is the usable
    length ``max_position_embeddings - pad_token_id - 1``)."""
    return _roberta_config_from_hf(RobertaConfig, hf, where)


def xlm_roberta_config_from_hf(hf: dict[str, Any], where: str = "config.json") -> XLMRobertaConfig:
    """An XLM-RoBERTa ``config.json`` as an :class:`XLMRobertaConfig`."""
    return _roberta_config_from_hf(XLMRobertaConfig, hf, where)


def _roberta_config_to_hf(cfg: RobertaConfig, model_type: str, arch: str) -> dict[str, Any]:
    check_post_ln_learned(cfg, type(cfg).__name__)
    hf = bert_config_to_hf(cfg)  # BERT's keys; the table has position_table_size rows
    hf.update(architectures=[arch], model_type=model_type, bos_token_id=0, eos_token_id=2)
    return hf


def roberta_config_to_hf(cfg: RobertaConfig) -> dict[str, Any]:
    """The ``config.json`` of ``RobertaModel`` for ``cfg``."""
    return _roberta_config_to_hf(cfg, "roberta", "RobertaModel")


def xlm_roberta_config_to_hf(cfg: XLMRobertaConfig) -> dict[str, Any]:
    """The ``config.json`` of ``XLMRobertaModel`` for ``cfg``."""
    return _roberta_config_to_hf(cfg, "xlm-roberta", "XLMRobertaModel")


ROBERTA = Family(
    name="RoBERTa",
    model_types=("roberta",),
    encoder_class=RobertaEncoder,
    config_class=RobertaConfig,
    config_from_hf=roberta_config_from_hf,
    config_to_hf=roberta_config_to_hf,
    tensor_plan=bert_tensor_plan,
    checkpoint_prefixes=("roberta.",),
    tokenizer_class="RobertaTokenizerFast",
    examples=("sentence-transformers/all-distilroberta-v1", "FacebookAI/roberta-base"),
)

XLM_ROBERTA = Family(
    name="XLM-RoBERTa",
    model_types=("xlm-roberta",),
    encoder_class=RobertaEncoder,
    config_class=XLMRobertaConfig,
    config_from_hf=xlm_roberta_config_from_hf,
    config_to_hf=xlm_roberta_config_to_hf,
    tensor_plan=bert_tensor_plan,
    checkpoint_prefixes=("roberta.",),
    tokenizer_class="XLMRobertaTokenizerFast",
    examples=(
        "intfloat/multilingual-e5-base",
        "BAAI/bge-m3",
        "sentence-transformers/paraphrase-multilingual-mpnet-base-v2",
    ),
)
