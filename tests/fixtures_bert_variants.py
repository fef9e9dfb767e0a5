"""Small RoBERTa / XLM-RoBERTa / DistilBERT / MPNet checkpoints written in the test, their
tokenizers, sentence-transformers directories, and an independent float64 NumPy forward pass of
``RobertaModel`` / ``XLMRobertaModel``, ``DistilBertModel`` and ``MPNetModel``.

Nothing here imports jaxemb: the checkpoints use Hugging Face's tensor names and ``[out, in]``
linear layout, ``config.json`` is written as ``transformers`` 5.25 writes it, and the forward
pass follows the ``transformers`` modules: RoBERTa / MPNet positions count the non-padding tokens
of each row after the padding index (1 in MPNet whatever ``pad_token_id`` says), DistilBERT's
are ``0 .. T-1``; MPNet adds ``relative_attention_bias[bucket(i - j), head]`` to every layer's
scores, with the T5 buckets (32 buckets, ``max_distance`` 128) computed here in integer
arithmetic.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from encoder_fixtures import write_tokenizer
from safetensors.numpy import save_file
from scipy.special import erf
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

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
#: What the sentence-transformers tests embed: short, long (truncated), accented, one word.
TEXTS = SENTENCES[:5] + [
    "fox",
    "a very long sentence about the quick brown fox that jumps over the lazy dog again and "
    "again while retrieval models rank documents by similarity to the query",
    "Völlig unbekannte Wörter: naïve café",
]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4: <pad> is 1

_COMMON = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 48,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-5,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
    "dtype": "float32",
    "transformers_version": "5.25.0",
}
CONFIGS = {
    "roberta": {
        "architectures": ["RobertaModel"],
        "model_type": "roberta",
        **_COMMON,
        "max_position_embeddings": 26,  # 24 usable positions
        "type_vocab_size": 1,
        "is_decoder": False,
        "add_cross_attention": False,
        "classifier_dropout": None,
        "use_cache": True,
        "tie_word_embeddings": True,
    },
    "xlm-roberta": {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        **_COMMON,
        "max_position_embeddings": 26,
        "type_vocab_size": 1,
        "is_decoder": False,
        "add_cross_attention": False,
        "classifier_dropout": None,
        "use_cache": True,
        "tie_word_embeddings": True,
    },
    "distilbert": {
        "architectures": ["DistilBertModel"],
        "model_type": "distilbert",
        "activation": "gelu",
        "attention_dropout": 0.1,
        "dim": 32,
        "dropout": 0.1,
        "hidden_dim": 48,
        "initializer_range": 0.02,
        "max_position_embeddings": 24,
        "n_heads": 4,
        "n_layers": 2,
        "pad_token_id": 0,
        "qa_dropout": 0.1,
        "seq_classif_dropout": 0.2,
        "sinusoidal_pos_embds": False,
        "tie_word_embeddings": True,
        "bos_token_id": None,
        "eos_token_id": None,
        "dtype": "float32",
        "transformers_version": "5.25.0",
    },
    "mpnet": {
        "architectures": ["MPNetModel"],
        "model_type": "mpnet",
        **_COMMON,
        "max_position_embeddings": 26,
        "relative_attention_num_buckets": 32,
        "tie_word_embeddings": True,
    },
}
#: Layer tensor names under ``encoder.layer.{i}.`` / ``transformer.layer.{i}.`` per family:
#: (query, key, value, attention output, attention norm, MLP in, MLP out, output norm).
LAYER_NAMES = {
    "bert": (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "attention.output.LayerNorm",
        "intermediate.dense",
        "output.dense",
        "output.LayerNorm",
    ),
    "distilbert": (
        "attention.q_lin",
        "attention.k_lin",
        "attention.v_lin",
        "attention.out_lin",
        "sa_layer_norm",
        "ffn.lin1",
        "ffn.lin2",
        "output_layer_norm",
    ),
    "mpnet": (
        "attention.attn.q",
        "attention.attn.k",
        "attention.attn.v",
        "attention.attn.o",
        "attention.LayerNorm",
        "intermediate.dense",
        "output.dense",
        "output.LayerNorm",
    ),
}


def family_of(cfg: dict) -> str:
    return {"roberta": "bert", "xlm-roberta": "bert"}.get(cfg["model_type"], cfg["model_type"])


def dims(cfg: dict) -> tuple[int, int, int, int]:
    """``(hidden, layers, heads, intermediate)`` of either key style."""
    if cfg["model_type"] == "distilbert":
        return cfg["dim"], cfg["n_layers"], cfg["n_heads"], cfg["hidden_dim"]
    return (
        cfg["hidden_size"],
        cfg["num_hidden_layers"],
        cfg["num_attention_heads"],
        cfg["intermediate_size"],
    )


def make_tensors(cfg: dict, seed: int, scale: float = 0.2) -> dict[str, np.ndarray]:
    """Random weights with the family's tensor names (pooler included where the model has
    one; loaders must ignore it)."""
    rng = np.random.default_rng(seed)
    h, layers, _, i = dims(cfg)

    def w(*shape, s=scale):
        return (s * rng.standard_normal(shape)).astype(np.float32)

    def norm(name):
        t[name + ".weight"] = (1 + w(h)).astype(np.float32)
        t[name + ".bias"] = w(h)

    t = {
        "embeddings.word_embeddings.weight": w(cfg["vocab_size"], h, s=0.5),
        "embeddings.position_embeddings.weight": w(cfg["max_position_embeddings"], h, s=0.5),
    }
    norm("embeddings.LayerNorm")
    kind = family_of(cfg)
    if kind == "bert":
        t["embeddings.token_type_embeddings.weight"] = w(cfg["type_vocab_size"], h, s=0.5)
    if kind != "distilbert":
        t["pooler.dense.weight"], t["pooler.dense.bias"] = w(h, h), w(h)
    if kind == "mpnet":
        heads = cfg["num_attention_heads"]
        t["encoder.relative_attention_bias.weight"] = w(
            cfg["relative_attention_num_buckets"], heads, s=1.0
        )
    prefix = "transformer.layer." if kind == "distilbert" else "encoder.layer."
    q, k, v, o, attn_norm, mlp_in, mlp_out, out_norm = LAYER_NAMES[kind]
    for n in range(layers):
        p = f"{prefix}{n}."
        for name in (q, k, v, o):
            t[p + name + ".weight"], t[p + name + ".bias"] = w(h, h), w(h)
        t[p + mlp_in + ".weight"], t[p + mlp_in + ".bias"] = w(i, h), w(i)
        t[p + mlp_out + ".weight"], t[p + mlp_out + ".bias"] = w(h, i), w(h)
        norm(p + attn_norm)
        norm(p + out_norm)
    return t


def write_model(
    directory: Path, model_type: str, seed: int = 0, *, vocab_size: int = 120, **overrides
) -> tuple[dict, dict[str, np.ndarray]]:
    """``config.json`` and ``model.safetensors`` of a tiny random model of ``model_type``."""
    cfg = dict(CONFIGS[model_type], vocab_size=vocab_size, **overrides)
    tensors = make_tensors(cfg, seed)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg))
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return cfg, tensors


# ---------------------------------------------------------------------------------------------
# Tokenizers as the published models ship them
# ---------------------------------------------------------------------------------------------


def _tokenizer_config(directory: Path, special: dict, max_length: int, cls: str) -> None:
    config = {"tokenizer_class": cls, "model_max_length": max_length, **special}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


def write_bpe_tokenizer(directory: Path, max_length: int = 512) -> Tokenizer:
    """A RoBERTa byte-level BPE tokenizer (``<s> text </s>``, ``<pad>`` = 1)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        SENTENCES,
        trainers.BpeTrainer(
            vocab_size=200,
            special_tokens=ROBERTA_SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    special |= {"sep_token": "</s>", "cls_token": "<s>", "pad_token": "<pad>"}
    _tokenizer_config(directory, special, max_length, "RobertaTokenizerFast")
    return Tokenizer.from_file(str(directory / "tokenizer.json"))


def write_unigram_tokenizer(directory: Path, max_length: int = 512) -> Tokenizer:
    """An XLM-R style SentencePiece (Unigram, ``▁`` metaspace) tokenizer: ``<s>`` 0, ``<pad>``
    1, ``</s>`` 2, ``<unk>`` 3, as multilingual-e5 / bge-m3 ship it."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" {2,}", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(
        SENTENCES,
        trainers.UnigramTrainer(
            vocab_size=110, special_tokens=ROBERTA_SPECIALS, unk_token="<unk>", show_progress=False
        ),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    special |= {"sep_token": "</s>", "cls_token": "<s>", "pad_token": "<pad>"}
    _tokenizer_config(directory, special, max_length, "XLMRobertaTokenizerFast")
    return Tokenizer.from_file(str(directory / "tokenizer.json"))


def write_mpnet_tokenizer(directory: Path, max_length: int = 512) -> Tokenizer:
    """An MPNet WordPiece tokenizer (lower-casing, ``<s> text </s>``, ``<pad>`` = 1), as
    all-mpnet-base-v2 ships it."""
    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(
        SENTENCES,
        trainers.WordPieceTrainer(
            vocab_size=110, special_tokens=ROBERTA_SPECIALS, show_progress=False
        ),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    special |= {"sep_token": "</s>", "cls_token": "<s>", "pad_token": "<pad>"}
    _tokenizer_config(directory, special, max_length, "MPNetTokenizerFast")
    return Tokenizer.from_file(str(directory / "tokenizer.json"))


def write_distilbert_tokenizer(directory: Path, max_length: int = 512) -> Tokenizer:
    """A BERT WordPiece tokenizer (``[CLS] text [SEP]``, ``[PAD]`` = 0)."""
    tok = write_tokenizer(directory, vocab_size=110)
    special = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]"}
    special |= {"cls_token": "[CLS]", "mask_token": "[MASK]"}
    _tokenizer_config(directory, special, max_length, "DistilBertTokenizerFast")
    return tok


TOKENIZERS = {
    "roberta": write_bpe_tokenizer,
    "xlm-roberta": write_unigram_tokenizer,
    "distilbert": write_distilbert_tokenizer,
    "mpnet": write_mpnet_tokenizer,
}


# ---------------------------------------------------------------------------------------------
# The forward pass
# ---------------------------------------------------------------------------------------------


def _ln(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


ACTS = {
    "gelu": lambda z: 0.5 * z * (1 + erf(z / math.sqrt(2))),
    "relu": lambda z: np.maximum(z, 0.0),
    "gelu_new": lambda z: 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3))),
}


def position_ids(ids: np.ndarray, padding_idx: int) -> np.ndarray:
    """fairseq ``make_positions``, one token at a time: the k-th non-padding token of a row gets
    ``padding_idx + k``, a padding token ``padding_idx``."""
    out = np.full(ids.shape, padding_idx, np.int64)
    for r in range(ids.shape[0]):
        count = 0
        for c in range(ids.shape[1]):
            if ids[r, c] != padding_idx:
                count += 1
                out[r, c] = padding_idx + count
    return out


def t5_bucket(query: int, key: int) -> int:
    """MPNet's bucket of a (query, key) pair: 32 buckets, the upper 16 for keys after the
    query; distances below 8 exact, then ``8 + floor(2 log2(d / 8))`` (= ``8 + floor(8
    log(d/8) / log(16))``, in integers), at most 15."""
    n = query - key
    base = 16 if n < 0 else 0
    d = abs(n)
    if d < 8:
        return base + d
    return base + min(15, 8 + (d * d).bit_length() - 1 - 6)


def np_attention(x, t, p, names, heads, mask, bias=None):
    """Multi-head attention ``[B, T, H]`` with an optional additive ``bias [B|1, A, T, T]``."""
    b, n, h = x.shape
    dh = h // heads

    def lin(z, name):
        return z @ t[p + name + ".weight"].T + t[p + name + ".bias"]

    q, k, v = (lin(x, name).reshape(b, n, heads, dh).transpose(0, 2, 1, 3) for name in names[:3])
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh)
    if bias is not None:
        s = s + bias
    s = s + np.where(mask[:, None, None, :] > 0, 0.0, -1e30)
    s = np.exp(s - s.max(-1, keepdims=True))
    s = s / s.sum(-1, keepdims=True)
    return lin((s @ v).transpose(0, 2, 1, 3).reshape(b, n, h), names[3])


def np_forward(t: dict, cfg: dict, ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """The model's forward in float64; returns the hidden states (embeddings, then each
    layer's output)."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    kind = family_of(cfg)
    _, layers, heads, _ = dims(cfg)
    b, n = ids.shape
    if kind == "distilbert":
        eps, act, pos = 1e-12, ACTS[cfg["activation"]], np.arange(n)[None]
    else:
        eps, act = cfg["layer_norm_eps"], ACTS[cfg["hidden_act"]]
        pos = position_ids(ids, 1 if kind == "mpnet" else cfg["pad_token_id"])
    x = (
        t["embeddings.word_embeddings.weight"][ids]
        + t["embeddings.position_embeddings.weight"][pos]
    )
    if kind == "bert":
        x = x + t["embeddings.token_type_embeddings.weight"][0]
    x = _ln(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)
    bias = None
    if kind == "mpnet":
        table = t["encoder.relative_attention_bias.weight"]
        buckets = np.array([[t5_bucket(i, j) for j in range(n)] for i in range(n)])
        bias = table[buckets].transpose(2, 0, 1)[None]  # [1, A, T, T]
    prefix = "transformer.layer." if kind == "distilbert" else "encoder.layer."
    names = LAYER_NAMES[kind]
    states = [x]
    for layer in range(layers):
        p = f"{prefix}{layer}."
        a = np_attention(x, t, p, names, heads, mask, bias)
        x = _ln(x + a, t[p + names[4] + ".weight"], t[p + names[4] + ".bias"], eps)
        m = act(x @ t[p + names[5] + ".weight"].T + t[p + names[5] + ".bias"])
        m = m @ t[p + names[6] + ".weight"].T + t[p + names[6] + ".bias"]
        x = _ln(x + m, t[p + names[7] + ".weight"], t[p + names[7] + ".bias"], eps)
        states.append(x)
    return states


def padded_batch(rng, vocab: int, pad: int, lengths, width: int, *, left=False, low=3):
    """Random ids ``[B, width]`` (from ``low``) padded with ``pad`` on one side, and the mask."""
    ids = np.full((len(lengths), width), pad, np.int64)
    mask = np.zeros((len(lengths), width), np.int64)
    for r, n in enumerate(lengths):
        cols = slice(width - n, width) if left else slice(0, n)
        ids[r, cols] = rng.integers(low, vocab, n)
        mask[r, cols] = 1
    return ids, mask


# ---------------------------------------------------------------------------------------------
# sentence-transformers
# ---------------------------------------------------------------------------------------------


def write_sentence_transformer(
    directory: Path, model_type: str, *, max_seq_length: int = 16, seed: int = 0
):
    """A sentence-transformers directory (v6 layout, as ``SentenceTransformer.save`` writes it):
    the model and its tokenizer at the root, mean pooling, Normalize.

    Returns ``(config, tensors, tokenizer, pad_id)``.
    """
    tok = TOKENIZERS[model_type](directory, max_length=max_seq_length)
    cfg, tensors = write_model(directory, model_type, seed, vocab_size=tok.get_vocab_size())
    types = {
        "Transformer": "sentence_transformers.base.modules.transformer.Transformer",
        "Pooling": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
        "Normalize": "sentence_transformers.base.modules.normalize.Normalize",
    }
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": types["Transformer"]},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": types["Pooling"]},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": types["Normalize"]},
    ]
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "1_Pooling").mkdir()
    h = dims(cfg)[0]
    pool = {"embedding_dimension": h, "pooling_mode": "mean", "include_prompt": True}
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pool))
    (directory / "2_Normalize").mkdir()
    (directory / "sentence_bert_config.json").write_text(
        json.dumps({"transformer_task": "feature-extraction"})
    )
    pad = tok.token_to_id("[PAD]" if model_type == "distilbert" else "<pad>")
    return cfg, tensors, tok, pad


def np_sentence_embeddings(cfg, tensors, tok, pad, texts, max_seq_length):
    """``SentenceTransformer.encode`` of the mean-pooling, Normalize pipeline in float64."""
    t = Tokenizer.from_str(tok.to_str())
    t.enable_truncation(max_seq_length)
    enc = t.encode_batch(list(texts))
    width = max(len(e.ids) for e in enc)
    ids = np.full((len(enc), width), pad, np.int64)
    mask = np.zeros((len(enc), width), np.int64)
    for r, e in enumerate(enc):
        ids[r, : len(e.ids)], mask[r, : len(e.ids)] = e.ids, 1
    h = np_forward(tensors, cfg, ids, mask)[-1]
    m = mask[..., None].astype(np.float64)
    x = (h * m).sum(1) / m.sum(1)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
