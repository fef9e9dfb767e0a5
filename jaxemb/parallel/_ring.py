"""Ring-chunked contrastive losses: the candidate shards rotate around the ``data`` axis.

Each device keeps its own ``[B/n, dim]`` rows of the first tower and sees, one after another,
every shard of the second tower as it is passed around the ring with ``lax.ppermute``. Only a
``[B/n, B/n]`` block of logits is alive at any moment on a device; the global ``[B, B]`` matrix
never exists anywhere. The sigmoid loss is a plain sum over blocks; the softmax keeps a running
maximum and a running sum (an online log-sum-exp). The backward pass recomputes each block
(``jax.checkpoint`` on the ring step), so it needs no ``[B/n, B]`` residuals either.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.losses._common import as_float, l2_normalize
from jaxemb.parallel._mesh import make_mesh

_AXIS = "data"


def _resolve_mesh(mesh, batch: int, name: str):
    """The mesh to ring over: the argument, else the ``jax.set_mesh`` context, else all devices."""
    if mesh is None:
        ctx = jax.sharding.get_abstract_mesh()
        mesh = ctx if ctx is not None and ctx.axis_names else make_mesh()
    if not isinstance(mesh, (jax.sharding.Mesh, jax.sharding.AbstractMesh)):
        raise ValueError(f"mesh must be a jax.sharding.Mesh or None; got {type(mesh).__name__}")
    if _AXIS not in mesh.axis_names:
        raise ValueError(f"mesh must have a 'data' axis to ring over; got axes {mesh.axis_names}")
    n = mesh.shape[_AXIS]
    if batch % n:
        raise ValueError(
            f"{name} batch {batch} must be divisible by the {n} devices of the mesh's 'data' "
            f"axis (each device holds batch/{n} rows)"
        )
    return mesh, n


def _check_pair(x, name_x, y, name_y):
    x = v.check_array(x, name_x, ndim=2)
    y = v.check_array(y, name_y, ndim=2)
    if np.shape(y) != np.shape(x):
        raise ValueError(
            f"{name_y} must be [batch, dim] like {name_x} {v.shape_str(x)}; got {v.shape_str(y)}"
        )


def _rotate(x, n):
    return lax.ppermute(x, _AXIS, perm=[(i, (i + 1) % n) for i in range(n)])


def ring_sigmoid_loss(
    a: ArrayLike,
    b: ArrayLike,
    *,
    logit_scale: ArrayLike,
    logit_bias: ArrayLike,
    mesh=None,
) -> jax.Array:
    """SigLIP's sigmoid loss computed block by block as the ``b`` shards rotate around a ring.

    Same value and gradients as :func:`jaxemb.losses.sigmoid_loss` (``a``, ``b`` L2-normalised,
    ``logits = logit_scale · a bᵀ + logit_bias``, label +1 on the matched pair and −1 elsewhere,
    summed over candidates and averaged over rows), but each device only ever holds a
    ``[B/n, B/n]`` block of logits: at ring step ``k`` device ``i`` scores its rows of ``a``
    against the shard of ``b`` that started on device ``i − k``; the positives are on the
    diagonal of the step-0 block. The per-device sums are ``psum``-reduced over ``data``.

    Args:
      a: first tower, ``[batch, dim]`` float; ``batch`` divisible by the ``data`` axis size.
      b: second tower, ``[batch, dim]``; row ``i`` pairs with ``a[i]``.
      logit_scale: positive scalar ``t`` (already ``exp(t′)``), may be traced.
      logit_bias: scalar bias, may be traced.
      mesh: mesh with a ``data`` axis; ``None`` uses the ``jax.set_mesh`` context mesh, else a
        ``make_mesh()`` over all devices.

    Returns:
      A float32 scalar (replicated): per-row sum over the ``batch`` candidates, mean over rows.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.parallel import ring_sigmoid_loss
      >>> x = jnp.eye(8)
      >>> # positives −log σ(1); 7 negatives per row at logit 0 → 7 log 2
      >>> round(float(ring_sigmoid_loss(x, x, logit_scale=1.0, logit_bias=0.0)), 4)
      5.1653

    References:
      Zhai et al., "Sigmoid Loss for Language Image Pre-Training" (SigLIP), ICCV 2023, §3.3
      (the chunked "ring" implementation). Reference implementation: big_vision
      ``trainers/proj/image_text/siglip.py`` (same loss, labels ``2I − 1``).
    """
    _check_pair(a, "a", b, "b")
    v.check_positive(logit_scale, "logit_scale")
    if v.is_concrete(logit_bias):
        bias = np.asarray(logit_bias)
        if bias.ndim != 0 or not np.issubdtype(bias.dtype, np.number) or not np.isfinite(bias):
            raise ValueError(
                f"logit_bias must be a finite scalar; got {logit_bias!r} with shape "
                f"{v.shape_str(bias)}"
            )
    mesh, n = _resolve_mesh(mesh, np.shape(a)[0], "a")
    fn = _build_sigmoid(mesh, n)
    return fn(jnp.asarray(a), jnp.asarray(b), jnp.asarray(logit_scale), jnp.asarray(logit_bias))


@functools.lru_cache(maxsize=64)
def _build_sigmoid(mesh, n):
    def local(a, b, scale, bias):
        a, b = l2_normalize(as_float(a)), l2_normalize(as_float(b))
        dtype = a.dtype
        a_scaled = a * scale.astype(dtype)
        bias = bias.astype(dtype)
        rows = a.shape[0]
        eye = jnp.arange(rows)[:, None] == jnp.arange(rows)[None, :]
        logits0 = a_scaled @ b.T + bias
        total = -jnp.sum(jax.nn.log_sigmoid(jnp.where(eye, logits0, -logits0)))

        @jax.checkpoint
        def step(carry, _):
            b_cur, acc = carry
            b_cur = _rotate(b_cur, n)
            logits = a_scaled @ b_cur.T + bias
            return (b_cur, acc - jnp.sum(jax.nn.log_sigmoid(-logits))), None

        if n > 1:
            (_, total), _ = lax.scan(step, (b, total), None, length=n - 1)
        return lax.psum(total, _AXIS) / (rows * n)

    return jax.jit(
        jax.shard_map(local, mesh=mesh, in_specs=(P(_AXIS), P(_AXIS), P(), P()), out_specs=P())
    )


def ring_info_nce(
    anchors: ArrayLike,
    positives: ArrayLike,
    *,
    temperature: ArrayLike = 0.05,
    symmetric: bool = False,
    mesh=None,
) -> jax.Array:
    """InfoNCE with in-batch negatives, computed as the positive shards rotate around a ring.

    Same value and gradients as :func:`jaxemb.losses.info_nce` with its defaults (cosine
    similarity, ``directions=("query_to_doc",)``, no hard negatives): the per-anchor loss is
    ``logsumexp_j(s(q_i, p_j)/τ) − s(q_i, p_i)/τ``, averaged over the global batch. Device ``i``
    keeps its anchors and, at ring step ``k``, scores them against the positives that started
    on device ``i − k``, folding the ``[B/n, B/n]`` block into a running maximum and running sum
    (online log-sum-exp); the positive logit comes from the step-0 (diagonal) block. With
    ``symmetric=True`` it is the CLIP loss ``½(CE(rows) + CE(columns))``, i.e.
    ``info_nce(..., symmetric=True)``: a second ring with the roles of the towers swapped.

    Args:
      anchors: queries ``q``, ``[batch, dim]`` float; ``batch`` divisible by the ``data`` axis.
      positives: documents ``p``, ``[batch, dim]``; row ``i`` is the positive of ``anchors[i]``.
      temperature: ``τ > 0`` (may be traced; default 0.05, sentence-transformers' scale 20).
      symmetric: add the column (document → query) direction and average the two.
      mesh: mesh with a ``data`` axis; ``None`` uses the ``jax.set_mesh`` context mesh, else a
        ``make_mesh()`` over all devices.

    Returns:
      A float32 scalar (replicated), the mean over anchors.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.parallel import ring_info_nce
      >>> q = jnp.eye(8)
      >>> # positive logit 1/τ = 2, seven orthogonal negatives at 0: log(e² + 7) − 2
      >>> round(float(ring_info_nce(q, q, temperature=0.5)), 4)
      0.6665

    References:
      van den Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018;
      Milakov & Gimelshein, "Online normalizer calculation for softmax", 2018 (online
      log-sum-exp); Liu et al., "Ring Attention with Blockwise Transformers", 2023 (the ring
      schedule). Reference implementation: sentence-transformers v6
      ``MultipleNegativesRankingLoss`` / ``MultipleNegativesSymmetricRankingLoss`` defaults, as
      in :func:`jaxemb.losses.info_nce`.
    """
    _check_pair(anchors, "anchors", positives, "positives")
    v.check_positive(temperature, "temperature")
    if not isinstance(symmetric, bool):
        raise ValueError(f"symmetric must be a bool; got {symmetric!r}")
    mesh, n = _resolve_mesh(mesh, np.shape(anchors)[0], "anchors")
    fn = _build_info_nce(mesh, n, symmetric)
    return fn(jnp.asarray(anchors), jnp.asarray(positives), jnp.asarray(temperature))


def _ring_lse(q_scaled, docs, n):
    """Row log-sum-exp of ``q_scaled @ all_docsᵀ`` over the ring, and the diagonal logits."""
    logits0 = q_scaled @ docs.T
    positive = jnp.diagonal(logits0)
    m = lax.stop_gradient(jnp.max(logits0, axis=1))
    s = jnp.sum(jnp.exp(logits0 - m[:, None]), axis=1)

    @jax.checkpoint
    def step(carry, _):
        d_cur, m, s = carry
        d_cur = _rotate(d_cur, n)
        logits = q_scaled @ d_cur.T
        # The max only shifts the exponent (log-sum-exp is invariant to it): no gradient.
        m_new = jnp.maximum(m, lax.stop_gradient(jnp.max(logits, axis=1)))
        s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[:, None]), axis=1)
        return (d_cur, m_new, s), None

    if n > 1:
        (_, m, s), _ = lax.scan(step, (docs, m, s), None, length=n - 1)
    return m + jnp.log(s), positive


@functools.lru_cache(maxsize=64)
def _build_info_nce(mesh, n, symmetric):
    def local(q, p, temperature):
        q, p = l2_normalize(as_float(q)), l2_normalize(as_float(p))
        inv_t = 1.0 / temperature.astype(q.dtype)
        lse, positive = _ring_lse(q * inv_t, p, n)
        total = jnp.sum(lse - positive)
        if symmetric:
            lse_cols, positive_cols = _ring_lse(p * inv_t, q, n)
            total = 0.5 * (total + jnp.sum(lse_cols - positive_cols))
        return lax.psum(total, _AXIS) / (q.shape[0] * n)

    return jax.jit(
        jax.shard_map(local, mesh=mesh, in_specs=(P(_AXIS), P(_AXIS), P()), out_specs=P())
    )
