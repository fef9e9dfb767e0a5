"""Testing with Concept Activation Vectors (TCAV): concept directions and their scores."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxemb._validate import check_int, check_positive, shape_str
from jaxemb.analysis._diagnostics import _to_float
from jaxemb.analysis._probes import _check_embeddings, _check_finite_rows, _fit_probe


class CAV(NamedTuple):
    """A concept activation vector, the result of :func:`concept_activation_vector`.

    Attributes:
      vector: [D] unit-norm normal of the separating hyperplane, pointing towards the concept.
      bias: scalar offset: ``x @ vector + bias > 0`` classifies ``x`` as the concept.
      accuracy: training accuracy of the classifier on the concept and random examples (TCAV
        trusts a CAV only when it separates them well).
    """

    vector: jax.Array
    bias: jax.Array
    accuracy: float


@jax.jit
def _unit_direction(w, b):
    # Two-class softmax: the log-odds of the concept (class 1) are x·(w₁ − w₀) + (b₁ − b₀).
    direction = w[:, 1] - w[:, 0]
    offset = b[1] - b[0]
    norm = jnp.sqrt(jnp.sum(direction * direction))
    return direction / norm, offset / norm


def concept_activation_vector(
    pos_x: ArrayLike,
    neg_x: ArrayLike,
    *,
    l2: float = 1e-2,
    steps: int = 500,
    standardize: bool = False,
    tol: float = 1e-6,
) -> CAV:
    """Fits a concept activation vector: the unit normal of a linear concept-vs-random classifier.

    An L2-regularised logistic regression (``mean CE + l2·‖W‖²/2``, fitted by full-batch
    L-BFGS as :func:`jaxemb.analysis.linear_probe` does, two classes) separates the concept
    examples (class 1) from random counter-examples (class 0); the CAV is the difference of
    the two class weight vectors, i.e. the normal of the decision boundary, scaled to unit
    norm and pointing towards the concept. With ``standardize`` the features are standardised
    for the fit and the direction is mapped back to raw activation space.

    Args:
      pos_x: activations of concept examples, [P, D] floating point, all finite.
      neg_x: activations of random (non-concept) examples, [Q, D].
      l2: L2 penalty ``>= 0`` on the weights (TCAV's ``SGDClassifier(alpha=0.01)`` default).
      steps: maximum L-BFGS iterations.
      standardize: standardise features for the fit (off by default, as in TCAV).
      tol: gradient-norm stopping tolerance.

    Returns:
      ``CAV(vector [D], bias, accuracy)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> pos = jnp.array([[2.0, 0.0], [3.0, 1.0], [2.5, -1.0]])
      >>> neg = jnp.array([[-2.0, 0.0], [-3.0, 1.0], [-2.5, -1.0]])
      >>> cav = analysis.concept_activation_vector(pos, neg)
      >>> (cav.vector.round(3) + 0.0).tolist(), cav.accuracy
      ([1.0, 0.0], 1.0)

    References:
      Kim et al., "Interpretability Beyond Feature Attribution: Quantitative Testing with
      Concept Activation Vectors (TCAV)", ICML 2018; tensorflow/tcav's ``cav.py`` (a linear
      classifier on concept vs. random activations, the CAV its weight vector towards the
      concept).
    """
    pos_x = _check_embeddings(pos_x, "pos_x")
    neg_x = _check_embeddings(neg_x, "neg_x")
    if neg_x.shape[1] != pos_x.shape[1]:
        raise ValueError(
            f"neg_x must have the width of pos_x {shape_str(pos_x)}, [Q, {pos_x.shape[1]}]; "
            f"got {shape_str(neg_x)}"
        )
    check_positive(l2, "l2", strict=False)
    check_int(steps, "steps", minimum=1)
    check_positive(tol, "tol", strict=False)
    if standardize not in (True, False):
        raise ValueError(f"standardize must be a bool; got {standardize!r}")
    _check_finite_rows(pos_x, "pos_x")
    _check_finite_rows(neg_x, "neg_x")
    x = jnp.concatenate([_to_float(jnp.asarray(pos_x)), _to_float(jnp.asarray(neg_x))])
    y = jnp.concatenate(
        [jnp.ones((pos_x.shape[0],), jnp.int32), jnp.zeros((neg_x.shape[0],), jnp.int32)]
    )
    w, b = _fit_probe(
        x,
        y,
        jnp.asarray(l2, x.dtype),
        jnp.asarray(1.0, x.dtype),
        jnp.asarray(tol, x.dtype),
        jax.random.key(0),
        num_classes=2,
        steps=int(steps),
        optimizer="lbfgs",
        batch_size=None,
        standardize=bool(standardize),
    )
    vector, bias = _unit_direction(w, b)
    correct = np.asarray((x @ vector + bias > 0).astype(jnp.int32) == y)
    return CAV(vector=vector, bias=bias, accuracy=float(correct.mean()))


@jax.jit
def _tcav(grads, v):
    dtype = jnp.promote_types(_to_float(grads).dtype, _to_float(v).dtype)
    return jnp.mean((grads.astype(dtype) @ v.astype(dtype) > 0).astype(dtype))


def tcav_score(grads: ArrayLike, cav: ArrayLike | CAV) -> jax.Array:
    """TCAV score: the fraction of examples whose directional derivative along the CAV is > 0.

    ``S = |{i : ∇h_l,k(x_i) · v > 0}| / N`` where ``grads[i]`` is the gradient of the class
    logit ``k`` with respect to the layer-``l`` activations of example ``i`` and ``v`` the
    concept's CAV. Only the sign of each derivative counts, so ``v`` need not be unit norm;
    a derivative of exactly 0 does not count as positive.

    Args:
      grads: gradients of a class logit w.r.t. the activations, [N, D] floating point.
      cav: the concept direction, [D], or a :class:`CAV` (its ``vector`` is used).

    Returns:
      Scalar fraction in ``[0, 1]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb import analysis
      >>> grads = jnp.array([[1.0, 0.0], [0.5, 2.0], [-1.0, 0.3], [0.0, 1.0]])
      >>> float(analysis.tcav_score(grads, jnp.array([1.0, 0.0])))
      0.5

    References:
      Kim et al., "Interpretability Beyond Feature Attribution: Quantitative Testing with
      Concept Activation Vectors (TCAV)", ICML 2018 (``TCAV_Q``; tensorflow/tcav's
      ``compute_tcav_score`` counts ``directional_derivative < 0`` of the loss gradient, the
      same as ``> 0`` of the logit gradient used here).
    """
    v = cav.vector if isinstance(cav, CAV) else cav
    grads = _check_embeddings(grads, "grads")
    if not hasattr(v, "shape") and isinstance(v, (list, tuple)):
        v = np.asarray(v)
    if not hasattr(v, "shape") or tuple(v.shape) != (grads.shape[1],):
        raise ValueError(
            f"cav must be a vector [{grads.shape[1]}] like the width of grads "
            f"{shape_str(grads)}; got {shape_str(v) if hasattr(v, 'shape') else type(v).__name__}"
        )
    _check_finite_rows(grads, "grads")
    return _tcav(jnp.asarray(grads), jnp.asarray(v))


__all__ = ["CAV", "concept_activation_vector", "tcav_score"]
