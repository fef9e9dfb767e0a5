"""Multi-host start-up: ``jax.distributed.initialize`` with arguments or environment variables."""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax

ENV_COORDINATOR = "JAXEMB_COORDINATOR"
ENV_NUM_PROCESSES = "JAXEMB_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXEMB_PROCESS_ID"


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"${name} must be an integer; got {raw!r}") from None


def _check_address(address: str, source: str) -> None:
    if not isinstance(address, str):
        raise ValueError(f"{source} must be a 'host:port' string; got {address!r}")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"{source} must be 'host:port' with a port in 1..65535 (e.g. '10.0.0.1:1234'); "
            f"got {address!r}"
        )


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: int | Sequence[int] | None = None,
    initialization_timeout: int = 300,
) -> None:
    """Connects this process to a multi-host JAX run (``jax.distributed.initialize``).

    Call it once per process, first thing, before any other JAX call; then every process runs
    the same program: ``make_mesh()`` spans the devices of all processes and
    ``shard_batch(mesh, local_rows)`` assembles the global batch from each process's rows.

    Each of the three settings comes from its argument, else from the environment variable
    ``$JAXEMB_COORDINATOR`` (``"host:port"`` of process 0, reachable by all),
    ``$JAXEMB_NUM_PROCESSES`` or ``$JAXEMB_PROCESS_ID``. Either all three are set that way, or
    none is, in which case JAX's own detection applies (``$JAX_COORDINATOR_ADDRESS``, SLURM,
    Open MPI, Cloud TPU, Kubernetes ...). ``local_device_ids`` restricts the devices this
    process uses (JAX also reads ``$JAX_LOCAL_DEVICE_IDS``). On CPU, cross-process collectives
    use gloo (JAX's default ``jax_cpu_collectives_implementation``).

    Args:
      coordinator_address: ``"host:port"`` of process 0's coordinator service.
      num_processes: number of processes in the run (≥ 1).
      process_id: this process's index in ``[0, num_processes)``.
      local_device_ids: device ids visible to this process (default: all).
      initialization_timeout: seconds to wait for all processes to connect.

    Raises:
      ValueError: an incomplete or inconsistent combination (some settings given, others not;
        a process id out of range; a malformed address or integer environment variable), or
        nothing given and no cluster environment detected.
      RuntimeError: JAX was already initialised (a JAX computation ran before this call, or
        ``initialize`` was called twice).

    Examples:
      >>> from jaxemb.parallel import initialize
      >>> initialize("10.0.0.1:1234", num_processes=2, process_id=2)
      Traceback (most recent call last):
      ...
      ValueError: process_id must be in [0, 2) for num_processes=2; got 2

    References:
      JAX "Multi-process environments" guide (``jax.distributed.initialize``,
      ``jax.make_array_from_process_local_data``).
    """
    sources = {}
    if coordinator_address is None and os.environ.get(ENV_COORDINATOR):
        coordinator_address = os.environ[ENV_COORDINATOR]
        sources["coordinator_address"] = f"${ENV_COORDINATOR}"
    if num_processes is None:
        num_processes = _env_int(ENV_NUM_PROCESSES)
        if num_processes is not None:
            sources["num_processes"] = f"${ENV_NUM_PROCESSES}"
    if process_id is None:
        process_id = _env_int(ENV_PROCESS_ID)
        if process_id is not None:
            sources["process_id"] = f"${ENV_PROCESS_ID}"

    given = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    missing = [k for k, val in given.items() if val is None]
    if missing and len(missing) < 3:
        have = ", ".join(
            f"{k} (from {sources.get(k, 'the argument')})" for k in given if k not in missing
        )
        raise ValueError(
            f"initialize needs coordinator_address, num_processes and process_id together; got "
            f"{have} but not {', '.join(missing)}. Set the missing ones as arguments or via "
            f"${ENV_COORDINATOR}, ${ENV_NUM_PROCESSES}, ${ENV_PROCESS_ID}"
        )
    if not missing:
        _check_address(
            coordinator_address, sources.get("coordinator_address", "coordinator_address")
        )
        for name in ("num_processes", "process_id"):
            val = given[name]
            if isinstance(val, bool) or not isinstance(val, int):
                raise ValueError(f"{sources.get(name, name)} must be an integer; got {val!r}")
        if num_processes < 1:
            raise ValueError(
                f"{sources.get('num_processes', 'num_processes')} must be >= 1; got {num_processes}"
            )
        if not 0 <= process_id < num_processes:
            raise ValueError(
                f"process_id must be in [0, {num_processes}) for num_processes={num_processes}; "
                f"got {process_id}"
            )
    if isinstance(local_device_ids, int):
        local_device_ids = [local_device_ids]
    if local_device_ids is not None and not all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in local_device_ids
    ):
        raise ValueError(
            f"local_device_ids must be non-negative integers; got {list(local_device_ids)!r}"
        )
    if jax.distributed.is_initialized():
        raise RuntimeError("jax.distributed is already initialised in this process")
    try:
        jax.distributed.initialize(
            coordinator_address,
            num_processes,
            process_id,
            local_device_ids=local_device_ids,
            initialization_timeout=initialization_timeout,
        )
    except ValueError as e:
        if missing:
            raise ValueError(
                "initialize found no settings: pass coordinator_address, num_processes and "
                f"process_id, or set ${ENV_COORDINATOR}, ${ENV_NUM_PROCESSES} and "
                f"${ENV_PROCESS_ID} (or run under a cluster manager JAX detects, e.g. SLURM). "
                f"JAX said: {e}"
            ) from e
        raise
