"""Two-tower wrapper and fixed (simplex / equiangular) classifiers against NumPy and invariants."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxemb.encoders import (
    EquiangularClassifier,
    FixedWeight,
    MLPEncoder,
    SimplexClassifier,
    TwoTower,
    equiangular_basis,
    regular_simplex,
)


def _np_normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _np_mlp(enc, x):
    """Forward of a one-hidden-layer MLPEncoder in NumPy (Linear → LayerNorm → GELU → Linear)."""
    from scipy.special import erf

    h = np.asarray(x, np.float64).reshape(len(x), -1)
    for lin, norm in zip(enc.hidden, enc.norms):
        h = h @ np.asarray(lin.kernel[...]) + np.asarray(lin.bias[...])
        mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
        h = (h - mu) / np.sqrt(var + 1e-6) * np.asarray(norm.scale[...]) + np.asarray(
            norm.bias[...]
        )
        h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    return h @ np.asarray(enc.out.kernel[...]) + np.asarray(enc.out.bias[...])


# ----------------------------------------------------------------------------- TwoTower


@pytest.mark.parametrize("init_bias", [None, -10.0])
def test_two_tower_matches_numpy(rng, init_bias):
    qenc = MLPEncoder(6, 4, hidden=(8,), rngs=nnx.Rngs(1))
    denc = MLPEncoder(5, 4, hidden=(7,), rngs=nnx.Rngs(2))
    t0 = math.log(10.0) if init_bias is not None else math.log(1 / 0.07)
    model = TwoTower(qenc, denc, init_log_temperature=t0, init_bias=init_bias)
    xq = rng.normal(size=(3, 6)).astype(np.float32)
    xd = rng.normal(size=(5, 5)).astype(np.float32)
    q, d = model(jnp.asarray(xq), jnp.asarray(xd))
    q_ref, d_ref = _np_normalize(_np_mlp(qenc, xq)), _np_normalize(_np_mlp(denc, xd))
    np.testing.assert_allclose(q, q_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(d, d_ref, rtol=1e-4, atol=1e-5)
    want = math.exp(t0) * q_ref @ d_ref.T + (0.0 if init_bias is None else init_bias)
    logits = nnx.jit(lambda m, a, b: m.logits(a, b))(model, q, d)
    assert logits.shape == (3, 5) and logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)
    params = nnx.state(model, nnx.Param)
    assert "log_temperature" in params and (("bias" in params) == (init_bias is not None))


def test_two_tower_shared_tower_and_defaults():
    enc = MLPEncoder(6, 4, hidden=(8,), rngs=nnx.Rngs(0))
    model = TwoTower(enc)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 6)), jnp.float32)
    q, d = model(x, x)
    np.testing.assert_array_equal(q, d)  # same tower, same inputs
    np.testing.assert_allclose(jnp.linalg.norm(q, axis=1), np.ones(4), atol=1e-6)
    np.testing.assert_allclose(model.logit_scale(), 1 / 0.07, rtol=1e-6)  # CLIP init
    assert float(model.logit_bias()) == 0.0 and model.bias is None
    # One set of encoder weights: the Param count equals the tower's plus log_temperature.
    n_tower = sum(p.size for p in jax.tree.leaves(nnx.state(enc, nnx.Param)))
    n_model = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n_model == n_tower + 1


def test_two_tower_scale_clamp_and_gradients():
    enc = MLPEncoder(6, 4, hidden=(8,), rngs=nnx.Rngs(0))
    q = jnp.asarray(_np_normalize(np.random.default_rng(2).normal(size=(3, 4))), jnp.float32)

    def grad_t(model):
        g = nnx.grad(lambda m: jnp.sum(m.logits(q, q)))(model)
        return float(g["log_temperature"][...])

    clamped = TwoTower(enc, init_log_temperature=math.log(500.0))
    np.testing.assert_allclose(clamped.logit_scale(), 100.0, rtol=1e-6)
    assert grad_t(clamped) == 0.0
    free = TwoTower(enc, init_log_temperature=math.log(500.0), max_scale=None)
    np.testing.assert_allclose(free.logit_scale(), 500.0, rtol=1e-5)
    # d/dt sum(exp(t) q qᵀ) = exp(t) sum(q qᵀ)
    want = 500.0 * float(np.sum(np.asarray(q, np.float64) @ np.asarray(q, np.float64).T))
    np.testing.assert_allclose(grad_t(free), want, rtol=1e-4)


def test_two_tower_forwards_kwargs_to_towers():
    class Noisy(nnx.Module):
        def __call__(self, x, *, rngs):
            return x + jax.random.normal(rngs.dropout(), x.shape)

    model = TwoTower(Noisy())
    x = jnp.ones((2, 3))
    q, d = model(x, x, rngs=nnx.Rngs(dropout=0))
    assert q.shape == d.shape == (2, 3)
    assert not np.allclose(q, d)  # each tower call drew its own noise


def test_two_tower_validation():
    enc = MLPEncoder(6, 4, hidden=(8,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="query_encoder"):
        TwoTower("not a module")
    with pytest.raises(ValueError, match="doc_encoder"):
        TwoTower(enc, 3)
    with pytest.raises(ValueError, match="init_log_temperature"):
        TwoTower(enc, init_log_temperature=float("nan"))
    with pytest.raises(ValueError, match="init_bias"):
        TwoTower(enc, init_bias="x")
    with pytest.raises(ValueError, match="max_scale"):
        TwoTower(enc, max_scale=0.0)
    with pytest.raises(ValueError, match="dtype"):
        TwoTower(enc, dtype=jnp.int32)
    other = MLPEncoder(6, 5, hidden=(8,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="same width"):
        TwoTower(enc, other)(jnp.ones((2, 6)), jnp.ones((2, 6)))
    with pytest.raises(ValueError, match="query encoder must return"):
        TwoTower(lambda x: x)(jnp.ones((2, 3, 4)), jnp.ones((2, 3, 4)))
    model = TwoTower(enc)
    with pytest.raises(ValueError, match="d_emb"):
        model.logits(jnp.ones((2, 4)), jnp.ones((3, 5)))
    with pytest.raises(ValueError, match="q_emb"):
        model.logits(jnp.ones((4,)), jnp.ones((3, 4)))


# ----------------------------------------------------------------------------- simplex


@pytest.mark.parametrize("dim,k,seed", [(1, 2, None), (9, 10, None), (16, 10, None), (16, 10, 3)])
def test_regular_simplex_gram(dim, k, seed):
    w = regular_simplex(dim, k, seed=seed)
    assert w.shape == (k, dim) and w.dtype == np.float32
    gram = w.astype(np.float64) @ w.T.astype(np.float64)
    want = np.full((k, k), -1.0 / (k - 1))
    np.fill_diagonal(want, 1.0)
    np.testing.assert_allclose(gram, want, atol=1e-6)
    # Centred at the origin: the class vectors sum to zero.
    np.testing.assert_allclose(w.astype(np.float64).sum(0), np.zeros(dim), atol=1e-6)
    if seed is not None:  # the random rotation uses coordinates beyond the first k - 1
        assert np.abs(w[:, k - 1 :]).max() > 1e-3


def test_simplex_classifier_is_fixed_and_matches_numpy(rng):
    clf = SimplexClassifier(8, 5, scale=2.0)
    assert isinstance(clf.weight, FixedWeight) and not isinstance(clf.weight, nnx.Param)
    assert len(jax.tree.leaves(nnx.state(clf, nnx.Param))) == 0
    assert len(jax.tree.leaves(nnx.state(clf, FixedWeight))) == 1
    x = rng.normal(size=(4, 8)).astype(np.float32)
    w = np.asarray(clf.weight[...], np.float64)
    np.testing.assert_allclose(clf(jnp.asarray(x)), 2.0 * x @ w.T, rtol=1e-5, atol=1e-5)
    cos = SimplexClassifier(8, 5, scale=3.0, normalize_inputs=True)
    np.testing.assert_allclose(cos(jnp.asarray(x)), 3.0 * _np_normalize(x) @ w.T, atol=1e-5)

    # Training the backbone under nnx.Optimizer leaves the simplex untouched.
    class Model(nnx.Module):
        def __init__(self):
            self.body = nnx.Linear(8, 8, rngs=nnx.Rngs(0))
            self.head = SimplexClassifier(8, 5)

        def __call__(self, x):
            return self.head(self.body(x))

    model = Model()
    before = np.asarray(model.head.weight[...])
    opt = nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.Param)
    labels = jnp.asarray([0, 1, 2, 3])

    def loss(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(jnp.asarray(x)), labels).mean()

    grads = nnx.grad(loss)(model)
    opt.update(model, grads)
    np.testing.assert_array_equal(model.head.weight[...], before)
    assert not np.allclose(model.body.kernel[...], Model().body.kernel[...])


def test_simplex_validation():
    with pytest.raises(ValueError, match="dim must be >= num_classes - 1"):
        SimplexClassifier(3, 5)
    with pytest.raises(ValueError, match="num_classes"):
        regular_simplex(4, 1)
    with pytest.raises(ValueError, match="scale"):
        SimplexClassifier(4, 3, scale=-1.0)
    clf = SimplexClassifier(4, 3)
    with pytest.raises(ValueError, match=r"x must be \[batch, 4\]"):
        clf(jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="x must have rank 2"):
        clf(jnp.ones((4,)))


# ----------------------------------------------------------------------------- EBV


@pytest.mark.parametrize("dim,k,threshold", [(16, 10, 0.02), (8, 20, 0.4), (32, 100, 0.25)])
def test_equiangular_basis_bound(dim, k, threshold):
    w = equiangular_basis(dim, k, threshold=threshold, seed=0)
    assert w.shape == (k, dim) and w.dtype == np.float32
    w64 = w.astype(np.float64)
    norms = np.linalg.norm(w64, axis=1)
    np.testing.assert_allclose(norms, np.ones(k), atol=1e-6)
    cos = (w64 / norms[:, None]) @ (w64 / norms[:, None]).T
    np.fill_diagonal(cos, 0.0)
    assert np.abs(cos).max() <= threshold
    # A Gaussian start does not satisfy the bound on its own (so the descent did the work).
    g = _np_normalize(np.random.default_rng(0).standard_normal((k, dim)))
    c0 = g @ g.T
    np.fill_diagonal(c0, 0.0)
    assert np.abs(c0).max() > threshold


def test_equiangular_basis_deterministic_and_classifier(rng):
    a = equiangular_basis(8, 12, threshold=0.3, seed=5)
    np.testing.assert_array_equal(a, equiangular_basis(8, 12, threshold=0.3, seed=5))
    assert not np.allclose(a, equiangular_basis(8, 12, threshold=0.3, seed=6))
    clf = EquiangularClassifier(8, 12, threshold=0.3, seed=5, normalize_inputs=True, scale=5.0)
    np.testing.assert_array_equal(clf.weight[...], a)
    assert len(jax.tree.leaves(nnx.state(clf, nnx.Param))) == 0
    x = rng.normal(size=(3, 8)).astype(np.float32)
    np.testing.assert_allclose(
        clf(jnp.asarray(x)), 5.0 * _np_normalize(x) @ a.astype(np.float64).T, atol=1e-5
    )


def test_equiangular_validation():
    with pytest.raises(ValueError, match="Welch bound"):
        equiangular_basis(4, 20, threshold=0.3)  # Welch bound 0.447
    with pytest.raises(ValueError, match="max_steps"):
        equiangular_basis(8, 20, threshold=0.3, max_steps=5)
    with pytest.raises(ValueError, match="threshold must be < 1"):
        equiangular_basis(8, 4, threshold=1.5)
    with pytest.raises(ValueError, match="threshold"):
        EquiangularClassifier(8, 4, threshold=0.0)
    with pytest.raises(ValueError, match="seed"):
        equiangular_basis(8, 4, seed=-1)
