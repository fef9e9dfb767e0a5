"""Momentum encoder (EMA), a FIFO queue of keys, the MoCo loss and MoCHi hard-negative mixing."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.losses._common import as_float, l2_normalize


def ema_update(target: Any, online: Any, *, momentum: ArrayLike) -> Any:
    """Exponential moving average of parameters: ``θ_k ← m θ_k + (1 − m) θ_q``.

    ``target`` and ``online`` are pytrees with the same structure and leaf shapes, typically
    ``nnx.state(key_model, nnx.Param)`` and ``nnx.state(query_model, nnx.Param)``. Floating
    leaves are averaged in their own dtype; non-floating leaves (integer counters, PRNG keys)
    keep the target's value. Pure: returns the new target state, apply it with ``nnx.update``.

    Args:
      target: the momentum (key) encoder's state.
      online: the query encoder's state, same structure as ``target``.
      momentum: ``m`` in ``[0, 1]`` (MoCo: 0.999); ``1`` freezes the target, ``0`` copies the
        online state. May be traced (a momentum schedule); only concrete values are checked.

    Returns:
      The updated target state, a pytree like ``target``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb.parallel import ema_update
      >>> key_enc = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
      >>> query_enc = nnx.Linear(2, 1, rngs=nnx.Rngs(1))
      >>> new = ema_update(nnx.state(key_enc, nnx.Param), nnx.state(query_enc, nnx.Param),
      ...                  momentum=0.9)
      >>> want = 0.9 * key_enc.kernel[...] + 0.1 * query_enc.kernel[...]
      >>> bool(jnp.allclose(new["kernel"][...], want))
      True
      >>> nnx.update(key_enc, new)  # the key encoder now holds the averaged parameters

    References:
      He et al., "Momentum Contrast for Unsupervised Visual Representation Learning" (MoCo),
      CVPR 2020, Eq. (2). Reference implementation: facebookresearch/moco
      ``MoCo._momentum_update_key_encoder`` (``param_k = m·param_k + (1 − m)·param_q``).
    """
    if v.is_concrete(momentum):
        m = np.asarray(momentum)
        if m.ndim != 0 or not np.issubdtype(m.dtype, np.number) or not 0.0 <= float(m) <= 1.0:
            raise ValueError(f"momentum must be a scalar in [0, 1]; got {momentum!r}")
    t_struct, o_struct = jax.tree.structure(target), jax.tree.structure(online)
    if t_struct != o_struct:
        raise ValueError(
            "online must have the same pytree structure as target (split both with the same "
            f"filter, e.g. nnx.state(model, nnx.Param)); got target {t_struct} and online "
            f"{o_struct}"
        )
    paths = jax.tree_util.tree_flatten_with_path(target)[0]
    for (path, t), o in zip(paths, jax.tree.leaves(online), strict=True):
        if np.shape(t) != np.shape(o):
            raise ValueError(
                f"online leaf {jax.tree_util.keystr(path)} must have the target's shape "
                f"{v.shape_str(t)}; got {v.shape_str(o)}"
            )

    return _ema(target, online, momentum)


@jax.jit
def _ema(target, online, momentum):
    def average(t, o):
        if not jnp.issubdtype(t.dtype, jnp.floating):
            return t
        m = jnp.asarray(momentum, jnp.promote_types(t.dtype, jnp.float32))
        return (m * t + (1 - m) * o).astype(t.dtype)

    return jax.tree.map(average, target, online)


class KeyQueue(NamedTuple):
    """A FIFO queue of key embeddings (MoCo's dictionary) as a pure pytree state.

    ``keys[size, dim]`` is a ring buffer; ``ptr`` is the row the next key is written to. The
    oldest keys are the ones overwritten next. Create it with :meth:`KeyQueue.init` and advance
    it with :meth:`KeyQueue.update` (both pure, jit-compatible; keep the queue replicated).

    Attributes:
      keys: ``[size, dim]`` stored keys (as given: :func:`moco_info_nce` normalises them).
      ptr: int32 scalar, the next write position.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.parallel import KeyQueue
      >>> queue = KeyQueue.init(4, 2)
      >>> queue = queue.update(jnp.ones((3, 2)))       # rows 0..2
      >>> queue = queue.update(2 * jnp.ones((3, 2)))   # rows 3, 0, 1 (oldest dropped)
      >>> queue.keys[:, 0].tolist(), int(queue.ptr)
      ([2.0, 2.0, 1.0, 2.0], 2)

    References:
      He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020,
      §3.2 (dictionary as a queue). Reference implementation: facebookresearch/moco
      ``MoCo._dequeue_and_enqueue``, which needs ``K % batch_size == 0``; this ring buffer accepts
      any batch up to ``size`` (with ``size % batch == 0`` it writes the same rows as MoCo).
    """

    keys: jax.Array
    ptr: jax.Array

    @classmethod
    def init(
        cls,
        size: int,
        dim: int,
        *,
        key: jax.Array | None = None,
        dtype: Any = jnp.float32,
    ) -> KeyQueue:
        """An initial queue: random unit vectors when ``key`` is given (as MoCo), else zeros.

        Args:
          size: number of stored keys ``K`` (at least the global batch fed to ``update``).
          dim: key width.
          key: optional PRNG key; MoCo starts from random normalised vectors. Zero rows
            (``key=None``) act as negatives with similarity 0 until they are overwritten.
          dtype: storage dtype.

        Returns:
          A ``KeyQueue`` with ``keys [size, dim]`` and ``ptr = 0``.
        """
        v.check_int(size, "size", minimum=1)
        v.check_int(dim, "dim", minimum=1)
        if key is None:
            keys = jnp.zeros((size, dim), dtype)
        else:
            keys = l2_normalize(jax.random.normal(key, (size, dim))).astype(dtype)
        return cls(keys=keys, ptr=jnp.zeros((), jnp.int32))

    def update(self, keys: ArrayLike) -> KeyQueue:
        """Enqueues a global batch of keys ``[batch, dim]``, dropping the ``batch`` oldest.

        No gradient flows into the queue (the keys are wrapped in ``stop_gradient``).

        Args:
          keys: ``[batch, dim]`` keys of the whole global batch, ``batch <= size``.

        Returns:
          The new ``KeyQueue``; ``ptr`` advances by ``batch`` modulo ``size``.
        """
        keys = v.check_array(keys, "keys", ndim=2)
        size, dim = self.keys.shape
        batch = np.shape(keys)[0]
        if np.shape(keys)[1] != dim:
            raise ValueError(f"keys must be [batch, {dim}] like the queue; got {v.shape_str(keys)}")
        if batch > size:
            raise ValueError(
                f"queue size {size} must be at least the global batch of keys; got keys "
                f"{v.shape_str(keys)} (use a queue of at least {batch} rows)"
            )
        keys = jax.lax.stop_gradient(jnp.asarray(keys)).astype(self.keys.dtype)
        rows = (self.ptr + jnp.arange(batch, dtype=jnp.int32)) % size
        new = self.keys.at[rows].set(keys, unique_indices=True)
        return KeyQueue(keys=new, ptr=((self.ptr + batch) % size).astype(jnp.int32))


def _queue_array(queue: Any, dim: int) -> Any:
    keys = queue.keys if isinstance(queue, KeyQueue) else queue
    keys = v.check_array(keys, "queue", ndim=2)
    if np.shape(keys)[1] != dim:
        raise ValueError(f"queue must be [size, {dim}] (the width of q); got {v.shape_str(keys)}")
    return keys


def moco_info_nce(
    q: ArrayLike,
    k: ArrayLike,
    queue: KeyQueue | ArrayLike,
    *,
    temperature: ArrayLike = 0.07,
    extra_negatives: ArrayLike | None = None,
) -> jax.Array:
    """MoCo's InfoNCE: each query against its key (positive) and the queue (negatives).

    With ``q``, ``k``, the queue and the extra negatives L2-normalised, the logits of query
    ``i`` are ``[q_i·k_i, q_i·queue_1, …, q_i·queue_K, q_i·e_i1, …]/τ`` and the loss is the
    cross-entropy with target 0, averaged over the batch. The keys, the queue and the extra
    negatives get no gradient (they come from the momentum encoder).

    Args:
      q: queries from the online encoder, ``[batch, dim]`` float.
      k: keys from the momentum encoder, ``[batch, dim]``; ``k[i]`` is the positive of ``q[i]``.
      queue: a :class:`KeyQueue` or its ``[size, dim]`` key array (shared negatives).
      temperature: ``τ > 0`` (MoCo v1: 0.07, MoCo v2: 0.2); may be traced.
      extra_negatives: optional per-query negatives ``[batch, n_extra, dim]``, e.g. from
        :func:`mochi_negatives`.

    Returns:
      A float32 scalar, the mean over queries.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.parallel import moco_info_nce
      >>> q = jnp.eye(2, 3)
      >>> queue = jnp.array([[0.0, 0.0, 1.0]])  # orthogonal to both queries
      >>> # logits [1/τ, 0] with τ = 0.5 → log(e² + 1) − 2
      >>> round(float(moco_info_nce(q, q, queue, temperature=0.5)), 4)
      0.1269

    References:
      He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020
      (Algorithm 1); Chen et al., "Improved Baselines with Momentum Contrastive Learning" (MoCo
      v2), 2020. Reference implementation: facebookresearch/moco ``MoCo.forward``
      (``l_pos = einsum('nc,nc->n')``, ``l_neg = einsum('nc,ck->nk')`` against the queue,
      ``logits /= T`` with ``T = 0.07``, labels zero).
    """
    q = v.check_array(q, "q", ndim=2)
    k = v.check_array(k, "k", ndim=2)
    if np.shape(k) != np.shape(q):
        raise ValueError(f"k must be [batch, dim] like q {v.shape_str(q)}; got {v.shape_str(k)}")
    batch, dim = np.shape(q)
    keys = _queue_array(queue, dim)
    v.check_positive(temperature, "temperature")
    if extra_negatives is not None:
        extra_negatives = v.check_array(
            extra_negatives, "extra_negatives", ndim=3, allow_empty=True
        )
        if np.shape(extra_negatives)[0] != batch or np.shape(extra_negatives)[2] != dim:
            raise ValueError(
                f"extra_negatives must be [batch, n_extra, dim] = [{batch}, E, {dim}] to match "
                f"q {v.shape_str(q)}; got {v.shape_str(extra_negatives)}"
            )
        extra_negatives = jnp.asarray(extra_negatives)
    return _moco_info_nce(
        jnp.asarray(q), jnp.asarray(k), jnp.asarray(keys), temperature, extra_negatives
    )


@jax.jit
def _moco_info_nce(q, k, keys, temperature, extra):
    q = l2_normalize(as_float(q))
    stop = jax.lax.stop_gradient
    k = l2_normalize(stop(as_float(k)))
    keys = l2_normalize(stop(as_float(keys)))
    inv_t = 1.0 / jnp.asarray(temperature, q.dtype)
    q_scaled = q * inv_t
    parts = [jnp.sum(q_scaled * k, axis=-1, keepdims=True), q_scaled @ keys.T]
    if extra is not None and extra.shape[1] > 0:
        extra = l2_normalize(stop(as_float(extra)))
        parts.append(jnp.einsum("bd,bed->be", q_scaled, extra))
    logits = jnp.concatenate(parts, axis=1)
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[:, 0])


def mochi_negatives(
    q: ArrayLike,
    queue: KeyQueue | ArrayLike,
    key: jax.Array,
    *,
    n_hard: int,
    n_mix: int,
    n_mix_query: int,
) -> jax.Array:
    """MoCHi: synthetic hard negatives mixed from each query's hardest queue negatives.

    For each query ``q`` (normalised) the ``n_hard`` queue keys most similar to it form its
    hard set ``Q̃``. Then ``n_mix`` negatives ``normalize(α n_i + (1 − α) n_j)`` with
    ``n_i, n_j`` drawn uniformly from ``Q̃`` and ``α ~ U(0, 1)``, and ``n_mix_query`` negatives
    ``normalize(β q + (1 − β) n_j)`` with ``n_j`` from ``Q̃`` and ``β ~ U(0, 0.5)`` (so the
    query's share stays below the negative's). Draws are independent per query. No gradient
    flows through the result. Append it to the denominator with
    ``moco_info_nce(..., extra_negatives=...)``.

    Args:
      q: queries ``[batch, dim]`` float.
      queue: a :class:`KeyQueue` or its ``[size, dim]`` keys.
      key: PRNG key for the pair indices and mixing coefficients.
      n_hard: ``N``, hardest negatives to mix from, ``1 <= N <= size``.
      n_mix: ``s``, negative–negative mixes (``>= 0``).
      n_mix_query: ``s′``, query–negative mixes (``>= 0``).

    Returns:
      ``[batch, n_mix + n_mix_query, dim]`` unit vectors (float32 or wider), the ``n_mix``
      negative mixes first.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxemb.parallel import mochi_negatives
      >>> q = jnp.array([[1.0, 0.0]])
      >>> queue = jnp.array([[0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
      >>> h = mochi_negatives(q, queue, jax.random.key(0), n_hard=1, n_mix=2, n_mix_query=0)
      >>> h.shape, [round(x, 4) for x in h[0, 0].tolist()]  # one hard negative: mixes are it
      ((1, 2, 2), [0.6, 0.8])

    References:
      Kalantidis et al., "Hard Negative Mixing for Contrastive Learning" (MoCHi), NeurIPS 2020,
      §4 (Eq. 3 for ``h_k``, Eq. 4 for ``h′_k`` with ``β ∈ (0, 0.5)``); the paper's setting
      MoCHi(N=1024, s=1024, s′=512) on MoCo v2.
    """
    q = v.check_array(q, "q", ndim=2)
    batch, dim = np.shape(q)
    keys = _queue_array(queue, dim)
    size = np.shape(keys)[0]
    v.check_int(n_hard, "n_hard", minimum=1, maximum=size)
    v.check_int(n_mix, "n_mix", minimum=0)
    v.check_int(n_mix_query, "n_mix_query", minimum=0)
    typed = hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    raw = hasattr(key, "dtype") and key.dtype == jnp.uint32 and tuple(key.shape) == (2,)
    if not (typed and key.shape == ()) and not raw:
        raise ValueError(
            "key must be a single PRNG key (jax.random.key(seed)); got "
            f"{type(key).__name__} with shape {v.shape_str(key)}"
        )
    if n_mix + n_mix_query == 0:
        return jnp.zeros((batch, 0, dim), jnp.promote_types(jnp.result_type(q), jnp.float32))
    return _mochi(jnp.asarray(q), jnp.asarray(keys), key, n_hard, n_mix, n_mix_query)


def _mochi_impl(q, keys, key, n_hard, n_mix, n_mix_query):
    stop = jax.lax.stop_gradient
    q = l2_normalize(stop(as_float(q)))
    keys = l2_normalize(stop(as_float(keys)))
    batch = q.shape[0]
    _, hard_idx = jax.lax.top_k(q @ keys.T, n_hard)  # [B, N]
    hard = keys[hard_idx]  # [B, N, D]
    # One draw of uniforms serves every index and coefficient (a single threefry call).
    u = jax.random.uniform(key, (batch, 3 * n_mix + 2 * n_mix_query), q.dtype)
    u_mix, u_query = u[:, : 3 * n_mix], u[:, 3 * n_mix :]

    def pick(v):  # uniform index into the hard set from a U(0, 1) draw
        idx = jnp.minimum(jnp.floor(v * n_hard).astype(jnp.int32), n_hard - 1)
        return jnp.take_along_axis(hard, idx[..., None], axis=1)

    out = []
    if n_mix:
        n_i, n_j = pick(u_mix[:, :n_mix]), pick(u_mix[:, n_mix : 2 * n_mix])
        alpha = u_mix[:, 2 * n_mix :, None]  # α ~ U(0, 1)
        out.append(l2_normalize(alpha * n_i + (1 - alpha) * n_j))
    if n_mix_query:
        n_j = pick(u_query[:, :n_mix_query])
        beta = 0.5 * u_query[:, n_mix_query:, None]  # β ~ U(0, 0.5)
        out.append(l2_normalize(beta * q[:, None, :] + (1 - beta) * n_j))
    return stop(jnp.concatenate(out, axis=1))


_mochi = jax.jit(_mochi_impl, static_argnums=(3, 4, 5))
