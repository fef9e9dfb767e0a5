"""SigLIP's pairwise sigmoid loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.losses._common import as_float, l2_normalize


def sigmoid_loss(
    a: ArrayLike,
    b: ArrayLike,
    *,
    logit_scale: ArrayLike,
    logit_bias: ArrayLike,
) -> jax.Array:
    """SigLIP: an independent binary (sigmoid) classification of every pair in the batch.

    ``a`` and ``b`` are L2-normalised; ``logits = logit_scale · (a bᵀ) + logit_bias``; the
    labels are ``z = 2I − 1`` (+1 for the matched pair ``(i, i)``, −1 otherwise) and
    ``L = −(1/B) Σ_i Σ_j log σ(z_ij · logits_ij)`` — summed over the ``B`` candidates of each
    row and averaged over rows, as big_vision does.

    ``logit_scale`` multiplies: it is already ``exp(t′)``. The learnable ``t′`` (SigLIP
    initialises it to ``log 10``) and bias (initialised to −10) live in the model, not here;
    pass them as (possibly traced) scalars. Only concrete values are validated.

    Args:
      a: first modality, ``[batch, dim]`` float (e.g. image embeddings).
      b: second modality, ``[batch, dim]``; row ``i`` pairs with ``a[i]``.
      logit_scale: positive scalar ``t`` multiplying the cosine similarities.
      logit_bias: scalar bias added to every logit.

    Returns:
      A float32 scalar: the per-row sum over candidates, averaged over rows.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import sigmoid_loss
      >>> x = jnp.eye(2)
      >>> # positives: logit 1·1 + 0 → −log σ(1); negatives: logit 0 → −log σ(0) = log 2
      >>> round(float(sigmoid_loss(x, x, logit_scale=1.0, logit_bias=0.0)), 4)
      1.0064

    References:
      Zhai et al., "Sigmoid Loss for Language Image Pre-Training" (SigLIP), ICCV 2023.
      Reference implementation: big_vision ``trainers/proj/image_text/siglip.py``
      (``t = exp(t′)`` with ``t′`` init ``log 10``, bias init −10, loss
      ``−mean(sum(log_sigmoid(z · logits), -1))``).
    """
    a = v.check_array(a, "a", ndim=2)
    b = v.check_array(b, "b", ndim=2)
    if np.shape(b) != np.shape(a):
        raise ValueError(f"b must be [batch, dim] like a {v.shape_str(a)}; got {v.shape_str(b)}")
    v.check_positive(logit_scale, "logit_scale")
    if v.is_concrete(logit_bias):
        bias = np.asarray(logit_bias)
        if bias.ndim != 0 or not np.issubdtype(bias.dtype, np.number) or not np.isfinite(bias):
            raise ValueError(
                f"logit_bias must be a finite scalar; got {logit_bias!r} with shape "
                f"{v.shape_str(bias)}"
            )
    return _sigmoid_loss(jnp.asarray(a), jnp.asarray(b), logit_scale, logit_bias)


@jax.jit
def _sigmoid_loss(a, b, logit_scale, logit_bias):
    a, b = l2_normalize(as_float(a)), l2_normalize(as_float(b))
    dtype = a.dtype
    a_scaled = a * jnp.asarray(logit_scale, dtype)
    logits = a_scaled @ b.T + jnp.asarray(logit_bias, dtype)
    batch = a.shape[0]
    eye = jnp.arange(batch)[:, None] == jnp.arange(batch)[None, :]
    signed = jnp.where(eye, logits, -logits)
    return -jnp.sum(jax.nn.log_sigmoid(signed)) / batch
