"""Small BERT / sentence-transformers checkpoints written in the test, and an independent
float64 NumPy forward pass of BertModel and of sentence-transformers pooling / Dense / Normalize.

Nothing here imports jaxemb: the checkpoints use Hugging Face's tensor names and ``[out, in]``
linear layout, and the forward pass is written from the BERT paper / ``BertModel`` semantics.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from scipy.special import erf
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer
from tokenizers.processors import TemplateProcessing

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a sparse autoencoder decomposes dense embeddings into features",
    "contrastive learning pulls positives together and pushes negatives apart",
    "jax compiles pure functions for accelerators",
    "sentence embeddings power semantic search and clustering",
    "the dog sleeps while the fox runs through the forest",
    "retrieval models rank documents by similarity to the query",
    "tokenizers split text into word pieces",
]

BERT_CONFIG = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "vocab_size": None,  # filled from the tokenizer
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 48,
    "max_position_embeddings": 40,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "initializer_range": 0.02,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
}


def write_tokenizer(directory: Path, corpus=None, vocab_size: int = 120) -> Tokenizer:
    """A WordPiece tokenizer trained on ``corpus`` (default SENTENCES) as ``tokenizer.json``."""
    wp = BertWordPieceTokenizer(lowercase=True)
    corpus = SENTENCES if corpus is None else list(corpus)
    # The trainer breaks ties between equally frequent merges by the hash-map order of its
    # "##x" tokens, so two runs can learn different vocabularies (and a test's tiny model then
    # differs from run to run); registering every "##x" first, sorted, makes it deterministic,
    # as jaxemb.data's train_wordpiece does.
    continuing = set()
    for text in corpus:
        for word, _ in wp.pre_tokenizer.pre_tokenize_str(wp.normalizer.normalize_str(text)):
            continuing.update(word[1:])
    wp.train_from_iterator(
        corpus,
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        + [f"##{c}" for c in sorted(continuing)],
    )
    # What a Hugging Face BERT tokenizer.json carries: [CLS] text [SEP].
    cls, sep = wp.token_to_id("[CLS]"), wp.token_to_id("[SEP]")
    wp.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    directory.mkdir(parents=True, exist_ok=True)
    wp.save(str(directory / "tokenizer.json"))
    return Tokenizer.from_file(str(directory / "tokenizer.json"))


def bert_tensors(cfg: dict, seed: int, scale: float = 0.2) -> dict[str, np.ndarray]:
    """Random weights with BertModel names and layouts (``Linear.weight`` is [out, in])."""
    rng = np.random.default_rng(seed)
    h, i = cfg["hidden_size"], cfg["intermediate_size"]

    def w(*shape):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    t = {
        "embeddings.word_embeddings.weight": w(cfg["vocab_size"], h),
        "embeddings.position_embeddings.weight": w(cfg["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": w(cfg["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": (1 + w(h)).astype(np.float32),
        "embeddings.LayerNorm.bias": w(h),
        "pooler.dense.weight": w(h, h),
        "pooler.dense.bias": w(h),
    }
    for n in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        for name in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ):
            t[p + name + ".weight"], t[p + name + ".bias"] = w(h, h), w(h)
        t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"] = w(i, h), w(i)
        t[p + "output.dense.weight"], t[p + "output.dense.bias"] = w(h, i), w(h)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + name + ".weight"] = (1 + w(h)).astype(np.float32)
            t[p + name + ".bias"] = w(h)
    return t


def write_bert(
    directory: Path, seed: int = 0, *, corpus=None, vocab_size: int = 120, **overrides
) -> tuple[dict, dict, Tokenizer]:
    """A BERT model directory: ``config.json``, ``model.safetensors``, ``tokenizer.json`` (a
    WordPiece vocabulary of ``vocab_size`` learnt from ``corpus``, default SENTENCES)."""
    tok = write_tokenizer(directory, corpus, vocab_size)
    cfg = dict(BERT_CONFIG, vocab_size=tok.get_vocab_size(), **overrides)
    tensors = bert_tensors(cfg, seed)
    (directory / "config.json").write_text(json.dumps(cfg))
    save_file(tensors, str(directory / "model.safetensors"))
    return cfg, tensors, tok


def _ln(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def np_bert(t: dict, cfg: dict, ids: np.ndarray, mask: np.ndarray, types=None) -> list[np.ndarray]:
    """BertModel forward in float64; returns all hidden states (embeddings, then each layer)."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    b, n = ids.shape
    types = np.zeros_like(ids) if types is None else types
    eps, heads = cfg["layer_norm_eps"], cfg["num_attention_heads"]
    dh = cfg["hidden_size"] // heads
    x = (
        t["embeddings.word_embeddings.weight"][ids]
        + t["embeddings.position_embeddings.weight"][np.arange(n)][None]
        + t["embeddings.token_type_embeddings.weight"][types]
    )
    x = _ln(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)
    states = [x]
    neg = np.where(mask[:, None, None, :] > 0, 0.0, -1e30)
    for layer in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."

        def lin(z, name, p=p):
            return z @ t[p + name + ".weight"].T + t[p + name + ".bias"]

        q, k, v = (
            lin(x, f"attention.self.{m}").reshape(b, n, heads, dh).transpose(0, 2, 1, 3)
            for m in ("query", "key", "value")
        )
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh) + neg
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(0, 2, 1, 3).reshape(b, n, heads * dh)
        x = _ln(
            x + lin(ctx, "attention.output.dense"),
            t[p + "attention.output.LayerNorm.weight"],
            t[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        hmid = lin(x, "intermediate.dense")
        hmid = 0.5 * hmid * (1 + erf(hmid / math.sqrt(2)))
        x = _ln(
            x + lin(hmid, "output.dense"),
            t[p + "output.LayerNorm.weight"],
            t[p + "output.LayerNorm.bias"],
            eps,
        )
        states.append(x)
    return states


def np_st_pool(h: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """sentence-transformers Pooling for right-padded batches, one mode (their names)."""
    m = mask.astype(np.float64)[..., None]
    if mode == "cls":
        return h[:, 0]
    if mode == "max":
        return np.where(m > 0, h, -np.inf).max(1)
    if mode == "mean":
        return (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    if mode == "mean_sqrt_len_tokens":
        return (h * m).sum(1) / np.sqrt(np.maximum(m.sum(1), 1e-9))
    if mode == "weightedmean":
        w = np.arange(1, h.shape[1] + 1, dtype=np.float64)[None, :, None] * m
        return (h * w).sum(1) / np.maximum(w.sum(1), 1e-9)
    if mode == "lasttoken":
        last = mask.sum(1).astype(int) - 1
        return h[np.arange(h.shape[0]), last]
    raise ValueError(mode)


def tokenize(tok: Tokenizer, texts, max_len: int):
    """Right-padded ids and mask the way a Hugging Face fast tokenizer pads (pad id 0)."""
    t = Tokenizer.from_str(tok.to_str())
    t.enable_truncation(max_len)
    enc = t.encode_batch(list(texts))
    n = max(len(e.ids) for e in enc)
    ids = np.zeros((len(enc), n), np.int64)
    mask = np.zeros((len(enc), n), np.int64)
    for r, e in enumerate(enc):
        ids[r, : len(e.ids)] = e.ids
        mask[r, : len(e.ids)] = 1
    return ids, mask


def write_sentence_transformer(
    directory: Path,
    *,
    layout: str = "legacy",
    modes=("mean",),
    dense: list[tuple[int, str]] | None = None,
    normalize: bool = True,
    max_seq_length: int = 24,
    seed: int = 0,
    corpus=None,
    vocab_size: int = 120,
    **bert_overrides,
):
    """A sentence-transformers directory in the ``legacy`` (v2-v5) or ``v6`` layout.

    ``corpus`` / ``vocab_size`` / ``bert_overrides`` go to :func:`write_bert`.

    Returns ``(bert_cfg, bert_tensors, tokenizer, dense_tensors)`` where ``dense_tensors`` is a
    list of ``(weight [out, in], bias, activation_name)``.
    """
    rng = np.random.default_rng(seed + 100)
    directory.mkdir(parents=True, exist_ok=True)
    if layout == "legacy":
        tdir, prefix = directory / "0_Transformer", "sentence_transformers.models."
        types = {k: prefix + k for k in ("Transformer", "Pooling", "Dense", "Normalize")}
        tpath = "0_Transformer"
    else:
        tdir = directory
        types = {
            "Transformer": "sentence_transformers.base.modules.transformer.Transformer",
            "Pooling": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
            "Dense": "sentence_transformers.base.modules.dense.Dense",
            "Normalize": "sentence_transformers.base.modules.normalize.Normalize",
        }
        tpath = ""
    cfg, tensors, tok = write_bert(
        tdir, seed=seed, corpus=corpus, vocab_size=vocab_size, **bert_overrides
    )
    h = cfg["hidden_size"]
    if layout == "legacy":
        (tdir / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False})
        )
    else:
        (tdir / "sentence_bert_config.json").write_text(
            json.dumps(
                {
                    "transformer_task": "feature-extraction",
                    "modality_config": {
                        "text": {"method": "forward", "method_output_name": "last_hidden_state"}
                    },
                    "module_output_name": "token_embeddings",
                }
            )
        )
        (tdir / "tokenizer_config.json").write_text(
            json.dumps({"model_max_length": max_seq_length})
        )
    modules = [{"idx": 0, "name": "0", "path": tpath, "type": types["Transformer"]}]
    pdir = directory / "1_Pooling"
    pdir.mkdir()
    if layout == "legacy":
        flags = {
            "pooling_mode_cls_token": "cls",
            "pooling_mode_mean_tokens": "mean",
            "pooling_mode_max_tokens": "max",
            "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
            "pooling_mode_weightedmean_tokens": "weightedmean",
            "pooling_mode_lasttoken": "lasttoken",
        }
        pcfg = {"word_embedding_dimension": h, **{k: m in modes for k, m in flags.items()}}
    else:
        pcfg = {
            "embedding_dimension": h,
            "pooling_mode": modes[0] if len(modes) == 1 else list(modes),
            "include_prompt": True,
        }
    (pdir / "config.json").write_text(json.dumps(pcfg))
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": types["Pooling"]})
    dense_tensors = []
    width = h * len(modes)
    for out, act in dense or []:
        idx = len(modules)
        ddir = directory / f"{idx}_Dense"
        ddir.mkdir()
        wgt = (rng.standard_normal((out, width)) / math.sqrt(width)).astype(np.float32)
        bias = (0.1 * rng.standard_normal(out)).astype(np.float32)
        (ddir / "config.json").write_text(
            json.dumps(
                {
                    "in_features": width,
                    "out_features": out,
                    "bias": True,
                    "activation_function": f"torch.nn.modules.activation.{act}",
                }
            )
        )
        save_file({"linear.weight": wgt, "linear.bias": bias}, str(ddir / "model.safetensors"))
        modules.append(
            {"idx": idx, "name": str(idx), "path": f"{idx}_Dense", "type": types["Dense"]}
        )
        dense_tensors.append((wgt, bias, act))
        width = out
    if normalize:
        idx = len(modules)
        (directory / f"{idx}_Normalize").mkdir()
        modules.append(
            {"idx": idx, "name": str(idx), "path": f"{idx}_Normalize", "type": types["Normalize"]}
        )
    (directory / "modules.json").write_text(json.dumps(modules))
    return cfg, tensors, tok, dense_tensors


def np_sentence_embeddings(
    cfg, tensors, tok, dense_tensors, texts, *, modes, normalize, max_seq_length
):
    """What SentenceTransformer.encode computes, in float64 NumPy."""
    ids, mask = tokenize(tok, texts, max_seq_length)
    h = np_bert(tensors, cfg, ids, mask)[-1]
    x = np.concatenate([np_st_pool(h, mask, m) for m in modes], axis=-1)
    acts = {"Tanh": np.tanh, "Identity": lambda z: z, "ReLU": lambda z: np.maximum(z, 0)}
    for wgt, bias, act in dense_tensors:
        x = acts[act](x @ wgt.T.astype(np.float64) + bias)
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return x
