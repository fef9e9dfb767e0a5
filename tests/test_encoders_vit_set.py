"""SetEncoder (Deep Sets) against a NumPy forward and its invariances; ViTEncoder shapes and
per-image independence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxemb.encoders import SetEncoder, ViTEncoder

# ----------------------------------------------------------------------------- SetEncoder


def _np_set_forward(enc, x, mask, pooling):
    """Independent NumPy Deep Sets forward: loops over sets and their real elements."""

    def lin(layer, h):
        return h @ np.asarray(layer.kernel[...], np.float64) + np.asarray(layer.bias[...])

    def relu(h):
        return np.maximum(h, 0.0)

    hidden = enc.phi2.kernel[...].shape[1]
    out = []
    for b in range(x.shape[0]):
        elems = [
            relu(lin(enc.phi2, relu(lin(enc.phi1, x[b, i].astype(np.float64)))))
            for i in range(x.shape[1])
            if mask[b, i]
        ]
        if not elems:
            pooled = np.zeros(hidden)
        elif pooling == "sum":
            pooled = np.sum(elems, axis=0)
        elif pooling == "mean":
            pooled = np.mean(elems, axis=0)
        else:
            pooled = np.max(elems, axis=0)
        out.append(lin(enc.rho2, relu(lin(enc.rho1, pooled))))
    return np.stack(out)


@pytest.mark.parametrize("pooling", ["sum", "mean", "max"])
def test_set_encoder_matches_numpy(rng, pooling):
    enc = SetEncoder(3, 6, 4, pooling=pooling, rngs=nnx.Rngs(0))
    x = rng.normal(size=(4, 5, 3)).astype(np.float32)
    mask = np.array(
        [[1, 1, 1, 1, 1], [1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=bool
    )
    got = nnx.jit(lambda m, xx, mm: m(xx, mm))(enc, jnp.asarray(x), jnp.asarray(mask))
    assert got.shape == (4, 4) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, _np_set_forward(enc, x, mask, pooling), rtol=1e-5, atol=1e-5)
    # mask=None means every element is real.
    full = np.ones((4, 5), bool)
    got = nnx.jit(lambda m, xx: m(xx))(enc, jnp.asarray(x))
    np.testing.assert_allclose(got, _np_set_forward(enc, x, full, pooling), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooling", ["sum", "mean", "max"])
def test_set_encoder_permutation_and_padding_invariance(rng, pooling):
    enc = SetEncoder(3, 8, 5, pooling=pooling, rngs=nnx.Rngs(1))
    x = rng.normal(size=(2, 4, 3)).astype(np.float32)
    fwd = nnx.jit(lambda m, xx, mm: m(xx, mm))
    base = fwd(enc, jnp.asarray(x), jnp.ones((2, 4), bool))
    perm = rng.permutation(4)
    out = fwd(enc, jnp.asarray(x[:, perm]), jnp.ones((2, 4), bool))
    np.testing.assert_allclose(out, base, rtol=1e-5, atol=1e-5)
    # Append padding slots full of junk (huge values, inf, NaN) and shuffle them in.
    junk = np.full((2, 3, 3), 1e30, np.float32)
    junk[:, 1] = np.inf
    junk[:, 2] = np.nan
    padded = np.concatenate([x, junk], axis=1)
    mask = np.concatenate([np.ones((2, 4), bool), np.zeros((2, 3), bool)], axis=1)
    order = rng.permutation(7)
    out = fwd(enc, jnp.asarray(padded[:, order]), jnp.asarray(mask[:, order]))
    np.testing.assert_allclose(out, base, rtol=1e-5, atol=1e-5)

    # Padding never reaches the gradients either.
    def loss(model, xx, mm):
        return jnp.sum(model(xx, mm) ** 2)

    grad = nnx.jit(nnx.grad(loss))
    g_pad = grad(enc, jnp.asarray(padded), jnp.asarray(mask))
    g_ref = grad(enc, jnp.asarray(x), jnp.ones((2, 4), bool))
    for a, b in zip(jax.tree.leaves(g_pad), jax.tree.leaves(g_ref)):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_set_encoder_validation():
    with pytest.raises(ValueError, match="pooling"):
        SetEncoder(3, 6, 4, pooling="median", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="hidden"):
        SetEncoder(3, 0, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="activation"):
        SetEncoder(3, 6, 4, activation="swish", rngs=nnx.Rngs(0))
    enc = SetEncoder(3, 6, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="x must have rank 3"):
        enc(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"x must be \[B, N, 3\]"):
        enc(jnp.ones((2, 4, 5)))
    with pytest.raises(ValueError, match="mask must be"):
        enc(jnp.ones((2, 4, 3)), jnp.ones((2, 5), bool))
    with pytest.raises(ValueError, match="mask must have rank 2"):
        enc(jnp.ones((2, 4, 3)), jnp.ones((2, 4, 1), bool))


# ----------------------------------------------------------------------------- ViTEncoder


def _vit(image_size, patch, channels=1, pool="cls", **kw):
    return ViTEncoder(
        image_size, patch, channels, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32,
        pool=pool, rngs=nnx.Rngs(0), **kw,
    )  # fmt: skip


_forward = nnx.jit(lambda model, images: model(images))


@pytest.mark.parametrize(
    "image_size,patch,channels,pool",
    [(32, 8, 3, "mean"), ((8, 16), (4, 8), 2, "cls")],  # 8x8 images: the tests below
)
def test_vit_shapes(rng, image_size, patch, channels, pool):
    vit = _vit(image_size, patch, channels, pool)
    h, w = image_size if isinstance(image_size, tuple) else (image_size, image_size)
    ph, pw = patch if isinstance(patch, tuple) else (patch, patch)
    assert vit.num_patches == (h // ph) * (w // pw)
    assert vit.encoder.config.max_positions == vit.num_patches + (pool == "cls")
    out = _forward(vit, jnp.asarray(rng.normal(size=(2, h, w, channels)), jnp.float32))
    assert out.shape == (2, 16) and out.dtype == jnp.float32
    assert np.all(np.isfinite(out))


def test_vit_patches_match_numpy(rng):
    vit = _vit((8, 12), (4, 3), channels=2)
    img = rng.normal(size=(2, 8, 12, 2)).astype(np.float32)
    want = []
    for b in range(2):
        rows = []
        for i in range(8 // 4):
            for j in range(12 // 3):
                rows.append(img[b, 4 * i : 4 * i + 4, 3 * j : 3 * j + 3, :].reshape(-1))
        want.append(np.stack(rows))
    np.testing.assert_array_equal(vit.patches(jnp.asarray(img)), np.stack(want))


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_images_are_independent_in_a_batch(rng, pool):
    vit = _vit(8, 4, 1, pool)
    imgs = rng.normal(size=(4, 8, 8, 1)).astype(np.float32)
    batch = _forward(vit, jnp.asarray(imgs))
    perm = np.array([2, 0, 3, 1])
    np.testing.assert_allclose(_forward(vit, jnp.asarray(imgs[perm])), batch[perm], atol=1e-5)
    other = imgs.copy()
    other[1:] = rng.normal(size=(3, 8, 8, 1)) * 10
    np.testing.assert_allclose(_forward(vit, jnp.asarray(other))[0], batch[0], atol=1e-5)
    np.testing.assert_allclose(_forward(vit, jnp.asarray(imgs[:1]))[0], batch[0], atol=1e-5)
    assert not np.allclose(batch[0], batch[1])  # different images, different embeddings


def test_vit_gradients_flow_and_dropout():
    vit = _vit(8, 4, 1, "cls", dropout=0.1)
    imgs = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 1)), jnp.float32)

    def loss(model, rngs):
        return jnp.sum(model(imgs, rngs=rngs) ** 2)

    step = nnx.jit(nnx.value_and_grad(loss))
    loss1, grads = step(vit, nnx.Rngs(dropout=1))
    for path in (
        ("patch_embed", "kernel"),
        ("cls_token",),
        ("encoder", "position_embeddings", "embedding"),
        ("encoder", "layers", 0, "attention", "query", "kernel"),
    ):
        g = grads
        for key in path:
            g = g[key]
        assert np.abs(np.asarray(g[...])).max() > 0, path
    # Training mode draws dropout masks (another key, another loss) ...
    loss2, _ = step(vit, nnx.Rngs(dropout=2))
    assert float(loss1) != float(loss2)
    # ... and eval mode equals the same weights built without dropout.
    vit.eval()
    np.testing.assert_allclose(_forward(vit, imgs), _forward(_vit(8, 4, 1, "cls"), imgs), atol=1e-6)


def test_vit_validation():
    with pytest.raises(ValueError, match="divisible by patch_size"):
        _vit(10, 4)
    with pytest.raises(ValueError, match="pool"):
        _vit(8, 4, pool="max")
    with pytest.raises(ValueError, match="patch_size"):
        _vit(8, (4, 4, 4))
    with pytest.raises(ValueError, match="dtype"):
        _vit(8, 4, dtype=jnp.float16)
    with pytest.raises(ValueError, match="hidden_size must be divisible by num_heads"):
        ViTEncoder(8, 4, 1, 15, 1, 2, 8, rngs=nnx.Rngs(0))
    vit = _vit(8, 4, 1)
    with pytest.raises(ValueError, match=r"images must be \[B, 8, 8, 1\]"):
        vit(jnp.ones((2, 8, 8, 3)))
    with pytest.raises(ValueError, match="images must have rank 4"):
        vit(jnp.ones((8, 8, 1)))
