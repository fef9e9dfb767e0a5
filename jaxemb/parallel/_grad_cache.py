"""GradCache: full-batch contrastive gradients at the memory cost of one chunk."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxemb import _validate as v
from jaxemb.losses import info_nce
from jaxemb.parallel._blocked import blocked_info_nce
from jaxemb.parallel._mesh import _check_mesh

EmbedFn = Callable[[Any, Any, "jax.Array | None"], jax.Array]

# info_nce keywords the blocked loss supports (other options keep the full-logits loss).
_BLOCKABLE = frozenset({"temperature", "similarity", "symmetric"})


def grad_cache(
    embed_fn: EmbedFn | Sequence[EmbedFn],
    loss_fn: Callable[..., jax.Array],
    *,
    chunk_size: int,
    mesh: Mesh | None = None,
) -> Callable[..., tuple[jax.Array, Any]]:
    """Builds a GradCache step ``(params, batch, key, *loss_args) -> (loss, grads)``.

    The returned ``step`` computes the loss of the full (global) batch and its gradient with
    respect to ``params`` while holding the encoder's activations for only ``chunk_size`` rows
    at a time (Gao et al. 2021):

    1. every tower embeds its inputs chunk by chunk (``lax.map``, no gradient, no residuals);
    2. the loss and ``u = ∂L/∂r`` are computed on the cached embeddings ``r`` of the whole batch;
    3. every chunk is embedded again under ``jax.vjp`` and ``Σ_c u_cᵀ ∂r_c/∂θ`` is accumulated
       with ``lax.scan``.

    **Towers.** ``embed_fn`` is one function (one tower; ``batch`` is that tower's inputs) or a
    tuple of functions, one per tower (``batch`` is a tuple of the same length, e.g.
    ``(queries, docs)``). Every tower function receives the whole ``params`` pytree, so the same
    encoder for both towers is ``(f, f)`` and two encoders are two functions reading their own
    part of ``params`` (e.g. ``params = (query_params, doc_params)``); gradients of all towers
    are summed into one pytree shaped like ``params``. ``loss_fn`` is called as
    ``loss_fn(*tower_embeddings, *loss_args, **loss_kwargs)``; ``loss_args`` / ``loss_kwargs``
    are arrays that receive no gradient (guide embeddings for ``gist_info_nce``, labels). Put
    hyperparameters in ``loss_fn`` with ``functools.partial``.

    **Randomness.** Chunk ``c`` of tower ``t`` (``c`` counts chunks over the tower's *global*
    batch) is embedded with ``fold_in(fold_in(key, t), c)`` in both passes, so dropout masks are
    replayed exactly and the gradient equals ``jax.grad`` of the full-batch loss whose embedding
    uses the same per-chunk keys. With ``key=None`` the tower functions receive ``None``.

    **Loss memory.** When ``loss_fn`` is :func:`jaxemb.losses.info_nce` (or a
    ``functools.partial`` of it setting only ``temperature`` / ``similarity`` / ``symmetric``),
    the step uses :func:`blocked_info_nce` with ``block_size=chunk_size`` (same value and
    gradients), so no ``[batch, batch]`` logits exist. Pass ``blocked_info_nce`` yourself to
    choose another block size, or wrap it (``matryoshka(partial(blocked_info_nce, ...),
    dims)``). Any other loss is evaluated as written on the cached embeddings (its own
    memory, e.g. the ``[batch, batch]`` logits of ``gist_info_nce``).

    **Sharding.** With ``mesh`` (which must have a ``data`` axis) the batch leaves are sharded
    over ``data``; passes 1 and 3 run under ``jax.shard_map``, each device chunking its own rows
    (params replicated, gradients ``psum``-med), and the loss is the global-view loss on the
    all-device embeddings (negatives stay global). The result equals the single-device one.

    ``chunk_size`` must divide every tower's per-device batch (``batch / mesh.shape["data"]``);
    otherwise ``step`` raises ``ValueError`` before tracing (no padding is done, so the result
    is always exactly the full-batch gradient).

    Args:
      embed_fn: ``embed_fn(params, inputs, key) -> [rows, ...]`` float embeddings (rank ≥ 2,
        leading axis the rows of ``inputs``), or a tuple of such functions, one per tower.
        ``params`` holds only floating-point leaves (for NNX, ``nnx.split(model, nnx.Param,
        ...)`` and close over the rest); ``inputs`` is a pytree of ``[rows, ...]`` arrays.
      loss_fn: ``loss_fn(*embeddings, *loss_args, **loss_kwargs) -> scalar``.
      chunk_size: rows embedded at once (≥ 1).
      mesh: optional mesh with a ``data`` axis for data-parallel execution.

    Returns:
      ``step(params, batch, key, *loss_args, **loss_kwargs) -> (loss, grads)``: ``batch`` a
      pytree of ``[rows, ...]`` arrays (one tower) or a tuple of them (one per tower); ``key``
      a PRNG key or ``None``; ``loss`` a scalar, ``grads`` shaped like ``params``. Inputs are
      validated in Python before tracing; the computation is jitted.

    Examples:
      >>> import functools
      >>> import jax, jax.numpy as jnp
      >>> from jaxemb.losses import info_nce
      >>> from jaxemb.parallel import grad_cache
      >>> def embed(w, x, key):
      ...     return jnp.tanh(x @ w)
      >>> loss = functools.partial(info_nce, temperature=0.1)
      >>> step = grad_cache((embed, embed), loss, chunk_size=4)
      >>> w = jax.random.normal(jax.random.key(0), (5, 3))
      >>> q, d = jax.random.normal(jax.random.key(1), (2, 16, 5))
      >>> value, grads = step(w, (q, d), None)
      >>> ref_value, ref_grads = jax.value_and_grad(
      ...     lambda w: loss(embed(w, q, None), embed(w, d, None)))(w)
      >>> bool(jnp.allclose(grads, ref_grads, rtol=1e-5, atol=1e-6))
      True

    References:
      Gao, Zhang, Han, Callan, "Scaling Deep Contrastive Learning Batch Size under Memory
      Limited Setup", RepL4NLP 2021 (``luyug/GradCache``); sentence-transformers v6
      ``CachedMultipleNegativesRankingLoss`` / ``CachedGISTEmbedLoss`` (mini-batch embedding
      with RNG-state replay, loss over cached embeddings in mini-batches).
    """
    multi = isinstance(embed_fn, (tuple, list))
    fns = tuple(embed_fn) if multi else (embed_fn,)
    if not fns:
        raise ValueError("embed_fn must be a function or a non-empty tuple of functions; got ()")
    for i, f in enumerate(fns):
        if not callable(f):
            where = f"embed_fn[{i}]" if multi else "embed_fn"
            raise ValueError(f"{where} must be callable; got {type(f).__name__}")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable; got {type(loss_fn).__name__}")
    v.check_int(chunk_size, "chunk_size", minimum=1)
    if mesh is not None:
        _check_mesh(mesh)
    loss_fn = _maybe_blocked(loss_fn, chunk_size)
    n_data = 1 if mesh is None else mesh.shape["data"]
    validated: set = set()

    def run(params, towers, key, loss_args, loss_kwargs):
        embs = tuple(
            _embed_all(f, params, x, _tower_key(key, t), chunk_size, mesh)
            for t, (f, x) in enumerate(zip(fns, towers))
        )

        def loss_of(e):
            return loss_fn(*e, *loss_args, **loss_kwargs)

        loss, cot = jax.value_and_grad(loss_of)(embs)
        grads = None
        for t, (f, x) in enumerate(zip(fns, towers)):
            g = _vjp_all(f, params, x, _tower_key(key, t), cot[t], chunk_size, mesh)
            grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
        return loss, grads

    run_jit = jax.jit(run)

    def step(params, batch, key, *loss_args, **loss_kwargs):
        towers = _towers(batch, multi, len(fns))
        signature = _signature(params, towers, key, loss_args, loss_kwargs)
        if signature not in validated:
            _validate(fns, loss_fn, params, towers, key, loss_args, loss_kwargs, chunk_size, n_data)
            validated.add(signature)
        return run_jit(params, towers, key, tuple(loss_args), dict(loss_kwargs))

    return step


def _maybe_blocked(loss_fn, chunk_size):
    if loss_fn is info_nce:
        return functools.partial(blocked_info_nce, block_size=chunk_size)
    if (
        isinstance(loss_fn, functools.partial)
        and loss_fn.func is info_nce
        and not loss_fn.args
        and set(loss_fn.keywords) <= _BLOCKABLE
    ):
        return functools.partial(blocked_info_nce, block_size=chunk_size, **loss_fn.keywords)
    return loss_fn


def _tower_key(key, t):
    return None if key is None else jax.random.fold_in(key, t)


def _chunked(x, n_chunks):
    return jax.tree.map(lambda a: a.reshape(n_chunks, a.shape[0] // n_chunks, *a.shape[1:]), x)


def _rows(x) -> int:
    return jax.tree.leaves(x)[0].shape[0]


def _local(fn, mesh, in_specs, out_specs):
    """Runs ``fn(chunk_offset, *args)`` per device under shard_map, or once without a mesh."""
    if mesh is None:
        return lambda *args: fn(0, *args)

    def body(*args):
        return fn(jax.lax.axis_index("data"), *args)

    return jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=out_specs)


def _embed_all(f, params, x, key, chunk_size, mesh):
    def local(device, params, x, key):
        n_chunks = _rows(x) // chunk_size
        params = jax.lax.stop_gradient(params)

        def one(args):
            xc, c = args
            k = None if key is None else jax.random.fold_in(key, device * n_chunks + c)
            return f(params, xc, k)

        out = jax.lax.map(one, (_chunked(x, n_chunks), jnp.arange(n_chunks)))
        return out.reshape(-1, *out.shape[2:])

    return _local(local, mesh, (P(), P("data"), P()), P("data"))(params, x, key)


def _vjp_all(f, params, x, key, cot, chunk_size, mesh):
    def local(device, params, x, key, cot):
        n_chunks = _rows(x) // chunk_size
        if mesh is not None:
            # Per-device cotangents stay local in the scan; one psum at the end.
            params = jax.lax.pcast(params, "data", to="varying")

        def body(acc, args):
            xc, uc, c = args
            k = None if key is None else jax.random.fold_in(key, device * n_chunks + c)
            _, pullback = jax.vjp(lambda p: f(p, xc, k), params)
            (g,) = pullback(uc.astype(cot.dtype))
            return jax.tree.map(jnp.add, acc, g), None

        xs = (_chunked(x, n_chunks), _chunked(cot, n_chunks), jnp.arange(n_chunks))
        acc, _ = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, params), xs)
        return acc if mesh is None else jax.lax.psum(acc, "data")

    return _local(local, mesh, (P(), P("data"), P(), P("data")), P())(params, x, key, cot)


def _towers(batch, multi, n_towers):
    if not multi:
        return (batch,)
    if not isinstance(batch, (tuple, list)) or len(batch) != n_towers:
        got = f"a {type(batch).__name__}" + (
            f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
        )
        raise ValueError(
            f"batch must be a tuple of {n_towers} tower inputs (one per embed_fn); got {got}"
        )
    return tuple(batch)


def _struct(x):
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype) if hasattr(x, "dtype") else x


def _signature(*trees):
    leaves, treedef = jax.tree.flatten(trees)
    return treedef, tuple(
        (np.shape(x), str(x.dtype)) if hasattr(x, "dtype") else repr(x) for x in leaves
    )


def _validate(fns, loss_fn, params, towers, key, loss_args, loss_kwargs, chunk_size, n_data):
    if key is not None:
        is_typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key) if hasattr(key, "dtype") else 0
        if not is_typed and not (
            hasattr(key, "dtype") and key.dtype == jnp.uint32 and np.shape(key) == (2,)
        ):
            raise ValueError(
                f"key must be a PRNG key (jax.random.key) or None; got {type(key).__name__}"
                + (f" {key.dtype}{v.shape_str(key)}" if hasattr(key, "dtype") else "")
            )
        if is_typed and np.shape(key) != ():
            raise ValueError(f"key must be a single PRNG key; got shape {v.shape_str(key)}")
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if not hasattr(leaf, "dtype") or not jnp.issubdtype(leaf.dtype, jnp.floating):
            what = f"{leaf.dtype}{v.shape_str(leaf)}" if hasattr(leaf, "dtype") else repr(leaf)
            raise ValueError(
                f"params must be a pytree of floating-point arrays (the differentiated "
                f"parameters, e.g. nnx.split(model, nnx.Param, ...)); got {what} at "
                f"params{jax.tree_util.keystr(path)}"
            )
    out_structs = []
    for t, (f, x) in enumerate(zip(fns, towers)):
        name = f"batch[{t}]" if len(fns) > 1 else "batch"
        leaves = jax.tree.leaves(x)
        if not leaves:
            raise ValueError(f"{name} must hold at least one array; got {x!r}")
        rows = None
        for leaf in leaves:
            if not hasattr(leaf, "shape") or len(np.shape(leaf)) == 0:
                raise ValueError(
                    f"{name} leaves must be arrays with a leading batch axis; got "
                    f"{type(leaf).__name__} {v.shape_str(leaf) if hasattr(leaf, 'shape') else ''}"
                )
            if rows is None:
                rows = np.shape(leaf)[0]
            elif np.shape(leaf)[0] != rows:
                raise ValueError(
                    f"{name} leaves must share the batch size {rows}; got a leaf of shape "
                    f"{v.shape_str(leaf)}"
                )
        if rows == 0:
            raise ValueError(f"{name} must not be empty; got 0 rows")
        if rows % n_data:
            raise ValueError(
                f"{name} has {rows} rows, not divisible by the {n_data} devices of the mesh's "
                f"'data' axis"
            )
        local = rows // n_data
        if local % chunk_size:
            per = f" ({rows} rows / {n_data} devices)" if n_data > 1 else ""
            raise ValueError(
                f"chunk_size must divide the per-device batch of {name}, {local} rows{per}; got "
                f"chunk_size={chunk_size} (GradCache does not pad: choose a divisor of {local})"
            )
        chunk = jax.tree.map(lambda a: jax.ShapeDtypeStruct((chunk_size, *a.shape[1:]), a.dtype), x)
        k = None if key is None else jax.random.fold_in(key, 0)
        p_struct = jax.tree.map(_struct, params)
        try:
            out = jax.eval_shape(lambda p, xc, kk, f=f: f(p, xc, kk), p_struct, chunk, k)
        except ValueError as e:
            raise ValueError(
                f"embed_fn for {name} failed on a [{chunk_size}, ...] chunk: {e}"
            ) from None
        fname = f"embed_fn[{t}]" if len(fns) > 1 else "embed_fn"
        if not isinstance(out, jax.ShapeDtypeStruct):
            raise ValueError(f"{fname} must return one array; got {jax.tree.structure(out)}")
        if len(out.shape) < 2 or out.shape[0] != chunk_size:
            raise ValueError(
                f"{fname} must return [{chunk_size}, dim] embeddings for a {chunk_size}-row "
                f"chunk; got {v.shape_str(out)}"
            )
        if not jnp.issubdtype(out.dtype, jnp.floating):
            raise ValueError(f"{fname} must return floating-point embeddings; got {out.dtype}")
        out_structs.append(jax.ShapeDtypeStruct((rows, *out.shape[1:]), out.dtype))
    for path, leaf in jax.tree_util.tree_leaves_with_path((tuple(loss_args), dict(loss_kwargs))):
        if not hasattr(leaf, "dtype") and not isinstance(leaf, (int, float, np.number)):
            name = (
                "loss_args" + jax.tree_util.keystr(path[1:])
                if path[0].idx == 0
                else ("loss_kwargs" + jax.tree_util.keystr(path[1:]))
            )
            raise ValueError(
                f"{name} must be an array or a number (it is traced); got "
                f"{type(leaf).__name__} {leaf!r}. Put hyperparameters in loss_fn with "
                "functools.partial"
            )
    args = jax.tree.map(_struct, (tuple(loss_args), dict(loss_kwargs)))
    try:
        value = jax.eval_shape(lambda e, a: loss_fn(*e, *a[0], **a[1]), tuple(out_structs), args)
    except ValueError as e:
        shapes = ", ".join(v.shape_str(s) for s in out_structs)
        raise ValueError(f"loss_fn rejected the tower embeddings ({shapes}): {e}") from None
    if not isinstance(value, jax.ShapeDtypeStruct) or value.shape != ():
        raise ValueError(f"loss_fn must return a scalar; got {value}")
