"""Centred kernel alignment (CKA) between two representations of the same N inputs.

Both kernels reduce to a handful of sums over the Gram matrices ``K`` and ``L``:
``Σ K∘L``, the row sums ``K1``, ``L1`` and the diagonals. The linear kernel gets them from
feature-space products (``‖XᵀY‖_F²``, ``O(N·D + D²)`` memory); the RBF kernel from
``chunk_size x chunk_size`` tiles of the Gram matrices, never holding an ``[N, N]`` array. Both
accept inputs sharded along N and give the same answer as unsharded: the linear kernel under
``jax.jit`` on the global view, the RBF kernel under ``jax.shard_map`` when the rows of ``x`` and
``y`` are split the same way over a mesh (each device walks the tiles of its own rows against
the all-gathered inputs and the sums are ``psum``-reduced).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from jaxemb._validate import check_int, check_positive, shape_str
from jaxemb.analysis._diagnostics import _to_float
from jaxemb.analysis._geometry import _DEFAULT_CHUNK, _matrix
from jaxemb.retrieval._search import _row_layout, _shard_index

# Counts of the exact median search are uint32: N² must stay below 2³².
_MAX_RBF_ROWS = 65535


def _check_pair(x: Any, y: Any, *, min_rows: int) -> tuple[Any, Any]:
    x = _matrix(x, "x", min_rows=min_rows)
    y = _matrix(y, "y", min_rows=min_rows)
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"y must have one row per row of x {shape_str(x)} (the same N inputs); "
            f"got {shape_str(y)}"
        )
    return x, y


def _hsic(kl, k_sum, l_sum, k_rows, l_rows, k_diag, l_diag, n, debiased):
    """HSIC up to a positive factor that cancels in CKA, from sums over the Gram matrices.

    Biased: ``tr(KHLH) = Σ K∘L − (2/n) (K1)·(L1) + (1ᵀK1)(1ᵀL1)/n²``. Debiased (Song et al.
    2012, on ``K̃``, ``L̃`` = Gram matrices with zeroed diagonals):
    ``tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − (2/(n−2)) (K̃1)·(L̃1)``, the ``1/(n(n−3))``
    factor dropped.
    """
    if not debiased:
        return kl - 2.0 / n * jnp.sum(k_rows * l_rows) + k_sum * l_sum / (n * n)
    kt_sum = k_sum - jnp.sum(k_diag)
    lt_sum = l_sum - jnp.sum(l_diag)
    kt_rows = k_rows - k_diag
    lt_rows = l_rows - l_diag
    return (
        kl
        - jnp.sum(k_diag * l_diag)
        + kt_sum * lt_sum / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * jnp.sum(kt_rows * lt_rows)
    )


def _cka_from_stats(stats_xy, stats_xx, stats_yy, n, debiased):
    hxy = _hsic(*stats_xy, n, debiased)
    hxx = _hsic(*stats_xx, n, debiased)
    hyy = _hsic(*stats_yy, n, debiased)
    return hxy / jnp.sqrt(hxx * hyy)


# ---------------------------------------------------------------------------------------------
# Linear CKA
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("debiased",))
def _linear_cka(x, y, *, debiased):
    dtype = jnp.promote_types(_to_float(x).dtype, _to_float(y).dtype)
    x = x.astype(dtype)
    y = y.astype(dtype)
    n = x.shape[0]
    # CKA is unchanged by centring the features (both estimators); it keeps the sums small.
    x = x - jnp.mean(x, axis=0, keepdims=True)
    y = y - jnp.mean(y, axis=0, keepdims=True)

    def stats(a, b):
        ab = a.T @ b
        a_sum, b_sum = jnp.sum(a, axis=0), jnp.sum(b, axis=0)
        return (
            jnp.sum(ab * ab),  # Σ K∘L = ‖AᵀB‖_F²
            jnp.sum(a_sum * a_sum),  # 1ᵀK1
            jnp.sum(b_sum * b_sum),
            a @ a_sum,  # K1
            b @ b_sum,
            jnp.sum(a * a, axis=1),  # diag K
            jnp.sum(b * b, axis=1),
        )

    return _cka_from_stats(stats(x, y), stats(x, x), stats(y, y), n, debiased)


def linear_cka(x: ArrayLike, y: ArrayLike, *, debiased: bool = False) -> jax.Array:
    """Linear centred kernel alignment between two representations of the same inputs.

    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L))`` with ``K = XXᵀ``, ``L = YYᵀ``;
    the biased HSIC gives ``‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F)`` on centred features. With
    ``debiased=True`` every HSIC is the unbiased estimator of Song et al. 2012 (computed in
    feature space, no ``[N, N]`` matrix). CKA is 1 for identical inputs and invariant to
    orthogonal transforms and isotropic scaling of either argument (not to arbitrary invertible
    linear maps). ``x`` and ``y`` may have different widths.

    Args:
      x: first representation, [N, D1] floating point, all finite.
      y: second representation, [N, D2], row i describing the same input as ``x[i]``.
      debiased: use the unbiased HSIC estimator (needs N >= 4); the debiased CKA can be
        slightly negative.

    Returns:
      Scalar CKA (NaN when a representation is constant).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
      >>> round(float(analysis.linear_cka(x, 3.0 * x[:, ::-1])), 4)  # rotated and scaled
      1.0
      >>> round(float(analysis.linear_cka(x, x[:, :1])), 4)  # one of two equal directions
      0.7071

    References:
      Kornblith, Norouzi, Lee, Hinton, "Similarity of Neural Network Representations
      Revisited", ICML 2019 (``feature_space_linear_cka`` of google-research/representation_
      similarity, including its ``debiased`` option); Song et al., "Feature Selection via
      Dependence Maximization", JMLR 2012 (unbiased HSIC); Nguyen, Raghu, Kornblith, "Do Wide
      and Deep Networks Learn the Same Things?", ICLR 2021 (debiased CKA).
    """
    if debiased not in (True, False):
        raise ValueError(f"debiased must be a bool; got {debiased!r}")
    x, y = _check_pair(x, y, min_rows=4 if debiased else 2)
    return _linear_cka(jnp.asarray(x), jnp.asarray(y), debiased=bool(debiased))


# ---------------------------------------------------------------------------------------------
# RBF CKA
# ---------------------------------------------------------------------------------------------


def _pad_blocks(x: jax.Array, chunk: int) -> jax.Array:
    """[N, D] -> [ceil(N / chunk), chunk, D], zero rows appended."""
    n, d = x.shape
    nb = -(-n // chunk)
    x = jnp.pad(x, ((0, nb * chunk - n), (0, 0)))
    return x.reshape(nb, chunk, d)


def _blocks(x, chunk, offset):
    """Zero-padded row blocks [B, chunk, D], their squared norms and global row indices."""
    blocks = _pad_blocks(x, chunk)
    idx = offset + jnp.arange(blocks.shape[0] * chunk).reshape(blocks.shape[0], chunk)
    return blocks, jnp.sum(blocks * blocks, axis=-1), idx


def _tile_sq(a, a_sq, a_idx, b, b_sq, b_idx):
    d2 = jnp.maximum(a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T), 0.0)
    return jnp.where(a_idx[:, None] == b_idx[None, :], 0.0, d2)  # exact zeros on the diagonal


def _vary(value, axes):
    """Marks a loop-carry initial value as varying over the manual ``axes`` (in shard_map)."""
    return jax.lax.pcast(value, axes, to="varying") if axes else value


def _reduce(value, axes):
    return jax.lax.psum(value, axes) if axes else value


def _median_sq_dist(xq, xc, q_offset, n, chunk, axes):
    """np.median of all N² squared distances (diagonal zeros included), by bisection on bits.

    The k-th smallest float32 value is the smallest ``t`` with ``count(d² <= t) >= k + 1``;
    non-negative floats order like their int32 bit patterns, so 32 halvings of the bit range
    find it exactly. The two middle order statistics are searched together. ``xq`` holds this
    shard's rows (global indices from ``q_offset``), ``xc`` all rows; counts are summed over
    ``axes``.
    """
    q_chunk = min(chunk, xq.shape[0])
    qb, qsq, qidx = _blocks(xq.astype(jnp.float32), q_chunk, q_offset)
    cb, csq, cidx = _blocks(xc.astype(jnp.float32), chunk, 0)
    total = n * n
    ranks = jnp.array([(total - 1) // 2, total // 2], jnp.uint32)

    def count_le(thresholds):  # [2] float32 -> [2] uint32 counts over all valid pairs
        def row(carry, args):
            a, a_sq, a_idx = args

            def col(c, args):
                b, b_sq, b_idx = args
                d2 = _tile_sq(a, a_sq, a_idx, b, b_sq, b_idx)
                valid = (a_idx[:, None] < q_offset + xq.shape[0]) & (b_idx[None, :] < n)
                le = (d2[None, :, :] <= thresholds[:, None, None]) & valid[None, :, :]
                return c + jnp.sum(le, axis=(1, 2), dtype=jnp.uint32), None

            return jax.lax.scan(col, carry, (cb, csq, cidx))[0], None

        init = _vary(jnp.zeros((2,), jnp.uint32), axes)
        return _reduce(jax.lax.scan(row, init, (qb, qsq, qidx))[0], axes)

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = count_le(jax.lax.bitcast_convert_type(mid, jnp.float32)) >= ranks + 1
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    lo = jnp.zeros((2,), jnp.int32)
    hi = jnp.full((2,), 0x7F800000, jnp.int32)  # +inf
    lo, _ = jax.lax.fori_loop(0, 32, halve, (lo, hi))
    vals = jax.lax.bitcast_convert_type(lo, jnp.float32)
    return 0.5 * (vals[0] + vals[1])


def _rbf_local(xq, yq, xc, yc, sigma, q_offset, *, n, chunk, axes):
    """This shard's rows of the RBF Gram matrices: (Σ K∘L, Σ K∘K, Σ L∘L) and row sums.

    The sums are reduced over ``axes``; the row sums [rows of this shard] are not.
    """
    dtype = xq.dtype
    mx = _median_sq_dist(xq, xc, q_offset, n, chunk, axes).astype(dtype)
    my = _median_sq_dist(yq, yc, q_offset, n, chunk, axes).astype(dtype)
    gx = 1.0 / (2.0 * sigma * sigma * mx)
    gy = 1.0 / (2.0 * sigma * sigma * my)
    m = xq.shape[0]
    q_chunk = min(chunk, m)
    xqb, xqsq, qidx = _blocks(xq, q_chunk, q_offset)
    yqb, yqsq, _ = _blocks(yq, q_chunk, q_offset)
    xcb, xcsq, cidx = _blocks(xc, chunk, 0)
    ycb, ycsq, _ = _blocks(yc, chunk, 0)

    def row(carry, args):
        a, a_sq, c, c_sq, a_idx = args

        def col(acc, args):
            b, b_sq, d, d_sq, b_idx = args
            valid = ((a_idx[:, None] < q_offset + m) & (b_idx[None, :] < n)).astype(dtype)
            k = jnp.exp(-gx * _tile_sq(a, a_sq, a_idx, b, b_sq, b_idx)) * valid
            l = jnp.exp(-gy * _tile_sq(c, c_sq, a_idx, d, d_sq, b_idx)) * valid
            sums, k_rows, l_rows = acc
            sums = sums + jnp.stack([jnp.sum(k * l), jnp.sum(k * k), jnp.sum(l * l)])
            return (sums, k_rows + jnp.sum(k, axis=1), l_rows + jnp.sum(l, axis=1)), None

        zero = _vary(jnp.zeros((q_chunk,), dtype), axes)
        init = (_vary(jnp.zeros((3,), dtype), axes), zero, zero)
        (sums, k_rows, l_rows), _ = jax.lax.scan(col, init, (xcb, xcsq, ycb, ycsq, cidx))
        return carry + sums, (k_rows, l_rows)

    init = _vary(jnp.zeros((3,), dtype), axes)
    sums, (k_rows, l_rows) = jax.lax.scan(row, init, (xqb, xqsq, yqb, yqsq, qidx))
    return _reduce(sums, axes), k_rows.reshape(-1)[:m], l_rows.reshape(-1)[:m]


@functools.partial(jax.jit, static_argnames=("chunk", "debiased", "layout"))
def _rbf_cka(x, y, sigma, *, chunk, debiased, layout):
    dtype = jnp.promote_types(_to_float(x).dtype, _to_float(y).dtype)
    n = x.shape[0]
    # Distances are translation invariant; centring keeps the norms (and cancellation) small.
    x = x.astype(dtype) - jnp.mean(x.astype(dtype), axis=0, keepdims=True)
    y = y.astype(dtype) - jnp.mean(y.astype(dtype), axis=0, keepdims=True)
    sigma = sigma.astype(dtype)
    if layout is None:
        sums, k_rows, l_rows = _rbf_local(x, y, x, y, sigma, 0, n=n, chunk=chunk, axes=())
    else:
        mesh, axes = layout

        def per_shard(xq, yq, xc, yc, sigma):
            offset = _shard_index(mesh, axes) * xq.shape[0]
            return _rbf_local(xq, yq, xc, yc, sigma, offset, n=n, chunk=chunk, axes=axes)

        sums, k_rows, l_rows = jax.shard_map(
            per_shard,
            mesh=mesh,
            in_specs=(P(axes), P(axes), P(), P(), P()),
            out_specs=(P(), P(axes), P(axes)),
        )(x, y, x, y, sigma)
    ones = jnp.ones((n,), dtype)  # exp(0) on the diagonal
    # Gram products of K with itself need K∘K and the row sums of K (and likewise for L).
    stats_xy = (sums[0], jnp.sum(k_rows), jnp.sum(l_rows), k_rows, l_rows, ones, ones)
    stats_xx = (sums[1], jnp.sum(k_rows), jnp.sum(k_rows), k_rows, k_rows, ones, ones)
    stats_yy = (sums[2], jnp.sum(l_rows), jnp.sum(l_rows), l_rows, l_rows, ones, ones)
    return _cka_from_stats(stats_xy, stats_xx, stats_yy, n, debiased)


def rbf_cka(
    x: ArrayLike,
    y: ArrayLike,
    *,
    sigma: float | None = None,
    debiased: bool = False,
    chunk_size: int = _DEFAULT_CHUNK,
) -> jax.Array:
    """Centred kernel alignment with Gaussian (RBF) kernels.

    ``K_ij = exp(−‖x_i − x_j‖² / (2 σ² m_x))`` where ``m_x`` is the median of all ``N²``
    squared distances of ``x`` (diagonal zeros included, ``np.median`` semantics) — Kornblith's
    convention: ``sigma`` is a fraction of the median distance, so the bandwidth is
    ``sigma · sqrt(m_x)``; likewise for ``y`` with its own median. ``None`` means ``sigma = 1``
    (bandwidth = median distance). The median is found exactly by a 32-step bisection that
    re-scans the distance tiles, so the cost is about 65 passes over the ``N²`` pairs; memory
    stays ``O(N·D + chunk_size²)``. CKA is 1 for identical inputs and invariant to orthogonal
    transforms, translations and isotropic scaling of either argument.

    Args:
      x: first representation, [N, D1] floating point, all finite, N <= 65535.
      y: second representation, [N, D2], row i describing the same input as ``x[i]``.
      sigma: bandwidth as a fraction ``> 0`` of the median pairwise distance; ``None`` = 1.
      debiased: use the unbiased HSIC estimator of Song et al. 2012 (needs N >= 4).
      chunk_size: tile size of the Gram matrices.

    Returns:
      Scalar CKA.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> x = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [1.0, -1.0]])
      >>> round(float(analysis.rbf_cka(x, 2.0 * x[:, ::-1] + 1.0, sigma=0.5)), 4)
      1.0

    References:
      Kornblith, Norouzi, Lee, Hinton, "Similarity of Neural Network Representations
      Revisited", ICML 2019 (``gram_rbf(x, threshold)`` of google-research/representation_
      similarity: ``exp(−d² / (2 threshold² median(d²)))``, then ``cka`` of centred Grams);
      Song et al., JMLR 2012 (unbiased HSIC).
    """
    if debiased not in (True, False):
        raise ValueError(f"debiased must be a bool; got {debiased!r}")
    x, y = _check_pair(x, y, min_rows=4 if debiased else 2)
    if x.shape[0] > _MAX_RBF_ROWS:
        raise ValueError(
            f"x must have at most {_MAX_RBF_ROWS} rows for rbf_cka; got {shape_str(x)}"
        )
    if sigma is None:
        sigma = 1.0
    check_positive(sigma, "sigma")
    check_int(chunk_size, "chunk_size", minimum=1)
    chunk = min(int(chunk_size), x.shape[0])
    layout = _row_layout(x)
    if layout is not None and _row_layout(y) != layout:
        layout = None  # rows of x and y split differently: use the single-program path
    return _rbf_cka(
        jnp.asarray(x),
        jnp.asarray(y),
        jnp.asarray(sigma, jnp.float32),
        chunk=chunk,
        debiased=bool(debiased),
        layout=layout,
    )


__all__ = ["linear_cka", "rbf_cka"]
