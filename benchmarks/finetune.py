"""Fine-tuning step throughput and memory, with and without GradCache (a script).

Times ``experiments.code_search``'s jitted update (MNRL + Matryoshka, AdamW, the checkpoint's
dropout) on all-MiniLM-L6-v2 (or ``--model``) with random token ids at the configured query and
document lengths, batch ``--batch``: tokens/second, and the model FLOP rate (3 x the forward's
matmul FLOPs per step, the usual fwd + bwd count; GradCache's extra forward is overhead) as a
fraction of a ``[B*T, 384] @ [384, 1536]`` matmul timed in the same run. Then compiles (without
running) the step at growing batches and prints XLA's temporary-buffer size: with GradCache it
stays flat, so a batch of 1024 fits in the memory of a chunk.

    python benchmarks/finetune.py                  # batch 32, memory up to 1024
    python benchmarks/finetune.py --reps 1 --memory-batches 64 256
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the experiments package

from experiments.code_search import CodeSearchConfig, make_train_step  # noqa: E402
from jaxemb import parallel  # noqa: E402
from jaxemb.encoders import load_sentence_transformer, packaged_model_path  # noqa: E402


def _batch(model, rows: int, q_len: int, d_len: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    vocab = model.encoder.config.vocab_size

    def tower(length):
        ids = rng.integers(1000, vocab, (rows, length)).astype(np.int32)
        ones = np.ones((rows, length), np.int32)
        return {"input_ids": ids, "attention_mask": ones, "pool_mask": ones}

    return {"q": tower(q_len), "d": tower(d_len)}


def _setup(model, path, batch, chunk, args):
    c = CodeSearchConfig.create(
        dict(
            model=str(path),
            batch_size=batch,
            grad_cache_chunk=chunk,
            hard_negatives=0,
            max_query_length=args.query_length,
            max_doc_length=args.doc_length,
            devices=1,
        )
    )
    mesh = parallel.make_mesh(devices=jax.devices()[:1])
    tx = optax.adamw(1e-5)
    step = make_train_step(model, c, tx, mesh)
    params = jax.device_put(model.params, parallel.replicated(mesh), may_alias=False)
    return step, params, tx.init(params), mesh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--query-length", type=int, default=32)
    parser.add_argument("--doc-length", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-dropout", action="store_true", help="train without dropout")
    parser.add_argument("--memory-batches", type=int, nargs="*", default=[64, 256, 1024])
    args = parser.parse_args()

    path = args.model or packaged_model_path()
    model = load_sentence_transformer(path)
    cfg = model.encoder.config
    h, i = cfg.hidden_size, cfg.intermediate_size
    x = jax.numpy.ones((args.batch * args.doc_length, h))
    w = jax.numpy.ones((h, i))
    mm = jax.jit(lambda x, w: x @ w)
    jax.block_until_ready(mm(x, w))
    t0 = time.perf_counter()
    for _ in range(5):
        jax.block_until_ready(mm(x, w))
    rate = 5 * 2 * x.shape[0] * h * i / (time.perf_counter() - t0)
    tokens = args.batch * (args.query_length + args.doc_length)

    def fwd_flops(rows, length):
        return cfg.num_layers * (
            2 * rows * length * (4 * h * h + 2 * h * i) + 4 * rows * length * length * h
        )

    flops = 3 * (fwd_flops(args.batch, args.query_length) + fwd_flops(args.batch, args.doc_length))
    print(
        f"device: {jax.devices()[0].device_kind}; batch {args.batch}, query {args.query_length} "
        f"+ document {args.doc_length} tokens, matmul {rate / 1e9:.0f} GFLOP/s"
    )
    key = None if args.no_dropout else jax.random.key(0)
    for chunk in (None, args.chunk):
        step, params, opt, mesh = _setup(model, path, args.batch, chunk, args)
        batch = parallel.shard_batch(
            mesh, _batch(model, args.batch, args.query_length, args.doc_length)
        )
        with jax.set_mesh(mesh):
            params, opt, loss = step(params, opt, batch, key, None)  # compile
            jax.block_until_ready(loss)
            times = []
            for r in range(args.reps):
                t0 = time.perf_counter()
                k = None if key is None else jax.random.fold_in(key, r)
                params, opt, loss = step(params, opt, batch, k, None)
                jax.block_until_ready(loss)
                times.append(time.perf_counter() - t0)
        seconds = statistics.median(times)
        name = "plain backprop" if chunk is None else f"GradCache (chunks of {chunk})"
        print(
            f"{name:>26}: {seconds:.2f} s/step, {tokens / seconds:,.0f} tokens/s, model FLOPs at "
            f"{flops / seconds / rate:.2f} of the matmul rate"
        )

    print("XLA temporary buffers of one compiled step (MiB):")
    print(f"{'batch':>8} {'plain':>10} {f'GradCache {args.chunk}':>14}")
    for rows in args.memory_batches:
        sizes = []
        for chunk in (None, args.chunk):
            step, params, opt, mesh = _setup(model, path, rows, chunk, args)
            shapes = jax.tree.map(
                lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                _batch(model, rows, args.query_length, args.doc_length),
            )
            with jax.set_mesh(mesh):
                compiled = step.lower(params, opt, shapes, key, None).compile()
            sizes.append(compiled.memory_analysis().temp_size_in_bytes / 2**20)
        print(f"{rows:>8} {sizes[0]:>10.0f} {sizes[1]:>14.0f}")


if __name__ == "__main__":
    main()
