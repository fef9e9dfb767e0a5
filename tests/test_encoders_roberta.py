"""RoBERTa / XLM-RoBERTa checkpoints (``load_hf_encoder``, ``Embedder``, export) against the
independent NumPy forward of tests/fixtures_bert_variants.py."""

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
    position_ids,
    write_model,
    write_sentence_transformer,
)
from flax import nnx
from safetensors.numpy import load_file, save_file
from tolerances import assert_f32_close

from jaxemb.encoders import (
    RobertaConfig,
    RobertaEncoder,
    TransformerConfig,
    XLMRobertaConfig,
    load_hf_encoder,
    load_sentence_transformer,
    save_hf_encoder,
)
from jaxemb.encoders._hf import family_of
from jaxemb.encoders._roberta import ROBERTA, XLM_ROBERTA, padded_position_ids

FAMILY = {"roberta": ROBERTA, "xlm-roberta": XLM_ROBERTA}


@pytest.fixture(scope="module", params=["roberta", "xlm-roberta"])
def model_dir(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    tok = TOKENIZERS[request.param](d)
    cfg, tensors = write_model(d, request.param, seed=3, vocab_size=tok.get_vocab_size())
    return d, cfg, tensors, tok


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory):
    """One model for the tests that do not depend on the model type."""
    d = tmp_path_factory.mktemp("xlmr")
    tok = TOKENIZERS["xlm-roberta"](d)
    cfg, tensors = write_model(d, "xlm-roberta", seed=4, vocab_size=tok.get_vocab_size())
    return d, cfg, tensors, tok


_forward = nnx.jit(lambda e, i, m: e(i, m, output_hidden_states=True))
_embeds_forward = nnx.jit(lambda e, x: e(None, inputs_embeds=x))


def _batch(cfg, *, left, pad_inside=True):
    pad, usable = cfg["pad_token_id"], cfg["max_position_embeddings"] - cfg["pad_token_id"] - 1
    rng = np.random.default_rng(7)
    ids, mask = padded_batch(
        rng, cfg["vocab_size"], pad, [usable, usable - 3, 5, 1], usable, left=left
    )
    if pad_inside:  # an attended token with the padding id: no position of its own
        row = ids[1]
        row[np.flatnonzero(mask[1])[2]] = pad
    return ids, mask


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_matches_numpy_every_layer_on_both_padding_sides(model_dir, left):
    d, cfg, tensors, _ = model_dir
    enc, tok = load_hf_encoder(d)
    assert type(enc) is RobertaEncoder and tok is not None
    assert (
        type(enc.config)
        is {"roberta": RobertaConfig, "xlm-roberta": XLMRobertaConfig}[cfg["model_type"]]
    )
    assert enc.config.max_positions == 24  # the usable length of a 26-row table
    ids, mask = _batch(cfg, left=left)
    out = _forward(enc, ids, mask)
    want = np_forward(tensors, cfg, ids, mask)
    real = mask.astype(bool)
    assert len(out.hidden_states) == len(want) == 3
    for got, ref in zip(out.hidden_states, want):
        assert_f32_close(np.asarray(got)[real], ref[real])
    assert_f32_close(np.asarray(out.last_hidden_state)[real], want[-1][real])


def test_left_and_right_padding_give_the_same_states(model_dir):
    d, cfg, _, _ = model_dir
    enc, _ = load_hf_encoder(d)
    right, rmask = _batch(cfg, left=False)
    left, lmask = _batch(cfg, left=True)
    hr = np.asarray(_forward(enc, right, rmask).last_hidden_state)
    hl = np.asarray(_forward(enc, left, lmask).last_hidden_state)
    assert_f32_close(hl[lmask.astype(bool)], hr[rmask.astype(bool)])


def test_position_ids_count_non_padding_tokens():
    rng = np.random.default_rng(0)
    for pad in (0, 1, 5):
        ids = rng.integers(0, 8, (6, 13))
        ids[:, :3] = np.where(rng.random((6, 3)) < 0.5, pad, ids[:, :3])  # left pads
        got = np.asarray(jax.jit(padded_position_ids, static_argnums=1)(ids, pad))
        np.testing.assert_array_equal(got, position_ids(ids, pad))


def test_inputs_embeds_get_positions_after_the_padding_index(xlmr_dir):
    d, cfg, tensors, _ = xlmr_dir
    enc, _ = load_hf_encoder(d)
    ids, _ = _batch(cfg, left=False, pad_inside=False)
    ids = ids[:1]  # the full-length row: no padding
    embeds = tensors["embeddings.word_embeddings.weight"][ids]
    by_ids = _forward(enc, ids, np.ones_like(ids)).last_hidden_state
    by_embeds = _embeds_forward(enc, embeds).last_hidden_state
    assert_f32_close(by_embeds, by_ids)


def test_task_head_checkpoint_loads_without_head(xlmr_dir, tmp_path):
    d, cfg, tensors, _ = xlmr_dir
    head = {"roberta." + k: v for k, v in tensors.items() if not k.startswith("pooler.")}
    head["lm_head.dense.weight"] = np.ones((4, 4), np.float32)
    save_file(head, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(
        json.dumps(dict(cfg, architectures=["RobertaForMaskedLM"]))
    )
    enc, _ = load_hf_encoder(tmp_path)
    ids, mask = _batch(cfg, left=True)
    real = mask.astype(bool)
    want = np_forward(tensors, cfg, ids, mask)[-1]
    assert_f32_close(np.asarray(_forward(enc, ids, mask).last_hidden_state)[real], want[real])


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta"])
def test_config_round_trip(model_type):
    family = FAMILY[model_type]
    hf = dict(CONFIGS[model_type], vocab_size=99)
    cfg = family.config_from_hf(hf, "config.json")
    assert type(cfg) is family.config_class
    assert (cfg.max_positions, cfg.position_table_size, cfg.pad_token_id) == (24, 26, 1)
    assert (cfg.type_vocab_size, cfg.layer_norm_eps, cfg.dropout) == (1, 1e-5, 0.1)
    back = family.config_to_hf(cfg)
    assert back["model_type"] == model_type
    assert {k: back[k] for k in back if k in hf and k != "dtype"} == {
        k: hf[k] for k in back if k in hf and k != "dtype"
    }
    assert family.config_from_hf(back, "config.json") == cfg
    for other in (
        dataclasses.replace(cfg, pad_token_id=0, max_positions=7, activation="gelu_tanh"),
        dataclasses.replace(cfg, type_vocab_size=2, attention_dropout=0.0),
    ):
        assert family.config_from_hf(family.config_to_hf(other), "c") == other


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"is_decoder": True}, "is_decoder True is not supported"),
        ({"add_cross_attention": True}, "add_cross_attention True is not supported"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type 'relative_key'"),
        ({"hidden_act": "gelu_10"}, "hidden_act 'gelu_10' is not supported"),
        ({"max_position_embeddings": 2}, "max_position_embeddings 2 leaves no position"),
        ({"pad_token_id": None}, "pad_token_id None is not supported"),
        ({"auto_map": {"AutoModel": "x.Y"}}, "needs remote code"),
    ],
)
def test_settings_not_reproduced_are_refused(tmp_path, change, message):
    write_model(tmp_path, "xlm-roberta", **change)
    with pytest.raises(ValueError, match=message):
        load_hf_encoder(tmp_path)


def test_bad_configs_encoders_and_checkpoints(tmp_path):
    small = dict(vocab_size=20, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=8)
    for bad, message in (
        (dict(position="rope"), "position must be 'learned'"),
        (dict(norm_position="pre"), "norm_position must be 'post'"),
        (dict(type_vocab_size=0), "type_vocab_size must be >= 1"),
        (dict(pad_token_id=-1), "pad_token_id must be >= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            RobertaConfig(**small, **bad)
    with pytest.raises(ValueError, match="config must be a RobertaConfig"):
        RobertaEncoder(TransformerConfig(**small), rngs=nnx.Rngs(0))
    enc = RobertaEncoder(XLMRobertaConfig(**small, max_positions=5), rngs=nnx.Rngs(0))
    assert family_of(enc) is XLM_ROBERTA
    with pytest.raises(ValueError, match="longer than the position table"):
        enc(np.full((1, 6), 4))
    # a BERT-sized position table (max_position_embeddings rows less the offset) is named
    cfg, tensors = write_model(tmp_path, "roberta")
    tensors["embeddings.position_embeddings.weight"] = tensors[
        "embeddings.position_embeddings.weight"
    ][:24]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(
        ValueError,
        match=r"embeddings.position_embeddings.weight has shape \[24, 32\]; expected \[26, 32\]",
    ):
        load_hf_encoder(tmp_path)
    del tensors["encoder.layer.1.output.dense.bias"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="missing tensors: encoder.layer.1.output.dense.bias"):
        load_hf_encoder(tmp_path)


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta"])
def test_sentence_transformer_matches_numpy(tmp_path, model_type):
    cfg, tensors, tok, pad = write_sentence_transformer(tmp_path, model_type, max_seq_length=16)
    emb = load_sentence_transformer(tmp_path)
    assert emb.pad_id == pad == 1 and emb.max_seq_length == 16
    got = emb.encode(TEXTS, batch_size=3)
    want = np_sentence_embeddings(cfg, tensors, tok, pad, TEXTS, 16)
    assert_f32_close(got, want)
    # the long text was truncated to 16 tokens, the others fit
    assert max(len(e.ids) for e in tok.encode_batch(TEXTS)) > 16


def test_export_round_trip_is_bit_exact(model_dir, tmp_path):
    d, cfg, tensors, tok = model_dir
    enc, tokenizer = load_hf_encoder(d)
    save_hf_encoder(enc, tokenizer, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["model_type"] == cfg["model_type"]
    assert written["max_position_embeddings"] == 26
    tok_cfg = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == FAMILY[cfg["model_type"]].tokenizer_class
    assert tok_cfg["pad_token"] == "<pad>"
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    for name, value in saved.items():
        np.testing.assert_array_equal(value, tensors[name], err_msg=name)
    again, tok2 = load_hf_encoder(tmp_path / "out")
    assert again.config == enc.config and tok2.get_vocab() == tokenizer.get_vocab()
    ids, mask = _batch(cfg, left=True)
    np.testing.assert_array_equal(
        np.asarray(_forward(again, ids, mask).last_hidden_state),
        np.asarray(_forward(enc, ids, mask).last_hidden_state),
    )


def test_bfloat16_tracks_float32_and_sharded_loading_matches(xlmr_dir):
    d, cfg, tensors, _ = xlmr_dir
    enc, _ = load_hf_encoder(d)
    ids, mask = _batch(cfg, left=True)
    real = mask.astype(bool)
    want = np_forward(tensors, cfg, ids, mask)[-1][real]
    config = dataclasses.replace(enc.config, compute_dtype="bfloat16")
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: RobertaEncoder(config, rngs=nnx.Rngs(0))))
    half = nnx.merge(graphdef, nnx.state(enc))
    half.eval()
    got = np.asarray(_forward(half, ids, mask).last_hidden_state)[real]
    err, scale = np.abs(got - want).max(), np.abs(want).max()
    assert 1e-4 * scale < err < 2e-2 * scale  # bfloat16 rounding, not float32's
    auto = (jax.sharding.AxisType.Auto,) * 2
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=auto)
    sharded, _ = load_hf_encoder(d, mesh=mesh, rules=(("embed", "data"), ("heads", "model")))
    assert tuple(sharded.position_embeddings.embedding[...].sharding.spec) == (None, "data")
    got = np.asarray(_forward(sharded, ids, mask).last_hidden_state)[real]
    assert_f32_close(got, want)
