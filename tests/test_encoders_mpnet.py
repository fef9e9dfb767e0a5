"""MPNet checkpoints (``load_hf_encoder``, ``Embedder``, export) against the independent NumPy
forward of tests/fixtures_bert_variants.py, and the additive attention-bias hook it uses."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
from fixtures_bert_variants import (
    CONFIGS,
    LAYER_NAMES,
    TEXTS,
    TOKENIZERS,
    np_attention,
    np_forward,
    np_sentence_embeddings,
    padded_batch,
    t5_bucket,
    write_model,
    write_sentence_transformer,
)
from flax import nnx
from safetensors.numpy import load_file
from tolerances import assert_f32_close

from jaxemb.encoders import (
    MPNetConfig,
    MPNetEncoder,
    TransformerConfig,
    load_hf_encoder,
    load_sentence_transformer,
    save_hf_encoder,
)
from jaxemb.encoders._hf import family_of
from jaxemb.encoders._mpnet import MPNET, relative_position_buckets

_forward = nnx.jit(lambda e, i, m: e(i, m, output_hidden_states=True))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mpnet")
    tok = TOKENIZERS["mpnet"](d)
    cfg, tensors = write_model(d, "mpnet", seed=8, vocab_size=tok.get_vocab_size())
    return d, cfg, tensors, tok


def _batch(cfg, *, left, width=24, pad_inside=True):
    rng = np.random.default_rng(13)
    ids, mask = padded_batch(rng, cfg["vocab_size"], 1, [width, width - 3, 6, 1], width, left=left)
    if pad_inside:  # an attended token with the padding id 1: no position of its own
        ids[1, np.flatnonzero(mask[1])[3]] = 1
    return ids, mask


def test_buckets_match_the_integer_formula():
    length = 300  # distances past max_distance 128 share the last bucket of each direction
    got = relative_position_buckets(length)
    want = np.array([[t5_bucket(i, j) for j in range(length)] for i in range(length)])
    np.testing.assert_array_equal(got, want)
    assert set(np.unique(got).tolist()) == set(range(32)) - {16}  # 16 would be distance -0


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_matches_numpy_every_layer(model_dir, left):
    d, cfg, tensors, _ = model_dir
    enc, tok = load_hf_encoder(d)
    assert type(enc) is MPNetEncoder and family_of(enc) is MPNET and tok is not None
    assert enc.config.max_positions == 24 and enc.token_type_embeddings is None
    ids, mask = _batch(cfg, left=left)
    out = _forward(enc, ids, mask)
    want = np_forward(tensors, cfg, ids, mask)
    real = mask.astype(bool)
    assert len(out.hidden_states) == len(want) == 3
    for got, ref in zip(out.hidden_states, want):
        assert_f32_close(np.asarray(got)[real], ref[real])


def test_long_input_larger_table_and_pad_token_id_not_one(tmp_path):
    # 140 tokens: relative distances past 128; a 40-row bias table (32 buckets are used);
    # pad_token_id 0 in the config: MPNet's positions still treat id 1 as padding.
    cfg, tensors = write_model(
        tmp_path,
        "mpnet",
        seed=9,
        max_position_embeddings=142,
        relative_attention_num_buckets=40,
        pad_token_id=0,
    )
    enc, _ = load_hf_encoder(tmp_path)
    assert enc.config.pad_token_id == 0 and enc.config.max_positions == 140
    rng = np.random.default_rng(3)
    ids, mask = padded_batch(rng, cfg["vocab_size"], 1, [140, 100], 140, left=True)
    real = mask.astype(bool)
    want = np_forward(tensors, cfg, ids, mask)[-1]
    got = np.asarray(_forward(enc, ids, mask).last_hidden_state)
    assert_f32_close(got[real], want[real])


def test_per_row_attention_bias_is_added_to_the_scores(model_dir):
    # The additive hook of SelfAttention with a bias of its own per batch row [B, A, T, T].
    d, cfg, tensors, _ = model_dir
    enc, _ = load_hf_encoder(d)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 7, 32)).astype(np.float32)
    mask = np.ones((3, 7), bool)
    mask[1, 5:] = False
    bias = rng.standard_normal((3, 4, 7, 7)).astype(np.float32)
    attend = nnx.jit(lambda a, x, m, b: a(x, m, None, None, b))
    got = np.asarray(attend(enc.layers[0].attention, x, mask, bias))
    t64 = {k: v.astype(np.float64) for k, v in tensors.items()}
    want = np_attention(x, t64, "encoder.layer.0.", LAYER_NAMES["mpnet"], 4, mask, bias)
    assert_f32_close(got, want)
    without = np_attention(x, t64, "encoder.layer.0.", LAYER_NAMES["mpnet"], 4, mask)
    assert np.abs(without - want).max() > 1e-2  # the bias matters


def test_config_round_trip():
    hf = dict(CONFIGS["mpnet"], vocab_size=66)
    cfg = MPNET.config_from_hf(hf, "config.json")
    assert type(cfg) is MPNetConfig
    assert (cfg.max_positions, cfg.position_table_size, cfg.padding_idx) == (24, 26, 1)
    assert (cfg.type_vocab_size, cfg.relative_attention_num_buckets) == (0, 32)
    back = MPNET.config_to_hf(cfg)
    keys = [k for k in back if k in hf and k != "dtype"]
    assert {k: back[k] for k in keys} == {k: hf[k] for k in keys}
    assert MPNET.config_from_hf(back, "c") == cfg
    other = dataclasses.replace(cfg, relative_attention_num_buckets=48, pad_token_id=0)
    assert MPNET.config_from_hf(MPNET.config_to_hf(other), "c") == other


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"relative_attention_num_buckets": 16}, "relative_attention_num_buckets 16 is not"),
        ({"hidden_act": "mish"}, "hidden_act 'mish' is not supported"),
        ({"max_position_embeddings": 2}, "max_position_embeddings 2 leaves no position"),
    ],
)
def test_settings_not_reproduced_are_refused(tmp_path, change, message):
    write_model(tmp_path, "mpnet", **change)
    with pytest.raises(ValueError, match=message):
        load_hf_encoder(tmp_path)


def test_bad_configs_and_checkpoints(tmp_path):
    small = dict(vocab_size=20, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=8)
    for bad, message in (
        (dict(relative_attention_num_buckets=8), "relative_attention_num_buckets must be >= 32"),
        (dict(type_vocab_size=2), "type_vocab_size must be 0"),
        (dict(norm_position="pre"), "norm_position must be 'post'"),
    ):
        with pytest.raises(ValueError, match=message):
            MPNetConfig(**small, **bad)
    with pytest.raises(ValueError, match="config must be an MPNetConfig"):
        MPNetEncoder(TransformerConfig(**small), rngs=nnx.Rngs(0))
    cfg, tensors = write_model(tmp_path, "mpnet", relative_attention_num_buckets=40)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(
        json.dumps(dict(config, relative_attention_num_buckets=32))
    )
    with pytest.raises(
        ValueError,
        match=r"encoder.relative_attention_bias.weight has shape \[40, 4\]; expected \[32, 4\]",
    ):
        load_hf_encoder(tmp_path)


def test_sentence_transformer_matches_numpy(tmp_path):
    cfg, tensors, tok, pad = write_sentence_transformer(tmp_path, "mpnet", max_seq_length=16)
    emb = load_sentence_transformer(tmp_path)
    assert emb.pad_id == pad == 1
    got = emb.encode(TEXTS, batch_size=3)
    assert_f32_close(got, np_sentence_embeddings(cfg, tensors, tok, pad, TEXTS, 16))


def test_export_bf16_and_sharding(model_dir, tmp_path):
    d, cfg, tensors, _ = model_dir
    enc, tokenizer = load_hf_encoder(d)
    save_hf_encoder(enc, tokenizer, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["model_type"] == "mpnet" and written["max_position_embeddings"] == 26
    tok_cfg = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "MPNetTokenizerFast" and tok_cfg["pad_token"] == "<pad>"
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(saved) == {k for k in tensors if not k.startswith("pooler.")}
    for name, value in saved.items():
        np.testing.assert_array_equal(value, tensors[name], err_msg=name)
    again, _ = load_hf_encoder(tmp_path / "out")
    assert again.config == enc.config

    ids, mask = _batch(cfg, left=True)
    real = mask.astype(bool)
    want = np_forward(tensors, cfg, ids, mask)[-1][real]
    config = dataclasses.replace(enc.config, compute_dtype="bfloat16")
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: MPNetEncoder(config, rngs=nnx.Rngs(0))))
    half = nnx.merge(graphdef, nnx.state(enc))
    half.eval()
    got = np.asarray(_forward(half, ids, mask).last_hidden_state)[real]
    err, scale = np.abs(got - want).max(), np.abs(want).max()
    assert 1e-4 * scale < err < 2e-2 * scale  # bfloat16 rounding, not float32's

    auto = (jax.sharding.AxisType.Auto,) * 2
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=auto)
    sharded, _ = load_hf_encoder(d, mesh=mesh, rules=(("embed", "data"), ("heads", "model")))
    got = np.asarray(_forward(sharded, ids, mask).last_hidden_state)[real]
    assert_f32_close(got, want)


def test_training_mode_applies_dropout_with_the_shared_bias(model_dir):
    d, cfg, _, _ = model_dir
    enc, _ = load_hf_encoder(d)
    ids, mask = _batch(cfg, left=False)
    eval_out = np.asarray(_forward(enc, ids, mask).last_hidden_state)
    enc.train()  # attention dropout 0.1: the whole-batch attention path, with the bias
    train = nnx.jit(lambda e, i, m, r: e(i, m, rngs=r).last_hidden_state)
    out = np.asarray(train(enc, ids, mask, nnx.Rngs(dropout=0)))
    assert out.shape == eval_out.shape and np.isfinite(out).all()
    assert np.abs(out - eval_out).max() > 1e-2
