"""Embedding diagnostics: spectrum, effective rank, participation ratio, alignment, uniformity.

Every public function validates its arguments in Python, then calls a jitted core. Inputs in
bfloat16/float16 are computed in float32; float64 stays float64 when ``jax_enable_x64`` is on.
All functions accept sharded ``jax.Array`` inputs (e.g. rows split over a ``data`` mesh axis)
and return the same values as for unsharded inputs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxemb._validate import check_array, check_int, check_positive, check_same_shape, shape_str

_NORM_EPS = 1e-12


def _compute_dtype(x: jax.Array) -> jnp.dtype:
    """float32 for low-precision floats, otherwise the input dtype (float32 or float64)."""
    return jnp.promote_types(x.dtype, jnp.float32)


def _to_float(x: jax.Array) -> jax.Array:
    return x.astype(_compute_dtype(x))


def _l2_normalize(x: jax.Array) -> jax.Array:
    """Rows divided by ``max(‖x‖, 1e-12)`` (``torch.nn.functional.normalize`` semantics)."""
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(norm, _NORM_EPS)


def _check_matrix(x: ArrayLike, name: str) -> jax.Array:
    if not hasattr(x, "shape") and isinstance(x, (list, tuple)):
        x = np.asarray(x)
    check_array(x, name, ndim=2, kind="float")
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature column; got {shape_str(x)}")
    return x if isinstance(x, jax.Array) else jnp.asarray(x)


# ---------------------------------------------------------------------------------------------
# Spectrum and effective rank
# ---------------------------------------------------------------------------------------------


@jax.jit
def _singular_values(x: jax.Array) -> jax.Array:
    s = jnp.linalg.svd(_to_float(x), compute_uv=False)
    # LAPACK/cuSOLVER already return descending values; sort anyway so the contract holds on
    # every backend.
    return -jnp.sort(-s)


def spectrum(x: ArrayLike) -> jax.Array:
    """Singular values of an embedding matrix, sorted in descending order.

    The matrix is used as given: it is **not** centred (the RankMe convention; centre it
    yourself, ``x - x.mean(0)``, for the PCA spectrum, whose squared values divided by
    ``N - 1`` are the covariance eigenvalues).

    Args:
      x: embeddings, [N, D] floating point.

    Returns:
      [min(N, D)] singular values ``σ_1 >= σ_2 >= ... >= 0`` (float32 for bfloat16/float32
      inputs).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> x = jnp.array([[3.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
      >>> [round(float(s), 4) for s in analysis.spectrum(x)]
      [3.0, 2.0]

    References:
      Used for power-law fits of representation spectra (Agrawal et al. 2022, "α-ReQ") and the
      RankMe effective rank (Garrido et al. 2023).
    """
    x = _check_matrix(x, "x")
    return _singular_values(x)


@jax.jit
def _rankme(x: jax.Array, eps: jax.Array) -> jax.Array:
    s = jnp.linalg.svd(_to_float(x), compute_uv=False)
    p = s / jnp.sum(jnp.abs(s)) + eps
    return jnp.exp(-jnp.sum(jax.scipy.special.xlogy(p, p)))  # 0·log 0 = 0 when eps = 0


def rankme(x: ArrayLike, *, eps: float = 1e-7) -> jax.Array:
    """RankMe effective rank: exponential of the entropy of the normalised singular values.

    ``p_k = σ_k / ‖σ‖₁ + eps`` and ``RankMe = exp(−Σ_k p_k log p_k)`` over the singular values
    ``σ`` of ``x`` (not centred). It ranges from about 1 (collapse onto one direction) to
    ``min(N, D)`` (all singular values equal).

    Args:
      x: embeddings, [N, D] floating point.
      eps: added to every ``p_k`` (the reference's ``1e-7``), keeps ``log`` finite.

    Returns:
      Scalar effective rank.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> round(float(analysis.rankme(jnp.eye(6)[:, :4])), 3)  # 4 equal singular values
      4.0
      >>> round(float(analysis.rankme(jnp.ones((5, 3)))), 3)  # rank one
      1.0

    References:
      Garrido, Balestriero, Najman, LeCun, "RankMe: Assessing the downstream performance of
      pretrained self-supervised representations by their rank", ICML 2023; matches the
      paper's reference formula (``p = S / ‖S‖₁ + 1e-7``, ``exp(entropy)``).
    """
    x = _check_matrix(x, "x")
    check_positive(eps, "eps", strict=False)
    return _rankme(x, jnp.asarray(eps, _compute_dtype(x)))


@jax.jit
def _participation_ratio(x: jax.Array) -> jax.Array:
    x = _to_float(x)
    n, d = x.shape
    xc = x - jnp.mean(x, axis=0, keepdims=True)
    # (Σλ)² / Σλ² = tr(C)² / ‖C‖_F²; the scale of C cancels, and the N x N Gram matrix has
    # the same non-zero eigenvalues as the D x D covariance, so use the smaller of the two.
    gram = xc.T @ xc if d <= n else xc @ xc.T
    trace = jnp.trace(gram)
    return trace * trace / jnp.sum(gram * gram)


def participation_ratio(x: ArrayLike) -> jax.Array:
    """Participation ratio ``(Σλ)² / Σλ²`` of the covariance eigenvalues ``λ`` of ``x``.

    Computed without an eigendecomposition as ``tr(C)² / ‖C‖_F²`` with ``C`` the covariance of
    the centred rows. It lies in ``[1, rank]``: about ``D`` for isotropic data, 1 when all the
    variance lies along one direction.

    Args:
      x: embeddings, [N, D] floating point, N >= 2.

    Returns:
      Scalar participation ratio (NaN when every row is identical).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> x = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
      >>> round(float(analysis.participation_ratio(x)), 3)
      2.0

    References:
      Gao, Trautmann, Yu, Santhanam, Ryu, Shenoy, Ganguli, "A theory of multineuronal
      dimensionality, dynamics and measurement", 2017 (participation ratio of neural
      covariance spectra); Recanatesi et al. 2019 for its use on learned representations.
    """
    x = _check_matrix(x, "x")
    if x.shape[0] < 2:
        raise ValueError(f"x must have at least 2 rows for a covariance; got {shape_str(x)}")
    return _participation_ratio(x)


# ---------------------------------------------------------------------------------------------
# Alignment and uniformity (Wang & Isola 2020)
# ---------------------------------------------------------------------------------------------


@jax.jit
def _alignment(a: jax.Array, b: jax.Array, alpha: jax.Array) -> jax.Array:
    dtype = jnp.promote_types(_compute_dtype(a), _compute_dtype(b))
    a = _l2_normalize(a.astype(dtype))
    b = _l2_normalize(b.astype(dtype))
    diff = a - b
    sq = jnp.sum(diff * diff, axis=-1)
    return jnp.mean(sq ** (alpha / 2))


def alignment(a: ArrayLike, b: ArrayLike, *, alpha: float = 2.0) -> jax.Array:
    """Alignment metric ``mean_i ‖a_i − b_i‖^α`` of L2-normalised positive pairs.

    Lower is better (positives closer). Rows are L2-normalised first (a no-op for inputs that
    already are), so the value lies in ``[0, 2^α]``.

    Args:
      a: embeddings of the first views, [N, D] floating point.
      b: embeddings of the paired second views, [N, D]; row i pairs with row i of ``a``.
      alpha: exponent ``α > 0`` of the distance (the reference default 2).

    Returns:
      Scalar mean over the N pairs.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> a = jnp.array([[1.0, 0.0], [0.0, 3.0]])
      >>> b = jnp.array([[0.0, 1.0], [0.0, 1.0]])  # first pair orthogonal, second identical
      >>> round(float(analysis.alignment(a, b)), 4)  # (2 + 0) / 2
      1.0

    References:
      Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
      Uniformity on the Hypersphere", ICML 2020; matches ``align_loss`` of their reference code
      (``(x - y).norm(p=2, dim=1).pow(alpha).mean()``).
    """
    a = _check_matrix(a, "a")
    b = _check_matrix(b, "b")
    check_same_shape(a, "a", b, "b")
    check_positive(alpha, "alpha")
    return _alignment(a, b, jnp.asarray(alpha, jnp.float32))


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _uniformity(x: jax.Array, t: jax.Array, chunk_size: int | None) -> jax.Array:
    x = _l2_normalize(_to_float(x))
    n = x.shape[0]
    t = t.astype(x.dtype)
    cols = jnp.arange(n)

    def row_lse(args):
        # One chunk of rows (under lax.map's batching): log Σ_{j≠i} exp(−t‖x_i − x_j‖²).
        xi, i = args
        sq = jnp.maximum(2.0 - 2.0 * (x @ xi), 0.0)  # ‖x_i − x_j‖² on the unit sphere, [N]
        logits = jnp.where(cols == i, -jnp.inf, -t * sq)
        return jax.nn.logsumexp(logits)

    per_row = jax.lax.map(row_lse, (x, jnp.arange(n)), batch_size=chunk_size or n)
    return jax.nn.logsumexp(per_row) - jnp.log(jnp.asarray(n * (n - 1), x.dtype))


def uniformity(x: ArrayLike, *, t: float = 2.0, chunk_size: int | None = None) -> jax.Array:
    """Uniformity metric ``log mean_{i≠j} exp(−t‖x_i − x_j‖²)`` of L2-normalised embeddings.

    Lower is better (more uniform on the hypersphere); the minimum over the sphere depends on
    N and D, and a fully collapsed set scores 0. Computed with log-sum-exp, so large ``t``
    stays finite. Rows are processed ``chunk_size`` at a time against all N rows, so memory is
    ``O(N·D + chunk_size·N)`` instead of ``O(N²)``.

    Args:
      x: embeddings, [N, D] floating point, N >= 2 (normalised internally).
      t: temperature ``t > 0`` of the Gaussian potential (the reference default 2).
      chunk_size: rows per chunk; ``None`` does all N rows at once.

    Returns:
      Scalar log of the mean Gaussian potential over ordered pairs ``i ≠ j`` (equal to the
      mean over unordered pairs, as ``torch.pdist`` computes it).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> x = jnp.array([[1.0, 0.0], [-1.0, 0.0]])  # antipodal: ‖x_0 − x_1‖² = 4
      >>> round(float(analysis.uniformity(x)), 4)  # log exp(−2 · 4)
      -8.0

    References:
      Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
      Uniformity on the Hypersphere", ICML 2020; matches ``uniform_loss`` of their reference
      code (``torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log()``).
    """
    x = _check_matrix(x, "x")
    if x.shape[0] < 2:
        raise ValueError(f"x must have at least 2 rows to form pairs; got {shape_str(x)}")
    check_positive(t, "t")
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size", minimum=1)
        chunk_size = min(int(chunk_size), x.shape[0])
    return _uniformity(x, jnp.asarray(t, jnp.float32), chunk_size)


__all__ = ["spectrum", "rankme", "participation_ratio", "alignment", "uniformity"]
