"""Hugging Face / sentence-transformers checkpoint import against an independent NumPy forward."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from encoder_fixtures import (
    SENTENCES,
    np_bert,
    np_sentence_embeddings,
    tokenize,
    write_bert,
    write_sentence_transformer,
)
from safetensors.numpy import load_file, save_file

from jaxemb.encoders import Embedder, load_hf_encoder, load_sentence_transformer

ATOL = 1e-4


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bert")
    cfg, tensors, tok = write_bert(d, seed=1)
    return d, cfg, tensors, tok


def test_hf_encoder_matches_numpy_bert_all_layers(bert_dir):
    d, cfg, tensors, tok = bert_dir
    enc, tokenizer = load_hf_encoder(d)
    assert tokenizer is not None and tokenizer.get_vocab_size() == cfg["vocab_size"]
    ids, mask = tokenize(tok, SENTENCES[:4] + ["fox"], 40)
    types = np.zeros_like(ids)
    types[:, 3:] = 1 * mask[:, 3:]  # exercise token-type embeddings
    out = enc(ids, mask, types, output_hidden_states=True)
    ref = np_bert(tensors, cfg, ids, mask, types)
    assert len(out.hidden_states) == cfg["num_hidden_layers"] + 1
    for got, want in zip(out.hidden_states, ref):
        real = mask.astype(bool)
        np.testing.assert_allclose(np.asarray(got)[real], want[real], atol=ATOL, rtol=0)
    np.testing.assert_allclose(
        np.asarray(out.last_hidden_state)[mask > 0], ref[-1][mask > 0], atol=ATOL, rtol=0
    )


def test_padding_never_leaks(bert_dir):
    d, cfg, _, tok = bert_dir
    enc, _ = load_hf_encoder(d)
    ids, mask = tokenize(tok, ["the fox"], 40)
    alone = np.asarray(enc(ids, mask).last_hidden_state)
    junk = np.concatenate([ids, np.full((1, 7), 9)], axis=1)
    padded = np.concatenate([mask, np.zeros((1, 7), np.int64)], axis=1)
    with_junk = np.asarray(enc(junk, padded).last_hidden_state)
    np.testing.assert_allclose(with_junk[:, : ids.shape[1]], alone, atol=1e-6, rtol=0)


def test_task_head_prefix_and_legacy_layernorm_names(tmp_path, bert_dir):
    d, cfg, tensors, tok = bert_dir
    renamed = {}
    for k, val in tensors.items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        )
        renamed["bert." + k] = val
    renamed["cls.predictions.bias"] = np.zeros(cfg["vocab_size"], np.float32)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file(renamed, str(tmp_path / "model.safetensors"))
    enc, tokenizer = load_hf_encoder(tmp_path)
    assert tokenizer is None  # no tokenizer files in this directory
    ids, mask = tokenize(tok, SENTENCES[:2], 40)
    np.testing.assert_allclose(
        np.asarray(enc(ids, mask).last_hidden_state)[mask > 0],
        np_bert(tensors, cfg, ids, mask)[-1][mask > 0],
        atol=ATOL,
        rtol=0,
    )


def test_sequence_longer_than_position_table_is_refused(bert_dir):
    d, cfg, _, _ = bert_dir
    enc, _ = load_hf_encoder(d)
    n = cfg["max_position_embeddings"] + 1
    with pytest.raises(ValueError, match="longer than the position table"):
        enc(np.ones((1, n), np.int32), np.ones((1, n), np.int32))


def _copy_bert(src, dst, mutate=None, config=None):
    dst.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    if config:
        cfg.update(config)
    (dst / "config.json").write_text(json.dumps(cfg))
    t = load_file(str(src / "model.safetensors"))
    if mutate:
        mutate(t)
    save_file(t, str(dst / "model.safetensors"))
    return dst


def test_bad_checkpoints_give_clear_errors(tmp_path, bert_dir):
    src = bert_dir[0]
    with pytest.raises(ValueError, match="not a directory"):
        load_hf_encoder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_hf_encoder(tmp_path / "empty")
    d = _copy_bert(src, tmp_path / "t5", config={"model_type": "t5", "architectures": ["T5Model"]})
    with pytest.raises(ValueError, match=r"'t5'.*T5Model.*supported model types: bert"):
        load_hf_encoder(d)
    d = _copy_bert(
        src, tmp_path / "missing", mutate=lambda t: t.pop("encoder.layer.1.output.dense.weight")
    )
    with pytest.raises(
        ValueError, match=r"missing tensors: encoder\.layer\.1\.output\.dense\.weight"
    ):
        load_hf_encoder(d)

    def shrink(t):
        t["encoder.layer.0.attention.self.key.weight"] = t[
            "encoder.layer.0.attention.self.key.weight"
        ][:, :5]

    d = _copy_bert(src, tmp_path / "shape", mutate=shrink)
    with pytest.raises(
        ValueError,
        match=r"attention\.self\.key\.weight has shape \[32, 5\]; "
        r"expected \[32, 32\]",
    ):
        load_hf_encoder(d)
    d = tmp_path / "pickle"
    d.mkdir()
    (d / "config.json").write_text((src / "config.json").read_text())
    (d / "pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(ValueError, match="pytorch_model.bin is a pickle"):
        load_hf_encoder(d)
    d = _copy_bert(src, tmp_path / "rel", config={"position_embedding_type": "relative_key"})
    with pytest.raises(ValueError, match="relative_key"):
        load_hf_encoder(d)


@pytest.mark.parametrize(
    "layout,modes,dense,normalize",
    [
        ("legacy", ("cls", "mean"), [(12, "Tanh")], True),
        ("v6", ("weightedmean",), [], False),
        ("v6", ("max", "mean_sqrt_len_tokens", "lasttoken"), [(16, "Identity"), (8, "Tanh")], True),
    ],
)
def test_sentence_transformer_matches_numpy_pipeline(tmp_path, layout, modes, dense, normalize):
    cfg, tensors, tok, dts = write_sentence_transformer(
        tmp_path, layout=layout, modes=modes, dense=dense, normalize=normalize, max_seq_length=12
    )
    model = load_sentence_transformer(tmp_path)
    assert isinstance(model, Embedder) and model.max_seq_length == 12
    # The last text is longer than max_seq_length: it is truncated, as SentenceTransformer does.
    texts = SENTENCES[:5] + [" ".join(SENTENCES[5:])]
    got = model.encode(texts, batch_size=4)
    want = np_sentence_embeddings(
        cfg, tensors, tok, dts, texts, modes=modes, normalize=normalize, max_seq_length=12
    )
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    if layout == "legacy":  # batch composition does not matter
        np.testing.assert_allclose(
            model.encode(texts[::-1], batch_size=1)[::-1], got, atol=1e-5, rtol=0
        )
    # normalize=True L2-normalises; normalize=False drops the pipeline's Normalize module.
    unit = model.encode(texts, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    raw = np_sentence_embeddings(
        cfg, tensors, tok, dts, texts, modes=modes, normalize=False, max_seq_length=12
    )
    np.testing.assert_allclose(model.encode(texts, normalize=False), raw, atol=ATOL, rtol=0)


def test_embed_is_pure_and_differentiable(tmp_path):
    cfg, tensors, tok, dts = write_sentence_transformer(tmp_path, dense=[(8, "Tanh")])
    model = load_sentence_transformer(tmp_path)
    batch = model.tokenize(SENTENCES[:3])
    ids, mask = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"])
    emb = model.embed(model.params, ids, mask)
    np.testing.assert_allclose(np.asarray(emb), model.encode(SENTENCES[:3]), atol=1e-5, rtol=0)

    def loss(params):
        e = model.embed(params, ids, mask)
        return -jnp.sum(e[0] * e[1])

    grads = jax.grad(loss)(model.params)
    leaves = jax.tree.leaves(grads)
    assert leaves and all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert float(jnp.abs(grads["dense"][0]["kernel"]).sum()) > 0


def test_sentence_transformer_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="no modules.json"):
        load_sentence_transformer(tmp_path)
    write_sentence_transformer(tmp_path / "m")
    model = load_sentence_transformer(tmp_path / "m")
    with pytest.raises(ValueError, match="must not be empty"):
        model.encode([])
    with pytest.raises(ValueError, match="entry 1 is int"):
        model.encode(["a", 3])
    with pytest.raises(ValueError, match="batch_size"):
        model.encode(["a"], batch_size=0)
    modules = json.loads((tmp_path / "m" / "modules.json").read_text())
    modules.insert(
        2, {"idx": 2, "name": "x", "path": "x", "type": "sentence_transformers.models.LSTM"}
    )
    (tmp_path / "m" / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="'sentence_transformers.models.LSTM' is not supported"):
        load_sentence_transformer(tmp_path / "m")


def test_prompt_left_out_of_pooling_and_prepare_feeds_embed(tmp_path):
    """include_prompt=False pools over the text's tokens only (sentence-transformers' rule: the
    prompt's tokens without the closing [SEP], counted from [CLS]); prepare + embed = encode."""
    cfg, tensors, tok, dts = write_sentence_transformer(tmp_path, layout="v6", normalize=True)
    pool_path = tmp_path / "1_Pooling" / "config.json"
    pool_cfg = json.loads(pool_path.read_text())
    pool_cfg["include_prompt"] = False
    pool_path.write_text(json.dumps(pool_cfg))
    st_path = tmp_path / "config_sentence_transformers.json"
    st_cfg = json.loads(st_path.read_text()) if st_path.exists() else {}
    st_cfg.update(prompts={"query": "the quick fox: "}, default_prompt_name=None)
    st_path.write_text(json.dumps(st_cfg))
    model = load_sentence_transformer(tmp_path)
    texts = SENTENCES[:4]
    got = model.encode_query(texts)
    # NumPy: forward over prompt + text, mean over the tokens after [CLS] + the prompt's words
    ids, mask = tokenize(tok, ["the quick fox: " + t for t in texts], model.max_seq_length)
    h = np_bert(tensors, cfg, ids, mask)[-1]
    skip = 1 + len(tok.encode("the quick fox: ", add_special_tokens=False).ids)
    pool_mask = mask.copy()
    pool_mask[:, :skip] = 0
    want = (h * pool_mask[..., None]).sum(1) / pool_mask.sum(1, keepdims=True)
    want = want / np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    # the same through prepare (fixed length, as a training batch) and the pure embed
    batch = model.prepare(texts, prompt_name="query", pad_to=model.max_seq_length)
    assert batch["input_ids"].shape == (4, model.max_seq_length)
    assert (batch["pool_mask"][:, :skip] == 0).all()
    emb = model.embed(
        model.params, *(jnp.asarray(batch[k]) for k in ("input_ids", "attention_mask", "pool_mask"))
    )
    np.testing.assert_allclose(np.asarray(emb), got, atol=1e-5, rtol=0)


def test_left_padding_pads_before_the_text_and_pools_without_padding_or_prompt(tmp_path):
    """padding_side='left' (tokenizer_config.json) puts the padding first; with
    include_prompt=False the pooling mask drops the padding and then the prompt's tokens
    (sentence-transformers' Pooling rule for left padding)."""
    cfg, tensors, tok, dts = write_sentence_transformer(tmp_path, layout="v6", normalize=True)
    tok_cfg_path = tmp_path / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text()) if tok_cfg_path.exists() else {}
    tok_cfg["padding_side"] = "left"
    tok_cfg_path.write_text(json.dumps(tok_cfg))
    pool_path = tmp_path / "1_Pooling" / "config.json"
    pool_cfg = json.loads(pool_path.read_text())
    pool_cfg["include_prompt"] = False
    pool_path.write_text(json.dumps(pool_cfg))
    model = load_sentence_transformer(tmp_path)
    assert model.padding_side == "left"
    texts = ["the dog", "the lazy dog runs"]  # both shorter than max_seq_length with the prompt
    prompt = "the fox: "
    batch = model.prepare(texts, prompt=prompt)
    lengths = [len(tok.encode(prompt + t).ids) for t in texts]
    width = max(lengths)
    assert width <= model.max_seq_length and lengths[0] < width
    skip = len(tok.encode(prompt).ids) - 1  # [CLS] + the prompt's words
    for row, n in enumerate(lengths):
        want_mask = np.r_[np.zeros(width - n, int), np.ones(n, int)]
        np.testing.assert_array_equal(batch["attention_mask"][row], want_mask)
        np.testing.assert_array_equal(
            batch["input_ids"][row, width - n :], tok.encode(prompt + texts[row]).ids
        )
        want_pool = want_mask.copy()
        want_pool[width - n : width - n + skip] = 0
        np.testing.assert_array_equal(batch["pool_mask"][row], want_pool)
    # encode = the NumPy BERT over the left-padded batch (positions count from the first
    # column, as in transformers), mean-pooled over the pooling mask
    h = np_bert(tensors, cfg, batch["input_ids"], batch["attention_mask"])[-1]
    pm = batch["pool_mask"]
    want = (h * pm[..., None]).sum(1) / pm.sum(1, keepdims=True)
    want = want / np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(model.encode(texts, prompt=prompt), want, atol=ATOL, rtol=0)


def test_with_compute_dtype_shares_parameters_and_changes_the_matmuls(tmp_path):
    write_sentence_transformer(tmp_path, dense=[(8, "Tanh")])
    model = load_sentence_transformer(tmp_path)
    low = model.with_compute_dtype("bfloat16")
    assert model.encoder.config.compute_dtype == "float32"
    assert low.encoder.config.compute_dtype == "bfloat16"
    assert jax.tree.leaves(low.params)[0] is jax.tree.leaves(model.params)[0]
    full, half = model.encode(SENTENCES), low.encode(SENTENCES)
    assert half.dtype == np.float32
    # bfloat16 keeps 8 mantissa bits: close (unit vectors, |Δ| < 2⁻⁴) but not equal
    assert 0 < np.abs(full - half).max() < 2.0**-4
    np.testing.assert_array_equal(model.encode(SENTENCES), full)  # the original is unchanged
    with pytest.raises(ValueError, match="compute_dtype"):
        model.with_compute_dtype("float8")


def test_tokenizer_larger_than_the_embedding_table_is_refused(tmp_path, bert_dir):
    src = bert_dir[0]

    def shrink(t):
        t["embeddings.word_embeddings.weight"] = t["embeddings.word_embeddings.weight"][:50]

    d = _copy_bert(src, tmp_path / "small", mutate=shrink, config={"vocab_size": 50})
    (d / "tokenizer.json").write_bytes((src / "tokenizer.json").read_bytes())
    with pytest.raises(ValueError, match=r"tokenizer .* ids up to 1\d\d .*vocab_size 50"):
        load_hf_encoder(d)


def test_dropout_key_trains_with_the_checkpoints_dropout(tmp_path):
    write_sentence_transformer(tmp_path / "a", dense=[(8, "Tanh")])  # dropout 0.1 (BERT's)
    model = load_sentence_transformer(tmp_path / "a")
    b = model.prepare(SENTENCES[:4])
    args = [jnp.asarray(b[k]) for k in ("input_ids", "attention_mask", "pool_mask")]
    plain = np.asarray(model.embed(model.params, *args))
    k1, k2 = jax.random.split(jax.random.key(0))
    one = np.asarray(model.embed(model.params, *args, dropout_key=k1))
    np.testing.assert_array_equal(one, np.asarray(model.embed(model.params, *args, dropout_key=k1)))
    assert np.abs(one - plain).max() > 1e-3  # dropout really acts
    assert np.abs(one - np.asarray(model.embed(model.params, *args, dropout_key=k2))).max() > 1e-3
    np.testing.assert_allclose(plain, model.encode(SENTENCES[:4]), atol=1e-6, rtol=0)
    # with the rates set to 0 in config.json, training mode is the deterministic forward
    write_sentence_transformer(tmp_path / "b", dense=[(8, "Tanh")])
    cfg_path = next(
        p for p in (tmp_path / "b").rglob("config.json") if "hidden_dropout" in p.read_text()
    )
    cfg = json.loads(cfg_path.read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    cfg_path.write_text(json.dumps(cfg))
    zero = load_sentence_transformer(tmp_path / "b")
    np.testing.assert_allclose(
        np.asarray(zero.embed(zero.params, *args, dropout_key=k1)), plain, atol=1e-6, rtol=0
    )
