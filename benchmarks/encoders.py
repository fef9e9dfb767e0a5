"""Forward-pass throughput of a BERT-base-shaped ``TransformerEncoder`` (a script).

Times the jitted forward of a 12-layer, 768-wide, 12-head encoder (intermediate 3072) at
sequence 128, batch 32, in float32 and bfloat16 compute, and prints tokens/second. Each dtype's
model FLOP rate (matmul FLOPs of the forward divided by its time) is printed as a ratio to the
FLOP rate of one dense ``[B*T, 768] @ [768, 3072]`` matmul of the same dtype timed in the same
run, so the number reads as "fraction of what this machine's matmul achieves" and is
comparable across machines.

    python benchmarks/encoders.py                       # BERT-base shape
    python benchmarks/encoders.py --layers 2 --reps 2   # quick
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxemb.encoders import TransformerConfig, TransformerEncoder


def _median_time(fn, reps: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_flops(cfg: TransformerConfig, batch: int, length: int) -> float:
    """Matmul FLOPs of one forward: Q/K/V/O and MLP projections plus QKᵀ and PV."""
    h, i, tokens = cfg.hidden_size, cfg.intermediate_size, batch * length
    per_layer = 2 * tokens * (4 * h * h + 2 * h * i) + 2 * 2 * batch * length * length * h
    return float(cfg.num_layers * per_layer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--intermediate", type=int, default=3072)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(1, 30522, (args.batch, args.seq)), jnp.int32)
    lengths = rng.integers(args.seq // 2, args.seq + 1, args.batch)
    mask = jnp.asarray(np.arange(args.seq)[None, :] < lengths[:, None])
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}")
    print(
        f"encoder: {args.layers} layers, hidden {args.hidden}, {args.heads} heads, "
        f"intermediate {args.intermediate}; batch {args.batch} x seq {args.seq}"
    )
    for dtype in ("float32", "bfloat16"):
        cfg = TransformerConfig(
            vocab_size=30522,
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=args.heads,
            intermediate_size=args.intermediate,
            max_positions=max(512, args.seq),
            dropout=0.0,
            compute_dtype=dtype,
        )
        model = TransformerEncoder(cfg, rngs=nnx.Rngs(0))
        model.eval()
        graphdef, state = nnx.split(model)

        @jax.jit
        def forward(state, ids, mask, graphdef=graphdef):
            return nnx.merge(graphdef, state)(ids, mask).last_hidden_state

        t_fwd = _median_time(lambda: forward(state, ids, mask), args.reps)  # noqa: B023
        jdt = jnp.float32 if dtype == "float32" else jnp.bfloat16
        a = jnp.asarray(rng.standard_normal((args.batch * args.seq, args.hidden)), jdt)
        b = jnp.asarray(rng.standard_normal((args.hidden, args.intermediate)), jdt)
        matmul = jax.jit(lambda a, b: a @ b)
        t_mm = _median_time(lambda: matmul(a, b), max(args.reps, 5))  # noqa: B023
        mm_rate = 2.0 * a.shape[0] * args.hidden * args.intermediate / t_mm
        model_rate = forward_flops(cfg, args.batch, args.seq) / t_fwd
        tokens = args.batch * args.seq / t_fwd
        print(
            f"{dtype:>8}: {tokens:,.0f} tokens/s | model FLOP rate / matmul FLOP rate = "
            f"{model_rate / mm_rate:.2f} (matmul {mm_rate / 1e9:.1f} GFLOP/s)"
        )


if __name__ == "__main__":
    main()
