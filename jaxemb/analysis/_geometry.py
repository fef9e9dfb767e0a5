"""Geometry of an embedding cloud: anisotropy, isotropy, intrinsic dimension, hubness, anchors,
relative representations and whitening.

Pairwise quantities never materialise an ``[N, N]`` matrix: nearest neighbours come from the
package's one search engine (``jaxemb.retrieval._search._topk``), which walks
``chunk_size x chunk_size`` tiles of the distance matrix and keeps a running top-k per query
row, so memory is ``O(N·D + chunk_size·(chunk_size + k))``. Inputs whose rows are split over a
mesh (``NamedSharding(mesh, P("data"))``) run the neighbour search under ``jax.shard_map``:
each device handles its own query rows against the all-gathered corpus, and the answer equals
the unsharded one. Everything else runs under ``jax.jit`` on the global view.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.typing import ArrayLike

from jaxemb._validate import (
    check_choice,
    check_int,
    check_positive,
    check_scalar,
    shape_str,
)
from jaxemb.analysis._diagnostics import _l2_normalize, _to_float
from jaxemb.analysis._probes import _check_embeddings, _check_finite_rows
from jaxemb.retrieval._linear import _centered_eigh
from jaxemb.retrieval._search import _row_layout, _topk

_DEFAULT_CHUNK = 1024


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _matrix(x: Any, name: str, *, min_rows: int = 1, finite: bool = True) -> Any:
    """Validates an [N, D] float matrix with at least ``min_rows`` rows and finite rows."""
    x = _check_embeddings(x, name)
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} rows; got {shape_str(x)}")
    if finite:
        _check_finite_rows(x, name)
    return x


def _check_k(k: Any, n: int, name: str = "x") -> None:
    check_int(k, "k", minimum=1)
    if k > n - 1:
        raise ValueError(
            f"k must be <= N - 1 = {n - 1} (neighbours exclude the point itself) for "
            f"{name} with {n} rows; got k={k}"
        )


def _chunk(chunk_size: Any, n: int) -> int:
    check_int(chunk_size, "chunk_size", minimum=1)
    return min(int(chunk_size), n)


def _knn(
    x: jax.Array,
    k: int,
    chunk: int,
    metric: str,
    layout: tuple[Mesh, tuple[str, ...]] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """k nearest neighbours of every row among the other rows, by the one search engine.

    Returns ``(scores [N, k], indices [N, k])`` sorted best first; scores are cosine
    similarities (``metric="cosine"``) or negated squared Euclidean distances
    (``metric="sqeuclidean"``). Equal scores: the lower index comes first. With a ``layout``
    (rows split over mesh axes) each device searches for its own rows against the gathered
    set, and the results stay split like ``x``.
    """
    if metric == "sqeuclidean":
        x = x - jnp.mean(x, axis=0, keepdims=True)  # smaller norms: less cancellation
        metric = "l2"
    return _topk(
        x,
        x,
        k,
        metric=metric,
        chunk=chunk,
        q_block=chunk,
        layout=layout,
        shard="queries",
        exclude_self=True,
    )


# ---------------------------------------------------------------------------------------------
# Anisotropy and isotropy
# ---------------------------------------------------------------------------------------------


@jax.jit
def _anisotropy(x: jax.Array) -> jax.Array:
    u = _l2_normalize(_to_float(x))
    n = x.shape[0]
    total = jnp.sum(u, axis=0)
    diag = jnp.sum(u * u)  # N, minus the all-zero rows
    return (jnp.sum(total * total) - diag) / (n * (n - 1))


def anisotropy(x: ArrayLike) -> jax.Array:
    """Mean cosine similarity over all pairs of distinct rows (Ethayarajh's anisotropy).

    Computed in ``O(N·D)`` without a pairwise matrix as
    ``(‖Σ_i x̂_i‖² − Σ_i ‖x̂_i‖²) / (N(N − 1))`` with ``x̂_i = x_i / max(‖x_i‖, 1e-12)``; an
    all-zero row counts as similarity 0 to every other row. About 0 for isotropic data, 1 when
    every embedding points the same way.

    Args:
      x: embeddings, [N, D] floating point, N >= 2, all finite.

    Returns:
      Scalar mean of ``cos(x_i, x_j)`` over ordered pairs ``i ≠ j``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> x = jnp.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
      >>> round(float(analysis.anisotropy(x)), 4)  # (0 + 2 · 0.7071) / 3
      0.4714

    References:
      Ethayarajh, "How Contextual are Contextualized Word Representations?", EMNLP 2019
      (anisotropy as the expected cosine similarity of random pairs).
    """
    x = _matrix(x, "x", min_rows=2)
    return _anisotropy(jnp.asarray(x))


@jax.jit
def _isotropy(x: jax.Array) -> jax.Array:
    x = _to_float(x)
    n = x.shape[0]
    xc = x - jnp.mean(x, axis=0, keepdims=True)
    _, vecs = jnp.linalg.eigh(xc.T @ xc / (n - 1))  # columns: covariance eigenvectors
    proj = x @ vecs  # uᵀx_i for every eigenvector u, [N, D]
    log_z = jnp.concatenate(
        [jax.nn.logsumexp(proj, axis=0), jax.nn.logsumexp(-proj, axis=0)]
    )  # log Z(u) and log Z(−u)
    return jnp.exp(jnp.min(log_z) - jnp.max(log_z))


def isotropy(x: ArrayLike) -> jax.Array:
    """Partition-function isotropy ``min_u Z(u) / max_u Z(u)``, ``Z(u) = Σ_i exp(uᵀx_i)``.

    The minimum and maximum run over the covariance eigenvectors ``u`` **and their negatives**
    (``Z(u) ≠ Z(−u)`` in general and an eigenvector's sign is arbitrary, so both are used; this
    makes the value independent of the eigensolver). ``Z`` is evaluated on the raw (uncentred)
    rows, in log space. It lies in ``(0, 1]``: close to 1 for isotropic data, near 0 when one
    direction dominates. It is not scale invariant: larger norms push it down.

    Args:
      x: embeddings, [N, D] floating point, N >= 2, all finite.

    Returns:
      Scalar ``I(x) = min Z / max Z``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> x = jnp.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
      >>> round(float(analysis.isotropy(x)), 4)  # (2 + e + 1/e) / (2 + e² + e⁻²)
      0.534

    References:
      Mu & Viswanath, "All-but-the-Top: Simple and Effective Postprocessing for Word
      Representations", ICLR 2018 (``I({v}) = min_c Z(c) / max_c Z(c)`` approximated over the
      principal directions), after Arora et al., "A Latent Variable Model Approach to
      PMI-based Word Embeddings", TACL 2016.
    """
    x = _matrix(x, "x", min_rows=2)
    return _isotropy(jnp.asarray(x))


# ---------------------------------------------------------------------------------------------
# Intrinsic dimension
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("k", "chunk", "per_point", "layout"))
def _lid_mle(x, *, k, chunk, per_point, layout):
    s, _ = _knn(_to_float(x), k, chunk, "sqeuclidean", layout)
    log_r = 0.5 * jnp.log(-s)  # log r_1 <= ... <= log r_k, [N, k]
    inv = -jnp.mean(log_r - log_r[:, -1:], axis=1)  # (1/k) Σ_i log(r_k / r_i)
    if per_point:
        return 1.0 / inv
    return 1.0 / jnp.mean(inv)


def lid_mle(
    x: ArrayLike, k: int = 20, *, per_point: bool = False, chunk_size: int = _DEFAULT_CHUNK
) -> jax.Array:
    """Maximum-likelihood local intrinsic dimension from the k nearest Euclidean neighbours.

    Per point, with ``r_1 <= ... <= r_k`` the distances to its k nearest other points,
    ``LID(x) = −((1/k) Σ_{i≤k} log(r_i / r_k))⁻¹`` (the form of Ma et al. 2018; Levina and
    Bickel divide by ``k − 1`` instead, i.e. their value is this one times ``(k − 1)/k``).

    **Averaging.** ``per_point=False`` (default) returns the inverse of the mean of the per-point
    inverse estimates, ``(mean_x LID(x)⁻¹)⁻¹`` — MacKay & Ghahramani's correction, which is less
    biased than the plain mean of per-point values (that mean is ``per_point=True`` then
    ``.mean()``, Levina–Bickel's original averaging). Duplicated points give ``r_1 = 0`` and a
    per-point value of 0 (or NaN when ``r_k = 0`` too): deduplicate first.

    Args:
      x: embeddings, [N, D] floating point, all finite.
      k: neighbours per point, ``2 <= k <= N − 1``.
      per_point: return the [N] per-point estimates instead of the global one.
      chunk_size: tile size of the neighbour search (memory ``O(N·D + chunk_size²)``).

    Returns:
      Scalar global estimate, or [N] per-point estimates.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> x = jnp.array([[0.0], [1.0], [3.0], [7.0]])  # r = (1, 3) from 0: 2 / log(3) = 1.82
      >>> [round(float(v), 3) for v in analysis.lid_mle(x, 2, per_point=True)]
      [1.82, 2.885, 4.933, 4.933]

    References:
      Levina & Bickel, "Maximum Likelihood Estimation of Intrinsic Dimension", NeurIPS 2004;
      MacKay & Ghahramani, "Comments on Levina & Bickel" (2005); Ma et al., "Characterizing
      Adversarial Subspaces Using Local Intrinsic Dimensionality", ICLR 2018 (the formula).
    """
    x = _matrix(x, "x", min_rows=2)
    _check_k(k, x.shape[0])
    if k < 2:
        raise ValueError(
            "k must be >= 2 for lid_mle: with one neighbour every ratio r_i / r_k is 1 and the "
            f"estimate is -inf; got k={k}"
        )
    if per_point not in (True, False):
        raise ValueError(f"per_point must be a bool; got {per_point!r}")
    chunk = _chunk(chunk_size, x.shape[0])
    return _lid_mle(
        jnp.asarray(x), k=int(k), chunk=chunk, per_point=bool(per_point), layout=_row_layout(x)
    )


@functools.partial(jax.jit, static_argnames=("chunk", "method", "discard_fraction", "layout"))
def _lid_twonn(x, *, chunk, method, discard_fraction, layout):
    s, _ = _knn(_to_float(x), 2, chunk, "sqeuclidean", layout)
    log_mu = 0.5 * (jnp.log(-s[:, 1]) - jnp.log(-s[:, 0]))  # log(r_2 / r_1)
    n = x.shape[0]
    if method == "mle":
        return n / jnp.sum(log_mu)
    keep = int(n * (1.0 - discard_fraction))
    xs = jnp.sort(log_mu)[:keep]
    ecdf = jnp.arange(1, keep + 1, dtype=xs.dtype) / n
    ys = -jnp.log1p(-ecdf)
    return jnp.sum(xs * ys) / jnp.sum(xs * xs)


def lid_twonn(
    x: ArrayLike,
    *,
    method: str = "mle",
    discard_fraction: float = 0.1,
    chunk_size: int = _DEFAULT_CHUNK,
) -> jax.Array:
    """TwoNN global intrinsic dimension from the ratio of the two nearest-neighbour distances.

    With ``μ_i = r_2(i) / r_1(i)``, which follows a Pareto law ``F(μ) = 1 − μ^{−d}``:

    - ``method="mle"`` (default): the maximum-likelihood estimate ``d = N / Σ_i log μ_i``.
    - ``method="fit"``: Facco et al.'s linear fit through the origin of ``−log(1 − F(μ_i))``
      against ``log μ_i``, with ``F(μ_(i)) = i / N`` the empirical CDF of the sorted ratios and
      the largest ``discard_fraction`` of the ratios left out.

    Duplicated points (``r_1 = 0``) make the estimate 0/NaN: deduplicate first.

    Args:
      x: embeddings, [N, D] floating point, N >= 3, all finite.
      method: ``"mle"`` or ``"fit"``.
      discard_fraction: fraction in ``[0, 1)`` of the largest ratios dropped by ``"fit"``.
      chunk_size: tile size of the neighbour search.

    Returns:
      Scalar estimate of the intrinsic dimension.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> x = jnp.array([[0.0], [1.0], [3.0], [7.0]])  # μ = 3/1, 2/1, 3/2, 6/4
      >>> round(float(analysis.lid_twonn(x)), 4)  # 4 / log(13.5)
      1.5369

    References:
      Facco, d'Errico, Rodriguez, Laio, "Estimating the intrinsic dimension of datasets by a
      minimal neighborhood information", Scientific Reports 2017 (the fit, discarding 10%);
      scikit-dimension's ``TwoNN(discard_fraction=0.1)`` fits the same line. The MLE is the
      maximum-likelihood Pareto exponent, the two-neighbour case of Denti et al., "The
      generalized ratios intrinsic dimension estimator", Scientific Reports 2022.
    """
    x = _matrix(x, "x", min_rows=3)
    check_choice(method, "method", ("mle", "fit"))
    check_scalar(discard_fraction, "discard_fraction", low=0.0, high=1.0)
    if method == "fit" and int(x.shape[0] * (1.0 - float(discard_fraction))) < 1:
        raise ValueError(
            f"discard_fraction={discard_fraction} leaves no ratio to fit for x {shape_str(x)}"
        )
    chunk = _chunk(chunk_size, x.shape[0])
    return _lid_twonn(
        jnp.asarray(x),
        chunk=chunk,
        method=method,
        discard_fraction=float(discard_fraction),
        layout=_row_layout(x),
    )


# ---------------------------------------------------------------------------------------------
# Hubness
# ---------------------------------------------------------------------------------------------


class Hubness(NamedTuple):
    """Result of :func:`hubness`.

    Attributes:
      skewness: skewness ``E[(N_k − k)³] / std(N_k)³`` of the k-occurrence counts (the
        population moment, ``scipy.stats.skew(bias=True)``); large positive values mean hubs.
      antihub_fraction: fraction of points that are in nobody's k-NN list (``N_k = 0``).
      k_occurrence: [N] int32 counts ``N_k(i)`` of how many other points list ``i``.
    """

    skewness: jax.Array
    antihub_fraction: jax.Array
    k_occurrence: jax.Array


@functools.partial(jax.jit, static_argnames=("k", "chunk", "layout"))
def _hubness(x, *, k, chunk, layout):
    _, idx = _knn(_to_float(x), k, chunk, "cosine", layout)
    n = x.shape[0]
    counts = jnp.zeros((n,), jnp.int32).at[idx.reshape(-1)].add(1)
    c = counts.astype(jnp.promote_types(x.dtype, jnp.float32))
    dev = c - jnp.mean(c)
    m2 = jnp.mean(dev * dev)
    skew = jnp.mean(dev * dev * dev) / m2**1.5
    return Hubness(skew, jnp.mean((counts == 0).astype(c.dtype)), counts)


def hubness(x: ArrayLike, k: int = 10, *, chunk_size: int = _DEFAULT_CHUNK) -> Hubness:
    """Hubness of the cosine k-nearest-neighbour graph (Radovanović et al.).

    Every point lists its k most cosine-similar **other** points (equal similarities: lower
    index first); ``N_k(i)`` counts how often ``i`` is listed. The counts average exactly k;
    a right-skewed distribution means a few hubs appear in many lists while anti-hubs appear in
    none.

    Args:
      x: embeddings, [N, D] floating point, all finite.
      k: list length, ``1 <= k <= N − 1``.
      chunk_size: tile size of the neighbour search (memory ``O(N·D + chunk_size²)``).

    Returns:
      ``Hubness(skewness, antihub_fraction, k_occurrence [N])`` (skewness is NaN when every
      count equals k).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> x = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]])
      >>> h = analysis.hubness(x, 1)
      >>> h.k_occurrence.tolist(), float(h.antihub_fraction)
      ([1, 2, 1, 0], 0.25)

    References:
      Radovanović, Nanopoulos, Ivanović, "Hubs in Space: Popular Nearest Neighbors in
      High-Dimensional Data", JMLR 2010 (skewness of ``N_k``); scikit-hubness'
      ``k_skewness`` and ``antihub_occurrence`` (Feldbauer et al. 2020).
    """
    x = _matrix(x, "x", min_rows=2)
    _check_k(k, x.shape[0])
    chunk = _chunk(chunk_size, x.shape[0])
    return _hubness(jnp.asarray(x), k=int(k), chunk=chunk, layout=_row_layout(x))


# ---------------------------------------------------------------------------------------------
# Relative representations and anchors
# ---------------------------------------------------------------------------------------------


@jax.jit
def _relative(x, anchors):
    dtype = jnp.promote_types(_to_float(x).dtype, _to_float(anchors).dtype)
    return _l2_normalize(x.astype(dtype)) @ _l2_normalize(anchors.astype(dtype)).T


def relative_representation(x: ArrayLike, anchors: ArrayLike) -> jax.Array:
    """Relative representation: cosine similarity of every embedding to every anchor.

    Args:
      x: embeddings, [N, D] floating point.
      anchors: anchor embeddings in the same space, [A, D] (e.g. ``x[pick_anchors(x, A)]``).

    Returns:
      [N, A] cosine similarities (zero rows give 0).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> x = jnp.array([[2.0, 0.0], [1.0, 1.0]])
      >>> r = analysis.relative_representation(x, jnp.array([[1.0, 0.0]]))
      >>> r.shape, [round(float(v), 4) for v in r[:, 0]]
      ((2, 1), [1.0, 0.7071])

    References:
      Moschella et al., "Relative representations enable zero-shot latent space
      communication", ICLR 2023 (cosine similarity to a set of anchors).
    """
    x = _check_embeddings(x, "x")
    anchors = _check_embeddings(anchors, "anchors")
    if anchors.shape[1] != x.shape[1]:
        raise ValueError(
            f"anchors must have the width of x {shape_str(x)}, [A, {x.shape[1]}]; "
            f"got {shape_str(anchors)}"
        )
    return _relative(jnp.asarray(x), jnp.asarray(anchors))


@functools.partial(jax.jit, static_argnames=("n", "method"))
def _pick_anchors(x, key, *, n, method):
    x = _to_float(x)
    num = x.shape[0]
    if method == "random":
        return jax.random.choice(key, num, (n,), replace=False).astype(jnp.int32)
    key_first, key_rest = jax.random.split(key)
    first = jax.random.randint(key_first, (), 0, num, dtype=jnp.int32)

    def sqdist(i):
        diff = x - x[i][None, :]
        return jnp.sum(diff * diff, axis=1)

    def step(t, carry):
        chosen, mind, taken = carry
        if method == "farthest":
            nxt = jnp.argmax(jnp.where(taken, -1.0, mind)).astype(jnp.int32)
        else:  # k-means++: sample ∝ squared distance to the nearest chosen anchor
            w = jnp.where(taken, 0.0, mind)
            w = jnp.where(jnp.sum(w) > 0, w, jnp.where(taken, 0.0, 1.0))  # all duplicates
            nxt = jax.random.categorical(jax.random.fold_in(key_rest, t), jnp.log(w))
            nxt = nxt.astype(jnp.int32)
        return chosen.at[t].set(nxt), jnp.minimum(mind, sqdist(nxt)), taken.at[nxt].set(True)

    init = (
        jnp.zeros((n,), jnp.int32).at[0].set(first),
        sqdist(first),
        jnp.zeros((num,), bool).at[first].set(True),
    )
    return jax.lax.fori_loop(1, n, step, init)[0]


def pick_anchors(
    x: ArrayLike, n: int, *, method: str = "random", key: jax.Array | int = 0
) -> jax.Array:
    """Picks ``n`` distinct rows of ``x`` to serve as anchors; returns their indices.

    - ``"random"``: uniformly without replacement (Moschella et al.'s default).
    - ``"kmeans++"``: the k-means++ seeding: a uniform first anchor, then each next one drawn
      with probability proportional to its squared Euclidean distance to the nearest anchor.
    - ``"farthest"``: farthest-point sampling: a random first anchor, then greedily the point
      farthest (Euclidean) from all anchors chosen so far (lowest index on ties).

    Indices (not rows) are returned so the same anchors can be taken from a parallel space:
    ``relative_representation(y, y[idx])``.

    Args:
      x: embeddings, [N, D] floating point, all finite.
      n: number of anchors, ``1 <= n <= N``.
      method: ``"random"``, ``"kmeans++"`` or ``"farthest"``.
      key: a ``jax.random`` key or an integer seed.

    Returns:
      [n] int32 distinct row indices, in the order they were picked.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> x = jnp.array([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [0.0, 5.0]])
      >>> idx = analysis.pick_anchors(x, 3, method="farthest", key=0)
      >>> len({0, 1} & set(idx.tolist()))  # never both points of the close pair
      1

    References:
      Moschella et al., "Relative representations enable zero-shot latent space
      communication", ICLR 2023; Arthur & Vassilvitskii, "k-means++", SODA 2007; Gonzalez,
      "Clustering to minimize the maximum intercluster distance", 1985 (farthest point).
    """
    x = _matrix(x, "x")
    check_int(n, "n", minimum=1, maximum=x.shape[0])
    check_choice(method, "method", ("random", "kmeans++", "farthest"))
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        key = jax.random.key(int(key))
    elif not isinstance(key, jax.Array):
        raise ValueError(f"key must be a jax.random key or an int seed; got {type(key).__name__}")
    return _pick_anchors(jnp.asarray(x), key, n=int(n), method=method)


# ---------------------------------------------------------------------------------------------
# Whitening
# ---------------------------------------------------------------------------------------------


class Whitening(NamedTuple):
    """A fitted whitening transform; apply with :func:`whiten`.

    Attributes:
      mean: [D] mean of the fitting data.
      projection: [D, k] ``U Λ^{−1/2}`` (covariance eigenvectors by decreasing eigenvalue, each
        column scaled by ``1/sqrt(λ + eps)``).
    """

    mean: jax.Array
    projection: jax.Array


@functools.partial(jax.jit, static_argnames=("k",))
def _fit_whitening(x, eps, *, k):
    # The covariance eigendecomposition PCA uses (decreasing eigenvalues clipped at 0,
    # truncated to k, each eigenvector's largest-magnitude entry positive).
    mean, lam, vecs = _centered_eigh(x, k)
    return Whitening(mean, vecs / jnp.sqrt(lam + eps.astype(vecs.dtype))[None, :])


def fit_whitening(x: ArrayLike, *, k: int | None = None, eps: float = 1e-8) -> Whitening:
    """Fits BERT-whitening: ``(x − μ) U Λ^{−1/2}``, optionally keeping the top-k directions.

    ``μ`` is the mean of ``x`` and ``U Λ Uᵀ`` the eigendecomposition of its covariance
    (``N − 1`` denominator, as ``np.cov``). After :func:`whiten` the fitting data has identity
    covariance (over the kept ``k`` dimensions, when ``λ_k ≫ eps``).

    Args:
      x: embeddings to fit on, [N, D] floating point, N >= 2, all finite.
      k: dimensions kept (the top-k eigen-directions); ``None`` keeps all D.
      eps: added to each eigenvalue before ``Λ^{−1/2}``, so rank-deficient data stays finite
        (their null directions are then scaled up by ``1/sqrt(eps)``: truncate with ``k``).

    Returns:
      ``Whitening(mean [D], projection [D, k])``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> x = jnp.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
      >>> w = analysis.fit_whitening(x, k=1)
      >>> [round(float(v), 4) for v in analysis.whiten(x, w)[:, 0]]  # ±2 / sqrt(8/3)
      [1.2247, -1.2247, 0.0, 0.0]

    References:
      Su, Cao, Liang, Qiu, "Whitening Sentence Representations for Better Semantics and Faster
      Retrieval", 2021 (BERT-whitening; ``compute_kernel_bias`` of bojone/BERT-whitening:
      ``W = U diag(1/sqrt(s))``, truncated to the first k columns); Huang et al.,
      "WhiteningBERT", Findings of EMNLP 2021.
    """
    x = _matrix(x, "x", min_rows=2)
    d = x.shape[1]
    if k is None:
        k = d
    check_int(k, "k", minimum=1, maximum=d)
    check_positive(eps, "eps", strict=False)
    return _fit_whitening(jnp.asarray(x), jnp.asarray(eps, jnp.float32), k=int(k))


@jax.jit
def _whiten(x, mean, projection):
    x = _to_float(x)
    return (x - mean[None, :].astype(x.dtype)) @ projection.astype(x.dtype)


def whiten(x: ArrayLike, whitening: Whitening) -> jax.Array:
    """Applies a fitted whitening: ``(x − mean) @ projection``.

    Args:
      x: embeddings, [N, D] floating point (the fitting data or new data of the same width).
      whitening: the result of :func:`fit_whitening`.

    Returns:
      [N, k] whitened embeddings.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> x = jnp.array([[1.0, 2.0], [3.0, 2.0], [2.0, 4.0], [2.0, 0.0]])
      >>> z = analysis.whiten(x, analysis.fit_whitening(x))
      >>> ((z.T @ z / 3).round(4) + 0.0).tolist()  # identity covariance
      [[1.0, 0.0], [0.0, 1.0]]

    References:
      As :func:`fit_whitening`.
    """
    x = _check_embeddings(x, "x")
    if not isinstance(whitening, Whitening):
        raise ValueError(
            f"whitening must be a Whitening from fit_whitening; got {type(whitening).__name__}"
        )
    d = whitening.mean.shape[0]
    if x.shape[1] != d:
        raise ValueError(
            f"x must have the width of the fitted whitening [N, {d}]; got {shape_str(x)}"
        )
    return _whiten(jnp.asarray(x), whitening.mean, whitening.projection)


__all__ = [
    "anisotropy",
    "isotropy",
    "lid_mle",
    "lid_twonn",
    "Hubness",
    "hubness",
    "relative_representation",
    "pick_anchors",
    "Whitening",
    "fit_whitening",
    "whiten",
]
