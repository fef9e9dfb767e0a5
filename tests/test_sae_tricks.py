"""SAE training tricks: input normalisation, schedules, dead-latent resampling."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxemb import sae


def np_params(model):
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return {k: np.asarray(v, np.float64) for k, v in pure.items()}


# ------------------------------------------------------------------------------------------------
# input normalisation


def exact_relu_sae(d_in):
    """A ReLU SAE that reconstructs every input exactly: latents ±e_i (relu(x) − relu(−x) = x)."""
    model = sae.ReluSAE(d_in, 2 * d_in, rngs=nnx.Rngs(0))
    eye = np.eye(d_in, dtype=np.float32)
    model.W_enc[...] = jnp.asarray(np.concatenate([eye, -eye], axis=1))
    model.W_dec[...] = jnp.asarray(np.concatenate([eye, -eye], axis=0))
    return model


@pytest.mark.parametrize(
    "make",
    [
        lambda: sae.ReluSAE(6, 16, rngs=nnx.Rngs(0)),
        lambda: sae.GatedSAE(6, 16, rngs=nnx.Rngs(0)),
        lambda: sae.JumpReluSAE(6, 16, rngs=nnx.Rngs(0)),
        lambda: sae.BatchTopKSAE(6, 16, k=3, rngs=nnx.Rngs(0)),
        lambda: sae.TopKSAE(6, 16, k=3, rngs=nnx.Rngs(0)),
    ],
)
def test_fit_input_norm_scales_to_d_in(rng, make):
    model = make()
    x = (40.0 * rng.normal(size=(200, 6)) + 7.0).astype(np.float32)
    sae.init_b_dec(model, x)
    mean_before = np.asarray(model.b_dec[...], np.float64)
    s = float(sae.fit_input_norm(model, x))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(s, np.sqrt(6 / np.mean(np.sum(x64**2, axis=1))), rtol=1e-5)
    np.testing.assert_allclose(np.mean(np.sum((s * x64) ** 2, axis=1)), 6.0, rtol=1e-4)
    # b_dec keeps its place in input units: in the normalised space it is s·mean.
    np.testing.assert_allclose(model.b_dec[...], s * mean_before, rtol=1e-5)
    # The encoder sees s·x: pre-activations equal the NumPy ones on the normalised inputs.
    p = np_params(model)
    pre = (s * x64 - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    np.testing.assert_allclose(model.pre_activations(x), pre, rtol=1e-4, atol=1e-4)


def test_decode_restores_the_input_scale(rng):
    model = exact_relu_sae(5)
    x = (300.0 * rng.normal(size=(32, 5))).astype(np.float32)
    s = float(sae.fit_input_norm(model, x))
    assert s < 0.01
    out = model(x)
    np.testing.assert_allclose(out.reconstruction, x, rtol=1e-5, atol=1e-3)
    # The code lives in the normalised space: |z| = s·|x|.
    np.testing.assert_allclose(
        np.asarray(out.code)[:, :5] - np.asarray(out.code)[:, 5:], s * x, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(model.decode(out.code), x, rtol=1e-5, atol=1e-3)
    # Folding the scale into the weights keeps the function and sets s = 1.
    before = np.asarray(model(x).reconstruction)
    codes = np.asarray(model.encode(x))
    sae.fold_input_norm(model)
    assert float(model.input_scale[...]) == 1.0
    np.testing.assert_allclose(model(x).reconstruction, before, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(model.encode(x), codes, rtol=1e-5, atol=1e-6)


def test_input_norm_makes_the_loss_scale_free(rng):
    """After fit_input_norm, the L1-penalised loss on c·x equals the loss on x (λ transfers)."""
    x = rng.normal(size=(64, 6)).astype(np.float32)
    losses, raw = [], []
    for c in (1.0, 50.0):
        model = sae.ReluSAE(6, 16, rngs=nnx.Rngs(0), l1_coef=0.5)
        raw.append(float(sae.loss(model, c * x)[0]))
        sae.fit_input_norm(model, c * x)
        losses.append(sae.loss(model, c * x)[1])
    assert raw[1] > 10 * raw[0]  # without normalisation the loss depends on the units
    for key in ("loss", "recon", "l1", "fvu"):
        np.testing.assert_allclose(losses[1][key], losses[0][key], rtol=1e-4, err_msg=key)
    np.testing.assert_allclose(losses[1]["mse"], 2500 * losses[0]["mse"], rtol=1e-4)

    # TopK (scale added on demand): AuxK is computed in the normalised space too.
    vals = []
    for c in (1.0, 50.0):
        model = sae.TopKSAE(6, 16, k=2, rngs=nnx.Rngs(0))
        sae.fit_input_norm(model, c * x)
        dead = jnp.arange(16) % 3 == 0
        vals.append(sae.loss(model, c * x, dead)[1])
    for key in ("loss", "fvu", "auxk"):
        np.testing.assert_allclose(vals[1][key], vals[0][key], rtol=1e-4, err_msg=key)
    assert float(vals[0]["auxk"]) > 0


def test_train_step_carries_the_input_scale(rng):
    x = (20.0 * rng.normal(size=(64, 6))).astype(np.float32)
    model = sae.ReluSAE(6, 16, rngs=nnx.Rngs(0))
    s = sae.fit_input_norm(model, x)
    train_step, state = sae.make_train_step(model, optax.adam(1e-3), donate=False)
    np.testing.assert_allclose(state.buffers["input_scale"], s)
    new_state, m = train_step(state, x)
    np.testing.assert_allclose(m["loss"], sae.loss(model, x)[0], rtol=1e-5)
    np.testing.assert_allclose(new_state.buffers["input_scale"], s)


# ------------------------------------------------------------------------------------------------
# schedules


def test_schedule_values():
    lam = sae.l1_warmup(4.0, warmup_steps=10)
    np.testing.assert_allclose(
        [float(lam(t)) for t in (0, 1, 5, 10, 99)], [0, 0.4, 2, 4, 4], rtol=1e-6
    )
    assert float(sae.l1_warmup(3.0, warmup_steps=0)(0)) == 3.0
    k = sae.k_anneal(32, 4, steps=7)
    expected = [round(32 + (4 - 32) * min(t / 7, 1)) for t in range(10)]
    assert [int(k(t)) for t in range(10)] == expected
    lr = sae.lr_schedule(2.0, total_steps=20, warmup_steps=4, decay_steps=8)
    ref = [2.0 * t / 4 if t < 4 else 2.0 if t < 12 else 2.0 * (20 - t) / 8 for t in range(21)]
    np.testing.assert_allclose([float(lr(t)) for t in range(21)], ref, atol=1e-6)
    np.testing.assert_allclose(float(sae.lr_schedule(1.0, total_steps=5)(3)), 1.0)


def test_l1_warmup_in_the_train_step(rng):
    x = rng.normal(size=(32, 6)).astype(np.float32)
    model = sae.ReluSAE(6, 16, rngs=nnx.Rngs(0), l1_coef=100.0)
    sched = sae.l1_warmup(2.0, warmup_steps=4)
    train_step, state = sae.make_train_step(
        model, optax.sgd(0.0), schedules={"l1_coef": sched}, donate=False
    )
    for t in range(6):
        state, m = train_step(state, x)
        lam = 2.0 * min(t / 4, 1.0)
        np.testing.assert_allclose(m["l1_coef"], lam, rtol=1e-6)
        np.testing.assert_allclose(m["loss"], m["recon"] + lam * m["l1"], rtol=1e-5)
        np.testing.assert_allclose(m["loss"], sae.loss(model, x, l1_coef=lam)[0], rtol=1e-5)


def test_k_annealing_in_the_train_step(rng):
    x = rng.normal(size=(16, 8)).astype(np.float32)
    model = sae.BatchTopKSAE(8, 64, k=2, rngs=nnx.Rngs(0))
    model.b_enc[...] = jnp.ones((64,))  # every pre-activation positive: l0 is exactly k
    sched = sae.k_anneal(10, 2, steps=4)
    train_step, state = sae.make_train_step(
        model, optax.sgd(0.0), schedules={"k": sched}, donate=False
    )
    for t in range(5):
        state, m = train_step(state, x)
        k_t = round(10 + (2 - 10) * min(t / 4, 1))
        assert int(m["k"]) == k_t
        np.testing.assert_allclose(m["l0"], k_t, rtol=1e-6)
        np.testing.assert_allclose(m["fvu"], sae.loss(model, x, k=k_t)[1]["fvu"], rtol=1e-5)


def test_schedule_validation():
    model = sae.ReluSAE(4, 8, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="schedules key 'k' is not a hyperparameter of ReluSAE"):
        sae.make_train_step(model, optax.sgd(0.1), schedules={"k": sae.k_anneal(4, 2, steps=3)})
    with pytest.raises(ValueError, match="must be callable"):
        sae.make_train_step(model, optax.sgd(0.1), schedules={"l1_coef": 3.0})
    with pytest.raises(ValueError, match="k_end must be <= 4"):
        sae.k_anneal(4, 5, steps=3)
    with pytest.raises(ValueError, match="warmup_steps \\+ decay_steps must be <= total_steps=5"):
        sae.lr_schedule(1.0, total_steps=5, warmup_steps=3, decay_steps=3)
    with pytest.raises(ValueError, match="resample_every must be >= 1"):
        sae.make_train_step(model, optax.sgd(0.1), resample_every=0)


# ------------------------------------------------------------------------------------------------
# resampling


def test_resample_dead_revives_latents_and_resets_adam(rng):
    d_in, d_sae = 6, 12
    model = sae.ReluSAE(d_in, d_sae, rngs=nnx.Rngs(0), dead_threshold=10)
    model.b_dec[...] = jnp.asarray(rng.normal(size=d_in), jnp.float32)
    dead = np.zeros(d_sae, bool)
    dead[[1, 4, 9]] = True
    # Dead latents: a large negative bias, so they never fire.
    model.b_enc[...] = jnp.asarray(np.where(dead, -100.0, 0.1), jnp.float32)
    x = rng.normal(size=(40, d_in)).astype(np.float32)
    train_step, state = sae.make_train_step(model, optax.adam(1e-2), donate=False)
    for _ in range(3):
        state, _ = train_step(state, x)
    # Give every moment a non-zero value so that the reset is visible.
    adam = state.opt_state[0]
    adam = adam._replace(
        mu=jax.tree.map(lambda a: a + 0.5, adam.mu), nu=jax.tree.map(lambda a: a + 0.25, adam.nu)
    )
    state = state._replace(opt_state=(adam, *state.opt_state[1:]))
    counts = np.where(dead, 50, 0).astype(np.int32)
    state = state._replace(dead=sae.DeadLatentState(jnp.asarray(counts)))
    nnx.update(model, state.params)
    assert not np.asarray(model.encode(x))[:, dead].any()

    new = sae.resample_dead(state, model, x, key=jax.random.key(0))
    p_old = {k: np.asarray(v, np.float64) for k, v in state.params.items()}
    p_new = {k: np.asarray(v, np.float64) for k, v in new.params.items()}
    # Live latents and b_dec untouched.
    np.testing.assert_array_equal(p_new["W_dec"][~dead], p_old["W_dec"][~dead])
    np.testing.assert_array_equal(p_new["W_enc"][:, ~dead], p_old["W_enc"][:, ~dead])
    np.testing.assert_array_equal(p_new["b_enc"][~dead], p_old["b_enc"][~dead])
    np.testing.assert_array_equal(p_new["b_dec"], p_old["b_dec"])
    # Each dead decoder row is a unit vector along (x_n − b_dec) for some input n.
    u = x.astype(np.float64) - p_old["b_dec"]
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    for j in np.flatnonzero(dead):
        cos = u @ p_new["W_dec"][j]
        assert np.isclose(cos.max(), 1.0, atol=1e-5), cos.max()
        mean_alive = np.linalg.norm(p_old["W_enc"][:, ~dead], axis=0).mean()
        np.testing.assert_allclose(
            p_new["W_enc"][:, j], 0.2 * mean_alive * p_new["W_dec"][j], rtol=1e-5, atol=1e-7
        )
    np.testing.assert_array_equal(p_new["b_enc"][dead], 0.0)
    # Adam moments of the resampled rows/columns are zero; the others are kept.
    for moments_old, moments_new in (
        (state.opt_state[0].mu, new.opt_state[0].mu),
        (state.opt_state[0].nu, new.opt_state[0].nu),
    ):
        assert np.abs(np.asarray(moments_old["W_dec"])[dead]).max() > 0
        np.testing.assert_array_equal(np.asarray(moments_new["W_dec"])[dead], 0.0)
        np.testing.assert_array_equal(np.asarray(moments_new["W_enc"])[:, dead], 0.0)
        np.testing.assert_array_equal(np.asarray(moments_new["b_enc"])[dead], 0.0)
        np.testing.assert_array_equal(
            np.asarray(moments_new["W_dec"])[~dead], np.asarray(moments_old["W_dec"])[~dead]
        )
        np.testing.assert_array_equal(moments_new["b_dec"], moments_old["b_dec"])
    assert int(new.opt_state[0].count) == 3
    np.testing.assert_array_equal(new.dead.tokens_since_fired, 0)
    # Revived: they fire again.
    nnx.update(model, new.params)
    assert np.asarray(model.encode(x))[:, dead].any(axis=0).all()


def test_resample_draws_high_loss_inputs(rng):
    """Sampling ∝ loss²: when one input dominates the loss, every dead latent points at it."""
    d_in = 4
    model = exact_relu_sae(d_in)
    # Latent 4 (the −e_0 direction) decodes to nothing: only inputs with x_0 < 0 have errors.
    model.W_dec[...] = model.W_dec[...].at[4].set(jnp.zeros(d_in))
    x = np.zeros((30, d_in), np.float32)
    x[:, 1] = rng.uniform(0.5, 1.0, 30)
    x[7] = [-5.0, 1.0, 0.0, 0.0]
    train_step, state = sae.make_train_step(model, optax.adam(1e-3), donate=False)
    dead = np.zeros(2 * d_in, bool)
    dead[[2, 3, 6]] = True
    err = np.sum((np.asarray(model(x).reconstruction) - x) ** 2, axis=1)
    assert err[7] > 0 and np.all(np.delete(err, 7) == 0)
    new = sae.resample_dead(state, model, x, key=jax.random.key(3), dead=dead)
    target = x[7] / np.linalg.norm(x[7])
    for j in np.flatnonzero(dead):
        np.testing.assert_allclose(new.params["W_dec"][j], target, rtol=1e-5, atol=1e-6)


def test_resample_every_in_the_train_step(rng):
    model = sae.ReluSAE(6, 12, rngs=nnx.Rngs(0), dead_threshold=40)
    dead = np.zeros(12, bool)
    dead[[0, 5]] = True
    model.b_enc[...] = jnp.asarray(np.where(dead, -100.0, 0.1), jnp.float32)
    x = rng.normal(size=(32, 6)).astype(np.float32)
    train_step, state = sae.make_train_step(model, optax.adam(1e-2), resample_every=3, donate=False)
    for t in range(3):
        state, _ = train_step(state, x)
        b_enc = np.asarray(state.params["b_enc"])
        if t < 2:  # counters 32, 64 > 40 after step 2, but resampling waits for step 3
            assert (b_enc[dead] < -50).all()
    # Step 3: the two dead latents (64 + 32 tokens without firing) were resampled.
    assert (b_enc[dead] == 0).all() and (b_enc[~dead] != 0).all()
    np.testing.assert_array_equal(np.asarray(state.opt_state[0].mu["W_dec"])[dead], 0.0)
    np.testing.assert_array_equal(np.asarray(state.dead.tokens_since_fired)[dead], 0)
    np.testing.assert_allclose(np.linalg.norm(state.params["W_dec"][dead], axis=1), 1.0, rtol=1e-5)
