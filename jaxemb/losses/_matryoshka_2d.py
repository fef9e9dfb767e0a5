"""2D-Matryoshka and adaptive-layer wrappers: a loss over (layer, dimension) prefixes."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxemb import _validate as v
from jaxemb.losses._common import as_float
from jaxemb.losses._matryoshka import check_dims_and_weights, matryoshka


def matryoshka_2d(
    loss_fn: Callable[..., jax.Array],
    dims: Sequence[int],
    *,
    n_layers_per_step: int | None = 1,
    n_dims_per_step: int | None = 1,
    last_layer_weight: float = 1.0,
    prior_layers_weight: float = 1.0,
    kl_div_weight: float = 1.0,
    kl_temperature: float = 0.3,
    weights: Sequence[float] | None = None,
    argnums: Sequence[int] | None = None,
) -> Callable[..., jax.Array]:
    """Wraps ``loss_fn`` to train every (layer, dimension) prefix: 2D Matryoshka embeddings.

    The returned function takes ``loss_fn``'s positional arguments, except that every embedding
    argument carries a leading layer axis: ``[L, batch, dim]`` (or ``[L, batch, H, dim]`` for
    hard negatives), where ``h[l]`` is the pooled output of transformer layer ``l + 1`` and
    ``h[L − 1]`` the final layer (leave out the input-embedding layer, as sentence-transformers
    does). It returns, as sentence-transformers' ``Matryoshka2dLoss`` (= ``AdaptiveLayerLoss``
    around ``MatryoshkaLoss``) computes it::

        last_layer_weight · M(h[L−1])
        + Σ_{l ∈ S} prior_layers_weight · M(h[l]) / (1 + l) / |S|
        + Σ_{l ∈ S} kl_div_weight · T · KL(softmax(h[L−1]/T) ‖ softmax(h[l]/T))

    - ``M`` is :func:`jaxemb.losses.matryoshka` of ``loss_fn`` over ``dims`` / ``weights``
      (truncate, re-normalise, weighted sum); with ``n_dims_per_step`` it evaluates a random
      subset of that many dims, drawn independently for every call of ``M`` (the last layer
      included), as ST's inner ``MatryoshkaLoss`` does.
    - ``S`` holds the prior layers ``0 … L−2``: all of them when ``n_layers_per_step`` is -1 or
      ``>= L − 1``, otherwise ``n_layers_per_step`` of them drawn without replacement.
      Shallower layers weigh more (``1/(1 + l)``); the mean over ``|S|`` does not apply to the
      KL terms (ST adds one KL per sampled layer).
    - The KL term compares the *full-width* embeddings (not truncated, not re-normalised)
      feature-wise: each row's softmax over its ``dim`` features at temperature ``T =
      kl_temperature``; ``KL(p_final ‖ p_layer)`` is summed over features and rows of every
      embedding argument and divided by the total number of rows (``reduction="batchmean"`` on
      ST's concatenated inputs), then multiplied by ``T`` (not ``T²``). As in ST the final
      layer's distribution is not detached. ``kl_temperature = 0`` turns the term off.

    Non-embedding arguments (labels, scores) and keyword arguments pass through unchanged.
    The random draws need ``key=`` (a ``jax.random`` key) whenever layers or dims are sampled;
    the same key gives the same draw, inside or outside ``jax.jit``.

    Deviations from sentence-transformers, forced by the functional form: the caller supplies
    the per-layer pooled embeddings instead of the wrapper re-running the model's modules on
    cached hidden states; randomness comes from ``key`` (``jax.random``), not Python's
    ``random``, so the draws differ for the same seed; ``n_dims_per_step`` must lie in
    ``1 … len(dims)`` or be -1 (ST treats any value outside ``1 … len(dims) − 1`` as "all").

    Args:
      loss_fn: a loss ``loss_fn(*embeddings, **kwargs) -> scalar`` on ``[batch, dim]`` inputs.
      dims: the Matryoshka prefix sizes, e.g. ``(768, 512, 256, 128, 64)``; each ≤ the
        embedding width (checked at call time).
      n_layers_per_step: prior layers per call; -1 or None = all (2DMSE and ST default 1).
      n_dims_per_step: dims per Matryoshka evaluation; -1 or None = all (ST
        ``Matryoshka2dLoss`` default 1).
      last_layer_weight: weight of the final layer's loss.
      prior_layers_weight: weight of the prior layers' losses.
      kl_div_weight: weight of the KL terms.
      kl_temperature: softmax temperature ``T >= 0`` of the KL terms; 0 disables them.
      weights: one Matryoshka weight per dim (default all 1).
      argnums: indices of the per-layer embedding arguments; default every positional
        floating-point array of rank ≥ 3.

    Returns:
      A function ``f(*args, key=None, **kwargs)`` returning a float32 scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import matryoshka_2d
      >>> # a toy loss: Σ_i z_i0, which after truncating + re-normalising constant rows of
      >>> # width m is 2 rows · 1/sqrt(m): 1 for m = 4, 2 for m = 1, so M = 3 on every layer
      >>> loss = matryoshka_2d(lambda z: jnp.sum(z[:, 0]), dims=(4, 1), n_layers_per_step=-1,
      ...                      n_dims_per_step=-1, kl_temperature=0.0)
      >>> h = jnp.ones((3, 2, 4))  # 3 layers, batch 2, dim 4
      >>> float(loss(h))  # 3 + (3/1 + 3/2) / 2
      5.25

    References:
      Li et al., "2D Matryoshka Sentence Embeddings" (2DMSE), 2024; sentence-transformers
      ``Matryoshka2dLoss`` (defaults ``n_layers_per_step=1, n_dims_per_step=1,
      last_layer_weight=1, prior_layers_weight=1, kl_div_weight=1, kl_temperature=0.3``) and
      ``AdaptiveLayerLoss``; Kusupati et al., "Matryoshka Representation Learning", 2022.
    """
    if n_dims_per_step is None:
        n_dims_per_step = -1
    dims, weights = _check_matryoshka_args(dims, weights, n_dims_per_step)
    sample_dims = 0 < n_dims_per_step < len(dims)

    def inner(emb_idx):
        return matryoshka(
            loss_fn,
            dims,
            weights,
            n_dims_per_step if sample_dims else None,
            argnums=tuple(emb_idx),
        )

    return _layerwise(
        loss_fn,
        inner,
        inner_needs_key=sample_dims,
        max_dim=max(dims),
        n_layers_per_step=n_layers_per_step,
        last_layer_weight=last_layer_weight,
        prior_layers_weight=prior_layers_weight,
        kl_div_weight=kl_div_weight,
        kl_temperature=kl_temperature,
        argnums=argnums,
        name="matryoshka_2d",
    )


def adaptive_layer(
    loss_fn: Callable[..., jax.Array],
    *,
    n_layers_per_step: int | None = 1,
    last_layer_weight: float = 1.0,
    prior_layers_weight: float = 1.0,
    kl_div_weight: float = 1.0,
    kl_temperature: float = 0.3,
    argnums: Sequence[int] | None = None,
) -> Callable[..., jax.Array]:
    """Wraps ``loss_fn`` to train every layer prefix of an encoder (adaptive layers).

    :func:`matryoshka_2d` without the dimension axis: the final layer's loss, plus for the
    sampled prior layers ``l`` their loss weighted by ``prior_layers_weight / (1 + l) / |S|``,
    plus ``kl_div_weight · T · KL(softmax(h[L−1]/T) ‖ softmax(h[l]/T))`` per sampled layer (see
    :func:`matryoshka_2d` for the exact semantics and the deviations from sentence-transformers).
    Embedding arguments are ``[L, batch, dim]`` (``[L, batch, H, dim]`` for negatives) and are
    passed to ``loss_fn`` unchanged, layer by layer (no truncation, no re-normalisation).

    Args:
      loss_fn: a loss ``loss_fn(*embeddings, **kwargs) -> scalar`` on ``[batch, dim]`` inputs.
      n_layers_per_step: prior layers per call; -1 or None = all (ST default 1).
      last_layer_weight: weight of the final layer's loss.
      prior_layers_weight: weight of the prior layers' losses.
      kl_div_weight: weight of the KL terms.
      kl_temperature: softmax temperature ``T >= 0`` of the KL terms; 0 disables them.
      argnums: indices of the per-layer embedding arguments; default every positional
        floating-point array of rank ≥ 3.

    Returns:
      A function ``f(*args, key=None, **kwargs)`` returning a float32 scalar; ``key`` is
      required when ``0 < n_layers_per_step < L − 1``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import adaptive_layer
      >>> h = jnp.stack([jnp.full((2, 3), c) for c in (1.0, 2.0, 3.0)])  # layer l is all l+1
      >>> loss = adaptive_layer(jnp.mean, n_layers_per_step=-1, kl_temperature=0.0)
      >>> float(loss(h))  # 3 + (1/1 + 2/2) / 2
      4.0

    References:
      Li et al., "2D Matryoshka Sentence Embeddings", 2024; sentence-transformers
      ``AdaptiveLayerLoss`` (defaults ``n_layers_per_step=1, last_layer_weight=1,
      prior_layers_weight=1, kl_div_weight=1, kl_temperature=0.3``).
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable; got {type(loss_fn).__name__}")
    return _layerwise(
        loss_fn,
        lambda emb_idx: loss_fn,
        inner_needs_key=False,
        max_dim=None,
        n_layers_per_step=n_layers_per_step,
        last_layer_weight=last_layer_weight,
        prior_layers_weight=prior_layers_weight,
        kl_div_weight=kl_div_weight,
        kl_temperature=kl_temperature,
        argnums=argnums,
        name="adaptive_layer",
    )


def _check_matryoshka_args(dims, weights, n_dims_per_step):
    dims, weights = check_dims_and_weights(dims, weights)
    if n_dims_per_step != -1:
        v.check_int(n_dims_per_step, "n_dims_per_step", minimum=1, maximum=len(dims))
    return dims, weights


def _check_layer_args(n_layers_per_step, weights_by_name, kl_temperature):
    if n_layers_per_step != -1:
        v.check_int(n_layers_per_step, "n_layers_per_step", minimum=1)
    for name, value in weights_by_name.items():
        v.check_positive(value, name, strict=False)
    v.check_positive(kl_temperature, "kl_temperature", strict=False)


def _layerwise(
    loss_fn,
    make_inner,
    *,
    inner_needs_key,
    max_dim,
    n_layers_per_step,
    last_layer_weight,
    prior_layers_weight,
    kl_div_weight,
    kl_temperature,
    argnums,
    name,
):
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable; got {type(loss_fn).__name__}")
    if n_layers_per_step is None:
        n_layers_per_step = -1
    _check_layer_args(
        n_layers_per_step,
        {
            "last_layer_weight": last_layer_weight,
            "prior_layers_weight": prior_layers_weight,
            "kl_div_weight": kl_div_weight,
        },
        kl_temperature,
    )
    if argnums is not None:
        argnums = tuple(argnums)
        if not argnums:
            raise ValueError("argnums must name at least one embedding argument; got ()")
        for i in argnums:
            v.check_int(i, "argnums entries", minimum=0)
    kl_temperature = float(kl_temperature)

    def is_embedding(i, x):
        if argnums is not None:
            return i in argnums
        return hasattr(x, "ndim") and x.ndim >= 3 and jnp.issubdtype(x.dtype, jnp.floating)

    @functools.wraps(loss_fn)
    def wrapped(*args, key: jax.Array | None = None, **kwargs):
        emb = [i for i, x in enumerate(args) if is_embedding(i, x)]
        if argnums is not None and max(argnums) >= len(args):
            raise ValueError(
                f"argnums {list(argnums)} refers to positional arguments that were not "
                f"passed ({len(args)} given)"
            )
        if not emb:
            raise ValueError(
                f"{name} found no per-layer embedding arguments ([layers, batch, dim] float arrays)"
            )
        for i in emb:
            v.check_array(args[i], f"argument {i}", ndim=(3, 4))
        n_layers = args[emb[0]].shape[0]
        for i in emb[1:]:
            if args[i].shape[0] != n_layers:
                raise ValueError(
                    f"every embedding argument must have the same number of layers (axis 0); "
                    f"argument {emb[0]} has shape {v.shape_str(args[emb[0]])} but argument "
                    f"{i} has shape {v.shape_str(args[i])}"
                )
        if max_dim is not None:
            for i in emb:
                if max_dim > args[i].shape[-1]:
                    raise ValueError(
                        f"dims must be <= the embedding width; argument {i} has shape "
                        f"{v.shape_str(args[i])} (width {args[i].shape[-1]}) but dims "
                        f"contains {max_dim}"
                    )
        n_prior = n_layers - 1
        sample_layers = 0 < n_layers_per_step < n_prior
        n_used = n_layers_per_step if sample_layers else n_prior
        if (sample_layers or inner_needs_key) and key is None:
            raise ValueError(
                f"{name} needs key= (a jax.random key) when it samples layers or dims "
                f"(n_layers_per_step={n_layers_per_step} of {n_prior} prior layers)"
            )
        inner = make_inner(emb)
        # NumPy inputs cannot be indexed by a traced (sampled) layer index.
        args = list(args)
        for i in emb:
            args[i] = jnp.asarray(args[i])
        if key is not None:
            k_layers, k_last, k_prior = jax.random.split(key, 3)
            prior_keys = jax.random.split(k_prior, max(n_used, 1))
        else:
            k_last = None
            prior_keys = [None] * max(n_used, 1)

        def at_layer(layer):
            out = list(args)
            for i in emb:
                out[i] = args[i][layer]
            return out

        def call(layer_args, k):
            if inner_needs_key:
                return inner(*layer_args, key=k, **kwargs)
            return inner(*layer_args, **kwargs)

        last = n_layers - 1
        total = jnp.asarray(last_layer_weight, jnp.float32) * as_float(call(at_layer(last), k_last))
        if n_used == 0:
            return total
        if sample_layers:
            layers = jax.random.choice(k_layers, n_prior, (n_used,), replace=False)
            layers = [layers[j] for j in range(n_used)]
        else:
            layers = list(range(n_prior))
        final = [args[i][last] for i in emb]
        n_rows = sum(int(f.size // f.shape[-1]) for f in final)
        for j, layer in enumerate(layers):
            scale = prior_layers_weight / n_used / (1.0 + jnp.asarray(layer, jnp.float32))
            total = total + scale * as_float(call(at_layer(layer), prior_keys[j]))
            if kl_temperature > 0:
                kl = sum(
                    _kl_sum(f, args[i][layer], kl_temperature)
                    for f, i in zip(final, emb, strict=True)
                )
                total = total + (kl_div_weight * kl_temperature) * kl / n_rows
        return total

    return wrapped


def _kl_sum(final: jax.Array, layer: jax.Array, t: float) -> jax.Array:
    """``Σ_rows Σ_features p (log p − log q)`` with ``p = softmax(final/t)``,
    ``q = softmax(layer/t)`` over the last axis (``F.kl_div(log q, p, reduction="sum")``)."""
    log_p = jax.nn.log_softmax(as_float(final) / t, axis=-1)
    log_q = jax.nn.log_softmax(as_float(layer) / t, axis=-1)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q))
