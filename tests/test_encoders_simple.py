"""Small native encoders and heads against NumPy forward passes."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from jaxemb.encoders import (
    ConvEncoder,
    L2Normalize,
    MatryoshkaHead,
    MLPEncoder,
    ProjectionHead,
    nested_mask,
)


def _layernorm(x, scale, bias, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


def _gelu(x):
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def test_mlp_encoder_matches_numpy(rng):
    enc = MLPEncoder(12, 5, hidden=(7, 6), rngs=nnx.Rngs(1))
    x = rng.normal(size=(4, 3, 4)).astype(np.float32)  # flattened to 12
    h = x.reshape(4, -1).astype(np.float64)
    for lin, norm in zip(enc.hidden, enc.norms):
        h = h @ np.asarray(lin.kernel[...]) + np.asarray(lin.bias[...])
        h = _gelu(_layernorm(h, np.asarray(norm.scale[...]), np.asarray(norm.bias[...])))
    h = h @ np.asarray(enc.out.kernel[...]) + np.asarray(enc.out.bias[...])
    np.testing.assert_allclose(enc(jnp.asarray(x)), h, rtol=1e-4, atol=1e-5)


def test_conv_encoder_shapes_and_translation_of_constant_image():
    enc = ConvEncoder(1, 6, channels=(4, 8), rngs=nnx.Rngs(0))
    out = enc(jnp.ones((3, 8, 8, 1)))
    assert out.shape == (3, 6)
    # identical images give identical embeddings; different images differ
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6)
    x = np.zeros((2, 8, 8, 1), np.float32)
    x[1, 2:5, 2:5] = 1.0
    e = np.asarray(enc(jnp.asarray(x)))
    assert not np.allclose(e[0], e[1])
    with pytest.raises(ValueError, match="x must be"):
        enc(jnp.ones((3, 8, 8, 3)))


def test_nested_mask_structure():
    m = nested_mask((1, 3), (2, 4))
    expect = np.array([[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]], bool)
    np.testing.assert_array_equal(m, expect)


def test_matryoshka_head_prefixes_depend_only_on_input_prefixes(rng):
    dims = (2, 4, 8)
    head = MatryoshkaHead(dims, expansion=3, rngs=nnx.Rngs(0))
    x = rng.normal(size=(5, 8)).astype(np.float32)
    y = np.asarray(head(jnp.asarray(x)))
    for m in dims[:-1]:
        x2 = x.copy()
        x2[:, m:] = rng.normal(size=(5, 8 - m))
        np.testing.assert_allclose(np.asarray(head(jnp.asarray(x2)))[:, :m], y[:, :m], rtol=1e-6)
    # NumPy forward with the masks applied
    w1 = np.asarray(head.fc1.kernel[...]) * nested_mask(dims, (6, 12, 24))
    w2 = np.asarray(head.fc2.kernel[...]) * nested_mask((6, 12, 24), dims)
    h = np.maximum(x @ w1 + np.asarray(head.fc1.bias[...]), 0)
    np.testing.assert_allclose(y, h @ w2 + np.asarray(head.fc2.bias[...]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="increasing"):
        MatryoshkaHead((4, 2), rngs=nnx.Rngs(0))


def test_projection_head_and_normalize(rng):
    head = ProjectionHead(6, 3, hidden=5, rngs=nnx.Rngs(0))
    x = rng.normal(size=(4, 6)).astype(np.float32)
    h = np.maximum(x @ np.asarray(head.fc1.kernel[...]) + np.asarray(head.fc1.bias[...]), 0)
    ref = h @ np.asarray(head.fc2.kernel[...]) + np.asarray(head.fc2.bias[...])
    np.testing.assert_allclose(head(jnp.asarray(x)), ref, rtol=1e-5, atol=1e-6)
    n = np.asarray(L2Normalize()(jnp.asarray(x)))
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(L2Normalize()(jnp.zeros((1, 3)))), 0.0)


def test_mlp_encoder_validation():
    enc = MLPEncoder(4, 2, hidden=(3,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x must flatten to \[batch, 4\]"):
        enc(jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="activation"):
        MLPEncoder(4, 2, activation="swishy", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="out_features"):
        MLPEncoder(4, 0, rngs=nnx.Rngs(0))
