"""One process of the two-process test in tests/test_multihost.py (also imported by it).

Run as ``python tests/multihost_worker.py OUT.json`` with ``$JAXEMB_COORDINATOR``,
``$JAXEMB_NUM_PROCESSES`` and ``$JAXEMB_PROCESS_ID`` set and 4 CPU devices per process: it joins
the run with ``jaxemb.parallel.initialize()``, feeds its half of a fixed global batch through
``shard_batch``, and writes the sharded ``info_nce``, ``ring_info_nce`` and one train step
(plain data-parallel, and GradCache with dropout) to OUT.json.
The parent runs :func:`compute` on one process with 8 devices and compares.
"""

from __future__ import annotations

import functools
import json
import sys

GLOBAL_BATCH, DIM_IN, DIM_HIDDEN, DIM_OUT = 32, 12, 16, 8
TEMPERATURE, LEARNING_RATE, CHUNK = 0.1, 0.5, 2


def global_data():
    """The fixed global batch and initial parameters (NumPy, identical in every process)."""
    import numpy as np

    rng = np.random.default_rng(0)
    batch = {
        "q": rng.normal(size=(GLOBAL_BATCH, DIM_OUT)).astype(np.float32),
        "p": rng.normal(size=(GLOBAL_BATCH, DIM_OUT)).astype(np.float32),
        "xq": rng.normal(size=(GLOBAL_BATCH, DIM_IN)).astype(np.float32),
        "xd": rng.normal(size=(GLOBAL_BATCH, DIM_IN)).astype(np.float32),
    }
    params = {
        "w1": (rng.normal(size=(DIM_IN, DIM_HIDDEN)) / np.sqrt(DIM_IN)).astype(np.float32),
        "w2": (rng.normal(size=(DIM_HIDDEN, DIM_OUT)) / np.sqrt(DIM_HIDDEN)).astype(np.float32),
    }
    return batch, params


def embed(params, x, key):
    """A two-layer MLP tower with dropout 0.1 on the hidden layer when ``key`` is given."""
    import jax
    import jax.numpy as jnp

    h = jnp.tanh(x @ params["w1"])
    if key is not None:
        keep = jax.random.bernoulli(key, 0.9, h.shape)
        h = jnp.where(keep, h / 0.9, 0.0)
    return h @ params["w2"]


def compute(mesh, local_batch, params) -> dict:
    """Sharded losses and one train step from this process's rows of the global batch."""
    import jax
    import numpy as np

    from jaxemb import parallel
    from jaxemb.losses import info_nce

    batch = parallel.shard_batch(mesh, local_batch)
    params = jax.device_put(params, parallel.replicated(mesh))
    loss = functools.partial(info_nce, temperature=TEMPERATURE)
    out = {}
    with jax.set_mesh(mesh):
        out["info_nce"] = float(jax.jit(loss)(batch["q"], batch["p"]))
        out["ring_info_nce"] = float(
            parallel.ring_info_nce(batch["q"], batch["p"], temperature=TEMPERATURE, mesh=mesh)
        )

        # one plain data-parallel SGD step (jit + NamedSharding, global-view loss)
        @jax.jit
        def plain_step(params, xq, xd):
            def objective(p):
                return loss(embed(p, xq, None), embed(p, xd, None))

            value, grads = jax.value_and_grad(objective)(params)
            new = jax.tree.map(lambda w, g: w - LEARNING_RATE * g, params, grads)
            return value, new

        value, new = plain_step(params, batch["xq"], batch["xd"])
        out["plain_step"] = {
            "loss": float(value),
            "params": {k: np.asarray(v).tolist() for k, v in new.items()},
        }

        # one GradCache SGD step: each device embeds its rows in chunks of CHUNK, with dropout
        # keys that depend on the global chunk index only (so the process split is invisible)
        step = parallel.grad_cache((embed, embed), loss, chunk_size=CHUNK, mesh=mesh)
        value, grads = step(params, (batch["xq"], batch["xd"]), jax.random.key(7))
        new = jax.tree.map(lambda w, g: w - LEARNING_RATE * g, params, grads)
        out["grad_cache_step"] = {
            "loss": float(value),
            "params": {k: np.asarray(v).tolist() for k, v in new.items()},
        }
    return out


def main(out_path: str) -> None:
    import jax

    # gloo is JAX's default for CPU cross-process collectives; set it explicitly all the same.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    from jaxemb import parallel

    parallel.initialize()  # from $JAXEMB_COORDINATOR / $JAXEMB_NUM_PROCESSES / $JAXEMB_PROCESS_ID
    n, me = jax.process_count(), jax.process_index()
    mesh = parallel.make_mesh()
    batch, params = global_data()
    rows = GLOBAL_BATCH // n
    local = {k: v[me * rows : (me + 1) * rows] for k, v in batch.items()}
    out = compute(mesh, local, params)
    out.update(
        process_index=me,
        process_count=n,
        local_devices=jax.local_device_count(),
        global_devices=jax.device_count(),
    )
    with open(out_path, "w") as f:
        json.dump(out, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
