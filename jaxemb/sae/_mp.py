"""Matching-pursuit sparse autoencoder (MP-SAE): a greedy, residual-driven encoder."""

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
    SparseCode,
    _densify,
    check_batch,
    check_code,
    sum_squared_error,
    total_variance,
)
from jaxemb.sae._config import SAEConfig
from jaxemb.sae._kernels import _sparse_decode
from jaxemb.sae._module import SAEModule, config_from_arguments
from jaxemb.sae._scaling import scale_inputs, unscale_outputs


@dataclasses.dataclass(frozen=True, kw_only=True)
class MatchingPursuitConfig(SAEConfig):
    """Hyperparameters of :class:`MatchingPursuitSAE` (its constructor's arguments and defaults)."""

    variant: ClassVar[str] = "matching_pursuit"
    module: ClassVar[str] = "MatchingPursuitSAE"
    saelens_architecture: ClassVar[str] = "matching_pursuit"

    n_steps: int
    normalize_decoder: bool = True


class MatchingPursuitSAE(SAEModule):
    """Sparse autoencoder whose encoder is ``n_steps`` of matching pursuit over the decoder rows.

    With atoms ``D_j = W_dec[j] / ‖W_dec[j]‖`` (decoder rows used at unit norm) and the
    residual starting at ``r = x − b_dec``, each step picks ``j = argmax_j ⟨D_j, r⟩``, adds
    ``a = ⟨D_j, r⟩`` to latent ``j`` and removes it: ``r ← r − a D_j`` (a ``jax.lax.fori_loop``).
    The code is a :class:`SparseCode` with one ``(value, index)`` per step (an atom picked twice
    appears twice; :func:`densify` and decoding sum them) and ``x̂ = Σ_t a_t D_{j_t} + b_dec``,
    so ``x − x̂`` is the final residual. Sparsity is adaptive at inference:
    :meth:`encode` takes more or fewer steps, or stops each row once ``‖r‖ < tol``.

    ``W_enc`` and ``b_enc`` exist only for the shared SAELens layout (file formats, tools):
    the encoder is the pursuit over ``W_dec``, they are not used and get zero gradients.
    ``W_enc`` is initialised to ``W_decᵀ``, the linear encoder of the first pursuit step.
    ``pre_activations`` are the first step's correlations ``(x − b_dec) Dᵀ``. After
    :func:`fit_input_norm` the pursuit runs on ``input_scale · x`` and reconstructions are
    returned in input units.

    Args:
      d_in: input width.
      d_sae: number of atoms (latents).
      n_steps: pursuit steps during training (the L0 upper bound), ``>= 1``.
      rngs: ``nnx.Rngs`` whose ``params`` stream draws the initial weights.
      normalize_decoder: keep decoder rows unit-norm during training (``make_train_step``).
      param_dtype: dtype of the parameters.

    Attributes:
      W_enc: ``nnx.Param [d_in, d_sae]`` (unused); b_enc: ``[d_sae]`` (unused);
      W_dec: ``[d_sae, d_in]``; b_dec: ``[d_in]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.MatchingPursuitSAE(2, 3, n_steps=2, rngs=nnx.Rngs(0))
      >>> model.W_dec[...] = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
      >>> code = model.encode(jnp.array([[3.0, 5.0]]))
      >>> [round(a, 3) for a in code.values[0].tolist()], code.indices.tolist()
      ([5.8, 0.36], [[2, 1]])

    References:
      Costa, Fel, Lubana, Tolooshams, Ba, "From Flat to Hierarchical: Extracting Sparse
      Representations with Matching Pursuit" (2025) (MP-SAE); Mallat & Zhang, "Matching
      Pursuits with Time-Frequency Dictionaries" (1993).
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        n_steps: int,
        rngs: nnx.Rngs,
        normalize_decoder: bool = True,
        param_dtype: Any = jnp.float32,
    ):
        v.check_int(n_steps, "n_steps", minimum=1)
        self._setup(config_from_arguments(MatchingPursuitConfig, locals()), rngs)
        self.n_steps = n_steps

    def _atoms(self) -> jax.Array:
        W = self.W_dec[...]
        dt = jnp.promote_types(W.dtype, jnp.float32)
        n2 = jnp.sum(jnp.square(W.astype(dt)), axis=1, keepdims=True)
        return (W.astype(dt) * jax.lax.rsqrt(jnp.maximum(n2, jnp.finfo(dt).tiny))).astype(W.dtype)

    def _pursuit(self, x: jax.Array, n_steps: int, tol: float | None) -> SparseCode:
        atoms = self._atoms()
        dt = jnp.promote_types(jnp.promote_types(x.dtype, atoms.dtype), jnp.float32)
        atoms = atoms.astype(dt)
        r0 = x.astype(dt) - self.b_dec[...].astype(dt)[None, :]
        n = x.shape[0]
        values0 = jnp.zeros((n, n_steps), dt)
        indices0 = jnp.zeros((n, n_steps), jnp.int32)

        def step(t, carry):
            r, values, indices = carry
            # Selection needs no gradient; the value is recomputed from the chosen atom only,
            # so the backward pass gathers N rows instead of a dense [N, d_sae] cotangent.
            scores = jax.lax.stop_gradient(r) @ jax.lax.stop_gradient(atoms).T
            j = jnp.argmax(scores, axis=1).astype(jnp.int32)
            chosen = jnp.take(atoms, j, axis=0)  # [N, d_in]
            a = jnp.sum(r * chosen, axis=1)
            if tol is not None:
                a = jnp.where(jnp.sqrt(jnp.sum(jnp.square(r), axis=1)) >= tol, a, 0.0)
            r = r - a[:, None] * chosen
            values = jax.lax.dynamic_update_slice(values, a[:, None], (0, t))
            indices = jax.lax.dynamic_update_slice(indices, j[:, None], (0, t))
            return r, values, indices

        carry = (r0, values0, indices0)
        if tol is None:
            _, values, indices = jax.lax.fori_loop(0, n_steps, step, carry)
        else:
            # Inference with a tolerance: stop once every row's residual is below tol.
            def cond(c):
                t, (r, _, _) = c
                return (t < n_steps) & jnp.any(jnp.sum(jnp.square(r), axis=1) >= tol**2)

            def body(c):
                t, inner = c
                return t + 1, step(t, inner)

            _, (_, values, indices) = jax.lax.while_loop(cond, body, (jnp.int32(0), carry))
        return SparseCode(values, indices)

    def encode(
        self, x: ArrayLike, *, n_steps: int | None = None, tol: float | None = None
    ) -> SparseCode:
        """Matching-pursuit code of ``x``, optionally with another budget or a tolerance.

        Args:
          x: ``[N, d_in]`` float inputs.
          n_steps: pursuit steps (default: the training ``n_steps``); may exceed it.
          tol: if given, a row stops (its remaining values are 0) once ``‖r‖ < tol``, and the
            loop ends when every row has stopped. Not differentiable; for inference.

        Returns:
          :class:`SparseCode` ``values [N, n_steps]``, ``indices [N, n_steps]`` int32, in pursuit
          order (values of stopped rows are 0).

        Examples:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> from jaxemb import sae
          >>> model = sae.MatchingPursuitSAE(2, 2, n_steps=1, rngs=nnx.Rngs(0))
          >>> model.W_dec[...] = jnp.eye(2)
          >>> x = jnp.array([[3.0, 0.0], [3.0, 2.0]])
          >>> model.encode(x, n_steps=2, tol=0.5).values.tolist()   # row 0 stops after 1 step
          [[3.0, 0.0], [3.0, 2.0]]
        """
        check_batch(x, self.d_in)
        n_steps = self.n_steps if n_steps is None else n_steps
        v.check_int(n_steps, "n_steps", minimum=1)
        if tol is not None:
            v.check_positive(tol, "tol")
            tol = float(tol)
        return self._pursuit(scale_inputs(self, jnp.asarray(x)), n_steps, tol)

    def decode(self, code: SparseCode) -> jax.Array:
        """``x̂ = Σ_t values_t D_{indices_t} + b_dec`` with unit-norm atoms ``D``, ``[N, d_in]``.

        Args:
          code: :class:`SparseCode` ``[N, T]`` (repeated indices are summed).

        Returns:
          ``[N, d_in]`` reconstruction.

        Examples:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> from jaxemb import sae
          >>> model = sae.MatchingPursuitSAE(2, 2, n_steps=1, rngs=nnx.Rngs(0))
          >>> model.W_dec[...] = jnp.array([[2.0, 0.0], [0.0, 1.0]])   # row 0 used at unit norm
          >>> model.decode(sae.SparseCode(jnp.array([[3.0]]), jnp.array([[0]]))).tolist()
          [[3.0, 0.0]]
        """
        check_code(code)
        return unscale_outputs(self, self._decode(code))

    def _decode(self, code: SparseCode) -> jax.Array:
        atoms = self._atoms()
        recon = _sparse_decode(code.values.astype(atoms.dtype), code.indices, atoms)
        return recon + self.b_dec[...][None, :]

    def __call__(self, x: ArrayLike) -> SAEOutput:
        """Encodes with ``n_steps`` pursuit steps and decodes ``x``.

        Args:
          x: ``[N, d_in]`` float inputs.

        Returns:
          :class:`SAEOutput` ``(reconstruction [N, d_in], code [N, n_steps],
          pre_activations [N, d_sae])`` (the first step's correlations).
        """
        check_batch(x, self.d_in)
        out = self._forward(scale_inputs(self, jnp.asarray(x)))
        return out._replace(reconstruction=unscale_outputs(self, out.reconstruction))

    def _forward(self, x: jax.Array) -> SAEOutput:
        """Forward pass in the normalised space (``x`` already scaled)."""
        code = self._pursuit(x, self.n_steps, None)
        pre = (x - self.b_dec[...][None, :]) @ self._atoms().T
        return SAEOutput(self._decode(code), code, pre)

    def training_loss(
        self, x: ArrayLike, *, dead_mask: ArrayLike | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array], SAEOutput]:
        """MP-SAE loss: the squared reconstruction error ``mean_n ‖x_n − x̂_n‖²``.

        Gradients reach ``W_dec`` (through the values ``⟨D_j, r⟩``, the subtracted atoms and the
        decoding) and ``b_dec``; the atom choices (argmax) are piecewise constant. There is no
        sparsity penalty: the ``n_steps`` budget is the sparsity.

        Args:
          x: ``[N, d_in]`` float inputs.
          dead_mask: optional ``[d_sae]`` bool (only reported as ``dead_fraction``).

        Returns:
          ``(loss, metrics, output)``: float32 scalars ``loss``, ``fvu``, ``mse`` (mean over
          elements),
          ``l0`` (distinct non-zero latents per row) and ``dead_fraction``.
          ``output`` is the forward :class:`SAEOutput`; :func:`jaxemb.sae.loss` returns
          ``(loss, metrics)`` only.

        Examples:
          >>> import jax.numpy as jnp
          >>> from flax import nnx
          >>> from jaxemb import sae
          >>> model = sae.MatchingPursuitSAE(2, 2, n_steps=1, rngs=nnx.Rngs(0))
          >>> model.W_dec[...] = jnp.eye(2)
          >>> x = jnp.array([[3.0, 1.0], [0.0, 2.0]])    # one step leaves 1.0 and 0.0 behind
          >>> loss, m = sae.loss(model, x)
          >>> round(float(loss), 4), float(m["l0"])
          (0.5, 1.0)

        References:
          Costa et al., "From Flat to Hierarchical: Extracting Sparse Representations with Matching
          Pursuit" (2025).
        """
        x = self._check_loss_inputs(x, dead_mask)
        return _mp_loss(self, x, dead_mask)


def _mp_loss(
    model: MatchingPursuitSAE, x: jax.Array, dead_mask: jax.Array | None
) -> tuple[jax.Array, dict[str, jax.Array], SAEOutput]:
    xs = scale_inputs(model, x)  # the loss lives in the normalised space of fit_input_norm
    out = model._forward(xs)
    f32 = jnp.promote_types(out.reconstruction.dtype, jnp.float32)
    sse = sum_squared_error(xs, out.reconstruction)
    loss = sse / x.shape[0]
    dense = _densify(jax.lax.stop_gradient(out.code.values), out.code.indices, model.d_sae)
    out = out._replace(reconstruction=unscale_outputs(model, out.reconstruction))
    metrics = {
        "loss": loss,
        "fvu": sse / total_variance(xs),
        "mse": sum_squared_error(x, out.reconstruction) / x.size,
        "l0": jnp.mean(jnp.sum(dense != 0, axis=1).astype(f32)),
        "dead_fraction": (
            jnp.zeros((), f32) if dead_mask is None else jnp.mean(jnp.asarray(dead_mask, f32))
        ),
    }
    return loss, metrics, out
