"""Qwen3 checkpoints (``model_type`` ``qwen3``) against an independent NumPy forward pass."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fixtures_decoders import (
    QWEN3_CONFIG,
    SENTENCES,
    np_decoder,
    np_sentence_embeddings,
    padded_batch,
    qwen_tokenizer,
    write_decoder,
    write_decoder_sentence_transformer,
)
from flax import nnx
from jax.sharding import AxisType, PartitionSpec
from safetensors.numpy import load_file, save_file
from tolerances import assert_f32_close

from jaxemb.encoders import (
    Qwen3Config,
    Qwen3Encoder,
    load_hf_encoder,
    load_sentence_transformer,
    save_hf_encoder,
)
from jaxemb.encoders._family import module_tensors
from jaxemb.encoders._qwen3 import QWEN3, qwen3_config_from_hf, qwen3_config_to_hf

ROWS = [list(np.random.default_rng(0).integers(3, 97, n)) for n in (20, 13, 7, 16)]
# float32 against float64 at |x| ~ 4 after 3 layers: ~1e-6 observed; 2e-5 of the scale bounds it.
SCALE_TOL = 2e-5


def assert_real_close(got, want, mask, scale_tol=SCALE_TOL):
    real = np.asarray(mask) > 0
    assert_f32_close(np.asarray(got)[real], want[real], rtol=0, scale_tol=scale_tol)


def run(enc, ids, mask, **kwargs):
    """``enc(ids, mask, **kwargs)`` compiled (faster than op-by-op on CPU)."""
    return jax.jit(lambda i, m: enc(i, m, **kwargs))(ids, mask)


def with_config(enc, **changes):
    """``enc``'s parameters in an encoder built from its config with ``changes``."""
    config = dataclasses.replace(enc.config, **changes)
    abstract = nnx.eval_shape(lambda: Qwen3Encoder(config, rngs=nnx.Rngs(0)))
    return nnx.merge(nnx.split(abstract)[0], nnx.state(enc))


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("qwen3")
    cfg, tensors = write_decoder(d, QWEN3_CONFIG, seed=1)
    return d, cfg, tensors


@pytest.mark.parametrize("side", ["right", "left"])
def test_matches_numpy_all_hidden_states(qwen_dir, side):
    d, cfg, tensors = qwen_dir
    enc, tokenizer = load_hf_encoder(d)
    assert isinstance(enc, Qwen3Encoder) and tokenizer is None
    assert enc.config.head_dim == 16 and enc.config.num_kv_heads == 2
    ids, mask = padded_batch(ROWS, side, 0)
    out = run(enc, ids, mask, output_hidden_states=True)
    ref = np_decoder(tensors, cfg, ids, mask)
    assert len(out.hidden_states) == cfg["num_hidden_layers"] + 1
    for got, want in zip(out.hidden_states, ref):
        assert_real_close(got, want, mask)
    assert_real_close(out.last_hidden_state, ref[-1], mask)


def test_padding_side_and_junk_never_change_real_tokens(qwen_dir):
    d, _, _ = qwen_dir
    enc, _ = load_hf_encoder(d)
    fwd = jax.jit(lambda i, m: enc(i, m).last_hidden_state)
    right_ids, right_mask = padded_batch(ROWS, "right", 0)
    left_ids, left_mask = padded_batch(ROWS, "left", 0)
    right = np.asarray(fwd(right_ids, right_mask))
    left = np.asarray(fwd(left_ids, left_mask))
    junk = np.where(right_mask > 0, right_ids, 55)  # padded positions hold other tokens
    with_junk = np.asarray(fwd(junk, right_mask))
    np.testing.assert_array_equal(with_junk[right_mask > 0], right[right_mask > 0])
    # rotary attention is relative: shifting every real token by the left padding moves the
    # states by float32 rounding only
    assert_f32_close(left[left_mask > 0], right[right_mask > 0], rtol=0, scale_tol=2e-6)


def test_causal_lm_checkpoint_with_legacy_config(tmp_path):
    # Qwen3ForCausalLM layout (model. prefix, lm_head ignored) and a config.json of older
    # transformers: rope_theta + rope_scaling (linear) and sliding layers from
    # use_sliding_window / max_window_layers; attention biases; one kv head.
    cfg, tensors = write_decoder(
        tmp_path,
        QWEN3_CONFIG,
        seed=2,
        prefix="model.",
        lm_head=True,
        rope_parameters=None,
        rope_theta=5000.0,
        rope_scaling={"type": "linear", "factor": 2.0},
        layer_types=None,
        use_sliding_window=True,
        sliding_window=5,
        max_window_layers=1,
        attention_bias=True,
        num_key_value_heads=1,
        architectures=["Qwen3ForCausalLM"],
    )
    enc, _ = load_hf_encoder(tmp_path)
    c = enc.config
    assert c.layer_types == ("full_attention", "sliding_attention", "sliding_attention")
    assert (c.rope_base, c.rope_scaling_factor, c.sliding_window) == (5000.0, 2.0, 5)
    ids, mask = padded_batch(ROWS, "left", 0)  # 20 tokens: longer than the window
    ref = np_decoder(tensors, cfg, ids, mask)[-1]
    assert_real_close(run(enc, ids, mask).last_hidden_state, ref, mask)


def test_bfloat16_within_bfloat16_tolerance(qwen_dir):
    d, cfg, tensors = qwen_dir
    enc, _ = load_hf_encoder(d)
    bf = with_config(enc, compute_dtype="bfloat16")
    ids, mask = padded_batch(ROWS, "right", 0)
    got = np.asarray(jax.jit(lambda i, m: bf(i, m).last_hidden_state)(ids, mask))
    assert got.dtype == np.float32
    ref = np_decoder(tensors, cfg, ids, mask)[-1]
    real = mask > 0
    err = np.abs(got - ref)[real].max() / np.abs(ref).max()
    # bf16 matmuls (8 significant bits) through 3 layers: transformers' own bf16 run is ~2% off
    # its float32 one at this scale; a wrong computation is off by O(1).
    assert 1e-4 < err < 0.05, err


def test_config_round_trip_and_export(qwen_dir, tmp_path):
    d, cfg, _ = qwen_dir
    enc, _ = load_hf_encoder(d)
    assert qwen3_config_from_hf(qwen3_config_to_hf(enc.config)) == enc.config
    for other in (
        Qwen3Config(
            vocab_size=10,
            hidden_size=8,
            num_layers=3,
            num_heads=2,
            num_kv_heads=1,
            head_dim=4,
            intermediate_size=8,
            attention_bias=True,
            rope_scaling_factor=4.0,
            sliding_window=3,
            layer_types=("full_attention", "sliding_attention", "full_attention"),
            tie_word_embeddings=False,
            pad_token_id=3,
        ),
        Qwen3Config(),
    ):
        assert qwen3_config_from_hf(qwen3_config_to_hf(other)) == other
    # load -> save_hf_encoder -> load is bit-exact, with a Qwen-style tokenizer
    tok_dir = tmp_path / "with_tokenizer"
    tok = qwen_tokenizer()
    write_decoder(tok_dir, QWEN3_CONFIG, seed=1, vocab_size=tok.get_vocab_size())
    tok.save(str(tok_dir / "tokenizer.json"))
    enc, tokenizer = load_hf_encoder(tok_dir)
    special = {"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>"}
    out = save_hf_encoder(
        enc, tokenizer, tmp_path / "export", padding_side="left", special_tokens=special
    )
    back, back_tok = load_hf_encoder(out)
    assert back.config == enc.config
    plan = QWEN3.tensor_plan(enc.config)
    a, b = module_tensors(enc, plan), module_tensors(back, plan)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert back_tok.encode("the fox").ids == tokenizer.encode("the fox").ids
    written = json.loads((out / "config.json").read_text())
    assert written["model_type"] == "qwen3" and written["head_dim"] == 16
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg["padding_side"] == "left" and tok_cfg["pad_token"] == "<|endoftext|>"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "rope_type 'yarn'"),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope_scaling rope_type 'dynamic'"),
        (
            {"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5}},
            "partial_rotary_factor 0.5",
        ),
        ({"hidden_act": "mish"}, "hidden_act 'mish'"),
        ({"layer_types": ["sliding_attention"] * 3}, "sliding_attention layers but"),
        ({"num_key_value_heads": 3}, "num_heads must be a multiple of num_kv_heads"),
        ({"head_dim": 7}, "head_dim must be even"),
        ({"layer_types": ["full_attention"] * 2}, "one type per layer"),
    ],
)
def test_unsupported_settings_are_refused(tmp_path, change, message):
    cfg = {**QWEN3_CONFIG, **change}
    with pytest.raises(ValueError, match=message):
        qwen3_config_from_hf(cfg)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file({"x": np.zeros(1, np.float32)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=message):
        load_hf_encoder(tmp_path)


def test_missing_or_misshaped_tensor_and_bad_inputs(qwen_dir, tmp_path):
    d, cfg, _ = qwen_dir
    tensors = load_file(str(d / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    broken = dict(tensors)
    del broken["layers.1.self_attn.k_norm.weight"]
    save_file(broken, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing tensors: layers\.1\.self_attn\.k_norm\.weight"):
        load_hf_encoder(tmp_path)
    broken = dict(tensors, **{"layers.0.self_attn.k_proj.weight": np.zeros((16, 32), np.float32)})
    save_file(broken, str(tmp_path / "model.safetensors"))
    with pytest.raises(
        ValueError,
        match=r"layers\.0\.self_attn\.k_proj\.weight has shape \[16, 32\]; expected \[32, 32\]",
    ):
        load_hf_encoder(tmp_path)
    enc, _ = load_hf_encoder(d)
    with pytest.raises(ValueError, match="longer than max_positions=64"):
        enc(np.ones((1, 65), np.int32))
    with pytest.raises(ValueError, match="input_ids must be in"):
        enc(np.array([[1, 97]]))
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        enc(np.array([[1, 2]]), np.ones((1, 3)))


def test_dropout_in_training_mode(qwen_dir):
    d, _, _ = qwen_dir
    enc, _ = load_hf_encoder(d)
    model = with_config(enc, attention_dropout=0.5)
    ids, mask = padded_batch(ROWS, "right", 0)
    model.train()
    fwd = jax.jit(lambda key: model(ids, mask, rngs=nnx.Rngs(dropout=key)).last_hidden_state)
    a, b = np.asarray(fwd(jax.random.key(1))), np.asarray(fwd(jax.random.key(2)))
    assert not np.allclose(a[mask > 0], b[mask > 0])
    model.eval()
    np.testing.assert_array_equal(
        np.asarray(run(model, ids, mask).last_hidden_state),
        np.asarray(run(enc, ids, mask).last_hidden_state),
    )


@pytest.mark.parametrize(
    ("rules", "spec"),
    [
        ((("heads", "model"), ("mlp", "model")), PartitionSpec(None, "model")),
        ((("embed", "data"),), PartitionSpec("data", None)),
    ],
)
def test_sharded_loading_gives_the_unsharded_output(qwen_dir, rules, spec):
    d, _, _ = qwen_dir
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto))
    enc, _ = load_hf_encoder(d)
    sharded, _ = load_hf_encoder(d, mesh=mesh, rules=rules)
    for kernel in (
        sharded.layers[0].self_attn.q_proj.kernel[...],
        sharded.layers[1].mlp.up_proj.kernel[...],
    ):
        assert kernel.sharding.spec == spec and len(kernel.addressable_shards) == 8
    embed = sharded.embed_tokens.embedding[...].sharding.spec
    assert embed == (
        PartitionSpec(None, "data") if spec[0] == "data" else PartitionSpec(None, None)
    )
    ids, mask = padded_batch(ROWS, "left", 0)
    ids, mask = jnp.asarray(ids), jnp.asarray(mask)
    want = np.asarray(run(enc, ids, mask).last_hidden_state)
    graphdef, state = nnx.split(sharded)
    got = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m).last_hidden_state)(state, ids, mask)
    real = np.asarray(mask) > 0
    assert_f32_close(np.asarray(got)[real], want[real], rtol=0, scale_tol=2e-6)


def test_qwen3_embedding_sentence_transformer(tmp_path):
    st = write_decoder_sentence_transformer(tmp_path, "qwen3", seed=3)
    emb = load_sentence_transformer(tmp_path)
    assert emb.padding_side == "left" and emb.pooling == ("last_token",)
    assert emb.pad_id == st["pad_id"] and emb.max_seq_length == 24 and emb.normalize
    texts = ["fox", SENTENCES[1] + " " + SENTENCES[2], "the lazy dog", "jax!"]
    plain = emb.encode(texts, batch_size=3)
    query = emb.encode_query(texts, batch_size=3)
    np.testing.assert_allclose(plain, np_sentence_embeddings(st, texts), atol=1e-5, rtol=0)
    want = np_sentence_embeddings(st, texts, st["prompts"]["query"])
    np.testing.assert_allclose(query, want, atol=1e-5, rtol=0)
    assert np.abs(query - plain).max() > 0.1  # the instruction matters
    batch = emb.prepare(texts[:2])
    # <|endoftext|> ends every (left-padded) row, and the second row was truncated to 24 tokens
    assert (batch["input_ids"][:, -1] == st["pad_id"]).all()
    assert batch["attention_mask"][1].sum() == 24 and batch["attention_mask"][0, 0] == 0
