"""ModernBERT (``model_type`` ``modernbert``) against an independent NumPy forward pass.

Cross-checked in a throwaway environment too (torch 2.13, transformers 5.25,
sentence-transformers 6.3; tiny random configs with 4 and 5 layers, windows 8 and 7, a sequence
of 20 tokens, biases on and off): ``load_hf_encoder`` equals ``AutoModel``'s
``last_hidden_state`` (sdpa and eager) within 6e-6 on real positions padded on the right, and
each sequence run alone within 6e-6 padded on either side (outputs up to 4.3); a transformers
4.x ``config.json`` (``global_rope_theta`` ...) and a ``ModernBertForMaskedLM`` checkpoint load
to the same; bfloat16 is 0.09 from float32 where transformers' own bfloat16 is 0.10-0.14;
``load_sentence_transformer(...).encode`` equals ``SentenceTransformer.encode`` within 2.7e-7
(mean + Normalize) and 6e-6 (CLS); directories written by ``save_hf_encoder`` /
``save_sentence_transformer`` load in transformers (4.5e-6) and sentence-transformers (2.7e-7).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
from fixtures_modernbert import (
    SENTENCES,
    np_modernbert,
    tokenize,
    write_modernbert,
    write_modernbert_sentence_transformer,
)
from flax import nnx
from safetensors.numpy import load_file, save_file
from tolerances import assert_f32_close

from jaxemb.encoders import (
    ModernBertConfig,
    ModernBertEncoder,
    load_hf_encoder,
    load_sentence_transformer,
    param_shardings,
    save_hf_encoder,
)
from jaxemb.encoders._modernbert import (
    MODERNBERT,
    modernbert_config_from_hf,
    modernbert_config_to_hf,
)

# A long sequence (20+ tokens, past the 3-token half-window), short ones, one of two tokens.
TEXTS = [SENTENCES[2] + " " + SENTENCES[0], SENTENCES[3], "fox", SENTENCES[6]]
BIASED = dict(
    norm_bias=True,
    attention_bias=True,
    mlp_bias=True,
    hidden_activation="gelu_pytorch_tanh",
    norm_eps=1e-6,
    num_hidden_layers=3,
    layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    local_attention=5,
    rope_parameters={
        "full_attention": {"rope_type": "default", "rope_theta": 500.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 50.0},
    },
)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    d = tmp_path_factory.mktemp("modernbert")
    cfg, tensors, tok = write_modernbert(d, seed=1)
    return d, cfg, tensors, tok


@nnx.jit
def _hidden(enc, ids, mask):
    out = enc(ids, mask, output_hidden_states=True)
    return out.last_hidden_state, out.hidden_states


@nnx.jit
def _last(enc, ids, mask, rngs=None):
    return enc(ids, mask, rngs=rngs).last_hidden_state


def run(enc, ids, mask=None, rngs=None):
    """``last_hidden_state`` as NumPy, jitted (one compile per structure and shape)."""
    mask = np.ones_like(ids) if mask is None else mask
    return np.asarray(_last(enc, ids, mask, rngs))


def _replace_config(enc, **change):
    """``enc``'s parameters in an encoder of ``enc.config`` with ``change`` applied."""
    cfg = dataclasses.replace(enc.config, **change)
    abstract = nnx.eval_shape(lambda: ModernBertEncoder(cfg, rngs=nnx.Rngs(0)))
    abstract.eval()
    graphdef, _ = nnx.split(abstract)
    return nnx.merge(graphdef, nnx.state(enc))


def _check_against_numpy(enc, cfg, tensors, tok, side):
    ids, mask = tokenize(tok, TEXTS, 40, cfg["pad_token_id"], side)
    assert ids.shape[1] > 2 * cfg["local_attention"]  # the window matters
    last, hidden = _hidden(enc, ids, mask)
    want = np_modernbert(tensors, cfg, ids, mask)
    real = mask.astype(bool)
    assert len(hidden) == cfg["num_hidden_layers"] + 1
    for n, (got, ref) in enumerate(zip(hidden, want, strict=True)):
        assert_f32_close(np.asarray(got)[real], ref[real], err_msg=f"hidden state {n} ({side})")
    np.testing.assert_array_equal(np.asarray(last), np.asarray(hidden[-1]))
    return np.asarray(last), ids, mask


@pytest.mark.parametrize("side", ["right", "left"])
def test_matches_numpy_unpadded_forward_padded_either_side(plain, side):
    d, cfg, tensors, tok = plain
    enc, tokenizer = load_hf_encoder(d)
    assert isinstance(enc, ModernBertEncoder) and tokenizer.get_vocab_size() == cfg["vocab_size"]
    assert enc.config.attention_kinds == tuple(cfg["layer_types"])
    last, ids, mask = _check_against_numpy(enc, cfg, tensors, tok, side)
    # a row run alone (no padding at all, no mask) gives its states in the padded batch
    cols = np.flatnonzero(mask[1])
    assert_f32_close(run(enc, ids[1:2, cols])[0], last[1, cols], err_msg=f"alone ({side})")


def test_biases_other_activation_and_explicit_layer_types(tmp_path):
    cfg, tensors, tok = write_modernbert(tmp_path, seed=2, **BIASED)
    enc, _ = load_hf_encoder(tmp_path)
    assert enc.config.layer_types == tuple(BIASED["layer_types"])
    assert (enc.config.global_rope_theta, enc.config.local_rope_theta) == (500.0, 50.0)
    _check_against_numpy(enc, cfg, tensors, tok, "right")


def test_window_and_rope_bases_change_the_result(plain):
    """The comparisons above can fail: a wider window or swapped rotary bases move the output
    far beyond the tolerance (and NumPy follows each change)."""
    d, cfg, tensors, tok = plain
    enc, _ = load_hf_encoder(d)
    ids, mask = tokenize(tok, TEXTS[:1], 40, cfg["pad_token_id"])
    base = run(enc, ids, mask)
    for change in (
        {"local_attention": 12},
        {
            "global_rope_theta": enc.config.local_rope_theta,
            "local_rope_theta": enc.config.global_rope_theta,
        },
    ):
        other = _replace_config(enc, **change)
        got = run(other, ids, mask)
        assert np.abs(got - base).max() > 1e-2, change
        ref_cfg = json.loads(json.dumps(modernbert_config_to_hf(other.config)))
        ref = np_modernbert(tensors, ref_cfg, ids, mask)[-1]
        assert_f32_close(got[0], ref[0], err_msg=str(change))


def test_masked_lm_checkpoint_and_legacy_config(tmp_path, plain):
    d, cfg, tensors, tok = plain
    mlm = tmp_path / "mlm"
    write_modernbert(mlm, seed=1, prefix="model.", head=True)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    old = {k: v for k, v in cfg.items() if k not in ("layer_types", "rope_parameters")}
    old.update(global_rope_theta=160000.0, local_rope_theta=10000.0, reference_compile=True)
    (legacy / "config.json").write_text(json.dumps(old))
    save_file(tensors, str(legacy / "model.safetensors"))
    ids, mask = tokenize(tok, TEXTS, 40, cfg["pad_token_id"])
    enc, _ = load_hf_encoder(d)
    want = run(enc, ids, mask)
    for other in (mlm, legacy):
        enc2, _ = load_hf_encoder(other)
        assert enc2.config == enc.config, other.name
        np.testing.assert_array_equal(run(enc2, ids, mask), want)


def test_config_round_trip():
    configs = [
        ModernBertConfig(),
        ModernBertConfig(
            vocab_size=99,
            hidden_size=24,
            num_layers=5,
            num_heads=2,
            intermediate_size=7,
            max_positions=100,
            activation="silu",
            norm_eps=1e-7,
            norm_bias=True,
            attention_bias=True,
            mlp_bias=False,
            global_rope_theta=3.0,
            local_rope_theta=2.0,
            local_attention=9,
            global_attn_every_n_layers=2,
            embedding_dropout=0.1,
            attention_dropout=0.2,
            mlp_dropout=0.3,
            initializer_range=0.05,
            pad_token_id=4,
        ),
        ModernBertConfig(num_layers=2, layer_types=("sliding_attention", "sliding_attention")),
    ]
    for cfg in configs:
        hf = json.loads(json.dumps(modernbert_config_to_hf(cfg)))
        assert modernbert_config_from_hf(hf) == cfg
        assert hf["layer_types"] == list(cfg.attention_kinds)
    # a pattern-following layer_types reads as the pattern
    assert configs[1].attention_kinds == ("full_attention", "sliding_attention") * 2 + (
        "full_attention",
    )


def test_transformers_4_config_of_modernbert_base_reads_as_the_defaults():
    """The keys a transformers 4.48 ``ModernBertForMaskedLM`` config.json carries (as
    ModernBERT-base's): head, kernel and bookkeeping settings are ignored."""
    hf = {
        "architectures": ["ModernBertForMaskedLM"],
        "model_type": "modernbert",
        "vocab_size": 50368,
        "hidden_size": 768,
        "intermediate_size": 1152,
        "num_hidden_layers": 22,
        "num_attention_heads": 12,
        "hidden_activation": "gelu",
        "max_position_embeddings": 8192,
        "norm_eps": 1e-05,
        "layer_norm_eps": 1e-05,
        "norm_bias": False,
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "embedding_dropout": 0.0,
        "mlp_dropout": 0.0,
        "global_attn_every_n_layers": 3,
        "global_rope_theta": 160000.0,
        "local_rope_theta": 10000.0,
        "local_attention": 128,
        "rope_scaling": None,
        "initializer_range": 0.02,
        "initializer_cutoff_factor": 2.0,
        "pad_token_id": 50283,
        "bos_token_id": 50281,
        "cls_token_id": 50281,
        "eos_token_id": 50282,
        "sep_token_id": 50282,
        "classifier_activation": "gelu",
        "classifier_bias": False,
        "classifier_dropout": 0.0,
        "classifier_pooling": "mean",
        "decoder_bias": True,
        "deterministic_flash_attn": False,
        "gradient_checkpointing": False,
        "position_embedding_type": "absolute",
        "reference_compile": True,
        "sparse_pred_ignore_index": -100,
        "sparse_prediction": False,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "transformers_version": "4.48.0",
    }
    cfg = modernbert_config_from_hf(hf)
    assert cfg == ModernBertConfig()
    assert cfg.attention_kinds.count("full_attention") == 8  # layers 0, 3, ..., 21


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
        (
            {"rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 2.0}}},
            "rope_type 'yarn'",
        ),
        ({"rope_parameters": {"rope_type": "default", "rope_theta": 5.0}}, "rope_parameters"),
        ({"head_dim": 16}, "head_dim 16"),
        ({"hidden_activation": "quick_gelu"}, "hidden_activation 'quick_gelu'"),
        ({"layer_types": ["full_attention"] * 3}, "layer_types"),
        ({"layer_types": ["chunked_attention"] * 4}, "layer_types"),
        ({"sliding_window": 5}, "sliding_window 5"),
        ({"is_causal": True}, "is_causal"),
    ],
)
def test_refuses_settings_it_does_not_reproduce(plain, change, needle):
    _, cfg, _, _ = plain
    with pytest.raises(ValueError, match=needle.replace("[", r"\[")):
        modernbert_config_from_hf({**cfg, **change}, "cfg.json")
    # heads' and kernels' settings are ignored
    modernbert_config_from_hf({**cfg, "classifier_bias": True, "deterministic_flash_attn": True})


def test_bad_config_arguments_and_inputs():
    for kwargs, needle in [
        ({"hidden_size": 30, "num_heads": 4}, "hidden_size"),
        ({"hidden_size": 12, "num_heads": 4}, "even head dimension"),
        ({"layer_types": ("full_attention",)}, "layer_types"),
        ({"mlp_dropout": 1.0}, "mlp_dropout"),
        ({"norm_bias": 1}, "norm_bias"),
        ({"activation": "tanh"}, "activation"),
        ({"local_rope_theta": 0.0}, "local_rope_theta"),
    ]:
        with pytest.raises(ValueError, match=needle):
            ModernBertConfig(**kwargs)
    cfg = ModernBertConfig(
        vocab_size=10, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=8
    )
    enc = nnx.eval_shape(lambda: ModernBertEncoder(cfg, rngs=nnx.Rngs(0)))  # checks come first
    with pytest.raises(ValueError, match="vocab_size=10"):
        enc(np.array([[1, 10]]))
    with pytest.raises(ValueError, match="attention_mask"):
        enc(np.array([[1, 2]]), np.ones((1, 3)))
    with pytest.raises(ValueError, match="ModernBertConfig"):
        ModernBertEncoder(object(), rngs=nnx.Rngs(0))


def test_missing_or_misshaped_tensor_is_named(tmp_path, plain):
    _, cfg, tensors, _ = plain
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    bad = dict(tensors)
    del bad["layers.2.attn_norm.weight"]
    save_file(bad, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="missing tensors: layers.2.attn_norm.weight"):
        load_hf_encoder(tmp_path)
    bad = dict(tensors)
    bad["layers.1.mlp.Wi.weight"] = bad["layers.1.mlp.Wi.weight"][:40]
    save_file(bad, str(tmp_path / "model.safetensors"))
    with pytest.raises(
        ValueError, match=r"layers.1.mlp.Wi.weight has shape \[40, 32\]; expected \[80, 32\]"
    ):
        load_hf_encoder(tmp_path)


def test_bfloat16_compute_tracks_float32(plain):
    d, cfg, tensors, tok = plain
    enc, _ = load_hf_encoder(d)
    ids, mask = tokenize(tok, TEXTS, 40, cfg["pad_token_id"])
    got = run(_replace_config(enc, compute_dtype="bfloat16"), ids, mask)
    ref = np_modernbert(tensors, cfg, ids, mask)[-1]
    real = mask.astype(bool)
    err = np.abs(got - ref)[real].max()
    # bf16 has 8 significant bits: a few 2^-8 relative at the outputs' scale, not more
    assert err < 0.05 * np.abs(ref[real]).max(), err
    assert err > 1e-4  # the matmuls really ran in bfloat16
    assert got.dtype == np.float32


def test_dropout_in_training_mode_only():
    cfg = ModernBertConfig(
        vocab_size=20,
        hidden_size=16,
        num_layers=2,
        num_heads=2,
        intermediate_size=8,
        embedding_dropout=0.1,
        attention_dropout=0.1,
        mlp_dropout=0.1,
    )
    # training mode after construction (initialised in one compiled program)
    enc = nnx.jit(lambda: ModernBertEncoder(cfg, rngs=nnx.Rngs(0)))()
    ids = np.arange(12).reshape(2, 6)
    a = run(enc, ids, None, nnx.Rngs(dropout=1))
    b = run(enc, ids, None, nnx.Rngs(dropout=2))
    enc.eval()
    want = run(enc, ids)
    assert np.abs(a - b).max() > 1e-3 and np.abs(a - want).max() > 1e-3


def test_sharded_loading_gives_the_unsharded_output(plain):
    d, cfg, _, tok = plain
    enc, _ = load_hf_encoder(d)
    auto = (jax.sharding.AxisType.Auto,) * 2
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=auto)
    for rules in ((("heads", "model"), ("mlp", "model")), (("embed", "data"),)):
        sharded, _ = load_hf_encoder(d, mesh=mesh, rules=rules)
        specs = param_shardings(sharded, mesh, rules)
        wi = sharded.layers[1].mlp.wi.kernel[...]
        assert wi.sharding.spec == specs["layers"][1]["mlp"]["wi"]["kernel"].spec
        assert len(wi.sharding.device_set) == 8
        ids, mask = tokenize(tok, TEXTS, 40, cfg["pad_token_id"])
        assert_f32_close(run(sharded, ids, mask), run(enc, ids, mask))
    # every parameter carries logical axis names
    for path, var in nnx.to_flat_state(nnx.state(enc, nnx.Param)):
        assert var.get_metadata().get("out_sharding"), path


def test_sentence_transformer_pipeline_matches_numpy(tmp_path):
    cfg, tensors, tok = write_modernbert_sentence_transformer(tmp_path, max_seq_length=24)
    emb = load_sentence_transformer(tmp_path)
    assert emb.pad_id == tok.token_to_id("[PAD]") and emb.max_seq_length == 24
    got = emb.encode(TEXTS, batch_size=3)
    ids, mask = tokenize(tok, TEXTS, 24, cfg["pad_token_id"])
    h = np_modernbert(tensors, cfg, ids, mask)[-1]
    m = mask[..., None].astype(np.float64)
    want = (h * m).sum(1) / m.sum(1)
    want /= np.linalg.norm(want, axis=-1, keepdims=True)
    assert_f32_close(got, want)


def test_export_round_trip_is_bit_exact(tmp_path, plain):
    d, cfg, tensors, tok = plain
    src = tmp_path / "src"
    write_modernbert(src, seed=4, **BIASED)
    for path in (d, src):
        enc, tokenizer = load_hf_encoder(path)
        out = save_hf_encoder(enc, tokenizer, tmp_path / f"out_{path.name}")
        back, tok2 = load_hf_encoder(out)
        assert back.config == enc.config
        assert tok2.to_str() == tokenizer.to_str() or tok2.get_vocab() == tokenizer.get_vocab()
        written = load_file(str(out / "model.safetensors"))
        assert sorted(written) == sorted(MODERNBERT.tensor_plan(enc.config))
        for a, b in zip(
            jax.tree.leaves(nnx.state(enc)), jax.tree.leaves(nnx.state(back)), strict=True
        ):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        hf = json.loads((out / "config.json").read_text())
        assert hf["model_type"] == "modernbert" and hf["layer_types"] == list(
            enc.config.attention_kinds
        )
