"""The shared SAE module body and the checks and metrics every variant's loss uses.

:class:`DenseSAE` is the body of the variants with dense ``[N, d_sae]`` codes (ReLU, JumpReLU,
Gated, BatchTopK): parameters, input scale, pre-activations, encode / decode / forward. A
variant supplies its activation (``_code``: ReLU, JumpReLU's threshold, the gate, the
batch-level top-k) and its loss (``training_loss``, built from :func:`recon_metrics` and the
variant's sparsity penalty or auxiliary loss); the sparse-code variants (TopK, Matryoshka,
matching pursuit) share :func:`check_dead_mask` and, for AuxK, ``jaxemb.sae._auxk``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.sae._base import (
    SAEOutput,
    check_batch,
    set_sae_params,
    sum_squared_error,
    total_variance,
)
from jaxemb.sae._config import SAEConfig
from jaxemb.sae._dead import check_threshold
from jaxemb.sae._scaling import InputScale, scale_inputs, unscale_outputs


def check_dense_code(code: Any, d_sae: int, name: str = "code") -> None:
    """Checks a dense ``[N, d_sae]`` float code."""
    code = v.check_array(code, name, ndim=2, kind="float")
    if code.shape[1] != d_sae:
        raise ValueError(f"{name} must be [batch, d_sae={d_sae}]; got {v.shape_str(code)}")


def check_dead_mask(dead_mask: Any, d_sae: int) -> None:
    """Checks an optional ``[d_sae]`` bool dead-latent mask."""
    if dead_mask is None:
        return
    dead_mask = v.check_array(dead_mask, "dead_mask", ndim=1, kind="any")
    if jnp.asarray(dead_mask).dtype != jnp.bool_:
        raise ValueError(f"dead_mask must be bool; got {jnp.asarray(dead_mask).dtype}")
    if dead_mask.shape[0] != d_sae:
        raise ValueError(f"dead_mask must be [d_sae={d_sae}]; got {v.shape_str(dead_mask)}")


def check_coef(value: Any, name: str) -> None:
    """Checks a sparsity coefficient (concrete: finite, >= 0; traced values pass)."""
    if value is not None:
        v.check_positive(value, name, strict=False)


class SAEModule(nnx.Module):
    """Base of every SAE variant: its config, widths, dead-latent threshold and parameters.

    A variant's constructor checks its own hyperparameters and calls :meth:`_setup` with its
    config (``model.config``), which validates what every variant shares (``d_in``, ``d_sae``,
    ``param_dtype``, ``dead_threshold``, ``rngs``) and creates ``W_enc``, ``b_enc``, ``W_dec``,
    ``b_dec`` with their logical axes (and the input scale of the dense variants). The variant
    then adds its hooks: the activation or selection (``_code`` / ``encode``), the sparsity
    penalty or auxiliary loss in ``training_loss``.
    """

    def _setup(self, config: SAEConfig, rngs: nnx.Rngs, *, input_scale: bool = False) -> None:
        v.check_int(config.d_in, "d_in", minimum=1)
        v.check_int(config.d_sae, "d_sae", minimum=1)
        if not isinstance(rngs, nnx.Rngs):
            raise ValueError(f"rngs must be an nnx.Rngs; got {type(rngs).__name__}")
        dtype = jnp.dtype(config.param_dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"param_dtype must be a float dtype; got {config.param_dtype!r}")
        threshold = getattr(config, "dead_threshold", None)
        if threshold is not None:
            check_threshold(threshold)
            self.dead_threshold = threshold
        self.d_in = config.d_in
        self.d_sae = config.d_sae
        self.normalize_decoder = bool(config.normalize_decoder)
        set_sae_params(
            self,
            rngs.params(),
            config.d_in,
            config.d_sae,
            init_encoder_from_decoder=getattr(config, "init_encoder_from_decoder", True),
            dtype=dtype,
        )
        if input_scale:
            self.input_scale = InputScale(jnp.ones((), jnp.float32))
        self.config = config

    def _check_loss_inputs(self, x: Any, dead_mask: Any, **coefficients: Any) -> jax.Array:
        """Validates ``training_loss``'s inputs (and scheduled coefficients); returns ``x``."""
        check_batch(x, self.d_in)
        check_dead_mask(dead_mask, self.d_sae)
        for name, value in coefficients.items():
            check_coef(value, name)
        return jnp.asarray(x)


def config_from_arguments(config_cls: type[SAEConfig], arguments: dict[str, Any]) -> SAEConfig:
    """The config of a constructor call: its arguments (``locals()``) that are config fields."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls.create({k: v for k, v in arguments.items() if k in names})


class DenseSAE(SAEModule):
    """Shared body of the SAEs with dense ``[N, d_sae]`` codes (ReLU, BatchTopK, JumpReLU, Gated).

    Holds ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec`` (``nnx.Param``) and ``input_scale``
    (:class:`InputScale`, 1 until :func:`fit_input_norm`). Inputs are multiplied by
    ``input_scale`` before encoding and reconstructions divided by it after decoding, so the
    public methods speak the caller's units and the losses the normalised ones.
    """

    # -- normalised-space internals --------------------------------------------------------
    def _pre(self, xs: jax.Array) -> jax.Array:
        return (xs - self.b_dec[...][None, :]) @ self.W_enc[...] + self.b_enc[...][None, :]

    def _decode_n(self, z: jax.Array) -> jax.Array:
        return z @ self.W_dec[...] + self.b_dec[...][None, :]

    def _code(self, xs: jax.Array, pre: jax.Array) -> jax.Array:
        """The variant's activation hook: the dense code ``[N, d_sae]`` of ``pre``."""
        raise TypeError(
            f"{type(self).__name__} must define _code(xs, pre), its activation (DenseSAE is the "
            "shared body of the dense variants, not an SAE by itself)"
        )

    def _forward_n(self, xs: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        pre = self._pre(xs)
        z = self._code(xs, pre)
        return self._decode_n(z), z, pre

    # -- public API ------------------------------------------------------------------------
    def pre_activations(self, x: ArrayLike) -> jax.Array:
        """``(s·x − b_dec) @ W_enc + b_enc``, ``[N, d_sae]`` (``s`` the input scale).

        Args:
          x: ``[N, d_in]`` float inputs.

        Returns:
          ``[N, d_sae]`` pre-activations.
        """
        check_batch(x, self.d_in)
        return self._pre(scale_inputs(self, jnp.asarray(x)))

    def encode(self, x: ArrayLike) -> jax.Array:
        """Dense code ``z`` of ``x``, ``[N, d_sae]``.

        Args:
          x: ``[N, d_in]`` float inputs.

        Returns:
          ``[N, d_sae]`` non-negative activations.
        """
        check_batch(x, self.d_in)
        xs = scale_inputs(self, jnp.asarray(x))
        return self._code(xs, self._pre(xs))

    def decode(self, code: ArrayLike) -> jax.Array:
        """``x̂ = (z @ W_dec + b_dec) / s``, ``[N, d_in]`` in the input's units.

        Args:
          code: ``[N, d_sae]`` dense code.

        Returns:
          ``[N, d_in]`` reconstruction.
        """
        check_dense_code(code, self.d_sae)
        return unscale_outputs(self, self._decode_n(jnp.asarray(code)))

    def __call__(self, x: ArrayLike) -> SAEOutput:
        """Encodes and decodes ``x``.

        Args:
          x: ``[N, d_in]`` float inputs.

        Returns:
          :class:`SAEOutput` ``(reconstruction [N, d_in], code [N, d_sae],
          pre_activations [N, d_sae])``.
        """
        check_batch(x, self.d_in)
        x_hat, z, pre = self._forward_n(scale_inputs(self, jnp.asarray(x)))
        return SAEOutput(unscale_outputs(self, x_hat), z, pre)


def recon_metrics(x, xs, x_hat_n, z, s, f32):
    """Shared reconstruction metrics: per-row summed squared error in the normalised space,
    FVU, MSE in input units and L0."""
    sse = sum_squared_error(xs, x_hat_n)
    n = x.shape[0]
    return {
        "recon": sse / n,
        "fvu": sse / total_variance(xs),
        "mse": sse / (jnp.square(s.astype(f32)) * x.size),
        "l0": jnp.mean(jnp.sum(z != 0, axis=1).astype(f32)),
    }
