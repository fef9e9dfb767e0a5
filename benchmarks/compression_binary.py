"""Binary Hamming search: jaxemb ``search(metric="hamming")`` vs faiss ``IndexBinaryFlat``.

Random packed codes (no download, seeded): a corpus of 1,000,000 codes of 256 bits (32 bytes,
``ubinary`` as ``quantize_embeddings`` packs them) and 1,000 queries, k = 10. Prints the
queries/second of jaxemb's exact search (its defaults: 32,768-row chunks, grouped pre-filter,
candidates recomputed from their codes) and, when ``faiss`` (faiss-cpu) is importable, of
``faiss.IndexBinaryFlat`` on the same codes in the same run, the ratio jaxemb / faiss (target
>= 1.0), and whether both return the same neighbours: identical distances, and identical
indices or differences only among codes at the same distance (faiss does not promise the
lower index first among equal distances; jaxemb does).

Wall time is the median of 3 timed runs after a warm-up (which compiles). The CPU seconds of
the process are printed too: on a machine shared with other work they compare the work done
better than wall time (faiss runs one OpenMP thread per core; ``--faiss-threads`` pins it).
faiss is never a dependency: without it the faiss lines are replaced by a message.

    python -P benchmarks/compression_binary.py            # 1M x 32 bytes, 1,000 queries
    python -P benchmarks/compression_binary.py --quick    # 100,000 x 32 bytes, 200 queries

(``-P``: benchmarks/compression.py must not shadow the ``compression`` module jax imports.)
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from jaxemb.retrieval import search

_BYTES, _K = 32, 10


def _timed(fn, reps: int = 3):
    """(median wall seconds, median process CPU seconds, result) after one warm-up call."""
    out = fn()
    walls, cpus = [], []
    for _ in range(reps):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), out


def _same_neighbours(d_ref, i_ref, d, i) -> tuple[bool, int, bool]:
    """(identical distances, queries with identical indices, differences only among ties)."""
    same_d = bool(np.array_equal(d_ref, d))
    same_rows = int(np.sum(np.all(i_ref == i, axis=1)))
    ties_only = same_d
    if same_d:
        for r in np.flatnonzero(~np.all(i_ref == i, axis=1)):
            for dist in np.unique(d[r]):  # the same set of codes at every distance but the last
                a, b = set(i_ref[r][d_ref[r] == dist]), set(i[r][d[r] == dist])
                if a != b and dist != d[r, -1]:
                    ties_only = False
    return same_d, same_rows, ties_only


def run(quick: bool, faiss_threads: int | None = None) -> None:
    """Prints Hamming-search queries/s of jaxemb and faiss IndexBinaryFlat and their ratio."""
    n, nq = (100_000, 200) if quick else (1_000_000, 1_000)
    rng = np.random.default_rng(0)
    corpus = rng.integers(0, 256, (n, _BYTES), dtype=np.uint8)
    queries = rng.integers(0, 256, (nq, _BYTES), dtype=np.uint8)
    corpus_dev, queries_dev = jax.device_put(corpus), jax.device_put(queries)
    print(f"devices: {jax.devices()}")
    print(
        f"Hamming search: {nq:,} queries x {n:,} codes of {8 * _BYTES} bits ({_BYTES} bytes), "
        f"k={_K} (median of 3)"
    )

    wall_j, cpu_j, (dist, idx) = _timed(
        lambda: jax.block_until_ready(search(queries_dev, corpus_dev, _K, metric="hamming"))
    )
    print(f"  jaxemb search(metric='hamming'): {nq / wall_j:10.1f} queries/s  (cpu {cpu_j:.2f} s)")

    try:
        import faiss
    except ImportError:
        print("  faiss not importable (pip install faiss-cpu to compare): ratio line skipped")
        return
    if faiss_threads is not None:
        faiss.omp_set_num_threads(faiss_threads)
    index = faiss.IndexBinaryFlat(8 * _BYTES)
    index.add(corpus)
    wall_f, cpu_f, (d_f, i_f) = _timed(lambda: index.search(queries, _K))
    threads = faiss.omp_get_max_threads()
    print(
        f"  faiss IndexBinaryFlat ({threads} threads): {nq / wall_f:10.1f} queries/s  "
        f"(cpu {cpu_f:.2f} s)"
    )
    print(
        f"  ratio jaxemb / faiss: {wall_f / wall_j:.2f}x queries/s (target >= 1.0), "
        f"{cpu_f / cpu_j:.2f}x by CPU seconds"
    )
    same_d, same_rows, ties_only = _same_neighbours(d_f, i_f, np.asarray(dist), np.asarray(idx))
    others = "" if same_rows == nq else f"; the others differ only among ties: {ties_only}"
    print(
        f"  same neighbours: distances identical: {same_d}; indices identical for "
        f"{same_rows}/{nq} queries{others}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 codes and 200 queries")
    parser.add_argument("--faiss-threads", type=int, default=None, help="faiss OpenMP threads")
    args = parser.parse_args()
    run(args.quick, faiss_threads=args.faiss_threads)


if __name__ == "__main__":
    main()
