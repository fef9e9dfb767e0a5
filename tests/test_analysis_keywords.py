"""jaxemb.analysis.distinctive_words / words and label_feature_f1 against plain-Python and NumPy
references written here (dictionaries and loops, no scipy.sparse)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from jaxemb.analysis import STOP_WORDS, distinctive_words, label_feature_f1, words


def ref_words(text, stop=STOP_WORDS, min_length=2):
    out = []
    for w in re.findall(r"[a-z][a-z0-9_]*", text.lower()):
        if len(w) >= min_length and w not in stop:
            out.append(w)
    return out


def ref_distinctive(texts, groups, top_k, min_count):
    """Binary tf within the group times the smoothed idf, by dictionaries."""
    n = len(texts)
    sets = [set(ref_words(t)) for t in texts]
    df = {}
    for s in sets:
        for w in s:
            df[w] = df.get(w, 0) + 1
    out = []
    for g in groups:
        g = sorted(set(g))
        count = {}
        for i in g:
            for w in sets[i]:
                count[w] = count.get(w, 0) + 1
        scored = [
            (-(c / len(g)) * (math.log((1 + n) / (1 + df[w])) + 1), w)
            for w, c in count.items()
            if c >= min_count
        ]
        out.append([(w, -s) for s, w in sorted(scored)[:top_k]])
    return out


def test_words_lowercases_splits_and_drops_stop_words():
    assert words("The NumPy ndarray's dtype, set_xlim() and 3D plots.") == [
        "numpy",
        "ndarray",
        "dtype",
        "set_xlim",
        "plots",
    ]
    assert words("a b cd", stop_words=None, min_length=1) == ["a", "b", "cd"]
    with pytest.raises(ValueError, match="text must be a str"):
        words(b"bytes")


def test_distinctive_words_equals_the_dictionary_reference():
    texts = [
        "Compute the fast Fourier transform of a real array.",
        "Inverse Fourier transform of a complex array.",
        "Discrete Fourier transform along an axis.",
        "Plot lines and markers on the axes.",
        "Set the x limits of the axes.",
        "Draw a histogram on the axes with bins.",
        "Sort an array along an axis.",
        "Open a file and read its lines.",
        "Read the lines of a text file lazily.",
        "Return the array of sorted unique values.",
    ]
    groups = [[0, 1, 2], [3, 4, 5], [7, 8], [6, 9, 0], [], [2, 2, 1]]
    got = distinctive_words(texts, groups, top_k=4, min_count=2)
    want = ref_distinctive(texts, groups, top_k=4, min_count=2)
    assert got.words == [[w for w, _ in g] for g in want]
    for scores, ref in zip(got.scores, want, strict=True):
        np.testing.assert_allclose(scores, [s for _, s in ref], rtol=1e-12)
    assert got.words[0][:2] == ["fourier", "transform"]
    assert got.words[1] == ["axes"]
    assert got.words[4] == [] and got.scores[4] == []
    vocab = sorted({w for t in texts for w in ref_words(t)})
    assert got.vocabulary == vocab
    df = np.array([sum(w in ref_words(t) for t in texts) for w in vocab])
    np.testing.assert_allclose(got.idf, np.log(11 / (1 + df)) + 1, rtol=1e-12)


def test_distinctive_words_on_a_random_corpus():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(40)]
    texts = [" ".join(rng.choice(vocab, size=rng.integers(1, 12))) for _ in range(60)]
    groups = [rng.choice(60, size=rng.integers(1, 10)).tolist() for _ in range(15)]
    got = distinctive_words(texts, groups, top_k=6, min_count=1)
    want = ref_distinctive(texts, groups, top_k=6, min_count=1)
    assert got.words == [[w for w, _ in g] for g in want]


def test_distinctive_words_rejects_bad_input():
    with pytest.raises(ValueError, match="texts must not be empty"):
        distinctive_words([], [])
    with pytest.raises(ValueError, match=r"texts\[1\] is int"):
        distinctive_words(["a b", 3], [[0]])
    with pytest.raises(ValueError, match=r"groups\[0\] must hold indices in \[0, N=2\)"):
        distinctive_words(["aa", "bb"], [[2]])
    with pytest.raises(ValueError, match=r"groups\[0\] must be a 1-D sequence"):
        distinctive_words(["aa", "bb"], [[0.5]])
    with pytest.raises(ValueError, match="top_k"):
        distinctive_words(["aa"], [[0]], top_k=0)


def ref_f1(active, labels):
    """Loops: for each label, every feature's F1 and the first best."""
    fires = np.asarray(active) != 0
    rows = []
    for c in sorted(set(labels.tolist())):
        y = labels == c
        best = (-1.0, -1, 0.0, 0.0)
        for f in range(fires.shape[1]):
            tp = int(np.sum(fires[:, f] & y))
            fired = int(np.sum(fires[:, f]))
            f1 = 2 * tp / (fired + y.sum())
            if f1 > best[0]:
                best = (f1, f, tp / fired if fired else 0.0, tp / y.sum())
        f1, f, p, r = best
        rows.append((c, int(y.sum()), f if f1 > 0 else -1, f1, p, r))
    return rows


def test_label_feature_f1_equals_the_loop_reference_dense_and_sparse():
    from scipy.sparse import csr_array

    rng = np.random.default_rng(1)
    active = rng.random((200, 30)) * (rng.random((200, 30)) < 0.1)
    labels = rng.choice(np.array(["numpy", "scipy", "stdlib", "jax"]), size=200)
    active[labels == "jax", 7] = 1.0  # feature 7 fires on every jax row
    want = ref_f1(active, labels)
    for given in (active, csr_array(active), active > 0):
        got = label_feature_f1(given, labels)
        assert got.labels.tolist() == [r[0] for r in want]
        assert got.support.tolist() == [r[1] for r in want]
        assert got.feature.tolist() == [r[2] for r in want]
        np.testing.assert_allclose(got.f1, [r[3] for r in want], rtol=1e-12)
        np.testing.assert_allclose(got.precision, [r[4] for r in want], rtol=1e-12)
        np.testing.assert_allclose(got.recall, [r[5] for r in want], rtol=1e-12)
    got = label_feature_f1(active, labels)
    assert got.feature[got.labels.tolist().index("jax")] == 7


def test_label_feature_f1_a_label_no_feature_fires_on():
    active = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    got = label_feature_f1(active, np.array([0, 1, 2]))
    assert got.feature.tolist() == [0, -1, 1]
    assert got.f1.tolist() == [1.0, 0.0, 1.0] and got.precision[1] == 0.0


def test_label_feature_f1_rejects_bad_input():
    with pytest.raises(ValueError, match=r"labels must be \[N=3\]"):
        label_feature_f1(np.ones((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="active must be a non-empty"):
        label_feature_f1(np.ones(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="numbers or booleans"):
        label_feature_f1(np.array([["a"]]), np.array([0]))
