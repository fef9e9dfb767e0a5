"""The DistilBERT family (``model_type`` ``distilbert``): Hugging Face ``DistilBertModel``.

DistilBERT is a post-LN BERT without token types, with its own ``config.json`` keys (``dim``,
``n_layers``, ``n_heads``, ``hidden_dim``, ``activation``, ``dropout``, ``attention_dropout``)
and tensor names (``transformer.layer.{i}.attention.q_lin`` ...), layer norms with
``eps = 1e-12`` fixed, and no dropout on the attention output (only on its probabilities).
The msmarco-distilbert and multi-qa-distilbert sentence-transformers models are DistilBERT.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from flax import nnx

from jaxemb.encoders._bert import (
    HF_ACTIVATION_NAMES,
    bert_embeddings_plan,
    bert_layer_plan,
    check_post_ln_learned,
    hf_activation,
    require_keys,
)
from jaxemb.encoders._family import Family, TensorPlan
from jaxemb.encoders._transformer import TransformerConfig, TransformerEncoder, sinusoidal_table

#: DistilBERT's layer norms have this epsilon, whatever the config says.
DISTILBERT_LAYER_NORM_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class DistilBertConfig(TransformerConfig):
    """Hyper-parameters of :class:`DistilBertEncoder` (defaults are distilbert-base's).

    The fields are :class:`~jaxemb.encoders.TransformerConfig`'s with DistilBERT's constraints:
    ``type_vocab_size`` 0, ``layer_norm_eps`` 1e-12, post-LN, learned positions.

    Args:
      num_layers: ``n_layers`` (6 in distilbert-base).
      sinusoidal_pos_embds: the checkpoint's flag: a new encoder's position table starts as
        the fixed sin/cos table (a loaded one is read from the checkpoint, as ``transformers``
        5 does, and trains like a learned one).
      **kwargs: the other :class:`~jaxemb.encoders.TransformerConfig` fields (``hidden_size``
        is ``dim``, ``num_heads`` ``n_heads``, ``intermediate_size`` ``hidden_dim``).

    Examples:
      >>> from jaxemb.encoders import DistilBertConfig
      >>> DistilBertConfig().num_layers, DistilBertConfig().type_vocab_size
      (6, 0)

    References:
      Sanh et al. 2019 (DistilBERT); Hugging Face ``transformers.DistilBertConfig``.
    """

    num_layers: int = 6
    type_vocab_size: int = 0
    sinusoidal_pos_embds: bool = False

    def __post_init__(self):
        super().__post_init__()
        check_post_ln_learned(self, "DistilBertConfig")
        if self.type_vocab_size != 0:
            raise ValueError(
                f"type_vocab_size must be 0 (DistilBERT has no token types); got "
                f"{self.type_vocab_size}"
            )
        if self.layer_norm_eps != DISTILBERT_LAYER_NORM_EPS:
            raise ValueError(
                f"layer_norm_eps must be {DISTILBERT_LAYER_NORM_EPS} (fixed in DistilBERT); got "
                f"{self.layer_norm_eps}"
            )
        if not isinstance(self.sinusoidal_pos_embds, bool):
            raise ValueError(
                f"sinusoidal_pos_embds must be True or False; got {self.sinusoidal_pos_embds!r}"
            )

    @property
    def attention_output_dropout(self) -> bool:
        return False


class DistilBertEncoder(TransformerEncoder):
    """A DistilBERT encoder ``input_ids [B, T] -> EncoderOutput`` (``DistilBertModel``).

    :class:`~jaxemb.encoders.TransformerEncoder` without token types and without dropout on the
    attention output; equals ``DistilBertModel(...).last_hidden_state`` and loads with
    :func:`~jaxemb.encoders.load_hf_encoder`.

    Args:
      config: a :class:`DistilBertConfig`.
      rngs: parameter RNG streams.

    Call args and returns: as :class:`~jaxemb.encoders.TransformerEncoder` (``input_ids``
    ``[B, T]``, ``attention_mask`` ``[B, T]``, no ``token_type_ids`` -> ``EncoderOutput`` with
    ``last_hidden_state`` ``[B, T, H]``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb.encoders import DistilBertConfig, DistilBertEncoder
      >>> cfg = DistilBertConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
      ...                        intermediate_size=32, max_positions=8, dropout=0.0)
      >>> enc = DistilBertEncoder(cfg, rngs=nnx.Rngs(0))
      >>> ids = jnp.array([[2, 7, 9, 3], [2, 5, 3, 0]])
      >>> enc(ids, ids != 0).last_hidden_state.shape
      (2, 4, 16)

    References:
      Sanh et al. 2019 (DistilBERT); Hugging Face ``transformers`` ``DistilBertModel``.
    """

    def __init__(self, config: DistilBertConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, DistilBertConfig):
            raise ValueError(f"config must be a DistilBertConfig; got {type(config).__name__}")
        super().__init__(config, rngs=rngs)
        if config.sinusoidal_pos_embds:
            table = sinusoidal_table(config.max_positions, config.hidden_size)
            self.position_embeddings.embedding[...] = jnp.asarray(table)


def distilbert_config_from_hf(hf: dict[str, Any], where: str = "config.json") -> DistilBertConfig:
    """A DistilBERT ``config.json`` (``dim``, ``n_layers``, ...) as a :class:`DistilBertConfig`."""
    require_keys(hf, ("vocab_size", "dim", "n_layers", "n_heads"), where)
    return DistilBertConfig(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["dim"]),
        num_layers=int(hf["n_layers"]),
        num_heads=int(hf["n_heads"]),
        intermediate_size=int(hf.get("hidden_dim", 4 * 768)),
        max_positions=int(hf.get("max_position_embeddings", 512)),
        activation=hf_activation(hf, where, key="activation"),
        dropout=float(hf.get("dropout", 0.1)),
        attention_dropout=float(hf.get("attention_dropout", 0.1)),
        initializer_range=float(hf.get("initializer_range", 0.02)),
        pad_token_id=int(hf.get("pad_token_id") or 0),
        sinusoidal_pos_embds=bool(hf.get("sinusoidal_pos_embds", False)),
    )


def distilbert_config_to_hf(cfg: DistilBertConfig) -> dict[str, Any]:
    """The ``config.json`` of ``DistilBertModel`` for ``cfg``."""
    check_post_ln_learned(cfg, "DistilBertConfig")
    return {
        "architectures": ["DistilBertModel"],
        "model_type": "distilbert",
        "vocab_size": cfg.vocab_size,
        "dim": cfg.hidden_size,
        "n_layers": cfg.num_layers,
        "n_heads": cfg.num_heads,
        "hidden_dim": cfg.intermediate_size,
        "activation": HF_ACTIVATION_NAMES[cfg.activation],
        "dropout": cfg.dropout,
        "attention_dropout": cfg.dropout
        if cfg.attention_dropout is None
        else cfg.attention_dropout,
        "max_position_embeddings": cfg.max_positions,
        "sinusoidal_pos_embds": cfg.sinusoidal_pos_embds,
        "initializer_range": cfg.initializer_range,
        "pad_token_id": cfg.pad_token_id,
        "torch_dtype": "float32",
    }


DISTILBERT_LAYER_NAMES = {
    "query": "attention.q_lin",
    "key": "attention.k_lin",
    "value": "attention.v_lin",
    "out": "attention.out_lin",
    "attention_norm": "sa_layer_norm",
    "intermediate": "ffn.lin1",
    "output": "ffn.lin2",
    "output_norm": "output_layer_norm",
}


def distilbert_tensor_plan(cfg: DistilBertConfig) -> TensorPlan:
    """Every ``DistilBertModel`` tensor and where it goes."""
    plan = bert_embeddings_plan(cfg)
    for n in range(cfg.num_layers):
        plan.update(bert_layer_plan(cfg, f"transformer.layer.{n}.", n, DISTILBERT_LAYER_NAMES))
    return plan


DISTILBERT = Family(
    name="DistilBERT",
    model_types=("distilbert",),
    encoder_class=DistilBertEncoder,
    config_class=DistilBertConfig,
    config_from_hf=distilbert_config_from_hf,
    config_to_hf=distilbert_config_to_hf,
    tensor_plan=distilbert_tensor_plan,
    checkpoint_prefixes=("distilbert.",),
    tokenizer_class="DistilBertTokenizerFast",
    examples=(
        "sentence-transformers/msmarco-distilbert-base-v4",
        "sentence-transformers/multi-qa-distilbert-cos-v1",
        "distilbert/distilbert-base-uncased",
    ),
)
