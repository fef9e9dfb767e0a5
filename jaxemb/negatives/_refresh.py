"""ANCE / ADORE-style refresh: re-mine the hard negatives with the current model every N steps."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from jax.sharding import Mesh

from jaxemb import _validate as v
from jaxemb.negatives._mine import _is_two_sided, _mine, _mining_spec, candidate_corpus


class RefreshState(NamedTuple):
    """The negatives a run trains on (checkpoint it with the run).

    Attributes:
      period: int64 scalar, the refresh period they were mined in (``-1``: none yet).
      negatives: ``[num_pairs, num_negatives]`` int32 indices into :attr:`NegativeRefresh.corpus`
        (``-1`` where an anchor has fewer candidates).
    """

    period: np.ndarray
    negatives: np.ndarray


class NegativeRefresh:
    """Keeps every training pair's mined hard negatives fresh as the model changes.

    Every ``refresh_every`` steps (a *period*) :meth:`update` re-embeds the anchors and the
    candidate corpus with the embedding function it is given — built from the current
    parameters — and mines again with :func:`mine_hard_negatives`' rules (exact, chunked,
    sharded search: never a ``[corpus, corpus]`` array). The state holds the negatives as
    corpus indices; saved with the run's checkpoint it makes a resumed run train on exactly the
    negatives the interrupted one would have used, without re-embedding. ``"random"`` sampling
    is seeded by ``seed + period``.

    Args:
      anchors: ``[N]`` anchor texts of the training pairs.
      positives: ``[N]`` positive texts.
      refresh_every: steps per period (``ANCE`` refreshes every few thousand steps).
      corpus: extra candidate texts (the positives are always candidates).
      num_negatives: negatives per pair.
      mesh: a mesh whose ``data`` axis splits the corpus in the search.
      **mining: the other keyword arguments of :func:`mine_hard_negatives` (``range_min``,
        ``range_max``, ``max_score``, ``min_score``, ``absolute_margin``, ``relative_margin``,
        ``sampling_strategy``, ``similarity``, ``seed``, ``batch_size``,
        ``search_batch_size``).

    Examples:
      >>> import numpy as np
      >>> from jaxemb.negatives import NegativeRefresh
      >>> vocab = {"cat": [1.0, 0.0], "kitten": [0.9, 0.1], "dog": [0.7, 0.7],
      ...          "car": [0.0, 1.0], "truck": [0.1, 0.9]}
      >>> refresh = NegativeRefresh(["cat", "car"], ["kitten", "truck"], corpus=["dog"],
      ...                           refresh_every=100, num_negatives=1)
      >>> state = refresh.update(refresh.init(), 0, lambda t: np.array([vocab[x] for x in t]))
      >>> [[refresh.corpus[j] for j in row] for row in state.negatives.tolist()]
      [['dog'], ['dog']]

    References:
      Xiong et al., "Approximate Nearest Neighbor Negative Contrastive Learning for Dense Text
      Retrieval" (ANCE), ICLR 2021; Zhan et al., "Optimizing Dense Retrieval Model Training
      with Hard Negatives" (ADORE), SIGIR 2021.
    """

    def __init__(
        self,
        anchors: Sequence[str],
        positives: Sequence[str],
        *,
        refresh_every: int,
        corpus: Sequence[str] | None = None,
        num_negatives: int = 1,
        mesh: Mesh | None = None,
        **mining: Any,
    ):
        allowed = {
            "range_min",
            "range_max",
            "max_score",
            "min_score",
            "absolute_margin",
            "relative_margin",
            "sampling_strategy",
            "similarity",
            "seed",
            "batch_size",
            "search_batch_size",
        }
        unknown = sorted(set(mining) - allowed)
        if unknown:
            raise ValueError(
                f"NegativeRefresh got unknown mining options {unknown}; it accepts "
                f"{sorted(allowed)}"
            )
        v.check_int(refresh_every, "refresh_every", minimum=1)
        defaults = dict(
            range_min=0,
            range_max=None,
            max_score=None,
            min_score=None,
            absolute_margin=None,
            relative_margin=None,
            sampling_strategy="top",
            similarity="cosine",
            seed=0,
            batch_size=4096,
            search_batch_size=16384,
        )
        self._spec = _mining_spec(
            anchors,
            positives,
            embed=lambda texts: texts,  # validated as callable; the real one comes per update
            anchor_embeddings=None,
            corpus_embeddings=None,
            corpus=corpus,
            num_negatives=num_negatives,
            include_positives=False,
            output_format="n-tuple",
            output_scores=False,
            verbose=False,
            **{**defaults, **mining},
        )
        self.refresh_every = int(refresh_every)
        self.mesh = mesh
        self.corpus: list[str] = candidate_corpus(self._spec)

    @property
    def num_pairs(self) -> int:
        """The number of training pairs (rows of the state's negatives)."""
        return len(self._spec.anchors)

    def init(self) -> RefreshState:
        """The state before the first mining."""
        return RefreshState(
            np.int64(-1), np.full((self.num_pairs, self._spec.num_negatives), -1, np.int32)
        )

    def update(
        self, state: RefreshState, step: int, embed: Callable[[list[str]], Any]
    ) -> RefreshState:
        """Re-mines when ``step`` starts a new period; otherwise returns ``state`` unchanged.

        Args:
          state: the current state.
          step: the step about to run.
          embed: ``list[str] -> [n, dim]`` under the current parameters, or an object with
            ``encode_query`` / ``encode_document`` (called only when mining).
        """
        v.check_int(step, "step", minimum=0)
        period = int(step) // self.refresh_every
        if int(state.period) == period:
            return state
        if not (callable(embed) or _is_two_sided(embed)):
            raise ValueError(
                "embed must be callable (list[str] -> [n, dim]) or have encode_query and "
                "encode_document methods"
            )
        spec = dataclasses.replace(self._spec, seed=self._spec.seed + period)
        mined = _mine(spec, embed, None, None, self.mesh, verbose=False)
        per_query = np.where(np.isfinite(mined.neg_scores), mined.neg_idx, -1).astype(np.int32)
        rows = np.array([mined.query_idx[a] for a in spec.anchors])
        return RefreshState(np.int64(period), per_query[rows])

    def negative_texts(self, state: RefreshState, rows: Any) -> list[list[str]]:
        """The negative texts of training pairs ``rows`` (missing ones left out)."""
        rows = np.asarray(rows).reshape(-1)
        return [[self.corpus[j] for j in state.negatives[r] if j >= 0] for r in rows]
