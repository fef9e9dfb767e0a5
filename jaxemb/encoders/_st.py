"""Load sentence-transformers directories into a jitted JAX :class:`Embedder` (no torch)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from jaxemb.encoders._hf import (
    SPECIAL_TOKEN_ROLES,
    _read_json,
    check_tokenizer_fits,
    family_of,
    load_hf_encoder,
    read_safetensors,
)
from jaxemb.encoders._pool import pool

# sentence-transformers pooling-mode names (both layouts) -> jaxemb.encoders.pool methods.
_ST_POOLING = {
    "cls": "cls",
    "max": "max",
    "mean": "mean",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
    "weightedmean": "weighted_mean",
    "lasttoken": "last_token",
}
# Legacy boolean flags, in the order sentence-transformers concatenates them.
_LEGACY_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# torch.nn activation class names a Dense module may name -> JAX functions.
_DENSE_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "Tanh": jnp.tanh,
    "Identity": lambda x: x,
    "ReLU": jax.nn.relu,
    "GELU": lambda x: jax.nn.gelu(x, approximate=False),
    "Sigmoid": jax.nn.sigmoid,
    "SiLU": jax.nn.silu,
}
SUPPORTED_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")


@dataclasses.dataclass(frozen=True)
class _Dense:
    activation: str
    residual: str  # "none", "identity" or "projection"


def _pooling_modes(config: dict[str, Any], where: str) -> tuple[str, ...]:
    """Pooling modes from either layout: v6 ``pooling_mode`` or legacy ``pooling_mode_*`` flags."""
    if "pooling_mode" in config:
        raw = config["pooling_mode"]
        modes = (raw,) if isinstance(raw, str) else tuple(raw)
    else:
        modes = tuple(mode for flag, mode in _LEGACY_FLAGS.items() if config.get(flag, False))
        if not modes:
            modes = ("mean",)
    for mode in modes:
        if mode not in _ST_POOLING:
            raise ValueError(
                f"{where}: pooling mode {mode!r} is not supported; supported: {sorted(_ST_POOLING)}"
            )
    return tuple(_ST_POOLING[m] for m in modes)


def _module_kind(entry: dict[str, Any], where: str) -> str:
    kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
    if kind not in SUPPORTED_MODULES:
        raise ValueError(
            f"{where}: module type {entry.get('type')!r} is not supported; a sentence-transformers "
            f"pipeline here is {' -> '.join(SUPPORTED_MODULES)} (Dense and Normalize optional)"
        )
    return kind


def _max_seq_length(directory: Path, hf_max_positions: int) -> int:
    """The truncation length sentence-transformers would use, capped at the position table."""
    length = None
    st_cfg_path = directory / "sentence_bert_config.json"
    st_cfg = _read_json(st_cfg_path, "sentence_bert_config") if st_cfg_path.is_file() else {}
    text_kwargs = (st_cfg.get("processing_kwargs") or {}).get("text") or {}
    if text_kwargs.get("max_length"):
        length = int(text_kwargs["max_length"])
    elif st_cfg.get("max_seq_length"):
        length = int(st_cfg["max_seq_length"])
    else:
        tok_cfg_path = directory / "tokenizer_config.json"
        if tok_cfg_path.is_file():
            value = _read_json(tok_cfg_path, "tokenizer config").get("model_max_length")
            if isinstance(value, (int, float)) and 0 < value < 1e9:
                length = int(value)
    return hf_max_positions if length is None else min(length, hf_max_positions)


class Embedder:
    """A sentence-transformers pipeline in JAX: Transformer → Pooling → [Dense …] → [Normalize].

    Built by :func:`load_sentence_transformer`. ``embed`` is a pure jitted function of
    ``(params, input_ids, attention_mask)``, so it composes with ``jax.grad`` for fine-tuning
    with :mod:`jaxemb.losses`; ``encode`` tokenises, batches (sorted by length, as
    sentence-transformers does), shards each batch over the local devices and returns NumPy.

    Prompts follow ``SentenceTransformer``: ``prompts`` maps names to prefixes, the
    ``default_prompt_name`` one (if any) is prepended when ``encode`` gets neither ``prompt`` nor
    ``prompt_name``, and with ``include_prompt=False`` (from the Pooling config) the prompt's
    tokens are left out of pooling. ``encode_query`` / ``encode_document`` pick the model's
    query / document prompts; ``encode_queries`` / ``encode_corpus`` are the BEIR interface.

    Attributes:
      encoder: the :class:`TransformerEncoder` (eval mode).
      prompts: ``{name: prefix}`` as in ``config_sentence_transformers.json``.
      default_prompt_name: the prompt applied by default, or ``None``.
      tokenizer: the ``tokenizers.Tokenizer`` (truncation to ``max_seq_length``).
      pooling: the :func:`~jaxemb.encoders.pool` methods, concatenated in order.
      params: ``{"encoder": nnx.State, "dense": [{"kernel" [in, out], "bias" [out]?, ...}]}``.
      normalize: whether the pipeline ends with a Normalize module.
      max_seq_length: inputs are truncated to this many tokens (special tokens included); it is
        never more than the position table.
      padding_side: ``"right"`` or ``"left"`` (decoders pooled at the last token, e.g.
        Qwen3-Embedding, pad on the left), as the tokenizer config says.
      special_tokens: the tokenizer config's ``*_token`` entries (written back on export).
      pad_id: the id padded positions get (the tokenizer config's ``pad_token``, else
        ``[PAD]``, else the model config's ``pad_token_id``).
      dim: output width.
    """

    def __init__(
        self,
        encoder: Any,
        tokenizer: Tokenizer,
        *,
        pooling: Sequence[str],
        dense: Sequence[tuple[dict[str, np.ndarray], str, str]] = (),
        normalize: bool = False,
        max_seq_length: int | None = None,
        prompts: Mapping[str, str] | None = None,
        default_prompt_name: str | None = None,
        include_prompt: bool = True,
        lowercase: bool = False,
        padding_side: str = "right",
        pad_token: str | None = None,
        special_tokens: Mapping[str, str] | None = None,
    ):
        family_of(encoder)  # a ValueError for anything but a Hugging Face family's encoder
        if not isinstance(tokenizer, Tokenizer):
            raise ValueError(
                f"tokenizer must be a tokenizers.Tokenizer; got {type(tokenizer).__name__}"
            )
        check_tokenizer_fits(tokenizer, encoder.config.vocab_size, where="Embedder")
        self.encoder = encoder
        self.pooling = tuple(pooling)
        self.normalize = bool(normalize)
        cap = encoder.config.max_positions
        self.max_seq_length = cap if max_seq_length is None else min(int(max_seq_length), cap)
        prompts = dict(prompts or {})
        for name, text in prompts.items():
            if not isinstance(name, str) or not isinstance(text, str):
                raise ValueError(f"prompts must map names to strings; got {name!r}: {text!r}")
        if default_prompt_name is not None and default_prompt_name not in prompts:
            raise ValueError(
                f"default_prompt_name {default_prompt_name!r} is not one of the prompts "
                f"{sorted(prompts)}"
            )
        self.prompts = prompts
        self.default_prompt_name = default_prompt_name
        self.include_prompt = include_prompt
        self.lowercase = bool(lowercase)
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_seq_length)
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left'; got {padding_side!r}")
        self.padding_side = padding_side
        self.special_tokens = dict(special_tokens or {})
        if pad_token is not None and self.tokenizer.token_to_id(pad_token) is None:
            raise ValueError(f"pad_token {pad_token!r} is not in the tokenizer's vocabulary")
        pad = self.tokenizer.token_to_id(pad_token if pad_token is not None else "[PAD]")
        self.pad_id = encoder.config.pad_token_id if pad is None else pad
        self._set_graphdefs(encoder)
        state = nnx.state(encoder)
        self._dense_spec = tuple(_Dense(act, res) for _, act, res in dense)
        self.params = {
            "encoder": state,
            "dense": [{k: jnp.asarray(w) for k, w in p.items()} for p, _, _ in dense],
        }
        width = encoder.config.hidden_size * len(self.pooling)
        for p, _, _ in dense:
            width = p["kernel"].shape[1]
        self.dim = width
        self._forward_jit = jax.jit(self._forward, static_argnames=("normalize",))

    def _set_graphdefs(self, encoder: Any) -> None:
        # the structure in eval mode (encode, embed) and in training mode (dropout on)
        encoder.train()
        self._train_graphdef, _ = nnx.split(encoder)
        encoder.eval()
        self._graphdef, _ = nnx.split(encoder)

    # -- the pure function ---------------------------------------------------------------------

    def embed(
        self,
        params,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        pool_mask: jax.Array | None = None,
        *,
        dropout_key: jax.Array | None = None,
    ) -> jax.Array:
        """Pure, jitted ``(params, input_ids [B, T], attention_mask [B, T]) -> [B, dim]`` float32.

        ``params`` has the structure of :attr:`params`; differentiate through it to fine-tune
        (e.g. inside :func:`jaxemb.parallel.grad_cache`). Inputs come from :meth:`prepare`.
        With ``dropout_key`` the encoder runs in training mode: the checkpoint's dropout rates
        (``hidden_dropout_prob``, ``attention_probs_dropout_prob``) apply, as in a
        sentence-transformers ``fit``; without it the forward is deterministic (``encode``'s).

        Args:
          params: the parameters (structure of :attr:`params`).
          input_ids: ``[B, T]`` int token ids.
          attention_mask: ``[B, T]``, 1 for real tokens.
          pool_mask: ``[B, T]`` tokens to pool over (default: ``attention_mask``); differs
            only for a prompt the model pools without (``include_prompt=False``).
          dropout_key: a PRNG key to train with dropout; ``None``: no dropout.

        Returns:
          ``[B, dim]`` float32, L2-normalised when the pipeline ends with Normalize.
        """
        return self._forward_jit(
            params, input_ids, attention_mask, pool_mask, dropout_key, normalize=self.normalize
        )

    def _forward(
        self, params, input_ids, attention_mask, pool_mask, dropout_key=None, *, normalize: bool
    ):
        if dropout_key is None:
            model = nnx.merge(self._graphdef, params["encoder"])
            hidden = model(input_ids, attention_mask).last_hidden_state
        else:
            model = nnx.merge(self._train_graphdef, params["encoder"])
            rngs = nnx.Rngs(dropout=dropout_key)
            hidden = model(input_ids, attention_mask, rngs=rngs).last_hidden_state
        mask = attention_mask if pool_mask is None else pool_mask
        x = pool(hidden, mask, self.pooling)
        for p, spec in zip(params["dense"], self._dense_spec):
            y = x @ p["kernel"]
            if "bias" in p:
                y = y + p["bias"][None, :]
            y = _DENSE_ACTIVATIONS[spec.activation](y)
            if spec.residual == "identity":
                y = y + x
            elif spec.residual == "projection":
                y = y + x @ p["residual"]
            x = y
        if normalize:
            x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
        return x

    # -- text in, NumPy out --------------------------------------------------------------------

    def tokenize(
        self,
        texts: Sequence[str],
        *,
        max_length: int | None = None,
        pad_to: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Token ids and masks ``[B, T]`` (int32), as sentence-transformers tokenises.

        Args:
          texts: the texts (prompts already prepended).
          max_length: truncate to this many tokens, special tokens included (default and
            maximum: ``max_seq_length``).
          pad_to: pad every row to exactly this length (fixed shapes for a training step);
            default: the longest (truncated) input.
        """
        cap = (
            self.max_seq_length if max_length is None else min(int(max_length), self.max_seq_length)
        )
        if cap != self.max_seq_length:
            tok = Tokenizer.from_str(self.tokenizer.to_str())
            tok.enable_truncation(cap)
        else:
            tok = self.tokenizer
        encodings = tok.encode_batch(list(texts))
        length = max(len(e.ids) for e in encodings) if pad_to is None else int(pad_to)
        ids = np.full((len(encodings), length), self.pad_id, np.int32)
        mask = np.zeros((len(encodings), length), np.int32)
        for row, e in enumerate(encodings):
            n = min(len(e.ids), length)
            cols = slice(0, n) if self.padding_side == "right" else slice(length - n, length)
            ids[row, cols] = e.ids[:n]
            mask[row, cols] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def prepare(
        self,
        texts: Sequence[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        max_length: int | None = None,
        pad_to: int | None = None,
    ) -> dict[str, np.ndarray]:
        """What :meth:`encode` feeds :meth:`embed`: the prompt prepended, lower-cased if the
        model says so, tokenised, with the pooling mask of ``include_prompt=False``.

        Use it to build fixed-shape training batches that embed exactly as ``encode`` does.

        Args:
          texts: the raw texts.
          prompt_name: one of :attr:`prompts` (see :meth:`resolve_prompt`).
          prompt: a prefix (wins over ``prompt_name``); neither: the default prompt.
          max_length: truncation length, special tokens included (at most
            ``max_seq_length``).
          pad_to: pad every row to this length (default: the longest row).

        Returns:
          ``{"input_ids", "attention_mask", "pool_mask"}``, each ``[len(texts), T]`` int32.
        """
        prefix = self.resolve_prompt(prompt_name, prompt)
        texts = [t.lower() for t in texts] if self.lowercase else list(texts)
        if prefix:
            texts = [prefix + t for t in texts]
        batch = self.tokenize(texts, max_length=max_length, pad_to=pad_to)
        pool_mask = batch["attention_mask"].copy()
        if prefix and not self.include_prompt:
            # the prompt's tokens (and, with left padding, the padding before them), as
            # sentence-transformers' Pooling excludes them
            first_real = pool_mask.argmax(axis=1)[:, None]
            columns = np.arange(pool_mask.shape[1])[None, :]
            pool_mask[columns < first_real + self._prompt_length(prefix)] = 0
        batch["pool_mask"] = pool_mask
        return batch

    def with_compute_dtype(self, compute_dtype: str) -> Embedder:
        """The same model (shared parameters, float32) computing its matmuls in ``compute_dtype``.

        Args:
          compute_dtype: ``"float32"`` or ``"bfloat16"``.

        Returns:
          A new :class:`Embedder`; ``self`` is unchanged.
        """
        config = dataclasses.replace(self.encoder.config, compute_dtype=compute_dtype)
        cls = type(self.encoder)
        abstract = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))
        abstract.eval()
        graphdef, _ = nnx.split(abstract)
        other = copy.copy(self)
        other.encoder = nnx.merge(graphdef, self.params["encoder"])
        other._set_graphdefs(other.encoder)
        other.params = dict(self.params)
        other._forward_jit = jax.jit(other._forward, static_argnames=("normalize",))
        return other

    def _prompt_length(self, prompt: str) -> int:
        # As sentence-transformers: the prompt's token count without the closing special token.
        return len(self.tokenizer.encode(prompt).ids) - 1

    def resolve_prompt(self, prompt_name: str | None = None, prompt: str | None = None) -> str:
        """The prefix ``encode`` applies: ``prompt`` if given, else ``prompts[prompt_name]``, else
        the default prompt, else ``""`` (``SentenceTransformer.encode``'s rule)."""
        if prompt is not None:
            if not isinstance(prompt, str):
                raise ValueError(f"prompt must be a str; got {type(prompt).__name__}")
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise ValueError(
                    f"prompt_name {prompt_name!r} is not one of the model's prompts "
                    f"{sorted(self.prompts)}"
                )
            return self.prompts[prompt_name]
        if self.default_prompt_name is not None:
            return self.prompts[self.default_prompt_name]
        return ""

    def encode(
        self,
        texts: Sequence[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        normalize: bool | None = None,
        show_progress: bool = False,
        params: Any = None,
    ) -> np.ndarray:
        """Embed ``texts`` like ``SentenceTransformer.encode``; returns ``[N, dim]`` float32.

        Args:
          texts: non-empty sequence of strings.
          prompt_name: one of :attr:`prompts`, prepended to every text.
          prompt: a prefix to prepend (wins over ``prompt_name``); ``None`` with no
            ``prompt_name`` applies the default prompt, if the model has one.
          batch_size: texts per forward pass (padded up to a multiple of the local devices, over
            which each batch is sharded).
          normalize: ``None`` follows the pipeline (its Normalize module, if any); ``True``
            L2-normalises the output (like ``normalize_embeddings=True``); ``False`` returns the
            output without the final normalisation.
          show_progress: show a tqdm progress bar.
          params: parameters to embed with (structure of :attr:`params`; e.g. during
            fine-tuning); default :attr:`params`.

        Returns:
          ``[len(texts), dim]`` float32 NumPy array.
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise ValueError(f"texts must be a sequence of strings; got {type(texts).__name__}")
        if len(texts) == 0:
            raise ValueError("texts must not be empty; got 0 texts")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ValueError(
                f"texts must all be str; entry {bad[0]} is {type(texts[bad[0]]).__name__}"
            )
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        if normalize not in (None, True, False):
            raise ValueError(f"normalize must be None, True or False; got {normalize!r}")
        prefix = self.resolve_prompt(prompt_name, prompt)  # a bad prompt_name fails here
        devices = jax.local_devices()
        mesh = Mesh(np.asarray(devices), ("data",))
        rows = NamedSharding(mesh, PartitionSpec("data"))
        per_call = math.ceil(batch_size / len(devices)) * len(devices)
        params = jax.device_put(
            self.params if params is None else params, NamedSharding(mesh, PartitionSpec())
        )
        # longest first, as sentence-transformers sorts (the prompt adds the same to each)
        order = np.argsort(-np.asarray([len(t) for t in texts]), kind="stable")
        out = np.zeros((len(texts), self.dim), np.float32)
        want_norm = self.normalize if normalize is None else normalize
        for start in tqdm(
            range(0, len(texts), batch_size), disable=not show_progress, desc="embed", unit="batch"
        ):
            chunk = order[start : start + batch_size]
            batch = self.prepare([texts[i] for i in chunk], prompt=prefix)
            width = batch["input_ids"].shape[1]
            # Pad rows to a multiple of the devices and length to a multiple of 16 (fewer
            # recompilations); padded rows and positions are masked out.
            length = min(self.max_seq_length, 16 * math.ceil(width / 16))
            pads = ((0, per_call - len(chunk)), (0, length - width))
            ids = np.pad(batch["input_ids"], pads, constant_values=self.pad_id)
            mask, pool_mask = (np.pad(batch[k], pads) for k in ("attention_mask", "pool_mask"))
            args = [jax.device_put(a, rows) for a in (ids, mask, pool_mask)]
            emb = self._forward_jit(params, *args, normalize=want_norm)
            out[chunk] = np.asarray(emb)[: len(chunk)]
        return out

    # -- asymmetric retrieval ------------------------------------------------------------------

    @property
    def query_prompt_name(self) -> str | None:
        """The prompt ``encode_query`` applies: ``"query"`` if the model has it, else ``None``
        (then the default prompt applies, as in sentence-transformers)."""
        return "query" if "query" in self.prompts else None

    @property
    def document_prompt_name(self) -> str | None:
        """The prompt ``encode_document`` applies: the first of ``"document"``, ``"passage"``,
        ``"corpus"`` the model has, else ``None``."""
        return next((n for n in ("document", "passage", "corpus") if n in self.prompts), None)

    def encode_query(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        """``encode`` with :attr:`query_prompt_name`, as ``SentenceTransformer.encode_query``;
        keyword arguments as for :meth:`encode`."""
        if "prompt" not in kwargs and "prompt_name" not in kwargs:
            kwargs["prompt_name"] = self.query_prompt_name
        return self.encode(texts, **kwargs)

    def encode_document(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        """``encode`` with :attr:`document_prompt_name`, as
        ``SentenceTransformer.encode_document``; keyword arguments as for :meth:`encode`."""
        if "prompt" not in kwargs and "prompt_name" not in kwargs:
            kwargs["prompt_name"] = self.document_prompt_name
        return self.encode(texts, **kwargs)

    def encode_queries(
        self, queries: Sequence[str], *, batch_size: int = 32, **kwargs
    ) -> np.ndarray:
        """BEIR's model interface: :meth:`encode_query` of a list of query strings."""
        return self.encode_query(queries, batch_size=batch_size, **kwargs)

    def encode_corpus(
        self, corpus: Sequence[Mapping[str, str]], *, batch_size: int = 32, **kwargs
    ) -> np.ndarray:
        """BEIR's model interface: documents ``{"title": ..., "text": ...}`` embedded as
        ``(title + " " + text).strip()`` (BEIR's ``SentenceBERT`` joins them with a space) with
        :meth:`encode_document`."""
        if isinstance(corpus, Mapping) or not isinstance(corpus, Sequence):
            raise ValueError(
                f"corpus must be a list of {{'title', 'text'}} dicts; got {type(corpus).__name__}"
            )
        texts = []
        for i, doc in enumerate(corpus):
            if not isinstance(doc, Mapping) or not isinstance(doc.get("text", ""), str):
                raise ValueError(
                    f"corpus[{i}] must be a dict with a 'text' string; got {doc!r:.80}"
                )
            title = doc.get("title") or ""
            texts.append(f"{title} {doc.get('text', '')}".strip())
        return self.encode_document(texts, batch_size=batch_size, **kwargs)


def load_sentence_transformer(path: str | Path) -> Embedder:
    """Load a sentence-transformers model directory as a JAX :class:`Embedder` (no torch).

    Reads ``modules.json`` in both layouts found in the wild: the legacy one (types
    ``sentence_transformers.models.*``, the Transformer in ``0_Transformer/`` or at the root,
    ``sentence_bert_config.json`` with ``max_seq_length``/``do_lower_case``, Pooling config with
    ``word_embedding_dimension`` and ``pooling_mode_*_tokens`` flags) and the v6 one (types
    ``sentence_transformers.base.modules.*`` / ``sentence_transformer.modules.*``, Transformer
    at the root, Pooling config ``{embedding_dimension, pooling_mode}``). Dense weights come from
    each Dense directory's ``model.safetensors`` (``linear.weight [out, in]``, ``linear.bias``).
    The prompts and default prompt of ``config_sentence_transformers.json`` are kept; the
    default prompt is prepended as ``SentenceTransformer.encode`` does, and prompts are excluded
    from pooling when the Pooling config says ``include_prompt: false``.

    Inputs longer than ``max_seq_length`` are truncated (special tokens kept), and
    ``max_seq_length`` never exceeds the checkpoint's position table.

    Args:
      path: the sentence-transformers model directory.

    Returns:
      An :class:`Embedder` whose ``encode`` matches ``SentenceTransformer.encode`` for the same
      checkpoint (float32, within 1e-4).

    Raises:
      ValueError: missing ``modules.json``, an unsupported module or pooling mode, a missing
        tokenizer, or missing / mis-shaped tensors (named with expected and found shapes).

    Examples:
      >>> import tempfile
      >>> from jaxemb.encoders import load_sentence_transformer
      >>> load_sentence_transformer(tempfile.mkdtemp())
      Traceback (most recent call last):
      ...
      ValueError: ... has no modules.json; ...

    References:
      Reimers & Gurevych 2019 (Sentence-BERT); ``sentence_transformers`` ``SentenceTransformer``
      (``Transformer``, ``Pooling``, ``Dense``, ``Normalize`` modules, v2-v6 save layouts).
    """
    directory = Path(path)
    if not directory.is_dir():
        raise ValueError(f"path must be a model directory; {str(path)!r} is not a directory")
    modules_path = directory / "modules.json"
    if not modules_path.is_file():
        raise ValueError(
            f"{directory} has no modules.json; is it a sentence-transformers directory? (use "
            "load_hf_encoder for a plain Hugging Face model)"
        )
    try:
        with open(modules_path, encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"could not read {modules_path}: {err}") from err
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{modules_path} must be a non-empty JSON list of modules")
    entries = sorted(entries, key=lambda e: int(e.get("idx", 0)))
    kinds = [_module_kind(e, str(modules_path)) for e in entries]
    if (
        kinds[:2] != ["Transformer", "Pooling"]
        or any(k not in ("Dense", "Normalize") for k in kinds[2:])
        or "Normalize" in kinds[2:-1]
    ):
        raise ValueError(
            f"{modules_path}: module order {kinds} is not supported; expected Transformer, "
            "Pooling, then optional Dense modules and an optional final Normalize"
        )

    def module_dir(entry):
        sub = str(entry.get("path", ""))
        target = (directory / sub).resolve()
        if directory.resolve() not in (target, *target.parents):
            raise ValueError(f"{modules_path}: module path {sub!r} leaves the model directory")
        return target

    tdir = module_dir(entries[0])
    encoder, tokenizer = load_hf_encoder(tdir)
    if tokenizer is None:
        raise ValueError(f"{tdir} has no tokenizer.json or vocab.txt; the Embedder needs one")
    st_cfg_path = tdir / "sentence_bert_config.json"
    st_cfg = _read_json(st_cfg_path, "sentence_bert_config") if st_cfg_path.is_file() else {}
    max_len = _max_seq_length(tdir, encoder.config.max_positions)

    pdir = module_dir(entries[1])
    pool_cfg_path = pdir / "config.json"
    if not pool_cfg_path.is_file():
        raise ValueError(f"Pooling module directory {pdir} has no config.json")
    pool_cfg = _read_json(pool_cfg_path, "Pooling config")
    modes = _pooling_modes(pool_cfg, str(pool_cfg_path))
    width = pool_cfg.get("embedding_dimension", pool_cfg.get("word_embedding_dimension"))
    if width is not None and int(width) != encoder.config.hidden_size:
        raise ValueError(
            f"{pool_cfg_path}: embedding dimension {width} does not match the Transformer's "
            f"hidden_size {encoder.config.hidden_size}"
        )

    dense = []
    in_width = encoder.config.hidden_size * len(modes)
    for entry, kind in zip(entries[2:], kinds[2:]):
        if kind != "Dense":
            continue
        ddir = module_dir(entry)
        cfg = _read_json(ddir / "config.json", "Dense config")
        for key in ("module_input_name", "module_output_name"):
            if cfg.get(key, "sentence_embedding") not in (None, "sentence_embedding"):
                raise ValueError(f"{ddir}: Dense {key}={cfg[key]!r} is not supported")
        din, dout = int(cfg.get("in_features", -1)), int(cfg.get("out_features", -1))
        if din != in_width:
            raise ValueError(
                f"{ddir}: Dense in_features={din} does not match the incoming width {in_width}"
            )
        act_name = str(cfg.get("activation_function", "torch.nn.modules.activation.Tanh"))
        act = act_name.rsplit(".", 1)[-1]
        if act not in _DENSE_ACTIVATIONS:
            raise ValueError(
                f"{ddir}: Dense activation {act_name!r} is not supported; supported: "
                f"{sorted(_DENSE_ACTIVATIONS)}"
            )
        tensors = read_safetensors(ddir)
        expect = {"linear.weight": (dout, din)}
        if cfg.get("bias", True):
            expect["linear.bias"] = (dout,)
        residual = "none"
        if cfg.get("use_residual", False):
            residual = "identity" if din == dout else "projection"
            if residual == "projection":
                expect["residual.weight"] = (dout, din)
        for name, shape in expect.items():
            if name not in tensors:
                raise ValueError(f"{ddir}/model.safetensors is missing tensor {name}")
            if tuple(tensors[name].shape) != shape:
                raise ValueError(
                    f"{ddir}/model.safetensors: tensor {name} has shape "
                    f"{list(tensors[name].shape)}; expected {list(shape)}"
                )
        p = {"kernel": tensors["linear.weight"].T.astype(np.float32)}
        if "linear.bias" in expect:
            p["bias"] = tensors["linear.bias"].astype(np.float32)
        if residual == "projection":
            p["residual"] = tensors["residual.weight"].T.astype(np.float32)
        dense.append((p, act, residual))
        in_width = dout

    prompts, default_name = {}, None
    include_prompt = bool(pool_cfg.get("include_prompt", True))
    model_cfg_path = directory / "config_sentence_transformers.json"
    if model_cfg_path.is_file():
        model_cfg = _read_json(model_cfg_path, "config_sentence_transformers")
        prompts = model_cfg.get("prompts") or {}
        if not isinstance(prompts, dict) or not all(
            isinstance(k, str) and isinstance(t, str) for k, t in prompts.items()
        ):
            raise ValueError(f"{model_cfg_path}: prompts must map names to strings")
        default_name = model_cfg.get("default_prompt_name") or None
        if default_name is not None and default_name not in prompts:
            raise ValueError(f"{model_cfg_path}: default prompt {default_name!r} not in prompts")
    tok_cfg_path = tdir / "tokenizer_config.json"
    tok_cfg = _read_json(tok_cfg_path, "tokenizer config") if tok_cfg_path.is_file() else {}
    pad_token = tok_cfg.get("pad_token")
    if isinstance(pad_token, dict):  # an AddedToken written out in full
        pad_token = pad_token.get("content")
    if not isinstance(pad_token, str) or tokenizer.token_to_id(pad_token) is None:
        pad_token = None
    special = {}
    for role in SPECIAL_TOKEN_ROLES:
        token = tok_cfg.get(role)
        token = token.get("content") if isinstance(token, dict) else token
        if isinstance(token, str) and tokenizer.token_to_id(token) is not None:
            special[role] = token
    return Embedder(
        encoder,
        tokenizer,
        padding_side=str(tok_cfg.get("padding_side", "right")),
        pad_token=pad_token,
        special_tokens=special,
        pooling=modes,
        dense=dense,
        normalize=kinds[-1] == "Normalize",
        max_seq_length=max_len,
        prompts=prompts,
        default_prompt_name=default_name,
        include_prompt=include_prompt,
        lowercase=bool(st_cfg.get("do_lower_case", False)),
    )
