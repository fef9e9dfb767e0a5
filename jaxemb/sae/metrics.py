"""Metrics that say whether a sparse autoencoder works.

Reconstruction (:func:`fvu`, :func:`explained_variance`, :func:`mse`, :func:`cosine`,
:func:`shrinkage`), sparsity (:func:`l0`, :func:`l1`, :func:`firing_frequency`,
:func:`dead_fraction`, :func:`dense_fraction`) and, against a known dictionary, recovery
(:func:`max_cosine`, :func:`mmcs`, :func:`recovered_fraction`). Over a whole dataset,
:func:`reconstruction_metrics` accumulates the reconstruction and sparsity metrics batch by batch
(``init`` / ``update`` / ``compute``). Codes may be a
:class:`~jaxemb.sae.SparseCode` or a dense ``[N, d_sae]`` activation matrix. Every function
returns float32 (or wider) ``jax.Array`` values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb.sae._base import SparseCode, check_code, sum_squared_error, total_variance
from jaxemb.sae._dead import DeadLatentState, as_counts, check_code_or_dense


def _pair(x: Any, x_hat: Any) -> tuple[jax.Array, jax.Array]:
    x = v.check_array(x, "x", ndim=2, kind="float")
    x_hat = v.check_array(x_hat, "x_hat", ndim=2, kind="float")
    v.check_same_shape(x, "x", x_hat, "x_hat")
    return jnp.asarray(x), jnp.asarray(x_hat)


def _f32(x: jax.Array) -> jax.Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def fvu(x: ArrayLike, x_hat: ArrayLike) -> jax.Array:
    """Fraction of variance unexplained, ``Σ‖x − x̂‖² / Σ‖x − mean_batch(x)‖²``.

    Args:
      x: ``[N, d]`` inputs.
      x_hat: ``[N, d]`` reconstructions.

    Returns:
      Scalar (0 is perfect; 1 is as good as predicting the batch mean).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import metrics
      >>> x = jnp.array([[0.0, 0.0], [2.0, 2.0]])
      >>> float(metrics.fvu(x, jnp.ones((2, 2))))
      1.0

    References:
      eai-sparsify ``SparseCoder.forward`` (``fvu``); Gao et al. (2024) "normalized MSE".
    """
    x, x_hat = _pair(x, x_hat)
    return sum_squared_error(x, x_hat) / total_variance(x)


def explained_variance(x: ArrayLike, x_hat: ArrayLike) -> jax.Array:
    """Explained variance ``1 − FVU`` of the batch.

    Args:
      x: ``[N, d]`` inputs.
      x_hat: ``[N, d]`` reconstructions.

    Returns:
      Scalar (1 is perfect).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import metrics
      >>> x = jnp.array([[0.0, 0.0], [2.0, 2.0]])
      >>> float(metrics.explained_variance(x, x))
      1.0

    References:
      eai-sparsify (``1 − fvu``).
    """
    return 1.0 - fvu(x, x_hat)


def mse(x: ArrayLike, x_hat: ArrayLike) -> jax.Array:
    """Mean squared error over all elements, ``mean((x − x̂)²)``.

    Args:
      x: ``[N, d]`` inputs.
      x_hat: ``[N, d]`` reconstructions.

    Returns:
      Scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import metrics
      >>> float(metrics.mse(jnp.zeros((2, 2)), jnp.array([[1.0, 1.0], [1.0, 3.0]])))
      3.0

    References:
      SAELens evals ``mse``.
    """
    x, x_hat = _pair(x, x_hat)
    return sum_squared_error(x, x_hat) / x.size


def cosine(x: ArrayLike, x_hat: ArrayLike, *, eps: float = 1e-8) -> jax.Array:
    """Mean over rows of the cosine similarity between ``x`` and ``x̂``.

    Args:
      x: ``[N, d]`` inputs.
      x_hat: ``[N, d]`` reconstructions.
      eps: floor on each norm.

    Returns:
      Scalar in ``[−1, 1]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import metrics
      >>> x = jnp.array([[1.0, 0.0], [1.0, 0.0]])
      >>> float(metrics.cosine(x, jnp.array([[2.0, 0.0], [0.0, 1.0]])))
      0.5

    References:
      SAELens evals ``cossim``.
    """
    x, x_hat = _pair(x, x_hat)
    v.check_positive(eps, "eps")
    x, x_hat = _f32(x), _f32(x_hat)
    nx = jnp.maximum(jnp.linalg.norm(x, axis=1), eps)
    nh = jnp.maximum(jnp.linalg.norm(x_hat, axis=1), eps)
    return jnp.mean(jnp.sum(x * x_hat, axis=1) / (nx * nh))


def shrinkage(x: ArrayLike, x_hat: ArrayLike, *, eps: float = 1e-8) -> jax.Array:
    """Mean over rows of ``‖x̂‖ / ‖x‖`` (below 1: the SAE shrinks its reconstructions).

    Args:
      x: ``[N, d]`` inputs.
      x_hat: ``[N, d]`` reconstructions.
      eps: floor on ``‖x‖``.

    Returns:
      Scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import metrics
      >>> round(float(metrics.shrinkage(jnp.array([[3.0, 4.0]]), jnp.array([[0.0, 4.0]]))), 4)
      0.8

    References:
      SAELens evals ``l2_ratio``; Wright & Sharkey, "Addressing feature suppression in SAEs"
      (2024).
    """
    x, x_hat = _pair(x, x_hat)
    v.check_positive(eps, "eps")
    nx = jnp.maximum(jnp.linalg.norm(_f32(x), axis=1), eps)
    return jnp.mean(jnp.linalg.norm(_f32(x_hat), axis=1) / nx)


def _values(code: Any) -> jax.Array:
    """Validates a sparse or dense code and returns its (``[N, k]`` or ``[N, d_sae]``) values."""
    if isinstance(code, SparseCode):
        check_code(code)
        return code.values
    code = v.check_array(code, "code", ndim=2, kind="float")
    return jnp.asarray(code)


def l0(code: Any) -> jax.Array:
    """Mean number of non-zero latents per row.

    Args:
      code: :class:`~jaxemb.sae.SparseCode` ``[N, k]`` or dense ``[N, d_sae]`` activations.

    Returns:
      Scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import metrics
      >>> float(metrics.l0(jnp.array([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]])))
      1.5

    References:
      SAELens evals ``l0``.
    """
    return jnp.mean(jnp.sum(_values(code) != 0, axis=1).astype(jnp.float32))


def l1(code: Any) -> jax.Array:
    """Mean over rows of ``Σ_j |z_j|``.

    Args:
      code: :class:`~jaxemb.sae.SparseCode` ``[N, k]`` or dense ``[N, d_sae]`` activations.

    Returns:
      Scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import metrics
      >>> float(metrics.l1(jnp.array([[0.0, -1.0, 2.0], [0.0, 0.0, 3.0]])))
      3.0

    References:
      SAELens evals ``l1``.
    """
    return jnp.mean(jnp.sum(jnp.abs(_f32(_values(code))), axis=1))


def firing_frequency(codes: Any, d_sae: int | None = None) -> jax.Array:
    """Fraction of rows in which each latent is non-zero.

    Average it over batches (weighted by their sizes) for a dataset-level density.

    Args:
      codes: :class:`~jaxemb.sae.SparseCode` ``[N, k]`` or dense ``[N, d_sae]`` activations.
      d_sae: number of latents; required for a sparse code.

    Returns:
      ``[d_sae]`` float32 in ``[0, 1]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import SparseCode, metrics
      >>> code = SparseCode(jnp.array([[1.0, 2.0], [3.0, 0.0]]), jnp.array([[0, 2], [2, 1]]))
      >>> metrics.firing_frequency(code, 4).tolist()
      [0.5, 0.0, 1.0, 0.0]

    References:
      SAELens "feature density" (log10 of it is the density histogram).
    """
    d_sae = check_code_or_dense(codes, d_sae, "codes")
    n = _values(codes).shape[0]
    if isinstance(codes, SparseCode):
        # Count a latent once per row even when an index repeats within the row.
        rows = jnp.arange(n)[:, None]
        dense = jnp.zeros((n, d_sae), jnp.bool_).at[rows, codes.indices].max(codes.values != 0)
    else:
        dense = jnp.asarray(codes) != 0
    return jnp.mean(dense.astype(jnp.float32), axis=0)


def dead_fraction(tokens_since_fired: ArrayLike | DeadLatentState, threshold: int) -> jax.Array:
    """Fraction of latents that have not fired for more than ``threshold`` tokens.

    Args:
      tokens_since_fired: ``[d_sae]`` int counters or a :class:`~jaxemb.sae.DeadLatentState`.
      threshold: tokens without firing after which a latent is dead (strictly more). For
        firing counts over a dataset, pass ``(counts == 0) * (threshold + 1)`` to get the
        fraction never seen firing.

    Returns:
      Scalar in ``[0, 1]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import metrics
      >>> float(metrics.dead_fraction(jnp.array([0, 5, 20, 30]), 10))
      0.5

    References:
      eai-sparsify ``dead_pct``.
    """
    counts = as_counts(tokens_since_fired)
    v.check_int(threshold, "threshold", minimum=0)
    return jnp.mean((counts > threshold).astype(jnp.float32))


def dense_fraction(freq: ArrayLike, *, threshold: float = 0.1) -> jax.Array:
    """Fraction of latents that fire on more than ``threshold`` of the rows.

    Args:
      freq: ``[d_sae]`` firing frequencies, e.g. from :func:`firing_frequency`.
      threshold: frequency above which a latent counts as dense.

    Returns:
      Scalar in ``[0, 1]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import metrics
      >>> float(metrics.dense_fraction(jnp.array([0.0, 0.05, 0.2, 0.9])))
      0.5

    References:
      Rajamanoharan et al., "Jumping ahead: JumpReLU SAEs" (2024), dense latents (> 10%).
    """
    freq = v.check_array(freq, "freq", ndim=1, kind="float")
    v.check_positive(threshold, "threshold", strict=False)
    return jnp.mean((jnp.asarray(freq) > threshold).astype(jnp.float32))


def max_cosine(W_dec: ArrayLike, true_dictionary: ArrayLike, *, eps: float = 1e-8) -> jax.Array:
    """For each true atom, the largest cosine similarity with any learned decoder row.

    Args:
      W_dec: ``[d_sae, d]`` learned decoder rows.
      true_dictionary: ``[n_atoms, d]`` ground-truth atoms.
      eps: floor on norms.

    Returns:
      ``[n_atoms]`` signed cosines in ``[−1, 1]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import metrics
      >>> W = jnp.array([[0.0, 2.0], [1.0, 1.0]])
      >>> [round(c, 4) for c in metrics.max_cosine(W, jnp.eye(2)).tolist()]
      [0.7071, 1.0]

    References:
      Sharkey et al., "Taking features out of superposition with sparse autoencoders" (2022).
    """
    W_dec = v.check_array(W_dec, "W_dec", ndim=2, kind="float")
    true_dictionary = v.check_array(true_dictionary, "true_dictionary", ndim=2, kind="float")
    v.check_axis_match(W_dec, "W_dec", 1, true_dictionary, "true_dictionary", 1)
    v.check_positive(eps, "eps")

    def unit(a):
        a = _f32(jnp.asarray(a))
        return a / jnp.maximum(jnp.linalg.norm(a, axis=1, keepdims=True), eps)

    sims = unit(true_dictionary) @ unit(W_dec).T  # [n_atoms, d_sae]
    return jnp.max(sims, axis=1)


def mmcs(W_dec: ArrayLike, true_dictionary: ArrayLike) -> jax.Array:
    """Mean max cosine similarity: the mean over true atoms of :func:`max_cosine`.

    Args:
      W_dec: ``[d_sae, d]`` learned decoder rows.
      true_dictionary: ``[n_atoms, d]`` ground-truth atoms.

    Returns:
      Scalar in ``[−1, 1]`` (1: every atom has an exact learned copy).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import metrics
      >>> float(metrics.mmcs(jnp.eye(3)[::-1], jnp.eye(3)))
      1.0

    References:
      Sharkey et al., "Taking features out of superposition with sparse autoencoders" (2022).
    """
    return jnp.mean(max_cosine(W_dec, true_dictionary))


def recovered_fraction(
    W_dec: ArrayLike, true_dictionary: ArrayLike, *, threshold: float = 0.9
) -> jax.Array:
    """Fraction of true atoms whose :func:`max_cosine` exceeds ``threshold``.

    Args:
      W_dec: ``[d_sae, d]`` learned decoder rows.
      true_dictionary: ``[n_atoms, d]`` ground-truth atoms.
      threshold: cosine above which an atom counts as recovered.

    Returns:
      Scalar in ``[0, 1]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import metrics
      >>> W = jnp.array([[0.0, 2.0], [1.0, 1.0]])
      >>> float(metrics.recovered_fraction(W, jnp.eye(2)))
      0.5

    References:
      Sharkey et al. (2022); Gao et al. (2024) use the same count on toy data.
    """
    v.check_finite_scalar(threshold, "threshold")
    if v.is_concrete(threshold) and not -1.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a cosine in [-1, 1]; got {threshold!r}")
    best = max_cosine(W_dec, true_dictionary)
    fraction = jnp.mean((best > threshold).astype(jnp.float32))
    return jnp.where(jnp.any(jnp.isnan(best)), jnp.nan, fraction)  # NaN in, NaN out


__all__ = [
    "fvu",
    "explained_variance",
    "mse",
    "cosine",
    "shrinkage",
    "l0",
    "l1",
    "firing_frequency",
    "dead_fraction",
    "dense_fraction",
    "max_cosine",
    "mmcs",
    "recovered_fraction",
]


# ---------------------------------------------------------------------------------------------
# streaming accumulation over a dataset


class ReconstructionState(NamedTuple):
    """The running sums of :func:`reconstruction_metrics` (a pytree, replicated on a mesh).

    Attributes:
      rows: float32 scalar, rows seen.
      mean: ``[d_in]`` float32 running mean of ``x``.
      m2: float32 scalar ``Σ‖x − mean‖²`` (merged per batch by Chan et al.'s update, so no
        cancellation between ``Σ‖x‖²`` and ``‖Σx‖²``).
      sse: float32 scalar ``Σ‖x − x̂‖²``.
      cosine: float32 scalar, sum over rows of ``cos(x, x̂)``.
      shrinkage: float32 scalar, sum over rows of ``‖x̂‖ / ‖x‖``.
      l0: float32 scalar, sum over rows of the number of distinct non-zero latents.
      l1: float32 scalar, sum over rows of ``Σ_j |z_j|``.
      fired: ``[d_sae]`` int32, rows on which each latent was non-zero.
    """

    rows: jax.Array
    mean: jax.Array
    m2: jax.Array
    sse: jax.Array
    cosine: jax.Array
    shrinkage: jax.Array
    l0: jax.Array
    l1: jax.Array
    fired: jax.Array


class StreamingMetrics(NamedTuple):
    """``init() -> state``, ``update(state, x, x_hat, code) -> state``, ``compute(state) -> dict``.

    Built by :func:`reconstruction_metrics`; ``update`` is jitted and takes batches sharded over
    a mesh's data axis as they are (the sums reduce over the global batch).
    """

    init: Callable[[], ReconstructionState]
    update: Callable[..., ReconstructionState]
    compute: Callable[[ReconstructionState], dict[str, jax.Array]]


def reconstruction_metrics(d_in: int, d_sae: int, *, eps: float = 1e-8) -> StreamingMetrics:
    """Streaming reconstruction and sparsity metrics of an SAE over a whole dataset.

    Feed every batch once: ``state = m.update(state, x, x_hat, code)``; ``m.compute(state)``
    then gives the dataset-level values of :func:`fvu` (variance about the dataset mean, not a
    batch mean), :func:`explained_variance`, :func:`mse`, :func:`cosine`, :func:`shrinkage`,
    :func:`l0`, :func:`l1` and :func:`firing_frequency`, each equal to the one-shot function on
    the concatenated batches up to float32 rounding, plus ``dead_fraction`` (latents that never
    fired) and ``rows``. Memory is ``O(d_in + d_sae)`` whatever the dataset size.

    Args:
      d_in: input width.
      d_sae: number of latents.
      eps: floor on norms in the cosine and shrinkage (as :func:`cosine`).

    Returns:
      :class:`StreamingMetrics` ``(init, update, compute)``. ``update(state, x, x_hat, code)``
      takes ``x``, ``x_hat`` ``[N, d_in]`` float and ``code`` a
      :class:`~jaxemb.sae.SparseCode` ``[N, k]`` or dense ``[N, d_sae]`` activations;
      ``compute`` returns a dict of float32 scalars and ``firing_frequency [d_sae]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.sae import metrics
      >>> m = metrics.reconstruction_metrics(2, 3)
      >>> state = m.init()
      >>> x = jnp.array([[0.0, 0.0], [2.0, 2.0]])
      >>> state = m.update(state, x[:1], jnp.ones((1, 2)), jnp.array([[1.0, 0.0, 0.0]]))
      >>> state = m.update(state, x[1:], jnp.ones((1, 2)), jnp.array([[0.0, 0.0, 2.0]]))
      >>> out = m.compute(state)
      >>> float(out["fvu"]), float(out["l0"]), out["firing_frequency"].tolist()
      (1.0, 1.0, [0.5, 0.0, 0.5])

    References:
      Chan, Golub & LeVeque, "Updating formulae and a pairwise algorithm for computing sample
      variances" (1979); SAELens ``run_evals`` and eai-sparsify evaluation (FVU, L0, feature
      density accumulated over evaluation batches); ``clu.metrics`` (init / update / compute).
    """
    v.check_int(d_in, "d_in", minimum=1)
    v.check_int(d_sae, "d_sae", minimum=1)
    v.check_positive(eps, "eps")
    eps = float(eps)

    def init() -> ReconstructionState:
        z = jnp.zeros((), jnp.float32)
        return ReconstructionState(
            z, jnp.zeros((d_in,), jnp.float32), z, z, z, z, z, z, jnp.zeros((d_sae,), jnp.int32)
        )

    def update(state: ReconstructionState, x: Any, x_hat: Any, code: Any) -> ReconstructionState:
        if not isinstance(state, ReconstructionState):
            raise ValueError(f"state must be a ReconstructionState; got {type(state).__name__}")
        x, x_hat = _pair(x, x_hat)
        if x.shape[1] != d_in:
            raise ValueError(f"x must be [N, d_in={d_in}]; got {v.shape_str(x)}")
        check_code_or_dense(code, d_sae, "code")
        values = _values(code)
        if values.shape[0] != x.shape[0]:
            raise ValueError(
                f"code must have one row per row of x ({x.shape[0]}); got {v.shape_str(values)}"
            )
        if isinstance(code, SparseCode):
            return _update_sparse(state, x, x_hat, code.values, code.indices, eps)
        return _update_dense(state, x, x_hat, values, eps)

    def compute(state: ReconstructionState) -> dict[str, jax.Array]:
        if not isinstance(state, ReconstructionState):
            raise ValueError(f"state must be a ReconstructionState; got {type(state).__name__}")
        if not float(state.rows) > 0:
            raise ValueError("compute needs at least one row: call update(state, ...) first")
        return _compute(state, d_in)

    return StreamingMetrics(init, update, compute)


def _merge_sums(state, x, x_hat, eps, l0, l1, fired):
    x, x_hat = _f32(x), _f32(x_hat)
    n_b = jnp.float32(x.shape[0])
    mean_b = jnp.mean(x, axis=0)
    m2_b = jnp.sum(jnp.square(x - mean_b[None, :]))
    rows = state.rows + n_b
    delta = mean_b - state.mean
    mean = state.mean + delta * (n_b / rows)
    m2 = state.m2 + m2_b + jnp.sum(jnp.square(delta)) * (state.rows * n_b / rows)
    nx = jnp.maximum(jnp.linalg.norm(x, axis=1), eps)
    nh = jnp.maximum(jnp.linalg.norm(x_hat, axis=1), eps)
    return ReconstructionState(
        rows=rows,
        mean=mean,
        m2=m2,
        sse=state.sse + sum_squared_error(x, x_hat),
        cosine=state.cosine + jnp.sum(jnp.sum(x * x_hat, axis=1) / (nx * nh)),
        shrinkage=state.shrinkage + jnp.sum(jnp.linalg.norm(x_hat, axis=1) / nx),
        l0=state.l0 + l0,
        l1=state.l1 + l1,
        fired=state.fired + fired,
    )


@functools.partial(jax.jit, static_argnames=("eps",))
def _update_dense(state, x, x_hat, z, eps):
    active = z != 0
    l0 = jnp.sum(active).astype(jnp.float32)
    l1 = jnp.sum(jnp.abs(_f32(z)))
    fired = jnp.sum(active, axis=0).astype(jnp.int32)
    return _merge_sums(state, x, x_hat, eps, l0, l1, fired)


@functools.partial(jax.jit, static_argnames=("eps",))
def _update_sparse(state, x, x_hat, values, indices, eps):
    # A latent counts once per row even when its index repeats (matching pursuit may pick it
    # twice): only its first active occurrence in the row is counted.
    k = indices.shape[1]
    active = values != 0
    same = (indices[:, :, None] == indices[:, None, :]) & active[:, None, :]
    earlier = jnp.tril(jnp.ones((k, k), jnp.bool_), -1)
    first = active & ~jnp.any(same & earlier[None, :, :], axis=2)
    l0 = jnp.sum(first).astype(jnp.float32)
    l1 = jnp.sum(jnp.abs(_f32(values)))
    fired = (
        jnp.zeros(state.fired.shape, jnp.int32)
        .at[indices.reshape(-1)]
        .add(first.reshape(-1).astype(jnp.int32))
    )
    return _merge_sums(state, x, x_hat, eps, l0, l1, fired)


@functools.partial(jax.jit, static_argnames=("d_in",))
def _compute(state, d_in):
    tv = jnp.maximum(state.m2, jnp.finfo(jnp.float32).tiny)
    fvu_ = state.sse / tv
    freq = state.fired.astype(jnp.float32) / state.rows
    return {
        "rows": state.rows,
        "fvu": fvu_,
        "explained_variance": 1.0 - fvu_,
        "mse": state.sse / (state.rows * d_in),
        "cosine": state.cosine / state.rows,
        "shrinkage": state.shrinkage / state.rows,
        "l0": state.l0 / state.rows,
        "l1": state.l1 / state.rows,
        "firing_frequency": freq,
        "dead_fraction": jnp.mean((state.fired == 0).astype(jnp.float32)),
    }
