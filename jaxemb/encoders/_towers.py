"""Heads that score embeddings: a two-tower (CLIP/SigLIP) wrapper and fixed classifiers.

:class:`TwoTower` holds the learnable logit scale and bias of a contrastive image-text or
query-document model *in the model* (as big_vision does), so a loss only ever sees logits.
:class:`SimplexClassifier` and :class:`EquiangularClassifier` are linear classifiers whose class
vectors are fixed, non-trainable geometry (a regular simplex, or near-orthogonal basis vectors):
they are stored as :class:`FixedWeight` variables, which ``nnx.state(model, nnx.Param)``,
``nnx.grad`` and ``nnx.Optimizer(..., wrt=nnx.Param)`` skip.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxemb import _validate as v
from jaxemb.losses._common import l2_normalize


def _check_dtype(dtype: Any, name: str = "dtype"):
    if dtype is None:
        return None
    try:
        dt = jnp.dtype(dtype)
    except TypeError as err:
        raise ValueError(
            f"{name} must be a floating dtype such as jnp.bfloat16; got {dtype!r}"
        ) from err
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"{name} must be a floating dtype such as jnp.bfloat16; got {dt}")
    return dt


def _matmul_t(a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    """``a @ b.T`` computed in ``dtype`` (if given) with float32 accumulation and output."""
    if dtype is not None:
        a, b = a.astype(dtype), b.astype(dtype)
    return jnp.einsum("id,jd->ij", a, b, preferred_element_type=jnp.float32).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Two towers
# ---------------------------------------------------------------------------------------------


class TwoTower(nnx.Module):
    """CLIP/SigLIP two-tower wrapper: two encoders, a learnable logit scale and optional bias.

    ``__call__(queries, docs)`` returns the L2-normalised embeddings of both towers;
    ``logits(q_emb, d_emb) = exp(t) · q_emb d_embᵀ + b`` with the learnable log-scale ``t``
    (``log_temperature``; big_vision calls it ``t``, CLIP ``logit_scale``: it is the log of the
    *inverse* softmax temperature) and the learnable bias ``b`` (SigLIP; absent unless
    ``init_bias`` is given). Like CLIP, the scale is clamped at ``max_scale`` (100) in the
    forward pass, so ``t`` gets no gradient above ``log(max_scale)``.

    Feed the logits to a softmax loss (CLIP: ``init_log_temperature=log(1/0.07)``) or take
    ``logit_scale()`` and ``logit_bias()`` to :func:`jaxemb.losses.sigmoid_loss` (SigLIP:
    ``init_log_temperature=log(10)``, ``init_bias=-10``).

    Args:
      query_encoder: NNX module (or callable) mapping a query batch to ``[batch, dim]``.
      doc_encoder: module for documents; ``None`` shares ``query_encoder`` (a siamese model).
      init_log_temperature: initial ``t`` (default ``log(1/0.07)``, CLIP).
      init_bias: initial bias ``b``; ``None`` (default) means no bias at all.
      max_scale: clamp of ``exp(t)`` (CLIP's 100); ``None`` disables the clamp.
      dtype: compute dtype of the logits matmul (``None``: float32); accumulation and output are
        float32.
      rngs: unused (the scale and bias have deterministic initial values); accepted for the
        uniform ``Module(..., rngs=)`` signature.

    Call args:
      queries: input of ``query_encoder``.
      docs: input of ``doc_encoder``.
      **kwargs: passed to both encoders (e.g. ``rngs=`` for dropout).

    Returns:
      ``(q_emb [Bq, dim], d_emb [Bd, dim])``, float32, unit-norm rows.

    Examples:
      >>> import jax.numpy as jnp, math
      >>> from flax import nnx
      >>> from jaxemb.encoders import MLPEncoder, TwoTower
      >>> tower = MLPEncoder(6, 4, hidden=(8,), rngs=nnx.Rngs(0))
      >>> model = TwoTower(tower, init_log_temperature=math.log(10.0), init_bias=-10.0)
      >>> q, d = model(jnp.ones((3, 6)), jnp.zeros((5, 6)))
      >>> model.logits(q, d).shape
      (3, 5)
      >>> # 10 · cos(q, q) - 10 = 0 up to float32 rounding (of either sign)
      >>> abs(float(model.logits(q, q)[0, 0])) < 1e-5
      True

    References:
      Radford et al., "Learning Transferable Visual Models From Natural Language Supervision"
      (CLIP), 2021 (``logit_scale`` init ``log(1/0.07)``, clamp at 100, as in OpenAI CLIP /
      open_clip); Zhai et al., "Sigmoid Loss for Language Image Pre-Training" (SigLIP), 2023,
      big_vision ``models/proj/image_text/two_towers.py`` (``t`` init ``log 10``, ``b`` init −10).
    """

    def __init__(
        self,
        query_encoder: Callable[..., jax.Array],
        doc_encoder: Callable[..., jax.Array] | None = None,
        *,
        init_log_temperature: float = math.log(1 / 0.07),
        init_bias: float | None = None,
        max_scale: float | None = 100.0,
        dtype: Any = None,
        rngs: nnx.Rngs | None = None,
    ):
        del rngs
        if not callable(query_encoder):
            raise ValueError(
                f"query_encoder must be a callable module; got {type(query_encoder).__name__}"
            )
        if doc_encoder is not None and not callable(doc_encoder):
            raise ValueError(
                f"doc_encoder must be a callable module or None; got {type(doc_encoder).__name__}"
            )
        if not isinstance(init_log_temperature, (int, float)) or not math.isfinite(
            init_log_temperature
        ):
            raise ValueError(
                f"init_log_temperature must be a finite number; got {init_log_temperature!r}"
            )
        if init_bias is not None and (
            not isinstance(init_bias, (int, float)) or not math.isfinite(init_bias)
        ):
            raise ValueError(f"init_bias must be a finite number or None; got {init_bias!r}")
        if max_scale is not None:
            v.check_positive(max_scale, "max_scale")
        self.query_encoder = query_encoder
        self.doc_encoder = doc_encoder
        self.max_scale = None if max_scale is None else float(max_scale)
        self.dtype = _check_dtype(dtype)
        self.log_temperature = nnx.Param(jnp.asarray(init_log_temperature, jnp.float32))
        self.bias = None if init_bias is None else nnx.Param(jnp.asarray(init_bias, jnp.float32))

    def _embed(self, encoder, x, name: str, kwargs) -> jax.Array:
        emb = encoder(x, **kwargs)
        if not hasattr(emb, "shape") or len(emb.shape) != 2:
            got = v.shape_str(emb) if hasattr(emb, "shape") else type(emb).__name__
            raise ValueError(f"the {name} encoder must return [batch, dim] embeddings; got {got}")
        emb = v.check_array(emb, f"{name} embeddings", ndim=2)
        return l2_normalize(emb)

    def encode_queries(self, queries: Any, **kwargs) -> jax.Array:
        """L2-normalised query embeddings ``[Bq, dim]`` (kwargs go to the encoder)."""
        return self._embed(self.query_encoder, queries, "query", kwargs)

    def encode_docs(self, docs: Any, **kwargs) -> jax.Array:
        """L2-normalised document embeddings ``[Bd, dim]`` (kwargs go to the encoder)."""
        encoder = self.query_encoder if self.doc_encoder is None else self.doc_encoder
        return self._embed(encoder, docs, "doc", kwargs)

    def __call__(self, queries: Any, docs: Any, **kwargs) -> tuple[jax.Array, jax.Array]:
        q, d = self.encode_queries(queries, **kwargs), self.encode_docs(docs, **kwargs)
        if q.shape[1] != d.shape[1]:
            raise ValueError(
                f"the two towers must embed into the same width; got query embeddings "
                f"{v.shape_str(q)} and doc embeddings {v.shape_str(d)}"
            )
        return q, d

    def logit_scale(self) -> jax.Array:
        """``exp(t)``, clamped at ``max_scale``: the factor multiplying the cosines."""
        t = self.log_temperature[...]
        if self.max_scale is not None:
            t = jnp.minimum(t, jnp.float32(math.log(self.max_scale)))
        return jnp.exp(t)

    def logit_bias(self) -> jax.Array:
        """The learnable bias ``b`` (a constant 0 when the model has none)."""
        return jnp.float32(0.0) if self.bias is None else self.bias[...]

    def logits(self, q_emb: jax.Array, d_emb: jax.Array) -> jax.Array:
        """Pairwise logits ``[Bq, Bd] = exp(t) · q_emb d_embᵀ + b`` (float32).

        Args:
          q_emb: ``[Bq, dim]`` query embeddings (normalised, as ``__call__`` returns them).
          d_emb: ``[Bd, dim]`` document embeddings.
        """
        q_emb = v.check_array(q_emb, "q_emb", ndim=2)
        d_emb = v.check_array(d_emb, "d_emb", ndim=2)
        v.check_axis_match(q_emb, "q_emb", 1, d_emb, "d_emb", 1)
        sims = _matmul_t(jnp.asarray(q_emb), jnp.asarray(d_emb), self.dtype)
        return self.logit_scale() * sims + self.logit_bias()


# ---------------------------------------------------------------------------------------------
# Fixed classifiers
# ---------------------------------------------------------------------------------------------


class FixedWeight(nnx.Variable):
    """A non-trainable weight: an ``nnx.Variable`` that is not an ``nnx.Param``.

    ``nnx.state(model, nnx.Param)``, ``nnx.grad`` and ``nnx.Optimizer(model, tx, wrt=nnx.Param)``
    leave it out, while ``nnx.state(model)`` (checkpoints) keeps it.
    """


def _orthogonal(dim: int, seed: int) -> np.ndarray:
    """A Haar-random ``[dim, dim]`` orthogonal matrix (QR of a Gaussian, signs fixed)."""
    g = np.random.default_rng(seed).standard_normal((dim, dim))
    q, r = np.linalg.qr(g)
    return q * np.sign(np.diag(r))[None, :]


def regular_simplex(dim: int, num_classes: int, *, seed: int | None = None) -> np.ndarray:
    """``K`` unit vectors in ``R^dim`` with pairwise cosine exactly ``−1/(K−1)``.

    The vertices of a regular simplex centred at the origin: the columns of the Helmert basis
    of ``{x : Σx = 0}`` scaled by ``sqrt(K/(K−1))`` (so the Gram matrix is
    ``K/(K−1)·(I − 11ᵀ/K)``), written in the first ``K − 1`` coordinates and zero-padded to
    ``dim``; with ``seed`` the vectors are rotated by a random orthogonal matrix instead, so they
    use every coordinate. Computed in float64, returned as float32.

    Args:
      dim: embedding width, at least ``num_classes − 1``.
      num_classes: ``K ≥ 2``.
      seed: ``None`` for the canonical (zero-padded) vectors, or an int for a random rotation.

    Returns:
      ``[num_classes, dim]`` float32 array of unit rows.

    Examples:
      >>> from jaxemb.encoders import regular_simplex
      >>> w = regular_simplex(2, 3)
      >>> (w @ w.T).round(3)
      array([[ 1. , -0.5, -0.5],
             [-0.5,  1. , -0.5],
             [-0.5, -0.5,  1. ]], dtype=float32)

    References:
      Papyan, Han & Donoho, "Prevalence of neural collapse during the terminal phase of deep
      learning training", PNAS 2020 (the simplex equiangular tight frame); Zhu et al., "A
      Geometric Analysis of Neural Collapse with Unconstrained Features", NeurIPS 2021
      (``sqrt(K/(K−1)) U (I − 11ᵀ/K)`` with a random partial orthogonal ``U``).
    """
    v.check_int(num_classes, "num_classes", minimum=2)
    v.check_int(dim, "dim", minimum=1)
    if dim < num_classes - 1:
        raise ValueError(
            f"dim must be >= num_classes - 1 = {num_classes - 1} to hold a regular simplex; "
            f"got dim={dim}"
        )
    if seed is not None:
        v.check_int(seed, "seed", minimum=0)
    k = num_classes
    helmert = np.zeros((k - 1, k))
    for i in range(1, k):
        helmert[i - 1, :i] = 1.0
        helmert[i - 1, i] = -float(i)
        helmert[i - 1] /= math.sqrt(i * (i + 1))
    w = np.zeros((k, dim))
    w[:, : k - 1] = math.sqrt(k / (k - 1)) * helmert.T
    if seed is not None:
        w = w @ _orthogonal(dim, seed)
    return w.astype(np.float32)


def _welch_bound(dim: int, num_classes: int) -> float:
    if num_classes <= dim:
        return 0.0
    return math.sqrt((num_classes - dim) / (dim * (num_classes - 1)))


def equiangular_basis(
    dim: int,
    num_classes: int,
    *,
    threshold: float = 0.1,
    seed: int = 0,
    max_steps: int = 20000,
    learning_rate: float = 0.5,
) -> np.ndarray:
    """``K`` unit vectors in ``R^dim`` with every pairwise ``|cos| ≤ threshold`` (EBV).

    Starts from Gaussian vectors (NumPy ``default_rng(seed)``) and runs projected gradient
    descent on the unit sphere on ``½ Σ_{i≠j} max(|cos_ij| − m, 0)²``, with the margin
    ``m = 0.9 · min(threshold, 0.9 · max|cos|)`` re-set every step (so the steps concentrate on the
    currently worst pairs), until the largest ``|cos|`` is at most ``threshold`` (checked again
    in float64 on the returned float32 vectors). Deterministic for a given ``seed`` and backend.
    ``num_classes`` may exceed ``dim``, as long as ``threshold`` is above the Welch bound
    ``sqrt((K − d) / (d (K − 1)))`` that no set of ``K`` vectors can beat.

    Args:
      dim: embedding width ``d``.
      num_classes: ``K ≥ 2``.
      threshold: largest allowed pairwise ``|cos|``, in ``(0, 1)``.
      seed: NumPy seed of the starting vectors.
      max_steps: gradient steps before giving up.
      learning_rate: step size (multiplied by ``1/sqrt(K)``).

    Returns:
      ``[num_classes, dim]`` float32 array of unit rows.

    Raises:
      ValueError: for invalid arguments, a threshold below the Welch bound, or when
        ``max_steps`` steps do not reach the threshold.

    Examples:
      >>> import numpy as np
      >>> from jaxemb.encoders import equiangular_basis
      >>> w = equiangular_basis(8, 12, threshold=0.3, seed=0)
      >>> c = w.astype(np.float64) @ w.T.astype(np.float64)
      >>> bool(np.abs(c - np.diag(np.diag(c))).max() <= 0.3)
      True

    References:
      Shen et al., "Equiangular Basis Vectors", CVPR 2023 (reference implementation
      aassxun/Equiangular-Basis-Vectors ``generate_EBV``: gradient descent on the pairwise
      cosines above a threshold); Welch, "Lower bounds on the maximum cross correlation of
      signals", 1974.
    """
    v.check_int(dim, "dim", minimum=1)
    v.check_int(num_classes, "num_classes", minimum=2)
    v.check_int(seed, "seed", minimum=0)
    v.check_int(max_steps, "max_steps", minimum=1)
    v.check_positive(learning_rate, "learning_rate")
    v.check_positive(threshold, "threshold")
    if not threshold < 1.0:
        raise ValueError(f"threshold must be < 1; got {threshold!r}")
    welch = _welch_bound(dim, num_classes)
    if threshold <= welch:
        raise ValueError(
            f"threshold must exceed the Welch bound sqrt((K-d)/(d(K-1))) = {welch:.4f} for "
            f"num_classes={num_classes} vectors in dim={dim}; got threshold={threshold!r}"
        )
    init = np.random.default_rng(seed).standard_normal((num_classes, dim)).astype(np.float32)
    # Stop a little below the threshold so float64 re-checking of the float32 result passes.
    stop = float(threshold) - 1e-5 if threshold > 2e-5 else float(threshold) / 2
    lr = float(learning_rate) / math.sqrt(num_classes)
    w, worst, steps = _ebv_descent(
        jnp.asarray(init), jnp.float32(threshold), jnp.float32(stop), jnp.float32(lr), max_steps
    )
    w = np.asarray(w, np.float32)
    w64 = w.astype(np.float64)
    c = w64 @ w64.T
    c = c / np.sqrt(np.outer(np.diag(c), np.diag(c)))
    np.fill_diagonal(c, 0.0)
    if np.abs(c).max() > threshold:
        raise ValueError(
            f"equiangular_basis did not reach threshold={threshold!r} in max_steps={max_steps} "
            f"steps (max |cos| = {float(np.abs(c).max()):.4f}, Welch bound {welch:.4f}); raise "
            "threshold or max_steps"
        )
    del worst, steps
    return w


@functools.partial(jax.jit, static_argnums=(4,))
def _ebv_descent(w0, threshold, stop, lr, max_steps):
    k = w0.shape[0]
    off_diag = 1.0 - jnp.eye(k, dtype=jnp.float32)

    def max_abs_cos(w):
        return jnp.max(jnp.abs(w @ w.T) * off_diag)

    def cond(carry):
        _, worst, step = carry
        return (worst > stop) & (step < max_steps)

    def body(carry):
        w, worst, step = carry
        margin = 0.9 * jnp.minimum(threshold, 0.9 * worst)
        c = (w @ w.T) * off_diag
        g = jnp.sign(c) * jnp.maximum(jnp.abs(c) - margin, 0.0)
        grad = g @ w
        grad = grad - jnp.sum(grad * w, axis=1, keepdims=True) * w  # tangent to the sphere
        w = l2_normalize(w - lr * grad)
        return w, max_abs_cos(w), step + 1

    w0 = l2_normalize(w0)
    return jax.lax.while_loop(cond, body, (w0, max_abs_cos(w0), jnp.int32(0)))


class _FixedClassifier(nnx.Module):
    """Shared forward of the fixed classifiers."""

    def _setup(self, weight: np.ndarray, scale: float, normalize_inputs: bool, dtype) -> None:
        v.check_positive(scale, "scale")
        if not isinstance(normalize_inputs, bool):
            raise ValueError(f"normalize_inputs must be a bool; got {normalize_inputs!r}")
        self.dim = weight.shape[1]
        self.num_classes = weight.shape[0]
        self.scale = float(scale)
        self.normalize_inputs = normalize_inputs
        self.dtype = _check_dtype(dtype)
        self.weight = FixedWeight(jnp.asarray(weight, jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = v.check_array(x, "x", ndim=2)
        if x.shape[1] != self.dim:
            raise ValueError(f"x must be [batch, {self.dim}]; got {v.shape_str(x)}")
        x = l2_normalize(x) if self.normalize_inputs else jnp.asarray(x, jnp.float32)
        return self.scale * _matmul_t(x, self.weight[...], self.dtype)


class SimplexClassifier(_FixedClassifier):
    """Linear classifier with fixed regular-simplex class vectors: ``logits = s · x Wᵀ``.

    ``W`` is :func:`regular_simplex` (``K`` unit rows, pairwise cosine ``−1/(K−1)``, the
    geometry classifiers converge to under neural collapse), stored as a non-trainable
    :class:`FixedWeight`, so only the backbone learns.

    Args:
      dim: feature width, at least ``num_classes − 1``.
      num_classes: ``K ≥ 2``.
      scale: fixed positive factor ``s`` on the logits (the inverse temperature; useful with
        ``normalize_inputs``).
      normalize_inputs: L2-normalise ``x`` first (cosine logits).
      seed: ``None`` or an int (random rotation of the simplex, see :func:`regular_simplex`).
      dtype: compute dtype of the matmul (``None``: float32); output float32.

    Call args:
      x: ``[batch, dim]`` features.

    Returns:
      ``[batch, num_classes]`` float32 logits.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb.encoders import SimplexClassifier
      >>> clf = SimplexClassifier(4, 3)
      >>> clf(jnp.ones((2, 4))).shape, len(nnx.state(clf, nnx.Param))
      ((2, 3), 0)

    References:
      Hoffer et al., "Fix your classifier: the marginal value of training the last weight
      layer", ICLR 2018; Papyan, Han & Donoho, PNAS 2020 (neural collapse, simplex ETF);
      Zhu et al., NeurIPS 2021 (fixed simplex-ETF classifier).
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        *,
        scale: float = 1.0,
        normalize_inputs: bool = False,
        seed: int | None = None,
        dtype: Any = None,
    ):
        self._setup(regular_simplex(dim, num_classes, seed=seed), scale, normalize_inputs, dtype)


class EquiangularClassifier(_FixedClassifier):
    """Linear classifier with fixed equiangular basis vectors (EBV): ``logits = s · x Wᵀ``.

    ``W`` is :func:`equiangular_basis`: ``K`` unit rows with all pairwise ``|cos| ≤
    threshold``, deterministic given ``seed`` and possibly more classes than dimensions. It is
    stored as a non-trainable :class:`FixedWeight`. The EBV paper's setting is
    ``normalize_inputs=True, scale=1/0.07``.

    Args:
      dim: feature width.
      num_classes: ``K ≥ 2``.
      threshold: largest allowed pairwise ``|cos|`` (above the Welch bound when ``K > dim``).
      seed: seed of the construction.
      scale: fixed positive factor ``s`` on the logits.
      normalize_inputs: L2-normalise ``x`` first (cosine logits).
      max_steps: gradient steps allowed to reach ``threshold``.
      dtype: compute dtype of the matmul (``None``: float32); output float32.

    Call args:
      x: ``[batch, dim]`` features.

    Returns:
      ``[batch, num_classes]`` float32 logits.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.encoders import EquiangularClassifier
      >>> clf = EquiangularClassifier(6, 10, threshold=0.5, seed=0, normalize_inputs=True,
      ...                             scale=1 / 0.07)
      >>> clf(jnp.ones((2, 6))).shape
      (2, 10)

    References:
      Shen et al., "Equiangular Basis Vectors", CVPR 2023 (reference implementation
      aassxun/Equiangular-Basis-Vectors: fixed basis, cosine logits divided by ``τ = 0.07``).
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        *,
        threshold: float = 0.1,
        seed: int = 0,
        scale: float = 1.0,
        normalize_inputs: bool = False,
        max_steps: int = 20000,
        dtype: Any = None,
    ):
        w = equiangular_basis(dim, num_classes, threshold=threshold, seed=seed, max_steps=max_steps)
        self.threshold = float(threshold)
        self._setup(w, scale, normalize_inputs, dtype)
