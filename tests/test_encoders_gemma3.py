"""Gemma3 text checkpoints (``model_type`` ``gemma3_text``) against an independent NumPy forward
pass: EmbeddingGemma-style bidirectional attention with sliding windows, and causal Gemma3."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fixtures_decoders import (
    GEMMA3_CONFIG,
    SENTENCES,
    gemma_tokenizer,
    np_decoder,
    np_sentence_embeddings,
    padded_batch,
    visible,
    write_decoder,
    write_decoder_sentence_transformer,
)
from flax import nnx
from jax.sharding import AxisType, PartitionSpec
from safetensors.numpy import save_file
from tolerances import assert_f32_close

from jaxemb.encoders import (
    Gemma3Config,
    Gemma3Encoder,
    load_hf_encoder,
    load_sentence_transformer,
    save_hf_encoder,
)
from jaxemb.encoders._family import module_tensors
from jaxemb.encoders._gemma3 import GEMMA3, gemma3_config_from_hf, gemma3_config_to_hf

# 20 tokens: longer than the sliding window (7 in config.json: |q - k| <= 3 when bidirectional)
ROWS = [list(np.random.default_rng(0).integers(3, 97, n)) for n in (20, 13, 7, 16)]
SCALE_TOL = 2e-5  # float32 vs float64 at |x| ~ 4 after 3 layers: ~1e-6 observed


def run(enc, ids, mask, **kwargs):
    """``enc(ids, mask, **kwargs)`` compiled (faster than op-by-op on CPU)."""
    return jax.jit(lambda i, m: enc(i, m, **kwargs))(ids, mask)


def with_config(enc, **changes):
    """``enc``'s parameters in an encoder built from its config with ``changes``."""
    config = dataclasses.replace(enc.config, **changes)
    abstract = nnx.eval_shape(lambda: Gemma3Encoder(config, rngs=nnx.Rngs(0)))
    return nnx.merge(nnx.split(abstract)[0], nnx.state(enc))


def assert_real_close(got, want, mask, scale_tol=SCALE_TOL):
    real = np.asarray(mask) > 0
    assert_f32_close(np.asarray(got)[real], want[real], rtol=0, scale_tol=scale_tol)


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gemma3")
    cfg, tensors = write_decoder(d, GEMMA3_CONFIG, seed=1)
    return d, cfg, tensors


@pytest.mark.parametrize("side", ["right", "left"])
def test_bidirectional_sliding_window_matches_numpy(gemma_dir, side):
    d, cfg, tensors = gemma_dir
    enc, _ = load_hf_encoder(d)
    assert isinstance(enc, Gemma3Encoder)
    c = enc.config
    assert c.use_bidirectional_attention and c.sliding_window == 7
    assert [c.layer_window(n) for n in range(3)] == [4, None, 4]
    ids, mask = padded_batch(ROWS, side, 0)
    out = run(enc, ids, mask, output_hidden_states=True)
    ref = np_decoder(tensors, cfg, ids, mask)
    assert len(out.hidden_states) == 4
    for got, want in zip(out.hidden_states, ref):
        assert_real_close(got, want, mask)
    assert_real_close(out.last_hidden_state, ref[-1], mask)
    # the window matters at this length: a reference with it one wider disagrees
    wider = np_decoder(tensors, {**cfg, "sliding_window": 9}, ids, mask)[-1]
    assert np.abs(wider - ref[-1])[mask > 0].max() > 0.1


def test_window_reading():
    # transformers: bidirectional windows keep |q - k| <= sliding_window // 2, causal ones
    # q - k < sliding_window; the NumPy reference and the encoder's config agree on both
    for window, bidirectional in ((7, True), (6, True), (512, True), (5, False)):
        cfg = {**GEMMA3_CONFIG, "sliding_window": window}
        cfg["use_bidirectional_attention"] = bidirectional
        ours = gemma3_config_from_hf(cfg).layer_window(0)
        seen = visible(cfg, "sliding_attention", 600)
        q, k = np.meshgrid(np.arange(600), np.arange(600), indexing="ij")
        if bidirectional:
            np.testing.assert_array_equal(seen, np.abs(q - k) < ours)
        else:
            np.testing.assert_array_equal(seen, (k <= q) & (q - k < ours))


def test_causal_lm_checkpoint_with_legacy_config(tmp_path):
    # Gemma3ForCausalLM layout and an older config.json: rope_theta / rope_local_base_freq,
    # rope_scaling (linear, global layers only), sliding_window_pattern instead of layer_types;
    # causal attention with a sliding window.
    cfg, tensors = write_decoder(
        tmp_path,
        GEMMA3_CONFIG,
        seed=2,
        prefix="model.",
        lm_head=True,
        rope_parameters=None,
        rope_theta=20000.0,
        rope_local_base_freq=500.0,
        rope_scaling={"rope_type": "linear", "factor": 4.0},
        layer_types=None,
        sliding_window_pattern=2,
        num_hidden_layers=4,
        use_bidirectional_attention=False,
        sliding_window=5,
        num_key_value_heads=1,
        query_pre_attn_scalar=8,
        architectures=["Gemma3ForCausalLM"],
    )
    enc, _ = load_hf_encoder(tmp_path)
    c = enc.config
    assert c.layer_types == ("sliding_attention", "full_attention") * 2 and c.causal
    assert [c.layer_rope(n) for n in (0, 1)] == [(500.0, 1.0), (20000.0, 4.0)]
    ids, mask = padded_batch(ROWS, "left", 0)
    ref = np_decoder(tensors, cfg, ids, mask)[-1]
    assert_real_close(run(enc, ids, mask).last_hidden_state, ref, mask)


def test_padding_side_and_junk_never_change_real_tokens(gemma_dir):
    d, _, _ = gemma_dir
    enc, _ = load_hf_encoder(d)
    fwd = jax.jit(lambda i, m: enc(i, m).last_hidden_state)
    right_ids, right_mask = padded_batch(ROWS, "right", 0)
    left_ids, left_mask = padded_batch(ROWS, "left", 0)
    right = np.asarray(fwd(right_ids, right_mask))
    junk = np.where(right_mask > 0, right_ids, 55)
    np.testing.assert_array_equal(
        np.asarray(fwd(junk, right_mask))[right_mask > 0], right[right_mask > 0]
    )
    left = np.asarray(fwd(left_ids, left_mask))
    assert_f32_close(left[left_mask > 0], right[right_mask > 0], rtol=0, scale_tol=2e-6)


def test_bfloat16_within_bfloat16_tolerance(gemma_dir):
    d, cfg, tensors = gemma_dir
    enc, _ = load_hf_encoder(d)
    ids, mask = padded_batch(ROWS, "right", 0)
    got = np.asarray(run(with_config(enc, compute_dtype="bfloat16"), ids, mask).last_hidden_state)
    ref = np_decoder(tensors, cfg, ids, mask)[-1]
    err = np.abs(got - ref)[mask > 0].max() / np.abs(ref).max()
    # bf16 matmuls (8 significant bits) through 3 layers: transformers' own bf16 run is ~2% off
    # its float32 one at this scale; a wrong computation is off by O(1).
    assert 1e-4 < err < 0.05, err


def test_config_round_trip_and_export(gemma_dir, tmp_path):
    d, _, _ = gemma_dir
    enc, _ = load_hf_encoder(d)
    assert gemma3_config_from_hf(gemma3_config_to_hf(enc.config)) == enc.config
    for other in (
        Gemma3Config(
            vocab_size=10,
            hidden_size=8,
            num_layers=4,
            num_heads=2,
            num_kv_heads=2,
            head_dim=4,
            intermediate_size=8,
            sliding_window=9,
            sliding_pattern=2,
            rope_scaling_factor=8.0,
            rope_local_scaling_factor=2.0,
            query_pre_attn_scalar=5.5,
            use_bidirectional_attention=False,
            tie_word_embeddings=False,
        ),
        Gemma3Config(),
    ):
        assert gemma3_config_from_hf(gemma3_config_to_hf(other)) == other
    tok_dir = tmp_path / "with_tokenizer"
    tok = gemma_tokenizer()
    write_decoder(tok_dir, GEMMA3_CONFIG, seed=1, vocab_size=tok.get_vocab_size())
    tok.save(str(tok_dir / "tokenizer.json"))
    enc, tokenizer = load_hf_encoder(tok_dir)
    out = save_hf_encoder(enc, tokenizer, tmp_path / "export")
    back, back_tok = load_hf_encoder(out)
    assert back.config == enc.config
    plan = GEMMA3.tensor_plan(enc.config)
    a, b = module_tensors(enc, plan), module_tensors(back, plan)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert back_tok.encode("the fox").ids == tokenizer.encode("the fox").ids
    written = json.loads((out / "config.json").read_text())
    assert written["model_type"] == "gemma3_text" and written["use_bidirectional_attention"]
    assert written["rope_parameters"]["sliding_attention"]["rope_theta"] == 10000.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attn_logit_softcapping": 50.0}, "attn_logit_softcapping 50.0"),
        (
            {"rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 8.0}}},
            r"rope_parameters\.full_attention rope_type 'yarn'",
        ),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_type 'dynamic'"),
        ({"rope_parameters": {"rope_type": "default"}}, "rope_parameters must map"),
        ({"hidden_activation": "swiglu"}, "hidden_activation 'swiglu'"),
        ({"sliding_window": None}, "sliding_attention layers but sliding_window is None"),
        ({"query_pre_attn_scalar": 0}, "query_pre_attn_scalar"),
        ({"num_key_value_heads": 3}, "num_heads must be a multiple of num_kv_heads"),
    ],
)
def test_unsupported_settings_are_refused(tmp_path, change, message):
    cfg = {**GEMMA3_CONFIG, **change}
    with pytest.raises(ValueError, match=message):
        gemma3_config_from_hf(cfg)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file({"x": np.zeros(1, np.float32)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=message):
        load_hf_encoder(tmp_path)


def test_missing_tensor_is_named(gemma_dir, tmp_path):
    d, cfg, tensors = gemma_dir
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    broken = {k: val for k, val in tensors.items() if "2.pre_feedforward_layernorm" not in k}
    save_file(broken, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"layers\.2\.pre_feedforward_layernorm\.weight"):
        load_hf_encoder(tmp_path)


@pytest.mark.parametrize(
    ("rules", "spec"),
    [
        ((("heads", "model"), ("mlp", "model")), PartitionSpec(None, "model")),
        ((("embed", "data"),), PartitionSpec("data", None)),
    ],
)
def test_sharded_loading_gives_the_unsharded_output(gemma_dir, rules, spec):
    d, _, _ = gemma_dir
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto))
    enc, _ = load_hf_encoder(d)
    sharded, _ = load_hf_encoder(d, mesh=mesh, rules=rules)
    for kernel in (
        sharded.layers[0].self_attn.k_proj.kernel[...],
        sharded.layers[2].mlp.gate_proj.kernel[...],
    ):
        assert kernel.sharding.spec == spec and len(kernel.addressable_shards) == 8
    down = sharded.layers[1].mlp.down_proj.kernel[...].sharding.spec
    assert down == PartitionSpec(*reversed(spec))
    ids, mask = padded_batch(ROWS, "right", 0)
    ids, mask = jnp.asarray(ids), jnp.asarray(mask)
    want = np.asarray(run(enc, ids, mask).last_hidden_state)
    graphdef, state = nnx.split(sharded)
    got = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m).last_hidden_state)(state, ids, mask)
    real = np.asarray(mask) > 0
    assert_f32_close(np.asarray(got)[real], want[real], rtol=0, scale_tol=2e-6)


def test_embeddinggemma_sentence_transformer(tmp_path):
    st = write_decoder_sentence_transformer(tmp_path, "gemma3", seed=3)
    emb = load_sentence_transformer(tmp_path)
    assert emb.padding_side == "right" and emb.pooling == ("mean",) and emb.normalize
    assert emb.dim == 32 and [p["kernel"].shape for p in emb.params["dense"]] == [
        (32, 128),
        (128, 32),
    ]
    texts = ["fox", " ".join(reversed(SENTENCES)), "the lazy dog", "jax!?"]
    for name in (None, "query", "document"):
        got = emb.encode(texts, prompt_name=name, batch_size=3)
        want = np_sentence_embeddings(st, texts, st["prompts"][name] if name else "")
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    batch = emb.prepare(texts[:2], prompt_name="document")
    ids = batch["input_ids"]
    assert ids[0, 0] == 2 and ids[0, batch["attention_mask"][0].sum() - 1] == 1  # <bos> … <eos>
    assert batch["attention_mask"][1].sum() == 24 and ids[1, -1] == 1  # truncated, <eos> kept
