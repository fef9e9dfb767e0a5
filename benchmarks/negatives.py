"""Hard-negative mining cost: ``mine_hard_negatives`` vs the exact search it needs (a script).

Mines ``num_negatives`` negatives for every anchor over a random float32 corpus with
precomputed embeddings (the full default: 10,000 anchors over 1,000,000 x 256, ~5 GB of RAM)
and prints the ratio of the whole mining call to the exact top-k search inside it (the same
``jaxemb.retrieval.search`` call, timed alone in the same run): the bookkeeping (deduplication,
filters, ranking, output columns) must keep it at most 1.2. When sentence-transformers and
faiss are importable, it also times ``sentence_transformers.util.mine_hard_negatives(...,
use_faiss=True)`` on the same embeddings (a stub model serving them) and prints jaxemb's speed
relative to it, after checking that both chose the same negatives.

    python benchmarks/negatives.py                                    # full size
    python benchmarks/negatives.py --anchors 2000 --corpus 100000     # quick
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from jaxemb.negatives import mine_hard_negatives
from jaxemb.retrieval import search


def _sentence_transformers_run(anchors, positives, corpus_texts, table_q, table_c, num_negatives):
    import torch
    from datasets import Dataset
    from sentence_transformers.util import cos_sim, pairwise_cos_sim
    from sentence_transformers.util import mine_hard_negatives as st_mine

    index = {t: i for i, t in enumerate(corpus_texts)}
    q_index = {t: i for i, t in enumerate(anchors)}

    class Stub:  # serves the precomputed (unit) embeddings as a SentenceTransformer would
        device = torch.device("cpu")

        class model_card_data:
            base_model = "benchmark"

        def encode_document(self, texts, **kwargs):
            return table_c[[index[t] for t in texts]]

        def encode_query(self, texts, **kwargs):
            return table_q[[q_index[t] for t in texts]]

        def similarity(self, a, b):
            return cos_sim(torch.as_tensor(a), torch.as_tensor(b))

        def similarity_pairwise(self, a, b):
            return pairwise_cos_sim(torch.as_tensor(a), torch.as_tensor(b))

        def get_embedding_dimension(self):
            return table_c.shape[1]

    ds = Dataset.from_dict({"anchor": anchors, "positive": positives})
    start = time.perf_counter()
    out = st_mine(
        ds,
        Stub(),
        corpus=corpus_texts,
        num_negatives=num_negatives,
        output_format="n-tuple",
        use_faiss=True,
        verbose=False,
    )
    return time.perf_counter() - start, out


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchors", type=int, default=10_000)
    parser.add_argument("--corpus", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--num-negatives", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((args.corpus, args.dim), dtype=np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    pos_rows = rng.choice(args.corpus, args.anchors, replace=False)
    queries = corpus[pos_rows] + 0.8 * rng.standard_normal((args.anchors, args.dim), np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    corpus_texts = [f"doc {i}" for i in range(args.corpus)]
    anchors = [f"query {i}" for i in range(args.anchors)]
    positives = [corpus_texts[j] for j in pos_rows]
    k = args.num_negatives + 1 + 1 + 1  # range_max + max_positives + 1, as mining asks

    def run_search():
        # the call mining makes: cosine similarity (rows normalised on the fly)
        return jax.block_until_ready(
            search(queries, corpus, k, metric="cosine", check_finite=False)
        )

    def run_mine():
        return mine_hard_negatives(
            anchors,
            positives,
            corpus=corpus_texts,
            anchor_embeddings=queries,
            corpus_embeddings=corpus,
            num_negatives=args.num_negatives,
            output_format="n-tuple",
            verbose=False,
        )

    run_search()  # compile
    t_search = _median_time(run_search, args.reps)
    t_mine = _median_time(run_mine, args.reps)
    mined = run_mine()
    print(f"devices: {jax.devices()}")
    print(
        f"anchors={args.anchors} corpus={args.corpus} dim={args.dim} k={k} "
        f"num_negatives={args.num_negatives}"
    )
    print(f"exact search alone:        {t_search:8.2f} s (median of {args.reps})")
    print(f"mine_hard_negatives:       {t_mine:8.2f} s")
    print(f"ratio mining / search: {t_mine / t_search:.3f} (target <= 1.2)")

    try:
        import faiss  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        print("sentence-transformers / faiss not importable: the comparison line is skipped")
        return
    t_st, st_out = _sentence_transformers_run(
        anchors, positives, corpus_texts, queries, corpus, args.num_negatives
    )
    st_cols = st_out.to_dict()
    same = np.mean(
        [
            st_cols[f"negative_{i}"] == mined[f"negative_{i}"]
            for i in range(1, args.num_negatives + 1)
        ]
    )
    print(f"sentence-transformers mine_hard_negatives(use_faiss=True): {t_st:8.2f} s")
    print(f"speed jaxemb / sentence-transformers: {t_st / t_mine:.2f}x; same negatives: {same:.4f}")


if __name__ == "__main__":
    main()
