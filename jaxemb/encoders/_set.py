"""Deep Sets encoder ``ρ(pool_i φ(x_i))`` for sets and multi-vector inputs with padding masks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxemb import _validate as v
from jaxemb.encoders._simple import _activation
from jaxemb.encoders._towers import _check_dtype

SET_POOLINGS = ("sum", "mean", "max")


class SetEncoder(nnx.Module):
    """Permutation-invariant set encoder ``[B, N, F] -> [B, out_features]`` (Deep Sets).

    ``φ`` (``Linear → act → Linear → act``, width ``hidden``) embeds every element, a masked
    pooling (``"sum"``, ``"mean"`` or ``"max"``) over the elements makes the result invariant to
    their order, and ``ρ`` (``Linear → act → Linear``) maps the pooled vector to the embedding.
    Elements with ``mask == False`` are padding: they are replaced by zeros before ``φ`` and
    excluded from the pooling, so their values (even ``inf``/``NaN``) never reach the output or
    the gradients. A set with no real element pools to zeros (every pooling).

    Args:
      in_features: element width ``F``.
      hidden: width of ``φ`` and of the pooled vector.
      out_features: embedding width.
      pooling: ``"sum"`` (Deep Sets' ``Σ``, default), ``"mean"`` or ``"max"``.
      activation: ``"relu"`` (default), ``"gelu"``, ``"silu"`` or ``"tanh"``.
      dtype: compute dtype of the matmuls (``None``: float32); parameters and pooling are
        float32.
      rngs: parameter RNG streams.

    Call args:
      x: ``[B, N, F]`` element features.
      mask: ``[B, N]`` boolean (or 0/1) mask of real elements; ``None`` means all real.

    Returns:
      ``[B, out_features]`` float32 set embeddings.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb.encoders import SetEncoder
      >>> enc = SetEncoder(3, 16, 8, rngs=nnx.Rngs(0))
      >>> x = jnp.arange(12.0).reshape(1, 4, 3)
      >>> y = enc(x, jnp.array([[True, True, True, False]]))
      >>> y.shape
      (1, 8)
      >>> bool(jnp.allclose(y, enc(x[:, ::-1][:, 1:])))  # order and padding do not matter
      True

    References:
      Zaheer et al., "Deep Sets", NeurIPS 2017 (``ρ(Σ φ(x))``; reference implementation
      manzilzaheer/DeepSets, sum/mean/max pooling).
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        out_features: int,
        *,
        pooling: str = "sum",
        activation: str = "relu",
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        v.check_int(in_features, "in_features", minimum=1)
        v.check_int(hidden, "hidden", minimum=1)
        v.check_int(out_features, "out_features", minimum=1)
        v.check_choice(pooling, "pooling", SET_POOLINGS)
        self.act = _activation(activation)
        self.in_features = in_features
        self.pooling = pooling
        self.dtype = _check_dtype(dtype)

        def linear(a, b):
            return nnx.Linear(a, b, dtype=self.dtype, param_dtype=jnp.float32, rngs=rngs)

        self.phi1 = linear(in_features, hidden)
        self.phi2 = linear(hidden, hidden)
        self.rho1 = linear(hidden, hidden)
        self.rho2 = linear(hidden, out_features)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        x = v.check_array(x, "x", ndim=3, kind="number")
        if x.shape[2] != self.in_features:
            raise ValueError(f"x must be [B, N, {self.in_features}]; got {v.shape_str(x)}")
        if x.shape[1] == 0:
            raise ValueError(
                f"x must hold at least one element slot (N >= 1); got {v.shape_str(x)}"
            )
        if mask is None:
            mask = jnp.ones(x.shape[:2], bool)
        else:
            mask = v.check_array(mask, "mask", ndim=2, kind="number")
            if tuple(mask.shape) != tuple(x.shape[:2]):
                raise ValueError(
                    f"mask must be [B, N] = {v.shape_str(x.shape[:2])} like x {v.shape_str(x)}; "
                    f"got {v.shape_str(mask)}"
                )
            mask = jnp.asarray(mask).astype(bool)
        keep = mask[:, :, None]
        x = jnp.where(keep, jnp.asarray(x, jnp.float32), 0.0)
        h = self.act(self.phi2(self.act(self.phi1(x)))).astype(jnp.float32)
        if self.pooling == "max":
            pooled = jnp.max(jnp.where(keep, h, -jnp.inf), axis=1)
            pooled = jnp.where(jnp.any(mask, axis=1)[:, None], pooled, 0.0)
        else:
            pooled = jnp.sum(jnp.where(keep, h, 0.0), axis=1)
            if self.pooling == "mean":
                count = jnp.sum(mask, axis=1, dtype=jnp.float32)
                pooled = pooled / jnp.maximum(count, 1.0)[:, None]
        return self.rho2(self.act(self.rho1(pooled))).astype(jnp.float32)
