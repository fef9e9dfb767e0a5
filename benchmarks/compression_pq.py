"""Product quantization: jaxemb ``pq_search`` (ADC) vs faiss ``IndexPQ``, same codebooks and codes.

Synthetic embeddings (no download, seeded): unit rows of width 256 with a 32-dimensional
latent structure plus noise, 1,000,000 corpus rows and 1,000 queries from the same
distribution, k = 10. Codebooks: ``pq_train(m=32, nbits=8)`` (32 bytes per vector; k-means on
faiss's cap of 256 points per centroid; 64 with ``--quick``). Prints

- the training and encoding times and bytes per vector;
- when ``faiss`` (faiss-cpu) is importable, the faiss-equality check: ``ProductQuantizer``
  given jaxemb's centroids encodes a sample of rows to the same codes, and ``IndexPQ`` (L2 and
  inner product) holding jaxemb's codes returns the same ids and distances (to float32
  rounding) as ``pq_search``;
- recall@10 of PQ search against exact float search (``search``, squared L2);
- queries/s of ``pq_search`` and of ``IndexPQ.search`` on the same codebooks and codes, and
  their ratio (target >= 0.8), also by process CPU seconds (a shared machine's fairer gauge).

Wall time is the median of 3 timed runs after a warm-up (which compiles). faiss is never a
dependency: without it the faiss lines are replaced by a message.

    python -P benchmarks/compression_pq.py            # 1M x 256, 1,000 queries (~2 GB RAM)
    python -P benchmarks/compression_pq.py --quick    # 100,000 x 256, 200 queries

(``-P``: benchmarks/compression.py must not shadow the ``compression`` module jax imports.)
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from jaxemb.retrieval import pq_encode, pq_search, pq_train, search

_D, _M, _NBITS, _K = 256, 32, 8, 10


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


def _once(fn):
    wall = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - wall, out


def _embeddings(n: int, rng: np.random.Generator, mix: np.ndarray) -> np.ndarray:
    x = rng.standard_normal((n, mix.shape[0]), dtype=np.float32) @ mix
    x += 0.3 * rng.standard_normal((n, _D), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _recall(ids: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, exact)]))


def _faiss_index(faiss, codebooks: np.ndarray, codes: np.ndarray, metric) -> object:
    """An ``IndexPQ`` holding the given centroids and codes (nothing trained or encoded)."""
    index = faiss.IndexPQ(_D, _M, _NBITS, metric)
    faiss.copy_array_to_vector(codebooks.ravel(), index.pq.centroids)
    index.is_trained = True
    index.codes.resize(codes.size)
    faiss.copy_array_to_vector(codes.ravel(), index.codes)
    index.ntotal = codes.shape[0]
    return index


def _compare(name: str, d_ref, i_ref, d, i) -> None:
    same_rows = int(np.sum(np.all(i_ref == i, axis=1)))
    rel = float(np.max(np.abs(d_ref - d)) / np.max(np.abs(d_ref)))
    # where ids differ, are the two lists' distances equal to rounding (near-ties)?
    diff_rows = np.flatnonzero(~np.all(i_ref == i, axis=1))
    print(
        f"  IndexPQ {name}: ids identical for {same_rows}/{len(i)} queries, max |distance "
        f"difference| / max distance = {rel:.1e}"
        + (f" (rows differing: {diff_rows[:5].tolist()}...)" if diff_rows.size else "")
    )


def run(quick: bool, faiss_threads: int | None = None) -> None:
    """Prints PQ training/encoding, faiss equality, recall@10, and ADC queries/s vs faiss."""
    n, nq = (100_000, 200) if quick else (1_000_000, 1_000)
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((32, _D), dtype=np.float32)
    corpus = _embeddings(n, rng, mix)
    queries = _embeddings(nq, rng, mix)
    corpus_dev, queries_dev = jax.device_put(corpus), jax.device_put(queries)
    print(f"devices: {jax.devices()}")
    print(f"PQ m={_M}, nbits={_NBITS}: {nq:,} queries x {n:,} vectors of width {_D}, k={_K}")

    per_centroid = 64 if quick else 256  # faiss's cap is 256 training points per centroid
    t_train, codebooks = _once(
        lambda: pq_train(
            corpus_dev, m=_M, nbits=_NBITS, key=0, max_points_per_centroid=per_centroid
        )
    )
    t_enc, codes = _once(lambda: pq_encode(corpus_dev, codebooks))
    codebooks, codes_np = np.asarray(codebooks), np.asarray(codes)
    print(
        f"  pq_train: {t_train:.1f} s ({min(n, per_centroid * 2**_NBITS):,} training rows); "
        f"pq_encode: {t_enc:.1f} s; {codes_np.shape[1] * codes_np.itemsize} bytes/vector "
        f"(float32: {4 * _D}, {4 * _D / codes_np.shape[1]:.0f}x smaller)"
    )

    exact = np.asarray(search(queries_dev, corpus_dev, _K, metric="l2")[1])
    codes_dev = jax.device_put(codes_np)

    def jax_search(metric):
        return jax.block_until_ready(
            pq_search(queries_dev, codes_dev, codebooks, _K, metric=metric)
        )

    wall_j, cpu_j, (dist, ids) = _timed(lambda: jax_search("l2"))
    dist, ids = np.asarray(dist), np.asarray(ids)
    print(f"  recall@10 of PQ search vs exact L2 search: {_recall(ids, exact):.3f}")
    print(f"  jaxemb pq_search (l2): {nq / wall_j:10.1f} queries/s  (cpu {cpu_j:.2f} s)")

    try:
        import faiss
    except ImportError:
        print("  faiss not importable (pip install faiss-cpu to compare): faiss lines skipped")
        return
    if faiss_threads is not None:
        faiss.omp_set_num_threads(faiss_threads)
    pq = faiss.ProductQuantizer(_D, _M, _NBITS)
    faiss.copy_array_to_vector(codebooks.ravel(), pq.centroids)
    sample = corpus[: min(n, 100_000)]
    same = float(np.mean(pq.compute_codes(sample) == codes_np[: len(sample)]))
    print(f"  ProductQuantizer.compute_codes, same centroids: {same:.6f} of codes identical")
    index_l2 = _faiss_index(faiss, codebooks, codes_np, faiss.METRIC_L2)
    index_ip = _faiss_index(faiss, codebooks, codes_np, faiss.METRIC_INNER_PRODUCT)
    wall_f, cpu_f, (d_f, i_f) = _timed(lambda: index_l2.search(queries, _K))
    _compare("L2", d_f, i_f, dist, ids)
    d_ip, i_ip = index_ip.search(queries, _K)
    s_j, i_j = (np.asarray(a) for a in jax_search("dot"))
    _compare("inner product", d_ip, i_ip, s_j, i_j)
    threads = faiss.omp_get_max_threads()
    print(
        f"  faiss IndexPQ (L2, {threads} threads): {nq / wall_f:10.1f} queries/s  "
        f"(cpu {cpu_f:.2f} s)"
    )
    print(
        f"  ratio jaxemb / faiss: {wall_f / wall_j:.2f}x queries/s (target >= 0.8), "
        f"{cpu_f / cpu_j:.2f}x by CPU seconds"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 vectors and 200 queries")
    parser.add_argument("--faiss-threads", type=int, default=None, help="faiss OpenMP threads")
    args = parser.parse_args()
    run(args.quick, faiss_threads=args.faiss_threads)


if __name__ == "__main__":
    main()
