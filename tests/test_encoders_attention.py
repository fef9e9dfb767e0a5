"""The shared attention core: every execution path equals a NumPy softmax attention (MHA, GQA,
additive bias, key padding, a per-query keep mask)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxemb.encoders._attention import _fused, attend


def np_attention(q, k, v, keep, bias, scale):
    heads, kv = q.shape[1], k.shape[1]
    k = np.repeat(k, heads // kv, axis=1).astype(np.float64)
    v = np.repeat(v, heads // kv, axis=1).astype(np.float64)
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k) * scale
    if bias is not None:
        s = s + bias
    s = np.where(np.broadcast_to(keep, s.shape), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bhkd->bhqd", p, v)


@pytest.mark.parametrize("heads, kv, with_bias, causal", [(4, 4, True, False), (4, 2, False, True)])
def test_every_path_equals_numpy(heads, kv, with_bias, causal):
    rng = np.random.default_rng(0)
    b, t, d = 3, 7, 8
    q = rng.normal(size=(b, heads, t, d)).astype(np.float32)
    k = rng.normal(size=(b, kv, t, d)).astype(np.float32)
    v = rng.normal(size=(b, kv, t, d)).astype(np.float32)
    lengths = np.array([7, 4, 1])
    keep = (np.arange(t)[None, :] < lengths[:, None])[:, None, None, :]
    if causal:
        keep = keep & np.tril(np.ones((t, t), bool))[None, None]
    bias = rng.normal(size=(b, heads, t, t)).astype(np.float32) if with_bias else None
    scale = d**-0.5
    want = np_attention(q, k, v, keep, bias, scale)
    args = [jnp.asarray(x) for x in (q, k, v, keep)]
    jbias = None if bias is None else jnp.asarray(bias)
    real = np.broadcast_to(lengths[:, None] > np.arange(t)[None, :], (b, t))[:, None, :, None]
    real = np.broadcast_to(real, want.shape)
    paths = {
        "cpu rows": attend(*args, scale=scale, bias=jbias),
        "fused (xla)": _fused(*args, jbias, scale),
        "dropout rate 0 in training": attend(
            *args, scale=scale, bias=jbias, dropout=nnx.Dropout(0.0, deterministic=False)
        ),
    }
    for name, got in paths.items():
        np.testing.assert_allclose(
            np.asarray(got)[real], want[real], rtol=1e-5, atol=1e-6, err_msg=name
        )


def test_dropout_drops_attention_weights_with_its_key():
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 2, 5, 4)), jnp.float32) for _ in range(3))
    keep = jnp.ones((2, 1, 1, 5), bool)
    drop = nnx.Dropout(0.5, deterministic=False)
    a = attend(q, k, v, keep, scale=0.5, dropout=drop, rngs=nnx.Rngs(dropout=0))
    b = attend(q, k, v, keep, scale=0.5, dropout=drop, rngs=nnx.Rngs(dropout=0))
    c = attend(q, k, v, keep, scale=0.5, dropout=drop, rngs=nnx.Rngs(dropout=1))
    plain = attend(q, k, v, keep, scale=0.5)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    assert not np.allclose(np.asarray(a), np.asarray(plain))


def test_mismatched_heads_are_refused():
    q = jnp.ones((1, 3, 4, 8))
    k = jnp.ones((1, 2, 4, 8))
    with pytest.raises(ValueError, match="A a multiple of K"):
        attend(q, k, k, jnp.ones((1, 1, 1, 4), bool), scale=1.0)
