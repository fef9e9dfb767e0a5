"""BatchTopK sparse autoencoder (Bussmann et al. 2024)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.sae._auxk import auxk_loss
from jaxemb.sae._base import SAEOutput, check_batch, total_variance
from jaxemb.sae._config import TrainedSAEConfig
from jaxemb.sae._module import DenseSAE, config_from_arguments, recon_metrics
from jaxemb.sae._scaling import scale_inputs, unscale_outputs


class RunningThreshold(nnx.Variable):
    """BatchTopK's inference threshold ``θ`` (non-trainable; negative until first estimated)."""


class TrainingCalls(nnx.Variable):
    """Number of :meth:`BatchTopKSAE.training_loss` calls so far (int32 scalar, non-trainable)."""


def batch_topk(acts: jax.Array, k: Any, *, k_max: int | None = None) -> jax.Array:
    """Keeps the ``N·k`` largest entries of a whole ``[N, d_sae]`` batch, zeroing the rest.

    Ties go to the lower flat index (row-major: earlier row, then lower latent), as
    ``jax.lax.top_k`` on the flattened batch. ``k`` may be traced when the static ``k_max``
    (``>= k``) is given: the top ``N·k_max`` are selected and those ranked ``>= N·k`` dropped.

    Args:
      acts: ``[N, d_sae]`` non-negative activations (e.g. ``relu(pre)``).
      k: mean active latents per row.
      k_max: static selection width (default ``k``, which must then be a Python int).

    Returns:
      ``[N, d_sae]`` with exactly ``min(N·k, N·d_sae)`` entries kept (some may be 0).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import sae
      >>> acts = jnp.array([[5.0, 1.0, 4.0], [2.0, 0.0, 3.0]])
      >>> sae.batch_topk(acts, 1).tolist()             # the 2 largest of the whole batch
      [[5.0, 0.0, 4.0], [0.0, 0.0, 0.0]]

    References:
      Bussmann et al., "BatchTopK Sparse Autoencoders" (2024).
    """
    acts = v.check_array(acts, "acts", ndim=2, kind="float")
    k, k_max = _check_k(k, k_max, acts.shape[1])
    if k is None:
        raise ValueError("k must be given")
    return _batch_topk(jnp.asarray(acts), k, k_max=k_max)


def _batch_topk(acts: jax.Array, k: Any, *, k_max: int | None = None) -> jax.Array:
    n, d_sae = acts.shape
    width = int(k if k_max is None else k_max)
    m = min(n * width, n * d_sae)
    flat = acts.reshape(-1)
    values, idx = jax.lax.top_k(flat, m)
    if k_max is not None:
        values = jnp.where(jnp.arange(m) < n * k, values, jnp.zeros_like(values))
    return jnp.zeros_like(flat).at[idx].set(values).reshape(n, d_sae)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchTopKConfig(TrainedSAEConfig):
    """Hyperparameters of :class:`BatchTopKSAE`: its constructor's arguments, with its defaults."""

    variant: ClassVar[str] = "batchtopk"
    module: ClassVar[str] = "BatchTopKSAE"
    saelens_architecture: ClassVar[str] = "jumprelu"

    k: int
    aux_coef: float = 1 / 32
    threshold_decay: float = 0.999
    threshold_start_step: int = 1000
    normalize_decoder: bool = True


class BatchTopKSAE(DenseSAE):
    """BatchTopK SAE: the top ``N·k`` ReLU activations of the whole batch fire in training.

    Training (``encode(x, training=True)``, and :meth:`training_loss`): ``z`` keeps the
    ``N·k`` largest entries of ``relu(pre)`` over the whole ``[N, d_sae]`` batch, so rows may
    use more or fewer than ``k`` latents. Each training call also updates a running threshold
    ``θ`` (an exponential moving average, decay ``threshold_decay``, of the smallest positive
    kept activation of the batch). As in dictionary_learning, ``θ`` is only estimated after
    ``threshold_start_step`` training steps (the first estimated batch sets it), so it reflects
    a trained encoder rather than the initialisation. Inference (``encode(x)``, the
    default, and ``__call__``) is then a JumpReLU with one global threshold:
    ``z = relu(pre) · 1[relu(pre) > θ]``, independent of the rest of the batch. Until ``θ`` has
    been estimated (``θ < 0``, a fresh model) inference falls back to batch top-k. The loss is
    TopK's, ``FVU + aux_coef · AuxK``.

    Training note: when row norms are heavy-tailed, the batch-wide selection at initialisation
    (``W_enc = W_decᵀ``) gives the largest rows of a batch hundreds of latents each. Their
    reconstructions overshoot, and the first gradients are about 10× the later ones. Plain Adam
    keeps a memory of those gradients (``b2 = 0.999``), and many latents end up firing only on
    the largest rows. Clipping the global gradient norm (as dictionary_learning's trainer does,
    e.g. ``optax.chain(optax.clip_by_global_norm(...), optax.adam(lr))``) and
    ``normalize_decoder=False`` both shorten that phase; tests/test_sae_recovery.py measures it.

    Args:
      d_in: input width.
      d_sae: number of latents.
      k: mean active latents per row, ``1 <= k <= d_sae``.
      rngs: ``nnx.Rngs`` whose ``params`` stream draws the initial weights.
      dead_threshold: tokens without firing after which a latent counts as dead (AuxK).
      aux_coef: weight of AuxK (1/32).
      threshold_decay: EMA decay of ``θ`` (0.999 as in the reference ``threshold_beta``);
        0 keeps only the last batch's value.
      threshold_start_step: ``θ`` is updated by training calls with 0-based index
        ``> threshold_start_step`` (the reference's ``threshold_start_step=1000``).
      init_encoder_from_decoder: initialise ``W_enc = W_decᵀ``.
      normalize_decoder: keep decoder rows unit-norm.
      param_dtype: dtype of the parameters.

    Attributes:
      W_enc, b_enc, W_dec, b_dec: ``nnx.Param`` in the SAELens layout.
      threshold: :class:`RunningThreshold` scalar ``θ`` (SAELens' JumpReLU export stores it
        per latent).
      training_calls: :class:`TrainingCalls` counter of training steps seen.
      input_scale: :class:`InputScale` scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.BatchTopKSAE(2, 2, k=1, rngs=nnx.Rngs(0))
      >>> model.W_enc[...] = jnp.eye(2)
      >>> x = jnp.array([[3.0, 2.0], [1.0, 0.5]])
      >>> model.encode(x, training=True).tolist()     # the 2 largest of the whole batch
      [[3.0, 2.0], [0.0, 0.0]]
      >>> model.threshold[...] = 0.75
      >>> model.encode(x).tolist()                     # inference: relu(pre) > θ
      [[3.0, 2.0], [1.0, 0.0]]

    References:
      Bussmann, Leask and Nanda, "BatchTopK Sparse Autoencoders" (2024); their reference in
      ``dictionary_learning`` (``BatchTopKSAE``, ``threshold_beta=0.999``,
      ``threshold_start_step=1000``); SAELens
      ``BatchTopKTrainingSAE``.
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
        threshold_decay: float = 0.999,
        threshold_start_step: int = 1000,
        init_encoder_from_decoder: bool = True,
        normalize_decoder: bool = True,
        param_dtype: Any = jnp.float32,
    ):
        v.check_int(d_sae, "d_sae", minimum=1)
        v.check_int(k, "k")
        if not 1 <= k <= d_sae:
            raise ValueError(f"k must be in [1, d_sae={d_sae}]; got {k}")
        v.check_positive(aux_coef, "aux_coef", strict=False)
        v.check_positive(threshold_decay, "threshold_decay", strict=False)
        if threshold_decay >= 1:
            raise ValueError(f"threshold_decay must be in [0, 1); got {threshold_decay!r}")
        v.check_int(threshold_start_step, "threshold_start_step", minimum=-1)
        self._setup(config_from_arguments(BatchTopKConfig, locals()), rngs, input_scale=True)
        self.k = k
        self.aux_coef = float(aux_coef)
        self.threshold_decay = float(threshold_decay)
        self.threshold_start_step = int(threshold_start_step)
        self.threshold = RunningThreshold(-jnp.ones((), jnp.float32))
        self.training_calls = TrainingCalls(jnp.zeros((), jnp.int32))

    def _code_train(self, pre: jax.Array, k: Any = None, k_max: int | None = None):
        if k is None:
            return _batch_topk(jax.nn.relu(pre), self.k)
        return _batch_topk(jax.nn.relu(pre), k, k_max=k_max)

    def _code(self, xs: jax.Array, pre: jax.Array) -> jax.Array:
        r = jax.nn.relu(pre)
        theta = self.threshold[...]

        def by_threshold(r):
            return r * (r > theta.astype(r.dtype)).astype(r.dtype)

        def by_batch(r):
            return _batch_topk(r, self.k)

        if v.is_concrete(theta):
            return by_batch(r) if float(theta) < 0 else by_threshold(r)
        return jax.lax.cond(theta < 0, by_batch, by_threshold, r)

    def encode(self, x: ArrayLike, *, training: bool = False) -> jax.Array:
        """Dense code of ``x``: batch top-k (``training=True``) or the threshold (default).

        Args:
          x: ``[N, d_in]`` float inputs.
          training: select the batch's top ``N·k`` (training) instead of thresholding at ``θ``.

        Returns:
          ``[N, d_sae]`` non-negative activations.
        """
        check_batch(x, self.d_in)
        if not isinstance(training, bool):
            raise ValueError(f"training must be a bool; got {training!r}")
        xs = scale_inputs(self, jnp.asarray(x))
        pre = self._pre(xs)
        return self._code_train(pre) if training else self._code(xs, pre)

    def training_loss(
        self,
        x: ArrayLike,
        *,
        dead_mask: ArrayLike | None = None,
        k: Any = None,
        k_max: int | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array], SAEOutput]:
        """BatchTopK loss ``FVU + aux_coef · AuxK`` with the batch-level top ``N·k`` code.

        FVU and AuxK exactly as :class:`TopKSAE`'s loss (sparsify semantics), with ``x̂`` decoded
        from the
        batch-level selection. This pure function does not touch the running threshold (the
        module's :meth:`~BatchTopKSAE.training_loss` does).

        Args:
          x: ``[N, d_in]`` float inputs.
          dead_mask: optional ``[d_sae]`` bool mask of dead latents for AuxK.
          k: this step's ``k`` (a scheduled, possibly traced value); default ``self.k``.
          k_max: static upper bound of a traced ``k`` (default: ``k`` itself, or ``self.k``).

        Returns:
          ``(loss, metrics, output)``: float32 scalars ``loss``, ``fvu``, ``auxk``, ``l0`` (mean
          non-zero
          latents per row), ``mse`` (input units), ``min_kept`` (smallest positive kept
          activation; ``inf`` if none) and ``dead_fraction``.
          ``output`` is the forward :class:`SAEOutput`; :func:`jaxemb.sae.loss` returns
          ``(loss, metrics)`` only.

        Examples:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> from jaxemb import sae
          >>> model = sae.BatchTopKSAE(2, 2, k=1, rngs=nnx.Rngs(0))
          >>> model.W_enc[...] = jnp.eye(2)
          >>> model.W_dec[...] = jnp.eye(2)
          >>> loss, m = sae.loss(model, jnp.array([[3.0, 2.0], [1.0, 0.0]]))
          >>> float(m["l0"]), float(m["min_kept"]), round(float(m["fvu"]), 4)   # 1 / 4
          (1.0, 2.0, 0.25)

        References:
          Bussmann et al. (2024); Gao et al. (2024) for FVU and AuxK.
        """
        x = self._check_loss_inputs(x, dead_mask)
        k, k_max = _check_k(k, k_max, self.d_sae)
        loss, metrics, out, min_kept = _batchtopk_loss(self, x, dead_mask, k, k_max)
        old = self.threshold[...]
        step = self.training_calls[...]  # 0-based index of this training call
        decay = jnp.asarray(self.threshold_decay, old.dtype)
        ema = jnp.where(old < 0, min_kept, decay * old + (1 - decay) * min_kept)
        update = jnp.isfinite(min_kept) & (step > self.threshold_start_step)
        new = jnp.where(update, ema, old)
        self.threshold.set_value(jax.lax.stop_gradient(new.astype(old.dtype)))
        self.training_calls.set_value(step + 1)
        return loss, metrics, out


def _check_k(k: Any, k_max: Any, d_sae: int) -> tuple[Any, int | None]:
    if k_max is not None:
        v.check_int(k_max, "k_max", minimum=1, maximum=d_sae)
    if k is None:
        return None, None
    if np.shape(k) != ():
        raise ValueError(f"k must be an integer scalar; got shape {v.shape_str(k)}")
    if not v.is_concrete(k):
        if k_max is None:
            raise ValueError("k_max (a static int) must be given when k is traced")
        return k, k_max
    arr = np.asarray(k)
    if not np.issubdtype(arr.dtype, np.integer) or not 1 <= int(arr) <= d_sae:
        raise ValueError(f"k must be an integer in [1, d_sae={d_sae}]; got {k!r}")
    if k_max is not None and int(arr) > k_max:
        raise ValueError(f"k must be <= k_max={k_max}; got {int(arr)}")
    return int(arr), k_max


def _batchtopk_loss(model: BatchTopKSAE, x: jax.Array, dead_mask, k, k_max):
    xs = scale_inputs(model, x)
    pre = model._pre(xs)
    z = model._code_train(pre, k, k_max)
    x_hat_n = model._decode_n(z)
    f32 = jnp.promote_types(x_hat_n.dtype, jnp.float32)
    s = model.input_scale[...]
    m = recon_metrics(x, xs, x_hat_n, z, s, f32)
    tv = total_variance(xs)
    if dead_mask is None:
        auxk = jnp.zeros((), f32)
        dead_fraction = jnp.zeros((), f32)
    else:
        dead_mask = jnp.asarray(dead_mask)
        residual = jax.lax.stop_gradient(xs.astype(f32) - x_hat_n.astype(f32))
        auxk = auxk_loss(pre, residual, model.W_dec[...], dead_mask, tv)
        dead_fraction = jnp.mean(dead_mask.astype(f32))
    loss = m["fvu"] + model.aux_coef * auxk
    kept = jax.lax.stop_gradient(z).astype(f32)
    min_kept = jnp.min(jnp.where(kept > 0, kept, jnp.inf))
    metrics = {
        "loss": loss,
        "fvu": m["fvu"],
        "auxk": auxk,
        "l0": m["l0"],
        "mse": m["mse"],
        "min_kept": min_kept,
        "dead_fraction": dead_fraction,
    }
    return loss, metrics, SAEOutput(unscale_outputs(model, x_hat_n), z, pre), min_kept
