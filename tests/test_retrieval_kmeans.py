"""jaxemb.retrieval.kmeans against a NumPy Lloyd, sharded equal to single-device, seeding."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from tolerances import EPS32, assert_f32_close

from jaxemb.parallel import shard_batch
from jaxemb.retrieval import kmeans


def np_lloyd(x, cent, n_iter, metric):
    """Reference Lloyd iterations in float64 (empty clusters keep their centroid)."""
    x = np.asarray(x, np.float64)
    cent = np.asarray(cent, np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        cent = cent / np.linalg.norm(cent, axis=1, keepdims=True)

    def assign(cent):
        if metric == "cosine":
            s = x @ cent.T
            return np.argmax(s, axis=1), 1.0 - s.max(axis=1)
        d = ((x[:, None, :] - cent[None, :, :]) ** 2).sum(-1)
        return np.argmin(d, axis=1), d.min(axis=1)

    for _ in range(n_iter):
        labels, _ = assign(cent)
        for j in range(len(cent)):
            members = x[labels == j]
            if len(members):
                m = members.sum(0) if metric == "cosine" else members.mean(0)
                cent[j] = m / np.linalg.norm(m) if metric == "cosine" else m
    labels, cost = assign(cent)
    return cent, labels, cost.sum()


def _blobs(seed=0, n_per=40, k=4, d=6, spread=0.3):
    rng = np.random.default_rng(seed)
    means = 4.0 * rng.normal(size=(k, d))
    x = np.concatenate([m + spread * rng.normal(size=(n_per, d)) for m in means])
    return x.astype(np.float32), means


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_lloyd_from_given_centroids_matches_numpy(metric):
    x, _ = _blobs(1)
    init = x[[0, 1, 2, 3, 50, 90]]  # poor seeds: the iterations have work to do
    got = kmeans(x, 6, init=init, n_iter=7, metric=metric)
    cent, labels, cost = np_lloyd(x, init, 7, metric)
    np.testing.assert_array_equal(got.labels, labels)
    assert_f32_close(got.centroids, cent)
    np.testing.assert_allclose(got.inertia, cost, rtol=1e-5, atol=1e-5 * len(x))
    assert got.labels.dtype == np.int32 and got.centroids.dtype == np.float32


def test_kmeans_pp_recovers_separated_clusters_and_is_deterministic():
    x, means = _blobs(2, k=5)
    truth = np.repeat(np.arange(5), 40)
    a = kmeans(x, 5, key=jax.random.key(3))
    b = kmeans(x, 5, key=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    # every true cluster maps to one found cluster and vice versa
    pairs = {(int(t), int(f)) for t, f in zip(truth, np.asarray(a.labels), strict=True)}
    assert len(pairs) == 5 and len({f for _, f in pairs}) == 5
    # the inertia is that of the true partition (the blobs are far apart)
    ref = sum(((x[truth == j] - x[truth == j].mean(0)) ** 2).sum() for j in range(5))
    np.testing.assert_allclose(a.inertia, ref, rtol=1e-4)
    # seeding only: k-means++ puts one seed in each blob (far-apart blobs dominate D²)
    seeds = kmeans(x, 5, key=7, n_iter=0).centroids
    nearest = np.argmin(((np.asarray(seeds)[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert sorted(nearest.tolist()) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_sharded_rows_equal_single_device(mesh8, metric):
    x, _ = _blobs(4, n_per=21)  # 84 rows: padded to 88 over 8 devices
    init = x[[0, 30, 60, 83]]
    single = kmeans(x, 4, init=init, n_iter=5, metric=metric)
    sharded = kmeans(x, 4, init=init, n_iter=5, metric=metric, mesh=mesh8)
    np.testing.assert_array_equal(sharded.labels, single.labels)
    assert_f32_close(sharded.centroids, single.centroids)
    # a sum of 84 terms 1 − cos, each rounded to ~eps32 absolute (cancellation near cos = 1)
    np.testing.assert_allclose(sharded.inertia, single.inertia, rtol=1e-5, atol=2 * 84 * EPS32)
    # an x already sharded along data is detected
    by_data = kmeans(shard_batch(mesh8, x[:80]), 4, init=init, n_iter=5, metric=metric)
    ref = kmeans(x[:80], 4, init=init, n_iter=5, metric=metric)
    np.testing.assert_array_equal(by_data.labels, ref.labels)


def test_seeding_on_a_subsample_and_empty_clusters():
    x, _ = _blobs(5, n_per=50)
    r = kmeans(x, 4, key=1, max_seed_points=40)
    assert r.centroids.shape == (4, 6) and np.isfinite(np.asarray(r.centroids)).all()
    # a seed far from every row: its cluster stays empty and keeps its centroid
    init = np.concatenate([x[[0, 60, 120]], np.full((1, 6), 1e3, np.float32)])
    r = kmeans(x, 4, init=init, n_iter=3)
    np.testing.assert_array_equal(np.asarray(r.centroids)[3], init[3])
    assert 3 not in set(np.asarray(r.labels).tolist())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(k=0), "k must be >= 1"),
        (dict(k=500), "k must be <= the number of rows 200"),
        (dict(k=3, metric="manhattan"), "metric"),
        (dict(k=3, init="forgy"), "init"),
        (
            dict(k=3, init=np.zeros((2, 6), np.float32)),
            r"init given as centroids must be \[k, dim\]",
        ),
        (dict(k=3, n_iter=-1), "n_iter"),
        (dict(k=3, key="seed"), "key must be"),
        (dict(k=3, max_seed_points=2), "max_seed_points"),
    ],
)
def test_validation(kwargs, match):
    x, _ = _blobs(0, n_per=50)
    with pytest.raises(ValueError, match=match):
        kmeans(x, **kwargs)
    bad = x.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"x .* NaN or inf values in 1 row\(s\): \[7\]"):
        kmeans(bad, 3)
