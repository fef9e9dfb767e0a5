"""Matryoshka sparse autoencoder (Bussmann et al. 2025; Nabeshima 2024): nested prefix groups."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.sae._auxk import auxk_loss
from jaxemb.sae._base import (
    SAEOutput,
    SparseCode,
    check_batch,
    check_code,
    sum_squared_error,
    total_variance,
)
from jaxemb.sae._config import TrainedSAEConfig
from jaxemb.sae._kernels import _sparse_decode, _topk_encode
from jaxemb.sae._module import SAEModule, config_from_arguments
from jaxemb.sae._scaling import scale_inputs, unscale_outputs

_REDUCTIONS = ("mean", "sum")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MatryoshkaConfig(TrainedSAEConfig):
    """Hyperparameters of :class:`MatryoshkaSAE`: its constructor's arguments, with its defaults."""

    variant: ClassVar[str] = "matryoshka"
    module: ClassVar[str] = "MatryoshkaSAE"
    saelens_architecture: ClassVar[str] = "topk"
    sparsify: ClassVar[bool] = True

    k: int
    group_sizes: tuple[int, ...]
    batch_topk: bool = False
    reduction: str = "mean"
    aux_coef: float = 1 / 32
    normalize_decoder: bool = True


class MatryoshkaSAE(SAEModule):
    """TopK / BatchTopK SAE whose latents form nested prefixes that must each reconstruct ``x``.

    The ``d_sae`` latents are split into consecutive groups of sizes ``group_sizes`` (summing to
    ``d_sae``); prefix ``g`` is the first ``m_g = group_sizes[0] + … + group_sizes[g]`` latents.
    The encoder is the TopK one (``top_k(relu(pre), k)`` per row, eai-sparsify semantics) or,
    with ``batch_topk=True``, BatchTopK (keep the ``N·k`` largest ``relu(pre)`` of the whole
    batch, as Bussmann et al. train it). Every prefix reconstruction ``x̂_g = Σ_{j < m_g} z_j
    W_dec[j] + b_dec`` enters the loss (``training_loss``), so the first groups learn
    general, coarse features and later groups refine them. ``__call__`` reconstructs with all
    latents. Parameters use the shared SAELens names. After :func:`fit_input_norm` the model
    works in the normalised space (inputs times ``input_scale``) and reconstructs in input units.

    Args:
      d_in: input width.
      d_sae: number of latents.
      k: active latents per row (on average over the batch with ``batch_topk``),
        ``1 <= k <= d_sae``.
      group_sizes: positive group sizes summing to ``d_sae``, coarse first.
      rngs: ``nnx.Rngs`` whose ``params`` stream draws the initial weights.
      batch_topk: select the top ``N·k`` activations of the batch instead of ``k`` per row; the
        code is then a dense ``[N, d_sae]`` matrix (batch-dependent; encode batches at
        inference the same way).
      reduction: ``"mean"`` (Bussmann et al.: average of the ``len(group_sizes)`` prefix losses
        and the ``b_dec``-only loss) or ``"sum"`` (Nabeshima: sum of the prefix losses).
      dead_threshold: tokens without firing after which a latent is dead (for AuxK).
      aux_coef: weight of AuxK (eai-sparsify's ``auxk_alpha``, 1/32).
      init_encoder_from_decoder: initialise ``W_enc`` as ``W_decᵀ``.
      normalize_decoder: keep decoder rows unit-norm during training.
      param_dtype: dtype of the parameters.

    Attributes:
      W_enc: ``nnx.Param [d_in, d_sae]``; b_enc: ``[d_sae]``; W_dec: ``[d_sae, d_in]``;
      b_dec: ``[d_in]``.
      prefix_sizes: tuple of the cumulative group sizes ``m_g`` (the last is ``d_sae``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.MatryoshkaSAE(8, 32, k=2, group_sizes=(4, 12, 16), rngs=nnx.Rngs(0))
      >>> model.prefix_sizes
      (4, 16, 32)
      >>> out = model(jnp.ones((3, 8)))
      >>> out.reconstruction.shape, out.code.values.shape
      ((3, 8), (3, 2))

    References:
      Bussmann, Nabeshima, Karvonen, Nanda, "Learning Multi-Level Features with Matryoshka
      Sparse Autoencoders" (2025) and its reference code ``bartbussmann/matryoshka_sae``
      (``GlobalBatchTopKMatryoshkaSAE``, loss averaged over the prefixes and the ``b_dec``
      term); Nabeshima, "Matryoshka Sparse Autoencoders" (2024), ``noanabeshima/matryoshka-saes``
      (summed prefix losses).
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        k: int,
        group_sizes: Sequence[int],
        rngs: nnx.Rngs,
        batch_topk: bool = False,
        reduction: str = "mean",
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
        group_sizes = _check_group_sizes(group_sizes, d_sae)
        v.check_choice(reduction, "reduction", _REDUCTIONS)
        v.check_positive(aux_coef, "aux_coef", strict=False)
        self._setup(config_from_arguments(MatryoshkaConfig, locals()), rngs)
        self.k = k
        self.group_sizes = group_sizes
        self.prefix_sizes = tuple(int(m) for m in np.cumsum(group_sizes))
        self.batch_topk = bool(batch_topk)
        self.reduction = reduction
        self.aux_coef = float(aux_coef)

    def _pre(self, x: jax.Array) -> jax.Array:
        return (x - self.b_dec[...][None, :]) @ self.W_enc[...] + self.b_enc[...][None, :]

    def _code(self, x: jax.Array, pre: jax.Array) -> Any:
        if self.batch_topk:
            return _batch_topk_dense(pre, self.k)
        # Fused, row-blocked TopK with the sparse backward (as TopKSAE); pre is not needed.
        args = (self.W_enc[...], self.b_enc[...], self.b_dec[...])
        return SparseCode(*_topk_encode(x, *args, self.k))

    def encode(self, x: ArrayLike) -> Any:
        """Code of ``x``: TopK :class:`SparseCode` ``[N, k]`` or dense ``[N, d_sae]`` (BatchTopK).

        Args:
          x: ``[N, d_in]`` float inputs.

        Returns:
          :class:`SparseCode` (``values >= 0``, ``indices`` int32, ties to the lower index) or,
          with ``batch_topk``, ``[N, d_sae]`` with at most ``N·k`` non-zeros.

        Examples:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> from jaxemb import sae
          >>> model = sae.MatryoshkaSAE(2, 3, k=1, group_sizes=(1, 2), rngs=nnx.Rngs(0))
          >>> model.W_enc[...] = jnp.array([[1.0, -1.0, 3.0], [0.0, 0.0, 0.0]])
          >>> code = model.encode(jnp.array([[1.0, 5.0]]))
          >>> code.values.tolist(), code.indices.tolist()
          ([[3.0]], [[2]])
        """
        check_batch(x, self.d_in)
        x = scale_inputs(self, jnp.asarray(x))
        return self._code(x, self._pre(x))

    # -- decoder ---------------------------------------------------------------------------

    def decode(self, code: Any, *, prefix: int | None = None) -> jax.Array:
        """``x̂ = Σ_j z_j W_dec[j] + b_dec``, optionally with only the first ``prefix`` latents.

        Args:
          code: :class:`SparseCode` ``[N, k']`` or dense ``[N, d_sae]``.
          prefix: use only latents ``j < prefix`` (e.g. one of ``prefix_sizes``); ``None`` = all.

        Returns:
          ``[N, d_in]`` reconstruction.

        Examples:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> from jaxemb import sae
          >>> model = sae.MatryoshkaSAE(2, 3, k=2, group_sizes=(1, 2), rngs=nnx.Rngs(0))
          >>> model.W_dec[...] = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
          >>> code = sae.SparseCode(jnp.array([[5.0, 2.0]]), jnp.array([[2, 0]]))
          >>> model.decode(code).tolist(), model.decode(code, prefix=1).tolist()
          ([[5.0, 4.0]], [[2.0, 0.0]])
        """
        if isinstance(code, SparseCode):
            check_code(code)
        else:
            code = v.check_array(code, "code", ndim=2, kind="float")
            if code.shape[1] != self.d_sae:
                raise ValueError(
                    f"code must be a SparseCode or [batch, d_sae={self.d_sae}]; "
                    f"got {v.shape_str(code)}"
                )
        if prefix is not None:
            v.check_int(prefix, "prefix")
            if not 0 <= prefix <= self.d_sae:
                raise ValueError(f"prefix must be in [0, d_sae={self.d_sae}]; got {prefix}")
        return unscale_outputs(self, self._decode(code, self.d_sae if prefix is None else prefix))

    def _decode(self, code: Any, prefix: int) -> jax.Array:
        b_dec = self.b_dec[...][None, :]
        W_dec = self.W_dec[...]
        if isinstance(code, SparseCode):
            values = code.values
            if prefix < self.d_sae:
                values = jnp.where(code.indices < prefix, values, jnp.zeros_like(values))
            return _sparse_decode(values, code.indices, W_dec) + b_dec
        code = jnp.asarray(code)
        return code[:, :prefix] @ W_dec[:prefix] + b_dec

    def _prefix_reconstructions(self, code: Any) -> list[jax.Array]:
        """``x̂_g`` for every prefix ``m_g`` (the last one uses all latents)."""
        if isinstance(code, SparseCode):
            return [self._decode(code, m) for m in self.prefix_sizes]
        # Dense (BatchTopK) code: one matmul per group, accumulated prefix by prefix.
        W_dec = self.W_dec[...]
        recon = jnp.broadcast_to(self.b_dec[...][None, :], (code.shape[0], self.d_in))
        out, start = [], 0
        for m in self.prefix_sizes:
            recon = recon + code[:, start:m] @ W_dec[start:m]
            out.append(recon)
            start = m
        return out

    def __call__(self, x: ArrayLike) -> SAEOutput:
        """Encodes and decodes ``x`` with all latents.

        Args:
          x: ``[N, d_in]`` float inputs.

        Returns:
          :class:`SAEOutput` ``(reconstruction [N, d_in], code, pre_activations [N, d_sae])``.
        """
        check_batch(x, self.d_in)
        x = scale_inputs(self, jnp.asarray(x))
        pre = self._pre(x)
        code = self._code(x, pre)
        return SAEOutput(unscale_outputs(self, self._decode(code, self.d_sae)), code, pre)

    def training_loss(
        self, x: ArrayLike, *, dead_mask: ArrayLike | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array], SAEOutput]:
        """Matryoshka loss: the nested prefixes' reconstruction losses, plus ``aux_coef · AuxK``.

        With ``FVU_g = Σ‖x − x̂_g‖² / Σ‖x − mean_batch(x)‖²`` for each prefix ``g`` of ``G`` and
        ``FVU_b = Σ‖x − b_dec‖² / Σ‖x − mean_batch(x)‖²`` (the reconstruction by ``b_dec`` alone):

        * ``reduction="mean"`` (default, Bussmann et al.): ``(FVU_b + Σ_g FVU_g) / (G + 1)``;
        * ``reduction="sum"`` (Nabeshima): ``Σ_g FVU_g``.

        Bussmann et al. average per-element MSEs; dividing each term by the same batch variance
        instead (as eai-sparsify's FVU does) only rescales the loss. AuxK is the TopK one
        (:class:`TopKSAE`'s, sparsify semantics) on the full reconstruction's residual.

        Args:
          x: ``[N, d_in]`` float inputs.
          dead_mask: optional ``[d_sae]`` bool mask of dead latents for AuxK.

        Returns:
          ``(loss, metrics, output)``: float32 scalars ``loss``, ``fvu`` (all latents),
          ``fvu_prefix_<g>``
          for each prefix ``g``, ``auxk``, ``l0``, ``mse`` and ``dead_fraction``.
          ``output`` is the forward :class:`SAEOutput`; :func:`jaxemb.sae.loss` returns
          ``(loss, metrics)`` only.

        Examples:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> from jaxemb import sae
          >>> model = sae.MatryoshkaSAE(2, 2, k=2, group_sizes=(1, 1), rngs=nnx.Rngs(0))
          >>> model.W_dec[...] = jnp.eye(2)
          >>> model.W_enc[...] = jnp.eye(2)
          >>> x = jnp.array([[2.0, 1.0], [0.0, 1.0]])    # TV = 2 + 0 = 2
          >>> loss, m = sae.loss(model, x)
          >>> [round(float(m[n]), 3) for n in ("fvu_prefix_0", "fvu_prefix_1", "loss")]
          [1.0, 0.0, 1.333]

        References:
          Bussmann et al., "Learning Multi-Level Features with Matryoshka Sparse Autoencoders"
          (2025), Sec. 3; Nabeshima, "Matryoshka Sparse Autoencoders" (2024).
        """
        x = self._check_loss_inputs(x, dead_mask)
        return _matryoshka_loss(self, x, dead_mask)


def _matryoshka_loss(
    model: MatryoshkaSAE, x: jax.Array, dead_mask: jax.Array | None
) -> tuple[jax.Array, dict[str, jax.Array], SAEOutput]:
    x_raw = x
    x = scale_inputs(model, x)  # losses live in the normalised space of fit_input_norm
    pre = model._pre(x)
    code = model._code(x, pre)
    recons = model._prefix_reconstructions(code)
    out = SAEOutput(unscale_outputs(model, recons[-1]), code, pre)
    f32 = jnp.promote_types(out.reconstruction.dtype, jnp.float32)
    tv = total_variance(x)
    fvus = [sum_squared_error(x, r) / tv for r in recons]
    if model.reduction == "mean":
        b_only = jnp.broadcast_to(model.b_dec[...][None, :], x.shape)
        prefix_loss = (sum_squared_error(x, b_only) / tv + sum(fvus)) / (len(fvus) + 1)
    else:
        prefix_loss = sum(fvus)
    if dead_mask is None:
        auxk = jnp.zeros((), f32)
        dead_fraction = jnp.zeros((), f32)
    else:
        dead_mask = jnp.asarray(dead_mask)
        residual = jax.lax.stop_gradient(x.astype(f32) - recons[-1].astype(f32))
        encoder = (x, model.W_enc[...], model.b_enc[...], model.b_dec[...])
        auxk = auxk_loss(pre, residual, model.W_dec[...], dead_mask, tv, encoder)
        dead_fraction = jnp.mean(dead_mask.astype(f32))
    loss = prefix_loss + model.aux_coef * auxk
    active = code.values if isinstance(code, SparseCode) else code
    metrics = {
        "loss": loss,
        "fvu": fvus[-1],
        **{f"fvu_prefix_{g}": f for g, f in enumerate(fvus)},
        "auxk": auxk,
        "l0": jnp.mean(jnp.sum(active != 0, axis=1).astype(f32)),
        "mse": sum_squared_error(x_raw, out.reconstruction) / x.size,
        "dead_fraction": dead_fraction,
    }
    return loss, metrics, out


def _batch_topk_dense(pre: jax.Array, k: int) -> jax.Array:
    """Keeps the ``N·k`` largest ``relu(pre)`` of the batch (ties to the lower flat index)."""
    n, d_sae = pre.shape
    acts = jax.nn.relu(pre).reshape(-1)
    values, flat = jax.lax.top_k(acts, min(n * k, n * d_sae))
    return jnp.zeros_like(acts).at[flat].set(values).reshape(n, d_sae)


def _check_group_sizes(group_sizes: Any, d_sae: int) -> tuple[int, ...]:
    if isinstance(group_sizes, (str, bytes)) or not isinstance(group_sizes, Sequence):
        raise ValueError(
            f"group_sizes must be a sequence of positive ints summing to d_sae={d_sae}; "
            f"got {type(group_sizes).__name__}"
        )
    sizes = tuple(group_sizes)
    if not sizes:
        raise ValueError(f"group_sizes must not be empty (it must sum to d_sae={d_sae})")
    for i, s in enumerate(sizes):
        v.check_int(s, f"group_sizes[{i}]", minimum=1)
    if sum(sizes) != d_sae:
        raise ValueError(f"group_sizes must sum to d_sae={d_sae}; got {list(sizes)} = {sum(sizes)}")
    return tuple(int(s) for s in sizes)
