"""Offline hard-negative mining with the semantics of sentence-transformers' mine_hard_negatives."""

from __future__ import annotations

import dataclasses
import logging
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxemb import _validate as v
from jaxemb.retrieval import search

_FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")
_STRATEGIES = ("top", "random")
_SIMILARITIES = ("cosine", "dot")
_log = logging.getLogger(__name__)


def _texts(values: Any, name: str) -> list[str]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list of strings; got {type(values).__name__}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} must not be empty; got an empty list")
    for i, t in enumerate(values):
        if not isinstance(t, str):
            raise ValueError(f"{name}[{i}] must be a str; got {type(t).__name__} {t!r:.40}")
    return values


def _optional_number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number or None; got {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return float(value)


def _embedding_matrix(x: Any, name: str, rows: int, what: str) -> np.ndarray:
    x = v.check_array(x, name, ndim=2, kind="float")
    if x.shape[0] != rows:
        raise ValueError(f"{name} must have one row per {what} ({rows}); got {v.shape_str(x)}")
    x = np.asarray(x, np.float32)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise ValueError(f"{name} must be finite; rows {bad[:5].tolist()} hold NaN or inf")
    return x


def _is_two_sided(embed: Any) -> bool:
    return callable(getattr(embed, "encode_query", None)) and callable(
        getattr(embed, "encode_document", None)
    )


def _side(embed: Any, role: str) -> Callable:
    """The function embedding the anchors (``role="query"``) or the corpus (``"document"``)."""
    if _is_two_sided(embed):
        return embed.encode_query if role == "query" else embed.encode_document
    return embed


def _embed(embed: Callable, texts: list[str], batch_size: int, desc: str, verbose: bool):
    parts = []
    for i in tqdm(
        range(0, len(texts), batch_size), desc=desc, disable=not verbose or len(texts) <= batch_size
    ):
        chunk = texts[i : i + batch_size]
        out = np.asarray(embed(chunk), np.float32)
        if out.ndim != 2 or out.shape[0] != len(chunk):
            raise ValueError(
                f"embed must return one row per text ([{len(chunk)}, dim]); got shape "
                f"{list(out.shape)}"
            )
        parts.append(out)
    return np.concatenate(parts)


def _torch_quantile(srt: np.ndarray, p: float) -> np.float32:
    """``torch.quantile(x, p)`` (linear) on sorted float32 values, rounded as torch rounds."""
    rank = np.float32(p) * np.float32(srt.size - 1)
    lo = int(np.floor(rank))
    hi = min(lo + 1, srt.size - 1)
    w = np.float32(rank - np.float32(lo))
    a, b = srt[lo], srt[hi]
    if w < 0.5:  # torch.lerp's two branches
        return np.float32(a + w * (b - a))
    return np.float32(b - (b - a) * (np.float32(1.0) - w))


def _summary(scores: np.ndarray) -> list[str]:
    """Count, mean, median, std, min, quartiles and max as sentence-transformers prints them."""
    s = np.asarray(scores, np.float32)
    if s.size == 0:
        return ["0"] + ["nan"] * 8
    median = np.sort(s)[(s.size - 1) // 2]  # torch.median: the lower of the two middle values
    std = float(np.std(s.astype(np.float64), ddof=1)) if s.size > 1 else float("nan")
    q = [_torch_quantile(np.sort(s), p) for p in (0.25, 0.5, 0.75)]
    values = [s.mean(dtype=np.float64), median, std, s.min(), *q, s.max()]
    return [f"{s.size:,}", *(f"{float(x):.4f}" for x in values)]


def _print_table(pos: np.ndarray, neg: np.ndarray, diff: np.ndarray) -> None:
    row = "{:<6} {:>14} {:>14} {:>14}"
    cols = [_summary(pos), _summary(neg), _summary(diff)]
    print(row.format("Metric", "Positive", "Negative", "Difference"))
    print(row.format("Count", cols[0][0], cols[1][0], ""))
    for i, metric in enumerate(["Mean", "Median", "Std", "Min", "25%", "50%", "75%", "Max"]):
        print(row.format(metric, cols[0][i + 1], cols[1][i + 1], cols[2][i + 1]))


@dataclasses.dataclass(frozen=True)
class _Spec:
    """The validated settings of one mining call."""

    anchors: list[str]
    positives: list[str]
    corpus: list[str] | None
    range_min: int
    range_max: int
    max_score: float | None
    min_score: float | None
    absolute_margin: float | None
    relative_margin: float | None
    num_negatives: int
    sampling_strategy: str
    include_positives: bool
    output_format: str
    output_scores: bool
    similarity: str
    seed: int
    batch_size: int
    search_batch_size: int
    max_positives: int
    rows_per_anchor: dict[str, int]


class _Mined(NamedTuple):
    """Per query: its negatives (corpus indices, ``-1`` where none) and their scores."""

    queries: list[str]
    query_idx: dict[str, int]
    corpus: list[str]
    positive_indices: list[list[int]]
    pair_query: np.ndarray
    pair_anchor: list[str]
    pair_positive: list[str]
    positive_scores: np.ndarray
    neg_idx: np.ndarray
    neg_scores: np.ndarray
    skipped: dict[str, tuple[int, float]]


def candidate_corpus(spec: _Spec) -> list[str]:
    """The candidates: ``corpus`` (or the positives) plus every positive, deduplicated in order."""
    base = spec.positives if spec.corpus is None else spec.corpus
    return list(dict.fromkeys(base + spec.positives))


def _mining_spec(
    anchors,
    positives,
    *,
    embed,
    anchor_embeddings,
    corpus_embeddings,
    corpus,
    range_min,
    range_max,
    max_score,
    min_score,
    absolute_margin,
    relative_margin,
    num_negatives,
    sampling_strategy,
    include_positives,
    output_format,
    output_scores,
    similarity,
    seed,
    batch_size,
    search_batch_size,
    verbose,
) -> _Spec:
    """Validates every argument of :func:`mine_hard_negatives` (before anything is embedded)."""
    anchors = _texts(anchors, "anchors")
    positives = _texts(positives, "positives")
    if len(anchors) != len(positives):
        raise ValueError(
            f"anchors and positives must have the same length (one positive per anchor row); "
            f"got {len(anchors)} anchors and {len(positives)} positives"
        )
    corpus_texts = None if corpus is None else _texts(corpus, "corpus")
    if embed is not None and not (callable(embed) or _is_two_sided(embed)):
        raise ValueError(
            "embed must be callable (list[str] -> [n, dim]) or have encode_query and "
            f"encode_document methods (an Embedder); got {embed!r}"
        )
    if embed is None and (anchor_embeddings is None or corpus_embeddings is None):
        raise ValueError(
            "embed is required unless both anchor_embeddings and corpus_embeddings are given"
        )
    v.check_int(range_min, "range_min", minimum=0)
    if range_max is not None:
        v.check_int(range_max, "range_max", minimum=1)
    v.check_int(num_negatives, "num_negatives", minimum=1)
    max_score = _optional_number(max_score, "max_score")
    min_score = _optional_number(min_score, "min_score")
    absolute_margin = _optional_number(absolute_margin, "absolute_margin")
    relative_margin = _optional_number(relative_margin, "relative_margin")
    v.check_choice(sampling_strategy, "sampling_strategy", _STRATEGIES)
    v.check_choice(output_format, "output_format", _FORMATS)
    v.check_choice(similarity, "similarity", _SIMILARITIES)
    for name, flag in (
        ("include_positives", include_positives),
        ("output_scores", output_scores),
        ("verbose", verbose),
    ):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False; got {flag!r}")
    v.check_int(seed, "seed", minimum=0)
    v.check_int(batch_size, "batch_size", minimum=1)
    v.check_int(search_batch_size, "search_batch_size", minimum=1)
    if include_positives and output_format != "n-tuple":
        _log.warning(
            'include_positives=True sets output_format to "n-tuple" so that the ranking order '
            "is preserved."
        )
        output_format = "n-tuple"

    # Rows per anchor (duplicate pairs included), as the reference's groupby().count().
    rows_per_anchor: dict[str, int] = {}
    for a in anchors:
        rows_per_anchor[a] = rows_per_anchor.get(a, 0) + 1
    max_positives = max(rows_per_anchor.values())
    if range_max is None:
        filters = absolute_margin is not None or relative_margin is not None
        if filters or max_score is not None:
            range_max = range_min + num_negatives * 10 + max_positives
        else:
            range_max = range_min + num_negatives + max_positives
        if verbose:
            print(f"Setting range_max to {range_max} based on the provided parameters.")
    if range_min >= range_max:
        raise ValueError(
            f"range_min must be smaller than range_max; got range_min={range_min} and "
            f"range_max={range_max}"
        )
    if num_negatives > range_max - range_min:
        raise ValueError(
            f"num_negatives must fit in the {range_max - range_min} candidates left after "
            f"skipping the first range_min={range_min} of range_max={range_max}; got "
            f"num_negatives={num_negatives}"
        )

    return _Spec(
        anchors=anchors,
        positives=positives,
        corpus=corpus_texts,
        range_min=range_min,
        range_max=range_max,
        max_score=max_score,
        min_score=min_score,
        absolute_margin=absolute_margin,
        relative_margin=relative_margin,
        num_negatives=num_negatives,
        sampling_strategy=sampling_strategy,
        include_positives=include_positives,
        output_format=output_format,
        output_scores=output_scores,
        similarity=similarity,
        seed=seed,
        batch_size=batch_size,
        search_batch_size=search_batch_size,
        max_positives=max_positives,
        rows_per_anchor=rows_per_anchor,
    )


def _mine(spec: _Spec, embed, anchor_embeddings, corpus_embeddings, mesh, verbose) -> _Mined:
    """Embeds (unless given), searches, filters, ranks and samples: the negatives per query."""
    anchors, positives, corpus_texts = spec.anchors, spec.positives, spec.corpus
    range_min, range_max = spec.range_min, spec.range_max
    num_negatives, max_positives = spec.num_negatives, spec.max_positives
    max_score, min_score = spec.max_score, spec.min_score
    absolute_margin, relative_margin = spec.absolute_margin, spec.relative_margin
    include_positives, similarity = spec.include_positives, spec.similarity
    batch_size, search_batch_size = spec.batch_size, spec.search_batch_size
    rows_per_anchor = spec.rows_per_anchor
    # ---- the deduplicated corpus and queries ----
    base = positives if corpus_texts is None else corpus_texts
    corpus_list = candidate_corpus(spec)
    corpus_idx = {t: i for i, t in enumerate(corpus_list)}
    queries = list(dict.fromkeys(anchors))
    query_idx = {q: i for i, q in enumerate(queries)}
    n_queries, n_corpus = len(queries), len(corpus_list)

    q_emb = None
    if anchor_embeddings is not None:
        given = _embedding_matrix(anchor_embeddings, "anchor_embeddings", len(anchors), "anchor")
        first = {}
        for i, a in enumerate(anchors):
            first.setdefault(a, i)
        q_emb = given[[first[q] for q in queries]]
    c_emb = None
    if corpus_embeddings is not None:
        what = "corpus text" if corpus_texts is not None else "positive (corpus=None)"
        given = _embedding_matrix(corpus_embeddings, "corpus_embeddings", len(base), what)
        first = {}
        for i, t in enumerate(base):
            first.setdefault(t, i)
        missing = [t for t in corpus_list if t not in first]
        if missing and embed is None:
            raise ValueError(
                f"corpus_embeddings covers corpus, but {len(missing)} positives are not in corpus "
                f"(e.g. {missing[0]!r:.60}); add them to corpus (with their embeddings) or pass "
                "embed to embed them"
            )
        if len(first) == len(base) and not missing:  # corpus_list is base itself
            c_emb = given
        else:
            c_emb = np.zeros((n_corpus, given.shape[1]), np.float32)
            have = [i for i, t in enumerate(corpus_list) if t in first]
            c_emb[have] = given[[first[corpus_list[i]] for i in have]]
        if missing:
            extra = _embed(
                _side(embed, "document"), missing, batch_size, "Embedding positives", verbose
            )
            if extra.shape[1] != given.shape[1]:
                raise ValueError(
                    f"embed returned width {extra.shape[1]} but corpus_embeddings has width "
                    f"{given.shape[1]}"
                )
            c_emb[[corpus_idx[t] for t in missing]] = extra
    if q_emb is not None and c_emb is not None and q_emb.shape[1] != c_emb.shape[1]:
        raise ValueError(
            f"anchor_embeddings must have the width of corpus_embeddings ({c_emb.shape[1]}); "
            f"got {q_emb.shape[1]}"
        )
    if n_queries != len(anchors) and verbose:
        print(f"Found {n_queries} unique queries out of {len(anchors)} total queries.")
    if max_positives > 1 and verbose:
        mean_rows = np.mean(list(rows_per_anchor.values()))
        print(f"Found an average of {mean_rows:.3f} positives per query.")

    # ---- embeddings ----
    if c_emb is None:
        c_emb = _embed(
            _side(embed, "document"), corpus_list, batch_size, "Embedding corpus", verbose
        )
    if q_emb is None:
        q_emb = _embed(_side(embed, "query"), queries, batch_size, "Embedding anchors", verbose)
    if q_emb.shape[1] != c_emb.shape[1]:
        raise ValueError(
            f"anchor embeddings have width {q_emb.shape[1]} but corpus embeddings {c_emb.shape[1]}"
        )
    # "cosine": the search normalises rows on the fly (eps 1e-12, as torch's normalize)
    # ---- search: the best candidate_count corpus rows of every query ----
    candidate_count = range_max + max_positives + 1
    k = min(candidate_count, n_corpus)
    scores = np.empty((n_queries, candidate_count), np.float32)
    indices = np.empty((n_queries, candidate_count), np.int64)
    for i in tqdm(
        range(0, n_queries, search_batch_size),
        desc="Searching the corpus",
        disable=not verbose or n_queries <= search_batch_size,
    ):
        s, idx = search(
            q_emb[i : i + search_batch_size],
            c_emb,
            k,
            metric=similarity,
            mesh=mesh,
            check_finite=False,
        )
        scores[i : i + search_batch_size, :k] = np.asarray(s)
        indices[i : i + search_batch_size, :k] = np.asarray(idx)
    scores[:, k:] = -np.inf
    indices[:, k:] = -1

    # ---- positives of each query, in first-appearance order ----
    positive_indices: list[list[int]] = [[] for _ in range(n_queries)]
    self_idx = np.array([corpus_idx.get(q, -1) for q in queries])
    for a, p in zip(anchors, positives, strict=True):
        qi = query_idx[a]
        if corpus_idx[p] not in positive_indices[qi]:
            positive_indices[qi].append(corpus_idx[p])
        if include_positives and a == p:
            self_idx[qi] = -1
    n_pos = np.array([len(p) for p in positive_indices])
    pair_query = np.repeat(np.arange(n_queries), n_pos)
    pair_doc = np.array([d for row in positive_indices for d in row])
    pair_anchor = [queries[q] for q in pair_query]
    pair_positive = [corpus_list[d] for d in pair_doc]
    pq, pd = q_emb[pair_query], c_emb[pair_doc]
    if similarity == "cosine":
        pq = pq / np.maximum(np.linalg.norm(pq, axis=1, keepdims=True), 1e-12)
        pd = pd / np.maximum(np.linalg.norm(pd, axis=1, keepdims=True), 1e-12)
    positive_scores = np.einsum("ij,ij->i", pq, pd).astype(np.float32)

    # ---- filters ----
    scores[indices == -1] = -np.inf
    scores[indices == self_idx[:, None]] = -np.inf
    if not include_positives:
        stride = n_corpus + 1
        pos_keys = np.sort(pair_query * stride + pair_doc + 1)
        cand_keys = np.arange(n_queries)[:, None] * stride + indices + 1
        scores[np.isin(cand_keys, pos_keys)] = -np.inf
    num_candidates = scores.size
    skipped: dict[str, tuple[int, float]] = {}
    if absolute_margin is not None or relative_margin is not None:
        # the *smallest* positive score of each query (the reference's "max_positive_scores")
        min_pos = np.minimum.reduceat(positive_scores, np.cumsum(n_pos) - n_pos)
        if absolute_margin is not None:
            removed = scores + np.float32(absolute_margin) > min_pos[:, None]
            scores[removed] = -np.inf
            if removed.sum():
                skipped["absolute_margin"] = (int(removed.sum()), removed.sum() / num_candidates)
                num_candidates -= int(removed.sum())
        if relative_margin is not None:
            threshold = min_pos - np.abs(min_pos) * np.float32(relative_margin)
            removed = scores > threshold[:, None]
            scores[removed] = -np.inf
            if removed.sum():
                skipped["relative_margin"] = (int(removed.sum()), removed.sum() / num_candidates)
                num_candidates -= int(removed.sum())
    if max_score is not None:
        removed = scores > np.float32(max_score)
        scores[removed] = -np.inf
        if removed.sum():
            skipped["max_score"] = (int(removed.sum()), removed.sum() / num_candidates)
    if min_score is not None:
        removed = (scores < np.float32(min_score)) & (scores != -np.inf)
        scores[removed] = -np.inf
        if removed.sum():
            skipped["min_score"] = (int(removed.sum()), removed.sum() / num_candidates)

    # ---- rank, cut to [range_min, range_max), sample ----
    order = np.argsort(-scores, axis=1, kind="stable")[:, :range_max]
    neg_scores = np.take_along_axis(scores, order, axis=1)[:, range_min:]
    neg_idx = np.take_along_axis(indices, order, axis=1)[:, range_min:]
    if spec.sampling_strategy == "top":
        neg_scores, neg_idx = neg_scores[:, :num_negatives], neg_idx[:, :num_negatives]
    else:
        options = np.maximum(np.sum(np.isfinite(neg_scores), axis=1), num_negatives)
        keys = np.random.default_rng(spec.seed).random(neg_scores.shape)
        keys[np.arange(neg_scores.shape[1])[None, :] >= options[:, None]] = np.inf
        pick = np.argsort(keys, axis=1, kind="stable")[:, :num_negatives]
        neg_scores = np.take_along_axis(neg_scores, pick, axis=1)
        neg_idx = np.take_along_axis(neg_idx, pick, axis=1)
        resort = np.argsort(-neg_scores, axis=1, kind="stable")
        neg_scores = np.take_along_axis(neg_scores, resort, axis=1)
        neg_idx = np.take_along_axis(neg_idx, resort, axis=1)
    return _Mined(
        queries=queries,
        query_idx=query_idx,
        corpus=corpus_list,
        positive_indices=positive_indices,
        pair_query=pair_query,
        pair_anchor=pair_anchor,
        pair_positive=pair_positive,
        positive_scores=positive_scores,
        neg_idx=neg_idx,
        neg_scores=neg_scores,
        skipped=skipped,
    )


def mine_hard_negatives(
    anchors: Sequence[str],
    positives: Sequence[str],
    *,
    embed: Callable[[list[str]], Any] | None = None,
    anchor_embeddings: Any = None,
    corpus_embeddings: Any = None,
    corpus: Sequence[str] | None = None,
    range_min: int = 0,
    range_max: int | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = None,
    num_negatives: int = 3,
    sampling_strategy: str = "top",
    include_positives: bool = False,
    output_format: str = "triplet",
    output_scores: bool = False,
    similarity: str = "cosine",
    seed: int = 0,
    batch_size: int = 4096,
    search_batch_size: int = 16384,
    mesh: Mesh | None = None,
    verbose: bool = True,
) -> dict[str, list]:
    """Adds mined hard negatives to (anchor, positive) pairs, as sentence-transformers does.

    Every unique anchor is scored against the candidate corpus — ``corpus`` plus every
    positive, deduplicated in order of first appearance (only the positives when ``corpus``
    is None) — with the exact search engine (:func:`jaxemb.retrieval.search`, chunked, sharded
    over ``mesh``). Its ``range_max + max_positives + 1`` best candidates are then filtered
    exactly as sentence-transformers 6.3 ``util.mine_hard_negatives`` does:

    * the anchor itself (a corpus text equal to it) and, unless ``include_positives``, every
      text that is one of its positives are never negatives;
    * ``absolute_margin``: drop candidates with ``score + margin > p``; ``relative_margin``:
      drop ``score > p − |p|·margin``, where ``p`` is the anchor's *smallest* positive score
      (both may be given: they apply one after the other);
    * ``max_score``: drop ``score > max_score``; ``min_score``: drop ``score < min_score``;
    * of the remaining candidates, ranked by score, ranks ``range_min .. range_max − 1`` are
      kept; ``"top"`` takes the first ``num_negatives``, ``"random"`` draws ``num_negatives``
      distinct ones among the kept (seeded by ``seed``; the reference uses Python's unseeded
      ``random``) and sorts them by score.

    ``range_max`` defaults to ``range_min + num_negatives + max_positives``, or ``range_min +
    10 · num_negatives + max_positives`` when a margin or ``max_score`` can drop candidates;
    ``max_positives`` counts the rows of the most frequent anchor. Duplicated anchors are mined
    once, and each of their (deduplicated) positives gets the same negatives.

    The similarity is the embedding model's: ``"cosine"`` (embeddings L2-normalised, as
    sentence-transformers normalises them before mining; the default) or ``"dot"`` (the
    embeddings' inner product as given).

    Output formats (plain Python lists; ``"anchor"`` / ``"positive"`` hold texts):

    * ``"triplet"``: one row per (anchor, positive, negative) with ``negative``; anchors with
      fewer candidates give fewer rows. ``output_scores`` adds ``scores`` = ``[pos, neg]``.
    * ``"n-tuple"``: one row per (anchor, positive) with ``negative_1 .. negative_n``; rows
      without ``num_negatives`` negatives are dropped. ``output_scores`` adds ``scores`` =
      ``[pos, neg_1, ..., neg_n]``.
    * ``"labeled-pair"``: per anchor its positives (``label`` 1) then its negatives (``label``
      0) in ``positive``; with ``output_scores`` a ``score`` column replaces ``label``.
    * ``"labeled-list"``: per (anchor, positive) ``positive`` = ``[positive, neg...]`` and
      ``labels`` = ``[1, 0, ...]`` (or ``scores``); rows without any negative are dropped.

    With ``include_positives`` the positives stay candidates and the format is ``"n-tuple"``.
    Unless ``verbose=False`` it prints the reference's table (count, mean, median, std, min,
    quartiles and max of the positive and negative scores and their difference) and how many
    candidates each filter skipped, with progress bars over embedding and search chunks.

    Args:
      anchors: ``[N]`` anchor (query) texts.
      positives: ``[N]`` positive texts, ``positives[i]`` answers ``anchors[i]``.
      embed: ``list[str] -> [n, dim]`` for anchors and corpus alike, or an object with
        ``encode_query`` and ``encode_document`` (an :class:`~jaxemb.encoders.Embedder`, whose
        query / document prompts are then applied as sentence-transformers' ``encode_query`` /
        ``encode_document`` do); needed unless both ``anchor_embeddings`` and
        ``corpus_embeddings`` are given.
      anchor_embeddings: precomputed ``[N, dim]``, one row per entry of ``anchors``.
      corpus_embeddings: precomputed ``[M, dim]``, one row per entry of ``corpus`` (of
        ``positives`` when ``corpus`` is None); every positive must then be in it (or
        ``embed`` given to embed the missing ones).
      corpus: extra candidate texts; the positives are always candidates too.
      range_min: candidates ranked before this are skipped (``>= 0``).
      range_max: candidates ranked from this on are skipped (``None``: see above).
      max_score: drop candidates scoring above it (possible false negatives).
      min_score: drop candidates scoring below it.
      absolute_margin: drop candidates within this margin of the positive score.
      relative_margin: drop candidates within this fraction of ``|positive score|`` of it.
      num_negatives: negatives per anchor (``>= 1``, at most ``range_max − range_min``).
      sampling_strategy: ``"top"`` or ``"random"``.
      include_positives: keep positives among the candidates (reranking sets).
      output_format: ``"triplet"``, ``"n-tuple"``, ``"labeled-pair"`` or ``"labeled-list"``.
      output_scores: add (or, for the labeled formats, use) the similarity scores.
      similarity: ``"cosine"`` or ``"dot"``.
      seed: seed of the ``"random"`` strategy.
      batch_size: texts per call of ``embed``.
      search_batch_size: anchors per search chunk.
      mesh: a mesh whose ``data`` axis splits the corpus during the search.
      verbose: print the summary and progress bars.

    Returns:
      A dict of equally long column lists, ready for a dataset or the code-search pipeline.

    Raises:
      ValueError: before anything is embedded, for anchors and positives of different
        lengths, empty lists, non-strings, ``range_min >= range_max``, ``num_negatives`` out
        of range, unknown formats / strategies / similarities, embeddings of the wrong shape
        or width, or neither ``embed`` nor both embedding arrays.

    Examples:
      >>> import numpy as np
      >>> from jaxemb.negatives import mine_hard_negatives
      >>> vocab = {"cat": [1.0, 0.0], "kitten": [0.9, 0.1], "dog": [0.7, 0.7],
      ...          "car": [0.0, 1.0], "truck": [0.1, 0.9]}
      >>> embed = lambda texts: np.array([vocab[t] for t in texts])
      >>> out = mine_hard_negatives(["cat", "car"], ["kitten", "truck"], corpus=["dog"],
      ...                           embed=embed, num_negatives=1, verbose=False)
      >>> list(zip(out["anchor"], out["positive"], out["negative"]))
      [('cat', 'kitten', 'dog'), ('car', 'truck', 'dog')]

    References:
      Moreira et al., "NV-Retriever: Improving text embedding models with effective
      hard-negative mining" (2024), TopK-PercPos = ``relative_margin=0.05``. Reference
      implementation: sentence-transformers 6.3 ``util.mine_hard_negatives`` (``range_min=0``,
      ``num_negatives=3``, ``sampling_strategy="top"``, ``output_format="triplet"``).
    """
    spec = _mining_spec(
        anchors,
        positives,
        embed=embed,
        anchor_embeddings=anchor_embeddings,
        corpus_embeddings=corpus_embeddings,
        corpus=corpus,
        range_min=range_min,
        range_max=range_max,
        max_score=max_score,
        min_score=min_score,
        absolute_margin=absolute_margin,
        relative_margin=relative_margin,
        num_negatives=num_negatives,
        sampling_strategy=sampling_strategy,
        include_positives=include_positives,
        output_format=output_format,
        output_scores=output_scores,
        similarity=similarity,
        seed=seed,
        batch_size=batch_size,
        search_batch_size=search_batch_size,
        verbose=verbose,
    )
    m = _mine(spec, embed, anchor_embeddings, corpus_embeddings, mesh, verbose)
    if verbose:
        print("Negative candidates mined, preparing dataset...")
    anchors = spec.anchors
    range_min, num_negatives = spec.range_min, spec.num_negatives
    output_format, output_scores = spec.output_format, spec.output_scores
    absolute_margin, relative_margin = spec.absolute_margin, spec.relative_margin
    max_score, min_score = spec.max_score, spec.min_score
    queries, corpus_list, positive_indices = m.queries, m.corpus, m.positive_indices
    pair_query, pair_anchor, pair_positive = m.pair_query, m.pair_anchor, m.pair_positive
    positive_scores, neg_idx, neg_scores = m.positive_scores, m.neg_idx, m.neg_scores
    n_queries, n_pos = len(queries), np.array([len(p) for p in positive_indices])
    skipped = m.skipped

    # ---- output columns ----
    found = np.isfinite(neg_scores)  # [n_queries, num_negatives]
    pair_found = found[pair_query]
    pair_neg_idx = neg_idx[pair_query]
    pair_neg_scores = neg_scores[pair_query]
    out: dict[str, list] = {}
    if output_format == "triplet":
        rows, cols = np.nonzero(pair_found)
        out["anchor"] = [pair_anchor[r] for r in rows]
        out["positive"] = [pair_positive[r] for r in rows]
        out["negative"] = [corpus_list[pair_neg_idx[r, c]] for r, c in zip(rows, cols, strict=True)]
        kept_neg = pair_neg_scores[rows, cols]
        kept_pos = positive_scores[rows]
        if output_scores:
            out["scores"] = [[float(p), float(n)] for p, n in zip(kept_pos, kept_neg, strict=True)]
        possible = pair_found.size
    elif output_format == "labeled-pair":
        out = {"anchor": [], "positive": [], "score" if output_scores else "label": []}
        target = out["score" if output_scores else "label"]
        start = 0
        for qi in range(n_queries):
            for j, d in enumerate(positive_indices[qi]):
                out["anchor"].append(queries[qi])
                out["positive"].append(corpus_list[d])
                target.append(float(positive_scores[start + j]) if output_scores else 1)
            start += n_pos[qi]
            for d, s in zip(neg_idx[qi], neg_scores[qi], strict=True):
                if np.isfinite(s):
                    out["anchor"].append(queries[qi])
                    out["positive"].append(corpus_list[d])
                    target.append(float(s) if output_scores else 0)
        kept_neg = pair_neg_scores[pair_found]
        kept_pos = np.repeat(positive_scores, num_negatives).reshape(-1, num_negatives)[pair_found]
        possible = n_queries * num_negatives + len(anchors)
    elif output_format == "n-tuple":
        keep = pair_found.all(axis=1)
        rows = np.flatnonzero(keep)
        out["anchor"] = [pair_anchor[r] for r in rows]
        out["positive"] = [pair_positive[r] for r in rows]
        for c in range(num_negatives):
            out[f"negative_{c + 1}"] = [corpus_list[pair_neg_idx[r, c]] for r in rows]
        if output_scores:
            out["scores"] = [
                [float(positive_scores[r]), *map(float, pair_neg_scores[r])] for r in rows
            ]
        kept_neg = pair_neg_scores[rows].ravel()
        kept_pos = np.repeat(positive_scores[rows], num_negatives)
        possible = len(pair_query)
    else:  # labeled-list
        rows = np.flatnonzero(pair_found.any(axis=1))
        out["anchor"] = [pair_anchor[r] for r in rows]
        out["positive"] = [
            [pair_positive[r]] + [corpus_list[d] for d in pair_neg_idx[r][pair_found[r]]]
            for r in rows
        ]
        if output_scores:
            out["scores"] = [
                [float(positive_scores[r]), *map(float, pair_neg_scores[r][pair_found[r]])]
                for r in rows
            ]
        else:
            out["labels"] = [[1] + [0] * int(pair_found[r].sum()) for r in rows]
        kept_neg = pair_neg_scores[pair_found]
        kept_pos = np.repeat(positive_scores, num_negatives).reshape(-1, num_negatives)[pair_found]
        possible = len(pair_query)

    if verbose:
        _print_table(positive_scores, kept_neg, kept_pos - kept_neg)
        values = {
            "absolute_margin": absolute_margin,
            "relative_margin": relative_margin,
            "max_score": max_score,
            "min_score": min_score,
        }
        for name, (count, ratio) in skipped.items():
            print(
                f"Skipped {count:,} potential negatives ({ratio:.2%}) due to the {name} of "
                f"{values[name]}."
            )
        missing = possible - len(out["anchor"])
        if missing > 0:
            fixes = ["range_max"] + (["range_min"] if range_min > 0 else [])
            fixes += [
                n
                for n in ("absolute_margin", "relative_margin", "max_score")
                if values[n] is not None
            ]
            joined = ", ".join(fixes[:-1]) + " and " + fixes[-1] if len(fixes) > 1 else fixes[0]
            print(
                f"Could not find enough negatives for {missing} samples "
                f"({missing / possible:.2%}). Consider adjusting the {joined} "
                f"parameter{'s' if len(fixes) > 1 else ''} if you'd like to find more valid "
                "negatives."
            )
    return out
