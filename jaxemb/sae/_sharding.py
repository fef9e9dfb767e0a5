"""Shardings of an SAE's training state from its parameters' logical axes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxemb.sae._base import param_axes

#: Default rules: the latents split over the mesh's ``model`` axis, the input width replicated.
LATENT_PARALLEL_RULES: tuple[tuple[str, str | None], ...] = (("latent", "model"),)


def state_shardings(
    state: Any,
    model: nnx.Module,
    mesh: Mesh,
    rules: Sequence[tuple[str, str | None]] = LATENT_PARALLEL_RULES,
) -> Any:
    """``NamedSharding`` for every leaf of an SAE's ``TrainState`` from its logical axes.

    A leaf under a parameter's name (the parameters themselves and the optimiser's moments of
    them, e.g. Adam's ``mu`` / ``nu``) takes that parameter's logical axes
    (:func:`param_axes`); the dead-latent counters are ``("latent",)``; everything else (step
    counters, ``b_dec``'s input axis unless a rule names ``embed``, buffers) is replicated.

    Args:
      state: a :class:`TrainState` from :func:`make_train_step` (or any pytree holding one).
      model: the module the state was built from.
      mesh: the device mesh.
      rules: ``(logical_axis, mesh_axis_or_None)`` pairs; unnamed logical axes replicate.

    Returns:
      A pytree of ``NamedSharding`` with the structure of ``state``; place the state with
      ``jax.device_put(state, shardings)``.

    Examples:
      >>> import jax, optax
      >>> from flax import nnx
      >>> from jaxemb import parallel, sae
      >>> model = sae.TopKSAE(8, 8, k=2, rngs=nnx.Rngs(0))   # d_in == d_sae: no shape guessing
      >>> _, state = sae.make_train_step(model, optax.adam(1e-3))
      >>> mesh = parallel.make_mesh(data=4, model=2)
      >>> s = sae.state_shardings(state, model, mesh)
      >>> s.params["W_enc"].spec, s.params["W_dec"].spec, s.params["b_dec"].spec
      (P(None, 'model'), P('model', None), P(None,))

    References:
      Flax NNX "Scale up with sharding" guide (logical axis rules); eai-sparsify and Gao et al.
      (2024) shard an SAE's latents over devices.
    """
    if not isinstance(mesh, Mesh):
        raise ValueError(f"mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}")
    table = dict(rules)
    for logical, axis in table.items():
        if axis is not None and axis not in mesh.axis_names:
            raise ValueError(
                f"rules map {logical!r} to mesh axis {axis!r}, which the mesh "
                f"{tuple(mesh.axis_names)} does not have"
            )
    axes = param_axes(model)

    def spec_of(names):
        return NamedSharding(mesh, PartitionSpec(*(table.get(n) for n in names)))

    def one(path, leaf):
        keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        for key in reversed(keys):
            if key in axes and len(axes[key]) == jax.numpy.ndim(leaf):
                return spec_of(axes[key])
        if "tokens_since_fired" in keys:
            return spec_of(("latent",))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree_util.tree_map_with_path(one, state)
