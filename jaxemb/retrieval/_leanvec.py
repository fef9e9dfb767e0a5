"""LeanVec: linear dimensionality reduction for inner-product search (ID and OOD queries).

Queries are projected with ``A`` and the data with ``B`` (both ``[D, dim]``), and
``(qᵀA)(Bᵀx)`` stands in for ``qᵀx``. LeanVec-ID takes ``A = B`` = the principal directions of
the data (:func:`~jaxemb.retrieval.fit_pca`). LeanVec-OOD fits ``A`` and ``B`` to a sample of
queries whose distribution differs from the data's by minimising

    ``f(A, B) = Σ_q Σ_x (qᵀx − qᵀABᵀx)² ∝ ‖Kq^{1/2} (I − ABᵀ) Kx^{1/2}‖²_F
             = tr((I − ABᵀ)ᵀ Kq (I − ABᵀ) Kx)``

which needs only the ``D × D`` second moments ``Kq = QᵀQ / n_q`` and ``Kx = XᵀX / n_x``. The
constraint that ``A`` and ``B`` have orthonormal columns (the Stiefel manifold) is relaxed to its
convex hull, the unit spectral-norm ball, and the problem is solved by block-coordinate
Frank–Wolfe: alternately for ``A`` and ``B``, the linear minimisation oracle over the ball,
``argmin_{‖S‖₂ ≤ 1} ⟨∇, S⟩ = −UVᵀ`` (thin SVD ``∇ = UΣVᵀ``), and the convex step
``A ← (1 − γ_t) A + γ_t S``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxemb._validate import check_axis_match, check_choice, check_int, shape_str
from jaxemb.retrieval._linear import _HIGHEST, _check_matrix, _fit_pca, _to_float, _top_eigh

_METHODS = ("id", "ood")
_DEFAULT_ITERS = 100


class LeanVec(NamedTuple):
    """Fitted LeanVec projections: search ``queries @ query_projection`` against
    ``data @ data_projection`` with ``metric="dot"``.

    Attributes:
      query_projection: [D, dim] ``A``, applied to the queries.
      data_projection: [D, dim] ``B``, applied to the data (the same array as ``A`` for
        LeanVec-ID).
    """

    query_projection: jax.Array
    data_projection: jax.Array


def _second_moment(x: jax.Array) -> jax.Array:
    """``XᵀX / n`` (uncentred), scaled to unit trace: the minimiser does not depend on scale."""
    x = _to_float(x)
    k = jnp.matmul(x.T, x, precision=_HIGHEST) / x.shape[0]
    return k / jnp.maximum(jnp.trace(k), jnp.finfo(k.dtype).tiny)


def _mm(x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.matmul(x, y, precision=_HIGHEST)


def _ood_loss(kq_kx, kq_a, kx_b, a, b):
    """``tr((I − ABᵀ)ᵀ Kq (I − ABᵀ) Kx) = tr(KqKx) − 2⟨KqA, KxB⟩ + ⟨AᵀKqA, BᵀKxB⟩``.

    Written with the ``[D, dim]`` products ``KqA`` and ``KxB``, so no ``D × D × D`` product is
    formed (``kq_kx`` is the constant ``tr(KqKx)``).
    """
    return kq_kx - 2.0 * jnp.sum(kq_a * kx_b) + jnp.sum(_mm(a.T, kq_a) * _mm(b.T, kx_b))


def _lmo(grad: jax.Array) -> jax.Array:
    """``argmin_{‖S‖₂ ≤ 1} ⟨grad, S⟩ = −UVᵀ`` for the thin SVD ``grad = UΣVᵀ``."""
    u, _, vt = jnp.linalg.svd(grad, full_matrices=False)
    return -_mm(u, vt)


@functools.partial(jax.jit, static_argnames=("dim", "n_iter"))
def _fit_ood(queries, data, *, dim, n_iter):
    kq, kx = _second_moment(queries), _second_moment(data)
    kq_kx = jnp.sum(kq * kx)
    # Start from the in-distribution solution: A = B = the top eigenvectors of Kx.
    _, p = _top_eigh(kx, dim)
    # Rounding noise of the gradients, for the stationarity test below.
    noise = 100 * jnp.finfo(kq.dtype).eps * jnp.linalg.norm(kq) * jnp.linalg.norm(kx)

    def fw_step(x, grad, gamma, loss):
        """One Frank–Wolfe step of a block; none when its gap ``⟨∇, X − S⟩`` shows it is
        stationary (the oracle of a vanishing gradient would follow rounding noise: at the
        start, ``∇_A = −2 Kq (I − PPᵀ) Kx P`` is 0 for eigenvectors ``P`` of ``Kx``)."""
        s = _lmo(grad)
        gap = jnp.sum(grad * (x - s))
        return jnp.where(gap > 1e-4 * loss + noise, (1.0 - gamma) * x + gamma * s, x)

    def step(t, carry):
        a, b, kx_b, loss, best_a, best_b, best = carry
        # γ_t = 1 / (t + 2): the first step keeps half of the initialisation.
        gamma = 1.0 / (t.astype(kq.dtype) + 2.0)
        bt_kx_b = _mm(b.T, kx_b)
        grad_a = -2.0 * _mm(kq, kx_b - _mm(a, bt_kx_b))  # −2 Kq (I − ABᵀ) Kx B
        a = fw_step(a, grad_a, gamma, loss)
        kq_a = _mm(kq, a)
        at_kq_a = _mm(a.T, kq_a)
        loss = kq_kx - 2.0 * jnp.sum(kq_a * kx_b) + jnp.sum(at_kq_a * bt_kx_b)
        grad_b = -2.0 * _mm(kx, kq_a - _mm(b, at_kq_a))  # −2 Kx (I − ABᵀ)ᵀ Kq A
        b = fw_step(b, grad_b, gamma, loss)
        kx_b = _mm(kx, b)
        loss = _ood_loss(kq_kx, kq_a, kx_b, a, b)
        better = loss < best  # open-loop steps need not decrease f: keep the best iterate
        best_a = jnp.where(better, a, best_a)
        best_b = jnp.where(better, b, best_b)
        return a, b, kx_b, loss, best_a, best_b, jnp.where(better, loss, best)

    kx_p = _mm(kx, p)
    loss0 = _ood_loss(kq_kx, _mm(kq, p), kx_p, p, p)
    init = (p, p, kx_p, loss0, p, p, loss0)
    *_, a, b, _ = jax.lax.fori_loop(0, n_iter, step, init)
    return LeanVec(a, b)


def fit_leanvec(
    data: ArrayLike,
    queries: ArrayLike | None = None,
    *,
    dim: int,
    method: str = "id",
    n_iter: int | None = None,
) -> LeanVec:
    """Fits LeanVec query and data projections ``A``, ``B`` [D, dim] for inner-product search.

    ``"id"`` (in-distribution, no queries needed): ``A = B`` = the ``dim`` principal
    directions of the data (:func:`fit_pca`'s components), the reduction that best preserves
    inner products between data-like vectors.

    ``"ood"`` (out-of-distribution queries, e.g. text queries against image embeddings): ``A``
    and ``B`` minimise ``Σ_q Σ_x (qᵀx − qᵀABᵀx)²`` over a sample of queries, computed from the
    second moments ``Kq = QᵀQ / n_q`` and ``Kx = XᵀX / n_x`` only (``D × D``; the sample sizes
    do not enter the cost of the iterations). The Stiefel constraint on ``A`` and ``B`` is
    relaxed to the unit spectral-norm ball and ``n_iter`` rounds of block-coordinate
    Frank–Wolfe update ``A`` then ``B`` (oracle ``−UVᵀ`` of the gradient's thin SVD, step
    ``γ_t = 1 / (t + 2)``), starting from ``A = B`` = the top-``dim`` eigenvectors of ``Kx``
    (the uncentred PCA of the data, optimal when ``Kq ∝ Kx``); the iterate with the lowest
    objective is returned, so the fit is never worse than that start. Intel's reference
    starts from zeros with ``γ_t = 1 / (t + 1)^0.999`` and stops once a round changes the
    objective by < 0.1% (after ~100-200 rounds); at equal rounds this start reaches an equal
    or slightly lower objective. The objective keeps decreasing slowly past 100 rounds: raise
    ``n_iter`` for a closer fit. A block whose Frank–Wolfe gap ``⟨∇, X − S⟩`` is below
    ``1e-4`` of the objective (plus rounding noise) is left as is: at the start ``∇_A``
    vanishes, and its oracle would only follow rounding noise.

    Search with ``search(queries @ A, data @ B, k, metric="dot")``: the reduced inner product
    approximates ``qᵀx``. For cosine similarity, L2-normalise queries and data before fitting
    and projecting, and search the projections with ``"dot"``.

    Args:
      data: [N, D] floating point data (the corpus or a sample of it), all finite; N >= 2
        for ``"id"``.
      queries: [M, D] floating point sample of queries (``"ood"`` only), all finite. Use a
        sample other than the evaluation queries.
      dim: the reduced width, ``1 <= dim <= D``.
      method: ``"id"`` or ``"ood"``.
      n_iter: Frank–Wolfe rounds for ``"ood"`` (default 100); not used by ``"id"``.

    Returns:
      ``LeanVec(query_projection [D, dim], data_projection [D, dim])`` in float32 (float64
      under x64 for float64 inputs).

    Raises:
      ValueError: on an unknown method, missing queries for ``"ood"`` or queries / ``n_iter``
        given for ``"id"``, inputs that are not finite [N, D] float matrices of one width, or
        ``dim`` outside ``[1, D]``.

    Examples:
      >>> import numpy as np
      >>> from jaxemb.retrieval import fit_leanvec, search
      >>> rng = np.random.default_rng(0)
      >>> data = rng.normal(size=(300, 8)) * np.array([4, 4, 4, 4, 1, 1, 1, 1.0])
      >>> queries = rng.normal(size=(200, 8)) * np.array([0.1, 0.1, 0.1, 0.1, 3, 3, 3, 3])
      >>> lv = fit_leanvec(data, queries, dim=4, method="ood")
      >>> lv.query_projection.shape, lv.data_projection.shape
      ((8, 4), (8, 4))
      >>> _, ids = search(queries[:3] @ lv.query_projection, data @ lv.data_projection, 5,
      ...                 metric="dot")
      >>> _, exact = search(queries[:3], data, 5, metric="dot")
      >>> bool(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ids.tolist(),
      ...                                                          exact.tolist())]) > 0.8)
      True

    References:
      Tepper, Bhati, Aguerrebere, Hildebrand & Willke, "LeanVec: Searching vectors faster by
      making them fit", TMLR 2024 (arXiv:2312.16335): LeanVec-ID (PCA) and LeanVec-OOD
      (Frank–Wolfe block-coordinate descent on the relaxed Stiefel constraint); Intel
      ScalableVectorSearch's ``compute_leanvec_matrices`` (OOD, Python) and
      ``compute_leanvec_matrix`` (ID: PCA of the mean-removed data), whose
      objective, gradients, oracle and ``(data, query)`` matrices this follows.
    """
    check_choice(method, "method", _METHODS)
    data = _check_matrix(data, "data", min_rows=2 if method == "id" else 1)
    d = data.shape[1]
    check_int(dim, "dim", minimum=1)
    if dim > d:
        raise ValueError(f"dim must be <= the data width D={d} (data {shape_str(data)}); got {dim}")
    if method == "id":
        if queries is not None:
            raise ValueError(
                "queries are not used by method='id' (the PCA of the data); pass "
                "method='ood' to fit query and data projections to a query sample"
            )
        if n_iter is not None:
            raise ValueError(f"n_iter is not used by method='id'; got {n_iter!r}")
        pca = _fit_pca(jnp.asarray(data), dim=int(dim))
        return LeanVec(pca.components, pca.components)
    if queries is None:
        raise ValueError("queries must be given for method='ood' (a sample of [M, D] queries)")
    queries = _check_matrix(queries, "queries")
    check_axis_match(data, "data", 1, queries, "queries", 1)
    n_iter = _DEFAULT_ITERS if n_iter is None else n_iter
    check_int(n_iter, "n_iter", minimum=1)
    return _fit_ood(jnp.asarray(queries), jnp.asarray(data), dim=int(dim), n_iter=int(n_iter))
