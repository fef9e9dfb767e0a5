"""Distinctive words of groups of texts: TF-IDF of each group against the whole corpus."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy.sparse import csr_array

from jaxemb._validate import check_int

# A word: a letter, then letters, digits or underscores (identifiers such as "dtype" or
# "set_xlim" stay whole); matched on lowercased text.
_WORD = re.compile(r"[a-z][a-z0-9_]*")

# Function words of English that carry no topic (a short list in the spirit of the Glasgow /
# SMART stop lists); everything else is left to the inverse document frequency.
STOP_WORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing done down during each either
    else etc even ever every few for from further given had has have having he her here hers
    him his how however i if in into is it its itself just may me might more most much must my
    no nor not now of off on once one only or other otherwise our ours out over own per rather
    same shall she should since so some such than that the their theirs them then there these
    they this those through thus to too under until up upon us use used uses using very via was
    we were what when where whether which while who whom whose why will with within without
    would yet you your""".split()
)


def words(text: str, *, stop_words: frozenset[str] | None = STOP_WORDS, min_length: int = 2):
    """The words of ``text`` as :func:`distinctive_words` counts them.

    Lowercased runs of ``[a-z][a-z0-9_]*`` of at least ``min_length`` characters that are not
    in ``stop_words``.

    Args:
      text: a string.
      stop_words: words to drop (``None``: keep every word).
      min_length: shortest word kept.

    Returns:
      A list of words, in order, with repeats.

    Examples:
      >>> from jaxemb.analysis import words
      >>> words("Return the FFT of x_in, along axis 2.")
      ['return', 'fft', 'x_in', 'along', 'axis']
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str; got {type(text).__name__}")
    check_int(min_length, "min_length", minimum=1)
    stop = stop_words or frozenset()
    return [w for w in _WORD.findall(text.lower()) if len(w) >= min_length and w not in stop]


class DistinctiveWords(NamedTuple):
    """Result of :func:`distinctive_words`.

    Attributes:
      words: one list per group of its top words, best first.
      scores: one list per group of the words' TF-IDF scores (same order).
      idf: ``[V]`` float64 inverse document frequency of every vocabulary word.
      vocabulary: the ``V`` words of the corpus, sorted.
    """

    words: list[list[str]]
    scores: list[list[float]]
    idf: np.ndarray
    vocabulary: list[str]


def distinctive_words(
    texts: Sequence[str],
    groups: Sequence[Sequence[int]],
    *,
    top_k: int = 5,
    min_count: int = 2,
    stop_words: frozenset[str] | None = STOP_WORDS,
    min_length: int = 2,
) -> DistinctiveWords:
    """The words that set each group of texts apart from the corpus, by TF-IDF.

    Each group (e.g. the top-activating texts of a sparse-autoencoder feature) is one document
    scored against the whole corpus. With ``N`` texts, ``df(w)`` the number of texts holding
    word ``w`` (:func:`words`) and ``n_G(w)`` the number of the group's texts holding it:

    ``score(w, G) = n_G(w) / |G| · idf(w)``,  ``idf(w) = ln((1 + N) / (1 + df(w))) + 1``

    (binary term frequency, so one long text repeating a word does not dominate; the smoothed
    idf of scikit-learn's ``TfidfVectorizer``). Only words held by at least ``min_count`` of
    the group's texts are ranked (a word of one text only says nothing about the group); ties
    go to the alphabetically first word. Counts run on a ``scipy.sparse`` text × word matrix.

    Args:
      texts: the corpus, ``N`` strings.
      groups: one sequence of text indices in ``[0, N)`` per group (a repeated index counts
        once; an empty group gets no words).
      top_k: words returned per group (fewer when fewer qualify).
      min_count: texts of the group that must hold a word.
      stop_words: words never counted (``None``: none); default :data:`STOP_WORDS`.
      min_length: shortest word counted.

    Returns:
      :class:`DistinctiveWords` ``(words, scores, idf, vocabulary)``.

    Examples:
      >>> from jaxemb.analysis import distinctive_words
      >>> texts = ["fast fourier transform of an array", "inverse fourier transform",
      ...          "plot a line on the axes", "set the axes limits", "sort an array"]
      >>> out = distinctive_words(texts, [[0, 1], [2, 3]], top_k=2)
      >>> out.words
      [['fourier', 'transform'], ['axes']]
      >>> [round(s, 4) for s in out.scores[0]]
      [1.6931, 1.6931]

    References:
      Salton and Buckley, "Term-weighting approaches in automatic text retrieval" (1988);
      scikit-learn ``TfidfVectorizer(smooth_idf=True)``; O'Neill et al., "Disentangling Dense
      Embeddings with Sparse Autoencoders" (2024), feature interpretation from top-activating
      texts.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise ValueError(f"texts must be a sequence of strings; got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError("texts must not be empty")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(
            f"texts must all be str; texts[{bad[0]}] is {type(texts[bad[0]]).__name__}"
        )
    if isinstance(groups, str) or not isinstance(groups, Sequence):
        raise ValueError(f"groups must be a sequence of index sequences; got {type(groups)}")
    check_int(top_k, "top_k", minimum=1)
    check_int(min_count, "min_count", minimum=1)
    check_int(min_length, "min_length", minimum=1)
    n = len(texts)
    members = []
    for g, group in enumerate(groups):
        idx = np.asarray(group)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise ValueError(
                f"groups[{g}] must be a 1-D sequence of int text indices; got {group!r}"
            )
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"groups[{g}] must hold indices in [0, N={n}); got {idx.tolist()}")
        members.append(np.unique(idx.astype(np.int64)))

    tokens = [set(words(t, stop_words=stop_words, min_length=min_length)) for t in texts]
    vocabulary = sorted(set().union(*tokens))
    column = {w: j for j, w in enumerate(vocabulary)}
    indptr = np.cumsum([0] + [len(t) for t in tokens])
    indices = np.fromiter((column[w] for t in tokens for w in t), np.int64, int(indptr[-1]))
    holds = csr_array(
        (np.ones(len(indices), np.float64), indices, indptr), shape=(n, len(vocabulary))
    )
    df = np.asarray(holds.sum(axis=0)).ravel()
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0

    out_words, out_scores = [], []
    for idx in members:
        if idx.size == 0:
            out_words.append([])
            out_scores.append([])
            continue
        count = np.asarray(holds[idx].sum(axis=0)).ravel()
        score = count / idx.size * idf
        ok = np.flatnonzero(count >= min_count)
        # best score first; vocabulary is sorted, so the lower column is the earlier word
        best = ok[np.lexsort((ok, -score[ok]))][:top_k]
        out_words.append([vocabulary[j] for j in best])
        out_scores.append([float(score[j]) for j in best])
    return DistinctiveWords(out_words, out_scores, idf, vocabulary)
