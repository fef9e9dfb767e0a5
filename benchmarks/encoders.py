"""Forward-pass throughput of jaxemb's text encoders as a fraction of the matmul rate (a script).

For each architecture family it times the jitted forward of a published model's shape with
random weights and prints tokens/second and the model's FLOP rate (matmul FLOPs of the forward —
every projection plus ``QKᵀ`` and ``PV`` — divided by its time) as a ratio to the FLOP rate of
one dense ``[B*T, hidden] @ [hidden, intermediate]`` matmul of the same dtype timed in the same
run, so the number reads as "fraction of what this machine's matmul achieves" and is comparable
across machines:

- ``bert``: BERT-base (12 layers, 768 wide, 12 heads, intermediate 3072), batch 32 × seq 128;
- ``modernbert``: ModernBERT-base (22 layers, 768 wide, intermediate 1152, GeGLU, global /
  local attention), batch 4 × seq 512 (local layers compute the full ``T × T`` scores, counted);
- ``qwen3``: Qwen3-0.6B / Qwen3-Embedding-0.6B (28 layers, 1024 wide, 16 query / 8 key-value
  heads of 128, SwiGLU 3072), batch 2 × seq 512.

    python benchmarks/encoders.py                          # every family, float32 and bfloat16
    python benchmarks/encoders.py --families bert --layers 2 --reps 2   # quick
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxemb.encoders import (
    ModernBertConfig,
    ModernBertEncoder,
    Qwen3Config,
    Qwen3Encoder,
    TransformerConfig,
    TransformerEncoder,
)

# family -> (config, encoder class, batch, seq); vocabularies are cut to 32k (the forward's
# FLOPs do not depend on them and the embedding tables would only cost memory).
FAMILIES = {
    "bert": (TransformerConfig(vocab_size=32000, dropout=0.0), TransformerEncoder, 32, 128),
    "modernbert": (ModernBertConfig(vocab_size=32000, pad_token_id=0), ModernBertEncoder, 4, 512),
    "qwen3": (Qwen3Config(vocab_size=32000, pad_token_id=0), Qwen3Encoder, 2, 512),
}


def _median_time(fn, reps: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_flops(model: nnx.Module, batch: int, length: int) -> float:
    """Matmul FLOPs of one forward: ``2·tokens`` per weight of every projection kernel, plus
    ``QKᵀ`` and ``PV`` (``4·B·T²·heads·head_dim`` per layer)."""
    cfg = model.config
    kernels = sum(
        int(np.prod(var.shape))
        for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))
        if path[-1] == "kernel"
    )
    head_dim = getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_heads)
    attention = 4.0 * batch * length * length * cfg.num_heads * head_dim * cfg.num_layers
    return 2.0 * batch * length * kernels + attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated")
    parser.add_argument("--layers", type=int, default=None, help="override every model's depth")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    families = args.families.split(",")
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"--families: unknown {unknown}; known: {sorted(FAMILIES)}")

    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}")
    rng = np.random.default_rng(0)
    for family in families:
        base, cls, batch, seq = FAMILIES[family]
        if args.layers is not None:
            extra = {"layer_types": None} if hasattr(base, "layer_types") else {}
            base = dataclasses.replace(base, num_layers=args.layers, **extra)
        ids = jnp.asarray(rng.integers(1, base.vocab_size, (batch, seq)), jnp.int32)
        lengths = rng.integers(seq // 2, seq + 1, batch)
        lengths[0] = seq
        mask = jnp.asarray(np.arange(seq)[None, :] < lengths[:, None])
        print(
            f"{family}: {base.num_layers} layers, hidden {base.hidden_size}, {base.num_heads} "
            f"heads, intermediate {base.intermediate_size}; batch {batch} x seq {seq}"
        )
        for dtype in args.dtypes.split(","):
            cfg = dataclasses.replace(base, compute_dtype=dtype)
            model = cls(cfg, rngs=nnx.Rngs(0))
            model.eval()
            flops = forward_flops(model, batch, seq)
            graphdef, state = nnx.split(model)

            @jax.jit
            def forward(state, ids, mask, graphdef=graphdef):
                return nnx.merge(graphdef, state)(ids, mask).last_hidden_state

            t_fwd = _median_time(lambda: forward(state, ids, mask), args.reps)  # noqa: B023
            jdt = jnp.float32 if dtype == "float32" else jnp.bfloat16
            h, i = cfg.hidden_size, cfg.intermediate_size
            a = jnp.asarray(rng.standard_normal((batch * seq, h)), jdt)
            b = jnp.asarray(rng.standard_normal((h, i)), jdt)
            matmul = jax.jit(lambda a, b: a @ b)
            t_mm = _median_time(lambda: matmul(a, b), max(args.reps, 5))  # noqa: B023
            mm_rate = 2.0 * a.shape[0] * h * i / t_mm
            print(
                f"  {dtype:>8}: {batch * seq / t_fwd:,.0f} tokens/s | model FLOP rate / matmul "
                f"FLOP rate = {flops / t_fwd / mm_rate:.2f} (matmul {mm_rate / 1e9:.1f} GFLOP/s)"
            )


if __name__ == "__main__":
    main()
