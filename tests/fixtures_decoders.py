"""Small Qwen3 / Gemma3 checkpoints and sentence-transformers directories written in the test,
and an independent float64 NumPy forward pass of ``Qwen3Model`` / ``Gemma3TextModel``.

Nothing here imports jaxemb: the checkpoints use Hugging Face's tensor names and ``[out, in]``
linear layout, ``config.json`` is written the way ``transformers`` 5 (or an older version) writes
it, and the forward pass reads that ``config.json`` the way ``transformers`` does (RoPE parameters
per layer type, the sliding window of bidirectional Gemma3 halved, positions ``0 .. T-1`` for
every row whatever the padding).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tokenizers import (
    Regex,
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
]
QWEN_PROMPTS = {
    "query": "Instruct: Given a web search query, retrieve relevant passages\nQuery:",
    "document": "",
}
GEMMA_PROMPTS = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
}

QWEN3_CONFIG = {  # as transformers 5.25 writes it
    "architectures": ["Qwen3Model"],
    "model_type": "qwen3",
    "vocab_size": 97,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,  # not hidden_size / heads
    "hidden_act": "silu",
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
    "use_sliding_window": False,
    "sliding_window": None,
    "max_window_layers": 28,
    "layer_types": ["full_attention"] * 3,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "bos_token_id": None,
    "eos_token_id": None,
    "initializer_range": 0.02,
    "dtype": "float32",
    "transformers_version": "5.25.0",
}

GEMMA3_CONFIG = {  # as transformers 5.25 writes an EmbeddingGemma-like model
    "architectures": ["Gemma3TextModel"],
    "model_type": "gemma3_text",
    "vocab_size": 97,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "query_pre_attn_scalar": 12,
    "rope_parameters": {
        "full_attention": {"rope_theta": 1000000.0, "rope_type": "default"},
        "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"},
    },
    "sliding_window": 7,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
    "use_bidirectional_attention": True,
    "attn_logit_softcapping": None,
    "final_logit_softcapping": None,
    "tie_word_embeddings": True,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 2,
    "initializer_range": 0.02,
    "dtype": "float32",
    "transformers_version": "5.25.0",
}


def _gemma(cfg: dict) -> bool:
    return cfg["model_type"] == "gemma3_text"


def decoder_tensors(cfg: dict, seed: int) -> dict[str, np.ndarray]:
    """Random weights with the ``Qwen3Model`` / ``Gemma3TextModel`` names and layouts."""
    rng = np.random.default_rng(seed)
    gemma = _gemma(cfg)
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg["head_dim"]

    def w(*shape, scale=0.2):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    def norm(n):  # Gemma scales by 1 + w (w around 0), Qwen by w (around 1)
        return ((0.0 if gemma else 1.0) + w(n, scale=0.3)).astype(np.float32)

    t = {
        "embed_tokens.weight": w(cfg["vocab_size"], h, scale=0.3 if gemma else 1.0),
        "norm.weight": norm(h),
    }
    names = ["input_layernorm", "post_attention_layernorm"]
    if gemma:
        names += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
    for n in range(cfg["num_hidden_layers"]):
        p = f"layers.{n}."
        shapes = {
            "self_attn.q_proj": (heads * d, h),
            "self_attn.k_proj": (kv * d, h),
            "self_attn.v_proj": (kv * d, h),
            "self_attn.o_proj": (h, heads * d),
            "mlp.gate_proj": (i, h),
            "mlp.up_proj": (i, h),
            "mlp.down_proj": (h, i),
        }
        for name, shape in shapes.items():
            t[p + name + ".weight"] = w(*shape)
            if cfg.get("attention_bias") and name.startswith("self_attn"):
                t[p + name + ".bias"] = w(shape[0], scale=0.1)
        t[p + "self_attn.q_norm.weight"] = norm(d)
        t[p + "self_attn.k_norm.weight"] = norm(d)
        for name in names:
            t[p + name + ".weight"] = norm(h)
    return t


def write_decoder(
    directory: Path, base: dict, seed: int = 0, *, prefix: str = "", lm_head: bool = False, **cfg
) -> tuple[dict, dict]:
    """``config.json`` (``base`` updated by ``cfg``; keys set to ``None`` are removed) and
    ``model.safetensors`` (names under ``prefix``, e.g. ``model.`` of a ``*ForCausalLM``, plus an
    ``lm_head.weight`` if asked). Returns ``(config, tensors)`` without the prefix."""
    config = {k: val for k, val in {**base, **cfg}.items() if not (k in cfg and val is None)}
    tensors = decoder_tensors(config, seed)
    stored = {prefix + k: val for k, val in tensors.items()}
    if lm_head:
        stored["lm_head.weight"] = np.ones(
            (config["vocab_size"], config["hidden_size"]), np.float32
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    save_file(stored, str(directory / "model.safetensors"))
    return config, tensors


# ---------------------------------------------------------------------------------------------
# NumPy forward pass, reading config.json as transformers does
# ---------------------------------------------------------------------------------------------


def layer_types(cfg: dict) -> list[str]:
    if cfg.get("layer_types"):
        return list(cfg["layer_types"])
    n = cfg["num_hidden_layers"]
    if _gemma(cfg):
        pattern = cfg.get("sliding_window_pattern", 6)
        return ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n)]
    window = cfg.get("sliding_window") if cfg.get("use_sliding_window") else None
    first = cfg.get("max_window_layers", 28)
    return [
        "sliding_attention" if window is not None and i >= first else "full_attention"
        for i in range(n)
    ]


def rope_setting(cfg: dict, layer_type: str) -> tuple[float, float]:
    """``(θ, linear factor)`` of a layer type."""
    if _gemma(cfg):
        params = dict((cfg.get("rope_parameters") or {}).get(layer_type) or {})
        if layer_type == "full_attention":
            params.update(cfg.get("rope_scaling") or {})
            theta = params.get("rope_theta", cfg.get("rope_theta", 1e6))
        else:
            theta = params.get("rope_theta", cfg.get("rope_local_base_freq", 1e4))
    else:
        params = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
        theta = params.get("rope_theta", cfg.get("rope_theta", 1e4))
    kind = params.get("rope_type", params.get("type", "default"))
    return float(theta), float(params["factor"]) if kind == "linear" else 1.0


def visible(cfg: dict, layer_type: str, length: int) -> np.ndarray:
    """``[T, T]`` bool: which key positions each query position sees (before padding)."""
    q = np.arange(length)[:, None]
    k = np.arange(length)[None, :]
    bidirectional = _gemma(cfg) and bool(cfg.get("use_bidirectional_attention"))
    out = np.ones((length, length), bool) if bidirectional else k <= q
    if layer_type == "sliding_attention":
        window = cfg["sliding_window"]
        if bidirectional:  # transformers: |q - k| < sliding_window // 2 + 1
            out = out & (np.abs(q - k) <= window // 2)
        else:
            out = out & (q - k < window)
    return out


def _rms(x, w, eps, gemma):
    x = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    return x * ((1.0 + w) if gemma else w)


def _rope(x, theta, factor):
    """``x [B, T, heads, d]`` rotated at positions 0 .. T-1 (rotate-half layout)."""
    t, d = x.shape[1], x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d) / factor
    ang = np.arange(t)[:, None] * inv[None, :]
    ang = np.concatenate([ang, ang], -1)[None, :, None, :]
    half = d // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], -1)
    return x * np.cos(ang) + rotated * np.sin(ang)


def np_decoder(t: dict, cfg: dict, ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """The forward pass in float64; returns ``transformers`` 5's ``hidden_states``: the (scaled)
    embeddings, each layer's output, the last one after the final norm."""
    t = {k: val.astype(np.float64) for k, val in t.items()}
    gemma = _gemma(cfg)
    b, n = ids.shape
    heads, kv, d = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    act = cfg.get("hidden_activation" if gemma else "hidden_act")
    scale = cfg["query_pre_attn_scalar"] ** -0.5 if gemma else d**-0.5
    x = t["embed_tokens.weight"][ids]
    if gemma:
        x = x * float(np.float32(math.sqrt(cfg["hidden_size"])))
    states = [x]
    types = layer_types(cfg)
    for layer, kind in enumerate(types):
        p = f"layers.{layer}."

        def lin(z, name, p=p):
            out = z @ t[p + name + ".weight"].T
            return out + t[p + name + ".bias"] if p + name + ".bias" in t else out

        hn = _rms(x, t[p + "input_layernorm.weight"], eps, gemma)
        q = lin(hn, "self_attn.q_proj").reshape(b, n, heads, d)
        k = lin(hn, "self_attn.k_proj").reshape(b, n, kv, d)
        v = lin(hn, "self_attn.v_proj").reshape(b, n, kv, d)
        q = _rms(q, t[p + "self_attn.q_norm.weight"], eps, gemma)
        k = _rms(k, t[p + "self_attn.k_norm.weight"], eps, gemma)
        theta, factor = rope_setting(cfg, kind)
        q, k = _rope(q, theta, factor), _rope(k, theta, factor)
        keep = visible(cfg, kind, n)[None] & (mask[:, None, :] > 0)  # [B, T, T]
        ctx = np.zeros((b, n, heads, d))
        for head in range(heads):
            group = head // (heads // kv)
            s = np.einsum("bqd,bkd->bqk", q[:, :, head], k[:, :, group]) * scale
            s = np.where(keep, s, -1e30)
            s = np.exp(s - s.max(-1, keepdims=True))
            s = s / s.sum(-1, keepdims=True)
            ctx[:, :, head] = np.einsum("bqk,bkd->bqd", s, v[:, :, group])
        attn = lin(ctx.reshape(b, n, heads * d), "self_attn.o_proj")

        def mlp(z, p=p):
            g = lin(z, "mlp.gate_proj")
            if act == "silu":
                g = g / (1.0 + np.exp(-g))
            else:  # gelu_pytorch_tanh
                g = 0.5 * g * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (g + 0.044715 * g**3)))
            return lin(g * lin(z, "mlp.up_proj"), "mlp.down_proj")

        if gemma:
            x = x + _rms(attn, t[p + "post_attention_layernorm.weight"], eps, True)
            m = mlp(_rms(x, t[p + "pre_feedforward_layernorm.weight"], eps, True))
            x = x + _rms(m, t[p + "post_feedforward_layernorm.weight"], eps, True)
        else:
            x = x + attn
            x = x + mlp(_rms(x, t[p + "post_attention_layernorm.weight"], eps, False))
        states.append(x)
    states[-1] = _rms(x, t["norm.weight"], eps, gemma)
    return states


def padded_batch(rows: list[list[int]], side: str, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token rows padded on ``side`` to the longest, with their attention mask."""
    n = max(len(r) for r in rows)
    ids = np.full((len(rows), n), pad_id, np.int64)
    mask = np.zeros((len(rows), n), np.int64)
    for i, r in enumerate(rows):
        cols = slice(0, len(r)) if side == "right" else slice(n - len(r), n)
        ids[i, cols], mask[i, cols] = r, 1
    return ids, mask


# ---------------------------------------------------------------------------------------------
# Tokenizers as the published models ship them, in miniature
# ---------------------------------------------------------------------------------------------

QWEN_PRETOKENIZE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def qwen_tokenizer(vocab_size: int = 330) -> Tokenizer:
    """A byte-level BPE like Qwen3's (NFC, the Qwen2 split regex, byte-level) whose post-processor
    appends ``<|endoftext|>`` to every text, as Qwen3-Embedding's ``tokenizer.json`` does."""
    tok = Tokenizer(
        models.BPE(
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES + list(QWEN_PROMPTS.values()), trainer)
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    eot = tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A:0 <|endoftext|>:0",
        pair="$A:0 <|endoftext|>:0 $B:1 <|endoftext|>:1",
        special_tokens=[("<|endoftext|>", eot)],
    )
    return tok


def gemma_tokenizer(vocab_size: int = 260) -> Tokenizer:
    """A Gemma-style BPE (spaces as ``▁``, byte fallback) with ``<pad>, <eos>, <bos>, <unk>,
    <mask>`` as ids 0-4, adding ``<bos>`` before and ``<eos>`` after every text as
    EmbeddingGemma's tokenizer does."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"],
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES + list(GEMMA_PROMPTS.values()) + ["!?"], trainer)
    bos, eos = tok.token_to_id("<bos>"), tok.token_to_id("<eos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos>:0 $A:0 <eos>:0",
        pair="<bos>:0 $A:0 <eos>:0 <bos>:1 $B:1 <eos>:1",
        special_tokens=[("<bos>", bos), ("<eos>", eos)],
    )
    return tok


ST_TYPES = {
    "Transformer": "sentence_transformers.base.modules.transformer.Transformer",
    "Pooling": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
    "Dense": "sentence_transformers.base.modules.dense.Dense",
    "Normalize": "sentence_transformers.base.modules.normalize.Normalize",
}


def write_decoder_sentence_transformer(directory: Path, style: str, seed: int = 0) -> dict:
    """A sentence-transformers directory as sentence-transformers 6 saves Qwen3-Embedding
    (``style="qwen3"``: left padding, ``<|endoftext|>`` appended and padded with, ``lasttoken``
    pooling with the prompt included, Normalize, an instruction prompt for queries) or
    EmbeddingGemma (``style="gemma3"``: right padding, ``<bos> … <eos>``, mean pooling, Dense
    ``H→4H→H`` without bias and with Identity activation, Normalize, task prompts).

    Returns a dict with the model ``config``, ``tensors``, ``tokenizer``, ``dense`` (list of
    ``[out, in]`` weights), ``prompts``, ``padding_side``, ``pad_id``, ``pooling`` and
    ``max_seq_length``.
    """
    qwen = style == "qwen3"
    tok = qwen_tokenizer() if qwen else gemma_tokenizer()
    vocab = tok.get_vocab_size() + 3
    base = QWEN3_CONFIG if qwen else GEMMA3_CONFIG
    overrides = dict(vocab_size=vocab, num_hidden_layers=2, num_key_value_heads=1, head_dim=8)
    if qwen:
        overrides.update(layer_types=["full_attention"] * 2, tie_word_embeddings=True)
        overrides.update(pad_token_id=tok.token_to_id("<|endoftext|>"))
    else:
        overrides.update(sliding_window=8, layer_types=["sliding_attention", "full_attention"])
    cfg, tensors = write_decoder(directory, base, seed, **overrides)
    tok.save(str(directory / "tokenizer.json"))
    max_len = 24
    if qwen:
        tok_cfg = {
            "tokenizer_class": "Qwen2Tokenizer",
            "backend": "tokenizers",
            "padding_side": "left",
            "pad_token": "<|endoftext|>",
            "eos_token": "<|im_end|>",
            "bos_token": None,
            "unk_token": None,
            "add_prefix_space": False,
            "model_max_length": max_len,
        }
    else:
        tok_cfg = {
            "tokenizer_class": "GemmaTokenizer",
            "backend": "tokenizers",
            "padding_side": "right",
            "add_bos_token": True,
            "add_eos_token": True,
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "mask_token": "<mask>",
            "model_max_length": max_len,
        }
    (directory / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    (directory / "sentence_bert_config.json").write_text(
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
    h = cfg["hidden_size"]
    pooling = "lasttoken" if qwen else "mean"
    modules = [{"idx": 0, "name": "0", "path": "", "type": ST_TYPES["Transformer"]}]
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps({"embedding_dimension": h, "pooling_mode": pooling, "include_prompt": True})
    )
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_TYPES["Pooling"]})
    dense = []
    if not qwen:
        rng = np.random.default_rng(seed + 7)
        for din, dout in ((h, 4 * h), (4 * h, h)):
            idx = len(modules)
            ddir = directory / f"{idx}_Dense"
            ddir.mkdir()
            wgt = (rng.standard_normal((dout, din)) / math.sqrt(din)).astype(np.float32)
            (ddir / "config.json").write_text(
                json.dumps(
                    {
                        "in_features": din,
                        "out_features": dout,
                        "bias": False,
                        "activation_function": "torch.nn.modules.linear.Identity",
                        "module_input_name": "sentence_embedding",
                        "module_output_name": "sentence_embedding",
                    }
                )
            )
            save_file({"linear.weight": wgt}, str(ddir / "model.safetensors"))
            modules.append(
                {"idx": idx, "name": str(idx), "path": f"{idx}_Dense", "type": ST_TYPES["Dense"]}
            )
            dense.append(wgt)
    idx = len(modules)
    (directory / f"{idx}_Normalize").mkdir()
    modules.append(
        {"idx": idx, "name": str(idx), "path": f"{idx}_Normalize", "type": ST_TYPES["Normalize"]}
    )
    (directory / "modules.json").write_text(json.dumps(modules, indent=2))
    prompts = QWEN_PROMPTS if qwen else GEMMA_PROMPTS
    (directory / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "model_type": "SentenceTransformer",
                "prompts": prompts,
                "default_prompt_name": None,
                "similarity_fn_name": "cosine",
            }
        )
    )
    return {
        "config": cfg,
        "tensors": tensors,
        "tokenizer": tok,
        "dense": dense,
        "prompts": prompts,
        "padding_side": "left" if qwen else "right",
        "pad_id": tok.token_to_id("<|endoftext|>" if qwen else "<pad>"),
        "pooling": pooling,
        "max_seq_length": max_len,
    }


def np_sentence_embeddings(st: dict, texts: list[str], prompt: str = "") -> np.ndarray:
    """What ``SentenceTransformer.encode`` computes for a directory from
    :func:`write_decoder_sentence_transformer`, in float64."""
    tok = Tokenizer.from_str(st["tokenizer"].to_str())
    tok.enable_truncation(st["max_seq_length"])
    rows = [e.ids for e in tok.encode_batch([prompt + text for text in texts])]
    ids, mask = padded_batch(rows, st["padding_side"], st["pad_id"])
    h = np_decoder(st["tensors"], st["config"], ids, mask)[-1]
    if st["pooling"] == "lasttoken":
        last = np.asarray([np.nonzero(m)[0][-1] for m in mask])
        x = h[np.arange(len(texts)), last]
    else:
        m = mask[..., None].astype(np.float64)
        x = (h * m).sum(1) / m.sum(1)
    for wgt in st["dense"]:
        x = x @ wgt.T.astype(np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
