"""Heads on top of an embedding: SimCLR projection MLP, nested (Matryoshka) head, L2 norm."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxemb import _validate as v
from jaxemb.losses._common import l2_normalize


class ProjectionHead(nnx.Module):
    """SimCLR projection MLP ``Linear → ReLU → Linear`` applied before the contrastive loss.

    Args:
      in_features: embedding width.
      out_features: projection width.
      hidden: hidden width (default ``in_features``).
      rngs: parameter RNG streams.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb.encoders import ProjectionHead
      >>> ProjectionHead(8, 4, rngs=nnx.Rngs(0))(jnp.ones((3, 8))).shape
      (3, 4)

    References:
      Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", 2020.
    """

    def __init__(
        self, in_features: int, out_features: int, *, hidden: int | None = None, rngs: nnx.Rngs
    ):
        v.check_int(in_features, "in_features", minimum=1)
        v.check_int(out_features, "out_features", minimum=1)
        hidden = in_features if hidden is None else hidden
        v.check_int(hidden, "hidden", minimum=1)
        self.in_features = in_features
        self.fc1 = nnx.Linear(in_features, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = v.check_array(x, "x", ndim=2)
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"x must be [batch, in_features={self.in_features}]; got {v.shape_str(x)}"
            )
        return self.fc2(jax.nn.relu(self.fc1(x)))


def nested_mask(in_dims: Sequence[int], out_dims: Sequence[int]) -> np.ndarray:
    """Boolean ``[in, out]`` mask where output group ``g`` sees only input prefix ``g``.

    ``in_dims`` and ``out_dims`` are increasing prefix sizes of equal length; output units
    ``[out_dims[g-1], out_dims[g])`` may read input units ``[0, in_dims[g])``. So the first
    ``out_dims[g]`` outputs depend only on the first ``in_dims[g]`` inputs.
    """
    in_dims, out_dims = list(in_dims), list(out_dims)
    mask = np.zeros((in_dims[-1], out_dims[-1]), bool)
    start = 0
    for din, dout in zip(in_dims, out_dims):
        mask[:din, start:dout] = True
        start = dout
    return mask


class MatryoshkaHead(nnx.Module):
    """A projection MLP whose outputs are nested like the Matryoshka prefixes of its input.

    For every ``m`` in ``dims``, the first ``m`` outputs depend only on the first ``m`` inputs
    (both weight matrices are block-triangular over the prefix groups; the hidden layer has
    ``expansion·m`` units per prefix). Training ``matryoshka(loss)`` on the head's output
    therefore trains each prefix of the *embedding* to be useful on its own, while keeping the
    SimCLR benefit of computing the loss after a non-linear projection.

    Args:
      dims: increasing prefix sizes; the last is the embedding width.
      expansion: hidden units per input unit.
      rngs: parameter RNG streams.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb.encoders import MatryoshkaHead
      >>> head = MatryoshkaHead((2, 4), rngs=nnx.Rngs(0))
      >>> x = jnp.ones((1, 4))
      >>> y1, y2 = head(x), head(x.at[:, 3].set(5.0))
      >>> bool(jnp.allclose(y1[:, :2], y2[:, :2]))  # the 2-prefix ignores input 3
      True

    References:
      Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022 (nested
      prefixes); Chen et al. 2020 (projection head).
    """

    def __init__(self, dims: Sequence[int], *, expansion: int = 2, rngs: nnx.Rngs):
        dims = tuple(dims)
        if not dims or any(b <= a for a, b in zip(dims[:-1], dims[1:])) or dims[0] < 1:
            raise ValueError(f"dims must be strictly increasing positive ints; got {dims}")
        v.check_int(expansion, "expansion", minimum=1)
        hid = tuple(expansion * d for d in dims)
        self.dims = dims
        self.mask1 = nnx.Variable(jnp.asarray(nested_mask(dims, hid), jnp.float32))
        self.mask2 = nnx.Variable(jnp.asarray(nested_mask(hid, dims), jnp.float32))
        self.fc1 = nnx.Linear(dims[-1], hid[-1], rngs=rngs)
        self.fc2 = nnx.Linear(hid[-1], dims[-1], rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = v.check_array(x, "x", ndim=2)
        if x.shape[1] != self.dims[-1]:
            raise ValueError(f"x must be [batch, {self.dims[-1]}]; got {v.shape_str(x)}")
        h = x @ (self.fc1.kernel[...] * self.mask1[...]) + self.fc1.bias[None, :]
        return jax.nn.relu(h) @ (self.fc2.kernel[...] * self.mask2[...]) + self.fc2.bias[None, :]


class L2Normalize(nnx.Module):
    """Layer that L2-normalises the last axis (``x / max(‖x‖, 1e-12)``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.encoders import L2Normalize
      >>> L2Normalize()(jnp.array([[3.0, 4.0]]))
      Array([[0.6, 0.8]], dtype=float32)
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        x = v.check_array(x, "x")
        return l2_normalize(x)
