"""Clustered batches and negative refresh: determinism, resumption, what they hand the loop."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from test_negatives_mine import ANCHORS, CORPUS, POSITIVES, TABLE, np_mine

from jaxemb.checkpoint import Checkpointer
from jaxemb.negatives import (
    ClusteredBatches,
    ClusteredBatchState,
    NegativeRefresh,
    RefreshState,
    mine_hard_negatives,
)


def _blobs(n_blobs=8, size=4, d=6, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_blobs, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = np.repeat(centers, size, axis=0) + 0.02 * rng.normal(size=(n_blobs * size, d))
    perm = rng.permutation(len(x))  # examples not stored by blob
    return x[perm].astype(np.float32), np.repeat(np.arange(n_blobs), size)[perm]


def test_batches_are_made_of_whole_clusters_and_cover_each_epoch():
    x, blob = _blobs()
    cb = ClusteredBatches(32, batch_size=8, cluster_size=4, recluster_every=12, seed=5)
    calls = []

    def embeddings():
        calls.append(1)
        return x

    state = cb.update(cb.init(), 0, embeddings)
    for step in range(12):
        state = cb.update(state, step, embeddings)  # same period: nothing recomputed
        batch = cb.indices(state, step)
        groups = np.bincount(blob[batch], minlength=8)
        assert set(groups.tolist()) <= {0, 4}, groups  # two whole blobs per batch
    assert len(calls) == 1
    # four batches are one epoch: every example exactly once
    epoch = np.concatenate([cb.indices(state, s) for s in range(4)])
    np.testing.assert_array_equal(np.sort(epoch), np.arange(32))
    # the next epoch visits the clusters in another order
    assert not np.array_equal(epoch, np.concatenate([cb.indices(state, s) for s in range(4, 8)]))
    # step 12 starts a new period: re-clustered once
    state2 = cb.update(state, 12, embeddings)
    assert len(calls) == 2 and int(state2.period) == 1
    with pytest.raises(ValueError, match="call update"):
        cb.indices(state, 12)


def test_clustered_batches_resume_from_a_checkpoint(tmp_path):
    x, _ = _blobs(seed=1)
    cb = ClusteredBatches(32, batch_size=8, cluster_size=4, recluster_every=10, seed=2)
    state = cb.update(cb.init(), 10, lambda: x)
    want = [cb.indices(state, s) for s in range(13, 20)]
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        ckpt.save(13, {"batches": state, "w": jnp.ones(2)})
    # the resumed run's embeddings differ (its parameters moved on): the saved clusters are used
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        restored, step = ckpt.restore_or_init({"batches": cb.init(), "w": jnp.zeros(2)})
    restored = ClusteredBatchState(*restored["batches"])

    def never():
        raise AssertionError("a resumed run must not re-cluster within the period")

    restored = cb.update(restored, step, never)
    got = [cb.indices(restored, s) for s in range(13, 20)]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    # the same (seed, step, state) gives the same batches in a fresh object
    fresh = ClusteredBatches(32, batch_size=8, cluster_size=4, recluster_every=10, seed=2)
    np.testing.assert_array_equal(fresh.indices(restored, 13), want[0])


def test_clustered_dataset_reads_the_batches_per_process():
    x, _ = _blobs(seed=3)
    source = {"x": x, "i": np.arange(32)}
    cb = ClusteredBatches(32, batch_size=8, cluster_size=4, recluster_every=6, seed=0)
    state = cb.update(cb.init(), 6, lambda: x)
    ds = cb.dataset(source, state, shard_index=0, shard_count=1)
    assert len(ds) == 6
    for i in range(6):
        np.testing.assert_array_equal(ds[i]["i"], cb.indices(state, 6 + i))
    halves = [cb.dataset(source, state, shard_index=r, shard_count=2)[2]["i"] for r in (0, 1)]
    np.testing.assert_array_equal(np.concatenate(halves), cb.indices(state, 8))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size must be >= 1"),
        (dict(cluster_size=9), "cluster_size must be <= 8"),
        (dict(recluster_every=0), "recluster_every"),
        (dict(metric="dot"), "metric"),
    ],
)
def test_clustered_validation(kwargs, match):
    args = dict(batch_size=8, cluster_size=4, recluster_every=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ClusteredBatches(32, **args)
    cb = ClusteredBatches(32, batch_size=8, cluster_size=4, recluster_every=5)
    with pytest.raises(ValueError, match="one row per example"):
        cb.update(cb.init(), 0, lambda: np.ones((31, 4), np.float32))


def _embed_with(shift):
    """An embedding function whose output depends on 'parameters' (a rotation by shift)."""

    def embed(texts):
        x = np.stack([TABLE[t] for t in texts]).astype(np.float64)
        c, s = np.cos(shift), np.sin(shift)
        x[:, :2] = x[:, :2] @ np.array([[c, -s], [s, c]])
        x[:, 2] += shift * x[:, 3]
        return x.astype(np.float32)

    return embed


def test_refresh_mines_like_mine_hard_negatives_and_only_at_period_starts():
    refresh = NegativeRefresh(
        ANCHORS, POSITIVES, corpus=CORPUS, refresh_every=50, num_negatives=2, max_score=0.9
    )
    calls = []

    def embed(texts):
        calls.append(len(texts))
        return np.stack([TABLE[t] for t in texts])

    state = refresh.update(refresh.init(), 0, embed)
    assert int(state.period) == 0 and state.negatives.shape == (len(ANCHORS), 2)
    # per training pair, the negatives of its anchor as the n-tuple reference mines them
    want = np_mine(
        ANCHORS, POSITIVES, CORPUS, num_negatives=2, max_score=0.9, output_format="n-tuple"
    )
    by_anchor = {
        a: [want["negative_1"][i], want["negative_2"][i]] for i, a in enumerate(want["anchor"])
    }
    texts = refresh.negative_texts(state, np.arange(len(ANCHORS)))
    for a, got in zip(ANCHORS, texts, strict=True):
        if a in by_anchor:
            assert got == by_anchor[a]
    n_calls = len(calls)
    assert refresh.update(state, 49, embed) is state and len(calls) == n_calls
    # a new period with moved 'parameters' re-mines, and the negatives change
    moved = refresh.update(state, 50, _embed_with(0.8))
    assert int(moved.period) == 1 and not np.array_equal(moved.negatives, state.negatives)
    direct = mine_hard_negatives(
        ANCHORS,
        POSITIVES,
        corpus=CORPUS,
        embed=_embed_with(0.8),
        num_negatives=2,
        max_score=0.9,
        output_format="n-tuple",
        verbose=False,
    )
    for i, a in enumerate(direct["anchor"]):
        row = ANCHORS.index(a)
        assert refresh.negative_texts(moved, [row])[0] == [
            direct["negative_1"][i],
            direct["negative_2"][i],
        ]


def test_refresh_state_resumes_from_a_checkpoint(tmp_path):
    refresh = NegativeRefresh(
        ANCHORS,
        POSITIVES,
        refresh_every=10,
        num_negatives=3,
        sampling_strategy="random",
        range_max=12,
    )
    state = refresh.update(refresh.init(), 20, _embed_with(0.3))
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        ckpt.save(25, {"negatives": state})
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        restored, step = ckpt.restore_or_init({"negatives": refresh.init()})
    restored = RefreshState(*restored["negatives"])

    def never(texts):
        raise AssertionError("a resumed run must not re-mine within the period")

    assert step == 25
    again = refresh.update(restored, step, never)
    np.testing.assert_array_equal(again.negatives, state.negatives)
    # random sampling is seeded by the period: the same period mines the same draws
    redo = refresh.update(refresh.init(), 21, _embed_with(0.3))
    np.testing.assert_array_equal(redo.negatives, state.negatives)
    other = refresh.update(refresh.init(), 31, _embed_with(0.3))
    assert not np.array_equal(other.negatives, state.negatives)


def test_refresh_validation():
    with pytest.raises(ValueError, match="unknown mining options"):
        NegativeRefresh(ANCHORS, POSITIVES, refresh_every=5, output_format="triplet")
    with pytest.raises(ValueError, match="refresh_every"):
        NegativeRefresh(ANCHORS, POSITIVES, refresh_every=0)
    with pytest.raises(ValueError, match="same length"):
        NegativeRefresh(ANCHORS[:-1], POSITIVES, refresh_every=5)
