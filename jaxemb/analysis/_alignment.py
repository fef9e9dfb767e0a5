"""How well single features detect a metadata label: the best feature-fires F1 per label."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy.sparse import csr_array, issparse

from jaxemb._validate import shape_str


class LabelAlignment(NamedTuple):
    """Result of :func:`label_feature_f1`, one entry per label (in sorted label order).

    Attributes:
      labels: ``[C]`` the distinct labels, sorted.
      support: ``[C]`` int64 number of rows with each label.
      feature: ``[C]`` int64 the feature of highest F1 for the label (``−1``: no feature fires
        on any of its rows).
      f1: ``[C]`` float64 its F1 score.
      precision: ``[C]`` float64 the fraction of the rows where it fires that carry the label.
      recall: ``[C]`` float64 the fraction of the label's rows where it fires.
    """

    labels: np.ndarray
    support: np.ndarray
    feature: np.ndarray
    f1: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


def label_feature_f1(active: Any, labels: Any) -> LabelAlignment:
    """For each label, the single feature whose firing best predicts it, by F1.

    Feature ``f`` predicts label ``c`` on row ``i`` when it fires there (``active[i, f]``
    non-zero). With ``tp`` the rows of ``c`` where ``f`` fires, ``fired`` the rows where ``f``
    fires and ``n_c`` the rows of ``c``: ``precision = tp / fired``, ``recall = tp / n_c`` and
    ``F1 = 2 tp / (fired + n_c)``. The best feature of a label maximises F1 (ties: the lower
    index). All ``tp`` counts come from one sparse product ``Yᵀ A`` of the one-hot label matrix
    and the binary activity matrix.

    Args:
      active: ``[N, F]`` feature activity: a dense array or a ``scipy.sparse`` matrix (e.g. SAE
        codes); non-zero means the feature fires.
      labels: ``[N]`` one label per row (ints or strings).

    Returns:
      :class:`LabelAlignment` ``(labels, support, feature, f1, precision, recall)``.

    Examples:
      >>> import numpy as np
      >>> from jaxemb.analysis import label_feature_f1
      >>> active = np.array([[1, 0, 1], [1, 0, 0], [0, 2, 0], [0, 1, 1]])
      >>> out = label_feature_f1(active, np.array(["a", "a", "b", "b"]))
      >>> out.labels.tolist(), out.feature.tolist(), out.f1.tolist()
      (['a', 'b'], [0, 1], [1.0, 1.0])
      >>> out = label_feature_f1(active, np.array(["a", "b", "b", "b"]))
      >>> out.feature.tolist(), out.f1.round(4).tolist(), out.precision.tolist()
      ([0, 1], [0.6667, 0.8], [0.5, 1.0])

    References:
      O'Neill et al., "Disentangling Dense Embeddings with Sparse Autoencoders" (2024), the
      alignment of features with paper metadata (subject categories); Gurnee et al., "Finding
      Neurons in a Haystack" (2023), single-feature classifiers scored by F1.
    """
    if issparse(active):
        if active.ndim != 2:
            raise ValueError(f"active must be [N, F]; got shape {active.shape}")
        fires = csr_array(active)
        fires.eliminate_zeros()
        fires = csr_array(
            (np.ones_like(fires.data, np.float64), fires.indices, fires.indptr), fires.shape
        )
    else:
        a = np.asarray(active)
        if a.ndim != 2 or a.size == 0:
            raise ValueError(f"active must be a non-empty [N, F] array; got {shape_str(a)}")
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise ValueError(f"active must hold numbers or booleans; got dtype {a.dtype}")
        fires = csr_array((a != 0).astype(np.float64))
    n, n_features = fires.shape
    if n == 0 or n_features == 0:
        raise ValueError(f"active must be a non-empty [N, F] matrix; got shape {fires.shape}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must be [N={n}] like active's rows; got {shape_str(labels)}")
    names, label_of = np.unique(labels, return_inverse=True)
    onehot = csr_array((np.ones(n), (np.arange(n), label_of)), shape=(n, len(names)))
    tp = (onehot.T @ fires).toarray()  # [C, F]
    fired = np.asarray(fires.sum(axis=0)).ravel()  # [F]
    support = np.bincount(label_of, minlength=len(names)).astype(np.int64)
    f1 = 2.0 * tp / (fired[None, :] + support[:, None])
    best = np.argmax(f1, axis=1)  # first maximum: the lower index on ties
    rows = np.arange(len(names))
    hit = tp[rows, best]
    feature = np.where(hit > 0, best, -1).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(hit > 0, hit / np.maximum(fired[best], 1), 0.0)
    recall = hit / support
    return LabelAlignment(
        names, support, feature, f1[rows, best].astype(np.float64), precision, recall
    )
