"""Ring-chunked losses: equal to the global-view losses, and no device holds [B, B] logits."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxemb.losses import info_nce, sigmoid_loss
from jaxemb.parallel import make_mesh, ring_info_nce, ring_sigmoid_loss, shard_batch

RTOL = 1e-5


def _np_info_nce(q, p, t, symmetric=False):
    q = q.astype(np.float64) / np.linalg.norm(q, axis=1, keepdims=True)
    p = p.astype(np.float64) / np.linalg.norm(p, axis=1, keepdims=True)
    s = q @ p.T / t

    def ce(s):
        m = s.max(1, keepdims=True)
        return np.mean(np.log(np.exp(s - m).sum(1)) + m[:, 0] - np.diag(s))

    return 0.5 * (ce(s) + ce(s.T)) if symmetric else ce(s)


def _np_sigmoid(a, b, scale, bias):
    a = a.astype(np.float64) / np.linalg.norm(a, axis=1, keepdims=True)
    b = b.astype(np.float64) / np.linalg.norm(b, axis=1, keepdims=True)
    logits = scale * a @ b.T + bias
    z = 2 * np.eye(len(a)) - 1
    return np.sum(np.logaddexp(0.0, -z * logits)) / len(a)


def _assert_grads_close(got, want):
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=RTOL, atol=1e-7)


@pytest.fixture
def pair(rng):
    # rows of different norms and a few near-duplicates so the softmax is not uniform
    q = rng.normal(size=(64, 16)).astype(np.float32) * rng.uniform(0.5, 3, (64, 1))
    p = (q + 0.5 * rng.normal(size=(64, 16))).astype(np.float32)
    return q, p


@pytest.mark.parametrize("symmetric", [False, True])
def test_ring_info_nce_equals_info_nce_value_and_grads(mesh8, pair, symmetric):
    q, p = pair
    t = 0.1
    qs, ps = shard_batch(mesh8, (q, p))

    def ring(q, p, t):
        return ring_info_nce(q, p, temperature=t, symmetric=symmetric, mesh=mesh8)

    def glob(q, p, t):
        return info_nce(q, p, temperature=t, symmetric=symmetric)

    got, got_g = jax.jit(jax.value_and_grad(ring, argnums=(0, 1, 2)))(qs, ps, t)
    want, want_g = jax.value_and_grad(glob, argnums=(0, 1, 2))(q, p, t)
    np.testing.assert_allclose(float(got), float(want), rtol=RTOL)
    np.testing.assert_allclose(float(got), _np_info_nce(q, p, t, symmetric), rtol=RTOL)
    _assert_grads_close(got_g, want_g)
    # the gradient is sharded like the inputs: nothing gathered onto one device
    assert got_g[0].sharding.spec[0] == "data"


def test_ring_sigmoid_equals_sigmoid_loss_value_and_grads(mesh8, pair):
    a, b = pair
    scale, bias = 10.0, -10.0

    def ring(a, b, s, c):
        return ring_sigmoid_loss(a, b, logit_scale=s, logit_bias=c, mesh=mesh8)

    def glob(a, b, s, c):
        return sigmoid_loss(a, b, logit_scale=s, logit_bias=c)

    got, got_g = jax.jit(jax.value_and_grad(ring, argnums=(0, 1, 2, 3)))(a, b, scale, bias)
    want, want_g = jax.value_and_grad(glob, argnums=(0, 1, 2, 3))(a, b, scale, bias)
    np.testing.assert_allclose(float(got), float(want), rtol=RTOL)
    np.testing.assert_allclose(float(got), _np_sigmoid(a, b, scale, bias), rtol=RTOL)
    _assert_grads_close(got_g, want_g)


def test_context_mesh_and_model_axis(pair):
    q, p = pair
    mesh = make_mesh(data=4, model=2)
    with jax.set_mesh(mesh):
        got = ring_info_nce(q, p, temperature=0.2)
        sig = ring_sigmoid_loss(q, p, logit_scale=3.0, logit_bias=-1.0)
    np.testing.assert_allclose(float(got), _np_info_nce(q, p, 0.2), rtol=RTOL)
    np.testing.assert_allclose(float(sig), _np_sigmoid(q, p, 3.0, -1.0), rtol=RTOL)


def test_bfloat16_inputs_accumulate_in_float32(mesh8, pair):
    q, p = (x.astype(jnp.bfloat16) for x in pair)
    got = ring_info_nce(q, p, temperature=0.1, mesh=mesh8)
    assert got.dtype == jnp.float32
    want = _np_info_nce(np.asarray(q, np.float32), np.asarray(p, np.float32), 0.1)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def _largest_float_array(hlo: str) -> int:
    sizes = [
        int(np.prod([int(d) for d in dims.split(",")]))
        for dims in re.findall(r"f32\[(\d+(?:,\d+)+)\]", hlo)
    ]
    return max(sizes)


def test_no_device_holds_the_global_logits(mesh8):
    b, d = 2048, 8
    n = mesh8.shape["data"]
    x = shard_batch(mesh8, np.ones((b, d), np.float32))
    full = b * b * 4  # bytes of the global [B, B] float32 logits
    for fn in (
        lambda q, p: ring_info_nce(q, p, mesh=mesh8),
        lambda q, p: ring_sigmoid_loss(q, p, logit_scale=10.0, logit_bias=-10.0, mesh=mesh8),
    ):
        compiled = jax.jit(jax.value_and_grad(fn, argnums=(0, 1))).lower(x, x).compile()
        # the per-device program's largest float array is one [B/n, B/n] block ...
        assert _largest_float_array(compiled.as_text()) <= (b // n) ** 2
        # ... and its scratch memory is far below even a [B/n, B] row block of the logits
        assert compiled.memory_analysis().temp_size_in_bytes < full / n
    # control: the same inspection does see the [B, B] logits of the global-view loss
    one = np.ones((b, d), np.float32)
    compiled = jax.jit(jax.value_and_grad(info_nce, argnums=(0, 1))).lower(one, one).compile()
    assert _largest_float_array(compiled.as_text()) >= b * b
    assert compiled.memory_analysis().temp_size_in_bytes >= full


def test_validation(mesh8, pair):
    q, p = pair
    with pytest.raises(ValueError, match="divisible by the 8 devices"):
        ring_info_nce(q[:60], p[:60], mesh=mesh8)
    with pytest.raises(ValueError, match=r"positives must be \[batch, dim\] like anchors"):
        ring_info_nce(q, p[:32], mesh=mesh8)
    with pytest.raises(ValueError, match=r"b must be \[batch, dim\] like a"):
        ring_sigmoid_loss(q, p[:, :8], logit_scale=1.0, logit_bias=0.0, mesh=mesh8)
    with pytest.raises(ValueError, match="'data' axis"):
        ring_info_nce(q, p, mesh=jax.make_mesh((8,), ("batch",)))
    with pytest.raises(ValueError, match="temperature"):
        ring_info_nce(q, p, temperature=0.0, mesh=mesh8)
    with pytest.raises(ValueError, match="logit_scale"):
        ring_sigmoid_loss(q, p, logit_scale=-1.0, logit_bias=0.0, mesh=mesh8)
    with pytest.raises(ValueError, match="logit_bias"):
        ring_sigmoid_loss(q, p, logit_scale=1.0, logit_bias=np.ones(2), mesh=mesh8)
    with pytest.raises(ValueError, match="rank 2"):
        ring_info_nce(q[None], p[None], mesh=mesh8)
    with pytest.raises(ValueError, match="float"):
        ring_info_nce(q.astype(np.int32), p.astype(np.int32), mesh=mesh8)
