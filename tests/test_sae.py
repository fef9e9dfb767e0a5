"""Tests for jaxemb.sae (TopK SAE core) against independent NumPy float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tolerances import EPS32

from jaxemb import parallel, sae
from jaxemb.sae import metrics

# ------------------------------------------------------------------------------------------------
# NumPy references (float64), written independently of the implementation


def np_params(model):
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return {k: np.asarray(v, np.float64) for k, v in pure.items()}


def np_topk(r, k):
    """Top-k per row with ties to the lower index (stable sort of -r)."""
    idx = np.argsort(-r, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(r, idx, axis=1), idx


def np_forward(p, x, k):
    x = np.asarray(x, np.float64)
    pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    vals, idx = np_topk(np.maximum(pre, 0.0), k)
    z = np.zeros_like(pre)
    np.put_along_axis(z, idx, vals, axis=1)
    return pre, vals, idx, z @ p["W_dec"] + p["b_dec"]


def np_total_variance(x):
    x = np.asarray(x, np.float64)
    return np.sum((x - x.mean(0)) ** 2)


def np_auxk(p, x, pre, e_target, dead):
    """sparsify's AuxK: top-min(d_in//2, n_dead) dead relu pre-acts, decoded without b_dec."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return 0.0
    k_aux = x.shape[1] // 2
    scale = min(n_dead / k_aux, 1.0)
    masked = np.where(dead[None, :], np.maximum(pre, 0.0), -np.inf)
    vals, idx = np_topk(masked, min(k_aux, n_dead))
    e_hat = np.einsum("nk,nkd->nd", vals, p["W_dec"][idx])
    return scale * np.sum((e_hat - e_target) ** 2) / np_total_variance(x)


def np_topk_loss(p, x, k, dead, aux_coef, e_target=None):
    """FVU + aux_coef·AuxK; ``e_target`` fixes the (stop-gradient) AuxK target."""
    x = np.asarray(x, np.float64)
    pre, vals, _, x_hat = np_forward(p, x, k)
    fvu = np.sum((x - x_hat) ** 2) / np_total_variance(x)
    e = x - x_hat if e_target is None else e_target
    auxk = 0.0 if dead is None else np_auxk(p, x, pre, e, dead)
    return fvu + aux_coef * auxk, fvu, auxk, vals


def make_model(rng, d_in, d_sae, k, *, biases=True, **kw):
    model = sae.TopKSAE(d_in, d_sae, k=k, rngs=nnx.Rngs(int(rng.integers(1 << 30))), **kw)
    if biases:
        model.b_enc[...] = jnp.asarray(0.1 * rng.normal(size=d_sae), jnp.float32)
        model.b_dec[...] = jnp.asarray(rng.normal(size=d_in), jnp.float32)
    return model


def synthetic(rng, n, n_atoms=64, d=32, active=3):
    D = rng.normal(size=(n_atoms, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    support = np.argsort(rng.random((n, n_atoms)), axis=1)[:, :active]
    codes = np.zeros((n, n_atoms))
    np.put_along_axis(codes, support, rng.uniform(0.5, 1.5, (n, active)), axis=1)
    return (codes @ D).astype(np.float32), D


# ------------------------------------------------------------------------------------------------
# module, encode, decode


def test_init_layout_and_values():
    model = sae.TopKSAE(8, 24, k=3, rngs=nnx.Rngs(0))
    p = np_params(model)
    assert {k: v.shape for k, v in p.items()} == {
        "W_enc": (8, 24),
        "b_enc": (24,),
        "W_dec": (24, 8),
        "b_dec": (8,),
    }
    np.testing.assert_allclose(np.linalg.norm(p["W_dec"], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(p["W_enc"], p["W_dec"].T)
    assert not p["b_enc"].any() and not p["b_dec"].any()
    # Distinct random directions (not a degenerate init).
    gram = p["W_dec"] @ p["W_dec"].T - np.eye(24)
    assert np.abs(gram).max() < 0.99

    untied = sae.TopKSAE(8, 24, k=3, rngs=nnx.Rngs(0), init_encoder_from_decoder=False)
    q = np_params(untied)
    assert not np.allclose(q["W_enc"], q["W_dec"].T)
    assert np.abs(q["W_enc"]).max() <= 1 / np.sqrt(8)
    np.testing.assert_allclose(np.linalg.norm(q["W_dec"], axis=1), 1.0, rtol=1e-6)


def test_encode_hand_case_with_negatives_and_ties():
    model = sae.TopKSAE(3, 6, k=3, rngs=nnx.Rngs(0))
    # Columns: e0, e0 again (exact ties), −e0, e1, zero (always 0), −e1.
    W = np.array([[1, 1, -1, 0, 0, 0], [0, 0, 0, 1, 0, -1], [0, 0, 0, 0, 0, 0]], np.float32)
    model.W_enc[...] = jnp.asarray(W)
    x = jnp.array([[2.0, 1.0, 0.0], [-1.0, -1.0, 0.0], [0.0, 0.0, 5.0]])
    code = model.encode(x)
    # Row 0: relu(pre) = [2, 2, 0, 1, 0, 0]; row 1: [0, 0, 1, 0, 0, 1]; row 2: all zero.
    np.testing.assert_array_equal(code.values, [[2, 2, 1], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(code.indices, [[0, 1, 3], [2, 5, 0], [0, 1, 2]])


def test_encode_matches_numpy_on_exact_ties(rng):
    d_in, d_sae, k = 6, 20, 5
    model = make_model(rng, d_in, d_sae, k, biases=False)
    # Small integers make every pre-activation exact in float32, so ties are real ties.
    W = rng.integers(-2, 3, size=(d_in, d_sae)).astype(np.float32)
    W[:, 7] = W[:, 3]  # duplicate columns
    model.W_enc[...] = jnp.asarray(W)
    b_enc = -np.ones(d_sae, np.float32)
    b_enc[[2, 9]] = 1.0
    b_enc[[4, 11, 12]] = 0.0
    b_dec = rng.integers(-1, 2, size=d_in).astype(np.float32)
    model.b_enc[...] = jnp.asarray(b_enc)
    model.b_dec[...] = jnp.asarray(b_dec)
    x = rng.integers(-3, 4, size=(40, d_in)).astype(np.float32)
    x[::8] = b_dec  # pre = b_enc: two positive latents, then ties at zero
    code = model.encode(x)
    pre, vals, idx, _ = np_forward(np_params(model), x, k)
    assert (pre < 0).any() and (np.sort(np.maximum(pre, 0), 1)[:, -k:] == 0).any()
    np.testing.assert_array_equal(np.asarray(code.indices), idx)
    np.testing.assert_array_equal(np.asarray(code.values), vals)
    np.testing.assert_array_equal(np.asarray(model.pre_activations(x)), pre)


def test_decode_equals_dense_and_call_consistent(rng):
    d_in, d_sae, k = 5, 12, 3
    model = make_model(rng, d_in, d_sae, k)
    p = np_params(model)
    values = rng.normal(size=(7, 4)).astype(np.float32)
    indices = rng.integers(0, d_sae, size=(7, 4)).astype(np.int32)
    indices[0] = [2, 2, 5, 2]  # repeated indices add up
    code = sae.SparseCode(jnp.asarray(values), jnp.asarray(indices))
    dense = np.zeros((7, d_sae))
    for n in range(7):
        for j in range(4):
            dense[n, indices[n, j]] += values[n, j]
    np.testing.assert_allclose(sae.densify(code, d_sae), dense, rtol=1e-6, atol=1e-6)
    expected = dense @ p["W_dec"] + p["b_dec"]
    np.testing.assert_allclose(model.decode(code), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        sae.sparse_decode(code.values, code.indices, model.W_dec[...]),
        dense @ p["W_dec"],
        rtol=1e-5,
        atol=1e-5,
    )

    x = rng.normal(size=(9, d_in)).astype(np.float32)
    out = model(x)
    pre, vals, idx, x_hat = np_forward(p, x, k)
    np.testing.assert_allclose(out.pre_activations, pre, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out.code.indices, idx)
    np.testing.assert_allclose(out.code.values, vals, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.reconstruction, x_hat, rtol=1e-5, atol=1e-5)

    # Under jit (split/merge), the same numbers.
    graphdef, state = nnx.split(model)
    jitted = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x).reconstruction)(state, x)
    np.testing.assert_allclose(jitted, x_hat, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# loss


def test_topk_loss_fvu_without_dead_mask(rng):
    model = make_model(rng, 8, 32, 4)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    loss, m = sae.loss(model, x)
    ref_loss, ref_fvu, _, vals = np_topk_loss(np_params(model), x, 4, None, 1 / 32)
    _, _, _, x_hat = np_forward(np_params(model), x, 4)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(m["fvu"], ref_fvu, rtol=1e-5)
    assert float(m["auxk"]) == 0.0 and float(m["dead_fraction"]) == 0.0
    np.testing.assert_allclose(m["mse"], np.mean((x - x_hat) ** 2), rtol=1e-5)
    np.testing.assert_allclose(m["l0"], np.mean(np.sum(vals != 0, axis=1)), rtol=1e-6)


@pytest.mark.parametrize("n_dead", [0, 3, 8, 20])
def test_auxk_matches_sparsify_semantics(rng, n_dead):
    d_in, d_sae, k = 16, 40, 4  # k_aux = 8
    model = make_model(rng, d_in, d_sae, k, aux_coef=0.25)
    model.b_enc[...] = jnp.asarray(rng.normal(size=d_sae), jnp.float32)  # many positive pre-acts
    x = rng.normal(size=(30, d_in)).astype(np.float32)
    dead = np.zeros(d_sae, bool)
    dead[rng.choice(d_sae, n_dead, replace=False)] = True
    loss, m = sae.loss(model, x, jnp.asarray(dead))
    p = np_params(model)
    ref_loss, ref_fvu, ref_auxk, _ = np_topk_loss(p, x, k, dead, 0.25)
    np.testing.assert_allclose(m["auxk"], ref_auxk, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m["fvu"], ref_fvu, rtol=1e-5)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(m["dead_fraction"], n_dead / d_sae, rtol=1e-6)
    if n_dead:
        assert ref_auxk > 0
        # Decoding the aux latents WITH b_dec (sparsify's pre-#132 bug) gives another value.
        pre, _, _, x_hat = np_forward(p, x, k)
        masked = np.where(dead[None, :], np.maximum(pre, 0), -np.inf)
        vals, idx = np_topk(masked, min(8, n_dead))
        e_hat_b = np.einsum("nk,nkd->nd", vals, p["W_dec"][idx]) + p["b_dec"]
        buggy = min(n_dead / 8, 1) * np.sum((e_hat_b - (x - x_hat)) ** 2) / np_total_variance(x)
        assert not np.isclose(float(m["auxk"]), buggy, rtol=1e-3)
    else:
        assert float(m["auxk"]) == 0.0


def test_loss_gradient_matches_finite_differences(rng):
    d_in, d_sae, k = 4, 6, 2
    model = make_model(rng, d_in, d_sae, k, aux_coef=0.5)
    model.b_enc[...] = jnp.asarray(0.5 + 0.1 * rng.normal(size=d_sae), jnp.float32)
    x = rng.normal(size=(5, d_in)).astype(np.float32)
    dead = np.array([False, True, False, True, True, False])
    graphdef, state = nnx.split(model, nnx.Param)

    def f(p):
        return sae.loss(nnx.merge(graphdef, p), x, jnp.asarray(dead))[0]

    grads = jax.grad(f)(nnx.to_pure_dict(state))
    p0 = np_params(model)
    # AuxK's target e is a constant (stop-gradient): fix it at the base point.
    _, _, _, x_hat0 = np_forward(p0, x, k)
    e0 = np.asarray(x, np.float64) - x_hat0
    h = 1e-6
    for name, value in p0.items():
        fd = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            plus = {**p0, name: value.copy()}
            minus = {**p0, name: value.copy()}
            plus[name][i] += h
            minus[name][i] -= h
            lp = np_topk_loss(plus, x, k, dead, 0.5, e_target=e0)[0]
            lm = np_topk_loss(minus, x, k, dead, 0.5, e_target=e0)[0]
            fd[i] = (lp - lm) / (2 * h)
        assert np.abs(fd).max() > 0, name
        np.testing.assert_allclose(grads[name], fd, rtol=2e-3, atol=2e-5, err_msg=name)


def test_bfloat16_inputs_accumulate_in_float32(rng):
    model = make_model(rng, 8, 16, 2)
    x = rng.normal(size=(20, 8)).astype(np.float32)
    xb = jnp.asarray(x, jnp.bfloat16)
    loss, m = sae.loss(model, xb)
    assert loss.dtype == jnp.float32
    ref = np_topk_loss(np_params(model), np.asarray(xb.astype(jnp.float32)), 2, None, 1 / 32)[0]
    np.testing.assert_allclose(loss, ref, rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# dead latents


def test_dead_latent_state_update_and_mask():
    d_sae = 6
    state = sae.dead_latents_init(d_sae)
    counts = np.zeros(d_sae, np.int64)
    batches = [
        # (values, indices): a zero value in the top-k does not count as firing
        (np.array([[1.0, 0.0], [2.0, 0.5]]), np.array([[0, 4], [1, 0]])),
        (np.array([[0.3, 0.2]]), np.array([[5, 1]])),
        (np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]]), np.array([[2, 3], [2, 3], [3, 2]])),
    ]
    for values, indices in batches:
        code = sae.SparseCode(jnp.asarray(values, jnp.float32), jnp.asarray(indices, jnp.int32))
        state = sae.dead_latents_update(state, code, values.shape[0])
        fired = np.zeros(d_sae, bool)
        fired[indices[values != 0]] = True
        counts = np.where(fired, 0, counts + values.shape[0])
        np.testing.assert_array_equal(state.tokens_since_fired, counts)
    # counts = [4, 3, 6, 0, 6, 3]
    np.testing.assert_array_equal(sae.dead_mask(state, 3), counts > 3)
    np.testing.assert_array_equal(sae.dead_mask(state, 0), counts > 0)

    dense = jnp.array([[0.0, 1.0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 2.0]])
    state2 = sae.dead_latents_update(state, dense, 2)
    np.testing.assert_array_equal(state2.tokens_since_fired, [6, 0, 8, 2, 8, 0])

    # Saturates instead of wrapping around.
    big = sae.DeadLatentState(jnp.array([2**31 - 10, 5], jnp.int32))
    code = sae.SparseCode(jnp.array([[1.0]]), jnp.array([[1]]))
    out = sae.dead_latents_update(big, code, 100)
    np.testing.assert_array_equal(out.tokens_since_fired, [2**31 - 1, 0])
    assert bool(sae.dead_mask(out, 10_000_000)[0])

    np.testing.assert_allclose(metrics.dead_fraction(state, 3), np.mean(counts > 3), rtol=1e-6)
    np.testing.assert_allclose(metrics.dead_fraction(state.tokens_since_fired, 5), 2 / 6, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# decoder tricks, geometric median, train step


def test_normalize_decoder_and_parallel_grad_removal(rng):
    model = make_model(rng, 7, 11, 2)
    W = rng.normal(size=(11, 7)) * rng.uniform(0.1, 5.0, size=(11, 1))
    model.W_dec[...] = jnp.asarray(W, jnp.float32)
    sae.normalize_decoder(model)
    Wn = np.asarray(model.W_dec[...], np.float64)
    np.testing.assert_allclose(np.linalg.norm(Wn, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(Wn, W / np.linalg.norm(W, axis=1, keepdims=True), rtol=1e-5)

    g = rng.normal(size=(11, 7))
    out = np.asarray(sae.remove_parallel_grad(jnp.asarray(g, jnp.float32), model.W_dec[...]))
    np.testing.assert_allclose(np.sum(out * Wn, axis=1), 0.0, atol=1e-5)
    ref = g - np.sum(g * Wn, axis=1, keepdims=True) * Wn  # sparsify's formula (unit rows)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # Non-unit rows: still orthogonal, and the orthogonal part is untouched.
    out2 = np.asarray(sae.remove_parallel_grad(jnp.asarray(g), jnp.asarray(W)))
    np.testing.assert_allclose(np.sum(out2 * W, axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(out2, ref, rtol=1e-4, atol=1e-5)


def test_geometric_median_known_cases(rng):
    # Collinear points, odd count: the geometric median is the ordinary median.
    t = np.array([0.0, 1.0, 2.5, 3.0, 100.0])
    direction = np.array([0.6, 0.8, 0.0])
    pts = t[:, None] * direction[None, :] + np.array([1.0, -2.0, 3.0])
    gm = np.asarray(sae.geometric_median(jnp.asarray(pts, jnp.float32), max_iter=500))
    np.testing.assert_allclose(gm, 2.5 * direction + np.array([1.0, -2.0, 3.0]), atol=2e-3)

    # A cluster with far outliers: agrees with a direct minimiser, unlike the mean.
    x = rng.normal(size=(60, 4))
    x[:5] += 50.0
    ref = scipy.optimize.minimize(
        lambda y: np.sum(np.linalg.norm(x - y, axis=1)),
        x.mean(0),
        method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 20000},
    ).x
    gm = np.asarray(sae.geometric_median(jnp.asarray(x, jnp.float32), max_iter=200, tol=1e-7))
    np.testing.assert_allclose(gm, ref, atol=2e-3)
    assert np.linalg.norm(x.mean(0) - ref) > 2.0

    model = make_model(rng, 4, 8, 2, biases=False)
    sae.init_b_dec(model, x.astype(np.float32), method="geometric_median")
    np.testing.assert_allclose(model.b_dec[...], ref, atol=2e-3)
    sae.init_b_dec(model, x.astype(np.float32))
    np.testing.assert_allclose(model.b_dec[...], x.mean(0), rtol=1e-5)


def _np_adam_first_step(param, g, lr, b1=0.9, b2=0.999, eps=1e-8):
    m = (1 - b1) * g
    v = (1 - b2) * g * g
    return param - lr * (m / (1 - b1)) / (np.sqrt(v / (1 - b2)) + eps)


def test_train_step_matches_reference(rng):
    d_in, d_sae, k, threshold = 8, 24, 3, 5
    model = make_model(rng, d_in, d_sae, k, dead_threshold=threshold, aux_coef=0.5)
    x = rng.normal(size=(16, d_in)).astype(np.float32)
    lr = 1e-3
    train_step, state = sae.make_train_step(model, optax.adam(lr), donate=False)
    counts = rng.integers(0, 10, size=d_sae).astype(np.int32)
    state = state._replace(dead=sae.DeadLatentState(jnp.asarray(counts)))
    new_state, m = train_step(state, x)

    dead = counts > threshold
    assert 0 < dead.sum() < d_sae
    graphdef, pstate = nnx.split(model, nnx.Param)
    grads = jax.grad(lambda p: sae.loss(nnx.merge(graphdef, p), x, jnp.asarray(dead))[0])(
        nnx.to_pure_dict(pstate)
    )
    p0 = np_params(model)
    g = {name: np.asarray(gr, np.float64) for name, gr in grads.items()}
    W = p0["W_dec"]
    g["W_dec"] = (
        g["W_dec"] - np.sum(g["W_dec"] * W, 1, keepdims=True) * W / np.sum(W * W, 1)[:, None]
    )
    expected = {name: _np_adam_first_step(p0[name], g[name], lr) for name in p0}
    expected["W_dec"] /= np.linalg.norm(expected["W_dec"], axis=1, keepdims=True)
    for name in p0:
        np.testing.assert_allclose(new_state.params[name], expected[name], rtol=1e-5, atol=1e-6)
    # unit rows up to float32 rounding of the sum of squares, sqrt and division (a few ulps)
    norms = np.linalg.norm(new_state.params["W_dec"], axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=16 * EPS32)

    ref_loss, ref_fvu, ref_auxk, vals = np_topk_loss(p0, x, k, dead, 0.5)
    np.testing.assert_allclose(m["loss"], ref_loss, rtol=1e-5)
    np.testing.assert_allclose(m["auxk"], ref_auxk, rtol=1e-5)
    _, _, idx, _ = np_forward(p0, x, k)
    fired = np.zeros(d_sae, bool)
    fired[idx[vals != 0]] = True
    np.testing.assert_array_equal(
        new_state.dead.tokens_since_fired, np.where(fired, 0, counts + 16)
    )
    assert int(new_state.step) == 1
    # The model itself is untouched until the caller copies the parameters back.
    np.testing.assert_array_equal(np_params(model)["W_dec"], p0["W_dec"])
    nnx.update(model, new_state.params)
    np.testing.assert_array_equal(model.W_dec[...], new_state.params["W_dec"])

    # normalize_decoder=False: no renormalisation, no projection.
    plain = make_model(rng, d_in, d_sae, k, normalize_decoder=False)
    step2, st2 = sae.make_train_step(plain, optax.sgd(10.0), donate=False)
    st2, _ = step2(st2, x)
    assert np.abs(np.linalg.norm(st2.params["W_dec"], axis=1) - 1.0).max() > 1e-3


def test_train_step_recovers_planted_dictionary():
    rng = np.random.default_rng(0)
    x, D = synthetic(rng, 8192)
    batch = 256
    model = sae.TopKSAE(32, 128, k=4, rngs=nnx.Rngs(0), dead_threshold=20 * batch)
    sae.init_b_dec(model, x[:1024])
    train_step, state = sae.make_train_step(model, optax.adam(3e-3))
    for i in range(400):
        j = (i * batch) % len(x)
        state, m = train_step(state, x[j : j + batch])
    recovered = float(metrics.recovered_fraction(state.params["W_dec"], D, threshold=0.9))
    assert recovered >= 0.8, recovered
    assert float(m["fvu"]) < 0.2
    np.testing.assert_allclose(np.linalg.norm(state.params["W_dec"], axis=1), 1.0, rtol=1e-5)


def test_train_step_sharded_equals_unsharded(mesh8, rng):
    d_in, d_sae, k = 16, 64, 4
    model = make_model(rng, d_in, d_sae, k, dead_threshold=0)
    xs = [rng.normal(size=(64, d_in)).astype(np.float32) for _ in range(3)]
    step_a, state_a = sae.make_train_step(model, optax.adam(1e-2))
    step_b, state_b = sae.make_train_step(model, optax.adam(1e-2))
    for i, x in enumerate(xs):
        state_a, m_a = step_a(state_a, jnp.asarray(x))
        if i == 0:
            state_b, m_b = step_b(state_b, jax.device_put(x, NamedSharding(mesh8, P("data"))))
        else:  # the quickstart's way: under the mesh, through shard_batch
            with jax.set_mesh(mesh8):
                state_b, m_b = step_b(state_b, parallel.shard_batch(mesh8, x))
    assert state_b.params["W_dec"].sharding.is_fully_replicated
    assert float(m_a["auxk"]) > 0  # dead latents (threshold 0) exercise AuxK too
    for name in state_a.params:
        np.testing.assert_allclose(
            state_b.params[name], state_a.params[name], rtol=1e-5, atol=1e-6, err_msg=name
        )
    for key in m_a:
        np.testing.assert_allclose(m_b[key], m_a[key], rtol=1e-5, atol=1e-7, err_msg=key)
    np.testing.assert_array_equal(state_b.dead.tokens_since_fired, state_a.dead.tokens_since_fired)


# ------------------------------------------------------------------------------------------------
# metrics


def test_reconstruction_metrics_match_numpy(rng):
    x = rng.normal(size=(20, 6)).astype(np.float32)
    x_hat = (x + 0.3 * rng.normal(size=x.shape)).astype(np.float32)
    x64, h64 = x.astype(np.float64), x_hat.astype(np.float64)
    fvu = np.sum((x64 - h64) ** 2) / np.sum((x64 - x64.mean(0)) ** 2)
    np.testing.assert_allclose(metrics.fvu(x, x_hat), fvu, rtol=1e-5)
    np.testing.assert_allclose(metrics.explained_variance(x, x_hat), 1 - fvu, rtol=1e-5)
    np.testing.assert_allclose(metrics.mse(x, x_hat), np.mean((x64 - h64) ** 2), rtol=1e-5)
    cos = np.sum(x64 * h64, 1) / (np.linalg.norm(x64, axis=1) * np.linalg.norm(h64, axis=1))
    np.testing.assert_allclose(metrics.cosine(x, x_hat), cos.mean(), rtol=1e-5)
    ratio = np.linalg.norm(h64, axis=1) / np.linalg.norm(x64, axis=1)
    np.testing.assert_allclose(metrics.shrinkage(x, x_hat), ratio.mean(), rtol=1e-5)


def test_sparsity_metrics_match_numpy(rng):
    d_sae = 10
    values = np.abs(rng.normal(size=(8, 3))).astype(np.float32)
    values[0, 1] = 0.0
    indices = np.stack([rng.choice(d_sae, 3, replace=False) for _ in range(8)]).astype(np.int32)
    indices[1] = [4, 4, 7]  # repeated index: counted once by firing_frequency
    code = sae.SparseCode(jnp.asarray(values), jnp.asarray(indices))
    dense = np.zeros((8, d_sae))
    for n in range(8):
        for j in range(3):
            dense[n, indices[n, j]] += values[n, j]
    np.testing.assert_allclose(metrics.l0(code), np.mean(np.sum(values != 0, 1)), rtol=1e-6)
    np.testing.assert_allclose(
        metrics.l0(dense.astype(np.float32)), np.mean(np.sum(dense != 0, 1)), rtol=1e-6
    )
    np.testing.assert_allclose(metrics.l1(code), np.mean(np.abs(values).sum(1)), rtol=1e-5)
    np.testing.assert_allclose(
        metrics.l1(dense.astype(np.float32)), np.abs(dense).sum(1).mean(), rtol=1e-6
    )
    freq = np.mean(dense != 0, axis=0)
    np.testing.assert_allclose(metrics.firing_frequency(code, d_sae), freq, rtol=1e-6)
    np.testing.assert_allclose(metrics.firing_frequency(dense.astype(np.float32)), freq, rtol=1e-6)
    np.testing.assert_allclose(
        metrics.dense_fraction(freq, threshold=0.2), np.mean(freq > 0.2), rtol=1e-6
    )


def test_dictionary_metrics(rng):
    D = rng.normal(size=(12, 5))
    perm = rng.permutation(12)
    W = D[perm] * rng.uniform(0.5, 3.0, size=(12, 1))  # a scaled permutation
    W = np.concatenate([W, rng.normal(size=(4, 5))])  # plus extra learned rows
    np.testing.assert_allclose(metrics.mmcs(W, D), 1.0, rtol=1e-6)
    assert float(metrics.recovered_fraction(W, D)) == 1.0

    L = rng.normal(size=(7, 5))
    Dn = D / np.linalg.norm(D, axis=1, keepdims=True)
    Ln = L / np.linalg.norm(L, axis=1, keepdims=True)
    best = (Dn @ Ln.T).max(axis=1)
    np.testing.assert_allclose(metrics.max_cosine(L, D), best, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics.mmcs(L, D), best.mean(), rtol=1e-5)
    thr = float(np.median(best))
    np.testing.assert_allclose(
        metrics.recovered_fraction(L, D, threshold=thr), np.mean(best > thr), rtol=1e-6
    )
    assert float(metrics.mmcs(-D, D)) < 1.0  # signed cosine: a flipped atom is not recovered


# ------------------------------------------------------------------------------------------------
# analysis


def _np_top_activating(acts, top_n, threshold):
    a = np.where(acts > threshold, acts, -np.inf).T  # [d_sae, N]
    order = np.argsort(-a, axis=1, kind="stable")[:, :top_n]
    vals = np.take_along_axis(a, order, axis=1)
    idx = np.where(np.isfinite(vals), order, -1)
    pad = top_n - vals.shape[1]
    if pad > 0:
        vals = np.pad(vals, ((0, 0), (0, pad)), constant_values=-np.inf)
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
    return vals, idx


def test_top_activating_streaming_equals_full_sort(rng):
    acts = np.round(rng.exponential(size=(53, 7)), 1).astype(np.float32)  # many ties
    acts[rng.random(acts.shape) < 0.5] = 0.0
    acts[:, 6] = 0.0
    acts[[3, 40], 6] = 1.5  # latent 6 fires twice: padded slots
    sizes = [5, 1, 17, 0, 30]
    batches = np.split(acts, np.cumsum(sizes)[:-1])
    for top_n, threshold in [(4, 0.0), (9, 0.0), (3, -np.inf)]:
        vals, idx = sae.analysis.top_activating(
            lambda b: b, batches, 7, top_n=top_n, threshold=threshold
        )
        ref_v, ref_i = _np_top_activating(acts, top_n, threshold)
        np.testing.assert_array_equal(vals, ref_v)
        np.testing.assert_array_equal(idx, ref_i)
    # Fewer rows than top_n.
    vals, idx = sae.analysis.top_activating(lambda b: b, [acts[:2]], 7, top_n=5)
    ref_v, ref_i = _np_top_activating(acts[:2], 5, 0.0)
    np.testing.assert_array_equal(vals, ref_v)
    np.testing.assert_array_equal(idx, ref_i)


def test_top_activating_with_sparse_codes(rng):
    model = make_model(rng, 6, 16, 3)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    _, vals, idx, _ = np_forward(np_params(model), x, 3)
    dense = np.zeros((40, 16))
    np.put_along_axis(dense, idx, vals, axis=1)
    got_v, got_i = sae.analysis.top_activating(model.encode, np.split(x, [13, 27]), 16, top_n=4)
    ref_v, ref_i = _np_top_activating(dense, 4, 0.0)
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_allclose(got_v, ref_v, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# validation


def test_validation_errors():
    with pytest.raises(ValueError, match=r"k must be in \[1, d_sae=8\]; got 9"):
        sae.TopKSAE(4, 8, k=9, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"k must be in \[1, d_sae=8\]; got 0"):
        sae.TopKSAE(4, 8, k=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"k must be in \[1, d_sae=8\]; got -2"):
        sae.TopKSAE(4, 8, k=-2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="k must be an integer"):
        sae.TopKSAE(4, 8, k=2.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dead_threshold"):
        sae.TopKSAE(4, 8, k=2, rngs=nnx.Rngs(0), dead_threshold=-1)
    model = sae.TopKSAE(4, 8, k=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x must be \[batch, d_in=4\]; got \[3, 5\]"):
        model.encode(jnp.ones((3, 5)))
    with pytest.raises(ValueError, match=r"x must have rank 2; got shape \[4\]"):
        model(jnp.ones((4,)))
    with pytest.raises(ValueError, match=r"x must have rank 2; got shape \[2, 3, 4\]"):
        sae.loss(model, jnp.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="x must have a float dtype; got int32"):
        model.encode(jnp.ones((3, 4), jnp.int32))
    with pytest.raises(ValueError, match="x must have a float dtype; got int64"):
        model.encode([[1, 2, 3, 4]])
    assert model([[1.0, 2.0, 3.0, 4.0]]).reconstruction.shape == (1, 4)
    with pytest.raises(ValueError, match="x must not be empty"):
        model.pre_activations(jnp.ones((0, 4)))
    with pytest.raises(ValueError, match=r"dead_mask must be \[d_sae=8\]"):
        sae.loss(model, jnp.ones((3, 4)), jnp.ones((7,), bool))
    with pytest.raises(ValueError, match="dead_mask must be bool"):
        sae.loss(model, jnp.ones((3, 4)), jnp.ones((8,)))
    with pytest.raises(ValueError, match="code must be a SparseCode"):
        model.decode(jnp.ones((3, 8)))
    with pytest.raises(ValueError, match="indices must have a int dtype"):
        sae.densify(sae.SparseCode(jnp.ones((2, 2)), jnp.ones((2, 2))), 4)
    with pytest.raises(ValueError, match="method must be one of"):
        sae.init_b_dec(model, jnp.ones((3, 4)), method="median")
    train_step, state = sae.make_train_step(model, optax.adam(1e-3))
    with pytest.raises(ValueError, match=r"x must be \[batch, d_in=4\]"):
        train_step(state, jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="d_sae must be given when codes is a SparseCode"):
        metrics.firing_frequency(sae.SparseCode(jnp.ones((2, 1)), jnp.zeros((2, 1), jnp.int32)))
    with pytest.raises(ValueError, match=r"x_hat must have the same shape as x \[2, 3\]"):
        metrics.fvu(jnp.ones((2, 3)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"true_dictionary \[3, 4\] must match W_dec \[3, 5\]"):
        metrics.mmcs(jnp.ones((3, 5)), jnp.ones((3, 4)))
    with pytest.raises(ValueError, match=r"encode_fn\(batches\[0\]\) must be \[2, d_sae=3\]"):
        sae.analysis.top_activating(lambda b: b, [jnp.ones((2, 4))], 3)
