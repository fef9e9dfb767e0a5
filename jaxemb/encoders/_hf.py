"""Load Hugging Face BERT-family checkpoints (``config.json`` + safetensors) without torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

from jaxemb.encoders._transformer import TransformerConfig, TransformerEncoder

#: ``config.json`` ``model_type`` values whose weights follow the BERT layout read here.
SUPPORTED_MODEL_TYPES = ("bert",)

_HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"could not read {what} {path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold a JSON object; got {type(data).__name__}")
    return data


def hf_config_to_transformer_config(hf: dict[str, Any], *, where: str = "config.json"):
    """Translate a Hugging Face BERT ``config.json`` dict into a :class:`TransformerConfig`.

    Raises:
      ValueError: for a model type or setting this encoder does not reproduce, naming what was
        found and what is supported.
    """
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        archs = hf.get("architectures")
        raise ValueError(
            f"{where}: model_type {model_type!r} (architectures {archs}) is not a supported "
            f"architecture; supported model types: {', '.join(SUPPORTED_MODEL_TYPES)} (BERT, "
            "MiniLM, E5, BGE, GTE-base style checkpoints)"
        )
    position_type = hf.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(
            f"{where}: position_embedding_type {position_type!r} is not supported; only "
            "'absolute' (learned) BERT positions are"
        )
    act = hf.get("hidden_act", "gelu")
    if act not in _HF_ACTIVATIONS:
        raise ValueError(
            f"{where}: hidden_act {act!r} is not supported; supported: {sorted(_HF_ACTIVATIONS)}"
        )
    missing = [
        k
        for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
        if k not in hf
    ]
    if missing:
        raise ValueError(f"{where} lacks required keys {missing}")
    return TransformerConfig(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=int(hf["num_attention_heads"]),
        intermediate_size=int(hf.get("intermediate_size", 4 * int(hf["hidden_size"]))),
        max_positions=int(hf.get("max_position_embeddings", 512)),
        type_vocab_size=int(hf.get("type_vocab_size", 2)),
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        activation=_HF_ACTIVATIONS[act],
        norm_position="post",
        position="learned",
        dropout=float(hf.get("hidden_dropout_prob", 0.1)),
        attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
        initializer_range=float(hf.get("initializer_range", 0.02)),
        pad_token_id=int(hf.get("pad_token_id") or 0),
    )


def read_safetensors(directory: Path) -> dict[str, np.ndarray]:
    """All tensors of ``model.safetensors`` (or a sharded ``model.safetensors.index.json``) as
    float32/int NumPy arrays. Never unpickles anything."""
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = _read_json(index, "safetensors index").get("weight_map", {})
        files = [directory / name for name in sorted(set(weight_map.values()))]
    else:
        found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
        hint = (
            " (pytorch_model.bin is a pickle and is not read: convert it to model.safetensors)"
            if "pytorch_model.bin" in found
            else ""
        )
        raise ValueError(
            f"{directory} has no model.safetensors or model.safetensors.index.json{hint}; "
            f"found {found}"
        )
    tensors: dict[str, np.ndarray] = {}
    for file in files:
        try:
            # framework="flax" reads bfloat16/float16 too (NumPy has no bfloat16).
            with safe_open(str(file), framework="flax") as f:
                for key in f.keys():
                    t = f.get_tensor(key)
                    if jnp.issubdtype(t.dtype, jnp.floating):
                        t = t.astype(jnp.float32)
                    tensors[key] = np.asarray(t)
        except (OSError, ValueError, RuntimeError) as err:
            raise ValueError(f"could not read safetensors file {file}: {err}") from err
    return tensors


def _bert_tensor_plan(cfg: TransformerConfig) -> dict[str, tuple[tuple[int, ...], tuple, bool]]:
    """``HF name -> (HF shape, path in our state, transpose)`` for every BERT tensor we load."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    plan: dict[str, tuple[tuple[int, ...], tuple, bool]] = {
        "embeddings.word_embeddings.weight": (
            (cfg.vocab_size, h),
            ("word_embeddings", "embedding"),
            False,
        ),
        "embeddings.position_embeddings.weight": (
            (cfg.max_positions, h),
            ("position_embeddings", "embedding"),
            False,
        ),
        "embeddings.LayerNorm.weight": ((h,), ("embeddings_norm", "scale"), False),
        "embeddings.LayerNorm.bias": ((h,), ("embeddings_norm", "bias"), False),
    }
    if cfg.type_vocab_size:
        plan["embeddings.token_type_embeddings.weight"] = (
            (cfg.type_vocab_size, h),
            ("token_type_embeddings", "embedding"),
            False,
        )
    for n in range(cfg.num_layers):
        hf = f"encoder.layer.{n}."
        ours = ("layers", n)
        linears = {
            "attention.self.query": (("attention", "query"), h, h),
            "attention.self.key": (("attention", "key"), h, h),
            "attention.self.value": (("attention", "value"), h, h),
            "attention.output.dense": (("attention", "out"), h, h),
            "intermediate.dense": (("intermediate",), h, i),
            "output.dense": (("output",), i, h),
        }
        for name, (path, din, dout) in linears.items():
            plan[hf + name + ".weight"] = ((dout, din), (*ours, *path, "kernel"), True)
            plan[hf + name + ".bias"] = ((dout,), (*ours, *path, "bias"), False)
        for name, path in (
            ("attention.output.LayerNorm", "attention_norm"),
            ("output.LayerNorm", "output_norm"),
        ):
            plan[hf + name + ".weight"] = ((h,), (*ours, path, "scale"), False)
            plan[hf + name + ".bias"] = ((h,), (*ours, path, "bias"), False)
    return plan


def _canonical_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strip a ``bert.`` prefix (task-head checkpoints) and map legacy ``gamma``/``beta``."""
    out = {}
    for key, value in tensors.items():
        name = key[len("bert.") :] if key.startswith("bert.") else key
        if name.endswith("LayerNorm.gamma"):
            name = name[: -len("gamma")] + "weight"
        elif name.endswith("LayerNorm.beta"):
            name = name[: -len("beta")] + "bias"
        out[name] = value
    return out


def set_bert_weights(
    encoder: TransformerEncoder, tensors: dict[str, np.ndarray], *, where: str = "checkpoint"
) -> None:
    """Copy BERT-layout tensors (Hugging Face names, ``[out, in]`` linear weights) into
    ``encoder`` in place, checking that every tensor is present with the right shape."""
    tensors = _canonical_names(tensors)
    plan = _bert_tensor_plan(encoder.config)
    missing = sorted(k for k in plan if k not in tensors)
    if missing:
        more = f", ... ({len(missing)} in all)" if len(missing) > 6 else ""
        shown = ", ".join(missing[:6]) + more
        raise ValueError(f"{where} is missing tensors: {shown}")
    for name, (shape, _, _) in plan.items():
        found = tuple(tensors[name].shape)
        if found != shape:
            raise ValueError(
                f"{where}: tensor {name} has shape {list(found)}; expected {list(shape)} from "
                "config.json"
            )
    for name, (_, path, transpose) in plan.items():
        node: Any = encoder
        for part in path:
            node = node[part] if isinstance(part, int) else getattr(node, part)
        value = tensors[name].astype(np.float32)
        node.set_value(jnp.asarray(value.T if transpose else value))


def load_tokenizer(directory: Path) -> Tokenizer | None:
    """``tokenizer.json`` through the ``tokenizers`` package, else a WordPiece tokenizer built from
    ``vocab.txt`` (lower-casing as ``tokenizer_config.json``'s ``do_lower_case`` says), else
    ``None``."""
    tok_json = directory / "tokenizer.json"
    if tok_json.is_file():
        try:
            return Tokenizer.from_file(str(tok_json))
        except Exception as err:  # the tokenizers package raises its own exception type
            raise ValueError(f"could not read tokenizer {tok_json}: {err}") from err
    vocab = directory / "vocab.txt"
    if vocab.is_file():
        tok_cfg_path = directory / "tokenizer_config.json"
        tok_cfg = _read_json(tok_cfg_path, "tokenizer config") if tok_cfg_path.is_file() else {}
        lower = bool(tok_cfg.get("do_lower_case", True))
        wrapper = BertWordPieceTokenizer(
            str(vocab), lowercase=lower, strip_accents=None if lower else False
        )
        return wrapper._tokenizer
    return None


def load_hf_encoder(path: str | Path) -> tuple[TransformerEncoder, Tokenizer | None]:
    """Load a Hugging Face BERT-family model directory into a :class:`TransformerEncoder`.

    Reads ``config.json`` and ``model.safetensors`` (or a sharded safetensors index) without
    torch or pickle; task-head checkpoints (``bert.`` prefix) and the ``pooler`` are accepted and
    the pooler ignored. The encoder is returned in eval mode (no dropout) and reproduces
    ``BertModel(...).last_hidden_state`` for the same inputs.

    Args:
      path: the model directory.

    Returns:
      ``(encoder, tokenizer)``: the tokenizer comes from ``tokenizer.json`` via the
      ``tokenizers`` package (or ``vocab.txt``); ``None`` if the directory has neither.

    Raises:
      ValueError: the directory or ``config.json`` is missing, the architecture is not supported
        (naming what was found and what is), or a tensor is missing or mis-shaped (naming it,
        the expected and the found shape).

    Examples:
      >>> import json, tempfile, pathlib
      >>> from jaxemb.encoders import load_hf_encoder
      >>> d = pathlib.Path(tempfile.mkdtemp())
      >>> _ = (d / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
      >>> load_hf_encoder(d)
      Traceback (most recent call last):
      ...
      ValueError: ...model_type 'gpt2' ... is not a supported architecture; supported ...: bert...

    References:
      Hugging Face ``transformers`` ``BertModel`` and its ``save_pretrained`` layout; Devlin et al.
      2019.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise ValueError(f"path must be a model directory; {str(path)!r} is not a directory")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{directory} has no config.json; a Hugging Face model needs one")
    cfg = hf_config_to_transformer_config(_read_json(config_path, "config"), where=str(config_path))
    tensors = read_safetensors(directory)
    # Abstract construction (no random initialisation); every parameter is then set from the
    # checkpoint, and set_bert_weights has checked that none is missing.
    encoder = nnx.eval_shape(lambda: TransformerEncoder(cfg, rngs=nnx.Rngs(0)))
    set_bert_weights(encoder, tensors, where=str(directory))
    encoder.eval()
    tokenizer = load_tokenizer(directory)
    if tokenizer is not None:
        check_tokenizer_fits(tokenizer, cfg.vocab_size, where=str(directory))
    return encoder, tokenizer


def check_tokenizer_fits(tokenizer: Tokenizer, vocab_size: int, *, where: str) -> None:
    """Refuses a tokenizer that emits ids past the model's embedding table (a mismatched pair)."""
    largest = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1)
    if largest >= vocab_size:
        raise ValueError(
            f"{where}: the tokenizer emits ids up to {largest} but the model's config has "
            f"vocab_size {vocab_size}; the tokenizer and the model do not belong together"
        )
