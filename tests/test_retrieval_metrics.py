"""retrieval_metrics / evaluate_retrieval / sts_spearman against trec_eval semantics and scipy."""

import functools
import math
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jaxemb.retrieval import evaluate_retrieval, retrieval_metrics, search, sts_spearman

# Output of pytrec_eval-terrier 0.5.11 (trec_eval 9.0.x) for ndcg_cut, P, recall, map_cut
# and recip_rank on _RUN and _QRELS below (q4 has no qrels, q3 no run: both absent).
_QRELS = {
    "q1": {"a": 1, "b": 2, "c": 0, "z": 3},
    "q2": {"a": 0},
    "q3": {"x": 1},
    "q5": {"a": -1, "b": 1, "10": 2, "9": 1},
}
_RUN = {
    "q1": {"a": 1.0, "b": 1.0, "c": 0.5, "d": 0.9},
    "q2": {"a": 1.0},
    "q4": {"a": 1.0},
    "q5": {"a": 2.0, "b": 1.0, "10": 0.5, "9": 0.5},
}
_PYTREC = {
    "q1": {
        "P_1": 1.0, "P_2": 1.0, "P_3": 0.6666666666666666, "P_10": 0.2,
        "map_cut_1": 0.3333333333333333, "map_cut_2": 0.6666666666666666,
        "map_cut_3": 0.6666666666666666, "map_cut_10": 0.6666666666666666,
        "ndcg_cut_1": 0.6666666666666666, "ndcg_cut_2": 0.617319681505689,
        "ndcg_cut_3": 0.5525004989384911, "ndcg_cut_10": 0.5525004989384911,
        "recall_1": 0.3333333333333333, "recall_2": 0.6666666666666666,
        "recall_3": 0.6666666666666666, "recall_10": 0.6666666666666666,
        "recip_rank": 1.0,
    },
    "q2": {name: 0.0 for name in ("P", "map_cut", "ndcg_cut", "recall")},
    "q5": {
        "P_1": 0.0, "P_2": 0.5, "P_3": 0.6666666666666666, "P_10": 0.3,
        "map_cut_1": 0.0, "map_cut_2": 0.16666666666666666,
        "map_cut_3": 0.38888888888888884, "map_cut_10": 0.6388888888888888,
        "ndcg_cut_1": 0.0, "ndcg_cut_2": 0.23981246656813146,
        "ndcg_cut_3": 0.36121211352040195, "ndcg_cut_10": 0.6363230818084125,
        "recall_1": 0.0, "recall_2": 0.3333333333333333,
        "recall_3": 0.6666666666666666, "recall_10": 1.0,
        "recip_rank": 0.5,
    },
}  # fmt: skip
_NAMES = {"ndcg": "ndcg_cut", "precision": "P", "recall": "recall", "map": "map_cut"}


def test_matches_pytrec_eval_fixture():
    ks = (1, 2, 3, 10)
    means, per = retrieval_metrics(_RUN, _QRELS, ks, per_query=True)
    assert set(per) == {"q1", "q2", "q5"}
    for q, ref in _PYTREC.items():
        for ours, theirs in _NAMES.items():
            for k in ks:
                want = ref.get(f"{theirs}_{k}", ref.get(theirs))
                assert per[q][f"{ours}@{k}"] == pytest.approx(want, abs=1e-12), (q, ours, k)
    # q1 and q5 have their first relevant doc at ranks 1 and 2 (recip_rank 1.0 and 0.5)
    assert per["q1"]["mrr@1"] == 1.0 and per["q5"]["mrr@1"] == 0.0 and per["q5"]["mrr@2"] == 0.5
    for name in ("ndcg@10", "precision@3", "map@2", "mrr@10"):
        assert means[name] == pytest.approx(np.mean([per[q][name] for q in per]), abs=1e-15)


def test_hand_computed_ties_and_graded_labels():
    # q: d1 0.9, then d2 and d3 tie at 0.8 -> trec_eval puts the larger doc id first: d3, d2.
    run = {"q": {"d1": 0.9, "d2": 0.8, "d3": 0.8}}
    qrels = {"q": {"d2": 2, "d3": 1, "d4": 1}}
    per = retrieval_metrics(run, qrels, ks=(1, 2, 3, 5), per_query=True)[1]["q"]
    dcg3 = 1 / math.log2(3) + 2 / math.log2(4)  # gains rel, discount log2(rank + 1)
    idcg3 = 2 + 1 / math.log2(3) + 1 / math.log2(4)
    assert per["ndcg@3"] == pytest.approx(dcg3 / idcg3, abs=1e-12)
    assert per["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (2 + 1 / math.log2(3)), abs=1e-12)
    assert per["ndcg@1"] == 0.0
    assert per["precision@5"] == pytest.approx(2 / 5)  # divides by k with 3 docs retrieved
    assert per["recall@3"] == pytest.approx(2 / 3)  # d4 is relevant and never retrieved
    assert per["map@3"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert per["mrr@1"] == 0.0 and per["mrr@3"] == 0.5


def test_ties_broken_by_doc_id_descending_as_strings():
    # strcmp order: "9" > "10", so "9" ranks first among equal scores.
    per = retrieval_metrics({"q": {"10": 1.0, "9": 1.0}}, {"q": {"10": 1}}, ks=(1,))
    assert per["precision@1"] == 0.0
    per = retrieval_metrics({"q": {10: 1.0, 9: 1.0}}, {"q": {9: 1}}, ks=(1,))
    assert per["precision@1"] == 1.0


def test_query_selection_rules():
    qrels = {"a": {"x": 1}, "b": {}, "c": {"x": 0}, "d": {"x": -1, "y": 0}, "e": {"x": 1}}
    run = {"a": {}, "b": {"x": 1.0}, "c": {"x": 1.0}, "d": {"x": 1.0}, "zzz": {"x": 1.0}}
    means, per = retrieval_metrics(run, qrels, ks=(1, 5), per_query=True)
    # empty qrels (b), no qrels (zzz) and no run (e) are not evaluated
    assert set(per) == {"a", "c", "d"}
    for q in ("a", "c", "d"):  # empty run, all-zero judgements, negative judgements: all 0
        assert all(v == 0.0 for v in per[q].values()), per[q]
    assert means["ndcg@5"] == 0.0
    with pytest.raises(ValueError, match="no query of run"):
        retrieval_metrics({"zzz": {"x": 1.0}}, qrels)


def _ref_trec(run, qrels, ks):
    """Independent transcription of trec_eval's loops (comparator sort, cutoff walk)."""

    def comp(x, y):  # comp_sim_docno
        if x[1] != y[1]:
            return -1 if x[1] > y[1] else 1
        bx, by = x[0].encode(), y[0].encode()
        return (by > bx) - (by < bx)

    out = {}
    for q, docs in run.items():
        if not qrels.get(q):
            continue
        ranked = sorted(docs.items(), key=functools.cmp_to_key(comp))
        rel = [qrels[q].get(d, -1) for d, _ in ranked]
        levels = sorted((r for r in qrels[q].values() if r >= 1), reverse=True)
        num_rel = len(levels)
        res = {}
        for k in ks:
            hits = [1 if i < len(rel) and rel[i] >= 1 else 0 for i in range(k)]
            res[f"precision@{k}"] = sum(hits) / k
            res[f"recall@{k}"] = sum(hits) / num_rel if num_rel else 0.0
            ap = sum(np.cumsum(hits)[i] / (i + 1) for i in range(k) if hits[i])
            res[f"map@{k}"] = ap / num_rel if num_rel else 0.0
            res[f"mrr@{k}"] = 1.0 / (hits.index(1) + 1) if 1 in hits else 0.0
            disc = 1.0 / np.log2(np.arange(2, k + 2))
            g = np.array([max(r, 0) if i < len(rel) else 0 for i, r in enumerate(rel[:k])])
            dcg = float(np.sum(g * disc[: len(g)]))
            ideal = np.array(levels[:k], float)
            idcg = float(np.sum(ideal * disc[: len(ideal)]))
            res[f"ndcg@{k}"] = dcg / idcg if idcg > 0 else 0.0
        out[q] = res
    return out


def test_random_runs_match_independent_reference():
    rnd = random.Random(0)
    ks = (1, 3, 10, 25)
    for _ in range(40):
        docs = [f"d{i}" for i in range(rnd.randint(1, 30))] + [str(i) for i in range(12)]
        run, qrels = {}, {}
        for q in range(6):
            sub = rnd.sample(docs, rnd.randint(0, len(docs)))
            run[f"q{q}"] = {d: rnd.choice([0.1, 0.5, 1.0, -2.0, rnd.random()]) for d in sub}
            sub = rnd.sample(docs + ["unseen"], rnd.randint(1, 10))
            qrels[f"q{q}"] = {d: rnd.choice([-1, 0, 0, 1, 2, 3]) for d in sub}
        means, per = retrieval_metrics(run, qrels, ks, per_query=True)
        ref = _ref_trec(run, qrels, ks)
        assert set(per) == set(ref)
        for q in ref:
            for name, want in ref[q].items():
                assert per[q][name] == pytest.approx(want, abs=1e-12), (q, name)


def test_validation_errors():
    with pytest.raises(ValueError, match="ks must be positive integers"):
        retrieval_metrics(_RUN, _QRELS, ks=(0, 5))
    with pytest.raises(ValueError, match="ks must hold at least one"):
        retrieval_metrics(_RUN, _QRELS, ks=())
    with pytest.raises(ValueError, match=r"qrels\['q'\]\['d'\] must be an integer"):
        retrieval_metrics({"q": {"d": 1.0}}, {"q": {"d": 1.5}})
    with pytest.raises(ValueError, match="must not be NaN"):
        retrieval_metrics({"q": {"d": float("nan")}}, {"q": {"d": 1}})
    with pytest.raises(ValueError, match="run must map"):
        retrieval_metrics([("q", {})], {"q": {"d": 1}})


def test_evaluate_retrieval_glues_search_and_metrics(rng):
    corpus = rng.integers(-2, 3, (40, 5)).astype(np.float32)
    queries = rng.integers(-2, 3, (6, 5)).astype(np.float32)
    doc_ids = [f"doc{i}" for i in range(40)]
    qids = [f"query{i}" for i in range(6)]
    qrels = {q: {doc_ids[(3 * i + j) % 40]: j % 3 for j in range(5)} for i, q in enumerate(qids)}
    qrels["query0"]["not_in_corpus"] = 2
    qrels["query1"]["also_missing"] = 1
    qrels["unrelated"] = {"doc1": 1, "nowhere": 1}  # not among query_ids: not counted
    ks = (1, 5, 50)  # 50 > corpus size: search retrieves all 40 docs
    for metric in ("dot", "l2"):
        res, per = evaluate_retrieval(
            queries,
            corpus,
            qrels,
            query_ids=qids,
            doc_ids=doc_ids,
            ks=ks,
            metric=metric,
            per_query=True,
        )
        scores, idx = search(queries, corpus, 40, metric=metric)
        sign = -1.0 if metric == "l2" else 1.0
        run = {
            q: {
                doc_ids[j]: sign * float(s)
                for j, s in zip(np.asarray(idx[i]), np.asarray(scores[i]), strict=True)
            }
            for i, q in enumerate(qids)
        }
        ref = _ref_trec(run, qrels, ks)
        assert res["unknown_docs"] == 2 and res["num_queries"] == 6
        for name in ref["query0"]:
            assert res[name] == pytest.approx(np.mean([ref[q][name] for q in ref]), abs=1e-12)
            for q in ref:
                assert per[q][name] == pytest.approx(ref[q][name], abs=1e-12)
    # default ids are "0", "1", ... and int keys in qrels are compared as strings
    res = evaluate_retrieval(queries, corpus, {0: {5: 1}, 3: {7: 2}}, ks=(40,))
    assert res["num_queries"] == 2 and res["recall@40"] == 1.0
    with pytest.raises(ValueError, match=r"doc_ids must hold one id per row of corpus_emb"):
        evaluate_retrieval(queries, corpus, qrels, doc_ids=doc_ids[:-1])
    with pytest.raises(ValueError, match="query_ids must be unique"):
        evaluate_retrieval(queries, corpus, qrels, query_ids=["a"] * 6)
    with pytest.raises(ValueError, match="corpus_emb"):
        evaluate_retrieval(queries, corpus[:, :4], qrels)


def _cos(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_sts_spearman_matches_scipy_with_ties(rng):
    a = rng.standard_normal((60, 8)).astype(np.float32)
    b = a + rng.standard_normal((60, 8)).astype(np.float32)
    b[10] = b[11] = a[10] = a[11] = np.ones(8, np.float32)  # tied cosines (exactly 1)
    b[12] = a[12] = 2 * np.ones(8, np.float32)
    gold = rng.integers(0, 6, 60).astype(np.float32)  # many ties in the gold scores
    got = float(sts_spearman(a, b, gold))
    want = scipy.stats.spearmanr(_cos(a, b), gold).statistic
    assert got == pytest.approx(want, abs=1e-5)
    assert float(jax.jit(sts_spearman)(a, b, gold)) == pytest.approx(want, abs=1e-5)
    # integer gold labels work too
    assert float(sts_spearman(a, b, gold.astype(np.int32))) == pytest.approx(want, abs=1e-5)


def test_sts_spearman_hand_computed():
    # cos = [1, 0.8, 0.6, 0.6] -> ranks [4, 3, 1.5, 1.5]; gold ranks [1, 2, 3.5, 3.5] -> -1.
    a = jnp.array([[1.0, 0.0]] * 4)
    b = jnp.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.6, 0.8]])
    assert float(sts_spearman(a, b, jnp.array([0.0, 1.0, 2.0, 2.0]))) == pytest.approx(-1.0)


def test_sts_spearman_validation(rng):
    a = rng.standard_normal((5, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"b must have the same shape as a \[5, 3\]"):
        sts_spearman(a, a[:4], np.arange(5.0))
    with pytest.raises(ValueError, match=r"gold must have shape \[5\]"):
        sts_spearman(a, a, np.arange(4.0))
    with pytest.raises(ValueError, match="at least 2 pairs"):
        sts_spearman(a[:1], a[:1], np.arange(1.0))
