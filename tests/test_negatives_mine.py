"""mine_hard_negatives against an independent NumPy reference of sentence-transformers 6.3.

The fixture (topic-clustered embeddings with duplicated anchors, multi-positive anchors, an
anchor that is itself a corpus text and a duplicated row) was also run through the real
``sentence_transformers.util.mine_hard_negatives`` in a throwaway environment: for every
configuration below its columns equal jaxemb's (scores within 1e-6).
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxemb.negatives import mine_hard_negatives


def mining_fixture(seed=0, n_topics=6, d=8):
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(n_topics, d)) * 2.0
    table, anchors, positives, corpus = {}, [], [], []
    for t in range(n_topics):
        for j in range(6):
            a, p = f"q{t}-{j}", f"doc{t}-{j}"
            table[a] = topics[t] + rng.normal(size=d)
            table[p] = table[a] + 0.6 * rng.normal(size=d)
            anchors.append(a)
            positives.append(p)
        for j in range(8):
            c = f"extra{t}-{j}"
            table[c] = topics[t] + 1.2 * rng.normal(size=d)
            corpus.append(c)
    anchors += ["q0-0", "q0-0", "q1-1", "extra2-3", "q3-3"]
    positives += ["doc0-5", "doc0-0", "doc1-2", "doc2-0", "doc4-4"]
    corpus += ["doc1-1", "extra5-7"]
    table = {k: np.asarray(v, np.float32) for k, v in table.items()}
    return anchors, positives, corpus, table


ANCHORS, POSITIVES, CORPUS, TABLE = mining_fixture()


def embed(texts):
    return np.stack([TABLE[t] for t in texts])


def np_mine(
    anchors,
    positives,
    corpus,
    *,
    range_min=0,
    range_max=None,
    max_score=None,
    min_score=None,
    absolute_margin=None,
    relative_margin=None,
    num_negatives=3,
    include_positives=False,
    output_format="triplet",
    output_scores=False,
):
    """The reference's rules, query by query, in float64."""
    corpus_list = list(dict.fromkeys((positives if corpus is None else list(corpus)) + positives))
    unit = {t: TABLE[t] / np.linalg.norm(TABLE[t].astype(np.float64)) for t in TABLE}
    C = np.stack([unit[t] for t in corpus_list])
    queries = list(dict.fromkeys(anchors))
    rows = {q: anchors.count(q) for q in queries}
    max_pos = max(rows.values())
    if range_max is None:
        wide = absolute_margin is not None or relative_margin is not None or max_score is not None
        range_max = range_min + num_negatives * (10 if wide else 1) + max_pos
    if include_positives:
        output_format = "n-tuple"
    pos_of = {q: [] for q in queries}
    for a, p in zip(anchors, positives, strict=True):
        if p not in pos_of[a]:
            pos_of[a].append(p)
    window = range_max + max_pos + 1
    negs = {}
    for q in queries:
        s = C @ unit[q]
        cand = list(np.argsort(-s, kind="stable")[:window])
        pscores = [float(unit[q] @ unit[p]) for p in pos_of[q]]
        p_min = min(pscores)
        keep = []
        for i in cand:
            text, score = corpus_list[i], s[i]
            if text == q and not (include_positives and q in pos_of[q]):
                continue
            if not include_positives and text in pos_of[q]:
                continue
            if absolute_margin is not None and score + absolute_margin > p_min:
                continue
            if relative_margin is not None and score > p_min - abs(p_min) * relative_margin:
                continue
            if max_score is not None and score > max_score:
                continue
            if min_score is not None and score < min_score:
                continue
            keep.append((text, float(score)))
        negs[q] = keep[range_min:range_max][:num_negatives]
    out = {}
    pairs = [(q, p, float(unit[q] @ unit[p])) for q in queries for p in pos_of[q]]
    if output_format == "triplet":
        out = {"anchor": [], "positive": [], "negative": []}
        if output_scores:
            out["scores"] = []
        for q, p, ps in pairs:
            for n, ns in negs[q]:
                out["anchor"].append(q)
                out["positive"].append(p)
                out["negative"].append(n)
                if output_scores:
                    out["scores"].append([ps, ns])
    elif output_format == "n-tuple":
        full = [(q, p, ps) for q, p, ps in pairs if len(negs[q]) == num_negatives]
        out = {"anchor": [q for q, _, _ in full], "positive": [p for _, p, _ in full]}
        for c in range(num_negatives):
            out[f"negative_{c + 1}"] = [negs[q][c][0] for q, _, _ in full]
        if output_scores:
            out["scores"] = [[ps] + [s for _, s in negs[q]] for q, _, ps in full]
    elif output_format == "labeled-pair":
        col = "score" if output_scores else "label"
        out = {"anchor": [], "positive": [], col: []}
        for q in queries:
            for q2, p, ps in pairs:
                if q2 == q:
                    out["anchor"].append(q)
                    out["positive"].append(p)
                    out[col].append(ps if output_scores else 1)
            for n, ns in negs[q]:
                out["anchor"].append(q)
                out["positive"].append(n)
                out[col].append(ns if output_scores else 0)
    else:
        some = [(q, p, ps) for q, p, ps in pairs if negs[q]]
        out = {
            "anchor": [q for q, _, _ in some],
            "positive": [[p] + [n for n, _ in negs[q]] for q, p, _ in some],
        }
        if output_scores:
            out["scores"] = [[ps] + [s for _, s in negs[q]] for q, _, ps in some]
        else:
            out["labels"] = [[1] + [0] * len(negs[q]) for q, _, _ in some]
    return out


CONFIGS = {
    "default": {},
    "corpus": {"corpus": True},
    "abs_margin": {"corpus": True, "absolute_margin": 0.05, "num_negatives": 4},
    "rel_margin": {"corpus": True, "relative_margin": 0.05, "range_min": 1, "num_negatives": 2},
    "both_margins_max_min": {
        "corpus": True,
        "absolute_margin": 0.0,
        "relative_margin": 0.1,
        "max_score": 0.9,
        "min_score": 0.2,
    },
    "ntuple": {
        "corpus": True,
        "output_format": "n-tuple",
        "output_scores": True,
        "max_score": 0.85,
    },
    "ntuple_short": {
        "corpus": True,
        "output_format": "n-tuple",
        "range_max": 6,
        "num_negatives": 5,
        "relative_margin": 0.0,
    },
    "labeled_pair": {"corpus": True, "output_format": "labeled-pair", "num_negatives": 2},
    "labeled_pair_scores": {
        "corpus": True,
        "output_format": "labeled-pair",
        "num_negatives": 2,
        "output_scores": True,
        "min_score": 0.5,
    },
    "labeled_list": {"corpus": True, "output_format": "labeled-list", "max_score": 0.7},
    "labeled_list_scores": {"corpus": True, "output_format": "labeled-list", "output_scores": True},
    "triplet_scores": {"output_scores": True, "range_min": 2, "range_max": 9},
    "include_positives": {"corpus": True, "include_positives": True, "num_negatives": 4},
}


def _assert_columns_equal(got, want):
    assert list(got) == list(want)
    for key in want:
        assert len(got[key]) == len(want[key]), key
        if key in ("scores", "score"):
            for g, w in zip(got[key], want[key], strict=True):
                np.testing.assert_allclose(g, w, rtol=0, atol=1e-6)
        else:
            assert got[key] == want[key], key


@pytest.mark.parametrize("name", list(CONFIGS))
def test_top_mining_equals_reference(name):
    cfg = dict(CONFIGS[name])
    corpus = CORPUS if cfg.pop("corpus", False) else None
    got = mine_hard_negatives(ANCHORS, POSITIVES, corpus=corpus, embed=embed, **cfg, verbose=False)
    _assert_columns_equal(got, np_mine(ANCHORS, POSITIVES, corpus, **cfg))


def test_fixture_has_no_near_ties():
    """The chosen negatives cannot depend on the last float32 bit on any CPU."""
    unit = {t: v / np.linalg.norm(v.astype(np.float64)) for t, v in TABLE.items()}
    C = np.stack([unit[t] for t in dict.fromkeys(CORPUS + POSITIVES)])
    for q in set(ANCHORS):
        s = np.sort(C @ unit[q])
        assert np.min(np.diff(s)) > 1e-6
        for threshold in (0.2, 0.5, 0.7, 0.85, 0.9):
            assert np.min(np.abs(s - threshold)) > 1e-6


def test_precomputed_embeddings_equal_embedding_the_texts(mesh8):
    want = mine_hard_negatives(
        ANCHORS, POSITIVES, corpus=CORPUS, embed=embed, output_scores=True, verbose=False
    )
    got = mine_hard_negatives(
        ANCHORS,
        POSITIVES,
        corpus=CORPUS + POSITIVES,
        anchor_embeddings=embed(ANCHORS),
        corpus_embeddings=embed(CORPUS + POSITIVES),
        output_scores=True,
        verbose=False,
    )
    _assert_columns_equal(got, want)
    # the search sharded over 8 devices finds the same negatives
    sharded = mine_hard_negatives(
        ANCHORS,
        POSITIVES,
        corpus=CORPUS,
        embed=embed,
        output_scores=True,
        mesh=mesh8,
        verbose=False,
    )
    _assert_columns_equal(sharded, want)


def test_two_sided_embedder_embeds_anchors_as_queries_and_corpus_as_documents():
    """An object with encode_query / encode_document (an Embedder) is used role by role."""
    shift = np.linspace(-1.0, 1.0, 8).astype(np.float32)

    class TwoSided:
        def encode_query(self, texts):
            return embed(texts) + shift  # as a query prompt would move the anchors

        def encode_document(self, texts):
            return embed(texts)

    got = mine_hard_negatives(
        ANCHORS, POSITIVES, corpus=CORPUS, embed=TwoSided(), output_scores=True, verbose=False
    )
    want = mine_hard_negatives(
        ANCHORS,
        POSITIVES,
        corpus=CORPUS + POSITIVES,
        anchor_embeddings=embed(ANCHORS) + shift,
        corpus_embeddings=embed(CORPUS + POSITIVES),
        output_scores=True,
        verbose=False,
    )
    _assert_columns_equal(got, want)
    plain = mine_hard_negatives(
        ANCHORS, POSITIVES, corpus=CORPUS, embed=embed, output_scores=True, verbose=False
    )
    assert not np.allclose(got["scores"], plain["scores"])  # the query side was really used


def test_random_sampling_draws_from_the_candidate_window():
    cfg = dict(corpus=CORPUS, embed=embed, num_negatives=2, range_max=8, verbose=False)
    window = np_mine(ANCHORS, POSITIVES, CORPUS, num_negatives=8, range_max=8)
    allowed = {}
    for a, n in zip(window["anchor"], window["negative"], strict=True):
        allowed.setdefault(a, set()).add(n)
    runs = [
        mine_hard_negatives(ANCHORS, POSITIVES, sampling_strategy="random", seed=s, **cfg)
        for s in (0, 0, 1)
    ]
    assert runs[0] == runs[1]  # deterministic for a seed
    assert runs[0]["negative"] != runs[2]["negative"]  # and the seed matters
    for a, n in zip(runs[2]["anchor"], runs[2]["negative"], strict=True):
        assert n in allowed[a]
    scored = mine_hard_negatives(
        ANCHORS,
        POSITIVES,
        sampling_strategy="random",
        seed=3,
        output_format="n-tuple",
        output_scores=True,
        **cfg,
    )
    for row in scored["scores"]:
        assert row[1] >= row[2]  # sorted by score like the reference


def test_summary_table_and_skipped_counts(capsys):
    mine_hard_negatives(
        ANCHORS,
        POSITIVES,
        corpus=CORPUS,
        embed=embed,
        relative_margin=0.05,
        max_score=0.9,
        num_negatives=2,
    )
    lines = capsys.readouterr().out.splitlines()
    assert "Setting range_max to 23 based on the provided parameters." in lines
    assert "Found 37 unique queries out of 41 total queries." in lines
    header = lines.index("Metric       Positive       Negative     Difference")
    count = lines[header + 1].split()
    want = np_mine(ANCHORS, POSITIVES, CORPUS, relative_margin=0.05, max_score=0.9, num_negatives=2)
    assert count[:3] == ["Count", "40", f"{len(want['anchor']):,}"]
    assert [ln.split()[0] for ln in lines[header + 2 : header + 10]] == [
        "Mean",
        "Median",
        "Std",
        "Min",
        "25%",
        "50%",
        "75%",
        "Max",
    ]
    assert any(
        ln.startswith("Skipped ") and "due to the relative_margin of 0.05." in ln for ln in lines
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(anchors=["a", "b"], positives=["x"]), "same length"),
        (dict(anchors=[], positives=[]), "anchors must not be empty"),
        (dict(anchors=["a", 3], positives=["x", "y"]), r"anchors\[1\] must be a str"),
        (dict(corpus=["c", None]), r"corpus\[1\] must be a str"),
        (dict(range_min=5, range_max=5), "range_min must be smaller than range_max"),
        (dict(num_negatives=0), "num_negatives must be >= 1"),
        (dict(num_negatives=-2), "num_negatives must be >= 1"),
        (dict(range_max=4, num_negatives=5), "num_negatives must fit"),
        (dict(output_format="pairs"), "output_format"),
        (dict(sampling_strategy="hardest"), "sampling_strategy"),
        (dict(similarity="l2"), "similarity"),
        (dict(embed=None), "embed is required"),
        (dict(max_score="0.9"), "max_score must be a number"),
        (dict(anchor_embeddings=np.zeros((41, 5), np.float32)), "width"),
        (dict(anchor_embeddings=np.zeros((40, 8), np.float32)), "one row per anchor"),
    ],
)
def test_bad_input_is_refused_before_embedding(kwargs, match):
    calls = []

    def counting_embed(texts):
        calls.append(len(texts))
        return embed(texts)

    args = dict(
        anchors=ANCHORS, positives=POSITIVES, corpus=CORPUS, embed=counting_embed, verbose=False
    )
    args.update(kwargs)
    if "anchor_embeddings" in kwargs:
        args["corpus_embeddings"] = embed(CORPUS + POSITIVES)
        args["corpus"] = CORPUS + POSITIVES
        args["embed"] = None
    with pytest.raises(ValueError, match=match):
        mine_hard_negatives(**args)
    assert calls == []
