"""Pieces shared by every sparse autoencoder: codes, outputs, decoding, initialisation, tricks.

Every SAE in :mod:`jaxemb.sae` uses the SAELens parameter layout ``W_enc [d_in, d_sae]``,
``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]`` with
``pre = (x − b_dec) @ W_enc + b_enc`` and ``x̂ = z @ W_dec + b_dec``. The functions here work on
any module with that layout, so a new variant adds its encoder and its loss and reuses the rest.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.sae._kernels import _sparse_decode as _sparse_decode
from jaxemb.sae._kernels import sparse_decode as sparse_decode


class SparseCode(NamedTuple):
    """A k-sparse code: the ``k`` active latents of each row and their values.

    Attributes:
      values: ``[N, k]`` float, the activations of the selected latents.
      indices: ``[N, k]`` int32, which latents (in ``[0, d_sae)``) they are.
    """

    values: jax.Array
    indices: jax.Array


class SAEOutput(NamedTuple):
    """What an SAE's forward pass returns.

    Attributes:
      reconstruction: ``[N, d_in]`` the decoded ``x̂``.
      code: the sparse code (:class:`SparseCode`) or, for dense variants, ``[N, d_sae]``.
      pre_activations: ``[N, d_sae]`` ``(x − b_dec) @ W_enc + b_enc`` before any nonlinearity.
    """

    reconstruction: jax.Array
    code: Any
    pre_activations: jax.Array


# ---------------------------------------------------------------------------------------------
# validation helpers


def check_batch(x: Any, d_in: int, name: str = "x") -> None:
    """Checks that ``x`` is a non-empty float ``[batch, d_in]`` array."""
    x = v.check_array(x, name, ndim=2, kind="float")
    if np.shape(x)[1] != d_in:
        raise ValueError(f"{name} must be [batch, d_in={d_in}]; got {v.shape_str(x)}")


def check_code(code: Any, name: str = "code", d_sae: int | None = None) -> None:
    """Checks a :class:`SparseCode` with matching ``[N, k]`` float values and int indices.

    With ``d_sae``, concrete indices must also lie in ``[0, d_sae)``: a latent that does not
    exist is an error, never silently dropped.
    """
    if not isinstance(code, SparseCode):
        raise ValueError(f"{name} must be a SparseCode(values, indices); got {type(code).__name__}")
    v.check_array(code.values, f"{name}.values", ndim=2, kind="float", allow_empty=True)
    v.check_array(code.indices, f"{name}.indices", ndim=2, kind="int", allow_empty=True)
    v.check_same_shape(code.values, f"{name}.values", code.indices, f"{name}.indices")
    if d_sae is not None:
        v.check_index_range(code.indices, f"{name}.indices", d_sae, "d_sae")


def check_sae(model: Any, name: str = "model") -> None:
    """Checks that ``model`` carries the shared SAE parameter layout."""
    for attr in ("W_enc", "b_enc", "W_dec", "b_dec", "d_in", "d_sae"):
        if not hasattr(model, attr):
            raise ValueError(
                f"{name} must be a jaxemb.sae module with W_enc, b_enc, W_dec, b_dec; "
                f"got {type(model).__name__} without {attr!r}"
            )


# ---------------------------------------------------------------------------------------------
# sparse codes


def densify(code: SparseCode, d_sae: int) -> jax.Array:
    """Scatters a sparse code into a dense ``[N, d_sae]`` matrix.

    Repeated indices in a row are summed, so ``densify(code) @ W_dec`` equals
    :func:`sparse_decode` for every code.

    Args:
      code: a :class:`SparseCode` with ``values`` and ``indices`` of shape ``[N, k]``.
      d_sae: number of latents (width of the result).

    Returns:
      ``[N, d_sae]`` array of ``code.values``' dtype, zero outside the selected latents.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import SparseCode, densify
      >>> code = SparseCode(jnp.array([[2.0, 0.5]]), jnp.array([[3, 0]]))
      >>> densify(code, 5).tolist()
      [[0.5, 0.0, 0.0, 2.0, 0.0]]

    References:
      Gao et al., "Scaling and evaluating sparse autoencoders" (2024); eai-sparsify stores
      TopK codes as ``(top_acts, top_indices)`` in the same way.
    """
    v.check_int(d_sae, "d_sae", minimum=1)
    check_code(code, d_sae=d_sae)
    return _densify(code.values, code.indices, d_sae)


def _densify(values: jax.Array, indices: jax.Array, d_sae: int) -> jax.Array:
    rows = jnp.arange(values.shape[0])[:, None]
    return jnp.zeros((values.shape[0], d_sae), values.dtype).at[rows, indices].add(values)


# ``sparse_decode`` (public) and ``_sparse_decode`` (no validation) carry the custom VJP whose
# backward scatter-adds into the selected decoder rows only; they live in ``_kernels``.


# ---------------------------------------------------------------------------------------------
# reductions shared by losses and metrics (float32 accumulation)


def sum_squared_error(x: jax.Array, x_hat: jax.Array) -> jax.Array:
    """``Σ‖x − x̂‖²`` accumulated in at least float32."""
    dt = jnp.promote_types(jnp.promote_types(x.dtype, x_hat.dtype), jnp.float32)
    return jnp.sum(jnp.square(x.astype(dt) - x_hat.astype(dt)))


def total_variance(x: jax.Array) -> jax.Array:
    """``Σ‖x − mean_batch(x)‖²`` accumulated in at least float32, floored at the smallest normal."""
    dt = jnp.promote_types(x.dtype, jnp.float32)
    x = x.astype(dt)
    tv = jnp.sum(jnp.square(x - jnp.mean(x, axis=0, keepdims=True)))
    return jnp.maximum(tv, jnp.finfo(dt).tiny)


# ---------------------------------------------------------------------------------------------
# initialisation


def init_sae_params(
    key: jax.Array,
    d_in: int,
    d_sae: int,
    *,
    init_encoder_from_decoder: bool = True,
    dtype: Any = jnp.float32,
) -> dict[str, jax.Array]:
    """Initial parameters in the SAELens layout, following Gao et al. and eai-sparsify.

    ``W_dec`` rows are random directions (isotropic Gaussian rows normalised to unit L2 norm);
    ``W_enc = W_decᵀ`` when ``init_encoder_from_decoder`` (otherwise PyTorch ``nn.Linear``'s
    default ``U(−1/√d_in, 1/√d_in)``, independent of the decoder); ``b_enc = 0``, ``b_dec = 0``
    (set ``b_dec`` from data with :func:`init_b_dec`).

    Args:
      key: PRNG key.
      d_in: input width.
      d_sae: number of latents.
      init_encoder_from_decoder: tie the initial encoder to the decoder's transpose.
      dtype: parameter dtype.

    Returns:
      dict with ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``,
      ``b_dec [d_in]``.

    Examples:
      >>> import jax, numpy as np
      >>> from jaxemb.sae import init_sae_params
      >>> p = init_sae_params(jax.random.key(0), 4, 6)
      >>> norms = np.linalg.norm(p["W_dec"], axis=1)
      >>> np.allclose(norms, 1.0), np.allclose(p["W_enc"], p["W_dec"].T)
      (True, True)

    References:
      Gao et al., "Scaling and evaluating sparse autoencoders" (2024), Sec. A.1 (encoder
      initialised to the decoder's transpose); eai-sparsify ``SparseCoder.__init__``.
    """
    v.check_int(d_in, "d_in", minimum=1)
    v.check_int(d_sae, "d_sae", minimum=1)
    try:
        floating = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
    except TypeError:
        floating = False
    if not floating:
        raise ValueError(
            f"dtype must be a floating dtype (float32, bfloat16, float16, ...); got {dtype!r}"
        )
    k_dec, k_enc = jax.random.split(key)
    W_dec = unit_norm_rows(jax.random.normal(k_dec, (d_sae, d_in), jnp.float32)).astype(dtype)
    if init_encoder_from_decoder:
        W_enc = W_dec.T
    else:
        bound = 1.0 / np.sqrt(d_in)
        W_enc = jax.random.uniform(k_enc, (d_in, d_sae), dtype, -bound, bound)
    return {
        "W_enc": W_enc,
        "b_enc": jnp.zeros((d_sae,), dtype),
        "W_dec": W_dec,
        "b_dec": jnp.zeros((d_in,), dtype),
    }


def set_sae_params(
    module: nnx.Module,
    key: jax.Array,
    d_in: int,
    d_sae: int,
    *,
    init_encoder_from_decoder: bool = True,
    dtype: Any = jnp.float32,
) -> None:
    """Creates ``module``'s ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec`` ``nnx.Param``s.

    The values are :func:`init_sae_params`'s; every variant's ``__init__`` calls this so all
    variants share one parameter layout.
    """
    p = init_sae_params(
        key, d_in, d_sae, init_encoder_from_decoder=init_encoder_from_decoder, dtype=dtype
    )
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        setattr(module, name, latent_param(p[name], PARAM_AXES[name]))


#: Logical axes of the shared parameters: ``embed`` indexes the input width, ``latent`` the
#: SAE's latents (map them to mesh axes with :func:`jaxemb.sae.param_shardings`).
PARAM_AXES = {
    "W_enc": ("embed", "latent"),
    "b_enc": ("latent",),
    "W_dec": ("latent", "embed"),
    "b_dec": ("embed",),
}


def latent_param(value: jax.Array, axes: tuple[str | None, ...]) -> nnx.Param:
    """An ``nnx.Param`` carrying logical axis names (``embed``, ``latent``) as metadata."""
    if len(axes) != jnp.ndim(value):
        raise ValueError(f"axes {axes} must name each of the {jnp.ndim(value)} axes of the value")
    return nnx.Param(value, out_sharding=tuple(axes), eager_sharding=False)


def param_axes(model: nnx.Module) -> dict[str, tuple[str | None, ...]]:
    """The logical axes of every ``nnx.Param`` of an SAE, by parameter name.

    Args:
      model: a jaxemb SAE module.

    Returns:
      dict from parameter name (``W_enc``, ``b_enc``, ``W_dec``, ``b_dec`` and the variant's
      own, e.g. ``log_threshold``) to a tuple naming each axis ``"embed"``, ``"latent"`` or
      ``None``.

    Examples:
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> axes = sae.param_axes(sae.TopKSAE(8, 8, k=2, rngs=nnx.Rngs(0)))
      >>> axes["W_enc"], axes["W_dec"], axes["b_dec"]
      (('embed', 'latent'), ('latent', 'embed'), ('embed',))

    References:
      Flax NNX "Scale up with sharding" guide (logical axis annotations); the encoders'
      :func:`jaxemb.encoders.param_shardings`.
    """
    check_sae(model)
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        names = var.get_metadata().get("out_sharding") or (None,) * jnp.ndim(var[...])
        out[".".join(str(k) for k in path)] = tuple(names)
    return out


def geometric_median(
    x: ArrayLike, *, max_iter: int = 100, tol: float = 1e-6, eps: float = 1e-8
) -> jax.Array:
    """Geometric median ``argmin_y Σ_i ‖x_i − y‖`` by Weiszfeld iterations.

    Starts at the mean and repeats ``y ← Σ w_i x_i / Σ w_i`` with ``w_i = 1 / max(‖x_i − y‖, eps)``
    until the step is at most ``tol`` times the RMS spread of ``x`` or ``max_iter`` steps ran.
    Unlike the mean it is robust to outliers (breakdown point 1/2).

    Args:
      x: ``[N, d]`` float points.
      max_iter: most Weiszfeld steps.
      tol: relative stopping tolerance.
      eps: floor on distances, so an iterate that lands on a data point stays finite.

    Returns:
      ``[d]`` float32 (or wider) point.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import geometric_median
      >>> x = jnp.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [3.0, 1.0], [100.0, 1.0]])
      >>> [round(float(c), 3) for c in geometric_median(x)]   # the mean is [21.2, 1.0]
      [2.0, 1.0]

    References:
      Weiszfeld (1937); Bricken et al., "Towards Monosemanticity" (2023) initialise ``b_dec`` to
      the geometric median; SAELens ``compute_geometric_median`` (``maxiter=100``).
    """
    x = v.check_array(x, "x", ndim=2, kind="float")
    v.check_int(max_iter, "max_iter", minimum=0)
    v.check_positive(tol, "tol", strict=False)
    v.check_positive(eps, "eps")
    return _geometric_median(jnp.asarray(x), max_iter=max_iter, tol=tol, eps=eps)


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _geometric_median(x, *, max_iter, tol, eps):
    dt = jnp.promote_types(x.dtype, jnp.float32)
    x = x.astype(dt)
    y0 = jnp.mean(x, axis=0)
    spread = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(x - y0[None, :]), axis=1)))

    def cond(carry):
        _, it, step = carry
        return (it < max_iter) & (step > tol * spread)

    def body(carry):
        y, it, _ = carry
        dist = jnp.sqrt(jnp.sum(jnp.square(x - y[None, :]), axis=1))
        w = 1.0 / jnp.maximum(dist, eps)
        y_new = jnp.sum(w[:, None] * x, axis=0) / jnp.sum(w)
        return y_new, it + 1, jnp.sqrt(jnp.sum(jnp.square(y_new - y)))

    y, _, _ = jax.lax.while_loop(cond, body, (y0, jnp.int32(0), jnp.asarray(jnp.inf, dt)))
    return y


def init_b_dec(model: nnx.Module, x: ArrayLike, *, method: str = "mean") -> None:
    """Sets ``model.b_dec`` in place to the mean or the geometric median of a data sample.

    Call it once before training (before :func:`make_train_step` snapshots the parameters), on a
    sample of the inputs; it centres the pre-activations at initialisation.

    Args:
      model: an SAE module with a ``b_dec [d_in]`` parameter.
      x: ``[N, d_in]`` float sample of training inputs.
      method: ``"mean"`` (eai-sparsify's default) or ``"geometric_median"`` (Weiszfeld).

    Returns:
      None; ``model.b_dec`` is updated.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.TopKSAE(2, 4, k=1, rngs=nnx.Rngs(0))
      >>> sae.init_b_dec(model, jnp.array([[1.0, 2.0], [3.0, 4.0]]))
      >>> model.b_dec[...].tolist()
      [2.0, 3.0]

    References:
      eai-sparsify ``Trainer`` (``b_dec`` = batch mean on the first step); Bricken et al.,
      "Towards Monosemanticity" (2023) and SAELens (geometric median).
    """
    check_sae(model)
    check_batch(x, model.d_in)
    v.check_choice(method, "method", ("mean", "geometric_median"))
    x = jnp.asarray(x)
    if v.is_concrete(x) and not bool(jnp.all(jnp.isfinite(x))):
        rows = np.flatnonzero(~np.isfinite(np.asarray(x, np.float32)).all(axis=1))
        raise ValueError(
            f"x must be finite to initialise b_dec; rows {rows[:5].tolist()} hold NaN or inf "
            f"({len(rows)} of {x.shape[0]})"
        )
    if method == "mean":
        center = jnp.mean(x.astype(jnp.promote_types(x.dtype, jnp.float32)), axis=0)
    else:
        center = geometric_median(x)
    model.b_dec.set_value(center.astype(model.b_dec[...].dtype))


# ---------------------------------------------------------------------------------------------
# unit-norm decoder


def unit_norm_rows(W: ArrayLike) -> jax.Array:
    """Scales each row of ``W`` to unit L2 norm: ``W / (‖W_i‖ + eps)`` (eps = dtype's epsilon)."""
    W = jnp.asarray(W)
    W32 = W.astype(jnp.promote_types(W.dtype, jnp.float32))
    norm = jnp.linalg.norm(W32, axis=1, keepdims=True)
    return (W32 / (norm + jnp.finfo(W.dtype).eps)).astype(W.dtype)


def normalize_decoder(model: nnx.Module) -> None:
    """Rescales the rows of ``model.W_dec`` to unit L2 norm, in place.

    Args:
      model: an SAE module with ``W_dec [d_sae, d_in]``.

    Returns:
      None; ``model.W_dec`` is updated.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.TopKSAE(3, 4, k=1, rngs=nnx.Rngs(0))
      >>> model.W_dec[...] = 5.0 * model.W_dec[...]
      >>> sae.normalize_decoder(model)
      >>> np.round(np.linalg.norm(model.W_dec[...], axis=1), 5).tolist()
      [1.0, 1.0, 1.0, 1.0]

    References:
      eai-sparsify ``SparseCoder.set_decoder_norm_to_unit_norm``.
    """
    check_sae(model)
    model.W_dec.set_value(unit_norm_rows(model.W_dec[...]))


def remove_parallel_grad(grads_W_dec: ArrayLike, W_dec: ArrayLike) -> jax.Array:
    """Removes from each row of the ``W_dec`` gradient its component along that decoder row.

    ``g_i ← g_i − (⟨g_i, W_i⟩ / ‖W_i‖²) W_i``. With unit-norm rows (as kept by training) this is
    eai-sparsify's ``g_i − ⟨g_i, W_i⟩ W_i``; a step along the result changes the row's direction,
    not (to first order) its norm.

    Args:
      grads_W_dec: ``[d_sae, d_in]`` gradient of the loss with respect to ``W_dec``.
      W_dec: ``[d_sae, d_in]`` decoder.

    Returns:
      ``[d_sae, d_in]`` gradient orthogonal, row by row, to ``W_dec``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import remove_parallel_grad
      >>> remove_parallel_grad(jnp.array([[3.0, 4.0]]), jnp.array([[1.0, 0.0]])).tolist()
      [[0.0, 4.0]]

    References:
      eai-sparsify ``SparseCoder.remove_gradient_parallel_to_decoder_directions``; Bricken et
      al., "Towards Monosemanticity" (2023).
    """
    grads_W_dec = v.check_array(grads_W_dec, "grads_W_dec", ndim=2, kind="float")
    W_dec = v.check_array(W_dec, "W_dec", ndim=2, kind="float")
    v.check_same_shape(W_dec, "W_dec", grads_W_dec, "grads_W_dec")
    g, W = jnp.asarray(grads_W_dec), jnp.asarray(W_dec)
    dt = jnp.promote_types(jnp.promote_types(g.dtype, W.dtype), jnp.float32)
    g32, W32 = g.astype(dt), W.astype(dt)
    dot = jnp.sum(g32 * W32, axis=1, keepdims=True)
    n2 = jnp.sum(W32 * W32, axis=1, keepdims=True)
    return (g32 - dot / jnp.maximum(n2, jnp.finfo(dt).tiny) * W32).astype(g.dtype)
