"""Image augmentations as pure functions of (key, batch): shift/crop, Gaussian noise, cut-out."""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from jaxemb import _validate


def _check_key(key) -> None:
    if not hasattr(key, "dtype") or not hasattr(key, "shape"):
        raise ValueError(
            f"key must be a JAX PRNG key (jax.random.key(0)); got {type(key).__name__}"
        )
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(
                f"key must be a single PRNG key (shape []); got shape {list(key.shape)}"
            )
    elif not (key.shape == (2,) and key.dtype == jnp.uint32):
        raise ValueError(
            f"key must be a JAX PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)); got "
            f"dtype {key.dtype} with shape {list(key.shape)}"
        )


def _check_number(value, name: str, *, lo: float, hi: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be in {rng}; got {value!r}")


@functools.partial(
    jax.jit, static_argnames=("max_shift", "noise_std", "cutout_size", "cutout_prob")
)
def _augment(key, images, *, max_shift, noise_std, cutout_size, cutout_prob):
    b, h, w, c = images.shape
    k_shift, k_noise, k_apply, k_pos = jax.random.split(key, 4)
    x = images.astype(jnp.float32)

    if max_shift > 0:
        m = max_shift
        padded = jnp.pad(x, ((0, 0), (m, m), (m, m), (0, 0)))
        offsets = jax.random.randint(k_shift, (b, 2), 0, 2 * m + 1)

        def crop(img, off):
            return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

        x = jax.vmap(crop)(padded, offsets)

    if noise_std > 0:
        x = x + noise_std * jax.random.normal(k_noise, x.shape, jnp.float32)

    if cutout_size > 0 and cutout_prob > 0:
        s = cutout_size
        apply = jax.random.bernoulli(k_apply, cutout_prob, (b,))
        k_row, k_col = jax.random.split(k_pos)
        top = jax.random.randint(k_row, (b, 1), 0, h - s + 1)
        left = jax.random.randint(k_col, (b, 1), 0, w - s + 1)
        rows = jnp.arange(h)[None, :]
        cols = jnp.arange(w)[None, :]
        in_rows = (rows >= top) & (rows < top + s)  # [b, h]
        in_cols = (cols >= left) & (cols < left + s)  # [b, w]
        square = in_rows[:, :, None] & in_cols[:, None, :] & apply[:, None, None]  # [b, h, w]
        x = jnp.where(square[..., None], jnp.zeros_like(x), x)

    return x.astype(images.dtype)


def augment_images(
    key: jax.Array,
    images: jax.typing.ArrayLike,
    *,
    max_shift: int = 1,
    noise_std: float = 0.1,
    cutout_size: int = 2,
    cutout_prob: float = 0.5,
) -> jax.Array:
    """Randomly shifts, adds noise to and cuts a square out of each image of a batch.

    A pure function of ``(key, images)``: the same key gives the same output, and every image
    gets its own randomness. In order, per image:

    1. shift: zero-pad by ``max_shift`` pixels on each side and crop back to ``[H, W]`` at a
       uniformly random offset, i.e. a shift by ``(dy, dx)`` with ``|dy|, |dx| <= max_shift``;
    2. noise: add ``N(0, noise_std^2)`` independently to every pixel (no clipping);
    3. cut-out: with probability ``cutout_prob``, set a ``cutout_size x cutout_size`` square (all
       channels) to 0; its position is uniform among squares lying fully inside the image.

    The defaults (1-pixel shift, noise 0.1, 2x2 cut-out half the time) suit 8x8 digits scaled to
    [0, 1]. ``max_shift=0, noise_std=0, cutout_prob=0`` (or ``cutout_size=0``) is the identity.

    Args:
      key: a JAX PRNG key.
      images: float [batch, height, width, channels], typically in [0, 1].
      max_shift: largest shift in pixels, an integer in ``[0, min(height, width))``.
      noise_std: standard deviation of the additive Gaussian noise, ``>= 0``.
      cutout_size: side of the cut-out square in pixels, in ``[0, min(height, width)]``.
      cutout_prob: probability that an image gets a cut-out, in ``[0, 1]``.

    Returns:
      The augmented images, same shape and dtype as ``images`` (computed in float32).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxemb import data
      >>> images = jnp.ones((2, 8, 8, 1))
      >>> out = data.augment_images(jax.random.key(0), images, max_shift=0, noise_std=0.0,
      ...                           cutout_size=3, cutout_prob=1.0)
      >>> out.shape, (out == 0).sum(axis=(1, 2, 3)).tolist()
      ((2, 8, 8, 1), [9, 9])

    References:
      Chen et al. (2020), "A Simple Framework for Contrastive Learning of Visual
      Representations" (SimCLR; random crop and noise as views); DeVries and Taylor (2017),
      "Improved Regularization of Convolutional Neural Networks with Cutout". The shift matches
      torchvision's ``RandomCrop(size, padding=max_shift)`` (zero padding); unlike the Cutout
      reference code, the square is kept fully inside the image so it always has its full area.
    """
    _check_key(key)
    _validate.check_array(images, "images", ndim=4, kind="float")
    h, w = images.shape[1], images.shape[2]
    _validate.check_int(max_shift, "max_shift", minimum=0, maximum=min(h, w) - 1)
    _validate.check_int(cutout_size, "cutout_size", minimum=0, maximum=min(h, w))
    _check_number(noise_std, "noise_std", lo=0.0)
    _check_number(cutout_prob, "cutout_prob", lo=0.0, hi=1.0)
    return _augment(
        key,
        jnp.asarray(images),
        max_shift=int(max_shift),
        noise_std=float(noise_std),
        cutout_size=int(cutout_size),
        cutout_prob=float(cutout_prob),
    )
