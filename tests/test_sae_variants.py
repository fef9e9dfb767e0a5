"""ReluSAE, BatchTopKSAE, JumpReluSAE, GatedSAE against independent NumPy float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxemb import parallel, sae

# ------------------------------------------------------------------------------------------------
# NumPy references (float64)


def np_params(model):
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return {k: np.asarray(v, np.float64) for k, v in pure.items()}


def np_pre(p, xs):
    return (xs - p["b_dec"]) @ p["W_enc"] + p["b_enc"]


def np_relu(p, x, lam, mode, s=1.0):
    xs = s * np.asarray(x, np.float64)
    pre = np_pre(p, xs)
    z = np.maximum(pre, 0.0)
    xh = z @ p["W_dec"] + p["b_dec"]
    recon = np.mean(np.sum((xs - xh) ** 2, axis=1))
    w = np.linalg.norm(p["W_dec"], axis=1) if mode == "decoder_norm" else np.ones(len(z[0]))
    l1 = np.mean(z @ w)
    return {"loss": recon + lam * l1, "recon": recon, "l1": l1, "z": z, "xh": xh / s, "pre": pre}


def np_gated(p, x, lam, s=1.0):
    xs = s * np.asarray(x, np.float64)
    pi_gate = np_pre(p, xs)
    W_mag = p["W_enc"] * np.exp(p["r_mag"])[None, :]
    pi_mag = (xs - p["b_dec"]) @ W_mag + p["b_mag"]
    z = (pi_gate > 0) * np.maximum(pi_mag, 0.0)
    xh = z @ p["W_dec"] + p["b_dec"]
    recon = np.mean(np.sum((xs - xh) ** 2, axis=1))
    g = np.maximum(pi_gate, 0.0)
    l1 = np.mean(g @ np.linalg.norm(p["W_dec"], axis=1))
    aux = np.mean(np.sum((xs - (g @ p["W_dec"] + p["b_dec"])) ** 2, axis=1))
    return {"loss": recon + lam * l1 + aux, "recon": recon, "l1": l1, "aux": aux, "z": z, "xh": xh}


def np_jumprelu(p, x, lam, s=1.0):
    xs = s * np.asarray(x, np.float64)
    pre = np_pre(p, xs)
    r = np.maximum(pre, 0.0)
    theta = np.exp(p["log_threshold"])
    z = r * (r > theta)
    xh = z @ p["W_dec"] + p["b_dec"]
    recon = np.mean(np.sum((xs - xh) ** 2, axis=1))
    l0 = np.mean(np.sum(r > theta, axis=1))
    return {"loss": recon + lam * l0, "recon": recon, "l0": l0, "z": z, "xh": xh, "pre": pre}


def np_jumprelu_grads(p, x, lam, eps):
    """The paper's pseudo-gradients (App. J) written out by hand."""
    xs = np.asarray(x, np.float64)
    n = xs.shape[0]
    pre = np_pre(p, xs)
    r = np.maximum(pre, 0.0)
    theta = np.exp(p["log_threshold"])
    on = r > theta
    z = r * on
    xh = z @ p["W_dec"] + p["b_dec"]
    d_xh = 2.0 * (xh - xs) / n  # [N, d_in]
    d_z = d_xh @ p["W_dec"].T  # [N, d_sae]
    rect = (np.abs((r - theta) / eps) < 0.5).astype(np.float64)
    d_theta = np.sum(d_z * (-(theta / eps) * rect), axis=0) + lam / n * np.sum(
        -(1.0 / eps) * rect, axis=0
    )
    d_pre = d_z * on * (pre > 0)
    centred = xs - p["b_dec"]
    return {
        "log_threshold": theta * d_theta,
        "W_dec": z.T @ d_xh,
        "W_enc": centred.T @ d_pre,
        "b_enc": d_pre.sum(0),
        "b_dec": d_xh.sum(0) - d_pre.sum(0) @ p["W_enc"].T,
    }


def np_batch_topk(acts, k):
    flat = acts.ravel()
    keep = np.argsort(-flat, kind="stable")[: acts.shape[0] * k]
    out = np.zeros_like(flat)
    out[keep] = flat[keep]
    return out.reshape(acts.shape)


def np_batchtopk(p, x, k, dead=None, aux_coef=1 / 32):
    xs = np.asarray(x, np.float64)
    pre = np_pre(p, xs)
    z = np_batch_topk(np.maximum(pre, 0.0), k)
    xh = z @ p["W_dec"] + p["b_dec"]
    tv = np.sum((xs - xs.mean(0)) ** 2)
    fvu = np.sum((xs - xh) ** 2) / tv
    auxk = 0.0
    if dead is not None and dead.any():
        k_aux = xs.shape[1] // 2
        masked = np.where(dead[None, :], np.maximum(pre, 0.0), -np.inf)
        idx = np.argsort(-masked, axis=1, kind="stable")[:, : min(k_aux, int(dead.sum()))]
        vals = np.take_along_axis(masked, idx, axis=1)
        e_hat = np.einsum("nk,nkd->nd", vals, p["W_dec"][idx])
        auxk = min(dead.sum() / k_aux, 1.0) * np.sum((e_hat - (xs - xh)) ** 2) / tv
    return {"loss": fvu + aux_coef * auxk, "fvu": fvu, "auxk": auxk, "z": z, "xh": xh}


def randomize(model, rng, scale=0.3):
    """Random non-trivial parameters (biases, non-unit decoder rows, per-latent extras)."""
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "r_mag", "b_mag"):
        if hasattr(model, name):
            shape = getattr(model, name)[...].shape
            getattr(model, name)[...] = jnp.asarray(scale * rng.normal(size=shape), jnp.float32)
    model.b_enc[...] = model.b_enc[...] + 0.2
    return model


def finite_diff(f, p, h=1e-6):
    out = {}
    for name, value in p.items():
        fd = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            plus, minus = value.copy(), value.copy()
            plus[i] += h
            minus[i] -= h
            fd[i] = (f({**p, name: plus}) - f({**p, name: minus})) / (2 * h)
        out[name] = fd
    return out


def grads_of(loss_fn, model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rest = nnx.to_pure_dict(rest)

    def f(p):
        return loss_fn(nnx.merge(graphdef, p, rest))[0]

    return jax.grad(f)(nnx.to_pure_dict(params))


# ------------------------------------------------------------------------------------------------
# ReluSAE


@pytest.mark.parametrize("mode", ["decoder_norm", "plain"])
def test_relu_forward_and_loss(rng, mode):
    model = randomize(sae.ReluSAE(6, 10, rngs=nnx.Rngs(0), mode=mode, l1_coef=0.7), rng)
    x = rng.normal(size=(12, 6)).astype(np.float32)
    p = np_params(model)
    ref = np_relu(p, x, 0.7, mode)
    out = model(x)
    np.testing.assert_allclose(out.pre_activations, ref["pre"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.code, ref["z"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.reconstruction, ref["xh"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.encode(x), ref["z"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.decode(out.code), ref["xh"], rtol=1e-5, atol=1e-6)
    assert (ref["z"] == 0).any() and (ref["z"] > 0).any()
    loss, m = sae.loss(model, x)
    np.testing.assert_allclose(loss, ref["loss"], rtol=1e-5)
    np.testing.assert_allclose(m["recon"], ref["recon"], rtol=1e-5)
    np.testing.assert_allclose(m["l1"], ref["l1"], rtol=1e-5)
    np.testing.assert_allclose(m["l0"], np.mean(np.sum(ref["z"] > 0, 1)), rtol=1e-6)
    np.testing.assert_allclose(m["mse"], ref["recon"] / 6, rtol=1e-5)
    # An explicit λ overrides the module's.
    np.testing.assert_allclose(
        sae.loss(model, x, l1_coef=2.0)[0], ref["recon"] + 2.0 * ref["l1"], rtol=1e-5
    )
    # The default decoder-norm mode trains an unconstrained decoder; plain keeps unit rows.
    assert model.normalize_decoder == (mode == "plain")


@pytest.mark.parametrize("mode", ["decoder_norm", "plain"])
def test_relu_gradient_matches_finite_differences(rng, mode):
    model = randomize(sae.ReluSAE(3, 5, rngs=nnx.Rngs(0), mode=mode, l1_coef=0.3), rng)
    x = rng.normal(size=(4, 3))
    grads = grads_of(lambda m: sae.loss(m, jnp.asarray(x, jnp.float32)), model)
    p0 = np_params(model)
    fd = finite_diff(lambda p: np_relu(p, x.astype(np.float32), 0.3, mode)["loss"], p0)
    for name in p0:
        np.testing.assert_allclose(grads[name], fd[name], rtol=2e-3, atol=2e-5, err_msg=name)


# ------------------------------------------------------------------------------------------------
# GatedSAE


def test_gated_forward_and_loss(rng):
    model = randomize(sae.GatedSAE(6, 10, rngs=nnx.Rngs(0), l1_coef=0.4), rng)
    x = rng.normal(size=(12, 6)).astype(np.float32)
    p = np_params(model)
    assert set(p) == {"W_enc", "b_enc", "W_dec", "b_dec", "r_mag", "b_mag"}
    ref = np_gated(p, x, 0.4)
    out = model(x)
    np.testing.assert_allclose(out.code, ref["z"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.reconstruction, ref["xh"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.pre_activations, np_pre(p, x), rtol=1e-5, atol=1e-6)
    # The gate closes some latents whose magnitude path is positive.
    W_mag = p["W_enc"] * np.exp(p["r_mag"])
    pi_mag = (x - p["b_dec"]) @ W_mag + p["b_mag"]
    assert ((np_pre(p, x) <= 0) & (pi_mag > 0)).any()
    loss, m = sae.loss(model, x)
    for key in ("loss", "recon", "l1", "aux"):
        np.testing.assert_allclose(m[key], ref[key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(loss, ref["loss"], rtol=1e-5)


def test_gated_gradient_freezes_decoder_in_aux(rng):
    model = randomize(sae.GatedSAE(3, 5, rngs=nnx.Rngs(0), l1_coef=0.3), rng)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    grads = grads_of(lambda m: sae.loss(m, jnp.asarray(x)), model)
    p0 = np_params(model)

    def loss_frozen_aux(p):
        # The auxiliary term sees the decoder at its base value (stop-gradient).
        r = np_gated(p, x, 0.3)
        g = np.maximum(np_pre(p, x.astype(np.float64)), 0.0)
        aux = np.mean(np.sum((x - (g @ p0["W_dec"] + p0["b_dec"])) ** 2, axis=1))
        return r["recon"] + 0.3 * r["l1"] + aux

    fd = finite_diff(loss_frozen_aux, p0)
    for name in p0:
        np.testing.assert_allclose(grads[name], fd[name], rtol=2e-3, atol=2e-5, err_msg=name)
    # Not the same as differentiating the aux term through the decoder.
    fd_full = finite_diff(lambda p: np_gated(p, x, 0.3)["loss"], p0)
    assert not np.allclose(fd_full["W_dec"], fd["W_dec"], rtol=1e-3)


# ------------------------------------------------------------------------------------------------
# JumpReluSAE


def test_jumprelu_forward_and_loss(rng):
    model = randomize(sae.JumpReluSAE(6, 10, rngs=nnx.Rngs(0), l0_coef=0.05), rng)
    model.log_threshold[...] = jnp.asarray(np.log(rng.uniform(0.05, 0.4, 10)), jnp.float32)
    x = rng.normal(size=(12, 6)).astype(np.float32)
    p = np_params(model)
    ref = np_jumprelu(p, x, 0.05)
    r = np.maximum(ref["pre"], 0)
    assert ((r > 0) & (r <= np.exp(p["log_threshold"]))).any()  # some cut by the threshold
    out = model(x)
    np.testing.assert_allclose(out.code, ref["z"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.reconstruction, ref["xh"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.threshold, np.exp(p["log_threshold"]), rtol=1e-6)
    loss, m = sae.loss(model, x)
    np.testing.assert_allclose(loss, ref["loss"], rtol=1e-5)
    np.testing.assert_allclose(m["recon"], ref["recon"], rtol=1e-5)
    np.testing.assert_allclose(m["l0"], ref["l0"], rtol=1e-6)


def test_jumprelu_pseudo_derivatives_match_paper(rng):
    eps = 0.3  # wide kernel so that many activations fall inside the rectangle
    model = randomize(sae.JumpReluSAE(4, 8, rngs=nnx.Rngs(0), l0_coef=0.2, bandwidth=eps), rng)
    model.log_threshold[...] = jnp.asarray(np.log(rng.uniform(0.05, 0.3, 8)), jnp.float32)
    x = rng.normal(size=(16, 4)).astype(np.float32)
    p = np_params(model)
    ref = np_jumprelu_grads(p, x, 0.2, eps)
    grads = grads_of(lambda m: sae.loss(m, jnp.asarray(x)), model)
    assert np.abs(ref["log_threshold"]).max() > 1e-3
    for name in ref:
        np.testing.assert_allclose(grads[name], ref[name], rtol=1e-4, atol=1e-6, err_msg=name)

    # The primitives alone: H and JumpReLU with the rectangle-kernel derivatives.
    xv = jnp.asarray(rng.uniform(0, 1, (5, 3)), jnp.float32)
    th = jnp.asarray([0.3, 0.5, 0.7], jnp.float32)
    g = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    _, vjp = jax.vjp(lambda a, t: sae.heaviside_st(a, t, 0.4), xv, th)
    dx, dth = vjp(g)
    xv64, th64, g64 = np.asarray(xv, np.float64), np.asarray(th, np.float64), np.asarray(g)
    rect = (np.abs((xv64 - th64) / 0.4) < 0.5).astype(float)
    np.testing.assert_array_equal(dx, 0.0)
    np.testing.assert_allclose(dth, np.sum(-(1 / 0.4) * rect * g64, 0), rtol=1e-5, atol=1e-6)
    _, vjp = jax.vjp(lambda a, t: sae.jumprelu_st(a, t, 0.4), xv, th)
    dx, dth = vjp(g)
    np.testing.assert_allclose(dx, (xv64 > th64) * g64, rtol=1e-6)
    np.testing.assert_allclose(dth, np.sum(-(th64 / 0.4) * rect * g64, 0), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# BatchTopKSAE


def test_batch_topk_selection_with_ties(rng):
    d_in, d_sae, k = 5, 12, 3
    model = sae.BatchTopKSAE(d_in, d_sae, k=k, rngs=nnx.Rngs(0))
    # Small integers: exact pre-activations in float32, hence real ties across rows and columns.
    W = rng.integers(-2, 3, size=(d_in, d_sae)).astype(np.float32)
    W[:, 7] = W[:, 2]
    model.W_enc[...] = jnp.asarray(W)
    model.b_enc[...] = jnp.asarray(rng.integers(-1, 2, size=d_sae), jnp.float32)
    x = rng.integers(-2, 3, size=(9, d_in)).astype(np.float32)
    x[4] = x[1]  # duplicate rows
    p = np_params(model)
    r = np.maximum(np_pre(p, x), 0)
    z = np.asarray(model.encode(x, training=True))
    ref = np_batch_topk(r, k)
    # The cut-off value is tied: selection must follow the flat (row-major) order.
    cut = np.sort(r.ravel())[::-1][9 * k - 1]
    assert np.sum(r == cut) > np.sum(ref == cut) > 0
    np.testing.assert_array_equal(z, ref)
    assert np.sum(z != 0) <= 9 * k and len(set(np.sum(z != 0, 1))) > 1  # uneven rows
    np.testing.assert_array_equal(sae.batch_topk(jnp.asarray(r, jnp.float32), k), ref)
    # A traced k below a static k_max masks the tail of the same ranking.
    f = jax.jit(lambda a, kk: sae.batch_topk(a, kk, k_max=k))
    np.testing.assert_array_equal(f(jnp.asarray(r, jnp.float32), 2), np_batch_topk(r, 2))


@pytest.mark.parametrize("n_dead", [0, 5])
def test_batchtopk_loss_and_threshold(rng, n_dead):
    d_in, d_sae, k = 8, 20, 3
    model = randomize(sae.BatchTopKSAE(d_in, d_sae, k=k, rngs=nnx.Rngs(0), aux_coef=0.5), rng)
    x = rng.normal(size=(10, d_in)).astype(np.float32)
    dead = np.zeros(d_sae, bool)
    dead[rng.choice(d_sae, n_dead, replace=False)] = True
    p = np_params(model)
    ref = np_batchtopk(p, x, k, dead, 0.5)
    loss, m = sae.loss(model, x, dead_mask=jnp.asarray(dead))
    np.testing.assert_allclose(loss, ref["loss"], rtol=1e-5)
    np.testing.assert_allclose(m["fvu"], ref["fvu"], rtol=1e-5)
    np.testing.assert_allclose(m["auxk"], ref["auxk"], rtol=1e-5, atol=1e-7)
    assert (ref["auxk"] > 0) == (n_dead > 0)
    np.testing.assert_allclose(m["l0"], k, rtol=1e-6)
    min_kept = ref["z"][ref["z"] > 0].min()
    np.testing.assert_allclose(m["min_kept"], min_kept, rtol=1e-5)
    assert float(model.threshold[...]) < 0  # the pure loss leaves θ alone

    # training_loss leaves θ alone for calls 0..threshold_start_step (dictionary_learning's
    # `step > threshold_start_step`), then the first estimated batch sets it and later batches
    # move it by an EMA.
    model.threshold_decay = 0.9
    model.threshold_start_step = 1
    for _ in range(2):
        model.training_loss(x)
        assert float(model.threshold[...]) < 0
    model.training_loss(x)
    assert int(model.training_calls[...]) == 3
    np.testing.assert_allclose(model.threshold[...], min_kept, rtol=1e-5)
    x2 = rng.normal(size=(10, d_in)).astype(np.float32)
    min2 = np_batchtopk(p, x2, k)["z"]
    min2 = min2[min2 > 0].min()
    model.training_loss(x2)
    np.testing.assert_allclose(model.threshold[...], 0.9 * min_kept + 0.1 * min2, rtol=1e-5)

    # Inference is a JumpReLU with the single threshold θ, row by row.
    theta = float(model.threshold[...])
    r = np.maximum(np_pre(p, x), 0)
    z_inf = r * (r > theta)
    out = model(x)
    np.testing.assert_allclose(out.code, z_inf, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        out.reconstruction, z_inf @ p["W_dec"] + p["b_dec"], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(model.encode(x[:1]), z_inf[:1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.encode(x, training=True), ref["z"], rtol=1e-5, atol=1e-6)


def test_batchtopk_train_step_keeps_threshold_in_buffers(rng):
    model = sae.BatchTopKSAE(
        8, 32, k=2, rngs=nnx.Rngs(0), threshold_decay=0.5, threshold_start_step=-1
    )
    x1, x2 = (rng.normal(size=(16, 8)).astype(np.float32) for _ in range(2))
    train_step, state = sae.make_train_step(model, optax.sgd(0.0), donate=False)
    p = np_params(model)
    state, m1 = train_step(state, x1)
    state, m2 = train_step(state, x2)
    z1 = np_batchtopk(p, x1, 2)["z"]
    z2 = np_batchtopk(p, x2, 2)["z"]
    expected = 0.5 * z1[z1 > 0].min() + 0.5 * z2[z2 > 0].min()
    np.testing.assert_allclose(state.buffers["threshold"], expected, rtol=1e-5)
    assert float(model.threshold[...]) < 0
    nnx.update(model, state.params)
    assert float(model.threshold[...]) < 0  # params only
    sae.sync(model, state)
    np.testing.assert_allclose(model.threshold[...], expected, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# train step: every variant, sharded


@pytest.mark.parametrize(
    "make",
    [
        lambda: sae.ReluSAE(8, 24, rngs=nnx.Rngs(1), l1_coef=0.1),
        lambda: sae.ReluSAE(8, 24, rngs=nnx.Rngs(1), l1_coef=0.1, mode="plain"),
        lambda: sae.GatedSAE(8, 24, rngs=nnx.Rngs(1), l1_coef=0.1),
        lambda: sae.JumpReluSAE(8, 24, rngs=nnx.Rngs(1), l0_coef=0.1, init_threshold=0.1),
        lambda: sae.BatchTopKSAE(8, 24, k=3, rngs=nnx.Rngs(1)),
    ],
)
def test_train_step_is_one_adam_step_on_the_loss(rng, make):
    model = make()
    x = rng.normal(size=(16, 8)).astype(np.float32)
    lr = 1e-3
    train_step, state = sae.make_train_step(model, optax.adam(lr), donate=False)
    new_state, m = train_step(state, x)
    grads = grads_of(lambda mm: mm.training_loss(jnp.asarray(x))[:2], model)
    p0 = np_params(model)
    g = {n: np.asarray(v, np.float64) for n, v in grads.items()}
    if model.normalize_decoder:
        W = p0["W_dec"]
        g["W_dec"] = g["W_dec"] - np.sum(g["W_dec"] * W, 1, keepdims=True) * W
    for name in p0:
        expected = p0[name] - lr * np.sign(g[name]) * (np.abs(g[name]) > 1e-6)
        if name == "W_dec" and model.normalize_decoder:
            expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
        # Adam's first step moves every coordinate with a non-negligible gradient by lr.
        mask = np.abs(g[name]) > 1e-4
        np.testing.assert_allclose(
            np.asarray(new_state.params[name])[mask], expected[mask], rtol=1e-4, atol=1e-6
        )
    np.testing.assert_allclose(m["loss"], model.training_loss(jnp.asarray(x))[0], rtol=1e-5)
    fired = np.asarray(
        model(x).code if not isinstance(model, sae.BatchTopKSAE) else model.encode(x, training=True)
    ).any(0)
    np.testing.assert_array_equal(new_state.dead.tokens_since_fired, np.where(fired, 0, 16))


def test_batchtopk_train_step_sharded_equals_unsharded(mesh8, rng):
    model = sae.BatchTopKSAE(16, 256, k=2, rngs=nnx.Rngs(3), dead_threshold=0)
    xs = [rng.normal(size=(64, 16)).astype(np.float32) for _ in range(3)]
    # SGD keeps the update linear in the gradient (Adam's first steps turn reduction-order
    # noise in near-zero gradients into lr-sized moves).
    step_a, state_a = sae.make_train_step(model, optax.sgd(0.1))
    step_b, state_b = sae.make_train_step(model, optax.sgd(0.1))
    for x in xs:
        state_a, m_a = step_a(state_a, jnp.asarray(x))
        with jax.set_mesh(mesh8):
            state_b, m_b = step_b(state_b, parallel.shard_batch(mesh8, x))
    assert isinstance(parallel.shard_batch(mesh8, xs[0]).sharding, NamedSharding)
    assert parallel.shard_batch(mesh8, xs[0]).sharding.spec == P("data")
    assert float(m_a["auxk"]) > 0
    for name in state_a.params:
        np.testing.assert_allclose(
            state_b.params[name], state_a.params[name], rtol=1e-5, atol=1e-6, err_msg=name
        )
    np.testing.assert_allclose(state_b.buffers["threshold"], state_a.buffers["threshold"])
    for key in m_a:
        np.testing.assert_allclose(m_b[key], m_a[key], rtol=1e-5, atol=1e-7, err_msg=key)
    np.testing.assert_array_equal(state_b.dead.tokens_since_fired, state_a.dead.tokens_since_fired)


# ------------------------------------------------------------------------------------------------
# validation


def test_validation_errors():
    r = nnx.Rngs(0)
    with pytest.raises(ValueError, match=r"k must be in \[1, d_sae=8\]; got 9"):
        sae.BatchTopKSAE(4, 8, k=9, rngs=r)
    with pytest.raises(ValueError, match=r"k must be in \[1, d_sae=8\]; got 0"):
        sae.BatchTopKSAE(4, 8, k=0, rngs=r)
    with pytest.raises(ValueError, match="mode must be one of"):
        sae.ReluSAE(4, 8, rngs=r, mode="l2")
    with pytest.raises(ValueError, match="l1_coef must be a finite number >= 0; got -1.0"):
        sae.ReluSAE(4, 8, rngs=r, l1_coef=-1.0)
    with pytest.raises(ValueError, match="bandwidth must be a finite number > 0"):
        sae.JumpReluSAE(4, 8, rngs=r, bandwidth=0.0)
    with pytest.raises(ValueError, match="threshold_decay must be in"):
        sae.BatchTopKSAE(4, 8, k=2, rngs=r, threshold_decay=1.0)
    with pytest.raises(ValueError, match="d_sae must be >= 1"):
        sae.GatedSAE(4, 0, rngs=r)
    with pytest.raises(ValueError, match="dead_threshold"):
        sae.JumpReluSAE(4, 8, rngs=r, dead_threshold=-1)
    models = [
        sae.ReluSAE(4, 8, rngs=r),
        sae.GatedSAE(4, 8, rngs=r),
        sae.JumpReluSAE(4, 8, rngs=r),
        sae.BatchTopKSAE(4, 8, k=2, rngs=r),
    ]
    losses = [sae.loss, sae.loss, sae.loss, sae.loss]
    for model, loss in zip(models, losses, strict=True):
        with pytest.raises(ValueError, match=r"x must be \[batch, d_in=4\]; got \[3, 5\]"):
            model.encode(jnp.ones((3, 5)))
        with pytest.raises(ValueError, match=r"x must have rank 2; got shape \[4\]"):
            model(jnp.ones((4,)))
        with pytest.raises(ValueError, match="x must have a float dtype; got int32"):
            loss(model, jnp.ones((3, 4), jnp.int32))
        with pytest.raises(ValueError, match="x must not be empty"):
            model.pre_activations(jnp.ones((0, 4)))
        with pytest.raises(ValueError, match=r"dead_mask must be \[d_sae=8\]"):
            loss(model, jnp.ones((3, 4)), dead_mask=jnp.ones((7,), bool))
        with pytest.raises(ValueError, match=r"code must be \[batch, d_sae=8\]; got \[3, 7\]"):
            model.decode(jnp.ones((3, 7)))
        with pytest.raises(ValueError, match="model must be a jaxemb.sae module"):
            loss(jnp.ones((3, 4)), jnp.ones((3, 4)))
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, d_sae=8\]; got 9"):
        sae.loss(models[3], jnp.ones((3, 4)), k=9)
    with pytest.raises(ValueError, match="training must be a bool"):
        models[3].encode(jnp.ones((3, 4)), training=1)
    with pytest.raises(ValueError, match="l1_coef must be a finite number >= 0"):
        sae.loss(models[0], jnp.ones((3, 4)), l1_coef=float("nan"))
    with pytest.raises(ValueError, match=r"acts must have rank 2; got shape \[3\]"):
        sae.batch_topk(jnp.ones((3,)), 1)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, d_sae=4\]; got 0"):
        sae.batch_topk(jnp.ones((3, 4)), 0)
    with pytest.raises(ValueError, match=r"threshold \[4\] must match x \[2, 3\]"):
        sae.heaviside_st(jnp.ones((2, 3)), jnp.ones((4,)), 0.1)
    with pytest.raises(ValueError, match="bandwidth must be a finite number > 0"):
        sae.jumprelu_st(jnp.ones((2, 3)), jnp.ones((3,)), -1.0)
