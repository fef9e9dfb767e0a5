"""JumpReLU sparse autoencoder (Rajamanoharan et al. 2024) with straight-through thresholds."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.sae._base import SAEOutput, latent_param
from jaxemb.sae._config import TrainedSAEConfig
from jaxemb.sae._module import (
    DenseSAE,
    check_coef,
    config_from_arguments,
    recon_metrics,
)
from jaxemb.sae._scaling import scale_inputs, unscale_outputs


def _rectangle(u: jax.Array) -> jax.Array:
    return ((u > -0.5) & (u < 0.5)).astype(u.dtype)


def heaviside_st(x: ArrayLike, threshold: ArrayLike, bandwidth: float) -> jax.Array:
    """``H(x − θ)`` with the paper's straight-through pseudo-derivative in ``θ``.

    Forward ``1[x > θ]``; backward ``∂/∂x = 0`` and
    ``∂/∂θ = −(1/ε) · rect((x − θ)/ε)`` (summed over the batch), ``ε`` the bandwidth.

    Args:
      x: ``[N, d_sae]`` pre-activations.
      threshold: ``[d_sae]`` thresholds ``θ``.
      bandwidth: kernel width ``ε``.

    Returns:
      ``[N, d_sae]`` 0/1 in ``x``'s dtype.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxemb import sae
      >>> x, th = jnp.array([[0.45, 0.55]]), jnp.array([0.5, 0.5])
      >>> sae.heaviside_st(x, th, 0.2).tolist()
      [[0.0, 1.0]]
      >>> jax.grad(lambda t: sae.heaviside_st(x, t, 0.2).sum())(th).tolist()   # −1/ε in the window
      [-5.0, -5.0]

    References:
      Rajamanoharan et al. (2024), App. J (``step`` with its custom backward).
    """
    _check_st(x, threshold, bandwidth)
    return _heaviside_st(jnp.asarray(x), jnp.asarray(threshold), float(bandwidth))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _heaviside_st(x: jax.Array, threshold: jax.Array, bandwidth: float) -> jax.Array:
    return (x > threshold[None, :]).astype(x.dtype)


def _heaviside_fwd(x, threshold, bandwidth):
    return _heaviside_st(x, threshold, bandwidth), (x, threshold)


def _heaviside_bwd(bandwidth, res, g):
    x, threshold = res
    k = _rectangle((x - threshold[None, :]) / bandwidth)
    d_theta = jnp.sum(-(1.0 / bandwidth) * k * g, axis=0).astype(threshold.dtype)
    return jnp.zeros_like(x), d_theta


_heaviside_st.defvjp(_heaviside_fwd, _heaviside_bwd)


def jumprelu_st(x: ArrayLike, threshold: ArrayLike, bandwidth: float) -> jax.Array:
    """``JumpReLU_θ(x) = x · H(x − θ)`` with the paper's straight-through pseudo-derivatives.

    Backward: ``∂/∂x = H(x − θ)`` and ``∂/∂θ = −(θ/ε) · rect((x − θ)/ε)`` (summed over the
    batch).

    Args:
      x: ``[N, d_sae]`` pre-activations.
      threshold: ``[d_sae]`` thresholds ``θ > 0``.
      bandwidth: kernel width ``ε``.

    Returns:
      ``[N, d_sae]``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxemb import sae
      >>> x, th = jnp.array([[0.45, 0.55]]), jnp.array([0.5, 0.5])
      >>> [round(float(a), 2) for a in sae.jumprelu_st(x, th, 0.2)[0]]
      [0.0, 0.55]
      >>> jax.grad(lambda t: sae.jumprelu_st(x, t, 0.2).sum())(th).tolist()   # −θ/ε in the window
      [-2.5, -2.5]

    References:
      Rajamanoharan et al. (2024), App. J (``jumprelu`` with its custom backward).
    """
    _check_st(x, threshold, bandwidth)
    return _jumprelu_st(jnp.asarray(x), jnp.asarray(threshold), float(bandwidth))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _jumprelu_st(x: jax.Array, threshold: jax.Array, bandwidth: float) -> jax.Array:
    return x * (x > threshold[None, :]).astype(x.dtype)


def _jumprelu_fwd(x, threshold, bandwidth):
    return _jumprelu_st(x, threshold, bandwidth), (x, threshold)


def _jumprelu_bwd(bandwidth, res, g):
    x, threshold = res
    t = threshold[None, :]
    d_x = (x > t).astype(x.dtype) * g
    k = _rectangle((x - t) / bandwidth)
    d_theta = jnp.sum(-(t / bandwidth) * k * g, axis=0).astype(threshold.dtype)
    return d_x, d_theta


_jumprelu_st.defvjp(_jumprelu_fwd, _jumprelu_bwd)


def _check_st(x: Any, threshold: Any, bandwidth: Any) -> None:
    x = v.check_array(x, "x", ndim=2, kind="float", allow_empty=True)
    threshold = v.check_array(threshold, "threshold", ndim=1, kind="float")
    v.check_axis_match(x, "x", 1, threshold, "threshold", 0)
    v.check_positive(bandwidth, "bandwidth")


@dataclasses.dataclass(frozen=True, kw_only=True)
class JumpReluConfig(TrainedSAEConfig):
    """Hyperparameters of :class:`JumpReluSAE`: its constructor's arguments, with its defaults."""

    variant: ClassVar[str] = "jumprelu"
    module: ClassVar[str] = "JumpReluSAE"
    saelens_architecture: ClassVar[str] = "jumprelu"

    l0_coef: float = 1e-3
    bandwidth: float = 0.001
    init_threshold: float = 0.001
    normalize_decoder: bool = True


class JumpReluSAE(DenseSAE):
    """JumpReLU SAE: ``z = relu(pre) · H(relu(pre) − θ)`` with learned ``θ = exp(log_threshold)``.

    Trained on ``mean_n ‖x − x̂‖² + λ mean_n L0(z)`` where the Heaviside step's gradient in
    ``θ`` is the straight-through rectangle-kernel estimate of the paper (bandwidth ``ε``);
    decoder rows are kept unit-norm by default.

    Args:
      d_in: input width.
      d_sae: number of latents.
      rngs: ``nnx.Rngs`` whose ``params`` stream draws the initial weights.
      l0_coef: λ, the sparsity coefficient.
      bandwidth: ``ε`` of the rectangle kernel (the paper's 0.001).
      init_threshold: initial ``θ`` (the paper's 0.001).
      dead_threshold: tokens without firing after which a latent counts as dead.
      init_encoder_from_decoder: initialise ``W_enc = W_decᵀ``.
      normalize_decoder: keep decoder rows unit-norm.
      param_dtype: dtype of the parameters.

    Attributes:
      W_enc, b_enc, W_dec, b_dec: ``nnx.Param`` in the SAELens layout.
      log_threshold: ``nnx.Param [d_sae]``, ``log θ`` (SAELens stores ``threshold = θ``).
      input_scale: :class:`InputScale` scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.JumpReluSAE(2, 2, rngs=nnx.Rngs(0), init_threshold=0.5)
      >>> model.W_enc[...] = jnp.eye(2)
      >>> model.encode(jnp.array([[0.4, 0.6]])).tolist()   # 0.4 < θ = 0.5 < 0.6
      [[0.0, 0.6000000238418579]]

    References:
      Rajamanoharan et al., "Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU
      Sparse Autoencoders" (2024), pseudo-code in App. J; SAELens ``JumpReLUTrainingSAE``.
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        rngs: nnx.Rngs,
        l0_coef: float = 1e-3,
        bandwidth: float = 0.001,
        init_threshold: float = 0.001,
        dead_threshold: int = 10_000_000,
        init_encoder_from_decoder: bool = True,
        normalize_decoder: bool = True,
        param_dtype: Any = jnp.float32,
    ):
        check_coef(l0_coef, "l0_coef")
        v.check_positive(bandwidth, "bandwidth")
        v.check_positive(init_threshold, "init_threshold")
        self._setup(config_from_arguments(JumpReluConfig, locals()), rngs, input_scale=True)
        self.l0_coef = float(l0_coef)
        self.bandwidth = float(bandwidth)
        self.log_threshold = latent_param(
            jnp.full((d_sae,), np.log(init_threshold), self.W_dec[...].dtype), ("latent",)
        )

    @property
    def threshold(self) -> jax.Array:
        """``θ = exp(log_threshold)``, ``[d_sae]``."""
        return jnp.exp(self.log_threshold[...])

    def _code(self, xs: jax.Array, pre: jax.Array) -> jax.Array:
        theta = jnp.exp(self.log_threshold[...]).astype(pre.dtype)
        return _jumprelu_st(jax.nn.relu(pre), theta, self.bandwidth)

    def training_loss(
        self, x: ArrayLike, *, dead_mask: ArrayLike | None = None, l0_coef: Any = None
    ) -> tuple[jax.Array, dict[str, jax.Array], SAEOutput]:
        """JumpReLU-SAE loss ``mean_n ‖x − x̂‖² + λ mean_n Σ_j H(relu(pre_nj) − θ_j)``.

        Gradients: ``x̂`` depends on ``θ`` through :func:`jumprelu_st` and the L0 term through
        :func:`heaviside_st` (pseudo-derivatives ``−(θ/ε)·rect`` and ``−(1/ε)·rect``); ``θ`` is
        parametrised as ``exp(log_threshold)``, so ``∂/∂log θ = θ · ∂/∂θ``.

        Args:
          x: ``[N, d_in]`` float inputs.
          dead_mask: optional ``[d_sae]`` bool (reported as ``dead_fraction``).
          l0_coef: λ for this step; default ``self.l0_coef``.

        Returns:
          ``(loss, metrics, output)``: float32 scalars ``loss``, ``recon``, ``l0``, ``fvu``, ``mse``
          (input units) and ``dead_fraction``.
          ``output`` is the forward :class:`SAEOutput`; :func:`jaxemb.sae.loss` returns
          ``(loss, metrics)`` only.

        Examples:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> from jaxemb import sae
          >>> model = sae.JumpReluSAE(2, 2, rngs=nnx.Rngs(0), l0_coef=0.1, init_threshold=0.5)
          >>> model.W_enc[...] = jnp.eye(2)
          >>> model.W_dec[...] = jnp.eye(2)
          >>> loss, m = sae.loss(model, jnp.array([[0.4, 0.6]]))
          >>> round(float(m["recon"]), 4), float(m["l0"]), round(float(loss), 4)
          (0.16, 1.0, 0.26)

        References:
          Rajamanoharan et al. (2024), App. J (``loss``, ``step``, ``jumprelu`` pseudo-code).
        """
        x = self._check_loss_inputs(x, dead_mask, l0_coef=l0_coef)
        return _jumprelu_loss(self, x, dead_mask, l0_coef)


def _jumprelu_loss(model: JumpReluSAE, x: jax.Array, dead_mask, l0_coef):
    lam = model.l0_coef if l0_coef is None else l0_coef
    xs = scale_inputs(model, x)
    pre = model._pre(xs)
    r = jax.nn.relu(pre)
    theta = jnp.exp(model.log_threshold[...]).astype(pre.dtype)
    z = _jumprelu_st(r, theta, model.bandwidth)
    x_hat_n = model._decode_n(z)
    f32 = jnp.promote_types(x_hat_n.dtype, jnp.float32)
    s = model.input_scale[...]
    m = recon_metrics(x, xs, x_hat_n, z, s, f32)
    l0_st = jnp.mean(jnp.sum(_heaviside_st(r, theta, model.bandwidth).astype(f32), axis=1))
    loss = m["recon"] + jnp.asarray(lam, f32) * l0_st
    dead_fraction = (
        jnp.zeros((), f32) if dead_mask is None else jnp.mean(jnp.asarray(dead_mask).astype(f32))
    )
    metrics = {"loss": loss, **m, "dead_fraction": dead_fraction}
    return loss, metrics, SAEOutput(unscale_outputs(model, x_hat_n), z, pre)
