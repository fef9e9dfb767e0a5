"""Matryoshka funnel search, PCA and LeanVec: recall@10 against exact full-width search, queries/s.

Synthetic data (no download), seeded:

- Funnel: clustered Matryoshka-like embeddings (coordinate scales decay along the width, so a
  prefix is a coarse embedding) with queries near corpus rows, all L2-normalised; cosine.
  Rows: exact full-width :func:`search` (the baseline, recall 1 by definition), a prefix-only
  search per width, and :func:`funnel_search` with a few stage plans.
- Reductions: a corpus and queries from different distributions (queries weigh directions in
  which the corpus varies little, as text queries against image embeddings do); the exact
  neighbours are the full-width inner-product top 10. For each reduced width: PCA (= LeanVec-ID,
  ``A = B`` = the corpus's principal directions) and LeanVec-OOD fitted on a separate query
  sample, searched with ``metric="dot"`` on the projections.

When ``benchmarks/compression.py`` has cached all-MiniLM-L6-v2 embeddings of python_code_search
(``~/.cache/jaxemb/compression/{queries,corpus}.npy``: docstring queries against code, a real
shift between query and document distributions), the reductions also run on them, LeanVec-OOD
fitted on half of the queries and every method scored on the other half.

``fit s`` includes compilation. queries/s is measured on the search alone (the reduction's
projections are precomputed; funnel times include every stage), median of 3 runs after a
warm-up, and printed with its ratio to exact search in the same run. On a loaded machine set
``OPENBLAS_NUM_THREADS=1``: LAPACK's threads (the SVDs of LeanVec-OOD) otherwise contend.

    python benchmarks/compression_reduce.py            # N=100k, D=768
    python benchmarks/compression_reduce.py --quick    # N=10k, D=256
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from jaxemb.retrieval import fit_leanvec, funnel_search, search


def _median_time(fn, reps: int = 3):
    out = jax.block_until_ready(fn())  # compile / warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _recall(ids, exact) -> float:
    ids, exact = np.asarray(ids), np.asarray(exact)
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, exact)]))


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _matryoshka_data(rng, n, nq, d, n_clusters=256):
    scale = 1.0 / np.sqrt(1.0 + np.arange(d) / 8.0)  # variance decays along the width
    centres = rng.standard_normal((n_clusters, d)) * scale
    labels = rng.integers(0, n_clusters, n)
    corpus = centres[labels] + 0.6 * rng.standard_normal((n, d)) * scale
    picks = rng.integers(0, n, nq)
    queries = corpus[picks] + 0.5 * rng.standard_normal((nq, d)) * scale
    return _unit(corpus), _unit(queries)


def _ood_data(rng, n, nq_fit, nq, d):
    rot = np.linalg.qr(rng.standard_normal((d, d)))[0]
    spectrum = 1.0 / np.sqrt(1.0 + np.arange(d))
    data_scale = spectrum  # the corpus varies most along the first directions
    query_scale = spectrum[::-1].copy()  # the queries along the last ones
    query_scale[: d // 2] *= 0.3
    data = (rng.standard_normal((n, d)) * data_scale) @ rot.T
    queries = (rng.standard_normal((nq_fit + nq, d)) * query_scale) @ rot.T
    data, queries = data.astype(np.float32), queries.astype(np.float32)
    return data, queries[:nq_fit], queries[nq_fit:]


def run(quick: bool) -> None:
    """Prints recall@10 and queries/s of funnel stages, PCA and LeanVec-ID/OOD."""
    n, d, nq = (10_000, 256, 500) if quick else (100_000, 768, 2_000)
    k = 10
    rng = np.random.default_rng(0)
    print(f"devices: {jax.devices()}")

    # ------------------------------------------------------------------ funnel
    corpus, queries = _matryoshka_data(rng, n, nq, d)
    corpus, queries = jax.device_put(corpus), jax.device_put(queries)
    t_exact, (_, exact) = _median_time(lambda: search(queries, corpus, k, check_finite=False))
    qps_exact = nq / t_exact
    print(f"\nMatryoshka funnel: N={n} D={d} Q={nq} k={k}, cosine")
    print(f"{'method':44s} {'recall@10':>9s} {'queries/s':>11s} {'vs exact':>8s}")
    print(f"{'exact search, full width':44s} {1.0:9.3f} {qps_exact:11.1f} {1.0:8.2f}")
    for width in (32, 64, d // 2):
        t, (_, ids) = _median_time(
            lambda w=width: search(queries[:, :w], corpus[:, :w], k, check_finite=False)
        )
        name = f"prefix search, width {width}"
        print(f"{name:44s} {_recall(ids, exact):9.3f} {nq / t:11.1f} {t_exact / t:8.2f}")
    plans = [
        ((64, 200), (256, 50), (None, None)),
        ((32, 400), (128, 100), (None, None)),
        ((64, 100), (None, None)),
        ((32, 200), (64, 100), (128, 50), (None, None)),
    ]
    for stages in plans:
        if any(w is not None and w >= d for w, _ in stages):
            continue
        t, (_, ids) = _median_time(lambda s=stages: funnel_search(queries, corpus, k, stages=s))
        name = "funnel " + " ".join(f"({w or d},{c or k})" for w, c in stages)
        print(f"{name:44s} {_recall(ids, exact):9.3f} {nq / t:11.1f} {t_exact / t:8.2f}")

    # ------------------------------------------------------------------ reductions
    data, fit_queries, eval_queries = _ood_data(rng, n, 2_000, nq, d)
    _reductions(f"synthetic OOD queries: N={n} D={d} Q={nq}", data, fit_queries, eval_queries, k)
    cache = Path.home() / ".cache/jaxemb/compression"
    if (cache / "queries.npy").exists() and (cache / "corpus.npy").exists():
        queries, corpus = np.load(cache / "queries.npy"), np.load(cache / "corpus.npy")
        order = np.random.default_rng(1).permutation(len(queries))
        half = len(queries) // 2
        name = f"all-MiniLM-L6-v2 python_code_search: N={len(corpus)} D={corpus.shape[1]}"
        _reductions(name, corpus, queries[order[:half]], queries[order[half:]], k)
    else:
        print(f"\n(real embeddings skipped: benchmarks/compression.py caches them in {cache})")


def _reductions(name, data, fit_queries, eval_queries, k):
    nq, d = len(eval_queries), data.shape[1]
    data_dev, eval_dev = jax.device_put(data), jax.device_put(eval_queries)
    t_exact, (_, exact) = _median_time(
        lambda: search(eval_dev, data_dev, k, metric="dot", check_finite=False)
    )
    qps_exact = nq / t_exact
    print(f"\nLinear reductions, {name}, k={k}, inner product")
    print(f"{'method':44s} {'recall@10':>9s} {'queries/s':>11s} {'vs exact':>8s} {'fit s':>7s}")
    print(f"{'exact search, full width':44s} {1.0:9.3f} {qps_exact:11.1f} {1.0:8.2f} {'':>7s}")
    for dim in (dim for dim in (32, 64, 128) if dim < d):
        for label, kwargs in (
            ("PCA = LeanVec-ID", {"method": "id"}),
            ("LeanVec-OOD", {"method": "ood", "queries": fit_queries}),
        ):
            start = time.perf_counter()
            lv = jax.block_until_ready(fit_leanvec(data, dim=dim, **kwargs))
            t_fit = time.perf_counter() - start
            x = jax.block_until_ready(data_dev @ lv.data_projection)
            q = jax.block_until_ready(eval_dev @ lv.query_projection)
            t, (_, ids) = _median_time(
                lambda q=q, x=x: search(q, x, k, metric="dot", check_finite=False)
            )
            name = f"{label}, dim {dim}"
            print(
                f"{name:44s} {_recall(ids, exact):9.3f} {nq / t:11.1f} {t_exact / t:8.2f} "
                f"{t_fit:7.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=10k, D=256 instead of 100k, 768")
    run(parser.parse_args().quick)


if __name__ == "__main__":
    main()
