"""info_nce forward+backward vs the bare matmuls it has to do (a script, not a test).

``info_nce`` at batch B and width D must compute the ``[B, B]`` logits ``q pᵀ`` and, in the
backward pass, ``G p`` and ``Gᵀ q`` — three ``[B, D] x [D, B]``-sized matmuls. This script
times the jitted ``value_and_grad`` of ``info_nce`` (w.r.t. anchors and positives, float32)
against a jitted function doing exactly those three matmuls, both in the same run
(``block_until_ready``, median of ``--reps`` interleaved calls after warm-up), and prints the
ratio (target ≤ 1.3).

    python benchmarks/losses.py --batch 4096 --dim 768 --reps 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from jaxemb.losses import info_nce


def _median_times(fns, args, reps: int) -> list[float]:
    """Median wall time of each jitted ``fn(*args)``; reps interleaved so load drifts hit all."""
    for fn in fns:
        jax.block_until_ready(fn(*args))  # compile
        jax.block_until_ready(fn(*args))  # warm-up
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, acc in zip(fns, times, strict=True):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            acc.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    kq, kp = jax.random.split(jax.random.key(0))
    q = jax.random.normal(kq, (args.batch, args.dim), jnp.float32)
    p = q + 0.5 * jax.random.normal(kp, (args.batch, args.dim), jnp.float32)

    loss_and_grads = jax.jit(
        jax.value_and_grad(lambda a, b: info_nce(a, b, temperature=0.05), argnums=(0, 1))
    )

    @jax.jit
    def three_matmuls(a, b):
        logits = a @ b.T  # forward logits
        return logits @ b, logits.T @ a  # the two backward products

    t_loss, t_mm = _median_times([loss_and_grads, three_matmuls], (q, p), args.reps)
    print(f"devices: {jax.devices()}")
    print(f"batch={args.batch} dim={args.dim} reps={args.reps} (median seconds per call)")
    print(f"info_nce value_and_grad: {t_loss * 1e3:9.1f} ms")
    print(f"3 matmuls (baseline):    {t_mm * 1e3:9.1f} ms")
    print(f"ratio info_nce / matmuls: {t_loss / t_mm:.3f}  (target <= 1.3)")


if __name__ == "__main__":
    main()
