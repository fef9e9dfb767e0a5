"""Product quantization: per-sub-space k-means codebooks, codes, OPQ and ADC search.

A vector of width ``d`` is cut into ``m`` sub-vectors of width ``dsub = d / m``; sub-space
``j`` has its own codebook of ``ksub = 2**nbits`` centroids and a vector is stored as the ``m``
indices of its nearest centroids (``m`` bytes for 8 bits). The codebooks are trained by the
k-means of :mod:`~jaxemb.retrieval._kmeans` (k-means++ seeding, Lloyd iterations, the rows
split over a device mesh), vmapped over the sub-spaces.

Asymmetric distance computation (ADC) scores a float query against the reconstruction
``x̂ = concat_j c_j[code_j]`` of every code: ``‖q − x̂‖² = Σ_j ‖q_j − c_j[code_j]‖²``, the sum
over the per-query lookup tables that faiss ``IndexPQ`` forms, and ``⟨q, x̂⟩ = Σ_j ⟨q_j,
c_j[code_j]⟩``. Instead of ``m`` table look-ups per code and query, the search engine of
:func:`~jaxemb.retrieval.search` (``_search._topk``: chunked running top-k, sharded over a
mesh) decodes each corpus chunk once (a gather of centroid rows) and scores it against a whole
query block with its ``l2`` / ``dot`` matrix-product tile: the same sums, regrouped so that the
work is a matmul (several times faster than table gathers on CPU, and than faiss's table
scan). For ``metric="l2"`` the ``k`` distances kept are then recomputed by direct differences
(no cancellation) and the results sorted by them, ties to the lower id.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from jaxemb._validate import check_array, check_choice, check_int, shape_str
from jaxemb.retrieval._kmeans import _as_key, _lloyd_sharded, _seed
from jaxemb.retrieval._search import (
    _REGISTRY,
    _as_matrix,
    _check_finite_rows,
    _detect_mesh,
    _Metric,
    _topk,
)

_METRICS = ("l2", "dot")
_MAX_NBITS = 16
_MAX_SEED_POINTS = 65536  # k-means++ seeding subsample per sub-space, as kmeans' default
_ENCODE_FLOATS = 1 << 22  # rows per encoding block: about this many [rows, m, ksub] floats
_HIGHEST = jax.lax.Precision.HIGHEST


class OPQ(NamedTuple):
    """The result of :func:`opq_train`.

    Attributes:
      rotation: ``[d, d]`` float32 orthogonal matrix; vectors are quantized as ``x @ rotation``.
      codebooks: ``[m, ksub, d // m]`` float32 codebooks of the rotated vectors.
    """

    rotation: jax.Array
    codebooks: jax.Array


# ---------------------------------------------------------------------------------------------
# validation


def _check_mesh(mesh: Any) -> None:
    if mesh is not None and (not isinstance(mesh, Mesh) or "data" not in mesh.axis_names):
        raise ValueError(f"mesh must be a jax.sharding.Mesh with a 'data' axis; got {mesh!r}")


def _check_m(m: Any, d: int, what: str) -> None:
    """``m`` a positive integer dividing ``d`` (``what`` names ``d`` in the message)."""
    check_int(m, "m", minimum=1)
    if d % m:
        raise ValueError(
            f"m must divide {what} into equal sub-vectors; got m={m} ({d} % {m} = {d % m})"
        )


def _check_codebooks(codebooks: Any, name: str = "codebooks") -> Any:
    cb = check_array(codebooks, name, ndim=3, kind="float")
    if cb.shape[1] > 2**_MAX_NBITS:
        raise ValueError(
            f"{name} must have at most 2**{_MAX_NBITS} centroids per sub-space "
            f"[m, ksub, dsub]; got {shape_str(cb)}"
        )
    if not isinstance(cb, jax.core.Tracer):
        with jax.ensure_compile_time_eval():  # concrete even inside a caller's jit
            bad = np.flatnonzero(~np.asarray(_finite_subspaces(jnp.asarray(cb))))
        if bad.size:
            raise ValueError(
                f"{name} {shape_str(cb)} has NaN or inf values in sub-space(s) {bad.tolist()[:10]}"
            )
    return cb


@jax.jit
def _finite_subspaces(cb: jax.Array) -> jax.Array:
    return jnp.all(jnp.isfinite(cb), axis=(1, 2))


@jax.jit
def _code_range(codes: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.min(codes), jnp.max(codes)


def _check_codes(codes: Any, cb: Any, name: str = "codes") -> Any:
    """Integer codes ``[N, m]`` matching the codebooks, with concrete values in ``[0, ksub)``."""
    if not hasattr(codes, "shape") and isinstance(codes, (list, tuple)):
        codes = np.asarray(codes)
    codes = check_array(codes, name, ndim=2, kind="any")
    dt = np.dtype(codes.dtype)
    m, ksub = cb.shape[0], cb.shape[1]
    if dt.kind not in "ui":
        raise ValueError(
            f"{name} must be integer centroid ids (uint8 for ksub <= 256, as pq_encode returns) "
            f"for codebooks {shape_str(cb)}; got dtype {dt} with shape {shape_str(codes)}"
        )
    if codes.shape[1] != m:
        raise ValueError(
            f"{name} must be [N, m={m}] (one id per sub-space of codebooks {shape_str(cb)}); "
            f"got {shape_str(codes)}"
        )
    fits = dt.kind == "u" and np.iinfo(dt).max < ksub
    if not fits and not isinstance(codes, jax.core.Tracer):
        with jax.ensure_compile_time_eval():  # concrete even inside a caller's jit
            lo, hi = (int(v) for v in _code_range(jnp.asarray(codes)))
        if lo < 0 or hi >= ksub:
            raise ValueError(
                f"{name} must lie in [0, ksub={ksub}) for codebooks {shape_str(cb)}; got values "
                f"in [{lo}, {hi}]"
            )
    return codes


def _check_finite(x: Any, name: str) -> None:
    """``_search``'s check of concrete rows for NaN / inf, also inside a caller's jit."""
    with jax.ensure_compile_time_eval():
        _check_finite_rows(x, name)


def _check_rotation(rotation: Any, d: int) -> Any:
    if rotation is None:
        return None
    r = check_array(rotation, "rotation", ndim=2, kind="float")
    if tuple(r.shape) != (d, d):
        raise ValueError(f"rotation must be [d, d] = [{d}, {d}]; got {shape_str(r)}")
    _check_finite(r, "rotation")
    return r


def _code_dtype(ksub: int):
    return jnp.uint8 if ksub <= 256 else jnp.uint16


# ---------------------------------------------------------------------------------------------
# encoding and decoding


def _split(x: jax.Array, m: int) -> jax.Array:
    """``[n, d]`` as ``[n, m, dsub]``."""
    return x.reshape(x.shape[0], m, x.shape[1] // m)


_UNROLL_DSUB = 32  # up to this sub-vector width the squared differences are summed unrolled


def _sub_distances(xs: jax.Array, cb: jax.Array) -> jax.Array:
    """Squared L2 ``[n, m, ksub]`` between sub-vectors ``[n, m, dsub]`` and their codebooks.

    By direct differences (no cancellation), summed over the ``dsub`` coordinates in order, with
    the codebooks transposed to ``[m, dsub, ksub]`` so that the work runs along the centroids.
    """
    cbt = jnp.transpose(cb, (0, 2, 1))
    if xs.shape[2] > _UNROLL_DSUB:
        diff = xs[:, :, :, None] - cbt[None]
        return jnp.sum(diff * diff, axis=2)
    diff = xs[:, :, 0, None] - cbt[None, :, 0, :]
    acc = diff * diff
    for t in range(1, xs.shape[2]):
        diff = xs[:, :, t, None] - cbt[None, :, t, :]
        acc = acc + diff * diff
    return acc


def _first_min(d2: jax.Array) -> jax.Array:
    """The lowest index of the minimum along the last axis (int32), as ``argmin``; a minimum
    pass then an index pass, both plain reductions (XLA's CPU ``argmin`` is several times
    slower)."""
    low = jnp.min(d2, axis=-1, keepdims=True)
    ids = jnp.arange(d2.shape[-1], dtype=jnp.int32)
    return jnp.min(jnp.where(d2 == low, ids, d2.shape[-1]), axis=-1)


def _nearest(xs: jax.Array, cb: jax.Array) -> jax.Array:
    """Nearest centroid ids ``[n, m]`` (int32) of sub-vectors ``[n, m, dsub]``.

    Squared L2 by direct differences, ties to the lower id, as faiss
    ``ProductQuantizer.compute_codes`` (``fvec_L2sqr_ny_nearest``).
    """
    return _first_min(_sub_distances(xs, cb))


def _decode(codes: jax.Array, cb: jax.Array) -> jax.Array:
    """Reconstructions ``[n, d]`` of codes ``[n, m]``: the selected centroid rows, concatenated."""
    m, _, dsub = cb.shape
    n = codes.shape[0]
    idx = jnp.broadcast_to(codes.astype(jnp.int32).T[:, :, None], (m, n, dsub))
    rows = jnp.take_along_axis(cb, idx, axis=1)  # [m, n, dsub]
    return jnp.transpose(rows, (1, 0, 2)).reshape(n, m * dsub)


def _rotate(x: jax.Array, rotation: jax.Array | None) -> jax.Array:
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if rotation is None:
        return x
    return jnp.matmul(x, rotation.astype(x.dtype), precision=_HIGHEST)


def _map_rows(fn, x: jax.Array, block: int) -> jax.Array:
    """``fn`` over row blocks of ``x`` (the last padded), results concatenated."""
    n = x.shape[0]
    if n <= block:
        return fn(x)
    n_blocks = -(-n // block)
    xp = jnp.pad(x, ((0, n_blocks * block - n), (0, 0)))
    out = jax.lax.map(fn, xp.reshape(n_blocks, block, x.shape[1]))
    return out.reshape(n_blocks * block, *out.shape[2:])[:n]


def _encode_block_rows(cb_shape: tuple[int, ...]) -> int:
    m, ksub, _ = cb_shape
    return max(8, _ENCODE_FLOATS // (m * ksub))


@functools.partial(jax.jit, static_argnames=("block", "mesh"))
def _encode(x, cb, rotation, *, block, mesh):
    m, ksub, _ = cb.shape
    cb = cb.astype(jnp.float32)

    rot = jnp.eye(0) if rotation is None else rotation  # a placeholder when there is none

    def local(xl, cb, rot):
        xl = _rotate(xl, None if rotation is None else rot)
        return _map_rows(lambda b: _nearest(_split(b, m), cb).astype(_code_dtype(ksub)), xl, block)

    if mesh is None:
        return local(x, cb, rot)
    n = x.shape[0]
    n_dev = mesh.shape["data"]
    n_pad = -(-n // n_dev) * n_dev
    xp = jnp.pad(x, ((0, n_pad - n), (0, 0))) if n_pad != n else x
    out = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P("data"), P(), P()),
        out_specs=P("data"),
        axis_names={"data"},
    )(xp, cb, rot)
    return out[:n]


def pq_encode(
    x: ArrayLike,
    codebooks: ArrayLike,
    *,
    rotation: ArrayLike | None = None,
    mesh: Mesh | None = None,
) -> jax.Array:
    """Product-quantization codes: each sub-vector's nearest centroid.

    Sub-vector ``j`` of a row (columns ``j·dsub .. (j+1)·dsub − 1``, of ``x @ rotation`` when a
    rotation is given) is assigned the centroid of ``codebooks[j]`` with the least squared L2
    distance, computed by direct differences; ties go to the lower id. Equals faiss
    ``ProductQuantizer.compute_codes`` given the same centroids (faiss packs ``nbits < 8`` codes
    into bits; here every id takes a whole uint8 / uint16).

    Args:
      x: ``[N, d]`` float rows, finite, ``d = m · dsub``.
      codebooks: ``[m, ksub, dsub]`` float centroids (:func:`pq_train`).
      rotation: optional ``[d, d]`` rotation applied first (:func:`opq_train`).
      mesh: a mesh with a ``data`` axis to split the rows over; ``None`` uses the mesh of an
        ``x`` sharded along ``data``, else one device.

    Returns:
      ``[N, m]`` codes: uint8 for ``ksub <= 256``, else uint16.

    Raises:
      ValueError: wrong ranks or dtypes, an empty axis, ``d != m · dsub``, NaN or inf in ``x``,
        ``codebooks`` or ``rotation``, a bad mesh.

    Examples:
      >>> import numpy as np
      >>> from jaxemb.retrieval import pq_encode
      >>> codebooks = np.array([[[0.0], [1.0]], [[0.0], [10.0]]], np.float32)  # m=2, ksub=2
      >>> pq_encode(np.array([[0.9, 2.0], [0.2, 7.0]], np.float32), codebooks).tolist()
      [[1, 0], [0, 1]]

    References:
      Jégou, Douze & Schmid, "Product Quantization for Nearest Neighbor Search" (TPAMI 2011);
      faiss ``ProductQuantizer::compute_codes``.
    """
    cb = _check_codebooks(codebooks)
    x = _as_matrix(x, "x")
    m, _, dsub = cb.shape
    if x.shape[1] != m * dsub:
        raise ValueError(
            f"x must be [N, m · dsub] = [N, {m * dsub}] for codebooks {shape_str(cb)}; "
            f"got {shape_str(x)}"
        )
    rotation = _check_rotation(rotation, x.shape[1])
    _check_mesh(mesh)
    _check_finite(x, "x")
    if mesh is None:
        mesh = _detect_mesh(x)
    if mesh is not None and mesh.shape["data"] == 1:
        mesh = None
    rot = None if rotation is None else jnp.asarray(rotation)
    return _encode(
        jnp.asarray(x), jnp.asarray(cb), rot, block=_encode_block_rows(cb.shape), mesh=mesh
    )


@jax.jit
def _decode_jit(codes, cb, rotation):
    x = _decode(codes, cb.astype(jnp.promote_types(cb.dtype, jnp.float32)))
    if rotation is None:
        return x
    return jnp.matmul(x, rotation.astype(x.dtype).T, precision=_HIGHEST)


def pq_decode(
    codes: ArrayLike, codebooks: ArrayLike, *, rotation: ArrayLike | None = None
) -> jax.Array:
    """Reconstructs vectors from product-quantization codes.

    Row ``i`` is ``concat_j codebooks[j, codes[i, j]]`` (times ``rotationᵀ`` when a rotation is
    given, back in the original space), as faiss ``ProductQuantizer.decode``. Differentiable
    with respect to the codebooks.

    Args:
      codes: ``[N, m]`` integer ids in ``[0, ksub)`` (:func:`pq_encode`).
      codebooks: ``[m, ksub, dsub]`` float centroids.
      rotation: optional ``[d, d]`` rotation the codes were made with (:func:`opq_train`).

    Returns:
      ``[N, m · dsub]`` float32 reconstructions.

    Raises:
      ValueError: codes that are not integers, of the wrong width ``m`` or out of range;
        malformed or non-finite codebooks or rotation.

    Examples:
      >>> import numpy as np
      >>> from jaxemb.retrieval import pq_decode
      >>> codebooks = np.array([[[0.0], [1.0]], [[0.0], [10.0]]], np.float32)
      >>> pq_decode(np.array([[1, 0], [0, 1]], np.uint8), codebooks).tolist()
      [[1.0, 0.0], [0.0, 10.0]]

    References:
      Jégou, Douze & Schmid (TPAMI 2011); faiss ``ProductQuantizer::decode``.
    """
    cb = _check_codebooks(codebooks)
    codes = _check_codes(codes, cb)
    rotation = _check_rotation(rotation, cb.shape[0] * cb.shape[2])
    rot = None if rotation is None else jnp.asarray(rotation)
    return _decode_jit(jnp.asarray(codes), jnp.asarray(cb), rot)


# ---------------------------------------------------------------------------------------------
# training


@functools.partial(jax.jit, static_argnames=("m", "ksub"))
def _seed_subspaces(rows, key, *, m, ksub):
    """k-means++ seeds ``[m, ksub, dsub]`` in each sub-space of ``rows`` ``[n, d]``."""
    keys = jax.random.split(key, m)
    return jax.vmap(lambda x, k: _seed(x, k, ksub, "k-means++", "l2"))(_subspaces(rows, m), keys)


@functools.partial(jax.jit, static_argnames=("m", "ksub", "n_iter", "mesh"))
def _lloyd_subspaces(rows, weight, cent, *, m, ksub, n_iter, mesh):
    """kmeans' sharded Lloyd iterations, vmapped over the sub-spaces of ``rows`` ``[n, d]``.

    Returns the codebooks ``[m, ksub, dsub]`` and the labels ``[m, n]`` of the final
    assignment (to the returned codebooks).
    """
    lloyd = functools.partial(_lloyd_sharded, k=ksub, n_iter=n_iter, metric="l2", mesh=mesh)
    cent, labels, _ = jax.vmap(lloyd, in_axes=(0, None, 0))(_subspaces(rows, m), weight, cent)
    return cent, labels


def _subspaces(x: jax.Array, m: int) -> jax.Array:
    """Rows ``[n, d]`` as float32 sub-vectors ``[m, n, dsub]``."""
    return jnp.transpose(_split(x.astype(jnp.float32), m), (1, 0, 2))


@functools.partial(jax.jit, static_argnames=("n_train", "n_pad", "n_seed"))
def _sample_rows(x, key, *, n_train, n_pad, n_seed):
    """Training rows: a uniform subsample of ``n_train`` rows (kept in order) padded to
    ``n_pad`` with 0/1 weights, and ``n_seed`` of them (likewise) to seed on."""
    k_train, k_seed = jax.random.split(key)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if n_train < x.shape[0]:
        x = x[jnp.sort(jax.random.choice(k_train, x.shape[0], (n_train,), replace=False))]
    seed_rows = x
    if n_seed < n_train:
        seed_rows = x[jnp.sort(jax.random.choice(k_seed, n_train, (n_seed,), replace=False))]
    weight = (jnp.arange(n_pad) < n_train).astype(jnp.float32)
    return jnp.pad(x, ((0, n_pad - n_train), (0, 0))), weight, seed_rows


def _initial_codebooks(x, key, init, *, m, ksub, limit, mesh):
    """Training rows (split over ``mesh``), their weights, the initial codebooks, the mesh."""
    if mesh is None:
        mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    n = x.shape[0]
    n_train = n if limit is None else min(n, limit)
    n_dev = mesh.shape["data"]
    n_seed = min(n_train, _MAX_SEED_POINTS)
    k_rows, k_seed = jax.random.split(key)
    rows, weight, seed_rows = _sample_rows(
        x, k_rows, n_train=n_train, n_pad=-(-n_train // n_dev) * n_dev, n_seed=n_seed
    )
    if init is None:
        cent = _seed_subspaces(seed_rows, k_seed, m=m, ksub=ksub)
    else:
        cent = jnp.asarray(init, jnp.float32)
    rows, weight = jax.device_put((rows, weight), NamedSharding(mesh, P("data")))
    return rows, weight, cent, mesh


def _validate_training(x, m, nbits, n_iter, init, max_points_per_centroid, mesh):
    x = _as_matrix(x, "x")
    _check_m(m, x.shape[1], f"the dimension of x {shape_str(x)}")
    check_int(nbits, "nbits", minimum=1, maximum=_MAX_NBITS)
    ksub = 2**nbits
    n = x.shape[0]
    if ksub > n:
        raise ValueError(
            f"nbits={nbits} asks for 2**nbits = {ksub} centroids per sub-space, more than the "
            f"{n} training rows of x {shape_str(x)}"
        )
    check_int(n_iter, "n_iter", minimum=0)
    if isinstance(init, str):
        check_choice(init, "init", ("k-means++",))
        init = None
    else:
        init = _check_codebooks(init, "init")
        want = (m, ksub, x.shape[1] // m)
        if tuple(init.shape) != want:
            raise ValueError(
                f"init given as codebooks must be [m, 2**nbits, d // m] = "
                f"[{', '.join(map(str, want))}]; got {shape_str(init)}"
            )
    if max_points_per_centroid is not None:
        check_int(max_points_per_centroid, "max_points_per_centroid", minimum=1)
    _check_mesh(mesh)
    _check_finite(x, "x")
    if mesh is None:
        mesh = _detect_mesh(x)
    limit = None if max_points_per_centroid is None else max(ksub, max_points_per_centroid * ksub)
    return jnp.asarray(x), ksub, init, limit, mesh


def pq_train(
    x: ArrayLike,
    *,
    m: int,
    nbits: int = 8,
    n_iter: int = 25,
    key: jax.Array | int = 0,
    init: str | ArrayLike = "k-means++",
    max_points_per_centroid: int | None = 256,
    mesh: Mesh | None = None,
) -> jax.Array:
    """Trains product-quantization codebooks: k-means in each of ``m`` sub-spaces.

    The columns are cut into ``m`` contiguous sub-spaces of width ``dsub = d / m``; each gets
    ``2**nbits`` centroids from :func:`~jaxemb.retrieval.kmeans`'s algorithm (k-means++ seeds,
    then ``n_iter`` Lloyd iterations, exact nearest-centroid assignment, an emptied cluster
    keeps its centroid), run for all sub-spaces at once. As in faiss, at most
    ``max_points_per_centroid · 2**nbits`` rows are used (a uniform subsample). With a mesh
    (or ``x`` sharded along ``data``) the rows are split over the devices and the per-cluster
    sums reduced with ``psum``, as in :func:`~jaxemb.retrieval.kmeans`.

    Args:
      x: ``[N, d]`` float training rows (finite).
      m: number of sub-spaces; must divide ``d``.
      nbits: bits per code, ``1..16``: ``2**nbits`` centroids per sub-space, at most ``N``.
      n_iter: Lloyd iterations after seeding (faiss's default 25).
      key: PRNG key (or int seed) for the subsample and the seeding.
      init: ``"k-means++"`` or initial codebooks ``[m, 2**nbits, d // m]`` (a warm start).
      max_points_per_centroid: cap on the training rows per centroid (faiss's 256); ``None``
        uses every row.
      mesh: a mesh with a ``data`` axis to split the rows over; ``None`` uses the mesh of an
        ``x`` sharded along ``data``, else one device.

    Returns:
      ``[m, 2**nbits, d // m]`` float32 codebooks.

    Raises:
      ValueError: wrong rank or dtype, an empty axis, NaN or inf rows, ``m`` not dividing
        ``d``, ``nbits`` outside ``1..16``, more centroids than rows, a bad key, iteration
        count or mesh.

    Examples:
      >>> import numpy as np
      >>> from jaxemb.retrieval import pq_train, pq_encode
      >>> x = np.array([[0, 0, 5, 5], [0, 1, 5, 6], [9, 9, 0, 0], [9, 8, 0, 1]], np.float32)
      >>> codebooks = pq_train(x, m=2, nbits=1)
      >>> codebooks.shape
      (2, 2, 2)
      >>> codes = pq_encode(x, codebooks).tolist()
      >>> codes[0] == codes[1], codes[2] == codes[3], codes[0] != codes[2]
      (True, True, True)

    References:
      Jégou, Douze & Schmid, "Product Quantization for Nearest Neighbor Search" (TPAMI 2011);
      faiss ``ProductQuantizer::train`` (per-sub-space ``Clustering``, 25 iterations, at most
      256 points per centroid; faiss seeds at random, here k-means++ as in ``kmeans``).
    """
    x, ksub, init, limit, mesh = _validate_training(
        x, m, nbits, n_iter, init, max_points_per_centroid, mesh
    )
    rows, weight, cent, mesh = _initial_codebooks(
        x, _as_key(key), init, m=m, ksub=ksub, limit=limit, mesh=mesh
    )
    cent, _ = _lloyd_subspaces(rows, weight, cent, m=m, ksub=ksub, n_iter=int(n_iter), mesh=mesh)
    return cent


@functools.partial(jax.jit, static_argnames=("m", "ksub", "opq_iter", "pq_iter", "mesh"))
def _opq_loop(rows, weight, cent, labels, *, m, ksub, opq_iter, pq_iter, mesh):
    """Alternates the Procrustes rotation and hot-started Lloyd iterations (OPQ_NP)."""
    d = rows.shape[1]

    def reconstruction(cent, labels):  # [m, ksub, dsub], [m, n] -> [n, d]
        return _decode(labels.T, cent)

    def body(_, carry):
        rot, cent, labels = carry
        y = reconstruction(cent, labels) * weight[:, None]
        # argmin_R ‖X R − Y‖_F over orthogonal R: R = U Vᵀ with Xᵀ Y = U S Vᵀ
        u, _, vt = jnp.linalg.svd(jnp.matmul(rows.T, y, precision=_HIGHEST))
        rot = jnp.matmul(u, vt, precision=_HIGHEST)
        xr = jnp.matmul(rows, rot, precision=_HIGHEST)
        cent, labels = _lloyd_subspaces(xr, weight, cent, m=m, ksub=ksub, n_iter=pq_iter, mesh=mesh)
        return rot, cent, labels

    rot = jnp.eye(d, dtype=jnp.float32)
    return jax.lax.fori_loop(0, opq_iter, body, (rot, cent, labels))[:2]


def opq_train(
    x: ArrayLike,
    *,
    m: int,
    nbits: int = 8,
    n_iter: int = 25,
    opq_iter: int = 20,
    pq_iter: int = 4,
    key: jax.Array | int = 0,
    max_points_per_centroid: int | None = 256,
    mesh: Mesh | None = None,
) -> OPQ:
    """Optimized product quantization: a rotation and the codebooks of the rotated vectors.

    Non-parametric OPQ (Ge et al.) as faiss ``OPQMatrix`` trains it: starting from the
    identity, with the codebooks of :func:`pq_train` (``n_iter`` Lloyd iterations), it
    alternates ``opq_iter`` times (1) the orthogonal ``R`` minimising ``‖X R − X̂‖_F`` for the
    current reconstructions ``X̂`` (Procrustes: ``R = U Vᵀ`` from the SVD of ``Xᵀ X̂``) and
    (2) ``pq_iter`` Lloyd iterations on ``X R`` started from the current codebooks. Each step
    does not increase the quantization error ``‖X R − X̂‖²``, so it ends at most at that of
    plain PQ. Encode with ``pq_encode(x, codebooks, rotation=R)`` and search with
    ``pq_search(queries, codes, codebooks, k, rotation=R)`` (``R`` orthogonal: distances and
    inner products are those of the un-rotated space).

    Args:
      x: ``[N, d]`` float training rows (finite).
      m: number of sub-spaces; must divide ``d``.
      nbits: bits per code, ``1..16`` (``2**nbits <= N``).
      n_iter: Lloyd iterations of the initial codebooks.
      opq_iter: rotation / codebook alternations (faiss 50).
      pq_iter: Lloyd iterations per alternation (faiss 4).
      key: PRNG key (or int seed) for the subsample and the seeding.
      max_points_per_centroid: cap on the training rows per centroid; ``None`` uses every row.
      mesh: a mesh with a ``data`` axis to split the rows over (see :func:`pq_train`).

    Returns:
      :class:`OPQ` ``(rotation [d, d], codebooks [m, 2**nbits, d // m])``.

    Raises:
      ValueError: as :func:`pq_train`, and for a bad ``opq_iter`` or ``pq_iter``.

    Examples:
      >>> import numpy as np
      >>> from jaxemb.retrieval import opq_train
      >>> x = np.array([[0, 0, 5, 5], [0, 1, 5, 6], [9, 9, 0, 0], [9, 8, 0, 1]], np.float32)
      >>> rotation, codebooks = opq_train(x, m=2, nbits=1, opq_iter=3)
      >>> rotation.shape, codebooks.shape
      ((4, 4), (2, 2, 2))
      >>> bool(np.allclose(rotation @ rotation.T, np.eye(4), atol=1e-5))
      True

    References:
      Ge, He, Ke & Sun, "Optimized Product Quantization" (TPAMI 2014), OPQ_NP; faiss
      ``OPQMatrix::train`` (here ``y = x @ R`` with ``R`` = faiss's ``Aᵀ``).
    """
    x, ksub, _, limit, mesh = _validate_training(
        x, m, nbits, n_iter, "k-means++", max_points_per_centroid, mesh
    )
    check_int(opq_iter, "opq_iter", minimum=0)
    check_int(pq_iter, "pq_iter", minimum=1)
    rows, weight, cent, mesh = _initial_codebooks(
        x, _as_key(key), None, m=m, ksub=ksub, limit=limit, mesh=mesh
    )
    cent, labels = _lloyd_subspaces(
        rows, weight, cent, m=m, ksub=ksub, n_iter=int(n_iter), mesh=mesh
    )
    rot, cent = _opq_loop(
        rows,
        weight,
        cent,
        labels,
        m=m,
        ksub=ksub,
        opq_iter=int(opq_iter),
        pq_iter=int(pq_iter),
        mesh=mesh,
    )
    return OPQ(rot, cent)


# ---------------------------------------------------------------------------------------------
# search


def _adc_metric(cb: jax.Array, metric: str) -> _Metric:
    """The engine's ``l2`` / ``dot`` scoring with the corpus side decoded from codes first."""
    base = _REGISTRY[metric]

    def prepare_codes(codes, dtype):
        return base.prepare(_decode(codes, cb.astype(dtype)), dtype)

    return _Metric(base.prepare, base.tile, prepare_corpus=prepare_codes)


@functools.partial(jax.jit, static_argnames=("k", "chunk", "q_block", "metric", "layout"))
def _pq_search_jit(queries, codes, cb, rotation, *, k, chunk, q_block, metric, layout):
    q = _rotate(queries, rotation)
    cb = cb.astype(q.dtype)
    vals, idx = _topk(
        q, codes, k, metric=_adc_metric(cb, metric), chunk=chunk, q_block=q_block, layout=layout
    )
    if metric == "dot":
        return vals, idx
    # the k distances again by direct differences (no cancellation), sorted by them (ties: the
    # lower id); the candidates were selected by the engine's ‖q‖² + ‖x̂‖² − 2⟨q, x̂⟩
    nq = q.shape[0]
    cand = _decode(jnp.take(codes, idx.reshape(-1), axis=0), cb).reshape(nq, k, -1)
    diff = q[:, None, :] - cand
    d2, idx = jax.lax.sort((jnp.sum(diff * diff, axis=2), idx), dimension=1, num_keys=2)
    return d2, idx


def pq_search(
    queries: ArrayLike,
    codes: ArrayLike,
    codebooks: ArrayLike,
    k: int,
    *,
    metric: str = "l2",
    rotation: ArrayLike | None = None,
    chunk_size: int = 4096,
    query_chunk_size: int = 1024,
    mesh: Mesh | None = None,
    check_finite: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Asymmetric-distance (ADC) top-k search of float queries over product-quantization codes.

    Each code stands for its reconstruction ``x̂ = concat_j codebooks[j, code_j]``; a query is
    compared with it un-quantized, as faiss ``IndexPQ`` does: ``metric="l2"`` gives
    ``Σ_j ‖q_j − codebooks[j, code_j]‖²`` (squared distances, ascending) and ``"dot"`` gives
    ``Σ_j ⟨q_j, codebooks[j, code_j]⟩`` (scores, descending). The corpus is decoded and scored
    ``chunk_size`` codes at a time against blocks of ``query_chunk_size`` queries with one
    matrix product (the same sums as faiss's per-query lookup tables, grouped as a matmul), on
    the running top-k of :func:`~jaxemb.retrieval.search` (sharded over a mesh's ``data``
    axis). The ``l2`` distances of the results are recomputed by direct differences. Ties go
    to the lower id; results equal faiss ``IndexPQ.search`` given the same codebooks and codes
    up to float32 rounding (so the order of near-ties may differ).

    Args:
      queries: ``[Q, d]`` float queries (finite), ``d = m · dsub``.
      codes: ``[N, m]`` integer codes in ``[0, ksub)`` (:func:`pq_encode`).
      codebooks: ``[m, ksub, dsub]`` float centroids.
      k: number of neighbours, ``1 <= k <= N``.
      metric: ``"l2"`` (faiss ``METRIC_L2``) or ``"dot"`` (``METRIC_INNER_PRODUCT``).
      rotation: optional ``[d, d]`` rotation the codes were made with; the queries are
        multiplied by it first (:func:`opq_train`).
      chunk_size: codes decoded and scored at a time (need not divide N).
      query_chunk_size: queries scored at a time.
      mesh: a mesh with a ``data`` axis to split the codes over; ``None`` uses the mesh of
        ``codes`` sharded along ``data`` with a ``NamedSharding``, else one device.
      check_finite: raise if concrete queries hold NaN or inf, naming the rows.

    Returns:
      ``(distances or scores, ids)``, both ``[Q, k]``: float32 squared distances ascending
      (``l2``) or inner products descending (``dot``), and int32 corpus rows.

    Raises:
      ValueError: wrong ranks or dtypes; codes not integers, of the wrong width ``m`` or out of
        range; queries not ``[Q, m · dsub]``; NaN or inf in queries, codebooks or rotation;
        ``k`` outside ``[1, N]``; a bad metric, chunk size or mesh.

    Examples:
      >>> import numpy as np
      >>> from jaxemb.retrieval import pq_search
      >>> codebooks = np.array([[[0.0], [1.0]], [[0.0], [10.0]]], np.float32)
      >>> codes = np.array([[0, 0], [1, 0], [1, 1]], np.uint8)  # (0, 0), (1, 0), (1, 10)
      >>> dist, ids = pq_search(np.array([[1.0, 1.0]], np.float32), codes, codebooks, 2)
      >>> ids.tolist(), dist.tolist()
      ([[1, 0]], [[1.0, 2.0]])
      >>> scores, ids = pq_search(np.array([[1.0, 1.0]]), codes, codebooks, 2, metric="dot")
      >>> ids.tolist(), scores.tolist()
      ([[2, 1]], [[11.0, 1.0]])

    References:
      Jégou, Douze & Schmid, "Product Quantization for Nearest Neighbor Search" (TPAMI 2011),
      asymmetric distance computation; faiss ``IndexPQ::search`` (``ST_PQ``), whose
      ``METRIC_L2`` (squared distances) and ``METRIC_INNER_PRODUCT`` conventions this matches.
    """
    check_choice(metric, "metric", _METRICS)
    cb = _check_codebooks(codebooks)
    codes = _check_codes(codes, cb)
    queries = _as_matrix(queries, "queries")
    m, _, dsub = cb.shape
    if queries.shape[1] != m * dsub:
        raise ValueError(
            f"queries must be [Q, m · dsub] = [Q, {m * dsub}] for codebooks {shape_str(cb)}; "
            f"got {shape_str(queries)}"
        )
    rotation = _check_rotation(rotation, m * dsub)
    n = codes.shape[0]
    check_int(k, "k", minimum=1)
    if k > n:
        raise ValueError(
            f"k must be <= the number of codes {n} (codes {shape_str(codes)}); got {k}"
        )
    check_int(chunk_size, "chunk_size", minimum=1)
    check_int(query_chunk_size, "query_chunk_size", minimum=1)
    _check_mesh(mesh)
    if check_finite:
        _check_finite(queries, "queries")
    if mesh is None:
        mesh = _detect_mesh(codes)
    k, chunk_size, q_block = int(k), int(chunk_size), int(query_chunk_size)
    queries, codes, cb = jnp.asarray(queries), jnp.asarray(codes), jnp.asarray(cb)
    rot = None if rotation is None else jnp.asarray(rotation)
    layout = None if mesh is None or mesh.shape["data"] == 1 else (mesh, ("data",))
    return _pq_search_jit(
        queries,
        codes,
        cb,
        rot,
        k=k,
        chunk=chunk_size,
        q_block=q_block,
        metric=metric,
        layout=layout,
    )
