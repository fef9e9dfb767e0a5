"""Score-supervised losses with sentence-transformers semantics: CoSENT, AnglE, cosine MSE,
MarginMSE and KL distillation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxemb import _validate as v
from jaxemb._numerics import propagate_nan
from jaxemb.losses import _st_ops as st
from jaxemb.losses._common import as_float, l2_normalize


def _check_scored_pairs(a, b, scores):
    a, b, scores = st.to_array(a), st.to_array(b), st.to_array(scores)
    st.check_embeddings(a, "a")
    st.check_like(a, "a", b, "b")
    st.check_vector(scores, "scores", a.shape[0])
    return a, b, scores


def _ranking_loss(sims, scores, scale):
    """``log(1 + Σ_{y_i < y_j} exp(scale·(s_i − s_j)))`` via a masked log-sum-exp with a 0."""
    s = sims * scale
    diff = s[:, None] - s[None, :]
    y = as_float(st.as_labels(scores))
    mask = y[:, None] < y[None, :]
    m = jnp.maximum(jnp.max(jnp.where(mask, diff, -jnp.inf)), 0.0)
    m = jax.lax.stop_gradient(m)
    # Masked entries become exp(-inf) = 0 *before* exponentiating: no inf·0 in the gradient.
    total = jnp.exp(-m) + jnp.sum(jnp.exp(jnp.where(mask, diff - m, -jnp.inf)))
    return m + jnp.log(total)


def cosent(a: ArrayLike, b: ArrayLike, scores: ArrayLike, *, scale: float = 20.0) -> jax.Array:
    """CoSENT: a pairwise ranking loss that orders cosine similarities like the gold scores.

    ``L = log(1 + Σ_{(i, j): y_i < y_j} exp(scale · (cos_i − cos_j)))`` with
    ``cos_i = cos(a_i, b_i)`` (``F.normalize``, eps 1e-12); pairs with tied scores contribute
    nothing. Evaluated as a log-sum-exp with a prepended 0.

    Args:
      a: ``[batch, dim]`` float.
      b: ``[batch, dim]`` float; row ``i`` pairs with ``a[i]``.
      scores: ``[batch]`` gold similarity of each pair (only their order matters).
      scale: ``> 0``; inverse temperature applied to the cosines.

    Returns:
      A float32 scalar over the whole batch (a single log-sum-exp, not a per-pair mean).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import cosent
      >>> a = jnp.array([[1.0, 0.0], [1.0, 0.0]])
      >>> b = jnp.array([[1.0, 0.0], [0.0, 1.0]])  # cosines 1 and 0
      >>> # the pair scored lower has the higher cosine: log(1 + e^(1 * (1 - 0)))
      >>> round(float(cosent(a, b, jnp.array([0.0, 1.0]), scale=1.0)), 4)
      1.3133

    References:
      Su Jianlin, "CoSENT" (kexue.fm/archives/8847), 2022. sentence-transformers
      ``CoSENTLoss`` (``scale=20.0``, ``similarity_fct=util.pairwise_cos_sim``).
    """
    a, b, scores = _check_scored_pairs(a, b, scores)
    v.check_positive(scale, "scale")
    return _cosent(a, b, scores, scale)


@jax.jit
@propagate_nan
def _cosent(a, b, scores, scale):
    sims = st.st_pairwise_cos_sim(as_float(a), as_float(b))
    return _ranking_loss(sims, scores, scale)


def angle_similarity(x: jax.Array, y: jax.Array) -> jax.Array:
    """sentence-transformers v6 ``util.pairwise_angle_sim``: ``|cos + sin|`` of the complex split.

    After ``F.normalize``, the first and second halves of each vector are the real and imaginary
    parts (an odd width is zero-padded by one); ``cos = Σ x̂·ŷ`` and
    ``sin = Σ (x̂_im·ŷ_re − x̂_re·ŷ_im)``.
    """
    x, y = as_float(x), as_float(y)
    if x.shape[-1] % 2:
        x = jnp.pad(x, ((0, 0), (0, 1)))
        y = jnp.pad(y, ((0, 0), (0, 1)))
    nx, ny = l2_normalize(x), l2_normalize(y)
    half = x.shape[-1] // 2
    cosines = jnp.sum(nx * ny, axis=-1)
    sines = jnp.sum(nx[:, half:] * ny[:, :half] - nx[:, :half] * ny[:, half:], axis=-1)
    return jnp.abs(cosines + sines)


def angle(a: ArrayLike, b: ArrayLike, scores: ArrayLike, *, scale: float = 20.0) -> jax.Array:
    """AnglE: CoSENT on the angle similarity of the complex-split embeddings.

    Each embedding is L2-normalised and split into halves ``(re, im)`` (odd widths are
    zero-padded by one, as sentence-transformers v6); the similarity of a pair is
    ``|Σ â·b̂ + Σ (â_im·b̂_re − â_re·b̂_im)|`` (``util.pairwise_angle_sim``, the normalised
    complex division of AnglE), and the loss is the CoSENT ranking loss of those similarities:
    ``log(1 + Σ_{y_i < y_j} exp(scale · (s_i − s_j)))``.

    Args:
      a: ``[batch, dim]`` float.
      b: ``[batch, dim]`` float; row ``i`` pairs with ``a[i]``.
      scores: ``[batch]`` gold similarity of each pair (only their order matters).
      scale: ``> 0``; inverse temperature.

    Returns:
      A float32 scalar over the whole batch.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import angle
      >>> a = jnp.array([[1.0, 0.0], [1.0, 0.0]])
      >>> b = jnp.array([[0.0, 1.0], [1.0, 1.0]])
      >>> # angle similarities |cos + sin|: |0 - 1| = 1 and |0.71 - 0.71| = 0
      >>> round(float(angle(a, b, jnp.array([0.0, 1.0]), scale=1.0)), 4)
      1.3133

    References:
      Li & Li, "AnglE-optimized Text Embeddings", 2023. sentence-transformers ``AnglELoss``
      (``scale=20.0``, ``util.pairwise_angle_sim``).
    """
    a, b, scores = _check_scored_pairs(a, b, scores)
    v.check_positive(scale, "scale")
    return _angle(a, b, scores, scale)


@jax.jit
@propagate_nan
def _angle(a, b, scores, scale):
    return _ranking_loss(angle_similarity(a, b), scores, scale)


def cosine_mse(a: ArrayLike, b: ArrayLike, scores: ArrayLike) -> jax.Array:
    """Cosine-similarity regression: ``mean (cos(a_i, b_i) − y_i)²``.

    The cosine is ``torch.cosine_similarity`` (each norm clamped to 1e-8), as in
    sentence-transformers' ``CosineSimilarityLoss`` with its default ``MSELoss``.

    Args:
      a: ``[batch, dim]`` float.
      b: ``[batch, dim]`` float; row ``i`` pairs with ``a[i]``.
      scores: ``[batch]`` gold cosine similarity of each pair.

    Returns:
      A float32 scalar, the mean over pairs.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import cosine_mse
      >>> a = jnp.array([[1.0, 0.0], [1.0, 0.0]])
      >>> b = jnp.array([[0.0, 1.0], [1.0, 1.0]])  # cosines 0 and 1/sqrt(2)
      >>> round(float(cosine_mse(a, b, jnp.array([0.0, 1.0]))), 4)
      0.0429

    References:
      Reimers & Gurevych, "Sentence-BERT", EMNLP 2019. sentence-transformers
      ``CosineSimilarityLoss`` (``loss_fct=nn.MSELoss()``, identity transformation).
    """
    a, b, scores = _check_scored_pairs(a, b, scores)
    return _cosine_mse(a, b, scores)


@jax.jit
def _cosine_mse(a, b, scores):
    cos = st.torch_cosine_similarity(as_float(a), as_float(b))
    return jnp.mean((cos - as_float(scores)) ** 2)


def margin_mse(
    queries: ArrayLike, positives: ArrayLike, negatives: ArrayLike, teacher_margins: ArrayLike
) -> jax.Array:
    """MarginMSE distillation: ``mean ((q·p − q·n) − m_teacher)²`` with dot-product scores.

    Args:
      queries: ``[batch, dim]`` float.
      positives: ``[batch, dim]`` float; the first passage of each query.
      negatives: ``[batch, dim]`` float; the second passage of each query.
      teacher_margins: ``[batch]`` teacher score differences ``T(q, p) − T(q, n)``; treated as
        constants (no gradient), as sentence-transformers detaches its labels.

    Returns:
      A float32 scalar, the mean over the batch.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import margin_mse
      >>> q, p, n = jnp.array([[1.0, 0.0]]), jnp.array([[2.0, 0.0]]), jnp.array([[0.0, 1.0]])
      >>> float(margin_mse(q, p, n, jnp.array([1.5])))  # (2 - 0 - 1.5)^2
      0.25

    References:
      Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture
      Knowledge Distillation", 2020. sentence-transformers ``MarginMSELoss``
      (``similarity_fct=util.pairwise_dot_score``).
    """
    queries, positives, negatives = map(st.to_array, (queries, positives, negatives))
    teacher_margins = st.to_array(teacher_margins)
    st.check_embeddings(queries, "queries")
    st.check_like(queries, "queries", positives, "positives")
    st.check_like(queries, "queries", negatives, "negatives")
    st.check_vector(teacher_margins, "teacher_margins", queries.shape[0])
    return _margin_mse(queries, positives, negatives, teacher_margins)


@jax.jit
def _margin_mse(queries, positives, negatives, teacher_margins):
    q, p, n = as_float(queries), as_float(positives), as_float(negatives)
    pred = jnp.sum(q * p, axis=-1) - jnp.sum(q * n, axis=-1)
    target = jax.lax.stop_gradient(as_float(teacher_margins))
    return jnp.mean((pred - target) ** 2)


def distill_kl(
    queries: ArrayLike,
    documents: ArrayLike,
    teacher_scores: ArrayLike,
    *,
    temperature: float = 1.0,
) -> jax.Array:
    """KL distillation over each query's candidate list: ``τ² · KL(P_teacher ‖ P_student)``.

    Student scores are dot products ``s_ic = q_i · d_ic``; ``P_student = softmax(s/τ)`` and
    ``P_teacher = softmax(teacher_scores/τ)`` over the candidates ``c``. The loss is
    ``τ² · (1/B) Σ_i Σ_c P_t log(P_t / P_s)`` (``nn.KLDivLoss(reduction="batchmean")``, then the
    ``τ²`` rescaling). Teacher scores are constants (no gradient); a ``-inf`` teacher score
    excludes that candidate (``0 · log 0 = 0``).

    Args:
      queries: ``[batch, dim]`` float.
      documents: ``[batch, candidates, dim]`` float; ``documents[i]`` is query ``i``'s list
        (e.g. its positive then its negatives); ``candidates >= 2``.
      teacher_scores: ``[batch, candidates]`` teacher scores of the same pairs.
      temperature: ``τ > 0`` applied to both score sets.

    Returns:
      A float32 scalar, the KL summed over candidates and averaged over queries, times ``τ²``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.losses import distill_kl
      >>> q = jnp.array([[1.0, 0.0]])
      >>> docs = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])  # student scores [1, 0]
      >>> # teacher [0, 1]: KL = (σ(1) − σ(−1)) · 1
      >>> round(float(distill_kl(q, docs, jnp.array([[0.0, 1.0]]))), 4)
      0.4621

    References:
      Lin, Yang, Lin, "Distilling Dense Representations for Ranking using Tightly-Coupled
      Teachers", 2020. sentence-transformers ``DistillKLDivLoss``
      (``similarity_fct=util.pairwise_dot_score``, ``temperature=1.0``).
    """
    queries, documents = st.to_array(queries), st.to_array(documents)
    teacher_scores = st.to_array(teacher_scores)
    st.check_embeddings(queries, "queries")
    documents = v.check_array(documents, "documents", ndim=3)
    if documents.shape[0] != queries.shape[0] or documents.shape[2] != queries.shape[1]:
        raise ValueError(
            f"documents must be [batch, candidates, dim] with batch and dim of queries "
            f"{v.shape_str(queries)}; got {v.shape_str(documents)}"
        )
    if documents.shape[1] < 2:
        raise ValueError(
            "documents must hold at least 2 candidates per query (a softmax over one candidate "
            f"is constant); got {v.shape_str(documents)}"
        )
    teacher_scores = v.check_array(teacher_scores, "teacher_scores", ndim=2, kind="number")
    if tuple(teacher_scores.shape) != tuple(documents.shape[:2]):
        raise ValueError(
            f"teacher_scores must be [batch, candidates] = [{documents.shape[0]}, "
            f"{documents.shape[1]}] like documents {v.shape_str(documents)}; "
            f"got {v.shape_str(teacher_scores)}"
        )
    v.check_positive(temperature, "temperature")
    return _distill_kl(queries, documents, teacher_scores, temperature)


@jax.jit
@propagate_nan
def _distill_kl(queries, documents, teacher_scores, temperature):
    q, docs = as_float(queries), as_float(documents)
    student = jnp.einsum("bd,bcd->bc", q, docs, precision=st.HIGHEST) / temperature
    log_q = jax.nn.log_softmax(student, axis=-1)
    teacher = jax.lax.stop_gradient(as_float(teacher_scores)) / temperature
    log_p = jax.nn.log_softmax(teacher, axis=-1)
    p = jnp.exp(log_p)
    terms = jnp.where(p > 0, p * (jnp.where(p > 0, log_p, 0.0) - log_q), 0.0)
    return jnp.sum(terms) / q.shape[0] * temperature**2
