"""A deterministic, resumable grain input pipeline: shuffle -> repeat -> batch -> process slice."""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np

from jaxemb import _validate


def _batched_reads(source) -> bool:
    """Whether ``source.__getitems__`` works (tfds.testing.mock_data's mock of it does not)."""
    getitems = getattr(source, "__getitems__", None)
    if getitems is None:
        return False
    try:
        return len(getitems([0])) == 1
    except TypeError:
        return False


def _read_batch(indices: np.ndarray, *, source, transform, batched: bool) -> Any:
    """Reads the examples at ``indices``, applies ``transform`` to each and stacks them."""
    if isinstance(source, Mapping):  # columns of equal length: gather rows directly
        indices = np.asarray(indices)
        if transform is None:
            return {k: np.asarray(v)[indices] for k, v in source.items()}
        examples = [{k: np.asarray(v)[i] for k, v in source.items()} for i in indices]
        return jax.tree.map(lambda *xs: np.stack(xs), *[transform(ex) for ex in examples])
    index_list = [int(i) for i in indices]
    if batched:
        examples = source.__getitems__(index_list)
    else:
        examples = [source[i] for i in index_list]
    if transform is not None:
        examples = [transform(ex) for ex in examples]
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *examples)


def batch_reader(
    source: Sequence[Any] | Mapping[str, Any], transform: Callable[[Any], Any] | None = None
) -> Callable[[np.ndarray], Any]:
    """``indices -> batch``: reads the examples at ``indices`` of ``source`` and stacks them.

    The reader every batch pipeline uses (``make_pipeline``, the clustered batches of
    ``jaxemb.negatives``): a dict of arrays is gathered row-wise, a random-access source read
    with ``__getitems__`` when it has one, ``transform`` applied to each example.
    """
    batched = not isinstance(source, Mapping) and _batched_reads(source)
    return functools.partial(_read_batch, source=source, transform=transform, batched=batched)


class _EpochOrder:
    """The example order of a pipeline: epoch ``e`` is a permutation of ``range(n)`` drawn by
    ``np.random.default_rng((seed, e))`` (or ``range(n)`` unshuffled), cached per epoch."""

    def __init__(self, n: int, *, seed: int, shuffle: bool):
        self._n, self._seed, self._shuffle = n, seed, shuffle
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()  # grain's prefetch threads read batches concurrently

    def epoch(self, e: int) -> np.ndarray:
        """The order of epoch ``e``: ``[n]`` example indices."""
        if not self._shuffle:
            return np.arange(self._n)
        with self._lock:
            perm = self._cache.get(e)
            if perm is None:
                perm = np.random.default_rng((self._seed, e)).permutation(self._n)
                if self._n <= np.iinfo(np.int32).max:
                    perm = perm.astype(np.int32)  # half the memory of a large epoch's order
                if len(self._cache) >= 2:  # a batch no larger than an epoch spans at most two
                    self._cache.pop(min(self._cache))
                self._cache[e] = perm
        return perm

    def positions(self, begin: int, end: int) -> np.ndarray:
        """The example indices at positions ``[begin, end)`` of the stream of epochs."""
        parts = []
        while begin < end:
            e, offset = divmod(begin, self._n)
            take = min(end - begin, self._n - offset)
            parts.append(self.epoch(e)[offset : offset + take])
            begin += take
        return np.concatenate(parts) if len(parts) != 1 else parts[0]


class BatchIterator(Iterator[dict[str, np.ndarray]]):
    """Iterator over the process-local batches of ``make_pipeline``, resumable by step.

    ``step`` is the index of the next batch it will return. ``get_state()`` / ``set_state()``
    save and restore it as ``{"step": int}``, which is all a checkpoint needs, because batch
    ``step`` is a pure function of ``(seed, step)``.
    """

    def __init__(
        self,
        dataset: grain.MapDataset,
        *,
        start_step: int,
        num_steps: int | None,
        num_threads: int,
    ):
        self._dataset = dataset  # global step s is element s of this dataset
        self._num_steps = num_steps
        self._num_threads = num_threads
        self._restart(start_step)

    def _restart(self, step: int) -> None:
        self._step = step
        options = grain.ReadOptions(
            num_threads=self._num_threads, prefetch_buffer_size=2 * self._num_threads
        )
        self._iter = iter(self._dataset[step:].to_iter_dataset(options))

    @property
    def step(self) -> int:
        """Index of the next batch this iterator returns."""
        return self._step

    @property
    def num_steps(self) -> int | None:
        """Total number of batches (``None`` when the pipeline repeats forever)."""
        return self._num_steps

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._iter)
        self._step += 1
        return batch

    def batch_at(self, step: int) -> dict[str, np.ndarray]:
        """The batch of index ``step`` (random access; does not move the iterator)."""
        _validate.check_int(step, "step", minimum=0)
        if self._num_steps is not None and step >= self._num_steps:
            raise ValueError(f"step must be < num_steps={self._num_steps}; got {step}")
        return self._dataset[step]

    def get_state(self) -> dict[str, int]:
        """The iterator's position, ``{"step": step}``, for a checkpoint."""
        return {"step": self._step}

    def set_state(self, state: dict[str, int]) -> None:
        """Moves the iterator to ``state["step"]`` (as saved by ``get_state``)."""
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError(
                f"state must be a dict {{'step': int}} from get_state(); got {state!r}"
            )
        step = int(np.asarray(state["step"]))
        _validate.check_int(step, "state['step']", minimum=0)
        self._restart(step)


def make_pipeline(
    source: Sequence[Any] | Mapping[str, Any],
    *,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    shard_index: int | None = None,
    shard_count: int | None = None,
    transform: Callable[[Any], Any] | None = None,
    num_threads: int = 0,
) -> BatchIterator:
    """Builds the grain pipeline source -> shuffle(seed) -> repeat -> batch -> process slice.

    The global order is fixed by ``seed`` alone: epoch ``e`` visits every example once in the
    order of ``np.random.default_rng((seed, e)).permutation(n)`` (one vectorised permutation
    per epoch: grain's per-example ``index_shuffle`` costs ~20 µs an example), and the stream
    of epochs is cut into global batches of ``batch_size`` (a batch may span an epoch
    boundary). Global batch ``step`` is therefore a pure function of ``(seed, step)``, and an
    iterator started at ``start_step`` returns exactly batches ``start_step, start_step + 1, ...``.
    Each process keeps rows ``[shard_index * b, (shard_index + 1) * b)`` of every global batch,
    ``b = batch_size // shard_count``, and reads only those examples; the concatenation over
    processes is the global batch, whatever the number of processes.

    Args:
      source: a random-access sequence of examples (``data_source(...)``, a list of dicts...)
        or a dict of arrays with a common leading axis (``load_arrays(...)``; reading batches
        from memory is the fastest path).
      batch_size: the global batch size (over all processes); a multiple of ``shard_count``.
      seed: shuffle seed in ``[0, 2**32)``.
      start_step: index of the first batch to return (to resume a run).
      shuffle: whether to shuffle (per epoch); ``False`` keeps the source order.
      num_epochs: number of passes over the source; ``None`` repeats forever.
      drop_remainder: with finite ``num_epochs``, drop a last incomplete global batch.
      shard_index: this process's slice; defaults to ``jax.process_index()``.
      shard_count: number of slices; defaults to ``jax.process_count()``.
      transform: optional function applied to each example before batching (e.g. decoding or
        scaling); it must be deterministic for the order guarantee to cover its output.
      num_threads: grain prefetch threads (``0`` reads batches in the calling thread). The
        order is the same for any value.

    Returns:
      A ``BatchIterator`` of dicts of NumPy arrays with leading axis ``batch_size //
      shard_count``, with ``step``, ``batch_at(step)`` and ``get_state()``/``set_state()``.

    Examples:
      >>> from jaxemb import data
      >>> source = [{"i": i} for i in range(10)]
      >>> it = data.make_pipeline(source, batch_size=4, seed=0, shuffle=False)
      >>> [next(it)["i"].tolist() for _ in range(3)]
      [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
      >>> a = data.make_pipeline(source, batch_size=4, seed=3)
      >>> _ = [next(a) for _ in range(5)]
      >>> b = data.make_pipeline(source, batch_size=4, seed=3, start_step=5)
      >>> next(a)["i"].tolist() == next(b)["i"].tolist()
      True
      >>> half = data.make_pipeline(source, batch_size=4, seed=0, shuffle=False, shard_index=1,
      ...                           shard_count=2)
      >>> next(half)["i"].tolist()
      [2, 3]

    References:
      grain's ``MapDataset`` and its prefetching iterator, as in the Flax and big_vision input
      pipelines, over batch indices (per-epoch reshuffling as grain's ``shuffle``); per-process
      slicing as ``tfds.split_for_jax_process`` but cut from the global batch so that the order
      does not depend on the process count.
    """
    if isinstance(source, Mapping):
        lengths = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in source.items()}
        if not lengths or None in lengths.values() or len(set(lengths.values())) != 1:
            raise ValueError(
                f"source given as a dict must map feature names to arrays with the same leading "
                f"(example) axis, like load_arrays(...) returns; got leading sizes {lengths}"
            )
        n = next(iter(lengths.values()))
    elif not hasattr(source, "__len__") or not hasattr(source, "__getitem__"):
        raise ValueError(
            f"source must be a random-access sequence (len and [i]), e.g. data_source(...), or "
            f"a dict of equally long arrays, e.g. load_arrays(...); got {type(source).__name__}"
        )
    else:
        n = len(source)
    if n == 0:
        raise ValueError("source must not be empty; got a source of length 0")
    _validate.check_int(batch_size, "batch_size", minimum=1)
    _validate.check_int(seed, "seed", minimum=0, maximum=2**32 - 1)
    _validate.check_int(start_step, "start_step", minimum=0)
    _validate.check_int(num_threads, "num_threads", minimum=0)
    if num_epochs is not None:
        _validate.check_int(num_epochs, "num_epochs", minimum=1)
    if transform is not None and not callable(transform):
        raise ValueError(f"transform must be callable or None; got {type(transform).__name__}")
    if (shard_index is None) != (shard_count is None):
        raise ValueError(
            f"shard_index and shard_count must be given together (or both left None for "
            f"jax.process_index() / jax.process_count()); got shard_index={shard_index!r}, "
            f"shard_count={shard_count!r}"
        )
    if shard_count is None:
        shard_index, shard_count = jax.process_index(), jax.process_count()
    _validate.check_int(shard_count, "shard_count", minimum=1)
    _validate.check_int(shard_index, "shard_index", minimum=0, maximum=shard_count - 1)
    if batch_size % shard_count:
        raise ValueError(
            f"batch_size must be a multiple of shard_count={shard_count} so that every process "
            f"gets the same number of rows; got batch_size={batch_size}"
        )
    local = batch_size // shard_count

    # The order is computed on example indices, a whole epoch at a time (one vectorised
    # permutation, not a per-example index shuffle); each process then reads its rows of a
    # batch in one call (ArrayRecord sources read many records much faster than one at a time).
    order = _EpochOrder(n, seed=seed, shuffle=shuffle)
    total = None
    steps = None
    if num_epochs is not None:
        total = n * num_epochs
        if drop_remainder:
            steps = total // batch_size
            if steps == 0:
                raise ValueError(
                    f"batch_size={batch_size} is larger than the {total} examples of "
                    f"{num_epochs} epoch(s) of the source, and drop_remainder=True drops "
                    f"everything; use a smaller batch or drop_remainder=False"
                )
            total = steps * batch_size
        elif total % batch_size and shard_count > 1:
            raise ValueError(
                f"drop_remainder=False with shard_count={shard_count} needs the {total} examples "
                f"of {num_epochs} epoch(s) to fill whole global batches of {batch_size}, so that "
                f"every process gets the same number of steps; pad the source or use "
                f"drop_remainder=True"
            )
        else:
            steps = -(-total // batch_size)
        if start_step > steps:
            raise ValueError(
                f"start_step must be <= the number of batches ({steps}); got {start_step}"
            )
    read = batch_reader(source, transform)

    def local_batch(step: int) -> Any:
        begin = step * batch_size + shard_index * local
        end = begin + local if total is None else min(begin + local, total)
        return read(order.positions(begin, end))

    ds = grain.MapDataset.range(sys.maxsize if steps is None else steps).map(local_batch)
    return BatchIterator(ds, start_step=start_step, num_steps=steps, num_threads=num_threads)
