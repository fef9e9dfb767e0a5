"""k-means (Euclidean or spherical) with k-means++ seeding, data-parallel over a device mesh.

Assignments use the search engine of ``_search`` (``_local_search`` with ``k = 1``), so nearest
centroids are found exactly as :func:`~jaxemb.retrieval.search` finds nearest neighbours (ties
to the lower centroid index). Over a mesh each device assigns its rows and sums them per
cluster; the sums are ``psum``-reduced, so the centroids equal the single-device ones.
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

from jaxemb._validate import check_choice, check_int, shape_str
from jaxemb.retrieval._search import (
    _as_matrix,
    _blocked_queries,
    _check_finite_rows,
    _detect_mesh,
    _local_search,
)

_METRICS = ("l2", "cosine")
_INITS = ("k-means++", "random")
_EPS = 1e-12
_Q_BLOCK = 4096


class KMeans(NamedTuple):
    """The result of :func:`kmeans`.

    Attributes:
      centroids: ``[k, dim]`` float32 (unit rows for ``metric="cosine"``).
      labels: ``[N]`` int32, each row's nearest centroid.
      inertia: float32 scalar, ``Σ_i ‖x_i − c_{label_i}‖²`` for ``"l2"``, ``Σ_i (1 − cos)`` for
        ``"cosine"``.
    """

    centroids: jax.Array
    labels: jax.Array
    inertia: jax.Array


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.sqrt(jnp.sum(x * x, axis=1, keepdims=True)), _EPS)


def _assign(x, centroids, metric):
    """Nearest centroid of each row of ``x`` (engine search with k = 1) and its score."""
    k = centroids.shape[0]
    search_metric = "dot" if metric == "cosine" else "l2"  # x and centroids are unit already
    fn = functools.partial(
        _local_search,
        c=centroids,
        n_valid=k,
        offset=0,
        k=1,
        chunk=min(k, 4096),
        metric=search_metric,
    )
    vals, idx = _blocked_queries(fn, x, _Q_BLOCK)
    return vals[:, 0], idx[:, 0]


def _cost(vals, metric):
    """Per-row inertia from the engine's score (``−d²`` for l2, the cosine otherwise)."""
    return -vals if metric == "l2" else 1.0 - vals


def _seed(x, key, k, init, metric):
    """k-means++ (Arthur & Vassilvitskii) or uniform random distinct rows."""
    n = x.shape[0]
    if init == "random":
        return x[jax.random.choice(key, n, (k,), replace=False)]
    key, sub = jax.random.split(key)
    first = jax.random.randint(sub, (), 0, n)
    cent = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])

    def sq_dist(c):
        if metric == "cosine":  # squared chord length between unit vectors
            return jnp.maximum(2.0 - 2.0 * (x @ c), 0.0)
        diff = x - c[None, :]
        return jnp.sum(diff * diff, axis=1)

    def body(i, carry):
        cent, d2, key = carry
        key, sub = jax.random.split(key)
        total = jnp.sum(d2)
        p = jnp.where(total > 0, d2 / jnp.where(total > 0, total, 1.0), 1.0 / n)
        pick = jax.random.choice(sub, n, p=p)
        cent = cent.at[i].set(x[pick])
        return cent, jnp.minimum(d2, sq_dist(x[pick])), key

    cent, _, _ = jax.lax.fori_loop(1, k, body, (cent, sq_dist(x[first]), key))
    return cent


def _cluster_sums(x, weight, labels, k):
    sums = jax.ops.segment_sum(x * weight[:, None], labels, num_segments=k)
    counts = jax.ops.segment_sum(weight, labels, num_segments=k)
    return sums, counts


def _update(cent, sums, counts, metric):
    if metric == "cosine":
        norms = jnp.sqrt(jnp.sum(sums * sums, axis=1, keepdims=True))
        new = sums / jnp.maximum(norms, _EPS)
        return jnp.where(norms > _EPS, new, cent)
    new = sums / jnp.maximum(counts, 1.0)[:, None]
    return jnp.where(counts[:, None] > 0, new, cent)  # an emptied cluster keeps its centroid


@functools.partial(jax.jit, static_argnames=("k", "n_iter", "metric", "mesh"))
def _lloyd_sharded(x, weight, cent, *, k, n_iter, metric, mesh):
    """Lloyd iterations with the rows (and their 0/1 padding weights) split over ``data``."""

    def per_device(x_local, w_local, cent):
        def lloyd(_, cent):
            _, labels = _assign(x_local, cent, metric)
            sums, counts = _cluster_sums(x_local, w_local, labels, k)
            sums, counts = jax.lax.psum((sums, counts), "data")
            return _update(cent, sums, counts, metric)

        cent = jax.lax.fori_loop(0, n_iter, lloyd, cent)
        vals, labels = _assign(x_local, cent, metric)
        inertia = jax.lax.psum(jnp.sum(_cost(vals, metric) * w_local), "data")
        return cent, labels, inertia

    return jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(P("data"), P("data"), P()),
        out_specs=(P(), P("data"), P()),
        axis_names={"data"},
        check_vma=False,
    )(x, weight, cent)


@functools.partial(jax.jit, static_argnames=("metric",))
def _prepare_rows(x, *, metric):
    x = x.astype(jnp.float32)
    return _unit(x) if metric == "cosine" else x


@functools.partial(jax.jit, static_argnames=("k", "metric", "init"))
def _seed_jit(x, key, *, k, metric, init):
    return _seed(x, key, k, init, metric)


def kmeans(
    x: ArrayLike,
    k: int,
    *,
    key: jax.Array | int = 0,
    n_iter: int = 20,
    metric: str = "l2",
    init: str | ArrayLike = "k-means++",
    max_seed_points: int | None = 65536,
    mesh: Mesh | None = None,
) -> KMeans:
    """Lloyd's k-means, Euclidean (``"l2"``) or spherical (``"cosine"``), exact and shardable.

    Seeding picks ``k`` rows with k-means++ (each next centroid drawn with probability
    proportional to the squared distance to the nearest one chosen so far) or uniformly at
    random without replacement. Each Lloyd iteration assigns every row to its nearest centroid
    (the exact search engine, ties to the lower centroid index) and moves each centroid to the
    mean of its rows (``"cosine"``: the normalised mean, spherical k-means on unit rows); a
    cluster that empties keeps its centroid. With a mesh (or ``x`` sharded along ``data``) the
    rows are split over the devices and the per-cluster sums are reduced with ``psum``: the
    result equals the single-device one up to float32 summation order.

    Args:
      x: ``[N, dim]`` float rows (finite).
      k: number of clusters, ``1 <= k <= N``.
      key: PRNG key (or int seed) for the seeding.
      n_iter: Lloyd iterations after seeding (``0`` returns the seeds and their assignment).
      metric: ``"l2"`` (squared Euclidean, as faiss ``Kmeans``) or ``"cosine"`` (rows and
        centroids L2-normalised, faiss ``spherical=True``).
      init: ``"k-means++"``, ``"random"``, or the initial centroids ``[k, dim]`` (used as
        given; normalised for ``"cosine"``).
      max_seed_points: seed on a uniform subsample of at most this many rows (the sequential
        k-means++ pass then costs ``O(max_seed_points · k · dim)``); ``None`` uses every row.
      mesh: a mesh with a ``data`` axis to split the rows over; ``None`` uses the mesh of an
        ``x`` sharded along ``data``, else one device.

    Returns:
      :class:`KMeans` ``(centroids [k, dim], labels [N] int32, inertia)``.

    Raises:
      ValueError: wrong rank or dtype, an empty axis, NaN/inf rows, ``k`` outside ``[1, N]``,
        an unknown metric or init, a bad key or iteration count.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.retrieval import kmeans
      >>> x = jnp.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0], [5.0, 5.1]])
      >>> result = kmeans(x, 2, key=0)
      >>> labels = result.labels.tolist()
      >>> labels[0] == labels[1] != labels[2] == labels[3] == labels[4]
      True
      >>> # 2 · 0.05² + (2/30² + 5/30² + 5/30²): squared distances to the two cluster means
      >>> round(float(result.inertia), 4)
      0.0183

    References:
      Lloyd, "Least squares quantization in PCM" (1982); Arthur and Vassilvitskii,
      "k-means++: The Advantages of Careful Seeding" (2007); Dhillon and Modha (2001) for
      spherical k-means. faiss ``Kmeans`` (``spherical=True`` normalises the centroids) is the
      reference for the Euclidean / spherical semantics.
    """
    x = _as_matrix(x, "x")
    check_choice(metric, "metric", _METRICS)
    init_centroids = None
    if isinstance(init, str):
        check_choice(init, "init", _INITS)
    else:
        init_centroids = _as_matrix(init, "init")
        if init_centroids.shape != (k, x.shape[1]):
            raise ValueError(
                f"init given as centroids must be [k, dim] = [{k}, {x.shape[1]}]; "
                f"got {shape_str(init_centroids)}"
            )
        _check_finite_rows(init_centroids, "init")
        init = "given"
    n = int(x.shape[0])
    check_int(k, "k", minimum=1)
    if k > n:
        raise ValueError(f"k must be <= the number of rows {n} of x {shape_str(x)}; got {k}")
    check_int(n_iter, "n_iter", minimum=0)
    if max_seed_points is not None:
        check_int(max_seed_points, "max_seed_points", minimum=k)
    if mesh is not None and (not isinstance(mesh, Mesh) or "data" not in mesh.axis_names):
        raise ValueError(f"mesh must be a jax.sharding.Mesh with a 'data' axis; got {mesh!r}")
    key = _as_key(key)
    _check_finite_rows(x, "x")
    if mesh is None:
        mesh = _detect_mesh(x)
    x = jnp.asarray(x)
    k, n_iter = int(k), int(n_iter)
    seed_key, sub_key = jax.random.split(key)
    rows = _prepare_rows(x, metric=metric)
    if init_centroids is not None:
        cent = _prepare_rows(jnp.asarray(init_centroids), metric=metric)
    else:
        seed_rows = rows
        if max_seed_points is not None and n > max_seed_points:
            pick = jax.random.choice(sub_key, n, (max_seed_points,), replace=False)
            seed_rows = rows[jnp.sort(pick)]
        cent = _seed_jit(seed_rows, seed_key, k=k, metric=metric, init=init)
    if mesh is None:  # one device: a mesh of one
        mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    n_dev = mesh.shape["data"]
    n_pad = -(-n // n_dev) * n_dev
    weight = jnp.ones(n, jnp.float32)
    if n_pad != n:
        rows = jnp.pad(rows, ((0, n_pad - n), (0, 0)))
        weight = jnp.pad(weight, (0, n_pad - n))
    sharding = NamedSharding(mesh, P("data"))
    rows, weight = jax.device_put((rows, weight), sharding)
    cent, labels, inertia = _lloyd_sharded(
        rows, weight, cent, k=k, n_iter=n_iter, metric=metric, mesh=mesh
    )
    return KMeans(cent, labels[:n], inertia)


def _as_key(key: Any) -> jax.Array:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape == ():
            return key
    raise ValueError(f"key must be an int seed or a scalar PRNG key (jax.random.key); got {key!r}")
