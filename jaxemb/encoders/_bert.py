"""The BERT family (``model_type`` ``bert``): Hugging Face ``BertModel`` checkpoints.

:class:`~jaxemb.encoders.TransformerEncoder` with its defaults is ``BertModel``; this file maps
``config.json`` and the checkpoint's tensor names onto it (MiniLM, E5, BGE, GTE-base style
checkpoints are BERT).
"""

from __future__ import annotations

from typing import Any

from jaxemb.encoders._family import Family, TensorPlan
from jaxemb.encoders._transformer import TransformerConfig, TransformerEncoder

#: ``hidden_act`` values of ``transformers`` and the activation each is here.
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
#: The ``hidden_act`` written on export for each activation.
HF_ACTIVATION_NAMES = {
    "gelu": "gelu",
    "gelu_tanh": "gelu_pytorch_tanh",
    "relu": "relu",
    "silu": "silu",
}


def require_keys(hf: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    """Raises a ``ValueError`` naming the ``config.json`` keys ``hf`` lacks."""
    missing = [k for k in keys if k not in hf]
    if missing:
        raise ValueError(f"{where} lacks required keys {missing}")


def hf_activation(hf: dict[str, Any], where: str, key: str = "hidden_act") -> str:
    """The activation named by ``hf[key]`` (default ``gelu``), refusing ones not reproduced."""
    act = hf.get(key, "gelu")
    if act not in HF_ACTIVATIONS:
        raise ValueError(
            f"{where}: {key} {act!r} is not supported; supported: {sorted(HF_ACTIVATIONS)}"
        )
    return HF_ACTIVATIONS[act]


def bert_config_from_hf(hf: dict[str, Any], where: str = "config.json") -> TransformerConfig:
    """A BERT ``config.json`` as a :class:`TransformerConfig` (post-LN, learned positions)."""
    position_type = hf.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(
            f"{where}: position_embedding_type {position_type!r} is not supported; only "
            "'absolute' (learned) BERT positions are"
        )
    require_keys(
        hf, ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"), where
    )
    return TransformerConfig(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=int(hf["num_attention_heads"]),
        intermediate_size=int(hf.get("intermediate_size", 4 * int(hf["hidden_size"]))),
        max_positions=int(hf.get("max_position_embeddings", 512)),
        type_vocab_size=int(hf.get("type_vocab_size", 2)),
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        activation=hf_activation(hf, where),
        norm_position="post",
        position="learned",
        dropout=float(hf.get("hidden_dropout_prob", 0.1)),
        attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
        initializer_range=float(hf.get("initializer_range", 0.02)),
        pad_token_id=int(hf.get("pad_token_id") or 0),
    )


def check_post_ln_learned(cfg: TransformerConfig, family: str) -> None:
    """Refuses settings a post-LN, learned-position checkpoint layout (BERT, RoBERTa, MPNet,
    DistilBERT) cannot hold, naming the ``family``."""
    if cfg.norm_position != "post":
        raise ValueError(f"norm_position must be 'post' for {family}; got {cfg.norm_position!r}")
    if cfg.position != "learned":
        raise ValueError(f"position must be 'learned' for {family}; got {cfg.position!r}")
    if cfg.activation not in HF_ACTIVATION_NAMES:
        raise ValueError(f"activation {cfg.activation!r} has no transformers name")


def bert_config_to_hf(cfg: TransformerConfig) -> dict[str, Any]:
    """The ``config.json`` of ``BertModel`` for ``cfg``."""
    check_post_ln_learned(cfg, "the BERT layout (model_type 'bert')")
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
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
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": cfg.pad_token_id,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
    }


def bert_layer_plan(
    cfg: TransformerConfig, prefix: str, layer: int, names: dict[str, str]
) -> TensorPlan:
    """The tensors of one post-LN layer; ``names`` maps our sub-modules (``query``, ``key``,
    ``value``, ``out``, ``attention_norm``, ``intermediate``, ``output``, ``output_norm``) to the
    checkpoint's names under ``prefix``."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    ours = ("layers", layer)
    plan: TensorPlan = {}
    linears = {
        "query": (("attention", "query"), h, h),
        "key": (("attention", "key"), h, h),
        "value": (("attention", "value"), h, h),
        "out": (("attention", "out"), h, h),
        "intermediate": (("intermediate",), h, i),
        "output": (("output",), i, h),
    }
    for ours_name, (path, din, dout) in linears.items():
        hf = prefix + names[ours_name]
        plan[hf + ".weight"] = ((dout, din), (*ours, *path, "kernel"), True)
        plan[hf + ".bias"] = ((dout,), (*ours, *path, "bias"), False)
    for ours_name in ("attention_norm", "output_norm"):
        hf = prefix + names[ours_name]
        plan[hf + ".weight"] = ((h,), (*ours, ours_name, "scale"), False)
        plan[hf + ".bias"] = ((h,), (*ours, ours_name, "bias"), False)
    return plan


BERT_LAYER_NAMES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "out": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "output_norm": "output.LayerNorm",
}


def bert_embeddings_plan(cfg: TransformerConfig) -> TensorPlan:
    """The word and position tables and the embedding layer norm (``embeddings.*``), as BERT,
    RoBERTa, MPNet and DistilBERT store them; the position table has
    ``cfg.position_table_size`` rows."""
    h = cfg.hidden_size
    return {
        "embeddings.word_embeddings.weight": (
            (cfg.vocab_size, h),
            ("word_embeddings", "embedding"),
            False,
        ),
        "embeddings.position_embeddings.weight": (
            (cfg.position_table_size, h),
            ("position_embeddings", "embedding"),
            False,
        ),
        "embeddings.LayerNorm.weight": ((h,), ("embeddings_norm", "scale"), False),
        "embeddings.LayerNorm.bias": ((h,), ("embeddings_norm", "bias"), False),
    }


def bert_tensor_plan(cfg: TransformerConfig) -> TensorPlan:
    """Every ``BertModel`` tensor (the pooler excepted) and where it goes (also RoBERTa's and
    XLM-RoBERTa's, whose names are BERT's)."""
    plan = bert_embeddings_plan(cfg)
    if cfg.type_vocab_size:
        plan["embeddings.token_type_embeddings.weight"] = (
            (cfg.type_vocab_size, cfg.hidden_size),
            ("token_type_embeddings", "embedding"),
            False,
        )
    for n in range(cfg.num_layers):
        plan.update(bert_layer_plan(cfg, f"encoder.layer.{n}.", n, BERT_LAYER_NAMES))
    return plan


BERT = Family(
    name="BERT",
    model_types=("bert",),
    encoder_class=TransformerEncoder,
    config_class=TransformerConfig,
    config_from_hf=bert_config_from_hf,
    config_to_hf=bert_config_to_hf,
    tensor_plan=bert_tensor_plan,
    checkpoint_prefixes=("bert.",),
    renames=(("LayerNorm.gamma", "LayerNorm.weight"), ("LayerNorm.beta", "LayerNorm.bias")),
    tokenizer_class="BertTokenizerFast",
    examples=(
        "sentence-transformers/all-MiniLM-L6-v2",
        "BAAI/bge-small-en-v1.5",
        "intfloat/e5-base-v2",
    ),
)
