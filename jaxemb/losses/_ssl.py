"""Self-supervised losses and representation regularisers (losses.md §3).

Alignment and uniformity (Wang & Isola), VICReg, Barlow Twins, LDReg's local-dimensionality
regulariser and CARE's orthogonal-equivariance penalty. Each is a pure function of
``[batch, dim]`` embeddings written for the global batch, so jitting it on batch-sharded inputs
gives the single-device value and gradients.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb._numerics import propagate_nan
from jaxemb.losses._common import as_float, l2_normalize, masked_logsumexp

# VICReg's variance floor inside the square root (official code: ``x.var(dim=0) + 0.0001``).
_VICREG_EPS = 1e-4
# BatchNorm1d's default eps (Barlow Twins standardises each view with BatchNorm1d(affine=False)).
_BN_EPS = 1e-5


def _check_pair(a, name_a: str, b, name_b: str, *, min_batch: int = 1) -> None:
    a = v.check_array(a, name_a, ndim=2)
    b = v.check_array(b, name_b, ndim=2)
    if tuple(np.shape(b)) != tuple(np.shape(a)):
        raise ValueError(
            f"{name_b} must be [batch, dim] like {name_a} {v.shape_str(a)}; got {v.shape_str(b)}"
        )
    _check_min_batch(a, name_a, min_batch)


def _check_min_batch(x, name: str, min_batch: int) -> None:
    if np.shape(x)[0] < min_batch:
        raise ValueError(
            f"{name} must have at least {min_batch} rows (batch statistics need them); "
            f"got shape {v.shape_str(x)}"
        )


def _check_finite_nonneg(value, name: str) -> None:
    v.check_positive(value, name, strict=False)


def _safe_pow_half(sq: jax.Array, alpha: jax.Array) -> jax.Array:
    """``sq ** (alpha / 2)`` with value and gradient 0 where ``sq == 0`` (no ``0 · inf``)."""
    pos = sq > 0
    return jnp.where(pos, jnp.where(pos, sq, 1.0) ** (alpha / 2), 0.0)


def _safe_sqrt(sq: jax.Array) -> jax.Array:
    """``sqrt(max(sq, 0))`` whose gradient at 0 is 0 instead of ``inf``."""
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def _off_diagonal_sq_sum(m: jax.Array) -> jax.Array:
    """``Σ_{i≠j} m_ij²`` over the last two axes (masking, not ``Σ all − Σ diag``, so there is no
    cancellation when the diagonal dominates)."""
    eye = jnp.eye(m.shape[-1], dtype=bool)
    off = jnp.where(eye, 0.0, m)
    return jnp.sum(off * off)


# ---------------------------------------------------------------------------------------------
# Alignment and uniformity (Wang & Isola 2020)
# ---------------------------------------------------------------------------------------------


def alignment(a: ArrayLike, b: ArrayLike, *, alpha: float = 2.0) -> jax.Array:
    """Alignment loss ``mean_i ‖â_i − b̂_i‖^α`` of L2-normalised positive pairs.

    Rows are L2-normalised first (``x / max(‖x‖, 1e-12)``), so the loss is invariant to the
    scale of each row and lies in ``[0, 2^α]``. The distance is raised to ``α`` from its square
    (``(‖·‖²)^{α/2}``, never through a square root), and identical pairs contribute value and
    gradient 0, so the gradient is finite everywhere.

    Args:
      a: first views, ``[batch, dim]`` float.
      b: second views, ``[batch, dim]`` float; row ``i`` is the positive of ``a[i]``.
      alpha: exponent ``α > 0`` of the distance (reference default 2).

    Returns:
      A float32 scalar, the mean over the batch.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import alignment
      >>> a = jnp.array([[1.0, 0.0], [0.0, 3.0]])
      >>> b = jnp.array([[0.0, 1.0], [0.0, 1.0]])  # orthogonal pair (‖·‖² = 2), identical pair
      >>> round(float(alignment(a, b)), 4)  # (2 + 0) / 2
      1.0

    References:
      Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
      Uniformity on the Hypersphere", ICML 2020; reference code ``align_loss(x, y, alpha=2)``
      (``(x - y).norm(p=2, dim=1).pow(alpha).mean()`` on normalised features). The metric of
      the same name in ``jaxemb.analysis`` is for evaluation; this one is the training loss.
    """
    _check_pair(a, "a", b, "b")
    v.check_positive(alpha, "alpha")
    return _alignment(a, b, jnp.asarray(alpha, jnp.float32))


@jax.jit
@propagate_nan
def _alignment(a, b, alpha):
    a = l2_normalize(a)
    b = l2_normalize(b)
    diff = a - b
    sq = jnp.sum(diff * diff, axis=-1)
    return jnp.mean(_safe_pow_half(sq, alpha.astype(sq.dtype)))


def uniformity(x: ArrayLike, *, t: float = 2.0) -> jax.Array:
    """Uniformity loss ``log mean_{i≠j} exp(−t‖x̂_i − x̂_j‖²)`` of L2-normalised embeddings.

    Squared distances come straight from the Gram matrix (``‖x̂_i‖² + ‖x̂_j‖² − 2 x̂_i·x̂_j``,
    no square root, so coincident points have a finite gradient) and the mean of the Gaussian
    potential is taken in log space with a log-sum-exp. The mean over ordered pairs ``i ≠ j``
    equals the mean over unordered pairs ``i < j`` that ``torch.pdist`` yields.

    Args:
      x: embeddings, ``[batch, dim]`` float, ``batch >= 2``.
      t: temperature ``t > 0`` of the Gaussian potential (reference default 2).

    Returns:
      A float32 scalar (0 for a fully collapsed batch; more negative is more uniform).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import uniformity
      >>> x = jnp.array([[1.0, 0.0], [-2.0, 0.0]])  # antipodal after normalising: ‖·‖² = 4
      >>> round(float(uniformity(x, t=2.0)), 4)  # log exp(−2 · 4)
      -8.0

    References:
      Wang & Isola, ICML 2020; reference code ``uniform_loss(x, t=2)``
      (``torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log()`` on normalised features).
    """
    x = v.check_array(x, "x", ndim=2)
    _check_min_batch(x, "x", 2)
    v.check_positive(t, "t")
    return _uniformity(x, jnp.asarray(t, jnp.float32))


@jax.jit
@propagate_nan
def _uniformity(x, t):
    x = l2_normalize(x)
    n = x.shape[0]
    sqn = jnp.sum(x * x, axis=-1)
    sq = sqn[:, None] + sqn[None, :] - 2.0 * (x @ x.T)
    idx = jnp.arange(n)
    not_self = idx[:, None] != idx[None, :]
    logits = -t.astype(sq.dtype) * sq
    lse = masked_logsumexp(logits.reshape(-1), not_self.reshape(-1), axis=0)
    return lse - jnp.log(jnp.asarray(n * (n - 1), sq.dtype))


# ---------------------------------------------------------------------------------------------
# VICReg (Bardes, Ponce & LeCun 2022)
# ---------------------------------------------------------------------------------------------


def vicreg(
    z1: ArrayLike,
    z2: ArrayLike,
    *,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
) -> jax.Array:
    """VICReg: variance-invariance-covariance regularisation of two views.

    Follows the official ``VICReg.forward`` term by term:

    - invariance ``= mean((z1 − z2)²)`` over all elements (``F.mse_loss``);
    - variance ``= ½·mean_d relu(1 − std1_d) + ½·mean_d relu(1 − std2_d)`` with
      ``std_d = sqrt(var_d + 1e-4)`` and the unbiased variance (``ddof = 1``, torch's
      ``x.var(dim=0)``) — note the averaging over the two views;
    - covariance ``= Σ_{i≠j} C1_ij² / D + Σ_{i≠j} C2_ij² / D`` with
      ``C = (z − z̄)ᵀ(z − z̄)/(N − 1)`` (summed over the two views).

    Loss ``= sim_weight·invariance + var_weight·variance + cov_weight·covariance``. Embeddings
    are not normalised. The statistics are taken over the global batch (the official code
    gathers every GPU's rows before the variance and covariance terms).

    Args:
      z1: expander outputs of the first view, ``[batch, dim]`` float, ``batch >= 2``.
      z2: expander outputs of the second view, ``[batch, dim]`` float.
      sim_weight: weight of the invariance term (official ``sim_coeff`` 25).
      var_weight: weight of the variance term (official ``std_coeff`` 25).
      cov_weight: weight of the covariance term (official ``cov_coeff`` 1).

    Returns:
      A float32 scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import vicreg
      >>> z = jnp.array([[1.0, 1.0], [-1.0, -1.0]])  # identical views, var 2, cov_01 = 2
      >>> # invariance 0, variance 0 (std > 1), covariance 2 · (2 · 2²) / 2 = 8
      >>> round(float(vicreg(z, z)), 4)
      8.0

    References:
      Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
      Self-Supervised Learning", ICLR 2022; facebookresearch/vicreg ``main_vicreg.py``
      (``sim_coeff=25, std_coeff=25, cov_coeff=1``, eps 1e-4, ``std_loss`` halved per view,
      ``cov_loss`` summed over views).
    """
    _check_pair(z1, "z1", z2, "z2", min_batch=2)
    _check_finite_nonneg(sim_weight, "sim_weight")
    _check_finite_nonneg(var_weight, "var_weight")
    _check_finite_nonneg(cov_weight, "cov_weight")
    w = jnp.asarray([sim_weight, var_weight, cov_weight], jnp.float32)
    return _vicreg(z1, z2, w)


def _vicreg_view_terms(z):
    n, d = z.shape
    zc = z - jnp.mean(z, axis=0, keepdims=True)
    var = jnp.sum(zc * zc, axis=0) / (n - 1)
    std = jnp.sqrt(var + _VICREG_EPS)
    std_term = jnp.mean(jax.nn.relu(1.0 - std))
    cov = (zc.T @ zc) / (n - 1)
    cov_term = _off_diagonal_sq_sum(cov) / d
    return std_term, cov_term


@jax.jit
def _vicreg(z1, z2, w):
    z1 = as_float(z1)
    z2 = as_float(z2)
    diff = z1 - z2
    invariance = jnp.mean(diff * diff)
    s1, c1 = _vicreg_view_terms(z1)
    s2, c2 = _vicreg_view_terms(z2)
    w = w.astype(invariance.dtype)
    return w[0] * invariance + w[1] * (s1 / 2 + s2 / 2) + w[2] * (c1 + c2)


# ---------------------------------------------------------------------------------------------
# Barlow Twins (Zbontar et al. 2021)
# ---------------------------------------------------------------------------------------------


def barlow_twins(z1: ArrayLike, z2: ArrayLike, *, lambda_: float = 5e-3) -> jax.Array:
    """Barlow Twins: drive the cross-correlation of two standardised views to the identity.

    Each view is standardised over the batch as ``BatchNorm1d(affine=False)`` does in training
    mode — ``(z − mean) / sqrt(var + 1e-5)`` with the biased variance — then
    ``C = z̃1ᵀ z̃2 / N`` (``[dim, dim]``) and the loss is
    ``Σ_i (1 − C_ii)² + λ·Σ_{i≠j} C_ij²``.

    Args:
      z1: projector outputs of the first view, ``[batch, dim]`` float, ``batch >= 2``.
      z2: projector outputs of the second view, ``[batch, dim]`` float.
      lambda_: off-diagonal weight ``λ >= 0`` (paper 5e-3; the official script's default
        ``--lambd`` is 0.0051).

    Returns:
      A float32 scalar (a sum over the ``dim × dim`` matrix, not a mean).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import barlow_twins
      >>> z = jnp.array([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])  # decorrelated
      >>> # identical views: C = I·1/(1 + 1e-5), so the loss is ≈ 0
      >>> round(float(barlow_twins(z, z)), 6)
      0.0

    References:
      Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
      ICML 2021; facebookresearch/barlowtwins ``main.py`` (``BatchNorm1d(affine=False)``
      converted to SyncBatchNorm, i.e. global-batch statistics; ``c / batch_size``;
      ``on_diag + lambd * off_diag``).
    """
    _check_pair(z1, "z1", z2, "z2", min_batch=2)
    _check_finite_nonneg(lambda_, "lambda_")
    return _barlow_twins(z1, z2, jnp.asarray(lambda_, jnp.float32))


def _batch_standardise(z):
    zc = z - jnp.mean(z, axis=0, keepdims=True)
    var = jnp.mean(zc * zc, axis=0, keepdims=True)
    return zc * jax.lax.rsqrt(var + _BN_EPS)


@jax.jit
def _barlow_twins(z1, z2, lambda_):
    z1 = _batch_standardise(as_float(z1))
    z2 = _batch_standardise(as_float(z2))
    n = z1.shape[0]
    c = (z1.T @ z2) / n
    on_diag = jnp.sum((1.0 - jnp.diagonal(c)) ** 2)
    return on_diag + lambda_.astype(c.dtype) * _off_diagonal_sq_sum(c)


# ---------------------------------------------------------------------------------------------
# LDReg (Huang et al. 2024)
# ---------------------------------------------------------------------------------------------


def ldreg(x: ArrayLike, *, k: int = 64, beta: float = 1.0) -> jax.Array:
    """LDReg: reward high local intrinsic dimensionality, ``−β · mean_i log LID_i``.

    For every row the Euclidean distances to the other rows of the batch are computed with
    the *other* rows held constant (``‖x_i − stop_gradient(x_j)‖``, exactly like the
    reference, which passes ``reference=full_batch.detach()``): the gradient moves each query
    point, not its neighbours, and the choice of neighbours is not differentiated. With
    ``r_1 ≤ … ≤ r_k`` the ``k`` nearest distances (the row itself excluded), LID is the
    method-of-moments estimate ``LID_i = μ / (r_k − μ)`` where, as in the reference
    ``lid_mom_est``, ``μ`` is the mean of ``r_1 … r_{k−1}`` (``a[:, 1:k]`` after the self
    distance ``a[:, 0]``) and ``r_k`` is the k-th nearest distance.

    Degenerate neighbourhoods (duplicates, a collapsed batch) are kept finite: ``μ`` and
    ``r_k − μ`` are floored at the smallest normal float before the logarithm, so an
    all-equal batch gives 0 with zero gradient.

    Args:
      x: representations, ``[batch, dim]`` float (not normalised; LDReg regularises the
        backbone features ``f``). Concatenate both views to regularise them together, as the
        reference does.
      k: neighbourhood size, ``2 <= k < batch`` (reference configs use 16–128).
      beta: regularisation strength ``β >= 0`` (the reference's ``alpha``: 0.01 for SimCLR,
        0.005 for BYOL, 5e-6 for MAE).

    Returns:
      A float32 scalar ``−β · mean_i log LID_i``; add it to the SSL loss.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import ldreg
      >>> x = jnp.array([[0.0], [1.0], [3.0], [7.0]])  # neighbour distances known by hand
      >>> # k=2: LID = r_1/(r_2 − r_1) = 1/2, 1/1, 2/1, 4/2  →  −mean log LID = −log(2)/4
      >>> round(float(ldreg(x, k=2)), 4)
      -0.1733

    References:
      Huang et al., "LDReg: Local Dimensionality Regularized Self-Supervised Learning",
      ICLR 2024; reference code hanxunh/LDReg (``lid.py: lid_mom_est``,
      ``losses/ntxent_lid_reg.py``). The reference's default ``reg_type='l1'`` adds
      ``−alpha·|log LID|`` per sample; this equals ``−β·log LID`` whenever ``LID >= 1`` (the
      regime the regulariser is used in) and follows the paper's ``−β/N Σ log LID`` otherwise.
      Amsaleg et al., "Extreme-value-theoretic estimation of local intrinsic dimensionality",
      DAMI 2018 (method of moments).
    """
    x = v.check_array(x, "x", ndim=2)
    _check_min_batch(x, "x", 3)
    v.check_int(k, "k", minimum=2)
    n = np.shape(x)[0]
    if k >= n:
        raise ValueError(
            f"k must be < batch size (the k nearest other rows must exist); got k={k} for x "
            f"of shape {v.shape_str(x)}"
        )
    _check_finite_nonneg(beta, "beta")
    return _ldreg(x, k, jnp.asarray(beta, jnp.float32))


@functools.partial(jax.jit, static_argnames=("k",))
@propagate_nan
def _ldreg(x, k, beta):
    x = as_float(x)
    n = x.shape[0]
    # Distances are translation invariant: centring on the (constant) batch mean first keeps
    # the Gram-matrix formula accurate for embeddings far from the origin.
    x = x - jax.lax.stop_gradient(jnp.mean(x, axis=0, keepdims=True))
    ref = jax.lax.stop_gradient(x)
    sq = jnp.sum(x * x, axis=-1)[:, None] + jnp.sum(ref * ref, axis=-1)[None, :] - 2.0 * (x @ ref.T)
    dist = _safe_sqrt(jnp.maximum(sq, 0.0))
    dist = jnp.where(jnp.eye(n, dtype=bool), jnp.inf, dist)
    nearest = -jax.lax.top_k(-dist, k)[0]  # [n, k], ascending
    mu = jnp.mean(nearest[:, : k - 1], axis=-1)
    r_k = nearest[:, k - 1]
    tiny = jnp.finfo(mu.dtype).tiny
    log_lid = jnp.log(jnp.maximum(mu, tiny)) - jnp.log(jnp.maximum(r_k - mu, tiny))
    return -beta.astype(mu.dtype) * jnp.mean(log_lid)


# ---------------------------------------------------------------------------------------------
# CARE (Gupta et al. 2024)
# ---------------------------------------------------------------------------------------------


def care_equivariance(
    z: ArrayLike,
    z_aug: ArrayLike,
    *,
    normalize: bool = True,
    num_chunks: int = 1,
) -> jax.Array:
    """CARE's orthogonal-equivariance penalty: keep the batch Gram matrix under augmentation.

    With ``G = z zᵀ`` and ``G' = z_aug z_augᵀ`` over a group of ``m`` rows that received the
    *same* augmentation, the penalty is ``(2/m)·Σ_{i≠j} (G_ij − G'_ij)²`` — twice the mean over
    rows of the squared off-diagonal row difference, exactly the reference
    ``equivariance_loss`` (``2 * torch.norm(t1 - t2, p='fro', dim=-1).pow(2).mean()`` over the
    off-diagonal ``[m, m − 1]`` entries). With ``num_chunks = C`` the batch is split into ``C``
    consecutive groups of ``m = batch / C`` rows (one shared augmentation per group, as in
    the reference's ``--equiv-splits``) and the penalties are averaged over groups. It is zero
    exactly when the augmentation acts on the group as an orthogonal map of embedding space.

    Args:
      z: embeddings of a group of inputs, ``[batch, dim]`` float.
      z_aug: embeddings of the same inputs after one shared augmentation, ``[batch, dim]``.
      normalize: L2-normalise the rows first (the reference model's outputs are already
        ``F.normalize``-d; set False to use the raw inner products).
      num_chunks: number of equally sized augmentation groups; must divide ``batch``.

    Returns:
      A float32 scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import care_equivariance
      >>> z = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> rotated = jnp.array([[0.0, 1.0], [-1.0, 0.0]])  # an orthogonal map: no penalty
      >>> round(float(care_equivariance(z, rotated)), 4)
      0.0
      >>> collapsed = jnp.array([[1.0, 0.0], [1.0, 0.0]])  # G'_01 = 1 vs G_01 = 0
      >>> round(float(care_equivariance(z, collapsed)), 4)  # (2/2) · (1 + 1)
      2.0

    References:
      Gupta, Robinson, Lim, Villar & Jegelka, "Structuring Representation Geometry with
      Rotationally Equivariant Contrastive Learning" (CARE), ICLR 2024; reference code
      Sharut/CARE ``equivariance_loss(out_1, out_2, num_chunks)`` (``imagenet100/model/loss.py``).
    """
    _check_pair(z, "z", z_aug, "z_aug")
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be a bool; got {normalize!r}")
    v.check_int(num_chunks, "num_chunks", minimum=1)
    n = np.shape(z)[0]
    if n % num_chunks:
        raise ValueError(
            f"num_chunks must divide the batch of z {v.shape_str(z)} into equal groups; "
            f"got num_chunks={num_chunks}"
        )
    return _care(z, z_aug, normalize, num_chunks)


@functools.partial(jax.jit, static_argnames=("normalize", "num_chunks"))
def _care(z, z_aug, normalize, num_chunks):
    z = as_float(z)
    z_aug = as_float(z_aug)
    if normalize:
        z = l2_normalize(z)
        z_aug = l2_normalize(z_aug)
    n, d = z.shape
    m = n // num_chunks
    z = z.reshape(num_chunks, m, d)
    z_aug = z_aug.reshape(num_chunks, m, d)
    g = jnp.einsum("cid,cjd->cij", z, z)
    g_aug = jnp.einsum("cid,cjd->cij", z_aug, z_aug)
    # Mean over groups of (2/m)·Σ_{i≠j}: (1/C)·(2/m) = 2/n.
    return 2.0 * _off_diagonal_sq_sum(g - g_aug) / n
