"""Debiased (DCL) and hard-negative (HCL) variants of SimCLR's NT-Xent loss."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.losses._common import l2_normalize, masked_logsumexp


def debiased_nt_xent(
    z1: ArrayLike,
    z2: ArrayLike,
    *,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
) -> jax.Array:
    """Debiased contrastive loss (DCL): NT-Xent with a corrected negative term.

    On SimCLR's layout ``z = concat(z1, z2)`` (``[2B, D]``, L2-normalised) each row ``i`` has one
    positive (its other view), ``pos = exp(s(z_i, z_i⁺)/τ)``, and ``N = 2B − 2`` negatives
    ``neg_j = exp(s(z_i, z_j)/τ)`` (every row except itself and its positive). The sum of the
    negatives is debiased for the class prior ``τ⁺`` of false negatives and clamped::

        Ng = max( (Σ_j neg_j − τ⁺·N·pos) / (1 − τ⁺),  N·e^{−1/τ} )
        L  = mean_i −log( pos / (pos + Ng) )

    over the ``2B`` rows. ``tau_plus=0`` is exactly :func:`jaxemb.losses.nt_xent`. Everything is
    evaluated in log space, so temperatures down to 1e-3 stay finite.

    Args:
      z1: first view, ``[batch, dim]`` float (``batch ≥ 2``); normalised inside.
      z2: second view, ``[batch, dim]`` float; row ``i`` is the positive of ``z1[i]``.
      temperature: softmax temperature ``τ > 0`` (DCL's default 0.5).
      tau_plus: class prior ``τ⁺ ∈ [0, 1)`` of a negative being a false negative (default 0.1).

    Returns:
      A float32 scalar, the mean over the ``2·batch`` rows.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import debiased_nt_xent
      >>> z = jnp.eye(4)
      >>> # pos = e**2, six negatives of 1: Ng = (6 − 0.1·6·e**2)/0.9, L = log(1 + Ng/e**2)
      >>> round(float(debiased_nt_xent(z, z, temperature=0.5, tau_plus=0.1)), 4)
      0.2115

    References:
      Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020; reference training script
      chingyaoc/DCL ``main.py`` (``temperature=0.5``, ``tau_plus=0.1``, ``N = 2·batch − 2``,
      clamp at ``N·e^{−1/τ}``, mean over the ``2·batch`` rows).
    """
    z1, z2 = _validate(z1, z2, temperature, tau_plus, 0.0)
    return _debiased(z1, z2, temperature, tau_plus, 0.0)


def hard_negative_nt_xent(
    z1: ArrayLike,
    z2: ArrayLike,
    *,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    beta: float = 1.0,
) -> jax.Array:
    """Hard-negative contrastive loss (HCL): DCL with importance-reweighted negatives.

    As :func:`debiased_nt_xent`, but the negative sum is replaced by an importance-weighted one
    that up-weights negatives close to the anchor: with ``w_j = neg_j^β / mean_k(neg_k^β)``::

        S  = Σ_j w_j · neg_j
        Ng = max( (S − τ⁺·N·pos) / (1 − τ⁺),  N·e^{−1/τ} )
        L  = mean_i −log( pos / (pos + Ng) )

    ``beta=0`` is :func:`debiased_nt_xent`; ``tau_plus=0, beta=0`` is
    :func:`jaxemb.losses.nt_xent`. Computed in log space (``log S = lse((1+β)·l) − lse(β·l) +
    log N`` with ``l = s/τ``).

    Args:
      z1: first view, ``[batch, dim]`` float (``batch ≥ 2``); normalised inside.
      z2: second view, ``[batch, dim]`` float; row ``i`` is the positive of ``z1[i]``.
      temperature: softmax temperature ``τ > 0`` (HCL's default 0.5).
      tau_plus: class prior ``τ⁺ ∈ [0, 1)`` of false negatives (default 0.1).
      beta: concentration ``β ≥ 0`` of the hardness weighting (default 1.0).

    Returns:
      A float32 scalar, the mean over the ``2·batch`` rows.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import hard_negative_nt_xent
      >>> z = jnp.eye(4)
      >>> # all negatives equal, so the reweighting changes nothing: the DCL value
      >>> round(float(hard_negative_nt_xent(z, z, temperature=0.5, tau_plus=0.1, beta=1.0)), 4)
      0.2115

    References:
      Robinson et al., "Contrastive Learning with Hard Negative Samples", ICLR 2021; reference
      training script joshr17/HCL ``image/main.py`` (``estimator='hard'``, ``temperature=0.5``,
      ``tau_plus=0.1``, ``beta=1.0``; ``imp = neg^β``, ``Σ imp·neg / mean(imp)``).
    """
    z1, z2 = _validate(z1, z2, temperature, tau_plus, beta)
    return _debiased(z1, z2, temperature, tau_plus, beta)


def _validate(z1, z2, temperature, tau_plus, beta):
    z1 = v.check_array(z1, "z1", ndim=2)
    z2 = v.check_array(z2, "z2", ndim=2)
    v.check_same_shape(z1, "z1", z2, "z2")
    if z1.shape[0] < 2:
        raise ValueError(
            f"z1 must hold at least 2 rows (each row needs 2·batch − 2 > 0 negatives); "
            f"got shape {v.shape_str(z1)}"
        )
    v.check_positive(temperature, "temperature")
    v.check_scalar(tau_plus, "tau_plus", low=0.0, high=1.0)
    v.check_scalar(beta, "beta", low=0.0)
    return z1, z2


@jax.jit
def _debiased(z1, z2, temperature, tau_plus, beta):
    b = z1.shape[0]
    n_neg = 2 * b - 2
    log_n = math.log(n_neg)
    z = l2_normalize(jnp.concatenate([z1, z2], axis=0))
    logits = (z @ z.T) / temperature
    idx = jnp.arange(2 * b)
    partner = jnp.concatenate([jnp.arange(b, 2 * b), jnp.arange(b)])
    neg = (idx[:, None] != idx[None, :]) & (partner[:, None] != idx[None, :])
    l_pos = logits[idx, partner]

    # log S with S = Σ_j neg_j^(1+β) / mean_j neg_j^β.
    log_s = (
        masked_logsumexp((1.0 + beta) * logits, neg) - masked_logsumexp(beta * logits, neg) + log_n
    )

    # Debiasing: log((S − τ⁺·N·pos)/(1 − τ⁺)) where S > τ⁺·N·pos, else -inf (the clamp wins).
    # r = log(τ⁺·N·pos / S) < 0  ⇒  log(S − τ⁺·N·pos) = log S + log(−expm1(r)).
    has_prior = tau_plus > 0
    safe_tp = jnp.where(has_prior, tau_plus, 1.0)
    r = jnp.log(safe_tp) + log_n + l_pos - log_s
    ok = r < -1e-30  # keeps 1/r (the gradient of log(−expm1(r))) finite in float32
    debiased = log_s + jnp.log(-jnp.expm1(jnp.where(ok, r, -1.0))) - jnp.log1p(-tau_plus)
    debiased = jnp.where(ok, debiased, -jnp.inf)
    log_ng = jnp.where(has_prior, debiased, log_s)

    # Clamp at N·e^{−1/τ}; like torch.clamp, the gradient flows to the input on a tie.
    floor = log_n - 1.0 / temperature
    log_ng = jnp.where(log_ng >= floor, log_ng, floor)

    # −log(pos / (pos + Ng)) = softplus(log Ng − log pos)
    return jnp.mean(jax.nn.softplus(log_ng - l_pos))
