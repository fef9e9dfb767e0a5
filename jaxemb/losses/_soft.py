"""Contrastive losses with continuous (soft) targets: soft-target InfoNCE, CWCL, soft-label KL."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.losses._common import as_float, l2_normalize


def soft_target_info_nce(
    a: ArrayLike,
    b: ArrayLike,
    targets: ArrayLike,
    *,
    temperature: float,
) -> jax.Array:
    """InfoNCE against a row-stochastic soft target matrix (one direction, ``a → b``).

    With ``a`` and ``b`` L2-normalised::

        L = mean_i − Σ_j t_ij · log softmax_j( cos(a_i, b_j) / τ )

    ``targets = I`` is the usual in-batch InfoNCE (sentence-transformers'
    ``MultipleNegativesRankingLoss`` with ``scale = 1/τ``).

    Args:
      a: anchors, ``[batch, dim]`` float.
      b: candidates, ``[n_candidates, dim]`` float (usually ``n_candidates == batch``).
      targets: ``[batch, n_candidates]`` float, non-negative rows summing to 1 (checked when
        concrete). Gradients flow into ``targets`` only if you differentiate with respect to
        them. With :func:`jaxemb.losses.matryoshka` pass ``argnums=(0, 1)`` so ``targets`` is
        not truncated.
      temperature: softmax temperature ``τ > 0`` (required; no default).

    Returns:
      A float32 scalar, the mean over the ``batch`` anchors.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import soft_target_info_nce
      >>> x = jnp.eye(2)
      >>> # half the mass on each candidate: log(e + 1) − ½
      >>> t = jnp.full((2, 2), 0.5)
      >>> round(float(soft_target_info_nce(x, x, t, temperature=1.0)), 4)
      0.8133

    References:
      The general soft-target cross-entropy used by CWCL (Srinivasa et al., NeurIPS 2023) and
      by soft-label contrastive distillation; with one-hot targets it is van den Oord et al.'s
      InfoNCE (sentence-transformers ``MultipleNegativesRankingLoss``).
    """
    a = v.check_array(a, "a", ndim=2)
    b = v.check_array(b, "b", ndim=2)
    v.check_axis_match(a, "a", 1, b, "b", 1)
    targets = v.check_array(targets, "targets", ndim=2)
    if tuple(targets.shape) != (a.shape[0], b.shape[0]):
        raise ValueError(
            f"targets must be [batch, n_candidates] = [{a.shape[0]}, {b.shape[0]}] for a "
            f"{v.shape_str(a)} and b {v.shape_str(b)}; got {v.shape_str(targets)}"
        )
    _check_row_stochastic(targets, "targets")
    v.check_positive(temperature, "temperature")
    return _soft_target_info_nce(a, b, targets, temperature)


def cwcl(
    a: ArrayLike,
    b: ArrayLike,
    frozen_a: ArrayLike,
    *,
    temperature: float,
) -> jax.Array:
    """Continuously weighted contrastive loss (CWCL), summed over both directions.

    The soft targets come from a frozen, already-aligned embedding ``f = frozen_a`` of the
    first modality: ``w_ij = (1 + cos(f_i, f_j)) / 2`` and ``t_ij = w_ij / Σ_k w_ik``. With
    ``a`` and ``b`` L2-normalised and ``l_ij = cos(a_i, b_j) / τ``::

        L = mean_i −Σ_j t_ij log softmax_j(l_i·)  +  mean_i −Σ_j t_ij log softmax_j(lᵀ_i·)

    No gradient flows into ``frozen_a`` (it is wrapped in ``stop_gradient``).

    Args:
      a: first-modality embeddings being trained (or the frozen tower's trainable head),
        ``[batch, dim]`` float.
      b: second-modality embeddings, ``[batch, dim]`` float; row ``i`` pairs with ``a[i]``.
      frozen_a: the frozen pre-trained embeddings of the first modality, ``[batch, dim_f]``
        float (``dim_f`` may differ from ``dim``). With :func:`jaxemb.losses.matryoshka` pass
        ``argnums=(0, 1)`` so it is not truncated.
      temperature: softmax temperature ``τ > 0`` (required; no default).

    Returns:
      A float32 scalar: the sum of the two directions, each a mean over the batch.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import cwcl
      >>> x = jnp.eye(2)
      >>> # w = [[1, ½], [½, 1]] so t = [[⅔, ⅓], [⅓, ⅔]]; each direction log(e + 1) − ⅔
      >>> round(float(cwcl(x, x, x, temperature=1.0)), 4)
      1.2932

    References:
      Srinivasa et al., "CWCL: Cross-Modal Transfer with Continuously Weighted Contrastive
      Loss", NeurIPS 2023 (weights ``(1 + cos)/2`` from the frozen modality, row-normalised,
      both directions summed).
    """
    a = v.check_array(a, "a", ndim=2)
    b = v.check_array(b, "b", ndim=2)
    v.check_same_shape(a, "a", b, "b")
    frozen_a = v.check_array(frozen_a, "frozen_a", ndim=2)
    v.check_axis_match(a, "a", 0, frozen_a, "frozen_a", 0)
    v.check_positive(temperature, "temperature")
    return _cwcl(a, b, frozen_a, temperature)


def soft_label_kl(
    queries: ArrayLike,
    candidates: ArrayLike,
    judge_scores: ArrayLike,
    *,
    temperature: float = 0.01,
) -> jax.Array:
    """Symmetric KL between the embedding's and a judge's distributions over candidates.

    For each query ``q_i`` and its own candidate list ``C_i`` (``c_i1 … c_iK``, e.g. its
    positive and its mined hard negatives), with cosine similarities::

        P_i = softmax_k( cos(q_i, c_ik) / τ ),   Q_i = softmax_k( judge_ik / τ )
        L   = mean_i ½ ( KL(Q_i ‖ P_i) + KL(P_i ‖ Q_i) )

    Both distributions are computed with log-softmax, so no probability floor is needed.

    Args:
      queries: ``[batch, dim]`` float; normalised inside.
      candidates: ``[batch, n_candidates, dim]`` float; row ``i`` holds query ``i``'s list.
      judge_scores: ``[batch, n_candidates]`` float judge (e.g. MLLM) matching scores. With
        :func:`jaxemb.losses.matryoshka` pass ``argnums=(0, 1)`` so they are not truncated.
      temperature: ``τ > 0`` applied to both the similarities and the judge scores (UniME-V2:
        0.01).

    Returns:
      A float32 scalar, the mean over the ``batch`` queries.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import soft_label_kl
      >>> q = jnp.array([[1.0, 0.0]])
      >>> c = jnp.eye(2)[None]  # cosines [1, 0]
      >>> # P = softmax([1, 0]), Q = softmax([0, 1]): both KLs equal tanh(½)
      >>> round(float(soft_label_kl(q, c, jnp.array([[0.0, 1.0]]), temperature=1.0)), 4)
      0.4621

    References:
      Gu et al., "UniME-V2: MLLM-as-a-Judge for Universal Multimodal Embedding Learning", 2025;
      reference ``SoftLabelSoftKLContrastiveLoss`` (GaryGuTC/UniME-v2, ``temperature=0.01``,
      ``batchmean`` reduction). That code takes logs of ``softmax + 1e-8``; jaxemb uses exact
      log-softmax, which differs only where a probability falls below about 1e-6.
    """
    queries = v.check_array(queries, "queries", ndim=2)
    candidates = v.check_array(candidates, "candidates", ndim=3)
    v.check_axis_match(queries, "queries", 0, candidates, "candidates", 0)
    v.check_axis_match(queries, "queries", 1, candidates, "candidates", 2)
    judge_scores = v.check_array(judge_scores, "judge_scores", ndim=2)
    if tuple(judge_scores.shape) != tuple(candidates.shape[:2]):
        raise ValueError(
            f"judge_scores must be [batch, n_candidates] = "
            f"[{candidates.shape[0]}, {candidates.shape[1]}] like candidates "
            f"{v.shape_str(candidates)}; got {v.shape_str(judge_scores)}"
        )
    v.check_positive(temperature, "temperature")
    return _soft_label_kl(queries, candidates, judge_scores, temperature)


def _check_row_stochastic(t, name):
    """Non-negative finite rows summing to 1, checked only for concrete values."""
    if not v.is_concrete(t):
        return
    x = np.asarray(t, np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite; got non-finite entries in {v.shape_str(x)}")
    if np.any(x < 0):
        raise ValueError(f"{name} must be non-negative (row-stochastic); got min {x.min():.4g}")
    tol = 1e-3 if jnp.finfo(t.dtype).bits >= 32 else 2e-2
    sums = x.sum(axis=-1)
    if not np.allclose(sums, 1.0, rtol=0.0, atol=tol):
        worst = sums[np.argmax(np.abs(sums - 1.0))]
        raise ValueError(
            f"{name} rows must sum to 1 (row-stochastic); got a row summing to {worst:.6g}"
        )


def _soft_ce(logits, targets):
    """``mean_i −Σ_j t_ij log softmax_j(logits_ij)``."""
    return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1))


@jax.jit
def _soft_target_info_nce(a, b, targets, temperature):
    logits = (l2_normalize(a) @ l2_normalize(b).T) / temperature
    return _soft_ce(logits, as_float(targets))


@jax.jit
def _cwcl(a, b, frozen_a, temperature):
    f = l2_normalize(jax.lax.stop_gradient(frozen_a))
    w = (1.0 + f @ f.T) / 2.0
    t = w / jnp.sum(w, axis=-1, keepdims=True)
    logits = (l2_normalize(a) @ l2_normalize(b).T) / temperature
    # w is symmetric, so both directions share the row-normalised targets t.
    return _soft_ce(logits, t) + _soft_ce(logits.T, t)


@jax.jit
def _soft_label_kl(queries, candidates, judge_scores, temperature):
    q = l2_normalize(queries)
    c = l2_normalize(candidates)
    sims = jnp.einsum("bd,bkd->bk", q, c)
    log_p = jax.nn.log_softmax(sims / temperature, axis=-1)
    log_q = jax.nn.log_softmax(as_float(judge_scores) / temperature, axis=-1)
    p, q_prob = jnp.exp(log_p), jnp.exp(log_q)
    kl_qp = jnp.sum(q_prob * (log_q - log_p), axis=-1)
    kl_pq = jnp.sum(p * (log_p - log_q), axis=-1)
    return jnp.mean(0.5 * (kl_qp + kl_pq))
