"""MatryoshkaSAE and MatchingPursuitSAE vs NumPy float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxemb import sae


def _set_params(model, rng, scale=0.5):
    d_in, d_sae = model.d_in, model.d_sae
    params = {
        "W_enc": rng.normal(size=(d_in, d_sae)).astype(np.float32),
        "b_enc": (scale * rng.normal(size=(d_sae,))).astype(np.float32),
        "W_dec": rng.normal(size=(d_sae, d_in)).astype(np.float32),
        "b_dec": (scale * rng.normal(size=(d_in,))).astype(np.float32),
    }
    for name, value in params.items():
        getattr(model, name)[...] = jnp.asarray(value)
    return {k: v.astype(np.float64) for k, v in params.items()}


# ---------------------------------------------------------------------------------------------
# Matryoshka: NumPy reference


def np_topk_code_dense(pre, k):
    acts = np.maximum(pre, 0.0)
    idx = np.argsort(-acts, axis=1, kind="stable")[:, :k]
    z = np.zeros_like(acts)
    np.put_along_axis(z, idx, np.take_along_axis(acts, idx, axis=1), axis=1)
    return z


def np_batch_topk_dense(pre, k):
    acts = np.maximum(pre, 0.0).reshape(-1)
    idx = np.argsort(-acts, kind="stable")[: pre.shape[0] * k]
    z = np.zeros_like(acts)
    z[idx] = acts[idx]
    return z.reshape(pre.shape)


def np_auxk(pre, e, W_dec, dead, tv):
    d_in = W_dec.shape[1]
    k_aux = d_in // 2
    n_dead = int(dead.sum())
    if n_dead == 0:
        return 0.0
    kk = min(k_aux, n_dead)
    acts = np.where(dead[None, :], np.maximum(pre, 0.0), -np.inf)
    idx = np.argsort(-acts, axis=1, kind="stable")[:, :kk]
    z = np.zeros_like(pre)
    np.put_along_axis(z, idx, np.take_along_axis(acts, idx, axis=1), axis=1)
    e_hat = z @ W_dec
    return min(n_dead / k_aux, 1.0) * np.sum((e_hat - e) ** 2) / tv


def np_matryoshka(p, x, *, k, prefixes, batch_topk, reduction, dead=None, aux_coef=1 / 32):
    pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    z = np_batch_topk_dense(pre, k) if batch_topk else np_topk_code_dense(pre, k)
    tv = np.sum((x - x.mean(0)) ** 2)
    fvus = [np.sum((x - (z[:, :m] @ p["W_dec"][:m] + p["b_dec"])) ** 2) / tv for m in prefixes]
    if reduction == "mean":
        loss = (np.sum((x - p["b_dec"]) ** 2) / tv + sum(fvus)) / (len(fvus) + 1)
    else:
        loss = sum(fvus)
    auxk = 0.0
    if dead is not None:
        e = x - (z @ p["W_dec"] + p["b_dec"])
        auxk = np_auxk(pre, e, p["W_dec"], dead, tv)
    return loss + aux_coef * auxk, fvus, auxk, z


@pytest.mark.parametrize(
    ("batch_topk", "reduction", "with_dead"),
    [(False, "mean", True), (True, "sum", True)],
)
def test_matryoshka_loss_matches_numpy(rng, batch_topk, reduction, with_dead):
    d_in, d_sae, k, n = 6, 24, 3, 20
    model = sae.MatryoshkaSAE(
        d_in,
        d_sae,
        k=k,
        group_sizes=(4, 8, 12),
        batch_topk=batch_topk,
        reduction=reduction,
        rngs=nnx.Rngs(0),
    )
    p = _set_params(model, rng)
    x = rng.normal(size=(n, d_in)).astype(np.float32)
    dead = (np.arange(d_sae) % 5 == 0) if with_dead else None
    loss, metrics = sae.loss(model, x, None if dead is None else jnp.asarray(dead))
    r_loss, r_fvus, r_auxk, r_z = np_matryoshka(
        p,
        x.astype(np.float64),
        k=k,
        prefixes=(4, 12, 24),
        batch_topk=batch_topk,
        reduction=reduction,
        dead=dead,
    )
    np.testing.assert_allclose(loss, r_loss, rtol=1e-5)
    for g, f in enumerate(r_fvus):
        np.testing.assert_allclose(metrics[f"fvu_prefix_{g}"], f, rtol=1e-5)
    np.testing.assert_allclose(metrics["fvu"], r_fvus[-1], rtol=1e-5)
    np.testing.assert_allclose(metrics["auxk"], r_auxk, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(metrics["l0"], np.mean(np.sum(r_z != 0, axis=1)), rtol=1e-6)
    # encode/decode agree with the reference code and its prefix reconstructions.
    code = model.encode(x)
    dense = code if batch_topk else sae.densify(code, d_sae)
    np.testing.assert_allclose(dense, r_z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        model.decode(code, prefix=4), r_z[:, :4] @ p["W_dec"][:4] + p["b_dec"], rtol=1e-5, atol=1e-5
    )


def test_matryoshka_gradients_equal_plain_autodiff(rng):
    d_in, d_sae, k, n = 6, 16, 3, 12
    model = sae.MatryoshkaSAE(d_in, d_sae, k=k, group_sizes=(4, 12), rngs=nnx.Rngs(1))
    _set_params(model, rng)
    x = jnp.asarray(rng.normal(size=(n, d_in)), jnp.float32)
    graphdef, params = nnx.split(model, nnx.Param)

    def ours(p):
        return nnx.merge(graphdef, p).training_loss(x)[0]

    def plain(p):  # dense, plain-autodiff Matryoshka loss (reduction="mean")
        W_enc, b_enc, W_dec, b_dec = (p[n][...] for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
        pre = (x - b_dec[None, :]) @ W_enc + b_enc[None, :]
        vals, idx = jax.lax.top_k(jax.nn.relu(pre), k)
        z = jnp.zeros_like(pre).at[jnp.arange(n)[:, None], idx].set(vals)
        tv = jnp.sum(jnp.square(x - x.mean(0)[None, :]))
        terms = [jnp.sum(jnp.square(x - b_dec[None, :]))]
        for m in (4, 16):
            terms.append(jnp.sum(jnp.square(x - z[:, :m] @ W_dec[:m] - b_dec[None, :])))
        return sum(terms) / tv / 3

    g1 = jax.jit(jax.grad(ours))(params)
    g2 = jax.jit(jax.grad(plain))(params)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        a, b = np.asarray(g1[name][...]), np.asarray(g2[name][...])
        assert np.abs(b).max() > 0, name
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max(), err_msg=name)


def test_matryoshka_train_step_improves_every_prefix(rng):
    atoms = rng.normal(size=(12, 8))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = rng.exponential(size=(256, 12)) * (rng.random((256, 12)) < 0.2)
    x = jnp.asarray(codes @ atoms, jnp.float32)
    model = sae.MatryoshkaSAE(8, 24, k=3, group_sizes=(4, 20), rngs=nnx.Rngs(0))
    sae.init_b_dec(model, x)
    train_step, state = sae.make_train_step(model, optax.adam(1e-2))
    state, first = train_step(state, x)
    for _ in range(60):
        state, metrics = train_step(state, x)
    for g in range(2):
        assert float(metrics[f"fvu_prefix_{g}"]) < 0.8 * float(first[f"fvu_prefix_{g}"])
    np.testing.assert_allclose(np.linalg.norm(state.params["W_dec"], axis=1), 1.0, rtol=1e-5)


def test_matryoshka_validation():
    with pytest.raises(ValueError, match="group_sizes must sum to d_sae=16"):
        sae.MatryoshkaSAE(4, 16, k=2, group_sizes=(4, 8), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="group_sizes"):
        sae.MatryoshkaSAE(4, 16, k=2, group_sizes=(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"group_sizes\[1\]"):
        sae.MatryoshkaSAE(4, 16, k=2, group_sizes=(17, -1), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="k must be in"):
        sae.MatryoshkaSAE(4, 16, k=17, group_sizes=(16,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="reduction"):
        sae.MatryoshkaSAE(4, 16, k=2, group_sizes=(16,), reduction="max", rngs=nnx.Rngs(0))
    model = sae.MatryoshkaSAE(4, 16, k=2, group_sizes=(8, 8), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="d_in=4"):
        model(jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match="prefix"):
        model.decode(model.encode(jnp.ones((2, 4))), prefix=17)
    with pytest.raises(ValueError, match="jaxemb.sae module"):
        sae.loss(object(), jnp.ones((2, 4)))


# ---------------------------------------------------------------------------------------------
# Matching pursuit: NumPy reference


def np_matching_pursuit(x, W_dec, b_dec, n_steps, tol=None):
    D = W_dec / np.linalg.norm(W_dec, axis=1, keepdims=True)
    r = x - b_dec
    values = np.zeros((x.shape[0], n_steps))
    indices = np.zeros((x.shape[0], n_steps), np.int64)
    for t in range(n_steps):
        for n in range(x.shape[0]):
            if tol is not None and np.linalg.norm(r[n]) < tol:
                indices[n, t] = -1  # stopped
                continue
            scores = D @ r[n]
            j = int(np.argmax(scores))
            values[n, t], indices[n, t] = scores[j], j
            r[n] = r[n] - scores[j] * D[j]
    return values, indices, r, D


def test_matching_pursuit_matches_numpy(rng):
    d_in, d_sae, T, n = 5, 12, 4, 9
    model = sae.MatchingPursuitSAE(d_in, d_sae, n_steps=T, rngs=nnx.Rngs(0))
    p = _set_params(model, rng)
    x = rng.normal(size=(n, d_in)).astype(np.float32)
    r_vals, r_idx, r_res, D = np_matching_pursuit(x.astype(np.float64), p["W_dec"], p["b_dec"], T)
    out = jax.jit(lambda x: model(x))(x)
    np.testing.assert_array_equal(out.code.indices, r_idx)
    np.testing.assert_allclose(out.code.values, r_vals, rtol=1e-5, atol=1e-5)
    # x̂ = x − final residual, and equals the dense decode through unit-norm atoms.
    np.testing.assert_allclose(out.reconstruction, x - r_res, rtol=1e-5, atol=1e-5)
    dense = np.asarray(sae.densify(out.code, d_sae), np.float64)
    np.testing.assert_allclose(out.reconstruction, dense @ D + p["b_dec"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.pre_activations, (x - p["b_dec"]) @ D.T, rtol=1e-5, atol=1e-5)
    loss, metrics = sae.loss(model, x)
    np.testing.assert_allclose(loss, np.sum(r_res**2) / n, rtol=1e-5)
    tv = np.sum((x - x.mean(0)) ** 2)
    np.testing.assert_allclose(metrics["fvu"], np.sum(r_res**2) / tv, rtol=1e-5)
    np.testing.assert_allclose(metrics["l0"], np.mean(np.sum(dense != 0, axis=1)), rtol=1e-6)


def test_matching_pursuit_invariants_and_adaptive_sparsity(rng):
    d_in, d_sae, n = 6, 12, 5
    model = sae.MatchingPursuitSAE(d_in, d_sae, n_steps=2, rngs=nnx.Rngs(0))
    q, _ = np.linalg.qr(rng.normal(size=(d_in, d_in)))
    # ± an orthogonal basis, rows of norm 3 (the pursuit picks the largest signed correlation).
    model.W_dec[...] = jnp.asarray(3.0 * np.concatenate([q, -q]), jnp.float32)
    x = rng.normal(size=(n, d_in)).astype(np.float32)
    # Then d_in steps reconstruct exactly, and residual norms never grow.
    errs = []
    for steps in (1, 2, 4, 6):
        recon = model.decode(model.encode(x, n_steps=steps))
        errs.append(float(np.sum((np.asarray(recon) - x) ** 2)))
    assert all(a >= b - 1e-6 for a, b in zip(errs, errs[1:], strict=False))
    assert errs[-1] < 1e-8 * errs[0]
    # tol: each row stops once its residual norm is below tol (NumPy reference, same rule).
    tol = 0.8
    code = model.encode(x, n_steps=6, tol=tol)
    r_vals, r_idx, r_res, _ = np_matching_pursuit(
        x.astype(np.float64), np.asarray(model.W_dec[...], np.float64), np.zeros(d_in), 6, tol
    )
    active = r_idx >= 0
    assert (~active).any() and active.any()
    np.testing.assert_allclose(np.asarray(code.values)[~active], 0.0)
    np.testing.assert_allclose(np.asarray(code.values)[active], r_vals[active], rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(code.indices)[active], r_idx[active])
    assert np.all(np.linalg.norm(x - np.asarray(model.decode(code)), axis=1) < tol)


def test_matching_pursuit_gradients_equal_plain_autodiff(rng):
    d_in, d_sae, T, n = 5, 10, 3, 8
    model = sae.MatchingPursuitSAE(d_in, d_sae, n_steps=T, rngs=nnx.Rngs(0))
    _set_params(model, rng)
    x = jnp.asarray(rng.normal(size=(n, d_in)), jnp.float32)
    graphdef, params = nnx.split(model, nnx.Param)

    def ours(p):
        return nnx.merge(graphdef, p).training_loss(x)[0]

    def plain(p):  # unrolled, dense-score matching pursuit with plain autodiff
        W, b_dec = p["W_dec"][...], p["b_dec"][...]
        D = W / jnp.linalg.norm(W, axis=1, keepdims=True)
        r = x - b_dec[None, :]
        for _ in range(T):
            scores = r @ D.T
            j = jnp.argmax(scores, axis=1)
            a = jnp.take_along_axis(scores, j[:, None], axis=1)
            r = r - a * D[j]
        return jnp.sum(jnp.square(r)) / n

    g1 = jax.jit(jax.grad(ours))(params)
    g2 = jax.jit(jax.grad(plain))(params)
    for name in ("W_dec", "b_dec"):
        a, b = np.asarray(g1[name][...]), np.asarray(g2[name][...])
        assert np.abs(b).max() > 0, name
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max(), err_msg=name)
    # W_enc and b_enc are unused by the pursuit: their gradients are exactly zero.
    assert not np.any(np.asarray(g1["W_enc"][...])) and not np.any(np.asarray(g1["b_enc"][...]))


def test_matching_pursuit_train_step_reduces_loss(rng):
    atoms = rng.normal(size=(12, 8))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = rng.exponential(size=(256, 12)) * (rng.random((256, 12)) < 0.2)
    x = jnp.asarray(codes @ atoms, jnp.float32)
    model = sae.MatchingPursuitSAE(8, 24, n_steps=3, rngs=nnx.Rngs(0))
    sae.init_b_dec(model, x)
    train_step, state = sae.make_train_step(model, optax.adam(1e-2))
    state, first = train_step(state, x)
    for _ in range(40):
        state, metrics = train_step(state, x)
    assert float(metrics["fvu"]) < 0.8 * float(first["fvu"])
    assert float(metrics["l0"]) <= 3.0


def test_matching_pursuit_validation():
    with pytest.raises(ValueError, match="n_steps"):
        sae.MatchingPursuitSAE(4, 8, n_steps=0, rngs=nnx.Rngs(0))
    model = sae.MatchingPursuitSAE(4, 8, n_steps=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="d_in=4"):
        model.encode(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="tol"):
        model.encode(jnp.zeros((2, 4)), tol=-1.0)
    with pytest.raises(ValueError, match="n_steps"):
        model.encode(jnp.zeros((2, 4)), n_steps=0)
    with pytest.raises(ValueError, match="l1_coef"):  # not a hyperparameter of this variant
        sae.loss(
            sae.MatchingPursuitSAE(4, 8, n_steps=2, rngs=nnx.Rngs(0)), jnp.ones((2, 4)), l1_coef=1.0
        )


@pytest.mark.parametrize("variant", ["matryoshka", "mp"])
def test_input_norm_is_respected(rng, variant):
    """After fit_input_norm(model, x) the model on x is the unscaled model on s·x, rescaled."""

    def make():
        if variant == "matryoshka":
            return sae.MatryoshkaSAE(5, 12, k=2, group_sizes=(4, 8), rngs=nnx.Rngs(0))
        return sae.MatchingPursuitSAE(5, 12, n_steps=2, rngs=nnx.Rngs(0))

    loss_fn = sae.loss
    x = (7.0 * rng.normal(size=(16, 5)) + 3.0).astype(np.float32)
    scaled = make()
    _set_params(scaled, rng)
    s = float(sae.fit_input_norm(scaled, x))
    np.testing.assert_allclose(s, np.sqrt(5 / np.mean(np.sum(x.astype(np.float64) ** 2, 1))), 1e-5)
    plain = make()
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        getattr(plain, name)[...] = getattr(scaled, name)[...]
    xs = jnp.asarray(s * x)
    np.testing.assert_allclose(
        scaled(x).reconstruction, np.asarray(plain(xs).reconstruction) / s, rtol=1e-4, atol=1e-4
    )
    (l_scaled, m_scaled), (l_plain, _) = loss_fn(scaled, x), loss_fn(plain, xs)
    np.testing.assert_allclose(l_scaled, l_plain, rtol=1e-4)
    recon = np.asarray(scaled(x).reconstruction, np.float64)
    np.testing.assert_allclose(m_scaled["mse"], np.mean((x - recon) ** 2), rtol=1e-4)
