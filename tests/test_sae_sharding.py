"""sae.param_axes / sae.state_shardings: latents split over 'model' from the logical axes."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxemb import parallel, sae


@pytest.mark.parametrize("variant", ["topk", "gated", "jumprelu"])
def test_latent_sharded_step_equals_replicated_step(variant, rng):
    # d_in == d_sae: a rule from shapes alone could not tell W_enc's axes apart
    d = 8
    make = {
        "topk": lambda: sae.TopKSAE(d, d, k=2, rngs=nnx.Rngs(0), dead_threshold=1),
        "gated": lambda: sae.GatedSAE(d, d, rngs=nnx.Rngs(0)),
        "jumprelu": lambda: sae.JumpReluSAE(d, d, rngs=nnx.Rngs(0)),
    }[variant]
    model = make()
    axes = sae.param_axes(model)
    assert axes["W_enc"] == ("embed", "latent") and axes["W_dec"] == ("latent", "embed")
    extra = {"gated": ("r_mag", "b_mag"), "jumprelu": ("log_threshold",), "topk": ()}[variant]
    assert all(axes[name] == ("latent",) for name in extra)

    mesh = parallel.make_mesh(data=4, model=2)
    train_step, state = sae.make_train_step(model, optax.adam(1e-2), donate=False)
    shardings = sae.state_shardings(state, model, mesh)
    assert shardings.params["W_enc"].spec == P(None, "model")
    assert shardings.params["W_dec"].spec == P("model", None)
    assert shardings.params["b_dec"].spec == P(None)
    mu = shardings.opt_state[0].mu
    assert mu["W_enc"].spec == P(None, "model") and mu["b_enc"].spec == P("model")
    assert shardings.dead.tokens_since_fired.spec == P("model")
    for name in extra:
        assert shardings.params[name].spec == P("model")

    x = rng.normal(size=(32, d)).astype(np.float32)
    plain, m_plain = train_step(state, x)
    placed = jax.device_put(state, shardings)
    with jax.set_mesh(mesh):
        split, m_split = train_step(placed, parallel.shard_batch(mesh, x))
    assert split.params["W_enc"].sharding.spec == P(None, "model")
    for a, b in zip(jax.tree.leaves(split.params), jax.tree.leaves(plain.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m_split["loss"], m_plain["loss"], rtol=1e-5)


def test_state_shardings_validates_its_rules():
    model = sae.TopKSAE(4, 8, k=2, rngs=nnx.Rngs(0))
    _, state = sae.make_train_step(model, optax.adam(1e-3))
    mesh = parallel.make_mesh(data=8, model=1)
    with pytest.raises(ValueError, match="mesh axis 'tensor'"):
        sae.state_shardings(state, model, mesh, rules=(("latent", "tensor"),))
    with pytest.raises(ValueError, match="mesh must be"):
        sae.state_shardings(state, model, None)
