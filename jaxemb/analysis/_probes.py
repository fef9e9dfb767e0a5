"""Probes of frozen embeddings: weighted cosine kNN and a multinomial logistic-regression probe."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from jaxemb._validate import (
    check_array,
    check_axis_match,
    check_choice,
    check_int,
    check_labels,
    check_positive,
    is_concrete,
    shape_str,
)
from jaxemb.analysis._diagnostics import _compute_dtype, _to_float
from jaxemb.retrieval._search import _row_layout, _topk

# ---------------------------------------------------------------------------------------------
# Validation helpers shared by the probes
# ---------------------------------------------------------------------------------------------


def _as_array(x: Any) -> Any:
    if not hasattr(x, "shape") and isinstance(x, (list, tuple)):
        return np.asarray(x)
    return x


@jax.jit
def _finite_rows(x: jax.Array) -> jax.Array:
    return jnp.all(jnp.isfinite(x), axis=1)


def _check_finite_rows(x: Any, name: str) -> None:
    """Raises naming the rows of ``x`` that hold NaN or inf.

    Skipped for traced ``x`` and for multi-process arrays this process cannot read whole.
    """
    if not is_concrete(x) or (isinstance(x, jax.Array) and not x.is_fully_addressable):
        return
    ok = np.asarray(_finite_rows(x)) if isinstance(x, jax.Array) else np.isfinite(x).all(axis=1)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        shown = ", ".join(str(i) for i in bad[:10]) + (", ..." if bad.size > 10 else "")
        raise ValueError(
            f"{name} must be finite; got NaN/inf in {bad.size} of {x.shape[0]} rows (rows {shown})"
        )


def _check_embeddings(x: Any, name: str) -> Any:
    x = _as_array(x)
    check_array(x, name, ndim=2, kind="float")
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature column; got {shape_str(x)}")
    return x


def _label_max(y: Any, name: str) -> int:
    """Largest label of concrete ``y``, checking that labels are non-negative."""
    if not is_concrete(y):
        raise ValueError(
            f"num_classes must be given when {name} is traced (it sets a static shape)"
        )
    y = np.asarray(y)
    if y.min() < 0:
        raise ValueError(f"{name} must be non-negative class indices; got minimum {y.min()}")
    return int(y.max())


def _resolve_num_classes(num_classes: int | None, labels: dict[str, Any]) -> int:
    if num_classes is None:
        return max(_label_max(y, name) for name, y in labels.items()) + 1
    check_int(num_classes, "num_classes", minimum=1)
    for name, y in labels.items():
        if is_concrete(y):
            top = _label_max(y, name)
            if top >= num_classes:
                raise ValueError(
                    f"{name} must hold labels in [0, num_classes={num_classes}); got {top}"
                )
    return int(num_classes)


# ---------------------------------------------------------------------------------------------
# kNN
# ---------------------------------------------------------------------------------------------


# Train rows scored at a time by the search engine (with chunk_size queries at a time).
_TRAIN_CHUNK = 4096


@functools.partial(jax.jit, static_argnames=("k", "num_classes", "chunk_size", "layout"))
def _knn_classify(train_x, train_y, test_x, temperature, *, k, num_classes, chunk_size, layout):
    dtype = jnp.promote_types(_compute_dtype(train_x), _compute_dtype(test_x))
    # Cosine top-k by the one search engine: rows L2-normalised (eps 1e-12), equal
    # similarities list the lower train index first; a train set split over a mesh is
    # searched shard by shard.
    top, idx = _topk(
        test_x,
        train_x,
        k,
        metric="cosine",
        chunk=_TRAIN_CHUNK,
        q_block=chunk_size,
        layout=layout,
    )
    labels = train_y.astype(jnp.int32)[idx]  # [Q, k]
    # exp(s/τ) up to a per-query factor exp(−s_max/τ), which keeps it finite for small τ and
    # leaves the argmax unchanged.
    weights = jnp.exp((top - top[:, :1]) / temperature.astype(dtype))
    rows = jnp.arange(idx.shape[0])[:, None]
    votes = jnp.zeros((idx.shape[0], num_classes), dtype).at[rows, labels].add(weights)
    return jnp.argmax(votes, axis=1).astype(jnp.int32)  # equal votes: lower class index


def _validate_knn(train_x, train_y, test_x, k, temperature, num_classes, chunk_size):
    train_x = _check_embeddings(train_x, "train_x")
    test_x = _check_embeddings(test_x, "test_x")
    train_y = _as_array(train_y)
    check_labels(train_y, "train_y", train_x.shape[0])
    check_axis_match(train_x, "train_x", 1, test_x, "test_x", 1)
    check_int(k, "k", minimum=1)
    if k > train_x.shape[0]:
        raise ValueError(f"k must be <= the number of train points {train_x.shape[0]}; got k={k}")
    check_positive(temperature, "temperature")
    check_int(chunk_size, "chunk_size", minimum=1)
    _check_finite_rows(train_x, "train_x")
    _check_finite_rows(test_x, "test_x")
    return train_x, train_y, test_x


def knn_classify(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> jax.Array:
    """Weighted cosine k-nearest-neighbour classifier (the InstDisc / SimCLR kNN monitor).

    Each query takes its ``k`` most cosine-similar train points and each neighbour votes for
    its label with weight ``exp(s/τ)``; the class with the largest total wins. Among train
    points with equal similarity the lower train index enters the top-k first; equal vote
    totals go to the lower class index. Queries are processed ``chunk_size`` at a time, so
    memory is ``O((N + Q)·D + chunk_size·min(N, 4096))``: the neighbours come from the search
    engine of :func:`jaxemb.retrieval.search` (``metric="cosine"``), which also splits a
    train set sharded over a mesh between the devices.

    Args:
      train_x: train embeddings, [N, D] floating point (normalised internally).
      train_y: train labels, [N] integers in ``[0, num_classes)``.
      test_x: query embeddings, [Q, D].
      k: neighbours per query, ``1 <= k <= N`` (default 20, the DCL / InstDisc monitor uses
        200 on ImageNet-scale banks).
      temperature: ``τ > 0`` of the vote weights ``exp(s/τ)`` (default 0.07).
      num_classes: number of classes; ``None`` infers ``max(train_y) + 1``.
      chunk_size: queries per chunk.

    Returns:
      [Q] int32 predicted labels.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> train_x = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
      >>> train_y = jnp.array([0, 0, 1, 1])
      >>> test_x = jnp.array([[1.0, 0.2], [0.2, 1.0]])
      >>> analysis.knn_classify(train_x, train_y, test_x, k=3).tolist()
      [0, 1]

    References:
      Wu, Xiong, Yu, Lin, "Unsupervised Feature Learning via Non-Parametric Instance
      Discrimination", CVPR 2018 (the weighted kNN evaluation); semantics of the ``kNN``
      monitor in zhirongw/lemniscate.pytorch and chingyaoc/DCL (``topk`` of ``features @
      bank``, one-hot votes scaled by ``exp(sim / τ)``, argmax).
    """
    train_x, train_y, test_x = _validate_knn(
        train_x, train_y, test_x, k, temperature, num_classes, chunk_size
    )
    num_classes = _resolve_num_classes(num_classes, {"train_y": train_y})
    return _knn_classify(
        jnp.asarray(train_x),
        jnp.asarray(train_y),
        jnp.asarray(test_x),
        jnp.asarray(temperature, jnp.float32),
        k=int(k),
        num_classes=num_classes,
        chunk_size=min(int(chunk_size), test_x.shape[0]),
        layout=_row_layout(train_x),
    )


@jax.jit
def _num_correct(pred: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.sum(pred == y.astype(pred.dtype))


def knn_accuracy(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> float:
    """Accuracy of :func:`knn_classify` on labelled queries.

    Args:
      train_x: train embeddings, [N, D] floating point.
      train_y: train labels, [N] integers.
      test_x: query embeddings, [Q, D].
      test_y: query labels, [Q] integers.
      k: neighbours per query, ``1 <= k <= N``.
      temperature: ``τ > 0`` of the vote weights ``exp(s/τ)``.
      num_classes: number of classes; ``None`` infers it from ``train_y`` and ``test_y``.
      chunk_size: queries per chunk.

    Returns:
      Fraction of queries whose predicted label equals ``test_y`` (a Python float).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> train_x = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
      >>> train_y = jnp.array([0, 0, 1, 1])
      >>> test_x = jnp.array([[1.0, 0.2], [0.2, 1.0]])
      >>> analysis.knn_accuracy(train_x, train_y, test_x, jnp.array([0, 0]), k=3)
      0.5

    References:
      As :func:`knn_classify`.
    """
    train_x, train_y, test_x = _validate_knn(
        train_x, train_y, test_x, k, temperature, num_classes, chunk_size
    )
    test_y = _as_array(test_y)
    check_labels(test_y, "test_y", test_x.shape[0])
    num_classes = _resolve_num_classes(num_classes, {"train_y": train_y, "test_y": test_y})
    pred = _knn_classify(
        jnp.asarray(train_x),
        jnp.asarray(train_y),
        jnp.asarray(test_x),
        jnp.asarray(temperature, jnp.float32),
        k=int(k),
        num_classes=num_classes,
        chunk_size=min(int(chunk_size), test_x.shape[0]),
        layout=_row_layout(train_x),
    )
    return int(_num_correct(pred, jnp.asarray(test_y))) / test_x.shape[0]


# ---------------------------------------------------------------------------------------------
# Linear probe
# ---------------------------------------------------------------------------------------------


class ProbeResult(NamedTuple):
    """Result of :func:`linear_probe`.

    Attributes:
      accuracy: test accuracy (Python float).
      train_accuracy: train accuracy (Python float).
      weights: [D, C] weights acting on the raw (unstandardised) inputs.
      bias: [C] bias; predictions are ``argmax(x @ weights + bias)``.
    """

    accuracy: float
    train_accuracy: float
    weights: jax.Array
    bias: jax.Array


_STD_FLOOR = 1e-6


def _softmax_xent(params, x, y, l2):
    w, b = params
    logits = x @ w + b[None, :]
    nll = jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    return jnp.mean(nll) + 0.5 * l2 * jnp.sum(w * w)


@functools.partial(
    jax.jit,
    static_argnames=("num_classes", "steps", "optimizer", "batch_size", "standardize"),
)
def _fit_probe(
    x, y, l2, learning_rate, tol, key, *, num_classes, steps, optimizer, batch_size, standardize
):
    x = _to_float(x)
    y = y.astype(jnp.int32)
    n, d = x.shape
    l2 = l2.astype(x.dtype)
    if standardize:
        mean = jnp.mean(x, axis=0)
        std = jnp.std(x, axis=0)
        scale = jnp.where(std > _STD_FLOOR, std, 1.0)  # constant features are left unscaled
    else:
        mean = jnp.zeros((d,), x.dtype)
        scale = jnp.ones((d,), x.dtype)
    z = (x - mean[None, :]) / scale[None, :]
    params = (jnp.zeros((d, num_classes), x.dtype), jnp.zeros((num_classes,), x.dtype))

    if optimizer == "lbfgs":
        objective = functools.partial(_softmax_xent, x=z, y=y, l2=l2)
        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(objective)

        def cond(carry):
            _, _, it, gnorm = carry
            return (it < steps) & (gnorm > tol)

        def body(carry):
            params, state, it, _ = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = opt.update(
                grad, state, params, value=value, grad=grad, value_fn=objective
            )
            return optax.apply_updates(params, updates), state, it + 1, optax.tree.norm(grad)

        init = (params, opt.init(params), jnp.asarray(0), jnp.asarray(jnp.inf, x.dtype))
        params = jax.lax.while_loop(cond, body, init)[0]
    else:  # adam, full batch or minibatch
        opt = optax.adam(learning_rate)
        grad_fn = jax.grad(_softmax_xent)

        def step(i, carry):
            params, state = carry
            if batch_size is None:
                zb, yb = z, y
            else:
                idx = jax.random.randint(jax.random.fold_in(key, i), (batch_size,), 0, n)
                zb, yb = z[idx], y[idx]
            updates, state = opt.update(grad_fn(params, zb, yb, l2), state, params)
            return optax.apply_updates(params, updates), state

        params = jax.lax.fori_loop(0, steps, step, (params, opt.init(params)))[0]

    # Fold the standardisation into the weights: ((x − μ)/s) W + b = x (W/s) + (b − (μ/s) W).
    w, b = params
    w_raw = w / scale[:, None]
    b_raw = b - (mean / scale) @ w
    return w_raw, b_raw


def _probe_accuracy(x, y, w, b) -> float:
    return int(_num_correct(_probe_predict(x, w, b), y)) / x.shape[0]


@jax.jit
def _probe_predict(x, w, b):
    return jnp.argmax(_to_float(x) @ w + b[None, :], axis=1).astype(jnp.int32)


def linear_probe(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    *,
    l2: float = 1e-4,
    steps: int = 500,
    learning_rate: float = 0.1,
    standardize: bool = True,
    seed: int = 0,
    optimizer: str = "lbfgs",
    batch_size: int | None = None,
    tol: float = 1e-6,
    num_classes: int | None = None,
) -> ProbeResult:
    """Multinomial logistic-regression probe of frozen embeddings, trained with optax.

    Minimises ``mean_i CE(softmax(x_i W + b), y_i) + l2·‖W‖²/2`` (no penalty on the bias) from
    zero initialisation. With ``standardize`` every feature is shifted and scaled by the mean
    and standard deviation of the **train** split (features with std below 1e-6 are only
    shifted); the returned weights have the standardisation folded in, so they act on raw
    inputs. The default optimiser is full-batch L-BFGS (``optax.lbfgs`` with its zoom line
    search), which reaches the optimum of this strongly convex problem reliably; it stops after
    ``steps`` iterations or when the gradient norm drops below ``tol``. ``optimizer="adam"``
    runs ``steps`` Adam steps at ``learning_rate``, full batch or, with ``batch_size``, on
    minibatches drawn with replacement from ``seed``.

    Args:
      train_x: train embeddings, [N, D] floating point, all finite.
      train_y: train labels, [N] integers in ``[0, C)``.
      test_x: test embeddings, [M, D], all finite.
      test_y: test labels, [M] integers in ``[0, C)``.
      l2: L2 penalty strength ``>= 0`` on the weights.
      steps: maximum number of optimiser iterations.
      learning_rate: Adam step size (unused by L-BFGS, whose steps come from its line search).
      standardize: standardise features with train-split statistics.
      seed: seed of the minibatch sampling (used only with ``batch_size``).
      optimizer: ``"lbfgs"`` or ``"adam"``.
      batch_size: minibatch size for ``"adam"``; ``None`` is full batch.
      tol: gradient-norm stopping tolerance of L-BFGS.
      num_classes: C; ``None`` infers ``max(train_y, test_y) + 1``.

    Returns:
      ``ProbeResult(accuracy, train_accuracy, weights [D, C], bias [C])``; both accuracies
      are computed from the returned weights, ``argmax(x @ weights + bias)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> x = jnp.array([[0.0, 1.0], [0.2, 1.1], [1.0, 0.0], [1.1, 0.3]])
      >>> y = jnp.array([0, 0, 1, 1])
      >>> result = analysis.linear_probe(x, y, x, y)
      >>> result.accuracy, result.weights.shape
      (1.0, (2, 2))

    References:
      The linear evaluation protocol of SimCLR (Chen et al. 2020) and Kolesnikov, Zhai, Beyer
      "Revisiting Self-Supervised Visual Representation Learning" (2019): an L2-regularised
      multinomial logistic regression on frozen features, as scikit-learn's
      ``LogisticRegression(solver="lbfgs")`` fits it (there ``C = 1 / (N·l2)``).
    """
    train_x = _check_embeddings(train_x, "train_x")
    test_x = _check_embeddings(test_x, "test_x")
    train_y = _as_array(train_y)
    test_y = _as_array(test_y)
    check_labels(train_y, "train_y", train_x.shape[0])
    check_labels(test_y, "test_y", test_x.shape[0])
    check_axis_match(train_x, "train_x", 1, test_x, "test_x", 1)
    if is_concrete(train_y) and np.unique(np.asarray(train_y)).size < 2:
        raise ValueError(
            "train_y must hold at least 2 classes (a probe trained on one class predicts it "
            f"everywhere and measures nothing); got only class {np.asarray(train_y).ravel()[0]}"
        )
    check_positive(l2, "l2", strict=False)
    check_int(steps, "steps", minimum=1)
    check_positive(learning_rate, "learning_rate")
    check_positive(tol, "tol", strict=False)
    check_int(seed, "seed")
    check_choice(optimizer, "optimizer", ("lbfgs", "adam"))
    if standardize not in (True, False):
        raise ValueError(f"standardize must be a bool; got {standardize!r}")
    if batch_size is not None:
        if optimizer != "adam":
            raise ValueError(
                f"batch_size needs optimizer='adam' (L-BFGS is full batch); got {optimizer!r}"
            )
        check_int(batch_size, "batch_size", minimum=1, maximum=train_x.shape[0])
    _check_finite_rows(train_x, "train_x")
    _check_finite_rows(test_x, "test_x")
    num_classes = _resolve_num_classes(num_classes, {"train_y": train_y, "test_y": test_y})

    # float32, or wider where JAX allows it (a float64 NumPy input without x64 is float32)
    dtype = jnp.asarray(train_x).dtype
    dtype = jnp.promote_types(dtype, jnp.float32)
    w, b = _fit_probe(
        jnp.asarray(train_x),
        jnp.asarray(train_y),
        jnp.asarray(l2, dtype),
        jnp.asarray(learning_rate, dtype),
        jnp.asarray(tol, dtype),
        jax.random.key(int(seed)),
        num_classes=num_classes,
        steps=int(steps),
        optimizer=optimizer,
        batch_size=None if batch_size is None else int(batch_size),
        standardize=bool(standardize),
    )
    return ProbeResult(
        accuracy=_probe_accuracy(jnp.asarray(test_x), jnp.asarray(test_y), w, b),
        train_accuracy=_probe_accuracy(jnp.asarray(train_x), jnp.asarray(train_y), w, b),
        weights=w,
        bias=b,
    )


__all__ = ["knn_classify", "knn_accuracy", "linear_probe", "ProbeResult"]
