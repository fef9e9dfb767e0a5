"""Retrieval metrics with trec_eval semantics, the search + metrics glue, and STS Spearman.

``retrieval_metrics`` reproduces trec_eval 9.0.x (``form_res_rels.c``, ``m_ndcg_cut.c``,
``m_P.c``, ``m_recall.c``, ``m_map_cut.c``, ``m_recip_rank.c``), so its numbers equal
pytrec_eval's ``ndcg_cut_k``, ``P_k``, ``recall_k``, ``map_cut_k`` and, for ``mrr@k``,
``recip_rank`` on the run cut to its top k:

* a query's documents are ranked by score descending, ties broken by doc id in *descending*
  byte order (trec_eval's ``comp_sim_docno``: ``strcmp(p2->docno, p1->docno)``);
* ids are compared as strings (``str(id)``), as trec_eval reads them from text;
* a document is relevant when its qrels relevance is ``>= 1``; documents missing from the qrels
  and negative relevances (trec_eval's "unjudged in pool") count as non-relevant;
* nDCG@k: ``Σ_{i<k} rel_i / log2(i + 2)`` over the ranking (gain = relevance, not
  ``2^rel - 1``), divided by the same sum over the qrels' positive relevances sorted
  descending; 0 when the query has no positive relevance;
* P@k divides by k even when fewer than k documents were retrieved; recall@k and map@k divide
  by the number of relevant documents in the qrels (also those never retrieved) and are 0 for a
  query without relevant documents; mrr@k is ``1 / rank`` of the first relevant document within
  the top k, else 0;
* evaluated queries are those in both ``run`` and ``qrels`` with at least one judgement
  (pytrec_eval skips the rest); a query with judgements but an empty run scores 0; the mean is
  over the evaluated queries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.typing import ArrayLike

from jaxemb._numerics import propagate_nan
from jaxemb._validate import check_array, check_axis_match, check_same_shape, shape_str
from jaxemb.retrieval._search import search

_MEASURES = ("ndcg", "recall", "precision", "mrr", "map")


def _check_ks(ks: Any) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool):
        ks = (ks,)
    try:
        values = list(ks)
    except TypeError:
        raise ValueError(f"ks must be a sequence of positive integers; got {ks!r}") from None
    if not values:
        raise ValueError("ks must hold at least one cutoff; got an empty sequence")
    for k in values:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"ks must be positive integers; got {list(ks)!r}")
    return tuple(sorted({int(k) for k in values}))


def _check_relevance(rel: Any, qid: str, doc: str) -> int:
    if isinstance(rel, bool) or not isinstance(rel, (int, np.integer)):
        raise ValueError(f"qrels[{qid!r}][{doc!r}] must be an integer relevance grade; got {rel!r}")
    return int(rel)


def _check_score(score: Any, qid: str, doc: str) -> float:
    try:
        value = float(score)
    except (TypeError, ValueError):
        raise ValueError(f"run[{qid!r}][{doc!r}] must be a number; got {score!r}") from None
    if math.isnan(value):
        raise ValueError(f"run[{qid!r}][{doc!r}] must not be NaN")
    return value


def _normalise_qrels(qrels: Any) -> dict[str, dict[str, int]]:
    if not isinstance(qrels, Mapping):
        raise ValueError(
            f"qrels must map query id -> {{doc id: relevance}}; got {type(qrels).__name__}"
        )
    out: dict[str, dict[str, int]] = {}
    for qid, docs in qrels.items():
        q = str(qid)
        if not isinstance(docs, Mapping):
            raise ValueError(
                f"qrels[{q!r}] must map doc id -> relevance; got {type(docs).__name__}"
            )
        if q in out:
            raise ValueError(f"qrels has query id {q!r} twice (ids are compared as strings)")
        judged: dict[str, int] = {}
        for doc, rel in docs.items():
            d = str(doc)
            if d in judged:
                raise ValueError(f"qrels[{q!r}] has doc id {d!r} twice")
            judged[d] = _check_relevance(rel, q, d)
        out[q] = judged
    return out


def _ranked_docs(qid: str, docs: Any) -> list[str]:
    """Doc ids by score descending, ties by doc id descending (trec_eval's comp_sim_docno)."""
    if not isinstance(docs, Mapping):
        raise ValueError(f"run[{qid!r}] must map doc id -> score; got {type(docs).__name__}")
    items: dict[bytes, float] = {}
    for doc, score in docs.items():
        key = str(doc).encode("utf-8")
        if key in items:
            raise ValueError(f"run[{qid!r}] has doc id {str(doc)!r} twice")
        items[key] = _check_score(score, qid, str(doc))
    order = sorted(items, reverse=True)  # doc id descending (strcmp order on bytes) ...
    order.sort(key=lambda d: -items[d])  # ... then stably by score descending
    return [d.decode("utf-8") for d in order]


def _query_metrics(ranked: list[str], judged: dict[str, int], ks: tuple[int, ...]):
    rels = [judged.get(d, 0) for d in ranked]
    is_rel = [r >= 1 for r in rels]
    num_rel = sum(1 for r in judged.values() if r >= 1)
    ideal = sorted((r for r in judged.values() if r > 0), reverse=True)
    out: dict[str, float] = {}
    for k in ks:
        top_rels = rels[:k]
        top_hit = is_rel[:k]
        dcg = sum(r / math.log2(i + 2) for i, r in enumerate(top_rels) if r > 0)
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal[:k]))
        hits = sum(top_hit)
        ap = 0.0
        so_far = 0
        first = 0
        for i, hit in enumerate(top_hit):
            if hit:
                so_far += 1
                ap += so_far / (i + 1)
                if not first:
                    first = i + 1
        out[f"ndcg@{k}"] = dcg / idcg if idcg > 0 else 0.0
        out[f"recall@{k}"] = hits / num_rel if num_rel else 0.0
        out[f"precision@{k}"] = hits / k
        out[f"mrr@{k}"] = 1.0 / first if first else 0.0
        out[f"map@{k}"] = ap / num_rel if num_rel else 0.0
    return out


def _metric_names(ks: tuple[int, ...]) -> list[str]:
    return [f"{m}@{k}" for m in _MEASURES for k in ks]


def retrieval_metrics(
    run: Mapping[Any, Mapping[Any, float]],
    qrels: Mapping[Any, Mapping[Any, int]],
    ks: Sequence[int] = (1, 10, 100),
    *,
    per_query: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, dict[str, float]]]:
    """nDCG, recall, precision, MRR and MAP at cutoffs, with trec_eval semantics.

    The rules (tie order, relevance threshold, which queries count) are listed in this module's
    docstring; the values equal pytrec_eval's for the same run and qrels.

    Args:
      run: query id -> {doc id: score}; larger scores rank first.
      qrels: query id -> {doc id: graded relevance (int)}; ``>= 1`` is relevant.
      ks: cutoffs, positive integers.
      per_query: also return the per-query values.

    Returns:
      ``{"ndcg@k", "recall@k", "precision@k", "mrr@k", "map@k"}`` for every k in ``ks``, each
      the mean over the evaluated queries (queries in both ``run`` and ``qrels`` with at least
      one judgement). With ``per_query=True`` a pair ``(means, {query id: {name: value}})``
      with query ids as strings.

    Raises:
      ValueError: on malformed mappings, non-integer relevance, NaN scores, duplicate ids,
        bad cutoffs, or when no query of ``run`` has judgements in ``qrels``.

    Examples:
      >>> from jaxemb.retrieval import retrieval_metrics
      >>> run = {"q1": {"d1": 0.9, "d2": 0.8, "d3": 0.8}, "q2": {"d1": 0.5}}
      >>> qrels = {"q1": {"d2": 2, "d3": 1, "d4": 1}, "q2": {"d1": 0}}
      >>> m = retrieval_metrics(run, qrels, ks=(1, 3))
      >>> {name: round(m[name], 4) for name in ("ndcg@3", "recall@3", "precision@1", "mrr@3")}
      {'ndcg@3': 0.2605, 'recall@3': 0.3333, 'precision@1': 0.0, 'mrr@3': 0.25}

    References:
      trec_eval 9.0.x (usnistgov/trec_eval) and its Python binding pytrec_eval
      (Van Gysel & de Rijke, SIGIR 2018); nDCG: Järvelin & Kekäläinen, ACM TOIS 2002.
    """
    ks = _check_ks(ks)
    if not isinstance(run, Mapping):
        raise ValueError(f"run must map query id -> {{doc id: score}}; got {type(run).__name__}")
    judged = _normalise_qrels(qrels)
    values: dict[str, dict[str, float]] = {}
    seen: set[str] = set()
    for qid, docs in run.items():
        q = str(qid)
        if q in seen:
            raise ValueError(f"run has query id {q!r} twice (ids are compared as strings)")
        seen.add(q)
        ranked = _ranked_docs(q, docs)
        if judged.get(q):
            values[q] = _query_metrics(ranked, judged[q], ks)
    if not values:
        raise ValueError(
            f"no query of run ({len(run)} queries) has judgements in qrels "
            f"({len(judged)} queries); check that the query ids match"
        )
    names = _metric_names(ks)
    means = {name: float(np.mean([v[name] for v in values.values()])) for name in names}
    if per_query:
        return means, values
    return means


def evaluate_retrieval(
    query_emb: ArrayLike,
    corpus_emb: ArrayLike,
    qrels: Mapping[Any, Mapping[Any, int]],
    *,
    query_ids: Sequence[Any] | None = None,
    doc_ids: Sequence[Any] | None = None,
    ks: Sequence[int] = (1, 10, 100),
    metric: str = "cosine",
    per_query: bool = False,
    chunk_size: int = 4096,
    mesh: Mesh | None = None,
) -> dict[str, float] | tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Exact search of every query, then :func:`retrieval_metrics` on the top ``max(ks)``.

    The run holds, for each query, its ``min(max(ks), N)`` nearest documents from
    :func:`search` with their scores (for ``l2`` the negative squared distance, so larger is
    better); metrics then follow trec_eval, so equal scores are ordered by doc id descending.

    Args:
      query_emb: [Q, D] query embeddings.
      corpus_emb: [N, D] document embeddings.
      qrels: query id -> {doc id: graded relevance}. Ids are compared as strings.
      query_ids: Q ids, in row order; default ``"0", "1", ...``.
      doc_ids: N unique ids, in row order; default ``"0", "1", ...``.
      ks: cutoffs (positive integers).
      metric: ``"cosine"``, ``"dot"`` or ``"l2"`` (see :func:`search`).
      per_query: also return per-query values, as in :func:`retrieval_metrics`.
      chunk_size: corpus rows scored at a time.
      mesh: optional mesh to shard the corpus over (see :func:`search`).

    Returns:
      The means of :func:`retrieval_metrics` plus ``"unknown_docs"``: how many qrels entries of
      the queries in ``query_ids`` name a doc id that is not in ``doc_ids`` (they still count as
      relevant documents that were never retrieved), and ``"num_queries"``, the number of
      evaluated queries. With ``per_query=True``, the pair ``(that dict, per-query values)``.

    Raises:
      ValueError: on bad embeddings (see :func:`search`), id lists of the wrong length or with
        duplicates, or when no query has judgements.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.retrieval import evaluate_retrieval
      >>> q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> c = jnp.array([[1.0, 0.1], [0.1, 1.0], [0.7, 0.7]])
      >>> qrels = {"a": {"x": 1}, "b": {"z": 1, "y": 1, "missing": 2}}
      >>> r = evaluate_retrieval(q, c, qrels, query_ids=["a", "b"], doc_ids=["x", "y", "z"],
      ...                        ks=(1, 2))
      >>> round(r["recall@2"], 4), r["unknown_docs"], r["num_queries"]
      (0.8333, 1, 2)

    References:
      BEIR's ``EvaluateRetrieval`` (Thakur et al., NeurIPS 2021 Datasets), which runs exact
      search and scores it with pytrec_eval the same way.
    """
    query_emb, corpus_emb = (
        np.asarray(v) if isinstance(v, (list, tuple)) else v for v in (query_emb, corpus_emb)
    )
    check_array(query_emb, "query_emb", ndim=2, kind="float")
    check_array(corpus_emb, "corpus_emb", ndim=2, kind="float")
    check_axis_match(query_emb, "query_emb", 1, corpus_emb, "corpus_emb", 1)
    ks = _check_ks(ks)
    nq, n = query_emb.shape[0], corpus_emb.shape[0]
    qids = _check_ids(query_ids, nq, "query_ids", "query_emb", query_emb)
    dids = _check_ids(doc_ids, n, "doc_ids", "corpus_emb", corpus_emb)
    judged = _normalise_qrels(qrels)
    k = min(ks[-1], n)
    scores, idx = search(query_emb, corpus_emb, k, metric=metric, chunk_size=chunk_size, mesh=mesh)
    scores = np.asarray(scores, np.float64)
    idx = np.asarray(idx)
    if metric == "l2":
        scores = -scores
    run = {
        q: {dids[j]: float(s) for j, s in zip(idx[i], scores[i], strict=True)}
        for i, q in enumerate(qids)
    }
    known = set(dids)
    unknown = sum(1 for q in qids for d in judged.get(q, {}) if d not in known)
    means, values = retrieval_metrics(run, judged, ks, per_query=True)
    result = dict(means)
    result["unknown_docs"] = unknown
    result["num_queries"] = len(values)
    if per_query:
        return result, values
    return result


def _check_ids(ids: Any, count: int, name: str, of: str, arr: Any) -> list[str]:
    if ids is None:
        return [str(i) for i in range(count)]
    ids = [str(i) for i in ids]
    if len(ids) != count:
        raise ValueError(
            f"{name} must hold one id per row of {of} {shape_str(arr)}; got {len(ids)} ids"
        )
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise ValueError(f"{name} must be unique (compared as strings); {dup!r} repeats")
    return ids


def _average_ranks(x: jax.Array) -> jax.Array:
    """1-based ranks, ties given the mean of the ranks they span (scipy's ``rankdata``)."""
    s = jnp.sort(x)
    lo = jnp.searchsorted(s, x, side="left")
    hi = jnp.searchsorted(s, x, side="right")
    return (lo + hi + 1).astype(x.dtype) / 2


@jax.jit
@propagate_nan
def _sts_spearman(a, b, gold):
    dtype = jnp.promote_types(jnp.promote_types(a.dtype, b.dtype), jnp.float32)
    a = a.astype(dtype)
    b = b.astype(dtype)
    eps = 1e-12
    an = a / jnp.maximum(jnp.linalg.norm(a, axis=1, keepdims=True), eps)
    bn = b / jnp.maximum(jnp.linalg.norm(b, axis=1, keepdims=True), eps)
    cos = jnp.sum(an * bn, axis=1)
    ra = _average_ranks(cos)
    rg = _average_ranks(gold.astype(dtype))
    ra = ra - jnp.mean(ra)
    rg = rg - jnp.mean(rg)
    return jnp.sum(ra * rg) / jnp.sqrt(jnp.sum(ra * ra) * jnp.sum(rg * rg))


def sts_spearman(a: ArrayLike, b: ArrayLike, gold: ArrayLike) -> jax.Array:
    """Spearman correlation between ``cos(a_i, b_i)`` and gold similarity scores.

    Ranks use the average rank for ties (as ``scipy.stats.spearmanr``); the correlation is the
    Pearson correlation of the two rank vectors.

    Args:
      a: [N, D] first sentence of each pair.
      b: [N, D] second sentence of each pair.
      gold: [N] gold similarity scores (any real or integer dtype).

    Returns:
      Scalar in [-1, 1] (NaN when either side is constant, as scipy).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.retrieval import sts_spearman
      >>> a = jnp.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
      >>> b = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.2]])
      >>> round(float(sts_spearman(a, b, jnp.array([5.0, 3.0, 0.0, 3.0]))), 4)
      0.9487

    References:
      Reimers & Gurevych, Sentence-BERT (EMNLP 2019): ``EmbeddingSimilarityEvaluator`` reports
      the Spearman correlation of cosine similarities; ``scipy.stats.spearmanr``.
    """
    a, b, gold = (np.asarray(v) if isinstance(v, (list, tuple)) else v for v in (a, b, gold))
    check_array(a, "a", ndim=2, kind="float")
    check_array(b, "b", ndim=2, kind="float")
    check_same_shape(a, "a", b, "b")
    check_array(gold, "gold", ndim=1, kind="number")
    if gold.shape[0] != a.shape[0]:
        raise ValueError(
            f"gold must have shape [{a.shape[0]}] (one score per pair of a {shape_str(a)}); "
            f"got {shape_str(gold)}"
        )
    if a.shape[0] < 2:
        raise ValueError(f"a must hold at least 2 pairs for a correlation; got {shape_str(a)}")
    return _sts_spearman(jnp.asarray(a), jnp.asarray(b), jnp.asarray(gold))
