"""Device mesh and batch sharding helpers (data parallelism via jax.jit + NamedSharding)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxemb._validate import check_int


def make_mesh(data: int = -1, model: int = 1, *, devices: Sequence[Any] | None = None) -> Mesh:
    """Builds a ``(data, model)`` device mesh over all devices of all processes.

    Args:
      data: size of the data-parallel axis; ``-1`` uses every device not taken by ``model``.
      model: size of the model-parallel axis (latents of an SAE, FSDP shards).
      devices: the devices to lay out (default ``jax.devices()``, every device of every
        process); e.g. ``jax.devices()[:2]`` for a smaller mesh.

    Returns:
      A ``jax.sharding.Mesh`` with axis names ``("data", "model")`` and ``Auto`` axis types, so
      ``jax.jit`` propagates shardings the way the global-view code expects.

    Examples:
      >>> import jax
      >>> from jaxemb.parallel import make_mesh
      >>> mesh = make_mesh(data=-1, model=1)
      >>> mesh.axis_names
      ('data', 'model')
      >>> mesh.shape["data"] == jax.device_count()
      True

    References:
      JAX "Distributed arrays and automatic parallelization" guide (``jax.make_mesh``).
    """
    if devices is None:
        devices = jax.devices()
    devices = list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise ValueError(f"devices must be a non-empty sequence of jax devices; got {devices!r}")
    n = len(devices)
    check_int(model, "model", minimum=1)
    if data != -1:
        check_int(data, "data", minimum=1)
    if n % model:
        raise ValueError(f"model must divide the number of devices {n}; got model={model}")
    if data == -1:
        data = n // model
    if data * model != n:
        raise ValueError(
            f"data * model must equal the number of devices {n}; got data={data}, model={model}"
        )
    return jax.make_mesh(
        (data, model),
        ("data", "model"),
        axis_types=(jax.sharding.AxisType.Auto, jax.sharding.AxisType.Auto),
        devices=devices,
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """``NamedSharding(mesh, P("data"))``: leading (batch) axis split over ``data``.

    Examples:
      >>> from jaxemb.parallel import make_mesh, batch_sharding
      >>> batch_sharding(make_mesh()).spec
      P('data',)
    """
    _check_mesh(mesh)
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    """``NamedSharding(mesh, P())``: a fully replicated array."""
    _check_mesh(mesh)
    return NamedSharding(mesh, P())


def shard_batch(mesh: Mesh, local_batch: Any) -> Any:
    """Builds global batch-sharded arrays from this process's slice of the batch.

    Every leaf of ``local_batch`` (a pytree of arrays with a leading batch axis holding this
    process's rows) becomes a global ``jax.Array`` sharded along ``data``; the global batch is
    the concatenation over processes. On one process this is a plain ``device_put``.

    Args:
      mesh: the mesh from :func:`make_mesh`.
      local_batch: pytree of ``[local_batch, ...]`` arrays; ``local_batch`` must be divisible by
        the number of local devices on the ``data`` axis.

    Returns:
      The same pytree of global ``[global_batch, ...]`` arrays.

    Examples:
      >>> import numpy as np
      >>> from jaxemb.parallel import make_mesh, shard_batch
      >>> x = shard_batch(make_mesh(), {"x": np.zeros((8, 3), np.float32)})
      >>> x["x"].shape
      (8, 3)

    References:
      ``jax.make_array_from_process_local_data``.
    """
    _check_mesh(mesh)
    sharding = batch_sharding(mesh)
    local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    local_data = max(1, local_devices // mesh.shape["model"])

    def put(path, x):
        x = np.asarray(x)
        name = jax.tree_util.keystr(path) or "local_batch"
        if x.ndim == 0:
            raise ValueError(f"local_batch{name} must have a leading batch axis; got a scalar")
        if x.shape[0] % local_data:
            raise ValueError(
                f"local_batch{name} has {x.shape[0]} rows, not divisible by the {local_data} "
                f"local devices on the 'data' axis"
            )
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree_util.tree_map_with_path(put, local_batch)


def _check_mesh(mesh: Any) -> None:
    if not isinstance(mesh, Mesh):
        raise ValueError(f"mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}")
    if "data" not in mesh.axis_names:
        raise ValueError(f"mesh must have a 'data' axis; got axes {mesh.axis_names}")


def local_batch_size(mesh: Mesh, global_batch: int) -> int:
    """Rows of a global batch that this process feeds.

    Args:
      mesh: the training mesh (with a ``data`` axis).
      global_batch: the global batch size, a positive multiple of the ``data`` axis size (every
        device gets the same number of rows) and of the process count.

    Returns:
      ``global_batch // jax.process_count()``.

    Examples:
      >>> import jax
      >>> from jaxemb.parallel import local_batch_size, make_mesh
      >>> local_batch_size(make_mesh(devices=jax.devices()[:1]), 256)
      256
    """
    _check_mesh(mesh)
    check_int(global_batch, "global_batch", minimum=1)
    data = mesh.shape["data"]
    if global_batch % data:
        raise ValueError(
            f"global_batch must be divisible by the mesh's data axis size {data} (each device "
            f"holds the same number of rows); got {global_batch}"
        )
    if global_batch % jax.process_count():
        raise ValueError(
            f"global_batch must be divisible by the process count {jax.process_count()}; "
            f"got {global_batch}"
        )
    return global_batch // jax.process_count()


__all__ = ["make_mesh", "batch_sharding", "replicated", "shard_batch", "local_batch_size"]
