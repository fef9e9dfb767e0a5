"""DistilBERT checkpoints (``load_hf_encoder``, ``Embedder``, export) against the independent
NumPy forward of tests/fixtures_bert_variants.py."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
from fixtures_bert_variants import (
    CONFIGS,
    TEXTS,
    TOKENIZERS,
    np_forward,
    np_sentence_embeddings,
    padded_batch,
    write_model,
    write_sentence_transformer,
)
from flax import nnx
from safetensors.numpy import load_file, save_file
from tolerances import assert_f32_close

from jaxemb.encoders import (
    DistilBertConfig,
    DistilBertEncoder,
    TransformerConfig,
    TransformerEncoder,
    load_hf_encoder,
    load_sentence_transformer,
    save_hf_encoder,
)
from jaxemb.encoders._distilbert import DISTILBERT
from jaxemb.encoders._hf import family_of

_forward = nnx.jit(lambda e, i, m: e(i, m, output_hidden_states=True))
_layer = nnx.jit(lambda layer, x, m, rngs: layer(x, m, None, rngs))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("distilbert")
    tok = TOKENIZERS["distilbert"](d)
    cfg, tensors = write_model(d, "distilbert", seed=5, vocab_size=tok.get_vocab_size())
    return d, cfg, tensors, tok


def _batch(cfg, *, left):
    rng = np.random.default_rng(11)
    width = cfg["max_position_embeddings"]
    return padded_batch(rng, cfg["vocab_size"], 0, [width, width - 5, 4, 1], width, left=left)


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_matches_numpy_every_layer(model_dir, left):
    d, cfg, tensors, _ = model_dir
    enc, tok = load_hf_encoder(d)
    assert type(enc) is DistilBertEncoder and family_of(enc) is DISTILBERT and tok is not None
    assert enc.token_type_embeddings is None and enc.config.max_positions == 24
    ids, mask = _batch(cfg, left=left)
    out = _forward(enc, ids, mask)
    want = np_forward(tensors, cfg, ids, mask)
    real = mask.astype(bool)
    assert len(out.hidden_states) == len(want) == 3
    for got, ref in zip(out.hidden_states, want):
        assert_f32_close(np.asarray(got)[real], ref[real])


def test_relu_and_sinusoidal_flag_read_the_stored_table(tmp_path):
    # transformers 5 loads the stored position table even when sinusoidal_pos_embds is set
    cfg, tensors = write_model(
        tmp_path, "distilbert", seed=6, activation="relu", sinusoidal_pos_embds=True
    )
    enc, _ = load_hf_encoder(tmp_path)
    assert enc.config.sinusoidal_pos_embds and enc.config.activation == "relu"
    ids, mask = _batch(cfg, left=False)
    real = mask.astype(bool)
    want = np_forward(tensors, cfg, ids, mask)[-1]
    assert_f32_close(np.asarray(_forward(enc, ids, mask).last_hidden_state)[real], want[real])


def test_sinusoidal_flag_initialises_distilberts_table():
    cfg = DistilBertConfig(
        vocab_size=10, hidden_size=6, num_layers=1, num_heads=2, intermediate_size=4,
        max_positions=5, sinusoidal_pos_embds=True,
    )  # fmt: skip
    table = np.asarray(DistilBertEncoder(cfg, rngs=nnx.Rngs(0)).position_embeddings.embedding[...])
    # DistilBERT's create_sinusoidal_embeddings: angle pos / 10000^(2 (j // 2) / dim)
    angle = np.array([[p / 10000 ** (2 * (j // 2) / 6) for j in range(6)] for p in range(5)])
    want = np.where(np.arange(6) % 2 == 0, np.sin(angle), np.cos(angle))
    assert_f32_close(table, want)


def test_no_dropout_on_the_attention_output():
    # With the MLP's output weights zero, a training-mode layer differs from the eval-mode one
    # only through dropout on the attention branch: none in DistilBERT, some in BERT.
    kw = dict(vocab_size=10, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=8)
    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)
    mask = np.ones((2, 5), bool)
    for config, dropped in (
        (DistilBertConfig(**kw, dropout=0.5, attention_dropout=0.0), False),
        (TransformerConfig(**kw, dropout=0.5, attention_dropout=0.0), True),
    ):
        enc = (DistilBertEncoder if not dropped else TransformerEncoder)(config, rngs=nnx.Rngs(0))
        layer = enc.layers[0]
        layer.output.kernel[...] = np.zeros((8, 16), np.float32)
        layer.output.bias[...] = np.zeros(16, np.float32)
        layer.eval()
        eval_out = np.asarray(_layer(layer, x, mask, None))
        layer.train()
        train_out = np.asarray(_layer(layer, x, mask, nnx.Rngs(dropout=1)))
        assert (np.abs(train_out - eval_out).max() > 1e-3) == dropped


def test_config_round_trip():
    hf = dict(CONFIGS["distilbert"], vocab_size=77)
    cfg = DISTILBERT.config_from_hf(hf, "config.json")
    assert type(cfg) is DistilBertConfig
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size) == (
        32,
        2,
        4,
        48,
    )
    assert (cfg.type_vocab_size, cfg.layer_norm_eps, cfg.pad_token_id) == (0, 1e-12, 0)
    back = DISTILBERT.config_to_hf(cfg)
    assert {k: back[k] for k in back if k in hf} == {k: hf[k] for k in back if k in hf}
    assert DISTILBERT.config_from_hf(back, "c") == cfg
    other = dataclasses.replace(cfg, activation="relu", sinusoidal_pos_embds=True, dropout=0.0)
    assert DISTILBERT.config_from_hf(DISTILBERT.config_to_hf(other), "c") == other


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"activation": "tanh"}, "activation 'tanh' is not supported"),
        ({"dim": None}, r"lacks required keys \['dim'\]"),
        ({"n_heads": 5}, "hidden_size must be divisible by num_heads"),
    ],
)
def test_settings_not_reproduced_are_refused(tmp_path, change, message):
    hf = dict(CONFIGS["distilbert"], vocab_size=50, **change)
    hf = {k: v for k, v in hf.items() if v is not None or k not in change}
    tmp_path.joinpath("config.json").write_text(json.dumps(hf))
    save_file({"x": np.zeros(1, np.float32)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=message):
        load_hf_encoder(tmp_path)


def test_bad_configs_inputs_and_checkpoints(tmp_path):
    small = dict(vocab_size=20, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=8)
    for bad, message in (
        (dict(type_vocab_size=2), "type_vocab_size must be 0"),
        (dict(layer_norm_eps=1e-5), "layer_norm_eps must be 1e-12"),
        (dict(position="alibi"), "position must be 'learned'"),
        (dict(sinusoidal_pos_embds=1), "sinusoidal_pos_embds must be True or False"),
    ):
        with pytest.raises(ValueError, match=message):
            DistilBertConfig(**small, **bad)
    with pytest.raises(ValueError, match="config must be a DistilBertConfig"):
        DistilBertEncoder(TransformerConfig(**small), rngs=nnx.Rngs(0))
    enc = DistilBertEncoder(DistilBertConfig(**small, max_positions=4), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="type_vocab_size=0"):
        enc(np.ones((1, 3), int), None, np.zeros((1, 3), int))
    cfg, tensors = write_model(tmp_path, "distilbert")
    tensors["transformer.layer.1.ffn.lin1.weight"] = tensors[
        "transformer.layer.1.ffn.lin1.weight"
    ].T
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(
        ValueError,
        match=r"transformer.layer.1.ffn.lin1.weight has shape \[32, 48\]; expected \[48, 32\]",
    ):
        load_hf_encoder(tmp_path)


def test_sentence_transformer_matches_numpy(tmp_path):
    cfg, tensors, tok, pad = write_sentence_transformer(tmp_path, "distilbert", max_seq_length=16)
    emb = load_sentence_transformer(tmp_path)
    assert emb.pad_id == pad == 0
    got = emb.encode(TEXTS, batch_size=3)
    assert_f32_close(got, np_sentence_embeddings(cfg, tensors, tok, pad, TEXTS, 16))


def test_export_round_trip_is_bit_exact_and_shards(model_dir, tmp_path):
    d, cfg, tensors, _ = model_dir
    enc, tokenizer = load_hf_encoder(d)
    save_hf_encoder(enc, tokenizer, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert {k: written[k] for k in ("model_type", "dim", "n_layers", "hidden_dim")} == {
        "model_type": "distilbert",
        "dim": 32,
        "n_layers": 2,
        "hidden_dim": 48,
    }
    tok_cfg = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "DistilBertTokenizerFast"
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(saved) == set(tensors)
    for name, value in saved.items():
        np.testing.assert_array_equal(value, tensors[name], err_msg=name)
    again, _ = load_hf_encoder(tmp_path / "out")
    assert again.config == enc.config
    auto = (jax.sharding.AxisType.Auto,) * 2
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=auto)
    sharded, _ = load_hf_encoder(d, mesh=mesh)
    ids, mask = _batch(cfg, left=False)
    real = mask.astype(bool)
    want = np.asarray(_forward(enc, ids, mask).last_hidden_state)[real]
    assert_f32_close(np.asarray(_forward(sharded, ids, mask).last_hidden_state)[real], want)
