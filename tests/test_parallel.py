"""jaxemb.parallel basics: meshes, batch sharding, and global-view losses under sharding."""

import jax
import numpy as np
import pytest
from tolerances import assert_f32_close

from jaxemb.parallel import batch_sharding, make_mesh, shard_batch


def test_make_mesh_shapes():
    mesh = make_mesh()
    assert mesh.shape == {"data": 8, "model": 1}
    mesh = make_mesh(data=4, model=2)
    assert mesh.shape == {"data": 4, "model": 2}


@pytest.mark.parametrize("kwargs", [dict(data=3), dict(model=3), dict(data=0), dict(model=0)])
def test_make_mesh_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError, match="data|model"):
        make_mesh(**kwargs)


def test_shard_batch_places_rows(mesh8):
    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    g = shard_batch(mesh8, {"x": x, "y": np.arange(16)})
    assert g["x"].sharding == batch_sharding(mesh8)
    np.testing.assert_array_equal(np.asarray(g["x"]), x)
    # each device holds 2 consecutive rows
    shards = sorted(g["x"].addressable_shards, key=lambda s: s.index[0].start)
    assert [s.data.shape for s in shards] == [(2, 3)] * 8
    np.testing.assert_array_equal(np.asarray(shards[3].data), x[6:8])


def test_shard_batch_rejects_indivisible(mesh8):
    with pytest.raises(ValueError, match="not divisible"):
        shard_batch(mesh8, np.zeros((10, 3), np.float32))
    with pytest.raises(ValueError, match="mesh"):
        shard_batch("not a mesh", np.zeros((8, 3)))


def _np_nt_xent(z1, z2, t):
    z = np.concatenate([z1, z2]).astype(np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = z @ z.T / t
    n = len(z1)
    np.fill_diagonal(s, -np.inf)
    target = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    m = s.max(1, keepdims=True)
    lse = np.log(np.exp(s - m).sum(1)) + m[:, 0]
    return np.mean(lse - s[np.arange(2 * n), target])


def test_global_view_loss_sharded_equals_single_device(mesh8):
    """A jitted global-view contrastive loss on batch-sharded inputs equals one device."""
    from jaxemb.losses import nt_xent

    rng = np.random.default_rng(0)
    z1 = rng.normal(size=(32, 16)).astype(np.float32)
    z2 = (z1 + 0.3 * rng.normal(size=(32, 16))).astype(np.float32)

    def loss(a, b):
        return nt_xent(a, b, temperature=0.2)

    vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    cpu0 = jax.devices()[0]
    v1, g1 = vg(jax.device_put(z1, cpu0), jax.device_put(z2, cpu0))
    s1, s2 = shard_batch(mesh8, (z1, z2))
    assert len(s1.sharding.device_set) == 8
    v8, g8 = vg(s1, s2)
    np.testing.assert_allclose(v8, v1, rtol=1e-5)
    np.testing.assert_allclose(v1, _np_nt_xent(z1, z2, 0.2), rtol=1e-5)
    for a, b in zip(g8, g1):
        assert_f32_close(a, b)
    assert g8[0].sharding.is_equivalent_to(batch_sharding(mesh8), 2)
