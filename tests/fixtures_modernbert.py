"""Small ModernBERT checkpoints written in the test, and an independent float64 NumPy forward
pass of ``ModernBertModel`` that runs each sequence alone (unpadded).

Nothing here imports jaxemb: the checkpoints use Hugging Face's tensor names and ``[out, in]``
linear layout, and the forward pass is written from the ModernBERT paper / ``ModernBertModel``
semantics (rotary positions as complex rotations of the pairs ``(x_j, x_{j + d/2})``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from scipy.special import erf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
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
SPECIAL_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]

#: A transformers-5 ``config.json`` (``layer_types`` and ``rope_parameters`` written out):
#: layers 0 and 3 global, 1 and 2 within 3 tokens on each side.
MODERNBERT_CONFIG = {
    "architectures": ["ModernBertModel"],
    "model_type": "modernbert",
    "vocab_size": None,  # filled from the tokenizer
    "hidden_size": 32,
    "intermediate_size": 40,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "hidden_activation": "gelu",
    "max_position_embeddings": 64,
    "norm_eps": 1e-5,
    "norm_bias": False,
    "attention_bias": False,
    "mlp_bias": False,
    "local_attention": 6,
    "global_attn_every_n_layers": 3,
    "layer_types": ["full_attention", "sliding_attention", "sliding_attention", "full_attention"],
    "rope_parameters": {
        "full_attention": {"rope_type": "default", "rope_theta": 160000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    },
    "embedding_dropout": 0.0,
    "attention_dropout": 0.0,
    "mlp_dropout": 0.0,
    "initializer_range": 0.02,
    "initializer_cutoff_factor": 2.0,
    "pad_token_id": None,  # filled from the tokenizer
    "classifier_pooling": "cls",
    "classifier_activation": "gelu",
    "deterministic_flash_attn": False,
    "sparse_prediction": False,
    "tie_word_embeddings": True,
}


def write_bpe_tokenizer(directory: Path, vocab_size: int = 400) -> Tokenizer:
    """A byte-level BPE tokenizer as ModernBERT's: ``[CLS] text [SEP]``, ``[PAD]``, ``[MASK]``;
    ``tokenizer.json`` and a ``tokenizer_config.json`` naming the special tokens."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "model_input_names": ["input_ids", "attention_mask"],
                "cls_token": "[CLS]",
                "sep_token": "[SEP]",
                "pad_token": "[PAD]",
                "mask_token": "[MASK]",
                "unk_token": "[UNK]",
            }
        )
    )
    return Tokenizer.from_file(str(directory / "tokenizer.json"))


def modernbert_tensors(cfg: dict, seed: int, scale: float = 0.2) -> dict[str, np.ndarray]:
    """Random weights with ModernBertModel names and layouts (``Linear.weight`` is [out, in])."""
    rng = np.random.default_rng(seed)
    h, i = cfg["hidden_size"], cfg["intermediate_size"]

    def w(*shape):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    t = {"embeddings.tok_embeddings.weight": w(cfg["vocab_size"], h)}

    def norm(name):
        t[name + ".weight"] = (1 + w(h)).astype(np.float32)
        if cfg.get("norm_bias", False):
            t[name + ".bias"] = w(h)

    def linear(name, din, dout, bias):
        t[name + ".weight"] = w(dout, din)
        if bias:
            t[name + ".bias"] = w(dout)

    norm("embeddings.norm")
    for n in range(cfg["num_hidden_layers"]):
        p = f"layers.{n}."
        if n > 0:
            norm(p + "attn_norm")
        linear(p + "attn.Wqkv", h, 3 * h, cfg.get("attention_bias", False))
        linear(p + "attn.Wo", h, h, cfg.get("attention_bias", False))
        norm(p + "mlp_norm")
        linear(p + "mlp.Wi", h, 2 * i, cfg.get("mlp_bias", False))
        linear(p + "mlp.Wo", i, h, cfg.get("mlp_bias", False))
    norm("final_norm")
    return t


def write_modernbert(
    directory: Path, seed: int = 0, *, prefix: str = "", head: bool = False, **overrides
) -> tuple[dict, dict, Tokenizer]:
    """A ModernBERT model directory: ``config.json``, ``model.safetensors`` (names under
    ``prefix``; with ``head``, a masked-LM head's tensors too), ``tokenizer.json``.

    Returns ``(config, tensors without prefix, tokenizer)``.
    """
    tok = write_bpe_tokenizer(directory)
    cfg = dict(
        MODERNBERT_CONFIG,
        vocab_size=tok.get_vocab_size(),
        pad_token_id=tok.token_to_id("[PAD]"),
    )
    cfg.update(overrides)
    tensors = modernbert_tensors(cfg, seed)
    stored = {prefix + k: v for k, v in tensors.items()}
    if head:
        rng = np.random.default_rng(seed + 1)
        h = cfg["hidden_size"]
        stored["head.dense.weight"] = rng.standard_normal((h, h)).astype(np.float32)
        stored["head.norm.weight"] = np.ones(h, np.float32)
        stored["decoder.bias"] = np.zeros(cfg["vocab_size"], np.float32)
    (directory / "config.json").write_text(json.dumps(cfg))
    save_file(stored, str(directory / "model.safetensors"))
    return cfg, tensors, tok


# ---------------------------------------------------------------------------------------------
# NumPy forward pass
# ---------------------------------------------------------------------------------------------


def _ln(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps) * g
    return y if b is None else y + b


_ACT = {
    "gelu": lambda z: 0.5 * z * (1 + erf(z / math.sqrt(2))),
    "gelu_pytorch_tanh": lambda z: (
        0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))
    ),
    "silu": lambda z: z / (1 + np.exp(-z)),
}


def layer_kinds(cfg: dict) -> list[str]:
    """Each layer's attention kind: ``layer_types``, else global every n-th layer (0 first)."""
    if cfg.get("layer_types"):
        return list(cfg["layer_types"])
    every = cfg.get("global_attn_every_n_layers", 3)
    return [
        "full_attention" if i % every == 0 else "sliding_attention"
        for i in range(cfg["num_hidden_layers"])
    ]


def rope_thetas(cfg: dict) -> dict[str, float]:
    params = cfg.get("rope_parameters") or {}
    return {
        "full_attention": params.get("full_attention", {}).get(
            "rope_theta", cfg.get("global_rope_theta", 160000.0)
        ),
        "sliding_attention": params.get("sliding_attention", {}).get(
            "rope_theta", cfg.get("local_rope_theta", 10000.0)
        ),
    }


def _rotary(x: np.ndarray, theta: float) -> np.ndarray:
    """``x [heads, n, d]`` with pair ``(x_j, x_{j+d/2})`` rotated by ``pos · θ^(-2j/d)``."""
    n, d = x.shape[1], x.shape[2]
    freq = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    z = (x[..., : d // 2] + 1j * x[..., d // 2 :]) * np.exp(1j * np.arange(n)[:, None] * freq)
    return np.concatenate([z.real, z.imag], axis=-1)


def np_modernbert_one(t: dict, cfg: dict, ids: np.ndarray) -> list[np.ndarray]:
    """ModernBertModel on ONE unpadded sequence ``ids [n]`` in float64: the embedding output,
    each layer's output, the last replaced by the final-normed output (``transformers``'
    ``hidden_states``)."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    eps, heads = cfg["norm_eps"], cfg["num_attention_heads"]
    h = cfg["hidden_size"]
    dh = h // heads
    n = len(ids)
    act = _ACT[cfg.get("hidden_activation", "gelu")]
    thetas = rope_thetas(cfg)
    half = cfg["local_attention"] // 2
    near = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) <= half

    def norm(z, name):
        return _ln(z, t[name + ".weight"], t.get(name + ".bias"), eps)

    def lin(z, name):
        y = z @ t[name + ".weight"].T
        return y + t[name + ".bias"] if name + ".bias" in t else y

    x = norm(t["embeddings.tok_embeddings.weight"][ids], "embeddings.norm")
    states = [x]
    for layer, kind in enumerate(layer_kinds(cfg)):
        p = f"layers.{layer}."
        y = x if layer == 0 else norm(x, p + "attn_norm")
        qkv = lin(y, p + "attn.Wqkv").reshape(n, 3, heads, dh).transpose(1, 2, 0, 3)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [heads, n, dh]
        q, k = _rotary(q, thetas[kind]), _rotary(k, thetas[kind])
        s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        if kind == "sliding_attention":
            s = np.where(near[None], s, -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(n, h)
        x = x + lin(ctx, p + "attn.Wo")
        a, g = np.split(lin(norm(x, p + "mlp_norm"), p + "mlp.Wi"), 2, axis=-1)
        x = x + lin(act(a) * g, p + "mlp.Wo")
        states.append(x)
    states[-1] = norm(x, "final_norm")
    return states


def np_modernbert(t: dict, cfg: dict, ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """:func:`np_modernbert_one` of each row's real tokens (a contiguous run, padded on either
    side), scattered back into ``[B, T, H]`` arrays with zeros at padded positions."""
    b, length = ids.shape
    states = None
    for r in range(b):
        cols = np.flatnonzero(mask[r])
        one = np_modernbert_one(t, cfg, ids[r, cols])
        if states is None:
            states = [np.zeros((b, length, cfg["hidden_size"])) for _ in one]
        for s, o in zip(states, one):
            s[r, cols] = o
    return states


def tokenize(tok: Tokenizer, texts, max_len: int, pad_id: int, side: str = "right"):
    """Padded ids and mask as a Hugging Face fast tokenizer pads (``pad_id``, ``side``)."""
    t = Tokenizer.from_str(tok.to_str())
    t.enable_truncation(max_len)
    enc = t.encode_batch(list(texts))
    n = max(len(e.ids) for e in enc)
    ids = np.full((len(enc), n), pad_id, np.int64)
    mask = np.zeros((len(enc), n), np.int64)
    for r, e in enumerate(enc):
        cols = slice(0, len(e.ids)) if side == "right" else slice(n - len(e.ids), n)
        ids[r, cols] = e.ids
        mask[r, cols] = 1
    return ids, mask


def write_modernbert_sentence_transformer(
    directory: Path, *, pooling: str = "mean", normalize: bool = True, max_seq_length: int = 32
):
    """A sentence-transformers v6 directory (Transformer at the root) over a ModernBERT:
    Pooling ``pooling`` and, with ``normalize``, Normalize (gte-modernbert's pipeline with mean
    pooling). Returns ``(config, tensors, tokenizer)``."""
    cfg, tensors, tok = write_modernbert(directory, seed=3)
    (directory / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False})
    )
    modules = [
        {
            "idx": 0,
            "name": "0",
            "path": "",
            "type": "sentence_transformers.base.modules.transformer.Transformer",
        },
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
        },
    ]
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "embedding_dimension": cfg["hidden_size"],
                "pooling_mode": pooling,
                "include_prompt": True,
            }
        )
    )
    if normalize:
        (directory / "2_Normalize").mkdir()
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.base.modules.normalize.Normalize",
            }
        )
    (directory / "modules.json").write_text(json.dumps(modules))
    return cfg, tensors, tok
