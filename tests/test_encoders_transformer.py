"""TransformerEncoder options and pooling against NumPy formulas and invariants."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding

from jaxemb.encoders import (
    AttentionPool,
    TransformerConfig,
    TransformerEncoder,
    param_shardings,
    pool,
)
from jaxemb.encoders._transformer import alibi_slopes, apply_rope, rope_frequencies

SMALL = dict(
    vocab_size=40,
    hidden_size=16,
    num_layers=2,
    num_heads=4,
    intermediate_size=24,
    max_positions=12,
    dropout=0.0,
)


def _ln(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * g + b


def np_pre_ln_forward(model, ids, mask, bias_fn):
    """Pre-LN encoder with an additive per-head bias [A, T, T], from the module's weights."""
    cfg = model.config
    a, dh = cfg.num_heads, cfg.head_dim
    p = jax.tree.map(lambda t: np.asarray(t, np.float64), nnx.to_pure_dict(nnx.state(model)))
    x = p["word_embeddings"]["embedding"][ids] + p["token_type_embeddings"]["embedding"][0]
    b, n, _ = x.shape
    bias = bias_fn(n)
    for layer in p["layers"].values():
        at = layer["attention"]

        def lin(z, q):
            return z @ q["kernel"] + q["bias"]

        hn = _ln(
            x, layer["attention_norm"]["scale"], layer["attention_norm"]["bias"], cfg.layer_norm_eps
        )
        q, k, v = (
            lin(hn, at[m]).reshape(b, n, a, dh).transpose(0, 2, 1, 3)
            for m in ("query", "key", "value")
        )
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh) + bias[None]
        s = np.where(mask[:, None, None, :] > 0, s, -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        x = x + lin((s @ v).transpose(0, 2, 1, 3).reshape(b, n, a * dh), at["out"])
        hn = _ln(x, layer["output_norm"]["scale"], layer["output_norm"]["bias"], cfg.layer_norm_eps)
        mid = lin(hn, layer["intermediate"])
        x = x + lin(np.maximum(mid, 0), layer["output"])
    return _ln(x, p["final_norm"]["scale"], p["final_norm"]["bias"], cfg.layer_norm_eps)


@pytest.mark.parametrize("position", ["alibi", "kerple_log", "kerple_power"])
def test_pre_ln_relative_bias_encoder_matches_numpy(position):
    cfg = TransformerConfig(**SMALL, norm_position="pre", position=position, activation="relu")
    model = TransformerEncoder(cfg, rngs=nnx.Rngs(3))
    ids = np.array([[1, 5, 7, 9, 2, 0], [1, 4, 2, 0, 0, 0]])
    mask = (ids != 0).astype(np.int32)
    dist = lambda n: np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]).astype(np.float64)  # noqa: E731
    if position == "alibi":
        bias_fn = lambda n: -alibi_slopes(4)[:, None, None].astype(np.float64) * dist(n)[None]  # noqa: E731
    else:
        r1 = np.maximum(np.asarray(model.layers[0].attention.kerple_r1[...]), 1e-2)[:, None, None]
        r2 = np.maximum(np.asarray(model.layers[0].attention.kerple_r2[...]), 1e-2)[:, None, None]
        # Both layers share a formula but not parameters: make them equal for the reference.
        for layer in model.layers:
            layer.attention.kerple_r1[...] = jnp.asarray(r1[:, 0, 0], jnp.float32)
            layer.attention.kerple_r2[...] = jnp.asarray(r2[:, 0, 0], jnp.float32)
        if position == "kerple_log":
            bias_fn = lambda n: -r1 * np.log1p(r2 * dist(n)[None])  # noqa: E731
        else:
            bias_fn = lambda n: -r1 * dist(n)[None] ** r2  # noqa: E731
    got = np.asarray(model(ids, mask).last_hidden_state)
    want = np_pre_ln_forward(model, ids, mask, bias_fn)
    np.testing.assert_allclose(got[mask > 0], want[mask > 0], atol=2e-5, rtol=0)


def test_alibi_slopes_hand_computed():
    np.testing.assert_allclose(alibi_slopes(8), [2.0 ** -(i + 1) for i in range(8)])
    # 12 heads: the 8-head slopes, then every other slope of the 16-head sequence.
    want = [2.0 ** -(i + 1) for i in range(8)] + [2.0 ** -(0.5 + i) for i in range(4)]
    np.testing.assert_allclose(alibi_slopes(12), want, rtol=1e-6)


def test_rope_matches_complex_rotation_and_scalings():
    cfg = TransformerConfig(**{**SMALL, "num_heads": 2}, position="rope")  # head_dim 8
    cos, sin = rope_frequencies(cfg, 6)
    x = np.random.default_rng(0).standard_normal((1, 6, 1, 8))
    got = np.asarray(apply_rope(jnp.asarray(x, jnp.float32), cos, sin))
    theta = 10000.0 ** (-np.arange(0, 8, 2) / 8)
    z = (x[..., :4] + 1j * x[..., 4:]) * np.exp(1j * np.arange(6)[None, :, None, None] * theta)
    np.testing.assert_allclose(got, np.concatenate([z.real, z.imag], -1), atol=1e-5)
    # Relative property: <R_m q, R_n k> depends only on m - n.
    q, k = x[0, 0, 0], x[0, 1, 0]
    rq = np.asarray(apply_rope(jnp.asarray(np.tile(q, (1, 6, 1, 1)), jnp.float32), cos, sin))[
        0, :, 0
    ]
    rk = np.asarray(apply_rope(jnp.asarray(np.tile(k, (1, 6, 1, 1)), jnp.float32), cos, sin))[
        0, :, 0
    ]
    np.testing.assert_allclose(rq[3] @ rk[1], rq[4] @ rk[2], rtol=1e-4)
    # Linear interpolation: position 2p with factor 2 is position p unscaled.
    lin = TransformerConfig(
        **{**SMALL, "num_heads": 2}, position="rope", rope_scaling="linear", rope_scaling_factor=2.0
    )
    cos2, _ = rope_frequencies(lin, 6)
    np.testing.assert_allclose(np.asarray(cos2)[4], np.asarray(cos)[2], atol=1e-6)
    # NTK-aware: base multiplied by factor^(d / (d - 2)).
    ntk = TransformerConfig(
        **{**SMALL, "num_heads": 2}, position="rope", rope_scaling="ntk", rope_scaling_factor=4.0
    )
    cos3, _ = rope_frequencies(ntk, 6)
    base = 10000.0 * 4.0 ** (8 / 6)
    angles = np.arange(6)[:, None] * base ** (-np.arange(0, 8, 2) / 8)[None]
    np.testing.assert_allclose(np.asarray(cos3)[:, :4], np.cos(angles), atol=1e-5)


# ALiBi and KERPLE are checked with padded rows against NumPy above.
@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rope"])
def test_padding_never_leaks_for_every_position_scheme(position):
    cfg = TransformerConfig(**SMALL, position=position, norm_position="pre")
    model = TransformerEncoder(cfg, rngs=nnx.Rngs(0))
    ids = np.array([[1, 5, 7, 2]])
    alone = np.asarray(model(ids, np.ones_like(ids)).last_hidden_state)
    padded = np.array([[1, 5, 7, 2, 33, 21, 8]])
    out = np.asarray(model(padded, (np.arange(7) < 4)[None].astype(np.int32)).last_hidden_state)
    np.testing.assert_allclose(out[:, :4], alone, atol=1e-5)


def test_sinusoidal_positions_are_added():
    cfg = TransformerConfig(
        **{**SMALL, "num_layers": 1, "type_vocab_size": 0},
        position="sinusoidal",
        norm_position="pre",
    )
    model = TransformerEncoder(cfg, rngs=nnx.Rngs(0))
    out = model(np.array([[3, 3, 3]]), output_hidden_states=True)
    emb = np.asarray(model.word_embeddings.embedding[...])[3]
    pos = np.arange(3)[:, None]
    i = np.arange(0, 16, 2)[None]
    table = np.zeros((3, 16))
    table[:, 0::2], table[:, 1::2] = (
        np.sin(pos / 10000 ** (i / 16)),
        np.cos(pos / 10000 ** (i / 16)),
    )
    np.testing.assert_allclose(np.asarray(out.hidden_states[0])[0], emb[None] + table, atol=1e-5)


def test_dropout_uses_explicit_rngs_and_eval_turns_it_off():
    cfg = TransformerConfig(**{**SMALL, "dropout": 0.3})
    model = TransformerEncoder(cfg, rngs=nnx.Rngs(0))
    ids = np.array([[1, 5, 7, 2]])
    a = model(ids, rngs=nnx.Rngs(dropout=1)).last_hidden_state
    b = model(ids, rngs=nnx.Rngs(dropout=1)).last_hidden_state
    c = model(ids, rngs=nnx.Rngs(dropout=2)).last_hidden_state
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(jnp.abs(a - c).max()) > 1e-3
    model.eval()
    d = model(ids).last_hidden_state
    ref = TransformerEncoder(TransformerConfig(**SMALL), rngs=nnx.Rngs(0))
    np.testing.assert_allclose(np.asarray(d), np.asarray(ref(ids).last_hidden_state), atol=1e-6)


def test_bfloat16_compute_tracks_float32_with_float32_params():
    f32 = TransformerEncoder(TransformerConfig(**SMALL), rngs=nnx.Rngs(0))
    bf16 = TransformerEncoder(
        TransformerConfig(**SMALL, compute_dtype="bfloat16"), rngs=nnx.Rngs(0)
    )
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    ids = np.array([[1, 5, 7, 2, 9]])
    a, b = f32(ids).last_hidden_state, bf16(ids).last_hidden_state
    assert b.dtype == jnp.float32
    err = float(jnp.abs(a - b).max())
    assert 0 < err < 0.1, err


def test_mimetic_init_products_follow_the_targets():
    cfg = TransformerConfig(
        vocab_size=10,
        hidden_size=64,
        num_layers=1,
        num_heads=1,
        intermediate_size=8,
        init="mimetic",
        mimetic_alpha=(0.7, 0.4),
        mimetic_beta=(0.7, 0.4),
    )
    att = TransformerEncoder(cfg, rngs=nnx.Rngs(0)).layers[0].attention
    qk = np.asarray(att.query.kernel[...]) @ np.asarray(att.key.kernel[...]).T
    vo = np.asarray(att.value.kernel[...]) @ np.asarray(att.out.kernel[...])
    # One full-width head: the products equal alpha Z + beta I exactly; Z ~ N(0, 1/d).
    for prod, alpha, beta in ((qk, 0.7, 0.7), (vo, 0.4, -0.4)):
        np.testing.assert_allclose(np.diag(prod).mean(), beta, atol=0.05)
        off = prod[~np.eye(64, dtype=bool)]
        np.testing.assert_allclose(off.std(), alpha / 8, rtol=0.1)
    normal = (
        TransformerEncoder(cfg.__class__(**{**cfg.__dict__, "init": "normal"}), rngs=nnx.Rngs(0))
        .layers[0]
        .attention
    )
    qk0 = np.asarray(normal.query.kernel[...]) @ np.asarray(normal.key.kernel[...]).T
    assert abs(np.diag(qk0).mean()) < 0.01


@pytest.mark.parametrize("rules", [(("heads", "model"), ("mlp", "model")), (("embed", "data"),)])
def test_sharded_parameters_give_the_same_output(mesh8, rules):
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto))
    model = TransformerEncoder(TransformerConfig(**SMALL), rngs=nnx.Rngs(0))
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 40, (8, 6)))
    want = np.asarray(model(ids).last_hidden_state)
    shardings = param_shardings(model, mesh, rules)
    graphdef, state = nnx.split(model)
    state = jax.device_put(state, shardings)
    kernel = state["layers"][0]["intermediate"]["kernel"]
    assert isinstance(kernel.sharding, NamedSharding)
    assert len(kernel.addressable_shards) == 8
    fwd = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x).last_hidden_state)
    np.testing.assert_allclose(np.asarray(fwd(state, ids)), want, atol=1e-5)


def test_bad_config_and_inputs():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        TransformerConfig(**{**SMALL, "num_heads": 3})
    with pytest.raises(ValueError, match="position"):
        TransformerConfig(**SMALL, position="relative")
    with pytest.raises(ValueError, match="rope_scaling_factor"):
        TransformerConfig(**SMALL, position="rope", rope_scaling="linear", rope_scaling_factor=0.5)
    model = TransformerEncoder(TransformerConfig(**SMALL), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="input_ids must be in"):
        model(np.array([[1, 40]]))
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        model(np.array([[1, 2]]), np.ones((1, 3)))
    with pytest.raises(ValueError, match="longer than the position table"):
        model(np.ones((1, 13), np.int32))


# ---------------------------------------------------------------------------------------------
# pool
# ---------------------------------------------------------------------------------------------


def test_pool_methods_match_numpy_with_left_and_right_padding():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((3, 5, 4))
    mask = np.array([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    m = mask[..., None].astype(float)
    first = np.array([0, 2, 0])
    last = np.array([2, 4, 4])
    weights = (np.arange(1, 6)[None] - first[:, None])[..., None] * m
    want = {
        "cls": h[np.arange(3), first],
        "mean": (h * m).sum(1) / m.sum(1),
        "max": np.where(m > 0, h, -np.inf).max(1),
        "mean_sqrt_len": (h * m).sum(1) / np.sqrt(m.sum(1)),
        "weighted_mean": (h * weights).sum(1) / weights.sum(1),
        "last_token": h[np.arange(3), last],
    }
    hj = jnp.asarray(h, jnp.float32)
    for method, ref in want.items():
        np.testing.assert_allclose(
            np.asarray(pool(hj, mask, method)), ref, atol=1e-5, err_msg=method
        )
    both = pool(hj, mask, ("max", "cls"))
    np.testing.assert_allclose(
        np.asarray(both), np.concatenate([want["max"], want["cls"]], -1), atol=1e-5
    )
    layers = [hj * 0, hj + 1, hj * 2, hj]
    np.testing.assert_allclose(
        np.asarray(pool(layers, mask, "first_last_mean")),
        ((h + 1 + h) / 2 * m).sum(1) / m.sum(1),
        atol=1e-5,
    )


def test_attention_pool_matches_numpy_and_ignores_padding():
    attn = AttentionPool(8, num_heads=2, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    h = rng.standard_normal((2, 4, 8)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
    p = jax.tree.map(lambda t: np.asarray(t, np.float64), nnx.to_pure_dict(nnx.state(attn)))
    k = (h @ p["key"]["kernel"] + p["key"]["bias"]).reshape(2, 4, 2, 4)
    v = (h @ p["value"]["kernel"] + p["value"]["bias"]).reshape(2, 4, 2, 4)
    s = np.einsum("ad,btad->bat", p["query"], k) / 2.0
    s = np.where(mask[:, None, :] > 0, s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    ctx = np.einsum("bat,btad->bad", w, v).reshape(2, 8)
    want = ctx @ p["out"]["kernel"] + p["out"]["bias"]
    got = pool(jnp.asarray(h), mask, "attention", attention=attn)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    h2 = h.copy()
    h2[0, 2:] = 100.0
    np.testing.assert_allclose(
        np.asarray(pool(jnp.asarray(h2), mask, "attention", attention=attn))[0],
        np.asarray(got)[0],
        atol=1e-5,
    )


def test_pool_bad_inputs():
    h = jnp.ones((2, 3, 4))
    with pytest.raises(ValueError, match="method"):
        pool(h, jnp.ones((2, 3)), "median")
    with pytest.raises(ValueError, match="mask must be"):
        pool(h, jnp.ones((2, 4)), "mean")
    with pytest.raises(ValueError, match="AttentionPool"):
        pool(h, jnp.ones((2, 3)), "attention")
    with pytest.raises(ValueError, match="hidden-state tuple"):
        pool([h], jnp.ones((2, 3)), "first_last_mean")
