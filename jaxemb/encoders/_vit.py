"""A small Vision Transformer: patch embedding, optional CLS token, the jaxemb Transformer."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from jaxemb import _validate as v
from jaxemb.encoders._transformer import TransformerConfig, TransformerEncoder

VIT_POOLS = ("cls", "mean")


def _pair(value: Any, name: str) -> tuple[int, int]:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair (height, width); got {value!r}")
    for p in pair:
        v.check_int(p, name, minimum=1)
    return int(pair[0]), int(pair[1])


def _compute_dtype_name(dtype: Any) -> str:
    if dtype is None:
        return "float32"
    try:
        name = jnp.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be float32 or bfloat16 (or None); got {dtype!r}")
    return name


class ViTEncoder(nnx.Module):
    """Vision Transformer encoder for small images ``[B, H, W, C] -> [B, hidden_size]``.

    The image is cut into non-overlapping ``patch_size`` patches (einops
    ``b (h p) (w q) c -> b (h w) (p q c)``, row-major patch order), each flattened patch is
    projected by a ``Linear`` (the same map as big_vision's strided convolution), a learned CLS
    token is prepended when ``pool="cls"``, and the sequence runs through a pre-LN
    :class:`~jaxemb.encoders.TransformerEncoder` with learned position embeddings (one per
    token) and a final layer norm. The embedding is the CLS token's state (``"cls"``) or the
    mean of the patch states (``"mean"``, no CLS token: big_vision's ``pool_type="gap"``).
    Every image is encoded independently of the others in its batch.

    Args:
      image_size: ``H`` (square) or ``(H, W)``; divisible by the patch size.
      patch_size: ``P`` or ``(P_h, P_w)``.
      channels: image channels ``C``.
      hidden_size: token width.
      num_layers: Transformer layers.
      num_heads: attention heads (dividing ``hidden_size``).
      mlp_dim: MLP width of each layer.
      pool: ``"cls"`` (default) or ``"mean"``.
      dropout: dropout rate in the Transformer (active in ``train()`` mode; pass ``rngs`` with a
        ``dropout`` stream at call time).
      activation: MLP activation of the Transformer (``"gelu"`` default).
      dtype: compute dtype (``None``/float32 or bfloat16); parameters are float32.
      rngs: parameter RNG streams.

    Call args:
      images: ``[B, H, W, C]`` float (or integer) images.
      rngs: dropout RNG streams (only needed with ``dropout > 0`` in training mode).

    Returns:
      ``[B, hidden_size]`` float32 image embeddings.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb.encoders import ViTEncoder
      >>> vit = ViTEncoder(8, 4, 1, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32,
      ...                  rngs=nnx.Rngs(0))
      >>> vit(jnp.ones((3, 8, 8, 1))).shape
      (3, 16)

    References:
      Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at
      Scale", ICLR 2021; reference implementation big_vision ``models/vit.py`` (pre-LN encoder,
      ``pool_type`` ``"tok"``/``"gap"``, learned position embeddings).
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        channels: int,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        mlp_dim: int,
        *,
        pool: str = "cls",
        dropout: float = 0.0,
        activation: str = "gelu",
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        height, width = _pair(image_size, "image_size")
        ph, pw = _pair(patch_size, "patch_size")
        if height % ph or width % pw:
            raise ValueError(
                f"image_size {(height, width)} must be divisible by patch_size {(ph, pw)}"
            )
        v.check_int(channels, "channels", minimum=1)
        v.check_choice(pool, "pool", VIT_POOLS)
        self.image_size = (height, width)
        self.patch_size = (ph, pw)
        self.channels = channels
        self.pool = pool
        self.num_patches = (height // ph) * (width // pw)
        num_tokens = self.num_patches + (1 if pool == "cls" else 0)
        # TransformerConfig validates hidden_size, num_layers, num_heads, mlp_dim, dropout and
        # activation (ValueError naming the field).
        self.config = TransformerConfig(
            vocab_size=1,  # the token table is unused: patches come in as inputs_embeds
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_heads=num_heads,
            intermediate_size=mlp_dim,
            max_positions=num_tokens,
            type_vocab_size=0,
            layer_norm_eps=1e-6,
            activation=activation,
            norm_position="pre",
            position="learned",
            dropout=dropout,
            compute_dtype=_compute_dtype_name(dtype),
        )
        cfg = self.config
        self.patch_embed = nnx.Linear(
            ph * pw * channels,
            hidden_size,
            dtype=cfg.dtype,
            param_dtype=jnp.float32,
            kernel_metadata={"out_sharding": (None, "embed"), "eager_sharding": False},
            bias_metadata={"out_sharding": ("embed",), "eager_sharding": False},
            rngs=rngs,
        )
        if pool == "cls":
            self.cls_token = nnx.Param(
                jnp.zeros((1, 1, hidden_size), jnp.float32),
                out_sharding=(None, None, "embed"),
                eager_sharding=False,
            )
        else:
            self.cls_token = None
        self.encoder = TransformerEncoder(cfg, rngs=rngs)

    def patches(self, images: jax.Array) -> jax.Array:
        """Flattened patches ``[B, num_patches, P_h·P_w·C]`` in row-major patch order."""
        ph, pw = self.patch_size
        return rearrange(
            jnp.asarray(images, jnp.float32), "b (h p) (w q) c -> b (h w) (p q c)", p=ph, q=pw
        )

    def __call__(self, images: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        images = v.check_array(images, "images", ndim=4, kind="number")
        want = (*self.image_size, self.channels)
        if tuple(images.shape[1:]) != want:
            raise ValueError(
                f"images must be [B, {want[0]}, {want[1]}, {want[2]}]; got {v.shape_str(images)}"
            )
        x = self.patch_embed(self.patches(images)).astype(jnp.float32)
        if self.cls_token is not None:
            cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, x.shape[2]))
            x = jnp.concatenate([cls, x], axis=1)
        hidden = self.encoder(None, None, inputs_embeds=x, rngs=rngs).last_hidden_state
        if self.pool == "cls":
            return hidden[:, 0]
        return jnp.mean(hidden, axis=1)
