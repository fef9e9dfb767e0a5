"""Exact search throughput: ``jaxemb.retrieval.search`` vs ``faiss.IndexFlatIP`` (a script).

Times ``search(queries, corpus, k, metric="dot")`` on random float32 data (the full default
size, 10,000 queries over 1,000,000 x 256 vectors at k=10, needs ~1 GB of RAM) and prints
queries/second. When ``faiss`` (faiss-cpu) is importable, it times ``faiss.IndexFlatIP`` on the
same data in the same run, checks that both return the same neighbours, and prints the ratio
of jaxemb's throughput to faiss's (target >= 0.9). faiss is never a dependency: without it the
ratio line is replaced by a message.

    python benchmarks/search.py                                   # full size
    python benchmarks/search.py --queries 2000 --corpus 100000    # quick
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from jaxemb.retrieval import search


def _median_time(fn, reps: int) -> tuple[float, object]:
    out = fn()  # compile / warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--corpus", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--query-chunk-size", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((args.corpus, args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    corpus_dev = jax.device_put(corpus)
    queries_dev = jax.device_put(queries)

    def run_jax():
        return jax.block_until_ready(
            search(
                queries_dev,
                corpus_dev,
                args.k,
                metric="dot",
                chunk_size=args.chunk_size,
                query_chunk_size=args.query_chunk_size,
                check_finite=False,
            )
        )

    t_jax, (_, idx_jax) = _median_time(run_jax, args.reps)
    print(f"devices: {jax.devices()}")
    print(
        f"queries={args.queries} corpus={args.corpus} dim={args.dim} k={args.k} "
        f"chunk_size={args.chunk_size} query_chunk_size={args.query_chunk_size} "
        f"(median of {args.reps})"
    )
    print(f"jaxemb.retrieval.search (dot): {args.queries / t_jax:12.1f} queries/s")

    try:
        import faiss
    except ImportError:
        print("faiss not importable (pip install faiss-cpu to compare): ratio line skipped")
        return
    index = faiss.IndexFlatIP(args.dim)
    index.add(corpus)
    t_faiss, (_, idx_faiss) = _median_time(lambda: index.search(queries, args.k), args.reps)
    same = float(np.mean(np.asarray(idx_jax) == idx_faiss))
    print(
        f"faiss.IndexFlatIP ({faiss.omp_get_max_threads()} threads): "
        f"{args.queries / t_faiss:12.1f} queries/s"
    )
    print(
        f"ratio jaxemb / faiss: {t_faiss / t_jax:.2f} (target >= 0.9); same neighbours: {same:.4f}"
    )


if __name__ == "__main__":
    main()
