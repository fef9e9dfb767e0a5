"""Small native encoders: MLP and convolutional encoders for vectors and small images."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from jaxemb import _validate as v

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
}


def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
    v.check_choice(name, "activation", tuple(_ACTIVATIONS))
    return _ACTIVATIONS[name]


class MLPEncoder(nnx.Module):
    """A multi-layer perceptron encoder ``[batch, in_features] -> [batch, out_features]``.

    Hidden layers are ``Linear → LayerNorm → activation``; the last layer is a plain ``Linear``
    (the embedding). Inputs of higher rank (e.g. ``[batch, 8, 8, 1]`` images) are flattened.

    Args:
      in_features: input width (after flattening).
      out_features: embedding width.
      hidden: widths of the hidden layers.
      activation: ``"relu"``, ``"gelu"`` (erf), ``"silu"`` or ``"tanh"``.
      rngs: parameter RNG streams.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb.encoders import MLPEncoder
      >>> enc = MLPEncoder(64, 16, hidden=(32,), rngs=nnx.Rngs(0))
      >>> enc(jnp.ones((5, 64))).shape
      (5, 16)

    References:
      SimCLR (Chen et al. 2020) style backbone for vector inputs.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden: Sequence[int] = (256, 256),
        activation: str = "gelu",
        rngs: nnx.Rngs,
    ):
        v.check_int(in_features, "in_features", minimum=1)
        v.check_int(out_features, "out_features", minimum=1)
        for h in hidden:
            v.check_int(h, "hidden entries", minimum=1)
        self.in_features = in_features
        self.act = _activation(activation)
        widths = (in_features, *hidden)
        self.hidden = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])]
        )
        self.norms = nnx.List([nnx.LayerNorm(b, rngs=rngs) for b in hidden])
        self.out = nnx.Linear(widths[-1], out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = v.check_array(x, "x", kind="number")
        x = jnp.reshape(x, (x.shape[0], -1)).astype(jnp.float32)
        if x.shape[1] != self.in_features:
            raise ValueError(f"x must flatten to [batch, {self.in_features}]; got {v.shape_str(x)}")
        for lin, norm in zip(self.hidden, self.norms):
            x = self.act(norm(lin(x)))
        return self.out(x)


class ConvEncoder(nnx.Module):
    """A small convolutional encoder for 8×8 to 32×32 images ``[batch, H, W, C]``.

    Each stage is ``Conv 3×3 → LayerNorm → activation`` with stride 1 for the first stage and 2
    after, then global average pooling and a ``Linear`` to the embedding.

    Args:
      in_channels: image channels ``C``.
      out_features: embedding width.
      channels: output channels of each stage.
      activation: activation name (see :class:`MLPEncoder`).
      rngs: parameter RNG streams.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb.encoders import ConvEncoder
      >>> enc = ConvEncoder(1, 16, channels=(8, 16), rngs=nnx.Rngs(0))
      >>> enc(jnp.ones((2, 8, 8, 1))).shape
      (2, 16)

    References:
      A reduced ResNet-style stem as used for CIFAR-scale SimCLR baselines.
    """

    def __init__(
        self,
        in_channels: int,
        out_features: int,
        *,
        channels: Sequence[int] = (32, 64),
        activation: str = "gelu",
        rngs: nnx.Rngs,
    ):
        v.check_int(in_channels, "in_channels", minimum=1)
        v.check_int(out_features, "out_features", minimum=1)
        self.in_channels = in_channels
        self.act = _activation(activation)
        chans = (in_channels, *channels)
        self.convs = nnx.List(
            [
                nnx.Conv(a, b, (3, 3), strides=1 if i == 0 else 2, rngs=rngs)
                for i, (a, b) in enumerate(zip(chans[:-1], chans[1:]))
            ]
        )
        self.norms = nnx.List([nnx.LayerNorm(b, rngs=rngs) for b in channels])
        self.out = nnx.Linear(chans[-1], out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = v.check_array(x, "x", ndim=4, kind="number")
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"x must be [batch, H, W, {self.in_channels}]; got {v.shape_str(x)}")
        x = x.astype(jnp.float32)
        for conv, norm in zip(self.convs, self.norms):
            x = self.act(norm(conv(x)))
        return self.out(jnp.mean(rearrange(x, "b h w c -> b (h w) c"), axis=1))
