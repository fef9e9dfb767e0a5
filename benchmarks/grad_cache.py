"""GradCache vs a plain contrastive step: peak memory and step time (a script, not a test).

A small Transformer encoder (``--layers`` pre-LN blocks of width ``--hidden``, ``--heads``
heads, MLP 4×, dropout ``--dropout``, mean pooling over ``--seq`` tokens from a ``--vocab``
vocabulary) embeds queries and documents (one shared encoder, two towers); the loss is
``info_nce`` (τ = 0.05). Two steps returning ``(loss, grads)``:

- plain: ``jax.value_and_grad`` of the full-batch loss (all activations and the ``[B, B]``
  logits live at once);
- GradCache: :func:`jaxemb.parallel.grad_cache` with ``--chunk`` rows per chunk (the loss on
  the cached embeddings runs in ``--chunk``-row blocks, :func:`blocked_info_nce`).

Peak memory is read from the compiled executable (``memory_analysis()``: temp + argument +
output − aliased bytes), so batches that would not fit or would take long can be measured
without running them. Step time is the median of ``--reps`` interleaved ``block_until_ready``
calls after warm-up, at ``--time-batch`` (a batch where both fit). Prints
``peak(big, GC) / peak(small, GC)`` (target ≤ 1.25) and ``time(GC) / time(plain)`` (target
≤ 1.4).

What still grows with the batch under GradCache is the irreducible part of the algorithm: the
input tokens (``2 · seq · 4`` bytes a row) and the cached embeddings / their cotangents ``u``
(``2 · hidden · 4`` bytes a row), while the encoder's activations are those of one chunk and
the loss holds ``[chunk, batch]`` logits instead of ``[batch, batch]``. The ratio is therefore
``1 + (big − small) · bytes_per_row / peak(small)``: it stays under 1.25 when one chunk's
activations outweigh the batch's embedding cache — true at the default ``--seq 32`` (a short
text), not quite at ``--seq 16`` (1.27 on the reference CPU run), and increasingly so for
real encoders (hundreds of tokens, wider layers).

    python benchmarks/grad_cache.py                      # batches 512 and 16384, chunk 128
    python benchmarks/grad_cache.py --big 4096 --time-batch 256 --reps 3   # scaled down
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxemb.losses import info_nce
from jaxemb.parallel import grad_cache


class Block(nnx.Module):
    """Pre-LN Transformer block: multi-head self-attention and a 4× GELU MLP, with dropout."""

    def __init__(self, dim: int, heads: int, rate: float, *, rngs: nnx.Rngs):
        self.heads = heads
        self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
        self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
        self.out = nnx.Linear(dim, dim, rngs=rngs)
        self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
        self.fc1 = nnx.Linear(dim, 4 * dim, rngs=rngs)
        self.fc2 = nnx.Linear(4 * dim, dim, rngs=rngs)
        self.drop = nnx.Dropout(rate)

    def __call__(self, x, keep, *, rngs):
        det = rngs is None
        b, s, d = x.shape
        qkv = self.qkv(self.ln1(x)).reshape(b, s, 3, self.heads, d // self.heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d // self.heads)
        scores = jnp.where(keep[:, None, None, :], scores, -1e9)
        h = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v).reshape(b, s, d)
        x = x + self.drop(self.out(h), deterministic=det, rngs=rngs)
        h = self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))
        return x + self.drop(h, deterministic=det, rngs=rngs)


class TextEncoder(nnx.Module):
    """Token + learned position embeddings, ``layers`` blocks, final LayerNorm, mean pooling."""

    def __init__(self, vocab, seq, dim, layers, heads, rate, *, rngs: nnx.Rngs):
        self.tok = nnx.Embed(vocab, dim, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (seq, dim)))
        self.blocks = nnx.List([Block(dim, heads, rate, rngs=rngs) for _ in range(layers)])
        self.ln = nnx.LayerNorm(dim, rngs=rngs)

    def __call__(self, tokens, *, rngs=None):
        keep = tokens > 0
        x = self.tok(tokens) + self.pos[None]
        for block in self.blocks:
            x = block(x, keep, rngs=rngs)
        x = self.ln(x)
        w = keep.astype(x.dtype)[..., None]
        return jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


def peak_bytes(m) -> int:
    """Bytes live at the peak of a compiled executable (``memory_analysis()`` result)."""
    return (
        m.temp_size_in_bytes
        + m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
    )


def _median_times(fns, args, reps: int) -> list[float]:
    """Median wall time of each compiled ``fn(*args)``; reps interleaved so load hits both."""
    for fn in fns:
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
    parser.add_argument("--small", type=int, default=512)
    parser.add_argument("--big", type=int, default=16384)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--time-batch", type=int, default=512)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--skip-plain-big", action="store_true", help="don't compile plain@big")
    args = parser.parse_args()

    model = TextEncoder(
        args.vocab, args.seq, args.hidden, args.layers, args.heads, args.dropout,
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    graphdef, params = nnx.split(model)

    def embed(params, tokens, key):
        return nnx.merge(graphdef, params)(tokens, rngs=nnx.Rngs(dropout=key))

    # A partial of info_nce: grad_cache swaps in blocked_info_nce(block_size=chunk); the plain
    # step evaluates info_nce itself.
    loss_fn = functools.partial(info_nce, temperature=0.05)

    gc = grad_cache((embed, embed), loss_fn, chunk_size=args.chunk)

    def gc_step(params, q, d, key):
        return gc(params, (q, d), key)

    def plain_step(params, q, d, key):
        def total(p):
            return loss_fn(
                embed(p, q, jax.random.fold_in(key, 0)), embed(p, d, jax.random.fold_in(key, 1))
            )

        return jax.value_and_grad(total)(params)

    key = jax.random.key(0)

    def compiled(step, batch):
        tok = jax.ShapeDtypeStruct((batch, args.seq), jnp.int32)
        return jax.jit(step).lower(params, tok, tok, key).compile()

    n_params = sum(x.size for x in jax.tree.leaves(params))
    print(f"devices: {jax.devices()}")
    print(
        f"encoder: {args.layers} layers, hidden {args.hidden}, {args.heads} heads, seq "
        f"{args.seq}, vocab {args.vocab}, dropout {args.dropout} ({n_params:,} params); "
        f"loss info_nce; chunk {args.chunk}"
    )
    peaks = {}
    for name, step in (("GC", gc_step), ("plain", plain_step)):
        for batch in (args.small, args.big):
            if name == "plain" and batch == args.big and args.skip_plain_big:
                continue
            start = time.perf_counter()
            m = compiled(step, batch).memory_analysis()
            peaks[name, batch] = peak_bytes(m)
            print(
                f"peak memory {name:5s} batch {batch:6d}: {peaks[name, batch] / 2**20:9.1f} MiB"
                f" = temp {m.temp_size_in_bytes / 2**20:.1f} + arguments "
                f"{m.argument_size_in_bytes / 2**20:.1f} + outputs "
                f"{m.output_size_in_bytes / 2**20:.1f} MiB"
                f"  (compiled in {time.perf_counter() - start:.1f} s)"
            )

    rng = np.random.default_rng(0)
    tb = args.time_batch
    q, d = (jnp.asarray(rng.integers(1, args.vocab, (tb, args.seq)), jnp.int32) for _ in "qd")
    fns = [compiled(gc_step, tb), compiled(plain_step, tb)]
    (loss_gc, grads_gc), (loss_plain, grads_plain) = (f(params, q, d, key) for f in fns)
    del grads_gc, grads_plain
    t_gc, t_plain = _median_times(fns, (params, q, d, key), args.reps)
    print(f"step time batch {tb}: GC {t_gc * 1e3:.1f} ms, plain {t_plain * 1e3:.1f} ms")
    print(
        f"(losses: GC {float(loss_gc):.4f}, plain {float(loss_plain):.4f}; "
        "they differ only through the dropout keys)"
    )
    ratio_mem = peaks["GC", args.big] / peaks["GC", args.small]
    print(f"peak(GC, {args.big}) / peak(GC, {args.small}) = {ratio_mem:.3f}  (target <= 1.25)")
    if ("plain", args.big) in peaks:
        print(
            f"peak(plain, {args.big}) / peak(GC, {args.big}) = "
            f"{peaks['plain', args.big] / peaks['GC', args.big]:.1f}"
        )
    print(f"time(GC) / time(plain) at batch {tb} = {t_gc / t_plain:.3f}  (target <= 1.4)")


if __name__ == "__main__":
    main()
