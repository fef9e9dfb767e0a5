"""Linear reductions: PCA, and the eigendecomposition it shares with BERT-whitening.

:func:`_centered_eigh` (mean, covariance with the ``N − 1`` denominator, ``eigh``, the top
``k`` eigenpairs by decreasing eigenvalue with deterministic signs) is the one place both
:func:`fit_pca` and :func:`jaxemb.analysis.fit_whitening` get their eigenvectors from; LeanVec
(``_leanvec``) uses :func:`_top_eigh` on second-moment matrices.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxemb._validate import check_int, shape_str
from jaxemb.retrieval._search import _as_matrix, _check_finite_rows

_HIGHEST = jax.lax.Precision.HIGHEST


def _to_float(x: jax.Array) -> jax.Array:
    """float32 for low-precision floats, else the input dtype (float32, or float64 under x64)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _top_eigh(sym: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The top ``k`` eigenpairs ``(λ [k], U [D, k])`` of a symmetric ``[D, D]`` matrix.

    Eigenvalues decrease and are clipped at 0 (rounding can make a PSD matrix's smallest ones
    slightly negative); each eigenvector's largest-magnitude entry is positive (the convention
    of scikit-learn's ``svd_flip(u_based_decision=False)``), so the result is deterministic.
    """
    lam, vecs = jnp.linalg.eigh(sym)
    lam, vecs = lam[::-1][:k], vecs[:, ::-1][:, :k]
    pivot = jnp.take_along_axis(vecs, jnp.argmax(jnp.abs(vecs), axis=0)[None, :], axis=0)
    vecs = vecs * jnp.where(pivot < 0, -1.0, 1.0).astype(vecs.dtype)
    return jnp.maximum(lam, 0.0), vecs


def _centered_eigh(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(mean [D], λ [k], U [D, k])``: the top-k eigenpairs of the covariance of ``x`` [N, D].

    The covariance uses the ``N − 1`` denominator (``np.cov``, scikit-learn's
    ``explained_variance_``); ``x`` is cast to float32 (float64 stays float64).
    """
    x = _to_float(x)
    n = x.shape[0]
    mean = jnp.mean(x, axis=0)
    xc = x - mean[None, :]
    cov = jnp.matmul(xc.T, xc, precision=_HIGHEST) / (n - 1)
    lam, vecs = _top_eigh(cov, k)
    return mean, lam, vecs


class PCA(NamedTuple):
    """A fitted PCA; apply with :func:`apply_pca`.

    Attributes:
      mean: [D] mean of the fitting data.
      components: [D, dim] orthonormal principal directions by decreasing variance (columns;
        scikit-learn's ``components_.T``), each with its largest-magnitude entry positive.
      explained_variance: [dim] the variance along each direction (covariance eigenvalues,
        ``N − 1`` denominator), decreasing.
    """

    mean: jax.Array
    components: jax.Array
    explained_variance: jax.Array


@functools.partial(jax.jit, static_argnames=("dim",))
def _fit_pca(x, *, dim):
    mean, lam, vecs = _centered_eigh(x, dim)
    return PCA(mean, vecs, lam)


def _check_matrix(x: Any, name: str, *, min_rows: int = 1) -> Any:
    """An [N, D] float matrix with at least ``min_rows`` rows, all finite (when concrete)."""
    x = _as_matrix(x, name)
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} rows; got {shape_str(x)}")
    _check_finite_rows(x, name)
    return x


def fit_pca(x: ArrayLike, dim: int) -> PCA:
    """Fits PCA: the ``dim`` leading eigenvectors of the covariance of ``x``.

    The eigendecomposition is the one BERT-whitening uses
    (:func:`jaxemb.analysis.fit_whitening` keeps the same directions and rescales them), computed
    from the ``D × D`` covariance with ``eigh`` in float32 (float64 under x64). With ``N <= D``
    the covariance has rank at most ``N − 1``; directions beyond it have variance 0 and are an
    arbitrary orthonormal completion.

    Args:
      x: [N, D] floating point data, N >= 2, all finite.
      dim: directions kept, ``1 <= dim <= D``.

    Returns:
      ``PCA(mean [D], components [D, dim], explained_variance [dim])``.

    Raises:
      ValueError: if ``x`` is not a finite [N, D] float matrix with N >= 2, or ``dim`` is not
        in ``[1, D]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.retrieval import apply_pca, fit_pca
      >>> x = jnp.array([[2.0, 1.0], [-2.0, 1.0], [0.0, 2.0], [0.0, 0.0]])
      >>> pca = fit_pca(x, 1)
      >>> [round(float(v), 4) + 0.0 for v in pca.components[:, 0]]
      [1.0, 0.0]
      >>> round(float(pca.explained_variance[0]), 4)  # 8 / 3
      2.6667
      >>> [round(float(v), 4) + 0.0 for v in apply_pca(x, pca)[:, 0]]
      [2.0, -2.0, 0.0, 0.0]

    References:
      Pearson, "On lines and planes of closest fit to systems of points in space" (1901);
      scikit-learn ``sklearn.decomposition.PCA`` (``components_``, ``explained_variance_``
      with the ``N − 1`` denominator, ``svd_flip`` sign convention), whose results this matches
      up to the layout ``components = components_.T``.
    """
    x = _check_matrix(x, "x", min_rows=2)
    check_int(dim, "dim", minimum=1)
    if dim > x.shape[1]:
        raise ValueError(
            f"dim must be <= the data width D={x.shape[1]} (x {shape_str(x)}); got {dim}"
        )
    return _fit_pca(jnp.asarray(x), dim=int(dim))


@functools.partial(jax.jit, static_argnames=("center",))
def _apply_pca(x, mean, components, *, center):
    x = _to_float(x)
    if center:
        x = x - mean[None, :].astype(x.dtype)
    return jnp.matmul(x, components.astype(x.dtype), precision=_HIGHEST)


def apply_pca(x: ArrayLike, pca: PCA, *, center: bool = True) -> jax.Array:
    """Projects rows on the fitted principal directions: ``(x − mean) @ components``.

    For inner-product search, project the corpus and the queries with ``center=False`` (or
    only the corpus centred): ``qᵀ P Pᵀ (x − μ)`` differs from ``qᵀ P Pᵀ x`` by a constant per
    query, so the ranking is the same, whereas centring the queries too changes it.

    Args:
      x: [N, D] floating point rows of the fitted width.
      pca: the result of :func:`fit_pca`.
      center: subtract ``pca.mean`` first (the PCA transform); ``False`` projects ``x`` as is.

    Returns:
      [N, dim] projections (float32, or float64 for float64 inputs under x64).

    Raises:
      ValueError: if ``pca`` is not a :class:`PCA` or ``x`` is not [N, D] floats of its width.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.retrieval import apply_pca, fit_pca
      >>> x = jnp.array([[1.0, 1.0], [3.0, 3.0], [2.0, 2.0]])
      >>> z = apply_pca(x, fit_pca(x, 1))[:, 0]  # ±sqrt(2) along the diagonal
      >>> [round(float(v), 4) + 0.0 for v in z]
      [-1.4142, 1.4142, 0.0]

    References:
      As :func:`fit_pca` (``PCA.transform``).
    """
    if not isinstance(pca, PCA):
        raise ValueError(f"pca must be a PCA from fit_pca; got {type(pca).__name__}")
    x = _as_matrix(x, "x")
    d = pca.mean.shape[0]
    if x.shape[1] != d:
        raise ValueError(f"x must have the width of the fitted PCA [N, {d}]; got {shape_str(x)}")
    return _apply_pca(jnp.asarray(x), pca.mean, pca.components, center=bool(center))
