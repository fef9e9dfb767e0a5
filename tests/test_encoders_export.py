"""save_sentence_transformer / save_hf_encoder round trips, prompts and the asymmetric API.

Checked in a throwaway environment too: models written here load in sentence-transformers 6.3
(``SentenceTransformer(path).encode`` equal to ``Embedder.encode`` within 2e-7, prompts and
default prompt kept) and in transformers 5 (``AutoModel`` ``last_hidden_state`` within 1e-6).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest
from encoder_fixtures import SENTENCES, write_bert, write_sentence_transformer
from safetensors.numpy import load_file

from jaxemb.encoders import (
    load_hf_encoder,
    load_sentence_transformer,
    save_hf_encoder,
    save_sentence_transformer,
)


@pytest.fixture(scope="module")
def st_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("st")
    _, tensors, _, dense = write_sentence_transformer(
        d, modes=("cls", "mean"), dense=[(8, "Tanh")], normalize=True, max_seq_length=16
    )
    cfg = (
        json.loads((d / "config_sentence_transformers.json").read_text())
        if (d / "config_sentence_transformers.json").exists()
        else {}
    )
    cfg.update(prompts={"query": "query: ", "document": "passage: "}, default_prompt_name=None)
    (d / "config_sentence_transformers.json").write_text(json.dumps(cfg))
    return d, tensors, dense


def _leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True)
    )


def test_sentence_transformer_round_trip_is_bit_exact(st_dir, tmp_path):
    src, tensors, dense = st_dir
    model = load_sentence_transformer(src)
    out = save_sentence_transformer(
        model,
        tmp_path / "exported",
        model_card={
            "training_data": "digits",
            "loss": "MNRL",
            "evaluation": {"m": {"ndcg@10": 0.5}},
        },
    )
    back = load_sentence_transformer(out)
    assert _leaves_equal(back.params, model.params)
    assert back.prompts == model.prompts and back.default_prompt_name is None
    assert back.pooling == model.pooling and back.max_seq_length == model.max_seq_length
    np.testing.assert_array_equal(back.encode(SENTENCES), model.encode(SENTENCES))
    # the files hold the checkpoint's tensors as written by the NumPy fixture
    written = load_file(out / "model.safetensors")
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.1.output.dense.weight"):
        np.testing.assert_array_equal(written[name], tensors[name])
    dense_file = load_file(out / "2_Dense" / "model.safetensors")
    np.testing.assert_array_equal(dense_file["linear.weight"], dense[0][0])
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == [
        "Transformer",
        "Pooling",
        "Dense",
        "Normalize",
    ]
    pool = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pool["pooling_mode_cls_token"] and pool["pooling_mode_mean_tokens"]
    card = (out / "README.md").read_text()
    assert "MNRL" in card and "digits" in card and "| m | 0.5000 |" in card


def test_prompts_and_asymmetric_encoding(st_dir):
    model = load_sentence_transformer(st_dir[0])
    texts = SENTENCES[:4]
    q, d = model.encode_query(texts), model.encode_document(texts)
    np.testing.assert_array_equal(q, model.encode(["query: " + t for t in texts], prompt=""))
    np.testing.assert_array_equal(d, model.encode(texts, prompt_name="document"))
    np.testing.assert_array_equal(model.encode(texts), model.encode(texts, prompt=""))
    np.testing.assert_array_equal(model.encode_queries(texts), q)
    docs = [{"title": "t", "text": x} for x in texts]
    np.testing.assert_array_equal(
        model.encode_corpus(docs), model.encode_document([f"t {x}" for x in texts])
    )
    with pytest.raises(ValueError, match="prompt_name 'passage' is not one of"):
        model.encode(texts, prompt_name="passage")
    with pytest.raises(ValueError, match=r"corpus\[0\] must be a dict"):
        model.encode_corpus(["text"])


def test_hf_encoder_round_trip_and_config(tmp_path):
    cfg, tensors, tok = write_bert(tmp_path / "bert", seed=3)
    encoder, tokenizer = load_hf_encoder(tmp_path / "bert")
    out = save_hf_encoder(encoder, tokenizer, tmp_path / "out")
    back, back_tok = load_hf_encoder(out)
    assert _leaves_equal(jax.tree.leaves(back), jax.tree.leaves(encoder))
    written = json.loads((out / "config.json").read_text())
    for key in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "vocab_size",
        "max_position_embeddings",
        "type_vocab_size",
    ):
        assert written[key] == cfg[key], key
    assert written["model_type"] == "bert"
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "BertTokenizerFast"
    assert back_tok.encode("hello world").ids == tokenizer.encode("hello world").ids


def test_bad_export_targets_fail_before_writing(st_dir, tmp_path):
    model = load_sentence_transformer(st_dir[0])
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="already exists; pass overwrite=True"):
        save_sentence_transformer(model, existing)
    assert sorted(os.listdir(existing)) == ["keep.txt"]
    out = save_sentence_transformer(model, existing, overwrite=True)
    assert (out / "modules.json").is_file() and not (out / "keep.txt").exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        save_sentence_transformer(model, a_file)
    a_file.chmod(0o755)  # even an executable file cannot hold a directory
    with pytest.raises(ValueError, match="cannot be written .* is a file, not a directory"):
        save_sentence_transformer(model, a_file / "sub" / "m")
    with pytest.raises(ValueError, match="embedder must be an Embedder"):
        save_sentence_transformer("not a model", tmp_path / "new")
    with pytest.raises(ValueError, match="tokenizer must be a tokenizers.Tokenizer"):
        save_hf_encoder(model.encoder, None, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    if os.geteuid() != 0:  # root can write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="cannot be written"):
            save_sentence_transformer(model, locked / "m")
    leftovers = [p for p in Path(tmp_path).iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no staging directory left behind
