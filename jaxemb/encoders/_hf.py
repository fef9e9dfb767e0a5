"""Load Hugging Face checkpoints (``config.json`` + safetensors) without torch or pickle.

One loader for every architecture family (:data:`FAMILIES`, one file each): ``config.json``'s
``model_type`` picks the family, whose tensor plan says where each checkpoint tensor goes. With a
``mesh``, every tensor is read from the safetensors files straight into its shards, so a model
larger than one device's memory never sits whole on one device.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from safetensors import safe_open
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

from jaxemb.encoders._bert import BERT
from jaxemb.encoders._distilbert import DISTILBERT
from jaxemb.encoders._family import Family, variable_at
from jaxemb.encoders._gemma3 import GEMMA3
from jaxemb.encoders._modernbert import MODERNBERT
from jaxemb.encoders._mpnet import MPNET
from jaxemb.encoders._qwen3 import QWEN3
from jaxemb.encoders._roberta import ROBERTA, XLM_ROBERTA
from jaxemb.encoders._transformer import TENSOR_PARALLEL_RULES, param_shardings

#: Every architecture family :func:`load_hf_encoder` reads.
FAMILIES: tuple[Family, ...] = (
    BERT,
    MODERNBERT,
    ROBERTA,
    XLM_ROBERTA,
    DISTILBERT,
    MPNET,
    QWEN3,
    GEMMA3,
)
#: The special-token roles of a ``transformers`` tokenizer config.
SPECIAL_TOKEN_ROLES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
#: ``config.json`` ``model_type`` values :func:`load_hf_encoder` reads.
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(t for f in FAMILIES for t in f.model_types)


def family_for_model_type(
    model_type: Any, *, where: str = "config.json", hf: dict | None = None
) -> Family:
    """The :class:`Family` reading ``model_type``; a ``ValueError`` listing the supported ones."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    archs = (hf or {}).get("architectures")
    raise ValueError(
        f"{where}: model_type {model_type!r} (architectures {archs}) is not a supported "
        f"architecture; supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
    )


def family_of(encoder: Any) -> Family:
    """The :class:`Family` whose config class ``encoder.config`` is (exactly)."""
    config = getattr(encoder, "config", None)
    for family in FAMILIES:
        if type(config) is family.config_class and isinstance(encoder, family.encoder_class):
            return family
    names = ", ".join(f.encoder_class.__name__ for f in FAMILIES)
    raise ValueError(
        f"encoder must be one of the Hugging Face encoder families ({names}); got "
        f"{type(encoder).__name__} with config {type(config).__name__}"
    )


def hf_config(hf: dict[str, Any], *, where: str = "config.json") -> tuple[Family, Any]:
    """``(family, config)`` for a ``config.json`` dict; refuses remote-code models."""
    if hf.get("auto_map"):
        raise ValueError(
            f"{where}: the model needs remote code (auto_map {sorted(hf['auto_map'])}); jaxemb "
            "never runs a checkpoint's Python code and reads only the built-in families: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    family = family_for_model_type(hf.get("model_type"), where=where, hf=hf)
    return family, family.config_from_hf(hf, where)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"could not read {what} {path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold a JSON object; got {type(data).__name__}")
    return data


class Checkpoint:
    """The tensors of ``model.safetensors`` (or a sharded ``model.safetensors.index.json``),
    read lazily: names and shapes up front, values (or slices of them) on demand, never
    unpickling anything."""

    def __init__(self, directory: Path):
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
        self.files: dict[str, Path] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        for file in files:
            try:
                with safe_open(str(file), framework="flax") as f:
                    for key in f.keys():
                        self.files[key] = file
                        self.shapes[key] = tuple(f.get_slice(key).get_shape())
            except (OSError, ValueError, RuntimeError) as err:
                raise ValueError(f"could not read safetensors file {file}: {err}") from err

    def read(self, name: str, index: tuple[slice, ...] | None = None) -> np.ndarray:
        """Tensor ``name`` (or its ``index`` slice) as float32 (floating) or its integer type."""
        file = self.files[name]
        try:
            # framework="flax" reads bfloat16/float16 too (NumPy has no bfloat16).
            with safe_open(str(file), framework="flax") as f:
                t = f.get_slice(name)[index] if index is not None else f.get_tensor(name)
        except (OSError, ValueError, RuntimeError) as err:
            raise ValueError(f"could not read tensor {name} from {file}: {err}") from err
        if jnp.issubdtype(t.dtype, jnp.floating):
            t = t.astype(jnp.float32)
        return np.asarray(t)


def read_safetensors(directory: Path) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint directory as float32/int NumPy (see :class:`Checkpoint`)."""
    checkpoint = Checkpoint(directory)
    return {name: checkpoint.read(name) for name in checkpoint.files}


def load_weights(
    encoder: Any,
    family: Family,
    checkpoint: Checkpoint,
    *,
    where: str = "checkpoint",
    shardings: Any = None,
) -> None:
    """Sets every parameter of ``encoder`` from ``checkpoint`` by the family's tensor plan, after
    checking that each tensor is present with the right shape.

    With ``shardings`` (an ``nnx.State`` of ``NamedSharding``, from
    :func:`~jaxemb.encoders.param_shardings`), each device's shard is read from the file on its
    own: the whole tensor never sits on one device.
    """
    names = family.canonical_names(list(checkpoint.files))
    plan = family.tensor_plan(encoder.config)
    missing = sorted(k for k in plan if k not in names)
    if missing:
        more = f", ... ({len(missing)} in all)" if len(missing) > 6 else ""
        raise ValueError(f"{where} is missing tensors: {', '.join(missing[:6])}{more}")
    for name, (shape, _, _) in plan.items():
        found = checkpoint.shapes[names[name]]
        if found != shape:
            raise ValueError(
                f"{where}: tensor {name} has shape {list(found)}; expected {list(shape)} from "
                "config.json"
            )
    for name, (shape, path, transpose) in plan.items():
        key = names[name]
        variable = variable_at(encoder, path)
        if shardings is None:
            value = checkpoint.read(key)
            variable.set_value(jnp.asarray(value.T if transpose else value))
            continue
        sharding = variable_at(shardings, path)
        ours = shape[::-1] if transpose else shape

        def shard(index, key=key, transpose=transpose):
            index = tuple(index)[::-1] if transpose else tuple(index)
            part = checkpoint.read(key, index)
            return part.T if transpose else part

        variable.set_value(jax.make_array_from_callback(ours, sharding, shard))


def load_hf_encoder(
    path: str | Path,
    *,
    mesh: Mesh | None = None,
    rules: Sequence[tuple[str, str | None]] = TENSOR_PARALLEL_RULES,
) -> tuple[Any, Tokenizer | None]:
    """Load a Hugging Face model directory into the jaxemb encoder of its family.

    Reads ``config.json`` and ``model.safetensors`` (or a sharded safetensors index) without
    torch or pickle; ``config.json``'s ``model_type`` picks the family (:data:`FAMILIES`:
    ``bert``, ...). Task-head checkpoints (``bert.`` prefix) are accepted and heads ignored.
    The encoder is returned in eval mode (no dropout) and reproduces the ``transformers``
    ``AutoModel(...).last_hidden_state`` for the same inputs.

    Args:
      path: the model directory.
      mesh: place the parameters on this mesh, sharded by ``rules`` (each shard read from the
        file directly); ``None``: on the default device.
      rules: logical-axis to mesh-axis rules (see :func:`~jaxemb.encoders.param_shardings`):
        the default is tensor parallelism over ``"model"``; ``(("embed", "data"),)`` is FSDP.

    Returns:
      ``(encoder, tokenizer)``: the tokenizer comes from ``tokenizer.json`` via the
      ``tokenizers`` package (or ``vocab.txt``); ``None`` if the directory has neither.

    Raises:
      ValueError: the directory or ``config.json`` is missing, the architecture is not supported
        (naming what was found and what is) or needs remote code, or a tensor is missing or
        mis-shaped (naming it, the expected and the found shape).

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
      Hugging Face ``transformers`` ``AutoModel`` / ``save_pretrained`` layout of each family;
      Devlin et al. 2019 (BERT).
    """
    directory = Path(path)
    if not directory.is_dir():
        raise ValueError(f"path must be a model directory; {str(path)!r} is not a directory")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{directory} has no config.json; a Hugging Face model needs one")
    if mesh is not None and not isinstance(mesh, Mesh):
        raise ValueError(f"mesh must be a jax.sharding.Mesh or None; got {type(mesh).__name__}")
    family, cfg = hf_config(_read_json(config_path, "config"), where=str(config_path))
    checkpoint = Checkpoint(directory)
    # Abstract construction (no random initialisation); every parameter is then set from the
    # checkpoint, and load_weights has checked that none is missing.
    encoder = nnx.eval_shape(lambda: family.encoder_class(cfg, rngs=nnx.Rngs(0)))
    shardings = None if mesh is None else param_shardings(encoder, mesh, rules)
    load_weights(encoder, family, checkpoint, where=str(directory), shardings=shardings)
    encoder.eval()
    tokenizer = load_tokenizer(directory)
    if tokenizer is not None:
        check_tokenizer_fits(tokenizer, cfg.vocab_size, where=str(directory))
    return encoder, tokenizer


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


def check_tokenizer_fits(tokenizer: Tokenizer, vocab_size: int, *, where: str) -> None:
    """Refuses a tokenizer that emits ids past the model's embedding table (a mismatched pair)."""
    largest = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1)
    if largest >= vocab_size:
        raise ValueError(
            f"{where}: the tokenizer emits ids up to {largest} but the model's config has "
            f"vocab_size {vocab_size}; the tokenizer and the model do not belong together"
        )
