"""Negative samplers as pure functions of scores (and a PRNG key)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxemb import _validate as v


def _check_scores(scores, positive_scores, valid):
    scores = v.check_array(scores, "scores", ndim=2, kind="float")
    positive_scores = v.check_array(positive_scores, "positive_scores", ndim=1, kind="float")
    if positive_scores.shape[0] != scores.shape[0]:
        raise ValueError(
            f"positive_scores must have one entry per row of scores {v.shape_str(scores)}; "
            f"got {v.shape_str(positive_scores)}"
        )
    if valid is not None:
        valid = v.check_array(valid, "valid", kind="int")
        v.check_same_shape(scores, "scores", valid, "valid")
    for name, x in (("scores", scores), ("positive_scores", positive_scores)):
        if v.is_concrete(x) and np.isnan(np.asarray(x, np.float32)).any():
            raise ValueError(f"{name} must not hold NaN (mark missing candidates with valid)")
    return scores, positive_scores, valid


@jax.jit
def _simans_logits(scores, positive_scores, valid, a, b):
    s = scores.astype(jnp.float32)
    logits = -a * jnp.square(s - positive_scores.astype(jnp.float32)[:, None] - b)
    keep = jnp.isfinite(s) if valid is None else valid & jnp.isfinite(s)
    return jnp.where(keep, logits, -jnp.inf)


def simans_probs(
    scores: ArrayLike,
    positive_scores: ArrayLike,
    *,
    a: float = 1.0,
    b: float = 0.0,
    valid: ArrayLike | None = None,
) -> jax.Array:
    """SimANS sampling distribution ``p_i ∝ exp(−a · (s(q, d_i) − s(q, d⁺) − b)²)``.

    Ambiguous negatives — scored close to the positive (shifted by ``b``) — are the likeliest;
    the very hardest (possible false negatives) and the easy ones are rarely drawn.

    Args:
      scores: ``[Q, K]`` scores of each query's candidate negatives (e.g. its top-K from
        :func:`mine_hard_negatives` or :func:`jaxemb.retrieval.search`); ``-inf`` marks a
        missing candidate.
      positive_scores: ``[Q]`` the score of each query's positive.
      a: concentration ``a > 0``.
      b: shift of the mode relative to the positive score.
      valid: optional ``[Q, K]`` bool, False for candidates that must never be drawn.

    Returns:
      ``[Q, K]`` float32 probabilities (rows sum to 1; 0 for invalid candidates; a row without
      any valid candidate is all 0).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.negatives import simans_probs
      >>> p = simans_probs(jnp.array([[0.9, 0.7, 0.1]]), jnp.array([0.8]), a=100.0)
      >>> [round(x, 3) for x in p[0].tolist()]  # 0.9 and 0.7 are equally ambiguous
      [0.5, 0.5, 0.0]

    References:
      Zhou et al., "SimANS: Simple Ambiguous Negatives Sampling for Dense Text Retrieval",
      EMNLP 2022; reference code microsoft/SimXNS (README: weights ``exp(−τ(s − s⁺)²)``, i.e.
      ``b = 0``, over the top-100 retrieved candidates).
    """
    scores, positive_scores, valid = _check_scores(scores, positive_scores, valid)
    v.check_positive(a, "a")
    v.check_finite_scalar(b, "b")
    logits = _simans_logits(
        jnp.asarray(scores),
        jnp.asarray(positive_scores),
        None if valid is None else jnp.asarray(valid, bool),
        a,
        b,
    )
    any_valid = jnp.any(jnp.isfinite(logits), axis=1, keepdims=True)
    return jnp.where(any_valid, jax.nn.softmax(jnp.where(any_valid, logits, 0.0), axis=1), 0.0)


@functools.partial(jax.jit, static_argnames=("num_samples", "replace"))
def _simans_draw(key, logits, *, num_samples, replace):
    if replace:
        picks = jax.random.categorical(key, logits, axis=1, shape=(num_samples, logits.shape[0]))
        picks = picks.T
        ok = jnp.take_along_axis(jnp.isfinite(logits), picks, axis=1)
        return jnp.where(ok, picks, -1).astype(jnp.int32)
    # Gumbel-top-k: exactly sequential sampling without replacement proportional to p.
    g = logits + jax.random.gumbel(key, logits.shape, logits.dtype)
    vals, picks = jax.lax.top_k(g, num_samples)
    return jnp.where(jnp.isfinite(vals), picks, -1).astype(jnp.int32)


def simans_sample(
    key: jax.Array,
    scores: ArrayLike,
    positive_scores: ArrayLike,
    num_samples: int,
    *,
    a: float = 1.0,
    b: float = 0.0,
    valid: ArrayLike | None = None,
    replace: bool = False,
) -> jax.Array:
    """Draws ``num_samples`` negatives per query from :func:`simans_probs`.

    Args:
      key: a PRNG key; the draw is a pure function of it.
      scores: ``[Q, K]`` candidate scores (``-inf``: missing).
      positive_scores: ``[Q]`` positive scores.
      num_samples: negatives per query, ``1 <= num_samples <= K``.
      a: concentration ``a > 0``.
      b: shift of the mode.
      valid: optional ``[Q, K]`` bool mask of drawable candidates.
      replace: ``False`` draws distinct candidates (sequentially, each proportional to ``p``
        among those left — the loop of the SimANS training data loader), ``True`` draws
        independently (``random.choices``, as the SimANS README shows).

    Returns:
      ``[Q, num_samples]`` int32 positions along ``K``; ``-1`` where a row has fewer valid
      candidates than ``num_samples`` (without replacement) or none at all.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxemb.negatives import simans_sample
      >>> s = jnp.array([[0.95, 0.80, 0.78, 0.10, -jnp.inf]])
      >>> idx = simans_sample(jax.random.key(0), s, jnp.array([0.8]), 3, a=5.0)
      >>> idx[0].tolist().count(-1), 4 in idx[0].tolist()  # three found, never the missing one
      (0, False)

    References:
      Zhou et al., "SimANS" (EMNLP 2022); Gumbel-top-k: Kool, van Hoof and Welling, "Stochastic
      Beams and Where to Find Them" (2019).
    """
    scores, positive_scores, valid = _check_scores(scores, positive_scores, valid)
    v.check_int(num_samples, "num_samples", minimum=1, maximum=int(scores.shape[1]))
    v.check_positive(a, "a")
    v.check_finite_scalar(b, "b")
    if not isinstance(replace, bool):
        raise ValueError(f"replace must be True or False; got {replace!r}")
    if not isinstance(key, jax.Array) or not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        raise ValueError(f"key must be a PRNG key (jax.random.key(seed)); got {key!r}")
    logits = _simans_logits(
        jnp.asarray(scores),
        jnp.asarray(positive_scores),
        None if valid is None else jnp.asarray(valid, bool),
        a,
        b,
    )
    return _simans_draw(key, logits, num_samples=int(num_samples), replace=replace)


def unpg_filter(
    similarities: ArrayLike,
    negative_mask: ArrayLike | None = None,
    *,
    k: float = 1.5,
    axis: int | None = None,
) -> jax.Array:
    """UNPG's interquartile filter: keeps negatives inside Tukey's fences of their similarities.

    With ``Q1``, ``Q3`` the quartiles (linear interpolation, ``numpy.quantile``'s default) of
    the negative similarities and ``IQR = Q3 − Q1``, a negative is kept when its similarity lies
    in ``[Q1 − k·IQR, Q3 + k·IQR]``: outliers above (likely false negatives or label noise) and
    below (uninformative) are dropped. The quartiles are those of every negative in the batch
    (``axis=None``, as UNPG pools the negative pairs of a mini-batch) or of each row
    (``axis=-1``). The result is a mask to give an InfoNCE-family loss, e.g.
    ``info_nce(..., negative_mask=unpg_filter(sims, ~eye))``.

    Args:
      similarities: ``[..., N]`` float similarities (e.g. ``q @ dᵀ`` of a batch).
      negative_mask: optional bool of the same shape, True for the entries that are negatives
        (default: every entry); entries outside it are returned True (kept, untouched).
      k: the fence multiplier, ``k >= 0`` (Tukey's 1.5).
      axis: ``None`` (quartiles over all negatives) or ``-1`` (per row).

    Returns:
      Bool array of the input's shape: True to keep.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.negatives import unpg_filter
      >>> s = jnp.array([0.10, 0.20, 0.20, 0.25, 0.30, 0.95])  # 0.95: a suspicious negative
      >>> unpg_filter(s).tolist()
      [True, True, True, True, True, False]

    References:
      Jung et al., "UNPG: Unified Negative Pair Generation toward Well-discriminative Feature
      Space for Face Recognition", BMVC 2022 (interquartile-range filtering of negative
      pairs); Tukey's fences.
    """
    similarities = v.check_array(similarities, "similarities", kind="float")
    if similarities.ndim < 1:
        raise ValueError(
            f"similarities must have at least one axis; got {v.shape_str(similarities)}"
        )
    if negative_mask is not None:
        negative_mask = v.check_array(negative_mask, "negative_mask", kind="int")
        v.check_same_shape(similarities, "similarities", negative_mask, "negative_mask")
    v.check_scalar(k, "k", low=0.0)
    if axis not in (None, -1, similarities.ndim - 1):
        raise ValueError(f"axis must be None or -1; got {axis!r}")
    neg = (
        jnp.ones(similarities.shape, bool)
        if negative_mask is None
        else jnp.asarray(negative_mask, bool)
    )
    return _unpg(jnp.asarray(similarities), neg, k, per_row=axis is not None)


@functools.partial(jax.jit, static_argnames=("per_row",))
def _unpg(s, neg, k, *, per_row):
    s32 = s.astype(jnp.float32)
    masked = jnp.where(neg, s32, jnp.nan)
    if per_row:
        q1, q3 = jnp.nanquantile(masked, jnp.array([0.25, 0.75]), axis=-1, keepdims=True)
    else:
        q1, q3 = jnp.nanquantile(masked, jnp.array([0.25, 0.75]))
    iqr = q3 - q1
    inside = (s32 >= q1 - k * iqr) & (s32 <= q3 + k * iqr)
    return jnp.where(neg, inside, True)


def false_negative_mask(
    scores: ArrayLike,
    positive_scores: ArrayLike,
    *,
    fraction: float = 0.95,
) -> jax.Array:
    """NV-Retriever's TopK-PercPos rule: candidates scored above a fraction of the positive.

    A candidate is a likely false negative when ``s(q, d) > s⁺ − |s⁺|·(1 − fraction)`` — for a
    positive score ``s⁺ > 0`` that is ``s > fraction · s⁺`` (95% by default). The sign-safe form
    is the one sentence-transformers uses for ``relative_margin = 1 − fraction``.

    Args:
      scores: ``[Q, K]`` candidate scores.
      positive_scores: ``[Q]`` positive scores.
      fraction: in ``(0, 1]``.

    Returns:
      ``[Q, K]`` bool, True for the candidates to drop (``~mask`` keeps the safe negatives).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.negatives import false_negative_mask
      >>> false_negative_mask(jnp.array([[0.9, 0.7, 0.5]]), jnp.array([0.8])).tolist()
      [[True, False, False]]

    References:
      Moreira et al., "NV-Retriever: Improving text embedding models with effective
      hard-negative mining" (2024), TopK-PercPos with 95%; sentence-transformers
      ``mine_hard_negatives(relative_margin=0.05)``.
    """
    scores, positive_scores, _ = _check_scores(scores, positive_scores, None)
    v.check_scalar(fraction, "fraction", low=0.0)
    if v.is_concrete(fraction) and not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}")
    return _false_negatives(jnp.asarray(scores), jnp.asarray(positive_scores), fraction)


@jax.jit
def _false_negatives(scores, positive_scores, fraction):
    p = positive_scores.astype(jnp.float32)[:, None]
    return scores.astype(jnp.float32) > p - jnp.abs(p) * (1.0 - fraction)
