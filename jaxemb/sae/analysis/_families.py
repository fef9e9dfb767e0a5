"""Feature families: the maximum spanning forest of latent co-occurrence, rooted and cut."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy.sparse import csgraph, csr_array

from jaxemb import _validate as v


class FeatureFamilies(NamedTuple):
    """Result of :func:`feature_families`.

    Attributes:
      edges: ``[E, 2]`` int64 maximum-spanning-forest edges as ``(parent, child)`` latent pairs,
        by decreasing weight (``E = d_sae −`` number of trees).
      weights: ``[E]`` float64 symmetrised association of each edge.
      parent: ``[d_sae]`` int64 parent of each latent in the forest rooted at the most
        frequent latent of each tree; ``−1`` for roots (and latents that never co-fire).
      families: list of int64 arrays, one per family (a connected piece of the forest after
        dropping edges below the threshold, with at least ``min_size`` latents): the family's
        parent (its most frequent latent) first, then the other members in increasing order.
        Sorted by decreasing size, then by parent.
    """

    edges: np.ndarray
    weights: np.ndarray
    parent: np.ndarray
    families: list


def _symmetric_weights(weights: Any, name: str) -> np.ndarray:
    weights = v.check_array(weights, name, ndim=2, kind="number")
    w = np.asarray(weights, np.float64)
    if w.shape[0] != w.shape[1]:
        raise ValueError(f"{name} must be a square matrix; got {v.shape_str(w)}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{name} must be finite and non-negative")
    w = np.maximum(w, w.T)
    np.fill_diagonal(w, 0.0)
    return w


def _forest(w: np.ndarray) -> csr_array:
    """The maximum spanning forest of ``w`` (symmetric, zero diagonal) as a sparse matrix.

    scipy's spanning tree is a minimum one over the stored entries, so every edge's weight is
    mapped to ``top − w`` (positive, order reversed) and mapped back afterwards.
    """
    rows, cols = np.nonzero(np.triu(w, 1))
    top = (w.max() if w.size else 0.0) + 1.0
    flipped = csr_array((top - w[rows, cols], (rows, cols)), shape=w.shape)
    tree = csgraph.minimum_spanning_tree(flipped).tocoo()
    r, c = tree.row.astype(np.int64), tree.col.astype(np.int64)
    return csr_array((w[r, c], (r, c)), shape=w.shape)


def maximum_spanning_forest(weights: Any) -> tuple[np.ndarray, np.ndarray]:
    """Maximum spanning forest of a dense weighted graph (``scipy.sparse.csgraph``).

    An edge ``{i, j}`` exists when ``weights[i, j] > 0`` (the matrix is symmetrised with
    ``max(w_ij, w_ji)``; the diagonal is ignored). The forest is scipy's minimum spanning tree
    of the reversed weights (Kruskal), so it has the largest total weight of any acyclic set of
    edges, one tree per connected component.

    Args:
      weights: ``[V, V]`` non-negative edge weights.

    Returns:
      ``(edges [E, 2] int64, edge_weights [E] float64)``: each edge as ``(u, v)`` with
      ``u < v``, by decreasing weight (ties by ``u``, then ``v``).

    Examples:
      >>> import numpy as np
      >>> from jaxemb.sae import analysis
      >>> w = np.array([[0, 3, 1], [3, 0, 2], [1, 2, 0]], float)
      >>> edges, ew = analysis.maximum_spanning_forest(w)
      >>> edges.tolist(), ew.tolist()
      ([[0, 1], [1, 2]], [3.0, 2.0])

    References:
      Kruskal (1956); ``scipy.sparse.csgraph.minimum_spanning_tree``; O'Neill et al. (2024)
      take the maximum spanning tree of normalised feature co-occurrence.
    """
    w = _symmetric_weights(weights, "weights")
    tree = _forest(w).tocoo()
    u, vv = np.minimum(tree.row, tree.col), np.maximum(tree.row, tree.col)
    order = np.lexsort((vv, u, -tree.data))
    edges = np.stack([u[order], vv[order]], axis=1).astype(np.int64).reshape(-1, 2)
    return edges, np.asarray(tree.data[order], np.float64)


def feature_families(
    cooc: Any,
    *,
    frequency: Any = None,
    threshold: float = 0.1,
    min_size: int = 2,
) -> FeatureFamilies:
    """Feature families: the maximum spanning tree of latent co-occurrence, cut at a threshold.

    Follows O'Neill et al. (2024): the (normalised) co-occurrence matrix is a weighted graph
    over latents, and its maximum spanning tree keeps, for every latent, its strongest
    association chain. Here the graph is made undirected with ``max(w_ij, w_ji)`` (for the
    default ``"conditional"`` normalisation that is ``c_ij / min(f_i, f_j)``: how often the
    rarer latent fires with the other), the maximum spanning forest is found with
    ``scipy.sparse.csgraph`` (:func:`maximum_spanning_forest`), each tree is rooted at its most
    frequent latent (the most general feature, the family's parent; children are more
    specific) by a breadth-first walk, and the forest is cut at edges weaker than ``threshold``:
    every remaining connected component with at least ``min_size`` latents is a family.

    Args:
      cooc: ``[d_sae, d_sae]`` non-negative associations, usually
        ``normalized_cooccurrence(cooccurrence(...))``.
      frequency: ``[d_sae]`` firing counts or frequencies that pick the parents (pass
        ``counts.diagonal()``); ``None`` uses the diagonal of ``cooc`` (then, for normalised
        input, ties are broken by the lower index).
      threshold: weakest edge kept inside a family.
      min_size: smallest family reported.

    Returns:
      :class:`FeatureFamilies` ``(edges, weights, parent, families)``.

    Examples:
      >>> import numpy as np
      >>> from jaxemb.sae import analysis
      >>> counts = np.array([[10, 6, 5, 0], [6, 6, 0, 0], [5, 0, 5, 1], [0, 0, 1, 8]])
      >>> cooc = analysis.normalized_cooccurrence(counts)
      >>> fam = analysis.feature_families(cooc, frequency=counts.diagonal(), threshold=0.5)
      >>> fam.edges.tolist(), fam.parent.tolist()
      ([[0, 1], [0, 2], [2, 3]], [-1, 0, 0, 2])
      >>> [f.tolist() for f in fam.families]
      [[0, 1, 2]]

    References:
      O'Neill et al., "Disentangling Dense Embeddings with Sparse Autoencoders" (2024),
      Sec. 4.3 "Feature families" (maximum spanning tree over normalised co-occurrence,
      parents are the more frequently activating features); ``scipy.sparse.csgraph``
      (``minimum_spanning_tree``, ``breadth_first_order``, ``connected_components``).
    """
    cooc = v.check_array(cooc, "cooc", ndim=2, kind="number")
    n = np.shape(cooc)[0]
    if np.shape(cooc)[1] != n:
        raise ValueError(f"cooc must be a square [d_sae, d_sae] matrix; got {v.shape_str(cooc)}")
    w = _symmetric_weights(cooc, "cooc")
    if frequency is None:
        freq = np.diagonal(np.asarray(cooc, np.float64)).copy()
    else:
        frequency = v.check_array(frequency, "frequency", ndim=1, kind="number")
        if np.shape(frequency)[0] != n:
            raise ValueError(
                f"frequency must be [d_sae={n}] like cooc {v.shape_str(cooc)}; "
                f"got {v.shape_str(frequency)}"
            )
        freq = np.asarray(frequency, np.float64)
    v.check_positive(threshold, "threshold", strict=False)
    v.check_int(min_size, "min_size", minimum=1)

    forest = _forest(w)
    undirected = forest + forest.T
    # Root each tree at its most frequent latent (lower index on ties) and orient it outwards:
    # one breadth-first walk from an extra vertex n joined to every root.
    _, tree_of = csgraph.connected_components(undirected, directed=False)
    by_frequency = np.lexsort((np.arange(n), -freq))
    _, first = np.unique(tree_of[by_frequency], return_index=True)
    roots = by_frequency[first]
    coo = undirected.tocoo()
    augmented = csr_array(
        (
            np.concatenate([coo.data, np.ones(len(roots))]),
            (np.concatenate([coo.row, np.full(len(roots), n)]), np.concatenate([coo.col, roots])),
        ),
        shape=(n + 1, n + 1),
    )
    _, pred = csgraph.breadth_first_order(augmented, n, directed=False)
    parent = np.where(pred[:n] == n, -1, pred[:n]).astype(np.int64)
    child = np.flatnonzero(parent >= 0)
    edges = np.stack([parent[child], child], axis=1).astype(np.int64).reshape(-1, 2)
    weights = w[edges[:, 0], edges[:, 1]]
    by_weight = np.lexsort((edges[:, 1], -weights))
    edges, weights = edges[by_weight], weights[by_weight]

    # Families: connected components of the forest after dropping edges below the threshold.
    keep = weights >= threshold
    kept = csr_array((np.ones(int(keep.sum())), (edges[keep, 0], edges[keep, 1])), shape=(n, n))
    _, label = csgraph.connected_components(kept, directed=False)
    families = []
    for members in (np.flatnonzero(label == c) for c in np.unique(label)):
        if len(members) < min_size:
            continue
        top = int(members[np.lexsort((members, -freq[members]))[0]])
        families.append(np.concatenate([[top], members[members != top]]).astype(np.int64))
    families.sort(key=lambda f: (-len(f), int(f[0])))
    return FeatureFamilies(edges, weights.astype(np.float64), parent, families)
