"""Matryoshka funnel search: shortlist with an embedding prefix, re-rank with wider prefixes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.typing import ArrayLike

from jaxemb._validate import check_axis_match, check_choice, check_int, shape_str
from jaxemb.retrieval._rescore import _rescore
from jaxemb.retrieval._search import _as_matrix, _check_finite_rows, search

_FUNNEL_METRICS = ("cosine", "dot")
_DEFAULT_STAGES = ((64, 200), (256, 50), (None, None))


def _resolve_stages(stages: Any, k: int, d: int, n: int) -> list[tuple[int, int]]:
    """``stages`` as ``[(width, keep), ...]`` with ``None`` filled in (width D, keep k), checked.

    Widths must increase strictly within ``[1, D]``; each stage keeps ``k <= keep <= N``
    candidates, no more than the stage before it, and the last keeps exactly ``k``.
    """
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or not stages:
        raise ValueError(
            f"stages must be a non-empty sequence of (width, keep) pairs; got {stages!r}"
        )
    out: list[tuple[int, int]] = []
    for i, stage in enumerate(stages):
        if isinstance(stage, (str, bytes)) or not isinstance(stage, Sequence) or len(stage) != 2:
            raise ValueError(f"stages[{i}] must be a (width, keep) pair; got {stage!r}")
        width, keep = stage
        width = d if width is None else width
        keep = k if keep is None else keep
        check_int(width, f"stages[{i}] width", minimum=1)
        check_int(keep, f"stages[{i}] keep", minimum=1)
        width, keep = int(width), int(keep)
        if width > d:
            raise ValueError(
                f"stages[{i}] width must be <= the embedding width D={d}; got {width} "
                f"(stages {stages!r})"
            )
        if keep < k:
            raise ValueError(
                f"stages[{i}] keep must be >= k={k} (a stage cannot return fewer candidates "
                f"than the k results); got {keep} (stages {stages!r})"
            )
        if keep > n:
            raise ValueError(
                f"stages[{i}] keep must be <= the corpus size N={n}; got {keep} (stages {stages!r})"
            )
        if out and width <= out[-1][0]:
            raise ValueError(
                f"stages widths must increase strictly (each stage re-ranks with a wider "
                f"prefix); stages[{i}] width {width} follows {out[-1][0]} (stages {stages!r})"
            )
        if out and keep > out[-1][1]:
            raise ValueError(
                f"stages keep counts must not increase (a stage re-ranks the previous stage's "
                f"shortlist); stages[{i}] keeps {keep} after {out[-1][1]} (stages {stages!r})"
            )
        out.append((width, keep))
    if out[-1][1] != k:
        raise ValueError(
            f"the last stage must keep k={k} (use None); got {out[-1][1]} (stages {stages!r})"
        )
    return out


def funnel_search(
    queries: ArrayLike,
    corpus: ArrayLike,
    k: int,
    *,
    stages: Sequence[tuple[int | None, int | None]] = _DEFAULT_STAGES,
    metric: str = "cosine",
    chunk_size: int | None = None,
    query_chunk_size: int = 1024,
    mesh: Mesh | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Matryoshka funnel: shortlist with an embedding prefix, re-rank with wider prefixes.

    Stage ``i`` is a pair ``(width_i, keep_i)``. The first stage searches the whole corpus
    exactly with :func:`search` on the prefixes ``queries[:, :width_1]`` and
    ``corpus[:, :width_1]`` and keeps the ``keep_1`` best rows; every later stage gathers the
    previous shortlist, scores it with the wider prefixes ``[:, :width_i]`` (the rescoring of
    :func:`search_with_rescoring`) and keeps its ``keep_i`` best. For ``"cosine"`` each prefix
    is L2-normalised before scoring, as Matryoshka embeddings are compared at every width.
    ``width=None`` means the full width D and ``keep=None`` means ``k``: the default
    ``((64, 200), (256, 50), (None, None))`` is ``((64, 200), (256, 50), (None, k))``. A single
    stage ``((None, None),)`` is exact search. Ties go to the lower corpus index in the first
    stage and to the better previous rank afterwards.

    Recall against exact full-width search depends on how well the prefixes rank (compare
    with ``search(queries, corpus, k)``; ``benchmarks/compression_reduce.py`` reports it).

    Args:
      queries: [Q, D] floating point queries, no NaN or inf.
      corpus: [N, D] floating point embeddings, no NaN or inf.
      k: results per query, ``1 <= k <= N``.
      stages: ``(width, keep)`` pairs: widths strictly increasing in ``[1, D]`` (``None`` = D),
        ``keep`` non-increasing in ``[k, N]`` (``None`` = k), the last equal to ``k``.
      metric: ``"cosine"`` (prefixes re-normalised at every stage) or ``"dot"``.
      chunk_size: corpus rows per chunk of the first stage's search (``None``: :func:`search`'s
        default).
      query_chunk_size: queries searched (and re-ranked) at a time.
      mesh: a mesh with a ``data`` axis to shard the first stage's search over (see
        :func:`search`).

    Returns:
      ``(scores, ids)``, both [Q, k]: the last stage's similarities (float32, at its width) in
      descending order and int32 corpus rows.

    Raises:
      ValueError: on wrong ranks or dtypes, mismatched widths, non-finite rows, ``k`` outside
        ``[1, N]``, an unknown metric, or stages whose widths do not increase within ``[1, D]``
        or whose keep counts fall below ``k``, exceed N or the previous stage's, or whose last
        keep is not ``k``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.retrieval import funnel_search
      >>> corpus = jnp.array([[1.0, 0.0, 0.0, 0.0], [0.9, 0.0, 1.0, 0.0],
      ...                     [0.8, 0.1, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
      >>> query = jnp.array([[1.0, 0.0, 1.0, 0.0]])
      >>> _, ids = funnel_search(query, corpus, 1, stages=((1, 3), (None, None)))
      >>> ids.tolist()  # the 1-d prefix shortlists rows 0, 1, 2; full width prefers row 1
      [[1]]

    References:
      Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022 (adaptive retrieval:
      shortlist with a low-dimensional prefix, re-rank with a higher one) and its "funnel
      retrieval" (``RAIVNLab/MRL`` ``retrieval/``: a rerank cascade of growing widths with a
      shortlist cascade of shrinking sizes, e.g. ``[16, 32, 64, 128, 2048]`` with
      ``[200, 100, 50, 25, 10]``), whose stages these are.
    """
    check_choice(metric, "metric", _FUNNEL_METRICS)
    queries = _as_matrix(queries, "queries")
    corpus = _as_matrix(corpus, "corpus")
    check_axis_match(queries, "queries", 1, corpus, "corpus", 1)
    n, d = corpus.shape
    check_int(k, "k", minimum=1)
    if k > n:
        raise ValueError(f"k must be <= the corpus size {n} (corpus {shape_str(corpus)}); got {k}")
    k = int(k)
    plan = _resolve_stages(stages, k, d, n)
    check_int(query_chunk_size, "query_chunk_size", minimum=1)
    _check_finite_rows(queries, "queries")
    _check_finite_rows(corpus, "corpus")  # every column: later stages read wider prefixes

    width, keep = plan[0]
    q, c = jnp.asarray(queries), jnp.asarray(corpus)
    scores, ids = search(
        q if width == d else q[:, :width],
        c if width == d else c[:, :width],
        keep,
        metric=metric,
        chunk_size=chunk_size,
        query_chunk_size=query_chunk_size,
        mesh=mesh,
        check_finite=False,
    )
    unused = jnp.zeros((1,), jnp.float32)
    for width, keep in plan[1:]:
        scores, ids = _rescore(
            q if width == d else q[:, :width],
            ids,
            None,
            c,
            unused,
            unused,
            k=keep,
            mode="given",
            q_block=int(query_chunk_size),
            normalize=metric == "cosine",
        )
    return scores, ids
