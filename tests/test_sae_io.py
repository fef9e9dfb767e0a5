"""Tests for jaxemb.sae.save_sae / load_sae (SAELens and eai-sparsify directory layouts).

Files are read back with plain ``safetensors.numpy.load_file`` and ``json`` and checked against
the layouts those tools write; the function the saved tensors compute is checked with NumPy
references written here; round trips are checked bit for bit for every registered variant.
"""

import inspect
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from platform_support import needs_xla_float16
from safetensors.numpy import load_file, save_file

from jaxemb import sae

D_IN, D_SAE, K = 6, 12, 3


def make(cls, rng, *, scale=None):
    """An instance of ``cls`` with every variable set to random, non-default values."""
    params = inspect.signature(cls.__init__).parameters
    known = {"k": K, "group_sizes": (4, 8), "n_steps": 3}
    kwargs = {name: value for name, value in known.items() if name in params}
    model = cls(D_IN, D_SAE, rngs=nnx.Rngs(int(rng.integers(1 << 30))), **kwargs)
    state = nnx.state(model)
    pure = nnx.to_pure_dict(state)
    for name, value in pure.items():
        value = np.asarray(value)
        if name == "input_scale":
            new = np.asarray(0.37 if scale is None else scale, value.dtype)
        elif name == "threshold":  # BatchTopK running threshold (must be >= 0 to be estimated)
            new = np.asarray(0.05 + 0.1 * rng.random(value.shape), value.dtype)
        else:
            new = rng.normal(size=value.shape).astype(value.dtype)
        pure[name] = jnp.asarray(new)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(model, state)
    return model


def variables(model):
    return {k: np.asarray(v) for k, v in nnx.to_pure_dict(nnx.state(model)).items()}


VARIANTS = sorted(sae.sae_variants().items())


def test_registry_holds_the_variants():
    names = dict(VARIANTS)
    assert names["topk"] is sae.TopKSAE
    for name, cls in names.items():
        assert cls.__name__ in sae.__all__, name


@pytest.mark.parametrize("name,cls", VARIANTS, ids=[n for n, _ in VARIANTS])
def test_saelens_round_trip_is_bitwise(tmp_path, rng, name, cls):
    model = make(cls, rng)
    sae.save_sae(tmp_path / "m", model, format="saelens")
    back = sae.load_sae(tmp_path / "m")
    assert type(back) is cls
    a, b = variables(model), variables(back)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].tobytes() == b[key].tobytes(), key
    for attr in ("d_in", "d_sae", "k", "dead_threshold", "normalize_decoder", "aux_coef"):
        if hasattr(model, attr):
            assert getattr(back, attr) == getattr(model, attr), attr
    x = jnp.asarray(rng.normal(size=(5, D_IN)), jnp.float32)
    np.testing.assert_array_equal(back(x).reconstruction, model(x).reconstruction)


def test_sparsify_round_trip_is_bitwise(tmp_path, rng):
    model = make(sae.TopKSAE, rng)
    sae.save_sae(tmp_path, model, "sparsify")  # format may be given positionally
    back = sae.load_sae(tmp_path)
    for key, value in variables(model).items():
        assert value.tobytes() == variables(back)[key].tobytes(), key


@pytest.mark.parametrize("fmt", ["saelens", "sparsify"])
@pytest.mark.parametrize(
    "dtype", [jnp.bfloat16, pytest.param(jnp.float16, marks=needs_xla_float16())]
)
def test_half_precision_round_trip(tmp_path, fmt, dtype):
    model = sae.TopKSAE(D_IN, D_SAE, k=K, rngs=nnx.Rngs(3), param_dtype=dtype)
    model.b_dec[...] = jnp.arange(D_IN, dtype=dtype) / 7
    sae.save_sae(tmp_path, model, format=fmt)
    t = load_file(tmp_path / ("sae_weights.safetensors" if fmt == "saelens" else "sae.safetensors"))
    assert all(v.dtype == np.dtype(dtype) for v in t.values())
    if fmt == "saelens":
        assert json.loads((tmp_path / "cfg.json").read_text())["dtype"] == np.dtype(dtype).name
    back = sae.load_sae(tmp_path)
    for key, value in variables(model).items():
        assert value.tobytes() == variables(back)[key].tobytes(), key


def np_topk_recon(W_enc, b_enc, W_dec, b_dec, x, k):
    pre = (x - b_dec) @ W_enc + b_enc
    r = np.maximum(pre, 0.0)
    idx = np.argsort(-r, axis=1, kind="stable")[:, :k]
    z = np.zeros_like(r)
    np.put_along_axis(z, idx, np.take_along_axis(r, idx, axis=1), axis=1)
    return z @ W_dec + b_dec


def test_saelens_topk_files_as_saelens_reads_them(tmp_path, rng):
    model = make(sae.TopKSAE, rng, scale=1.0)  # no scale: no jaxemb_state file
    sae.save_sae(tmp_path, model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    t = load_file(tmp_path / "sae_weights.safetensors")
    assert {k: (v.shape, v.dtype) for k, v in t.items()} == {
        "W_enc": ((D_IN, D_SAE), np.float32),
        "b_enc": ((D_SAE,), np.float32),
        "W_dec": ((D_SAE, D_IN), np.float32),
        "b_dec": ((D_IN,), np.float32),
    }
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "topk"
    assert (cfg["d_in"], cfg["d_sae"], cfg["k"], cfg["dtype"]) == (D_IN, D_SAE, K, "float32")
    assert cfg["activation_fn_kwargs"] == {"k": K}  # pre-6.0 SAELens key
    assert cfg["apply_b_dec_to_input"] is True
    assert cfg["normalize_activations"] == "none"
    assert cfg["rescale_acts_by_decoder_norm"] is False
    for key in ("W_enc", "b_enc", "W_dec", "b_dec"):
        np.testing.assert_array_equal(t[key], np.asarray(getattr(model, key)[...]))
    x = rng.normal(size=(7, D_IN))
    ref = np_topk_recon(
        *(t[k].astype(np.float64) for k in ("W_enc", "b_enc", "W_dec", "b_dec")), x, K
    )
    np.testing.assert_allclose(model(jnp.asarray(x, jnp.float32)).reconstruction, ref, atol=1e-4)


def test_sparsify_files_as_sparsify_reads_them(tmp_path, rng):
    model = make(sae.TopKSAE, rng, scale=1.0)  # no scale: no jaxemb_state file
    sae.save_sae(tmp_path, model, format="sparsify")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json", "sae.safetensors"]
    t = load_file(tmp_path / "sae.safetensors")
    assert {k: (v.shape, v.dtype) for k, v in t.items()} == {
        "encoder.weight": ((D_SAE, D_IN), np.float32),
        "encoder.bias": ((D_SAE,), np.float32),
        "W_dec": ((D_SAE, D_IN), np.float32),
        "b_dec": ((D_IN,), np.float32),
    }
    np.testing.assert_array_equal(t["encoder.weight"], np.asarray(model.W_enc[...]).T)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert set(cfg) == {
        "activation",
        "expansion_factor",
        "normalize_decoder",
        "num_latents",
        "k",
        "multi_topk",
        "skip_connection",
        "transcode",
        "d_in",
    }
    assert (cfg["d_in"], cfg["num_latents"], cfg["k"], cfg["activation"]) == (
        D_IN,
        D_SAE,
        K,
        "topk",
    )
    # sparsify's SparseCoder: top-k of (x - b_dec) @ encoder.weight.T + encoder.bias
    x = rng.normal(size=(7, D_IN))
    W = {k: v.astype(np.float64) for k, v in t.items()}
    ref = np_topk_recon(W["encoder.weight"].T, W["encoder.bias"], W["W_dec"], W["b_dec"], x, K)
    np.testing.assert_allclose(model(jnp.asarray(x, jnp.float32)).reconstruction, ref, atol=1e-4)


def test_jumprelu_threshold_and_input_scale_folded(tmp_path, rng):
    model = make(sae.JumpReluSAE, rng, scale=0.37)
    model.log_threshold[...] = jnp.full((D_SAE,), np.log(0.2), jnp.float32)
    sae.save_sae(tmp_path, model)
    t = load_file(tmp_path / "sae_weights.safetensors")
    assert sorted(t) == ["W_dec", "W_enc", "b_dec", "b_enc", "threshold"]
    assert json.loads((tmp_path / "cfg.json").read_text())["architecture"] == "jumprelu"
    W = {k: v.astype(np.float64) for k, v in t.items()}
    x = rng.normal(size=(9, D_IN)) * 3.0
    pre = (x - W["b_dec"]) @ W["W_enc"] + W["b_enc"]  # SAELens JumpReLU, no scale anywhere
    z = np.maximum(pre, 0.0) * (pre > W["threshold"])
    ref = z @ W["W_dec"] + W["b_dec"]
    np.testing.assert_allclose(model(jnp.asarray(x, jnp.float32)).reconstruction, ref, atol=1e-4)
    assert (tmp_path / "jaxemb_state.safetensors").exists()  # exact log_threshold / scale


def write_foreign_saelens(path, tensors, cfg):
    path.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()},
        path / "sae_weights.safetensors",
    )
    (path / "cfg.json").write_text(json.dumps(cfg))


def foreign_tensors(rng):
    return {
        "W_enc": rng.normal(size=(D_IN, D_SAE)),
        "b_enc": rng.normal(size=D_SAE),
        "W_dec": rng.normal(size=(D_SAE, D_IN)),
        "b_dec": rng.normal(size=D_IN),
    }


def test_load_foreign_pre6_topk_config(tmp_path, rng):
    t = foreign_tensors(rng)
    cfg = {
        "architecture": "topk",
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "activation_fn_kwargs": {"k": 2},
        "hook_name": "blocks.0.hook_resid_post",
    }
    write_foreign_saelens(tmp_path, t, cfg)
    model = sae.load_sae(tmp_path)
    assert type(model) is sae.TopKSAE and model.k == 2
    # SAELens < 6 wrote TopK SAEs as architecture "standard" with activation_fn_str "topk"
    old = {**cfg, "architecture": "standard", "activation_fn_str": "topk"}
    write_foreign_saelens(tmp_path / "v5", t, old)
    model = sae.load_sae(tmp_path / "v5")
    assert type(model) is sae.TopKSAE and model.k == 2
    np.testing.assert_array_equal(model.W_enc[...], t["W_enc"].astype(np.float32))


def test_load_folds_saelens_options(tmp_path, rng):
    t = foreign_tensors(rng)
    t32 = {k: v.astype(np.float32).astype(np.float64) for k, v in t.items()}
    base = {"architecture": "topk", "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "k": K}
    x = rng.normal(size=(8, D_IN))

    # apply_b_dec_to_input=False: pre = x @ W_enc + b_enc
    write_foreign_saelens(tmp_path / "a", t, {**base, "apply_b_dec_to_input": False})
    m = sae.load_sae(tmp_path / "a")
    ref = np_topk_recon(t32["W_enc"], t32["b_enc"], t32["W_dec"], t32["b_dec"], x + t32["b_dec"], K)
    np.testing.assert_allclose(m(jnp.asarray(x, jnp.float32)).reconstruction, ref, atol=1e-4)

    # rescale_acts_by_decoder_norm=True: top-k of pre·‖W_dec‖, decode with acts/‖W_dec‖
    write_foreign_saelens(tmp_path / "b", t, {**base, "rescale_acts_by_decoder_norm": True})
    m = sae.load_sae(tmp_path / "b")
    n = np.linalg.norm(t32["W_dec"], axis=1)
    pre = ((x - t32["b_dec"]) @ t32["W_enc"] + t32["b_enc"]) * n
    r = np.maximum(pre, 0)
    idx = np.argsort(-r, axis=1, kind="stable")[:, :K]
    z = np.zeros_like(r)
    np.put_along_axis(z, idx, np.take_along_axis(r, idx, axis=1), axis=1)
    ref = (z / n) @ t32["W_dec"] + t32["b_dec"]
    np.testing.assert_allclose(m(jnp.asarray(x, jnp.float32)).reconstruction, ref, atol=1e-4)


def test_missing_and_misshaped_tensors(tmp_path, rng):
    t = foreign_tensors(rng)
    cfg = {"architecture": "topk", "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "k": K}
    write_foreign_saelens(tmp_path / "miss", {k: v for k, v in t.items() if k != "b_dec"}, cfg)
    with pytest.raises(ValueError, match=r"tensor 'b_dec' is missing; expected shape \[6\]"):
        sae.load_sae(tmp_path / "miss")
    write_foreign_saelens(tmp_path / "shape", {**t, "W_enc": t["W_enc"].T}, cfg)
    with pytest.raises(ValueError, match=r"'W_enc' must have shape \[6, 12\].*found \[12, 6\]"):
        sae.load_sae(tmp_path / "shape")
    # sparsify layout: encoder.weight stored [d_sae, d_in]
    model = make(sae.TopKSAE, rng)
    d = sae.save_sae(tmp_path / "sp", model, format="sparsify")
    w = load_file(d / "sae.safetensors")
    save_file(
        {**w, "encoder.weight": np.ascontiguousarray(w["encoder.weight"].T)}, d / "sae.safetensors"
    )
    with pytest.raises(ValueError, match=r"'encoder.weight' must have shape \[12, 6\].*\[6, 12\]"):
        sae.load_sae(d)


def test_bad_layouts_and_formats(tmp_path, rng):
    with pytest.raises(ValueError, match="not an SAE directory in a known layout"):
        sae.load_sae(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        sae.load_sae(tmp_path / "nope")
    t = foreign_tensors(rng)
    write_foreign_saelens(
        tmp_path / "arch", t, {"architecture": "crosscoder", "d_in": D_IN, "d_sae": D_SAE}
    )
    with pytest.raises(ValueError, match="architecture 'crosscoder' is not supported"):
        sae.load_sae(tmp_path / "arch")
    topk_cfg = {"architecture": "topk", "d_in": D_IN, "d_sae": D_SAE, "k": K}
    write_foreign_saelens(
        tmp_path / "scaled", {**t, "scaling_factor": np.full(D_SAE, 2.0)}, topk_cfg
    )
    with pytest.raises(ValueError, match="'scaling_factor'"):
        sae.load_sae(tmp_path / "scaled")
    model = make(sae.TopKSAE, rng)
    with pytest.raises(ValueError, match="format must be one of"):
        sae.save_sae(tmp_path / "x", model, format="pickle")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "sae.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "bad" / "cfg.json").write_text(json.dumps({"d_in": D_IN, "k": K}))
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        sae.load_sae(tmp_path / "bad")
    if "relu" in dict(VARIANTS):
        with pytest.raises(ValueError, match="sparsify layout holds per-row TopK"):
            sae.save_sae(tmp_path / "y", make(sae.ReluSAE, rng), format="sparsify")


# SAELens semantics of each architecture, from the files alone (NumPy float64).
ARCH_OF = {
    "TopKSAE": "topk",
    "ReluSAE": "standard",
    "JumpReluSAE": "jumprelu",
    "BatchTopKSAE": "jumprelu",
    "GatedSAE": "gated",
    "MatryoshkaSAE": "topk",
    "MatchingPursuitSAE": "matching_pursuit",
}
KEYS_OF = {
    "standard": {"W_enc", "b_enc", "W_dec", "b_dec"},
    "topk": {"W_enc", "b_enc", "W_dec", "b_dec"},
    "jumprelu": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
    "gated": {"W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec"},
    "matching_pursuit": {"W_dec", "b_dec"},
}


def saelens_forward(arch, t, cfg, x):
    t = {k: v.astype(np.float64) for k, v in t.items()}
    xc = x - t["b_dec"]
    if arch == "gated":
        active = (xc @ t["W_enc"] + t["b_gate"]) > 0
        mag = np.maximum(xc @ (t["W_enc"] * np.exp(t["r_mag"])) + t["b_mag"], 0.0)
        return (active * mag) @ t["W_dec"] + t["b_dec"]
    pre = xc @ t["W_enc"] + t["b_enc"]
    if arch == "standard":
        z = np.maximum(pre, 0.0)
    elif arch == "jumprelu":
        z = np.maximum(pre, 0.0) * (pre > t["threshold"])
    else:
        return np_topk_recon(t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"], x, cfg["k"])
    return z @ t["W_dec"] + t["b_dec"]


@pytest.mark.parametrize("name,cls", VARIANTS, ids=[n for n, _ in VARIANTS])
def test_saelens_files_compute_the_model(tmp_path, rng, name, cls):
    """Keys, shapes and dtypes as SAELens stores them; the files compute the model's function
    (with the input scale folded in), except matching pursuit whose stopping rule differs."""
    model = make(cls, rng, scale=0.37)
    sae.save_sae(tmp_path, model)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    arch = ARCH_OF[cls.__name__]
    assert cfg["architecture"] == arch and (cfg["d_in"], cfg["d_sae"]) == (D_IN, D_SAE)
    t = load_file(tmp_path / "sae_weights.safetensors")
    assert set(t) == KEYS_OF[arch]
    shapes = {"W_enc": (D_IN, D_SAE), "W_dec": (D_SAE, D_IN), "b_dec": (D_IN,)}
    for key, value in t.items():
        assert value.shape == shapes.get(key, (D_SAE,)) and value.dtype == np.float32, key
    if arch == "matching_pursuit":
        return
    x = rng.normal(size=(16, D_IN)) * 2.0
    want = saelens_forward(arch, t, cfg, x)
    got = np.asarray(model(jnp.asarray(x, jnp.float32)).reconstruction, np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
