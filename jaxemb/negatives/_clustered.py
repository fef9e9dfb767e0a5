"""NGAME-style clustered batches: in-batch negatives that are hard negatives."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import grain
import jax
import numpy as np
from jax.sharding import Mesh

from jaxemb import _validate as v
from jaxemb.data._pipeline import batch_reader
from jaxemb.retrieval import kmeans


class ClusteredBatchState(NamedTuple):
    """The clustering a run's batches are cut from (checkpoint it with the run).

    Attributes:
      period: int64 scalar, the clustering period it belongs to (``-1``: none yet).
      labels: ``[num_examples]`` int32 cluster of each training example.
    """

    period: np.ndarray
    labels: np.ndarray


class ClusteredBatches:
    """Batches of training examples whose current embeddings are near each other (NGAME).

    Every ``recluster_every`` steps (a *period*) the examples are clustered with
    :func:`jaxemb.retrieval.kmeans` into ``num_examples // cluster_size`` clusters of their
    current embeddings (e.g. the anchors' embeddings under the current parameters). Within a
    period the examples are visited epoch after epoch; each epoch shuffles the clusters and the
    members inside each cluster with a generator seeded by ``(seed, period, epoch)`` and
    concatenates them, and consecutive ``batch_size`` examples form a batch. A batch therefore
    holds whole groups of similar examples, whose in-batch negatives are hard.

    Batch ``step`` is a pure function of ``(seed, step, state)``; the state (the cluster labels
    of the current period) is what a checkpoint must hold so that a resumed run sees the same
    batches even though its parameters, hence its embeddings, moved on.

    Args:
      num_examples: size of the training set.
      batch_size: the global batch size.
      cluster_size: target examples per cluster (NGAME uses a handful), ``<= batch_size``.
      recluster_every: steps per clustering period.
      seed: shuffling and k-means seed.
      metric: ``"cosine"`` (spherical k-means, the default) or ``"l2"``.
      n_iter: Lloyd iterations per clustering.
      mesh: a mesh to run k-means data-parallel over.

    Examples:
      >>> import numpy as np
      >>> from jaxemb.negatives import ClusteredBatches
      >>> emb = np.repeat(np.eye(4, dtype=np.float32), 4, axis=0)  # 4 tight groups of 4
      >>> cb = ClusteredBatches(16, batch_size=4, cluster_size=4, recluster_every=8, seed=0)
      >>> state = cb.update(cb.init(), 0, lambda: emb)
      >>> batch = cb.indices(state, 0)
      >>> len(set(np.argmax(emb[batch], axis=1).tolist()))  # one group per batch
      1

    References:
      Dahiya et al., "NGAME: Negative Mining-aware Mini-batching for Extreme Classification",
      WSDM 2023 (batches made of clusters of the current embeddings, refreshed periodically);
      Xiong et al. (ANCE, 2021) for refreshing negatives as the model changes.
    """

    def __init__(
        self,
        num_examples: int,
        *,
        batch_size: int,
        cluster_size: int,
        recluster_every: int,
        seed: int = 0,
        metric: str = "cosine",
        n_iter: int = 10,
        mesh: Mesh | None = None,
    ):
        v.check_int(num_examples, "num_examples", minimum=1)
        v.check_int(batch_size, "batch_size", minimum=1, maximum=num_examples)
        v.check_int(cluster_size, "cluster_size", minimum=1, maximum=batch_size)
        v.check_int(recluster_every, "recluster_every", minimum=1)
        v.check_int(seed, "seed", minimum=0, maximum=2**31 - 1)
        v.check_choice(metric, "metric", ("cosine", "l2"))
        v.check_int(n_iter, "n_iter", minimum=0)
        self.num_examples = int(num_examples)
        self.batch_size = int(batch_size)
        self.cluster_size = int(cluster_size)
        self.recluster_every = int(recluster_every)
        self.seed = int(seed)
        self.metric = metric
        self.n_iter = int(n_iter)
        self.mesh = mesh
        self.num_clusters = max(1, self.num_examples // self.cluster_size)

    def init(self) -> ClusteredBatchState:
        """The state before the first clustering."""
        return ClusteredBatchState(np.int64(-1), np.zeros(self.num_examples, np.int32))

    def period(self, step: int) -> int:
        """The clustering period of ``step``."""
        v.check_int(step, "step", minimum=0)
        return int(step) // self.recluster_every

    def needs_update(self, state: ClusteredBatchState, step: int) -> bool:
        """Whether ``step`` starts a period the state was not clustered for."""
        return int(state.period) != self.period(step)

    def update(
        self,
        state: ClusteredBatchState,
        step: int,
        embeddings: Callable[[], Any],
    ) -> ClusteredBatchState:
        """Re-clusters when ``step`` is in a new period; otherwise returns ``state``.

        Args:
          state: the current state.
          step: the step about to run.
          embeddings: ``() -> [num_examples, dim]``, called only when re-clustering (the
            current embeddings of every example, e.g. the anchors under the current params).
        """
        if not self.needs_update(state, step):
            return state
        if not callable(embeddings):
            raise ValueError("embeddings must be a callable returning [num_examples, dim]")
        period = self.period(step)
        x = embeddings()
        x = v.check_array(x, "embeddings()", ndim=2, kind="float")
        if x.shape[0] != self.num_examples:
            raise ValueError(
                f"embeddings() must return one row per example ({self.num_examples}); got "
                f"{v.shape_str(x)}"
            )
        key = jax.random.fold_in(jax.random.key(self.seed), period)
        result = kmeans(
            x, self.num_clusters, key=key, n_iter=self.n_iter, metric=self.metric, mesh=self.mesh
        )
        return ClusteredBatchState(np.int64(period), np.asarray(result.labels, np.int32))

    def _epoch_order(self, labels: np.ndarray, period: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, period, epoch))
        cluster_rank = rng.permutation(self.num_clusters)
        member_key = rng.random(self.num_examples)
        return np.lexsort((member_key, cluster_rank[labels]))

    def indices(self, state: ClusteredBatchState, step: int) -> np.ndarray:
        """The example indices ``[batch_size]`` (int64) of global batch ``step``."""
        period = self.period(step)
        if int(state.period) != period:
            raise ValueError(
                f"state is clustered for period {int(state.period)} but step {step} is in period "
                f"{period}; call update(state, step, embeddings) first"
            )
        labels = np.asarray(state.labels)
        start = (int(step) - period * self.recluster_every) * self.batch_size
        out, n = [], self.num_examples
        while len(out) < self.batch_size:
            epoch, offset = divmod(start + len(out), n)
            order = self._epoch_order(labels, period, epoch)
            out.extend(order[offset : offset + self.batch_size - len(out)].tolist())
        return np.asarray(out, np.int64)

    def dataset(
        self,
        source: Sequence[Any] | Mapping[str, Any],
        state: ClusteredBatchState,
        *,
        transform: Callable[[Any], Any] | None = None,
        shard_index: int | None = None,
        shard_count: int | None = None,
    ) -> grain.MapDataset:
        """The batches of the state's period as a grain ``MapDataset`` (element ``i`` is the
        batch of step ``period · recluster_every + i``), reading this process's rows of each
        global batch from ``source`` the way ``jaxemb.data.make_pipeline`` does."""
        if (shard_index is None) != (shard_count is None):
            raise ValueError("shard_index and shard_count must be given together")
        if shard_count is None:
            shard_index, shard_count = jax.process_index(), jax.process_count()
        v.check_int(shard_count, "shard_count", minimum=1)
        v.check_int(shard_index, "shard_index", minimum=0, maximum=shard_count - 1)
        if self.batch_size % shard_count:
            raise ValueError(
                f"batch_size must be a multiple of shard_count={shard_count}; got {self.batch_size}"
            )
        local = self.batch_size // shard_count
        first = int(state.period) * self.recluster_every
        read = batch_reader(source, transform)

        def batch(i: int):
            rows = self.indices(state, first + int(i))
            return read(rows[shard_index * local : (shard_index + 1) * local])

        return grain.MapDataset.range(self.recluster_every).map(batch)
