"""TopK sparse autoencoder (Gao et al. 2024) with the AuxK loss, in eai-sparsify semantics."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.sae._auxk import auxk_loss
from jaxemb.sae._base import (
    SAEOutput,
    SparseCode,
    _sparse_decode,
    check_batch,
    check_code,
    sum_squared_error,
    total_variance,
)
from jaxemb.sae._config import TrainedSAEConfig
from jaxemb.sae._kernels import (
    _topk_encode,
    row_top_k,
)
from jaxemb.sae._module import SAEModule, config_from_arguments
from jaxemb.sae._scaling import input_scale, scale_inputs, unscale_outputs


@dataclasses.dataclass(frozen=True, kw_only=True)
class TopKConfig(TrainedSAEConfig):
    """Hyperparameters of :class:`TopKSAE`: its constructor's arguments, with its defaults."""

    variant: ClassVar[str] = "topk"
    module: ClassVar[str] = "TopKSAE"
    saelens_architecture: ClassVar[str] = "topk"
    sparsify: ClassVar[bool] = True

    k: int
    aux_coef: float = 1 / 32
    normalize_decoder: bool = True


class TopKSAE(SAEModule):
    """TopK sparse autoencoder: keep the ``k`` largest ReLU pre-activations of each row.

    ``pre = (x − b_dec) @ W_enc + b_enc``; ``values, indices = top_k(relu(pre), k)``;
    ``x̂ = Σ_j values_j W_dec[indices_j] + b_dec``. Train it with its ``training_loss``
    (``FVU + aux_coef · AuxK``) through :func:`make_train_step`, which also keeps the decoder
    rows unit-norm and tracks dead latents.

    Args:
      d_in: input width.
      d_sae: number of latents.
      k: active latents per row, ``1 <= k <= d_sae``.
      rngs: ``nnx.Rngs`` whose ``params`` stream draws the initial weights.
      dead_threshold: a latent is dead once it has not fired for more than this many tokens
        (eai-sparsify's ``dead_feature_threshold``, default 10,000,000).
      aux_coef: weight of the AuxK loss (eai-sparsify's ``auxk_alpha``, default 1/32).
      init_encoder_from_decoder: initialise ``W_enc`` as ``W_decᵀ`` (Gao et al.).
      normalize_decoder: keep decoder rows unit-norm during training (and remove the gradient
        component parallel to them), as eai-sparsify's ``normalize_decoder=True``.
      param_dtype: dtype of the parameters.

    Attributes:
      W_enc: ``nnx.Param [d_in, d_sae]``.
      b_enc: ``nnx.Param [d_sae]``.
      W_dec: ``nnx.Param [d_sae, d_in]``.
      b_dec: ``nnx.Param [d_in]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.TopKSAE(8, 32, k=2, rngs=nnx.Rngs(0))
      >>> out = model(jnp.ones((3, 8)))
      >>> out.reconstruction.shape, out.code.values.shape, out.pre_activations.shape
      ((3, 8), (3, 2), (3, 32))

    References:
      Gao et al., "Scaling and evaluating sparse autoencoders" (2024); eai-sparsify
      ``SparseCoder`` (``activation="topk"``), whose defaults are matched here.
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        k: int,
        rngs: nnx.Rngs,
        dead_threshold: int = 10_000_000,
        aux_coef: float = 1 / 32,
        init_encoder_from_decoder: bool = True,
        normalize_decoder: bool = True,
        param_dtype: Any = jnp.float32,
    ):
        v.check_int(d_sae, "d_sae", minimum=1)
        v.check_int(k, "k")
        if not 1 <= k <= d_sae:
            raise ValueError(f"k must be in [1, d_sae={d_sae}]; got {k}")
        v.check_positive(aux_coef, "aux_coef", strict=False)
        self._setup(config_from_arguments(TopKConfig, locals()), rngs)
        self.k = k
        self.aux_coef = float(aux_coef)

    def pre_activations(self, x: ArrayLike) -> jax.Array:
        """``(x − b_dec) @ W_enc + b_enc``, ``[N, d_sae]``, before the ReLU and the top-k.

        Args:
          x: ``[N, d_in]`` float inputs.

        Returns:
          ``[N, d_sae]`` pre-activations.

        Examples:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> from jaxemb import sae
          >>> model = sae.TopKSAE(2, 2, k=1, rngs=nnx.Rngs(0))
          >>> model.W_enc[...] = jnp.array([[1.0, -1.0], [0.0, 2.0]])
          >>> model.pre_activations(jnp.array([[1.0, 1.0]])).tolist()
          [[1.0, 1.0]]
        """
        check_batch(x, self.d_in)
        return self._pre(scale_inputs(self, jnp.asarray(x)))

    def _pre(self, x: jax.Array) -> jax.Array:
        return (x - self.b_dec[...][None, :]) @ self.W_enc[...] + self.b_enc[...][None, :]

    def encode(self, x: ArrayLike) -> SparseCode:
        """TopK code of ``x``: the ``k`` largest ``relu(pre)`` per row, in decreasing order.

        Ties go to the lower latent index (``jax.lax.top_k``); a row with fewer than ``k``
        positive pre-activations gets zeros for the rest.

        Args:
          x: ``[N, d_in]`` float inputs.

        Returns:
          :class:`SparseCode` with ``values [N, k]`` (``>= 0``) and ``indices [N, k]`` int32.

        Examples:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> from jaxemb import sae
          >>> model = sae.TopKSAE(2, 3, k=2, rngs=nnx.Rngs(0))
          >>> model.W_enc[...] = jnp.array([[1.0, -1.0, 3.0], [0.0, 0.0, 0.0]])
          >>> code = model.encode(jnp.array([[1.0, 5.0]]))
          >>> code.values.tolist(), code.indices.tolist()
          ([[3.0, 1.0]], [[2, 0]])
        """
        check_batch(x, self.d_in)
        return self._fused_encode(scale_inputs(self, jnp.asarray(x)))

    def _fused_encode(self, x: jax.Array) -> SparseCode:
        # top_k(relu(pre), k) computed block of rows by block of rows (the [N, d_sae] matrix is
        # never stored), with the sparse custom-VJP backward of jaxemb.sae.topk_encode.
        args = (self.W_enc[...], self.b_enc[...], self.b_dec[...])
        return SparseCode(*_topk_encode(x, *args, self.k))

    def _encode(self, pre: jax.Array) -> SparseCode:
        values, indices = row_top_k(pre, self.k, relu=True)
        return SparseCode(values, indices)

    def decode(self, code: SparseCode) -> jax.Array:
        """``x̂ = Σ_j values_j W_dec[indices_j] + b_dec`` by a sparse gather, ``[N, d_in]``.

        Equals ``densify(code, d_sae) @ W_dec + b_dec``.

        Args:
          code: :class:`SparseCode` with ``[N, k']`` values and indices in ``[0, d_sae)``.

        Returns:
          ``[N, d_in]`` reconstruction.

        Examples:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> from jaxemb import sae
          >>> model = sae.TopKSAE(2, 3, k=1, rngs=nnx.Rngs(0))
          >>> model.W_dec[...] = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
          >>> model.decode(sae.SparseCode(jnp.array([[5.0]]), jnp.array([[2]]))).tolist()
          [[3.0, 4.0]]
        """
        check_code(code)
        return unscale_outputs(self, self._decode(code))

    def _decode(self, code: SparseCode) -> jax.Array:
        return _sparse_decode(code.values, code.indices, self.W_dec[...]) + self.b_dec[...][None, :]

    def __call__(self, x: ArrayLike) -> SAEOutput:
        """Encodes and decodes ``x``.

        Args:
          x: ``[N, d_in]`` float inputs.

        Returns:
          :class:`SAEOutput` ``(reconstruction [N, d_in], code, pre_activations [N, d_sae])``.
        """
        check_batch(x, self.d_in)
        x = scale_inputs(self, jnp.asarray(x))  # s·x once sae.fit_input_norm added a scale
        pre = self._pre(x)  # not computed in a train step that does not use it (AuxK recomputes)
        code = self._fused_encode(x)
        return SAEOutput(unscale_outputs(self, self._decode(code)), code, pre)

    def training_loss(
        self, x: ArrayLike, *, dead_mask: ArrayLike | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array], SAEOutput]:
        """TopK SAE loss ``FVU + aux_coef · AuxK`` for the global batch (eai-sparsify semantics).

        * ``FVU = Σ‖x − x̂‖² / Σ‖x − mean_batch(x)‖²``.
        * AuxK (only when ``dead_mask`` has dead latents; 0 otherwise): ``e = x − x̂`` (gradient
          stopped), ``k_aux = d_in // 2``; the top ``min(k_aux, n_dead)`` of ``relu(pre)`` among the
          dead latents are decoded **without** ``b_dec`` to ``ê`` and
          ``AuxK = min(n_dead / k_aux, 1) · Σ‖ê − e‖² / Σ‖x − mean_batch(x)‖²``.

        Gradients flow by ordinary autodiff, through the encoder too for AuxK (as in Gao et al.'s
        reference; eai-sparsify's fused encoder drops the AuxK gradient into ``W_enc``/``b_enc``).

        Args:
          x: ``[N, d_in]`` float inputs.
          dead_mask: optional ``[d_sae]`` bool mask of dead latents for AuxK.

        Returns:
          ``(loss, metrics, output)``: a float32 scalar and a dict of float32 scalars ``loss``,
          ``fvu``,
          ``auxk``, ``l0`` (mean non-zero latents per row), ``mse`` (mean over elements) and
          ``dead_fraction`` (of ``dead_mask``; 0 without one).
          ``output`` is the forward :class:`SAEOutput`; :func:`jaxemb.sae.loss` returns
          ``(loss, metrics)`` only.

        Examples:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> from jaxemb import sae
          >>> model = sae.TopKSAE(4, 8, k=4, rngs=nnx.Rngs(0))
          >>> model.W_dec[...] = jnp.eye(8, 4)            # latents 0..3 are the axes
          >>> model.W_enc[...] = model.W_dec[...].T
          >>> x = jnp.array([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 4.0]])
          >>> loss, m = sae.loss(model, x)            # exact reconstruction
          >>> round(float(loss), 6), float(m["l0"])
          (0.0, 2.0)

        References:
          Gao et al., "Scaling and evaluating sparse autoencoders" (2024), Sec. 2.3 and App. B.1;
          eai-sparsify ``SparseCoder.forward`` (``fvu``, ``auxk_loss``; ``auxk_alpha = 1/32``).
        """
        x = self._check_loss_inputs(x, dead_mask)
        return _topk_loss(self, x, dead_mask)


def _topk_loss(
    model: TopKSAE, x: jax.Array, dead_mask: jax.Array | None
) -> tuple[jax.Array, dict[str, jax.Array], SAEOutput]:
    out = model(x)
    f32 = jnp.promote_types(out.reconstruction.dtype, jnp.float32)
    # Loss in the normalised space of sae.fit_input_norm (FVU is scale-free; AuxK's ê is not).
    s = input_scale(model).astype(f32)
    x, x_hat = scale_inputs(model, x), (out.reconstruction.astype(f32) * s)
    tv = total_variance(x)
    l2 = sum_squared_error(x, x_hat)
    fvu = l2 / tv
    if dead_mask is None:
        auxk = jnp.zeros((), f32)
        dead_fraction = jnp.zeros((), f32)
    else:
        dead_mask = jnp.asarray(dead_mask)
        residual = jax.lax.stop_gradient(x.astype(f32) - x_hat)
        encoder = (x, model.W_enc[...], model.b_enc[...], model.b_dec[...])
        auxk = auxk_loss(out.pre_activations, residual, model.W_dec[...], dead_mask, tv, encoder)
        dead_fraction = jnp.mean(dead_mask.astype(f32))
    loss = fvu + model.aux_coef * auxk
    metrics = {
        "loss": loss,
        "fvu": fvu,
        "auxk": auxk,
        "l0": jnp.mean(jnp.sum(out.code.values != 0, axis=1).astype(f32)),
        "mse": l2 / (s * s * x.size),
        "dead_fraction": dead_fraction,
    }
    return loss, metrics, out
