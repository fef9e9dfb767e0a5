"""Write encoders back in the layouts Hugging Face transformers and sentence-transformers load."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx
from safetensors.numpy import save_file
from tokenizers import Tokenizer

from jaxemb.encoders._family import module_tensors
from jaxemb.encoders._hf import SPECIAL_TOKEN_ROLES, family_of

_TORCH_ACTIVATIONS = {
    "Tanh": "torch.nn.modules.activation.Tanh",
    "Identity": "torch.nn.modules.linear.Identity",
    "ReLU": "torch.nn.modules.activation.ReLU",
    "GELU": "torch.nn.modules.activation.GELU",
    "Sigmoid": "torch.nn.modules.activation.Sigmoid",
    "SiLU": "torch.nn.modules.activation.SiLU",
}
# sentence-transformers' legacy Pooling flags, in the order it concatenates the modes.
_POOL_FLAGS = (
    ("cls", "pooling_mode_cls_token"),
    ("max", "pooling_mode_max_tokens"),
    ("mean", "pooling_mode_mean_tokens"),
    ("mean_sqrt_len", "pooling_mode_mean_sqrt_len_tokens"),
    ("weighted_mean", "pooling_mode_weightedmean_tokens"),
    ("last_token", "pooling_mode_lasttoken"),
)
_BERT_SPECIAL = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}
# Conventional tokens of each role, tried in order when the caller names none.
_SPECIAL_CANDIDATES = {
    "bos_token": ("<s>", "<bos>"),
    "eos_token": ("</s>", "<eos>", "<|endoftext|>"),
    "unk_token": ("[UNK]", "<unk>"),
    "sep_token": ("[SEP]", "</s>"),
    "pad_token": ("[PAD]", "<pad>", "<|endoftext|>"),
    "cls_token": ("[CLS]", "<s>"),
    "mask_token": ("[MASK]", "<mask>"),
}


def _check_target(path: str | os.PathLike, overwrite: bool) -> Path:
    """The absolute target directory, checked before any work (nothing is created)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a directory path; got {type(path).__name__}")
    if not isinstance(overwrite, bool):
        raise ValueError(f"overwrite must be True or False; got {overwrite!r}")
    target = Path(path).expanduser().absolute()
    if target.exists():
        if not target.is_dir():
            raise ValueError(f"path {target} exists and is not a directory")
        if not overwrite:
            raise ValueError(
                f"path {target} already exists; pass overwrite=True to replace it (its content "
                "is replaced only after the new model is completely written)"
            )
    base = target.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ValueError(f"path {target} cannot be written ({base} is a file, not a directory)")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"path {target} cannot be written (no write permission in {base})")
    return target


def _staging(target: Path) -> Path:
    """A fresh directory beside ``target`` to write into before publishing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as err:
        raise ValueError(f"cannot write into {target.parent}: {err.strerror or err}") from err


def _publish(staging: Path, target: Path) -> Path:
    """Moves a completely written staging directory into place (replacing ``target``)."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
    return target


def _hf_layout(encoder: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(config.json dict, checkpoint tensors)`` of ``encoder`` in its family's layout; refuses,
    before anything is written, an encoder no Hugging Face layout holds."""
    family = family_of(encoder)
    hf = family.config_to_hf(encoder.config)
    return hf, module_tensors(encoder, family.tensor_plan(encoder.config))


def _special_tokens(tokenizer: Tokenizer, given: Mapping[str, str] | None) -> dict[str, str]:
    """The ``*_token`` entries of the tokenizer config: ``given`` (checked against the vocabulary),
    else each role's conventional token when the vocabulary has it."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    if given is not None:
        if not isinstance(given, Mapping):
            raise ValueError(f"special_tokens must be a dict; got {type(given).__name__}")
        out = {}
        for role, token in given.items():
            if role not in SPECIAL_TOKEN_ROLES or not isinstance(token, str):
                raise ValueError(
                    f"special_tokens must map roles {SPECIAL_TOKEN_ROLES} to token strings; got "
                    f"{role!r}: {token!r}"
                )
            if token not in vocab:
                raise ValueError(f"special_tokens[{role!r}] = {token!r} is not in the tokenizer")
            out[role] = token
        return out
    return {
        role: next(t for t in candidates if t in vocab)
        for role, candidates in _SPECIAL_CANDIDATES.items()
        if any(t in vocab for t in candidates)
    }


def _tokenizer_files(
    tokenizer: Tokenizer,
    max_length: int,
    tokenizer_class: str,
    special_tokens: Mapping[str, str] | None = None,
    padding_side: str = "right",
) -> dict[str, str]:
    """``tokenizer.json`` (no truncation or padding baked in) and its transformers configs."""
    if not isinstance(tokenizer, Tokenizer):
        raise ValueError(
            f"tokenizer must be a tokenizers.Tokenizer; got {type(tokenizer).__name__}"
        )
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left'; got {padding_side!r}")
    spec = json.loads(tokenizer.to_str())
    spec["truncation"] = None
    spec["padding"] = None
    special = _special_tokens(tokenizer, special_tokens)
    config: dict[str, Any] = {
        "tokenizer_class": tokenizer_class,
        "model_max_length": int(max_length),
        "padding_side": padding_side,
        "clean_up_tokenization_spaces": False,
    }
    if tokenizer_class == "BertTokenizerFast":
        missing = [t for t in _BERT_SPECIAL.values() if t not in tokenizer.get_vocab()]
        if missing:
            raise ValueError(
                f"tokenizer lacks the BERT special tokens {missing}; a BERT model's tokenizer is "
                "written as a BertTokenizerFast"
            )
        norm = spec.get("normalizer") or {}
        lowercase = norm.get("type") == "BertNormalizer" and bool(norm.get("lowercase", False))
        special = dict(_BERT_SPECIAL)
        config.update(
            do_lower_case=lowercase,
            strip_accents=None,
            tokenize_chinese_chars=True,
            clean_up_tokenization_spaces=True,
        )
    # transformers' RoBERTa/GPT-2 tokenizers rebuild their byte-level pre-tokenizer from the
    # config's add_prefix_space (default false): carry over what tokenizer.json does.
    pre = spec.get("pre_tokenizer") or {}
    for step in pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]:
        if step.get("type") == "ByteLevel":
            config["add_prefix_space"] = bool(step.get("add_prefix_space", False))
    post = spec.get("post_processor") or {}
    if "trim_offsets" in post:
        config["trim_offsets"] = bool(post["trim_offsets"])
    config.update(special)
    return {
        "tokenizer.json": json.dumps(spec, ensure_ascii=False),
        "tokenizer_config.json": json.dumps(config, indent=2),
        "special_tokens_map.json": json.dumps(special, indent=2),
    }


def _write_hf(
    directory: Path,
    encoder: Any,
    tokenizer: Tokenizer,
    max_length: int,
    special_tokens: Mapping[str, str] | None = None,
    padding_side: str = "right",
):
    family = family_of(encoder)
    files = _tokenizer_files(
        tokenizer, max_length, family.tokenizer_class, special_tokens, padding_side
    )
    hf, tensors = _hf_layout(encoder)
    (directory / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")


def save_hf_encoder(
    encoder: Any,
    tokenizer: Tokenizer,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    special_tokens: Mapping[str, str] | None = None,
    padding_side: str = "right",
) -> Path:
    """Writes a ``transformers``-loadable directory in the layout of the encoder's family.

    ``config.json`` and ``model.safetensors`` as ``save_pretrained`` writes them for the family
    (``bert``, ...), and the tokenizer: ``tokenizer.json``, ``tokenizer_config.json`` (the
    family's fast tokenizer class, the special tokens, ``padding_side``) and
    ``special_tokens_map.json``. ``AutoModel.from_pretrained(path)`` then gives the same
    ``last_hidden_state`` as ``encoder``, and :func:`load_hf_encoder` reads it back bit for bit.
    The directory is written in a staging folder beside ``path`` and moved into place when
    complete.

    Args:
      encoder: an encoder of one of the Hugging Face families, e.g. from
        :func:`load_hf_encoder` or a fine-tuned :class:`Embedder`'s ``encoder``.
      tokenizer: its ``tokenizers.Tokenizer`` (a BERT tokenizer needs the BERT special tokens).
      path: the directory to write.
      overwrite: replace an existing ``path`` (refused otherwise).
      special_tokens: ``{"pad_token": "<pad>", ...}`` for the tokenizer config (roles
        ``bos/eos/unk/sep/pad/cls/mask_token``); default: each role's conventional token that
        the vocabulary holds.
      padding_side: ``"right"`` or ``"left"`` (last-token-pooled decoders).

    Returns:
      The directory written.

    Raises:
      ValueError: ``path`` exists (without ``overwrite``) or cannot be written, the encoder is
        not one a Hugging Face layout holds, or the tokenizer lacks a special token —
        before anything is written.

    Examples:
      >>> import tempfile, pathlib
      >>> from jaxemb.encoders import save_hf_encoder
      >>> save_hf_encoder(None, None, tempfile.mkdtemp())
      Traceback (most recent call last):
      ...
      ValueError: path ... already exists; pass overwrite=True to replace it ...

    References:
      Hugging Face ``transformers`` ``PreTrainedModel.save_pretrained`` (each family's layout)
      and ``PreTrainedTokenizerFast.save_pretrained``.
    """
    target = _check_target(path, overwrite)
    family = family_of(encoder)
    family.config_to_hf(encoder.config)  # refuses one no HF layout holds
    _tokenizer_files(tokenizer, 1, family.tokenizer_class, special_tokens, padding_side)
    staging = _staging(target)
    try:
        _write_hf(
            staging, encoder, tokenizer, encoder.config.max_positions, special_tokens, padding_side
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _publish(staging, target)


def _model_card(embedder: Any, card: Mapping[str, Any] | str | None) -> str:
    if isinstance(card, str):
        return card
    card = dict(card or {})
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags:",
        "- sentence-transformers",
        "- jaxemb",
        "---",
        "",
        f"# {card.pop('title', 'A jaxemb sentence-transformers model')}",
        "",
        card.pop(
            "description",
            "Exported from JAX with `jaxemb.encoders.save_sentence_transformer`.",
        ),
        "",
        "## Model",
        "",
        f"- output dimension: {embedder.dim}; max sequence length: {embedder.max_seq_length}",
        f"- pooling: {', '.join(embedder.pooling)}; normalised: {embedder.normalize}",
    ]
    if embedder.prompts:
        lines.append(f"- prompts: {json.dumps(embedder.prompts, ensure_ascii=False)}")
    for key, title in (("training_data", "Training data"), ("loss", "Loss")):
        if key in card:
            lines += ["", f"## {title}", "", str(card.pop(key))]
    metrics = card.pop("evaluation", None)
    if metrics:
        lines += ["", "## Evaluation", ""]
        header = None
        for name, values in metrics.items():
            if header is None:
                header = list(values)
                lines += ["| model | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
            lines.append(f"| {name} | " + " | ".join(f"{values[h]:.4f}" for h in header) + " |")
    for key, value in card.items():
        lines += ["", f"## {key}", "", str(value)]
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        'model = SentenceTransformer("path/to/this/directory")',
        'embeddings = model.encode(["a sentence", "another one"])',
        "```",
        "",
    ]
    return "\n".join(lines)


def save_sentence_transformer(
    embedder: Any,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    model_card: Mapping[str, Any] | str | None = None,
) -> Path:
    """Writes an :class:`Embedder` as a sentence-transformers directory (v5 and v6 load it).

    Layout (the one ``SentenceTransformer.save`` writes for a Transformer → Pooling → Dense →
    Normalize pipeline): ``modules.json``; the Transformer at the root (``config.json``,
    ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``,
    ``special_tokens_map.json``, ``sentence_bert_config.json`` with ``max_seq_length`` and
    ``do_lower_case``); ``1_Pooling/config.json`` (the pooling modes, ``include_prompt``);
    ``N_Dense/`` with ``config.json`` and ``model.safetensors`` per Dense layer; ``N_Normalize/``;
    ``config_sentence_transformers.json`` with the prompts, the default prompt and the cosine
    similarity; and a model card ``README.md``. ``SentenceTransformer(path).encode`` then equals
    ``embedder.encode`` (float32, within 1e-5), and :func:`load_sentence_transformer` reads it
    back bit for bit.

    Args:
      embedder: the :class:`Embedder` (its current ``params`` are written).
      path: the directory to write.
      overwrite: replace an existing ``path`` (refused otherwise).
      model_card: the card's text, or a dict with optional ``title``, ``description``,
        ``training_data``, ``loss`` and ``evaluation`` (``{model: {metric: value}}``) entries
        (other keys become sections).

    Returns:
      The directory written.

    Raises:
      ValueError: ``path`` exists (without ``overwrite``) or cannot be written, or the pipeline
        cannot be expressed in sentence-transformers' layout (a non-BERT encoder, a pooling
        order it does not concatenate in) — before anything is written.

    Examples:
      >>> import tempfile
      >>> from jaxemb.encoders import save_sentence_transformer
      >>> save_sentence_transformer(None, tempfile.mkdtemp())
      Traceback (most recent call last):
      ...
      ValueError: path ... already exists; pass overwrite=True to replace it ...

    References:
      sentence-transformers ``SentenceTransformer.save`` (``modules.json``,
      ``sentence_bert_config.json``, ``config_sentence_transformers.json`` with ``prompts`` and
      ``default_prompt_name``; the ``models.Transformer`` / ``Pooling`` / ``Dense`` /
      ``Normalize`` module types that v5 and v6 both load).
    """
    from jaxemb.encoders._st import Embedder

    target = _check_target(path, overwrite)
    if not isinstance(embedder, Embedder):
        raise ValueError(f"embedder must be an Embedder; got {type(embedder).__name__}")
    encoder = nnx.merge(embedder._graphdef, embedder.params["encoder"])
    family = family_of(encoder)
    family.config_to_hf(encoder.config)  # refuses one no HF layout holds
    special = embedder.special_tokens or None
    _tokenizer_files(embedder.tokenizer, 1, family.tokenizer_class, special, embedder.padding_side)
    order = [mode for mode, _ in _POOL_FLAGS]
    positions = [order.index(m) if m in order else -1 for m in embedder.pooling]
    if -1 in positions or positions != sorted(positions) or len(set(positions)) != len(positions):
        raise ValueError(
            f"pooling {embedder.pooling} cannot be written: sentence-transformers "
            f"concatenates distinct modes in the order {order}"
        )
    if model_card is not None and not isinstance(model_card, (str, Mapping)):
        raise ValueError(f"model_card must be a str or a dict; got {type(model_card).__name__}")
    staging = _staging(target)
    try:
        _write_hf(
            staging,
            encoder,
            embedder.tokenizer,
            embedder.max_seq_length,
            special,
            embedder.padding_side,
        )
        (staging / "sentence_bert_config.json").write_text(
            json.dumps(
                {"max_seq_length": embedder.max_seq_length, "do_lower_case": embedder.lowercase},
                indent=2,
            )
        )
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
        ]
        pool_dir = staging / "1_Pooling"
        pool_dir.mkdir()
        pool_cfg: dict[str, Any] = {"word_embedding_dimension": encoder.config.hidden_size}
        for mode, flag in _POOL_FLAGS:
            pool_cfg[flag] = mode in embedder.pooling
        pool_cfg["include_prompt"] = embedder.include_prompt
        (pool_dir / "config.json").write_text(json.dumps(pool_cfg, indent=2))
        modules.append(
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            }
        )
        for p, spec in zip(embedder.params["dense"], embedder._dense_spec, strict=True):
            idx = len(modules)
            ddir = staging / f"{idx}_Dense"
            ddir.mkdir()
            kernel = np.asarray(p["kernel"], np.float32)
            cfg = {
                "in_features": int(kernel.shape[0]),
                "out_features": int(kernel.shape[1]),
                "bias": "bias" in p,
                "activation_function": _TORCH_ACTIVATIONS[spec.activation],
            }
            tensors = {"linear.weight": np.ascontiguousarray(kernel.T)}
            if "bias" in p:
                tensors["linear.bias"] = np.asarray(p["bias"], np.float32)
            if spec.residual != "none":
                cfg["use_residual"] = True
                if spec.residual == "projection":
                    tensors["residual.weight"] = np.ascontiguousarray(
                        np.asarray(p["residual"], np.float32).T
                    )
            (ddir / "config.json").write_text(json.dumps(cfg, indent=2))
            save_file(tensors, str(ddir / "model.safetensors"), metadata={"format": "pt"})
            modules.append(
                {
                    "idx": idx,
                    "name": str(idx),
                    "path": f"{idx}_Dense",
                    "type": "sentence_transformers.models.Dense",
                }
            )
        if embedder.normalize:
            idx = len(modules)
            (staging / f"{idx}_Normalize").mkdir()
            modules.append(
                {
                    "idx": idx,
                    "name": str(idx),
                    "path": f"{idx}_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                }
            )
        (staging / "modules.json").write_text(json.dumps(modules, indent=2))
        (staging / "config_sentence_transformers.json").write_text(
            json.dumps(
                {
                    "__version__": {"sentence_transformers": "5.1.0", "jaxemb": "0.1.0"},
                    "model_type": "SentenceTransformer",
                    "prompts": dict(embedder.prompts),
                    "default_prompt_name": embedder.default_prompt_name,
                    "similarity_fn_name": "cosine",
                },
                indent=2,
            )
        )
        (staging / "README.md").write_text(_model_card(embedder, model_card), encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _publish(staging, target)
