"""Feature analysis for sparse autoencoders: examples, co-occurrence, families, steering.

* :func:`top_activating` streams a dataset through an encoder and keeps, for every latent, the
  rows that activate it most, with memory ``O(d_sae · top_n)`` whatever the dataset size.
* :func:`cooccurrence` counts how often pairs of latents fire together (streaming over
  batches), :func:`normalized_cooccurrence` turns counts into association strengths and
  :func:`feature_families` builds the maximum spanning tree over them and cuts it into
  families of related latents ("Disentangling Dense Embeddings with Sparse Autoencoders").
* :func:`steer` adds a latent's decoder direction to inputs (Concept Steerers);
  :func:`clamp` sets one latent of the code and adds the reconstruction error back
  (feature-clamped search).
* :func:`cluster_decoder_directions` runs spherical k-means on the decoder rows to find groups
  of latents that span multi-dimensional features.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxemb import _validate as v
from jaxemb.retrieval import kmeans
from jaxemb.sae._base import SparseCode, _densify, check_batch, check_code, check_sae


def top_activating(
    encode_fn: Callable[[Any], Any],
    batches: Iterable[Any],
    d_sae: int,
    *,
    top_n: int = 9,
    threshold: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """The ``top_n`` rows of a dataset that activate each latent most, computed by streaming.

    Each batch is encoded, its per-latent top ``top_n`` is merged with the running top
    ``top_n``, and row indices count rows over all batches in order (global row indices).
    Activations at or below ``threshold`` do not count as activating; slots left empty (a latent
    that fired on fewer than ``top_n`` rows) hold value ``−inf`` and index ``−1``. Ties go to
    the earlier row, so the result equals a stable sort of the whole activation matrix.

    Args:
      encode_fn: maps a ``[n_i, d_in]`` batch to a :class:`~jaxemb.sae.SparseCode`
        (``[n_i, k]``) or dense ``[n_i, d_sae]`` activations, e.g. ``model.encode`` (wrap it in
        ``jax.jit`` or ``nnx.jit`` for speed).
      batches: iterable of ``[n_i, d_in]`` arrays (any ``n_i``).
      d_sae: number of latents.
      top_n: examples kept per latent.
      threshold: activations must exceed it to count (``-inf`` counts every row).

    Returns:
      ``(values [d_sae, top_n] float32, example_indices [d_sae, top_n] int32)``, each row in
      decreasing order of activation.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import analysis
      >>> batches = [jnp.array([[1.0, 0.0], [3.0, 0.0]]), jnp.array([[2.0, 5.0]])]
      >>> vals, idx = analysis.top_activating(lambda x: x, batches, 2, top_n=2)
      >>> idx.tolist()
      [[1, 2], [2, -1]]
      >>> vals.tolist()
      [[3.0, 2.0], [5.0, -inf]]

    References:
      Bricken et al., "Towards Monosemanticity" (2023), feature dashboards; SAELens /
      sae_dashboard top-k activating examples.
    """
    if not callable(encode_fn):
        raise ValueError(f"encode_fn must be callable; got {type(encode_fn).__name__}")
    v.check_int(d_sae, "d_sae", minimum=1)
    v.check_int(top_n, "top_n", minimum=1)
    if not isinstance(threshold, (int, float, np.floating, np.integer)) or np.isnan(threshold):
        raise ValueError(f"threshold must be a number; got {threshold!r}")
    values = jnp.full((d_sae, top_n), -jnp.inf, jnp.float32)
    indices = jnp.full((d_sae, top_n), -1, jnp.int32)
    offset = 0
    for i, batch in enumerate(batches):
        batch = v.check_array(batch, f"batches[{i}]", ndim=2, kind="float", allow_empty=True)
        n = batch.shape[0]
        if n == 0:
            continue
        acts = encode_fn(batch)
        name = f"encode_fn(batches[{i}])"
        if isinstance(acts, SparseCode):
            check_code(acts, name)
            if acts.values.shape[0] != n:
                raise ValueError(f"{name} must have {n} rows; got {v.shape_str(acts.values)}")
            acts = _densify(acts.values, acts.indices, d_sae)
        else:
            acts = v.check_array(acts, name, ndim=2, kind="float")
            if tuple(acts.shape) != (n, d_sae):
                raise ValueError(f"{name} must be [{n}, d_sae={d_sae}]; got {v.shape_str(acts)}")
        values, indices = _merge(
            values, indices, jnp.asarray(acts), jnp.int32(offset), jnp.float32(threshold)
        )
        offset += n
    return values, indices


@functools.partial(jax.jit, donate_argnums=(0, 1))
def _merge(values, indices, acts, offset, threshold):
    top_n = values.shape[1]
    a = acts.astype(jnp.float32).T  # [d_sae, n]
    a = jnp.where(a > threshold, a, -jnp.inf)
    new_v, new_i = jax.lax.top_k(a, min(top_n, a.shape[1]))
    new_i = jnp.where(jnp.isfinite(new_v), new_i + offset, -1)
    # Running entries come first, so on ties top_k keeps the earlier rows.
    cat_v = jnp.concatenate([values, new_v], axis=1)
    cat_i = jnp.concatenate([indices, new_i], axis=1)
    out_v, pos = jax.lax.top_k(cat_v, top_n)
    return out_v, jnp.take_along_axis(cat_i, pos, axis=1)


# ---------------------------------------------------------------------------------------------
# co-occurrence and feature families


def _is_single_code(x: Any) -> bool:
    return isinstance(x, SparseCode) or hasattr(x, "shape")


def cooccurrence(codes_or_batches: Any, d_sae: int) -> jax.Array:
    """Counts how often every pair of latents fires on the same row, streaming over batches.

    A latent fires on a row when its activation there is non-zero (as in
    :func:`~jaxemb.sae.metrics.firing_frequency`). ``counts[i, j]`` is the number of rows on
    which latents ``i`` and ``j`` both fire, so the diagonal holds each latent's firing count.
    Sparse codes are counted by a jitted scatter-add of the ``k²`` active pairs of each row
    (``O(N·k²)``, whatever ``d_sae``; an index repeated within a row counts once); dense codes
    by the matmul ``Bᵀ B`` of their binary activation matrix.

    Args:
      codes_or_batches: one code — a :class:`~jaxemb.sae.SparseCode` (``[N, k]``) or dense
        ``[N, d_sae]`` activations — or an iterable of such codes (e.g. ``model.encode`` of
        each batch of a dataset).
      d_sae: number of latents.

    Returns:
      ``[d_sae, d_sae]`` int32 symmetric matrix of co-firing counts.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import SparseCode, analysis
      >>> code = SparseCode(jnp.array([[1.0, 2.0], [3.0, 0.0]]), jnp.array([[0, 2], [2, 1]]))
      >>> analysis.cooccurrence(code, 3).tolist()   # row 2's latent 1 has value 0: not firing
      [[1, 0, 1], [0, 0, 0], [1, 0, 2]]
      >>> dense = jnp.array([[1.0, 0.0, 1.0], [0.0, 0.5, 0.5]])
      >>> analysis.cooccurrence([dense, dense], 3).tolist()
      [[2, 0, 2], [0, 2, 2], [2, 2, 4]]

    References:
      O'Neill et al., "Disentangling Dense Embeddings with Sparse Autoencoders" (2024),
      Sec. 4 (co-occurrence of SAE features over a corpus).
    """
    v.check_int(d_sae, "d_sae", minimum=1)
    batches = [codes_or_batches] if _is_single_code(codes_or_batches) else codes_or_batches
    try:
        batches = iter(batches)
    except TypeError:
        raise ValueError(
            "codes_or_batches must be a SparseCode, a [N, d_sae] array or an iterable of them; "
            f"got {type(codes_or_batches).__name__}"
        ) from None
    counts = jnp.zeros((d_sae, d_sae), jnp.int32)
    for i, code in enumerate(batches):
        name = f"codes_or_batches[{i}]"
        if isinstance(code, SparseCode):
            check_code(code, name, d_sae=d_sae)
            if code.values.shape[0] == 0:
                continue
            counts = _cooc_sparse(counts, jnp.asarray(code.values), jnp.asarray(code.indices))
        else:
            code = v.check_array(code, name, ndim=2, kind="number", allow_empty=True)
            if code.shape[1] != d_sae:
                raise ValueError(f"{name} must be [N, d_sae={d_sae}]; got {v.shape_str(code)}")
            if code.shape[0] == 0:
                continue
            counts = _cooc_dense(counts, jnp.asarray(code))
    return counts


@functools.partial(jax.jit, donate_argnums=(0,))
def _cooc_sparse(counts, values, indices):
    k = indices.shape[1]
    active = values != 0
    same = (indices[:, :, None] == indices[:, None, :]) & active[:, None, :]
    earlier = jnp.tril(jnp.ones((k, k), jnp.bool_), -1)  # [a, b]: b < a
    first = active & ~jnp.any(same & earlier[None, :, :], axis=2)  # first active occurrence
    w = (first[:, :, None] & first[:, None, :]).astype(jnp.int32)  # [N, k, k]
    rows = jnp.broadcast_to(indices[:, :, None], w.shape)
    cols = jnp.broadcast_to(indices[:, None, :], w.shape)
    return counts.at[rows.reshape(-1), cols.reshape(-1)].add(w.reshape(-1))


@functools.partial(jax.jit, donate_argnums=(0,))
def _cooc_dense(counts, acts):
    b = (acts != 0).astype(jnp.float32)
    # Exact in float32 while a batch has fewer than 2**24 rows.
    pair = jnp.matmul(b.T, b, precision=jax.lax.Precision.HIGHEST)
    return counts + jnp.round(pair).astype(jnp.int32)


_NORMALIZATIONS = ("conditional", "jaccard", "cosine")


def normalized_cooccurrence(counts: Any, *, method: str = "conditional") -> jax.Array:
    """Turns co-firing counts into association strengths in ``[0, 1]``.

    With ``f_i = counts[i, i]`` (firing counts) and ``c_ij = counts[i, j]``:

    * ``"conditional"`` (default, O'Neill et al.): ``c_ij / f_i``, the fraction of the rows
      where ``i`` fires on which ``j`` fires too, ``P(j | i)``. Not symmetric: a rare, specific
      latent ``j`` that always fires with a general latent ``i`` has ``P(i | j) = 1`` while
      ``P(j | i)`` is small — the asymmetry that orients feature families.
    * ``"jaccard"``: ``c_ij / (f_i + f_j − c_ij)``.
    * ``"cosine"``: ``c_ij / sqrt(f_i f_j)`` (Ochiai coefficient).

    Entries whose denominator is zero (a latent that never fired) are 0. The diagonal is 1 for
    every latent that fired.

    Args:
      counts: ``[d_sae, d_sae]`` counts from :func:`cooccurrence`.
      method: ``"conditional"``, ``"jaccard"`` or ``"cosine"``.

    Returns:
      ``[d_sae, d_sae]`` float32.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import analysis
      >>> counts = jnp.array([[4, 2], [2, 2]])
      >>> analysis.normalized_cooccurrence(counts).tolist()
      [[1.0, 0.5], [1.0, 1.0]]
      >>> analysis.normalized_cooccurrence(counts, method="jaccard").tolist()
      [[1.0, 0.5], [0.5, 1.0]]

    References:
      O'Neill et al., "Disentangling Dense Embeddings with Sparse Autoencoders" (2024),
      Sec. 4 (co-occurrence normalised by each feature's activation count).
    """
    counts = v.check_array(counts, "counts", ndim=2, kind="number")
    if counts.shape[0] != counts.shape[1]:
        raise ValueError(
            f"counts must be a square [d_sae, d_sae] matrix; got {v.shape_str(counts)}"
        )
    v.check_choice(method, "method", _NORMALIZATIONS)
    return _normalize(jnp.asarray(counts), method)


@functools.partial(jax.jit, static_argnames=("method",))
def _normalize(counts, method):
    c = counts.astype(jnp.float32)
    f = jnp.diagonal(c)
    if method == "conditional":
        den = jnp.broadcast_to(f[:, None], c.shape)
    elif method == "jaccard":
        den = f[:, None] + f[None, :] - c
    else:
        den = jnp.sqrt(f[:, None] * f[None, :])
    return jnp.where(den > 0, c / jnp.where(den > 0, den, 1.0), 0.0)


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


def maximum_spanning_forest(weights: Any) -> tuple[np.ndarray, np.ndarray]:
    """Maximum spanning forest of a dense weighted graph (Prim's algorithm, ``O(V²)`` in NumPy).

    An edge ``{i, j}`` exists when ``weights[i, j] > 0`` (the matrix is symmetrised with
    ``max(w_ij, w_ji)``; the diagonal is ignored). Each tree is grown from its lowest-index
    vertex; ties go to the lower index.

    Args:
      weights: ``[V, V]`` non-negative edge weights.

    Returns:
      ``(edges [E, 2] int64, edge_weights [E] float64)`` with ``edges[e] = (u, v)``, ``u`` the
      vertex already in the tree when ``v`` joined it, in the order Prim added them.

    Examples:
      >>> import numpy as np
      >>> from jaxemb.sae import analysis
      >>> w = np.array([[0, 3, 1], [3, 0, 2], [1, 2, 0]], float)
      >>> edges, ew = analysis.maximum_spanning_forest(w)
      >>> edges.tolist(), ew.tolist()
      ([[0, 1], [1, 2]], [3.0, 2.0])

    References:
      Prim (1957); O'Neill et al. (2024) take the maximum spanning tree of normalised feature
      co-occurrence.
    """
    weights = v.check_array(weights, "weights", ndim=2, kind="number")
    w = np.asarray(weights, np.float64)
    if w.shape[0] != w.shape[1]:
        raise ValueError(f"weights must be a square [V, V] matrix; got {v.shape_str(w)}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    w = np.maximum(w, w.T)
    np.fill_diagonal(w, 0.0)
    n = w.shape[0]
    in_tree = np.zeros(n, bool)
    key = np.full(n, -np.inf)
    link = np.full(n, -1, np.int64)
    edges, ew = [], []
    for _ in range(n):
        cand = np.where(in_tree, -np.inf, key)
        u = int(np.argmax(cand))
        if not cand[u] > 0:  # nothing reachable: start a new tree at the lowest free vertex
            u = int(np.argmin(in_tree))
        else:
            edges.append((int(link[u]), u))
            ew.append(float(cand[u]))
        in_tree[u] = True
        better = (~in_tree) & (w[u] > key)
        key[better] = w[u][better]
        link[better] = u
    return np.asarray(edges, np.int64).reshape(-1, 2), np.asarray(ew, np.float64)


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
    rarer latent fires with the other), the maximum spanning forest is found with Prim's
    algorithm (:func:`maximum_spanning_forest`), each tree is rooted at its most frequent latent
    (the most general feature, the family's parent; children are more specific), and the
    forest is cut at edges weaker than ``threshold``: every remaining connected piece with at
    least ``min_size`` latents is a family.

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
      parents are the more frequently activating features).
    """
    cooc = v.check_array(cooc, "cooc", ndim=2, kind="number")
    w = np.asarray(cooc, np.float64)
    n = w.shape[0]
    if w.shape[1] != n:
        raise ValueError(f"cooc must be a square [d_sae, d_sae] matrix; got {v.shape_str(w)}")
    if frequency is None:
        freq = np.diagonal(w).copy()
    else:
        frequency = v.check_array(frequency, "frequency", ndim=1, kind="number")
        if np.shape(frequency)[0] != n:
            raise ValueError(
                f"frequency must be [d_sae={n}] like cooc {v.shape_str(w)}; "
                f"got {v.shape_str(frequency)}"
            )
        freq = np.asarray(frequency, np.float64)
    v.check_positive(threshold, "threshold", strict=False)
    v.check_int(min_size, "min_size", minimum=1)
    tree_edges, tree_w = maximum_spanning_forest(w)

    adj: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for (a, b), wt in zip(tree_edges.tolist(), tree_w.tolist()):
        adj[a].append((b, wt))
        adj[b].append((a, wt))
    order = np.lexsort((np.arange(n), -freq))  # most frequent first, then lower index
    parent = np.full(n, -1, np.int64)
    seen = np.zeros(n, bool)
    edges, weights = [], []
    for root in order.tolist():
        if seen[root]:
            continue
        seen[root] = True
        stack = [root]
        while stack:
            a = stack.pop()
            for b, wt in adj[a]:
                if not seen[b]:
                    seen[b] = True
                    parent[b] = a
                    edges.append((a, b))
                    weights.append(wt)
                    stack.append(b)
    edges_a = np.asarray(edges, np.int64).reshape(-1, 2)
    weights_a = np.asarray(weights, np.float64)
    by_weight = np.lexsort((edges_a[:, 1], -weights_a)) if len(weights_a) else np.zeros(0, int)
    edges_a, weights_a = edges_a[by_weight], weights_a[by_weight]

    # Families: connected pieces of the forest after dropping edges below the threshold.
    comp = np.arange(n)

    def find(a):
        while comp[a] != a:
            comp[a] = comp[comp[a]]
            a = comp[a]
        return a

    for (a, b), wt in zip(edges_a.tolist(), weights_a.tolist()):
        if wt >= threshold:
            comp[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for a in range(n):
        groups.setdefault(find(a), []).append(a)
    families = []
    for members in groups.values():
        if len(members) < min_size:
            continue
        m = np.asarray(members, np.int64)
        top = int(m[np.lexsort((m, -freq[m]))[0]])
        families.append(np.concatenate([[top], np.sort(m[m != top])]).astype(np.int64))
    families.sort(key=lambda f: (-len(f), int(f[0])))
    return FeatureFamilies(edges_a, weights_a, parent, families)


# ---------------------------------------------------------------------------------------------
# steering


def _check_latent(latent: Any, d_sae: int, name: str = "latent") -> None:
    if isinstance(latent, bool) or not isinstance(latent, (int, np.integer)):
        raise ValueError(f"{name} must be an integer latent index; got {latent!r}")
    if not 0 <= int(latent) < d_sae:
        raise ValueError(f"{name} must be in [0, d_sae={d_sae}); got {latent}")


def _check_scalar(value: Any, name: str) -> None:
    if not v.is_concrete(value):
        return
    a = np.asarray(value)
    if a.ndim != 0 or not (np.issubdtype(a.dtype, np.number)) or np.issubdtype(a.dtype, np.bool_):
        raise ValueError(f"{name} must be a real scalar; got {value!r}")
    if not np.isfinite(a):
        raise ValueError(f"{name} must be finite; got {value!r}")


def steer(model: Any, x: Any, latent: int, strength: Any) -> jax.Array:
    """Steers inputs along a latent's decoder direction: ``x + strength · W_dec[latent]``.

    The decoder row is added as stored. For a model with an input scale ``s``
    (:func:`~jaxemb.sae.fit_input_norm`), decoder rows live in the scaled space, so raising the
    latent's activation by ``a`` moves a reconstruction by ``a · W_dec[latent] / s``: pass
    ``strength = a / s`` for that.

    Args:
      model: an SAE module (any :mod:`jaxemb.sae` variant).
      x: ``[N, d_in]`` or ``[d_in]`` float embeddings.
      latent: index of the latent in ``[0, d_sae)``.
      strength: scalar multiple of the decoder row to add (negative steers away).

    Returns:
      Array of ``x``'s shape.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.TopKSAE(2, 3, k=1, rngs=nnx.Rngs(0))
      >>> model.W_dec[...] = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
      >>> sae.analysis.steer(model, jnp.array([[1.0, 1.0]]), 2, 5.0).tolist()
      [[4.0, 5.0]]

    References:
      "Concept Steerers: Leveraging K-Sparse Autoencoders for Controllable Generations"
      (Kim and Ghadiyaram, 2025): add the scaled decoder direction of a concept latent;
      O'Neill et al. (2024) steer semantic search the same way.
    """
    check_sae(model)
    x = v.check_array(x, "x", ndim=(1, 2), kind="float")
    if np.shape(x)[-1] != model.d_in:
        raise ValueError(f"x must be [N, d_in={model.d_in}] or [d_in]; got {v.shape_str(x)}")
    _check_latent(latent, model.d_sae)
    _check_scalar(strength, "strength")
    x = jnp.asarray(x)
    row = model.W_dec[...][int(latent)]
    if x.ndim == 2:
        row = row[None, :]
    return (x + jnp.asarray(strength, row.dtype) * row).astype(jnp.result_type(x, row))


def clamp(model: Any, x: Any, latent: int, value: Any) -> jax.Array:
    """Sets one latent of the code to ``value``, decodes, and adds the reconstruction error back.

    ``out = decode(code with latent := value) + (x − decode(code))`` with ``code = encode(x)``:
    only the part of ``x`` the SAE explains changes, so clamping a latent to its current value
    returns ``x`` (up to rounding). For a sparse code the latent's entries are zeroed and a new
    ``(value, latent)`` entry is appended, which is the same as setting it in the dense code.

    Args:
      model: an SAE module with ``encode`` and ``decode``.
      x: ``[N, d_in]`` float embeddings.
      latent: index of the latent in ``[0, d_sae)``.
      value: scalar (or ``[N]``) activation to clamp it to (0 ablates the latent).

    Returns:
      ``[N, d_in]`` edited embeddings.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.TopKSAE(2, 2, k=1, rngs=nnx.Rngs(0))
      >>> model.W_enc[...] = jnp.eye(2)
      >>> model.W_dec[...] = jnp.eye(2)
      >>> x = jnp.array([[3.0, 1.0]])                  # code: latent 0 = 3, error [0, 1]
      >>> sae.analysis.clamp(model, x, 0, 10.0).tolist()
      [[10.0, 1.0]]
      >>> sae.analysis.clamp(model, x, 1, 4.0).tolist()
      [[3.0, 5.0]]

    References:
      O'Neill et al., "Disentangling Dense Embeddings with Sparse Autoencoders" (2024),
      Sec. 6 (feature-clamped semantic search with the SAE error term added back); Templeton
      et al., "Scaling Monosemanticity" (2024), feature clamping.
    """
    check_sae(model)
    check_batch(x, model.d_in)
    _check_latent(latent, model.d_sae)
    x = jnp.asarray(x)
    n = x.shape[0]
    if v.is_concrete(value) and np.ndim(value) == 1:
        value = v.check_array(value, "value", ndim=1, kind="number")
        if np.shape(value)[0] != n:
            raise ValueError(f"value must be a scalar or [N={n}]; got {v.shape_str(value)}")
    else:
        _check_scalar(value, "value")
    code = model.encode(x)
    x_hat = model.decode(code)
    if isinstance(code, SparseCode):
        vals = jnp.asarray(code.values)
        new_col = jnp.broadcast_to(jnp.asarray(value, vals.dtype), (n,))[:, None]
        hit = code.indices == int(latent)
        edited = SparseCode(
            jnp.concatenate([jnp.where(hit, jnp.zeros_like(vals), vals), new_col], axis=1),
            jnp.concatenate(
                [code.indices, jnp.full((n, 1), int(latent), code.indices.dtype)], axis=1
            ),
        )
    else:
        z = jnp.asarray(code)
        edited = z.at[:, int(latent)].set(jnp.broadcast_to(jnp.asarray(value, z.dtype), (n,)))
    return model.decode(edited) + (x - x_hat)


# ---------------------------------------------------------------------------------------------
# decoder-direction clustering


def cluster_decoder_directions(
    W_dec: Any,
    n_clusters: int,
    *,
    key: jax.Array,
    n_iter: int = 100,
    eps: float = 1e-8,
) -> tuple[jax.Array, jax.Array]:
    """Spherical k-means on the unit decoder rows (groups of latents sharing a subspace).

    Spherical :func:`jaxemb.retrieval.kmeans`: rows are normalised to unit length; centroids
    start from k-means++ seeding (squared chord distance ``‖u − c‖² = 2 − 2 cos``) and Lloyd
    iterations assign every row to the centroid of largest cosine and set each centroid to the
    normalised mean of its rows (a cluster that empties keeps its centroid). Latents whose
    directions cluster together are candidates for a multi-dimensional feature (e.g. the
    circular day-of-week features of Engels et al.).

    Args:
      W_dec: ``[d_sae, d_in]`` decoder, or an SAE module (its ``W_dec`` is used).
      n_clusters: number of clusters, ``1 <= n_clusters <= d_sae``.
      key: PRNG key for the seeding.
      n_iter: Lloyd iterations.
      eps: kept for compatibility; the norms' floor is kmeans' 1e-12.

    Returns:
      ``(labels [d_sae] int32, centroids [n_clusters, d_in] float32 unit rows)``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxemb.sae import analysis
      >>> W = jnp.array([[1.0, 0.1], [1.0, -0.1], [2.0, 0.0], [0.0, 1.0], [0.1, 3.0]])
      >>> labels, cent = analysis.cluster_decoder_directions(W, 2, key=jax.random.key(0))
      >>> bool(labels[0] == labels[1] == labels[2]), bool(labels[3] == labels[4] != labels[0])
      (True, True)

    References:
      Dhillon and Modha, "Concept decompositions for large sparse text data using clustering"
      (2001), spherical k-means; Arthur and Vassilvitskii (2007), k-means++; Engels et al.,
      "Not All Language Model Features Are Linear" (2024), clustering SAE decoder directions.
    """
    if hasattr(W_dec, "W_dec") and not hasattr(W_dec, "shape"):
        W_dec = W_dec.W_dec[...]
    W_dec = v.check_array(W_dec, "W_dec", ndim=2, kind="float")
    v.check_int(n_clusters, "n_clusters", minimum=1, maximum=int(np.shape(W_dec)[0]))
    v.check_int(n_iter, "n_iter", minimum=0)
    v.check_positive(eps, "eps")
    if not isinstance(key, jax.Array) or key.shape != () and key.shape != (2,):
        raise ValueError(f"key must be a PRNG key such as jax.random.key(0); got {key!r}")
    if v.is_concrete(W_dec) and not np.isfinite(np.asarray(W_dec, np.float32)).all():
        raise ValueError("W_dec must be finite; it holds NaN or inf")
    del eps  # rows are normalised by jaxemb.retrieval.kmeans (eps 1e-12)
    result = kmeans(W_dec, n_clusters, key=key, n_iter=n_iter, metric="cosine")
    return result.labels, result.centroids


__all__ = [
    "top_activating",
    "cooccurrence",
    "normalized_cooccurrence",
    "FeatureFamilies",
    "maximum_spanning_forest",
    "feature_families",
    "steer",
    "clamp",
    "cluster_decoder_directions",
]
