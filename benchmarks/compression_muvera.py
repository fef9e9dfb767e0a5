"""MUVERA: FDE-only and FDE + MaxSim re-rank recall against exact MaxSim, by FDE dimension.

A planted multi-vector corpus (no download, seeded): a vocabulary of unit 128-d "concept"
vectors; each document holds 16-32 tokens, noisy copies of concepts drawn from two of 64
topics (so documents share tokens and compete); each query holds 12 tokens: 6 noisy copies of
tokens of its target document and 6 tokens from its target's topics. Exact MaxSim
(:func:`jaxemb.retrieval.maxsim`, the brute-force baseline, timed in the same run) ranks the
corpus; then for every FDE configuration (``num_simhash_projections=4``,
``projection_dimension=16``, ``fill_empty_partitions=True`` and ``num_repetitions`` growing, so
the FDE dimension doubles; then ``R=8`` with ``k_sim`` 2 and 6; the full run adds the paper's
``k_sim=5, R=20`` and its final count-sketch projection) it prints:

- ``fde@10``: recall@10 of the FDE inner-product top-10 against the exact MaxSim top-10;
- ``top1 in fde@100``: how often the exact MaxSim top-1 is in the FDE top-100 (the paper's
  Recall@N);
- ``rerank@10``: recall@10 of :func:`jaxemb.retrieval.muvera_search` (FDE top-100 shortlist,
  then exact MaxSim) against the exact top-10, and how often its top-1 is the exact top-1;
- ``err/|Q|``: the mean additive error ``(Chamfer - <F_q, F_d> / R) / |Q|`` over each query's
  exact top-10 and 10 random documents; ``rho``: the mean per-query Spearman correlation of
  FDE scores with MaxSim over the whole corpus;
- the time per query of the FDE search + re-rank as a fraction of exact MaxSim over the corpus
  (document encoding is done once, offline, and timed separately).

    python -P benchmarks/compression_muvera.py            # N=20,000 documents, 500 queries
    python -P benchmarks/compression_muvera.py --quick    # N=2,000, 100 queries

(``-P``: benchmarks/compression.py must not shadow the ``compression`` module jax imports.)
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from jaxemb.retrieval import MuveraConfig, maxsim, muvera_fde, muvera_search, search

_DIM, _TD, _TQ, _TOPICS = 128, 32, 12, 64


def _median_time(fn, reps: int = 3):
    out = jax.block_until_ready(fn())  # compile / warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _noisy(rng, x, sigma):
    """Unit rows of ``x`` plus isotropic noise of norm about ``sigma``."""
    return _unit(x + sigma * rng.standard_normal(x.shape) / np.sqrt(_DIM))


def planted_corpus(n_docs: int, n_queries: int, seed: int = 0):
    """(q, q_mask, d, d_mask, target): float32 unit tokens, zero padding, boolean masks."""
    rng = np.random.default_rng(seed)
    per_topic = 32
    vocab = _unit(rng.standard_normal((_TOPICS, per_topic, _DIM)))
    topics = np.stack([rng.choice(_TOPICS, 2, replace=False) for _ in range(n_docs)])
    lengths = rng.integers(16, _TD + 1, n_docs)
    d_mask = np.arange(_TD)[None, :] < lengths[:, None]
    pick_topic = np.take_along_axis(topics, rng.integers(0, 2, (n_docs, _TD)), axis=1)
    d = vocab[pick_topic, rng.integers(0, per_topic, (n_docs, _TD))]
    d = _noisy(rng, d, 0.5)
    d = np.where(d_mask[..., None], d, 0.0).astype(np.float32)
    target = rng.choice(n_docs, n_queries, replace=False)
    q = np.zeros((n_queries, _TQ, _DIM), np.float32)
    for i, t in enumerate(target):
        own = rng.choice(np.flatnonzero(d_mask[t]), _TQ // 2, replace=False)
        q[i, : _TQ // 2] = _noisy(rng, d[t, own], 0.5)
        tp = topics[t, rng.integers(0, 2, _TQ - _TQ // 2)]
        generic = vocab[tp, rng.integers(0, per_topic, _TQ - _TQ // 2)]
        q[i, _TQ // 2 :] = _noisy(rng, generic, 0.5)
    q_mask = np.ones((n_queries, _TQ), bool)
    return q, q_mask, d, d_mask, target


def _recall(got, want):
    k = want.shape[1]
    return float(np.mean([len(set(a[:k]) & set(b)) / k for a, b in zip(got, want)]))


def _spearman_rows(a, b):
    ra = np.argsort(np.argsort(a, axis=1), axis=1).astype(np.float64)
    rb = np.argsort(np.argsort(b, axis=1), axis=1).astype(np.float64)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    return float(np.mean((ra * rb).sum(1) / np.sqrt((ra**2).sum(1) * (rb**2).sum(1))))


def run(quick: bool) -> None:
    """Prints recall@10 (FDE only, FDE + MaxSim re-rank) and the Chamfer error per FDE width."""
    n_docs, n_q = (2_000, 100) if quick else (20_000, 500)
    reps = (1, 2, 4, 8, 16) if quick else (1, 2, 4, 8, 16, 32)
    configs = [
        MuveraConfig(
            dimension=_DIM,
            num_repetitions=r,
            num_simhash_projections=4,
            projection_dimension=16,
            fill_empty_partitions=True,
        )
        for r in reps
    ]
    # the partition's fineness at a fixed R: the bias of the estimate (err/|Q|) falls with k_sim
    configs += [
        MuveraConfig(
            dimension=_DIM,
            num_repetitions=8,
            num_simhash_projections=ks,
            projection_dimension=16,
            fill_empty_partitions=True,
        )
        for ks in (2, 6)
    ]
    if not quick:
        paper = dict(
            dimension=_DIM,
            num_repetitions=20,
            num_simhash_projections=5,
            projection_dimension=16,
            fill_empty_partitions=True,
        )
        configs += [MuveraConfig(**paper), MuveraConfig(**paper, final_projection_dimension=2048)]
    q, qm, d, dm, target = planted_corpus(n_docs, n_q)
    q_dev, qm_dev, d_dev, dm_dev = (jax.device_put(x) for x in (q, qm, d, dm))
    print(f"devices: {jax.devices()}")
    print(
        f"planted corpus: N={n_docs:,} documents x 16-{_TD} tokens, {n_q} queries x {_TQ} "
        f"tokens, dim {_DIM}; k=10, re-rank shortlist 100"
    )

    t_exact, exact = _median_time(lambda: maxsim(q_dev, qm_dev, d_dev, dm_dev))
    exact = np.asarray(exact, np.float64)
    exact_top = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    print(
        f"exact MaxSim: {1e3 * t_exact / n_q:.2f} ms/query; planted target ranked first for "
        f"{np.mean(exact_top[:, 0] == target):.2f} of the queries"
    )
    rng = np.random.default_rng(1)
    pairs = np.concatenate([exact_top, rng.integers(0, n_docs, (n_q, 10))], axis=1)
    n_tok = qm.sum(1)[:, None]

    header = (
        f"{'R':>3} {'k_sim':>5} {'final':>6} {'FDE dim':>8} {'fde@10':>7} {'top1 in fde@100':>16} "
        f"{'rerank@10':>10} {'rerank top1':>11} {'err/|Q|':>8} {'rho':>6} "
        f"{'encode us/doc':>13} {'query time / exact':>19}"
    )
    print(header)
    for cfg in configs:
        t_enc, d_fde = _median_time(
            lambda cfg=cfg: muvera_fde(d_dev, dm_dev, config=cfg, kind="document"), reps=1
        )
        q_fde = muvera_fde(q_dev, qm_dev, config=cfg, kind="query")
        fde_scores = np.asarray(q_fde, np.float64) @ np.asarray(d_fde, np.float64).T
        _, fde_top = search(q_fde, d_fde, 100, metric="dot")
        fde_top = np.asarray(fde_top)
        top1_in = float(np.mean([exact_top[i, 0] in fde_top[i] for i in range(n_q)]))

        def pipeline(cfg=cfg, d_fde=d_fde):
            return muvera_search(
                q_dev, qm_dev, d_dev, dm_dev, 10, config=cfg, candidates=100, d_fde=d_fde
            )

        t_q, (_, ids) = _median_time(pipeline)
        ids = np.asarray(ids)
        est = np.take_along_axis(fde_scores, pairs, 1) / cfg.num_repetitions
        err = float(np.mean((np.take_along_axis(exact, pairs, 1) - est) / n_tok))
        print(
            f"{cfg.num_repetitions:>3} {cfg.num_simhash_projections:>5} "
            f"{cfg.final_projection_dimension or '-':>6} {cfg.output_dimension:>8} "
            f"{_recall(fde_top[:, :10], exact_top):>7.3f} {top1_in:>16.3f} "
            f"{_recall(ids, exact_top):>10.3f} {np.mean(ids[:, 0] == exact_top[:, 0]):>11.3f} "
            f"{err:>8.3f} {_spearman_rows(fde_scores, exact):>6.3f} "
            f"{1e6 * t_enc / n_docs:>13.1f} {t_q / t_exact:>19.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=2,000 and 100 queries")
    run(parser.parse_args().quick)


if __name__ == "__main__":
    main()
