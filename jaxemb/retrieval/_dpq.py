"""Differentiable product quantization: codebooks as NNX parameters, trained with any loss.

:class:`DifferentiablePQ` holds the ``[m, ksub, dsub]`` codebooks of :mod:`._pq` as an
``nnx.Param`` and quantizes a batch in a way gradients flow through, so the codebooks (and the
towers in front of them) can be trained against the compressed index with a retrieval loss
(JPQ, RepCONC, DPQ). Its hard codes are those of :func:`~jaxemb.retrieval.pq_encode` and its
codebooks are searched with :func:`~jaxemb.retrieval.pq_search`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.retrieval._pq import (
    _MAX_NBITS,
    _check_codebooks,
    _check_codes,
    _check_finite,
    _check_m,
    _code_dtype,
    _decode,
    _first_min,
    _nearest,
    _split,
    _sub_distances,
)

_MODES = ("straight_through", "soft")


class DifferentiablePQ(nnx.Module):
    """A product quantizer whose codebooks are trainable ``nnx.Param``.

    A row ``x`` is cut into ``m`` sub-vectors ``x_j`` of width ``dsub``; sub-vector ``j`` is
    quantized with ``codebooks[j]`` (``ksub = 2**nbits`` centroids). With the soft assignment
    ``p_j = softmax(−‖x_j − c_{j,·}‖² / temperature)`` over the centroids:

    - ``mode="straight_through"`` (default): the output is the hard reconstruction
      ``concat_j c_{j, argmin}`` (what the index stores, :func:`pq_encode` then
      :func:`pq_decode`), with the gradient of the soft reconstruction ``Σ_k p_jk c_jk``
      (``stop_gradient(hard) + soft − stop_gradient(soft)``: the value is exactly the hard
      one), reaching the codebooks and ``x``;
    - ``mode="soft"``: the soft reconstruction itself (DPQ-SX), forward and backward.

    :meth:`decode` reconstructs fixed codes differentiably in the codebooks (JPQ: the codes of
    the document index stay, the centroid embeddings are trained with the query tower), and
    :meth:`encode` gives the hard codes to index with.

    Args:
      dim: row width ``d``.
      m: number of sub-spaces; must divide ``dim``.
      nbits: bits per code (``ksub = 2**nbits`` centroids per sub-space), ``1..16``.
      codebooks: initial ``[m, 2**nbits, dim // m]`` codebooks (typically from
        :func:`pq_train`); ``None`` draws them from ``N(0, 1/dim)`` with ``rngs``.
      mode: ``"straight_through"`` or ``"soft"``.
      temperature: ``> 0``, the soft assignment's temperature (in squared-distance units).
      rngs: parameter RNG streams, needed when ``codebooks`` is ``None``.

    Raises:
      ValueError: ``m`` not dividing ``dim``, ``nbits`` outside ``1..16``, codebooks of the wrong
        shape or with NaN / inf, an unknown mode, a temperature that is not ``> 0``, no
        ``rngs`` without codebooks; at call time, rows that are not ``[N, dim]`` floats or hold
        NaN / inf (concrete inputs), codes out of range.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from flax import nnx
      >>> from jaxemb.retrieval import DifferentiablePQ
      >>> codebooks = np.array([[[0.0], [1.0]], [[0.0], [10.0]]], np.float32)
      >>> dpq = DifferentiablePQ(2, m=2, nbits=1, codebooks=codebooks)
      >>> x = jnp.array([[0.9, 2.0]])
      >>> dpq.encode(x).tolist(), dpq(x).tolist()  # hard forward: centroids 1 and 0
      ([[1, 0]], [[1.0, 0.0]])
      >>> grads = nnx.grad(lambda model: jnp.sum(model(x)))(dpq)
      >>> bool(jnp.all(jnp.isfinite(grads["codebooks"][...])))
      True

    References:
      Chen, Li & Sun, "Differentiable Product Quantization for End-to-End Embedding
      Compression" (ICML 2020), DPQ-SX; Zhan et al., "Jointly Optimizing Query Encoder and
      Product Quantization to Improve Retrieval Performance" (CIKM 2021, JPQ); Zhan et al.,
      "Learning Discrete Representations via Constrained Clustering for Effective and
      Efficient Dense Retrieval" (WSDM 2022, RepCONC: hard forward, soft backward).
    """

    def __init__(
        self,
        dim: int,
        *,
        m: int,
        nbits: int = 8,
        codebooks: ArrayLike | None = None,
        mode: str = "straight_through",
        temperature: float = 1.0,
        rngs: nnx.Rngs | None = None,
    ):
        v.check_int(dim, "dim", minimum=1)
        _check_m(m, dim, f"dim={dim}")
        v.check_int(nbits, "nbits", minimum=1, maximum=_MAX_NBITS)
        v.check_choice(mode, "mode", _MODES)
        v.check_positive(temperature, "temperature")
        ksub, dsub = 2**nbits, dim // m
        if codebooks is None:
            if not isinstance(rngs, nnx.Rngs):
                raise ValueError(
                    f"rngs must be an nnx.Rngs to draw the codebooks when none are given; "
                    f"got {rngs!r}"
                )
            init = jax.random.normal(rngs.params(), (m, ksub, dsub), jnp.float32) / np.sqrt(dim)
        else:
            cb = _check_codebooks(codebooks)
            if tuple(cb.shape) != (m, ksub, dsub):
                raise ValueError(
                    f"codebooks must be [m, 2**nbits, dim // m] = [{m}, {ksub}, {dsub}]; "
                    f"got {v.shape_str(cb)}"
                )
            init = jnp.asarray(cb, jnp.float32)
        self.dim, self.m, self.nbits = dim, m, nbits
        self.mode, self.temperature = mode, float(temperature)
        self.codebooks = nnx.Param(init)

    def _rows(self, x: Any) -> jax.Array:
        x = v.check_array(x, "x", ndim=2, kind="float")
        if x.shape[1] != self.dim:
            raise ValueError(f"x must be [N, dim={self.dim}]; got {v.shape_str(x)}")
        _check_finite(x, "x")  # concrete rows only; traced NaN rows give NaN outputs
        return jnp.asarray(x).astype(jnp.promote_types(x.dtype, jnp.float32))

    def encode(self, x: ArrayLike) -> jax.Array:
        """Hard codes ``[N, m]`` of ``x`` ``[N, dim]`` (uint8, or uint16 above 8 bits), equal
        to :func:`pq_encode` with the current codebooks; no gradient."""
        return _hard_codes(self._rows(x), self.codebooks[...])

    def decode(self, codes: ArrayLike) -> jax.Array:
        """Reconstructions ``[N, dim]`` of fixed ``codes`` ``[N, m]``, differentiable in the
        codebooks (each code's gradient reaches its own centroids)."""
        cb = self.codebooks[...]
        codes = _check_codes(codes, cb)
        return _decode_codes(jnp.asarray(codes), cb)

    def soft_assignment(self, x: ArrayLike) -> jax.Array:
        """Assignment probabilities ``[N, m, ksub]``: ``softmax(−‖x_j − c‖² / temperature)``."""
        return _soft_assignment(self._rows(x), self.codebooks[...], self.temperature)

    def __call__(self, x: ArrayLike) -> jax.Array:
        """Quantized rows ``[N, dim]`` of ``x`` ``[N, dim]`` (see the class docstring)."""
        return _quantize(self._rows(x), self.codebooks[...], self.temperature, mode=self.mode)


def _sq_dist(x: jax.Array, cb: jax.Array) -> jax.Array:
    """Squared L2 ``[N, m, ksub]`` between the sub-vectors of ``x`` ``[N, d]`` and their
    codebooks ``[m, ksub, dsub]``, computed as :func:`pq_encode` computes them."""
    return _sub_distances(_split(x, cb.shape[0]), cb)


@jax.jit
def _hard_codes(x, cb):
    x, cb = jax.lax.stop_gradient(x), jax.lax.stop_gradient(cb)
    return _nearest(_split(x, cb.shape[0]), cb).astype(_code_dtype(cb.shape[1]))


@jax.jit
def _decode_codes(codes, cb):
    return _decode(codes, cb)


@jax.jit
def _soft_assignment(x, cb, temperature):
    return jax.nn.softmax(-_sq_dist(x, cb) / temperature, axis=-1)


@functools.partial(jax.jit, static_argnames=("mode",))
def _quantize(x, cb, temperature, *, mode):
    d2 = _sq_dist(x, cb)  # [N, m, ksub]
    p = jax.nn.softmax(-d2 / temperature, axis=-1)
    soft = jnp.einsum("nmk,mkd->nmd", p, cb, precision=jax.lax.Precision.HIGHEST)
    soft = soft.reshape(x.shape)
    if mode == "soft":
        return soft
    # the hard reconstruction exactly, with the soft one's gradient
    ids = _first_min(jax.lax.stop_gradient(d2))
    hard = jax.lax.stop_gradient(_decode(ids, cb))
    return hard + (soft - jax.lax.stop_gradient(soft))
