"""Gated sparse autoencoder (Rajamanoharan et al. 2024)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from jaxemb.sae._base import SAEOutput, latent_param, sum_squared_error
from jaxemb.sae._config import TrainedSAEConfig
from jaxemb.sae._module import (
    DenseSAE,
    check_coef,
    config_from_arguments,
    recon_metrics,
)
from jaxemb.sae._scaling import scale_inputs, unscale_outputs


@dataclasses.dataclass(frozen=True, kw_only=True)
class GatedConfig(TrainedSAEConfig):
    """Hyperparameters of :class:`GatedSAE`: its constructor's arguments, with its defaults."""

    variant: ClassVar[str] = "gated"
    module: ClassVar[str] = "GatedSAE"
    saelens_architecture: ClassVar[str] = "gated"

    l1_coef: float = 1.0
    normalize_decoder: bool = False


class GatedSAE(DenseSAE):
    """Gated SAE: a gate path decides which latents fire, a magnitude path how strongly.

    ``π_gate = (x − b_dec) W_gate + b_gate``; ``π_mag = (x − b_dec) W_mag + b_mag`` with
    ``W_mag = W_gate ⊙ exp(r_mag)`` (per-latent rescaling of the shared directions);
    ``z = 1[π_gate > 0] · relu(π_mag)``; ``x̂ = z W_dec + b_dec``. In the shared layout
    ``W_enc`` is ``W_gate`` and ``b_enc`` is ``b_gate``; ``r_mag`` and ``b_mag`` are extra
    ``[d_sae]`` parameters (SAELens' names). ``pre_activations`` are ``π_gate``.

    Args:
      d_in: input width.
      d_sae: number of latents.
      rngs: ``nnx.Rngs`` whose ``params`` stream draws the initial weights.
      l1_coef: λ of the gate-path sparsity penalty.
      dead_threshold: tokens without firing after which a latent counts as dead.
      init_encoder_from_decoder: initialise ``W_gate = W_decᵀ``.
      normalize_decoder: keep decoder rows unit-norm (default off: the penalty is weighted by
        the decoder norms instead, as in SAELens).
      param_dtype: dtype of the parameters.

    Attributes:
      W_enc (= W_gate), b_enc (= b_gate), W_dec, b_dec, r_mag, b_mag: ``nnx.Param``.
      input_scale: :class:`InputScale` scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.GatedSAE(2, 2, rngs=nnx.Rngs(0))
      >>> model.W_enc[...] = jnp.eye(2)
      >>> model.b_mag[...] = jnp.array([1.0, 1.0])     # magnitude path shifted up
      >>> model.encode(jnp.array([[2.0, -0.5]])).tolist()   # gate closes latent 1
      [[3.0, 0.0]]

    References:
      Rajamanoharan et al., "Improving Dictionary Learning with Gated Sparse Autoencoders"
      (2024); SAELens ``GatedSAE`` / ``GatedTrainingSAE``.
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        rngs: nnx.Rngs,
        l1_coef: float = 1.0,
        dead_threshold: int = 10_000_000,
        init_encoder_from_decoder: bool = True,
        normalize_decoder: bool = False,
        param_dtype: Any = jnp.float32,
    ):
        check_coef(l1_coef, "l1_coef")
        self._setup(config_from_arguments(GatedConfig, locals()), rngs, input_scale=True)
        self.l1_coef = float(l1_coef)
        dtype = self.W_dec[...].dtype
        self.r_mag = latent_param(jnp.zeros((d_sae,), dtype), ("latent",))
        self.b_mag = latent_param(jnp.zeros((d_sae,), dtype), ("latent",))

    def _mag(self, xs: jax.Array) -> jax.Array:
        W_mag = self.W_enc[...] * jnp.exp(self.r_mag[...])[None, :]
        return (xs - self.b_dec[...][None, :]) @ W_mag + self.b_mag[...][None, :]

    def _code(self, xs: jax.Array, pre: jax.Array) -> jax.Array:
        gate = (pre > 0).astype(pre.dtype)
        return gate * jax.nn.relu(self._mag(xs))

    def training_loss(
        self, x: ArrayLike, *, dead_mask: ArrayLike | None = None, l1_coef: Any = None
    ) -> tuple[jax.Array, dict[str, jax.Array], SAEOutput]:
        """Gated-SAE loss: reconstruction + λ·gate sparsity + auxiliary gate reconstruction.

        ``mean_n ‖x − x̂‖² + λ mean_n Σ_j relu(π_gate)_nj ‖W_dec[j]‖₂ +
        mean_n ‖x − (relu(π_gate) sg(W_dec) + sg(b_dec))‖²`` where ``sg`` stops the gradient (the
        auxiliary term trains the gate path only), all in the normalised space. The indicator
        ``1[π_gate > 0]`` has zero gradient, so the gate path learns from the last two terms.

        Args:
          x: ``[N, d_in]`` float inputs.
          dead_mask: optional ``[d_sae]`` bool (reported as ``dead_fraction``).
          l1_coef: λ for this step; default ``self.l1_coef``.

        Returns:
          ``(loss, metrics, output)``: float32 scalars ``loss``, ``recon``, ``l1`` (weighted gate
          L1 before
          λ), ``aux`` (auxiliary reconstruction), ``fvu``, ``mse`` (input units), ``l0`` and
          ``dead_fraction``.
          ``output`` is the forward :class:`SAEOutput`; :func:`jaxemb.sae.loss` returns
          ``(loss, metrics)`` only.

        Examples:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> from jaxemb import sae
          >>> model = sae.GatedSAE(2, 2, rngs=nnx.Rngs(0), l1_coef=0.5)
          >>> model.W_enc[...] = jnp.eye(2)
          >>> model.W_dec[...] = jnp.eye(2)
          >>> loss, m = sae.loss(model, jnp.array([[2.0, -1.0]]))
          >>> float(m["recon"]), float(m["l1"]), float(m["aux"]), float(loss)
          (1.0, 2.0, 1.0, 3.0)

        References:
          Rajamanoharan et al. (2024), Eq. (8) and App. (pseudo-code); SAELens
          ``GatedTrainingSAE`` (``l1_loss`` on ``relu(π_gate) · ‖W_dec‖``,
          ``auxiliary_reconstruction_loss`` through detached ``W_dec`` and ``b_dec``).
        """
        x = self._check_loss_inputs(x, dead_mask, l1_coef=l1_coef)
        return _gated_loss(self, x, dead_mask, l1_coef)


def _gated_loss(model: GatedSAE, x: jax.Array, dead_mask, l1_coef):
    lam = model.l1_coef if l1_coef is None else l1_coef
    xs = scale_inputs(model, x)
    pre = model._pre(xs)
    z = model._code(xs, pre)
    x_hat_n = model._decode_n(z)
    f32 = jnp.promote_types(x_hat_n.dtype, jnp.float32)
    s = model.input_scale[...]
    m = recon_metrics(x, xs, x_hat_n, z, s, f32)
    W_dec = model.W_dec[...]
    gate_act = jax.nn.relu(pre)
    norms = jnp.linalg.norm(W_dec.astype(f32), axis=1)
    l1 = jnp.mean(gate_act.astype(f32) @ norms)
    W_sg = jax.lax.stop_gradient(W_dec)
    b_sg = jax.lax.stop_gradient(model.b_dec[...])
    x_aux = gate_act @ W_sg + b_sg[None, :]
    aux = sum_squared_error(xs, x_aux) / x.shape[0]
    loss = m["recon"] + jnp.asarray(lam, f32) * l1 + aux
    dead_fraction = (
        jnp.zeros((), f32) if dead_mask is None else jnp.mean(jnp.asarray(dead_mask).astype(f32))
    )
    metrics = {"loss": loss, **m, "l1": l1, "aux": aux, "dead_fraction": dead_fraction}
    return loss, metrics, SAEOutput(unscale_outputs(model, x_hat_n), z, pre)
