"""ReLU sparse autoencoder with an L1 penalty (decoder-norm-weighted or plain)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.sae._base import (
    SAEOutput,
)
from jaxemb.sae._config import TrainedSAEConfig
from jaxemb.sae._module import (
    DenseSAE,
    check_coef,
    config_from_arguments,
    recon_metrics,
)
from jaxemb.sae._scaling import scale_inputs, unscale_outputs


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReluConfig(TrainedSAEConfig):
    """Hyperparameters of :class:`ReluSAE`: its constructor's arguments, with its defaults."""

    variant: ClassVar[str] = "relu"
    module: ClassVar[str] = "ReluSAE"
    saelens_architecture: ClassVar[str] = "standard"

    l1_coef: float = 5.0
    mode: str = "decoder_norm"
    normalize_decoder: bool | None = None


class ReluSAE(DenseSAE):
    """ReLU SAE trained with an L1 penalty: ``z = relu((x − b_dec) W_enc + b_enc)``.

    Loss (``mode="decoder_norm"``, the default): ``mean_n ‖x − x̂‖² + λ mean_n Σ_j z_j ‖W_dec[j]‖₂``
    with an unconstrained decoder (Anthropic's April 2023 update; SAELens' "standard" SAE).
    ``mode="plain"``: ``mean_n ‖x − x̂‖² + λ mean_n Σ_j z_j`` with decoder rows kept at unit norm
    (Cunningham et al. 2023 / Bricken et al. 2023). Warm λ up with
    ``make_train_step(..., schedules={"l1_coef": sae.l1_warmup(λ, warmup_steps=...)})``.

    Args:
      d_in: input width.
      d_sae: number of latents.
      rngs: ``nnx.Rngs`` whose ``params`` stream draws the initial weights.
      l1_coef: λ (Anthropic's 5 for inputs normalised to ``E‖x‖² = d_in``).
      mode: ``"decoder_norm"`` or ``"plain"``.
      dead_threshold: tokens without firing after which a latent counts as dead.
      init_encoder_from_decoder: initialise ``W_enc = W_decᵀ``.
      normalize_decoder: keep decoder rows unit-norm; default ``mode == "plain"``.
      param_dtype: dtype of the parameters.

    Attributes:
      W_enc, b_enc, W_dec, b_dec: ``nnx.Param`` in the SAELens layout.
      input_scale: :class:`InputScale` scalar (see :func:`fit_input_norm`).

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.ReluSAE(8, 32, rngs=nnx.Rngs(0))
      >>> out = model(jnp.ones((3, 8)))
      >>> out.reconstruction.shape, out.code.shape, bool((out.code >= 0).all())
      ((3, 8), (3, 32), True)

    References:
      Bricken et al., "Towards Monosemanticity" (2023); Anthropic, "Circuits Updates — April
      2023"; Cunningham et al., "Sparse Autoencoders Find Highly Interpretable Features in
      Language Models" (2023); SAELens ``StandardSAE`` / ``StandardTrainingSAE``.
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        rngs: nnx.Rngs,
        l1_coef: float = 5.0,
        mode: str = "decoder_norm",
        dead_threshold: int = 10_000_000,
        init_encoder_from_decoder: bool = True,
        normalize_decoder: bool | None = None,
        param_dtype: Any = jnp.float32,
    ):
        v.check_choice(mode, "mode", ("decoder_norm", "plain"))
        check_coef(l1_coef, "l1_coef")
        if normalize_decoder is None:
            normalize_decoder = mode == "plain"
        self._setup(config_from_arguments(ReluConfig, locals()), rngs, input_scale=True)
        self.l1_coef = float(l1_coef)
        self.mode = mode

    def _code(self, xs: jax.Array, pre: jax.Array) -> jax.Array:
        return jax.nn.relu(pre)

    def training_loss(
        self, x: ArrayLike, *, dead_mask: ArrayLike | None = None, l1_coef: Any = None
    ) -> tuple[jax.Array, dict[str, jax.Array], SAEOutput]:
        """ReLU-SAE loss: ``mean_n ‖x − x̂‖² + λ mean_n Σ_j z_j w_j`` in the normalised space.

        ``w_j = ‖W_dec[j]‖₂`` (``mode="decoder_norm"``) or 1 (``mode="plain"``); ``x`` and ``x̂``
        are in the SAE's normalised units (``s·x``, see :func:`fit_input_norm`).

        Args:
          x: ``[N, d_in]`` float inputs.
          dead_mask: optional ``[d_sae]`` bool (only reported as ``dead_fraction``).
          l1_coef: λ for this step (a scheduled value); default ``self.l1_coef``.

        Returns:
          ``(loss, metrics, output)``: float32 scalars ``loss``, ``recon`` (mean summed squared
          error),
          ``l1`` (the weighted L1 term before λ), ``fvu``, ``mse`` (mean over elements, input
          units), ``l0`` and ``dead_fraction``.
          ``output`` is the forward :class:`SAEOutput`; :func:`jaxemb.sae.loss` returns
          ``(loss, metrics)`` only.

        Examples:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> from jaxemb import sae
          >>> model = sae.ReluSAE(2, 2, rngs=nnx.Rngs(0), l1_coef=0.5)
          >>> model.W_enc[...] = jnp.eye(2)
          >>> model.W_dec[...] = 2.0 * jnp.eye(2)            # ‖W_dec[j]‖ = 2
          >>> loss, m = sae.loss(model, jnp.array([[1.0, 0.0]]))
          >>> float(m["recon"]), float(m["l1"]), float(loss)   # x̂ = [2, 0]; z = [1, 0]
          (1.0, 2.0, 2.0)

        References:
          Anthropic, "Circuits Updates — April 2023"; SAELens ``StandardTrainingSAE``
          (``mse_loss`` summed over features, ``l1_loss`` weighted by ``W_dec.norm(dim=1)``).
        """
        x = self._check_loss_inputs(x, dead_mask, l1_coef=l1_coef)
        return _relu_loss(self, x, dead_mask, l1_coef)


def _relu_loss(model: ReluSAE, x: jax.Array, dead_mask, l1_coef):
    lam = model.l1_coef if l1_coef is None else l1_coef
    xs = scale_inputs(model, x)
    x_hat_n, z, pre = model._forward_n(xs)
    f32 = jnp.promote_types(x_hat_n.dtype, jnp.float32)
    s = model.input_scale[...]
    m = recon_metrics(x, xs, x_hat_n, z, s, f32)
    z32 = z.astype(f32)
    if model.mode == "decoder_norm":
        w = jnp.linalg.norm(model.W_dec[...].astype(f32), axis=1)
        l1 = jnp.mean(z32 @ w)
    else:
        l1 = jnp.mean(jnp.sum(jnp.abs(z32), axis=1))
    loss = m["recon"] + jnp.asarray(lam, f32) * l1
    dead_fraction = (
        jnp.zeros((), f32) if dead_mask is None else jnp.mean(jnp.asarray(dead_mask).astype(f32))
    )
    metrics = {"loss": loss, **m, "l1": l1, "dead_fraction": dead_fraction}
    return loss, metrics, SAEOutput(unscale_outputs(model, x_hat_n), z, pre)
