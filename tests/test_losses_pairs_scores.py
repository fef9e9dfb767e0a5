"""Pair and score losses (sentence-transformers v6 semantics) against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from losses_reference import logsumexp, normalize, numeric_grad

from jaxemb.losses import (
    angle,
    contrastive_pair,
    cosent,
    cosine_mse,
    distill_kl,
    margin_mse,
    online_contrastive,
)
from jaxemb.parallel import shard_batch

# ---------------------------------------------------------------------------------------------
# NumPy float64 references, written from the definitions.


def np_torch_cos(a, b, eps=1e-8):
    """torch.nn.functional.cosine_similarity: each norm clamped to eps separately."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na = np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), eps)
    nb = np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), eps)
    return np.sum((a / na) * (b / nb), axis=-1)


def np_siamese_distance(a, b, distance):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if distance == "cosine":
        return 1.0 - np_torch_cos(a, b)
    diff = a - b + 1e-6  # torch.nn.functional.pairwise_distance's eps
    if distance == "manhattan":
        return np.sum(np.abs(diff), axis=-1)
    return np.sqrt(np.sum(diff**2, axis=-1))


def np_contrastive(a, b, y, margin=0.5, distance="cosine"):
    d = np_siamese_distance(a, b, distance)
    y = np.asarray(y, np.float64)
    return np.mean(0.5 * (y * d**2 + (1 - y) * np.maximum(margin - d, 0.0) ** 2))


def np_online(a, b, y, margin=0.5):
    d = 1.0 - np_torch_cos(a, b)
    negs, poss = d[y == 0], d[y == 1]
    neg_thr = poss.max() if len(poss) else (negs.mean() if len(negs) else np.nan)
    pos_thr = negs.min() if len(negs) else (poss.mean() if len(poss) else np.nan)
    hard_negs = negs[negs < neg_thr]
    hard_poss = poss[poss > pos_thr]
    return np.sum(hard_poss**2) + np.sum(np.maximum(margin - hard_negs, 0.0) ** 2)


def np_rank_loss(sims, scores, scale):
    terms = [0.0]
    for i in range(len(scores)):
        for j in range(len(scores)):
            if scores[i] < scores[j]:
                terms.append(scale * (sims[i] - sims[j]))
    return float(logsumexp(np.array(terms)))


def np_cosent(a, b, scores, scale=20.0):
    sims = np.sum(normalize(a) * normalize(b), axis=-1)
    return np_rank_loss(sims, scores, scale)


def np_angle_sim(x, y):
    """AnglE's original complex-division form (the v5 sentence-transformers code path)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape[1] % 2:
        x = np.pad(x, ((0, 0), (0, 1)))
        y = np.pad(y, ((0, 0), (0, 1)))
    h = x.shape[1] // 2
    a, b, c, d = x[:, :h], x[:, h:], y[:, :h], y[:, h:]
    z = np.sum(c**2 + d**2, axis=1, keepdims=True)
    re = (a * c + b * d) / z
    im = (b * c - a * d) / z
    dz = np.sqrt(np.sum(a**2 + b**2, axis=1, keepdims=True))
    dw = np.sqrt(np.sum(c**2 + d**2, axis=1, keepdims=True))
    re, im = re / (dz / dw), im / (dz / dw)
    return np.abs(np.sum(re, axis=1) + np.sum(im, axis=1))


def np_angle(a, b, scores, scale=20.0):
    return np_rank_loss(np_angle_sim(a, b), scores, scale)


def np_cosine_mse(a, b, scores):
    return np.mean((np_torch_cos(a, b) - np.asarray(scores, np.float64)) ** 2)


def np_margin_mse(q, p, n, t):
    q, p, n = (np.asarray(u, np.float64) for u in (q, p, n))
    return np.mean((np.sum(q * p, -1) - np.sum(q * n, -1) - np.asarray(t, np.float64)) ** 2)


def np_distill_kl(q, docs, teacher, tau=1.0):
    q, docs = np.asarray(q, np.float64), np.asarray(docs, np.float64)
    s = np.einsum("bd,bcd->bc", q, docs) / tau
    t = np.asarray(teacher, np.float64) / tau
    log_q = s - logsumexp(s, axis=-1)[:, None]
    log_p = t - logsumexp(t, axis=-1)[:, None]
    p = np.exp(log_p)
    kl = np.where(p > 0, p * (np.where(p > 0, log_p, 0.0) - log_q), 0.0)
    return kl.sum() / len(q) * tau**2


def _x(rng, n=8, d=6, scale=1.0):
    return (scale * rng.normal(size=(n, d))).astype(np.float32)


def _check_grads(fn, ref, args, argnums, rtol=2e-3, atol=2e-5):
    grads = jax.grad(fn, argnums=argnums)(*args)
    args64 = [np.asarray(t, np.float64) for t in args]
    for k, gk in zip(argnums, grads, strict=True):

        def f(t, k=k):
            full = list(args64)
            full[k] = t
            return ref(*full)

        np.testing.assert_allclose(gk, numeric_grad(f, args64[k]), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# Contrastive pairs.


@pytest.mark.parametrize("distance", ["cosine", "euclidean", "manhattan"])
def test_contrastive_pair_value_and_grad(rng, distance):
    a, b = _x(rng), _x(rng)
    y = np.array([1, 0, 1, 0, 0, 1, 1, 0])
    margin = 1.0 if distance == "cosine" else 4.0  # some negatives inside, some outside
    f = lambda u, w: contrastive_pair(u, w, y, margin=margin, distance=distance)  # noqa: E731
    r = lambda u, w: np_contrastive(u, w, y, margin, distance)  # noqa: E731
    np.testing.assert_allclose(f(a, b), r(a, b), rtol=1e-5)
    _check_grads(f, r, (a, b), (0, 1))


def test_contrastive_pair_semantics():
    # pairwise_distance adds eps = 1e-6 to the difference: |0 - 1 + 1e-6| = 1 - 1e-6
    a, b = np.zeros((1, 1), np.float32), np.ones((1, 1), np.float32)
    for distance in ["euclidean", "manhattan"]:
        val = float(contrastive_pair(a, b, np.array([1]), distance=distance))
        np.testing.assert_allclose(val, 0.5 * (1 - 1e-6) ** 2, rtol=2e-7)
        assert val != 0.5
    # identical rows: d = sqrt(D)·1e-6 (euclidean), D·1e-6 (manhattan), finite gradients
    x = np.ones((2, 4), np.float32)
    y = np.array([1, 0])
    for distance, d in [("euclidean", 2e-6), ("manhattan", 4e-6), ("cosine", 0.0)]:
        val, g = jax.value_and_grad(
            lambda u, dd=distance: contrastive_pair(u, x, y, margin=0.5, distance=dd)
        )(x)
        np.testing.assert_allclose(val, (0.5 * d**2 + 0.5 * (0.5 - d) ** 2) / 2, rtol=1e-5)
        assert np.isfinite(np.asarray(g)).all()
    # hand-computed cosine case; float labels 0.0 / 1.0 are labels too
    a = np.array([[1, 0], [1, 0], [1, 0]], np.float32)
    b = np.array([[0, 1], [1, 1], [-1, 0]], np.float32)
    d = np.array([1.0, 1 - 2**-0.5, 2.0])
    y = np.array([1.0, 0.0, 0.0])
    expected = np.mean(0.5 * (y * d**2 + (1 - y) * np.maximum(0.5 - d, 0) ** 2))
    np.testing.assert_allclose(contrastive_pair(a, b, y), expected, rtol=1e-6)
    # a label other than 0 / 1 has no meaning for this loss: refused
    with pytest.raises(ValueError, match=r"labels must be 1 .* or 0 .*got values \[0.25\]"):
        contrastive_pair(a, b, np.array([1.0, 0.0, 0.25]))
    # a zero vector has cosine 0 (norm clamped to 1e-8), so distance 1
    z = np.zeros((1, 2), np.float32)
    val, g = jax.value_and_grad(lambda u: contrastive_pair(u, a[:1], np.array([1])))(z)
    assert float(val) == 0.5 and np.isfinite(np.asarray(g)).all()


def test_online_contrastive_value_and_grad(rng):
    a, b = _x(rng, n=10), _x(rng, n=10)
    y = np.array([1, 0, 1, 0, 0, 1, 1, 0, 1, 0])
    f = lambda u, w: online_contrastive(u, w, y, margin=1.2)  # noqa: E731
    r = lambda u, w: np_online(u, w, y, 1.2)  # noqa: E731
    assert np_online(a, b, y, 1.2) > 0
    np.testing.assert_allclose(f(a, b), r(a, b), rtol=1e-5)
    _check_grads(f, r, (a, b), (0, 1))


def _pairs_at(dists):
    """Unit pairs whose cosine distances are exactly ``dists``."""
    c = 1.0 - np.asarray(dists, np.float64)
    a = np.tile([1.0, 0.0], (len(c), 1))
    b = np.stack([c, np.sqrt(1 - c**2)], axis=1)
    return a.astype(np.float32), b.astype(np.float32)


def test_online_contrastive_thresholds():
    # standard case: hard positive 0.6 (> min neg 0.3), hard negative 0.3 (< max pos 0.6)
    a, b = _pairs_at([0.1, 0.6, 0.3, 0.9])
    val = float(online_contrastive(a, b, np.array([1, 1, 0, 0])))
    np.testing.assert_allclose(val, 0.6**2 + (0.5 - 0.3) ** 2, rtol=1e-5)
    # a single positive: v6 compares negatives with that positive (len(poss) > 0), not with the
    # negatives' mean 0.5 (the v5 `len(poss) > 1` guard would also select the negative at 0.4)
    a, b = _pairs_at([0.3, 0.2, 0.4, 0.9])
    val = float(online_contrastive(a, b, np.array([1, 0, 0, 0])))
    np.testing.assert_allclose(val, 0.3**2 + (0.5 - 0.2) ** 2, rtol=1e-5)
    # no positives: negatives below their own mean (0.4) are hard
    a, b = _pairs_at([0.1, 0.3, 0.8])
    val = float(online_contrastive(a, b, np.array([0, 0, 0])))
    np.testing.assert_allclose(val, 0.4**2 + 0.2**2, rtol=1e-5)
    # no negatives: positives above their own mean (0.4) are hard
    val = float(online_contrastive(a, b, np.array([1, 1, 1])))
    np.testing.assert_allclose(val, 0.8**2, rtol=1e-5)
    # strict comparisons exclude the threshold itself
    a, b = _pairs_at([0.2, 0.5, 0.5])
    val = float(online_contrastive(a, b, np.array([1, 0, 1])))
    # max pos 0.5, min neg 0.5: neither the negative at 0.5 nor the positive at 0.5 is hard
    assert val == 0.0
    # labels other than 0/1 (which sentence-transformers silently ignores) are refused
    with pytest.raises(ValueError, match=r"labels must be 1 .* or 0 .*got values \[2.0\]"):
        online_contrastive(a, b, np.array([1, 0, 2]))
    # a reduction check: sum (not mean) over the hard pairs
    a, b = _pairs_at([0.6, 0.7, 0.3, 0.2])
    val = float(online_contrastive(a, b, np.array([1, 1, 0, 0])))
    np.testing.assert_allclose(val, 0.36 + 0.49 + 0.04 + 0.09, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Score losses.


def _scores_with_ties(rng, n=8):
    s = rng.uniform(0, 1, size=n).round(1).astype(np.float32)
    s[1] = s[0]  # a tie: the pair (0, 1) contributes nothing
    return s


@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_cosent_value_and_grad(rng, scale):
    a, b = _x(rng), _x(rng)
    s = _scores_with_ties(rng)
    f = lambda u, w: cosent(u, w, s, scale=scale)  # noqa: E731
    r = lambda u, w: np_cosent(u, w, s, scale)  # noqa: E731
    np.testing.assert_allclose(f(a, b), r(a, b), rtol=1e-5)
    _check_grads(f, r, (a, b), (0, 1))


@pytest.mark.parametrize("dim", [6, 5])
@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_angle_value_and_grad(rng, dim, scale):
    a, b = _x(rng, d=dim), _x(rng, d=dim)
    s = _scores_with_ties(rng)
    f = lambda u, w: angle(u, w, s, scale=scale)  # noqa: E731
    r = lambda u, w: np_angle(u, w, s, scale)  # noqa: E731
    np.testing.assert_allclose(f(a, b), r(a, b), rtol=1e-5)
    _check_grads(f, r, (a, b), (0, 1))


def test_cosent_angle_semantics():
    a = np.array([[1, 0], [1, 0], [1, 0]], np.float32)
    b = np.array([[1, 0], [0, 1], [-1, 0]], np.float32)  # cosines 1, 0, -1
    # perfectly ordered scores: log(1 + e^-1 + e^-2 + e^-1) at scale 1
    expected = np.log(1 + 2 * np.exp(-1) + np.exp(-2))
    np.testing.assert_allclose(cosent(a, b, np.array([3.0, 2, 1]), scale=1.0), expected, 1e-6)
    # all scores tied: no pair, log(1) = 0 with zero gradient
    val, g = jax.value_and_grad(lambda u: cosent(u, b, np.ones(3, np.float32)))(a)
    assert float(val) == 0.0
    np.testing.assert_array_equal(g, 0.0)
    # integer and bool scores rank like floats
    np.testing.assert_allclose(
        cosent(a, b, np.array([0, 1, 1])), cosent(a, b, np.array([False, True, True])), 1e-7
    )
    # a single large violation: log(1 + e^{40}) ≈ 40 with scale 20 (no overflow)
    np.testing.assert_allclose(cosent(a[:2], b[:2], np.array([0.0, 1.0])), 20.0, rtol=1e-6)
    np.testing.assert_allclose(
        cosent(a, b, np.array([0.0, 0.5, 1.0])), np_cosent(a, b, [0.0, 0.5, 1.0]), rtol=1e-6
    )
    # AnglE similarity |cos + sin| of the complex split, hand-computed:
    # [1,0] vs [0,1]: cos 0, sin = 0·0 − 1·1 = −1 -> 1;  [1,0] vs [1,1]/√2: 0.71 − 0.71 -> 0
    a2 = np.array([[1, 0], [1, 0]], np.float32)
    b2 = np.array([[0, 1], [1, 1]], np.float32)
    np.testing.assert_allclose(
        angle(a2, b2, np.array([0.0, 1.0]), scale=1.0), np.log1p(np.e), rtol=1e-6
    )
    # odd widths are zero-padded by one: equal to padding by hand
    rng = np.random.default_rng(1)
    x, y, s = _x(rng, d=5), _x(rng, d=5), rng.uniform(size=8).astype(np.float32)
    pad = lambda t: np.pad(t, ((0, 0), (0, 1)))  # noqa: E731
    np.testing.assert_allclose(angle(x, y, s), angle(pad(x), pad(y), s), rtol=1e-6)


def test_cosine_mse_value_grad_and_semantics(rng):
    a, b = _x(rng), _x(rng)
    s = rng.uniform(-1, 1, size=8).astype(np.float32)
    f = lambda u, w, t: cosine_mse(u, w, t)  # noqa: E731
    np.testing.assert_allclose(f(a, b, s), np_cosine_mse(a, b, s), rtol=1e-5)
    # like torch's MSELoss, the gold scores receive a gradient too
    _check_grads(f, np_cosine_mse, (a, b, s), (0, 1, 2))
    a = np.array([[1, 0], [1, 0], [0, 0]], np.float32)
    b = np.array([[0, 1], [1, 1], [1, 0]], np.float32)  # cosines 0, 1/√2, 0 (zero vector)
    expected = np.mean([(0 - 0.5) ** 2, (2**-0.5 - 1) ** 2, (0 - 0.25) ** 2])
    val, g = jax.value_and_grad(lambda u: cosine_mse(u, b, np.array([0.5, 1.0, 0.25])))(a)
    np.testing.assert_allclose(val, expected, rtol=1e-6)
    assert np.isfinite(np.asarray(g)).all()


def test_margin_mse_value_and_grad(rng):
    q, p, n = _x(rng), _x(rng), _x(rng)
    t = rng.normal(size=8).astype(np.float32)
    np.testing.assert_allclose(margin_mse(q, p, n, t), np_margin_mse(q, p, n, t), rtol=1e-5)
    _check_grads(margin_mse, np_margin_mse, (q, p, n, t), (0, 1, 2))
    # teacher margins are detached (sentence-transformers calls labels.detach())
    g_t = jax.grad(margin_mse, argnums=3)(q, p, n, t)
    np.testing.assert_array_equal(g_t, 0.0)
    # hand-computed: (q·p − q·n − m)² = (2 − 0 − 1.5)²
    one = lambda *r: np.array([r], np.float32)  # noqa: E731
    assert float(margin_mse(one(1, 0), one(2, 0), one(0, 1), np.array([1.5]))) == 0.25


@pytest.mark.parametrize("tau", [1.0, 2.0, 0.05])
def test_distill_kl_value_and_grad(rng, tau):
    q = _x(rng, n=6, d=4)
    docs = rng.normal(size=(6, 3, 4)).astype(np.float32)
    t = rng.normal(size=(6, 3)).astype(np.float32)
    f = lambda u, w: distill_kl(u, w, t, temperature=tau)  # noqa: E731
    r = lambda u, w: np_distill_kl(u, w, t, tau)  # noqa: E731
    np.testing.assert_allclose(f(q, docs), r(q, docs), rtol=1e-5)
    _check_grads(f, r, (q, docs), (0, 1), atol=1e-4 if tau < 0.1 else 2e-5)
    g_t = jax.grad(lambda tt: distill_kl(q, docs, tt, temperature=tau))(t)
    np.testing.assert_array_equal(g_t, 0.0)  # the teacher is a constant


def test_distill_kl_semantics():
    q = np.array([[1.0, 0.0]], np.float32)
    docs = np.array([[[1.0, 0.0], [0.0, 1.0]]], np.float32)  # student scores [1, 0]
    # batchmean and τ²: KL(softmax(t/τ) ‖ softmax(s/τ)) · τ², hand-computed for τ = 2
    t = np.array([[0.0, 1.0]], np.float32)
    p = np.exp([0, 0.5]) / np.exp([0, 0.5]).sum()
    qs = np.exp([0.5, 0]) / np.exp([0.5, 0]).sum()
    expected = 4.0 * np.sum(p * np.log(p / qs))
    np.testing.assert_allclose(distill_kl(q, docs, t, temperature=2.0), expected, rtol=1e-6)
    # identical distributions: 0; batchmean divides by the number of queries, not of entries
    np.testing.assert_allclose(distill_kl(q, docs, np.array([[1.0, 0.0]])), 0.0, atol=1e-7)
    q2 = np.concatenate([q, q])
    docs2 = np.concatenate([docs, docs])
    np.testing.assert_allclose(
        distill_kl(q2, docs2, np.concatenate([t, t])), distill_kl(q, docs, t), rtol=1e-6
    )
    # a -inf teacher score excludes that candidate (0·log 0 = 0), with finite gradients
    docs3 = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], np.float32)
    t3 = np.array([[0.0, 1.0, -np.inf]], np.float32)
    val, g = jax.value_and_grad(lambda u: distill_kl(u, docs3, t3))(q)
    np.testing.assert_allclose(val, np_distill_kl(q, docs3, t3), rtol=1e-6)
    assert np.isfinite(np.asarray(g)).all()


# ---------------------------------------------------------------------------------------------
# Sharding, robustness, dtypes.

Y16 = np.array([1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 1, 0, 1])


def _loss_cases(rng, n=16, d=6, scale=1.0):
    """(name, function of the embedding arguments, embedding arguments)."""
    x = [_x(rng, n=n, d=d, scale=scale) for _ in range(3)]
    s = rng.uniform(size=n).round(1).astype(np.float32)
    t = rng.normal(size=n).astype(np.float32)
    docs = (scale * rng.normal(size=(n, 3, d))).astype(np.float32)
    ts = rng.normal(size=(n, 3)).astype(np.float32)
    y = Y16[:n]
    return [
        ("contrastive_cos", lambda a, b: contrastive_pair(a, b, y), x[:2]),
        ("contrastive_euc", lambda a, b: contrastive_pair(a, b, y, distance="euclidean"), x[:2]),
        ("contrastive_man", lambda a, b: contrastive_pair(a, b, y, distance="manhattan"), x[:2]),
        ("online", lambda a, b: online_contrastive(a, b, y, margin=1.0), x[:2]),
        ("cosent", lambda a, b: cosent(a, b, s), x[:2]),
        ("angle", lambda a, b: angle(a, b, s), x[:2]),
        ("cosine_mse", lambda a, b: cosine_mse(a, b, s), x[:2]),
        ("margin_mse", lambda q, p, n: margin_mse(q, p, n, t), x),
        ("distill_kl", lambda q, dd: distill_kl(q, dd, ts, temperature=2.0), [x[0], docs]),
    ]


@pytest.mark.parametrize("case", range(9))
def test_sharded_matches_single_device(rng, mesh8, case):
    name, fn, args = _loss_cases(rng)[case]
    argnums = tuple(range(len(args)))
    f = jax.jit(jax.value_and_grad(fn, argnums=argnums))
    v1, g1 = f(*args)
    v8, g8 = f(*shard_batch(mesh8, tuple(args)))
    assert len(g8[0].sharding.device_set) == 8
    np.testing.assert_allclose(v8, v1, rtol=1e-5, err_msg=name)
    for a8, a1 in zip(g8, g1, strict=True):
        # elementwise rtol, plus an atol of a few float32 ulps of the largest component (small
        # components of a gradient inherit the rounding of its large ones)
        atol = 1e-6 * np.abs(np.asarray(a1)).max()
        np.testing.assert_allclose(a8, a1, rtol=1e-5, atol=atol, err_msg=name)


def test_robust_large_norms_equal_and_zero_rows(rng):
    cases = {
        "norm1e4": _loss_cases(rng, n=8, scale=1e4),
        "equal": [(n, f, [np.ones_like(a) for a in args]) for n, f, args in _loss_cases(rng, n=8)],
        "zero": [(n, f, [np.zeros_like(a) for a in args]) for n, f, args in _loss_cases(rng, n=8)],
    }
    for kind, items in cases.items():
        for name, fn, args in items:
            val, grads = jax.value_and_grad(fn, argnums=tuple(range(len(args))))(*args)
            assert np.isfinite(float(val)), (kind, name)
            for gk in grads:
                assert np.isfinite(np.asarray(gk)).all(), (kind, name)
    # large norms leave the scale-free (cosine) losses unchanged
    rng2 = np.random.default_rng(3)
    a, b = _x(rng2), _x(rng2)
    s = rng2.uniform(size=8).astype(np.float32)
    for fn in [cosent, angle, cosine_mse]:
        np.testing.assert_allclose(fn(a * 1e4, b * 1e4, s), fn(a, b, s), rtol=1e-5, atol=1e-6)


def test_bfloat16_inputs_accumulate_in_float32(rng):
    a, b, c = (jnp.asarray(_x(rng), jnp.bfloat16) for _ in range(3))
    a64, b64, c64 = (np.asarray(t, np.float64) for t in (a, b, c))
    y = Y16[:8]
    s = rng.uniform(size=8).astype(np.float32)
    t = rng.normal(size=8).astype(np.float32)
    docs = jnp.asarray(rng.normal(size=(8, 3, 6)), jnp.bfloat16)
    ts = rng.normal(size=(8, 3)).astype(np.float32)
    pairs = [
        (contrastive_pair(a, b, y), np_contrastive(a64, b64, y)),
        (online_contrastive(a, b, y, margin=1.0), np_online(a64, b64, y, 1.0)),
        (cosent(a, b, s), np_cosent(a64, b64, s)),
        (angle(a, b, s), np_angle(a64, b64, s)),
        (cosine_mse(a, b, s), np_cosine_mse(a64, b64, s)),
        (margin_mse(a, b, c, t), np_margin_mse(a64, b64, c64, t)),
        (distill_kl(a, docs, ts), np_distill_kl(a64, np.asarray(docs, np.float64), ts)),
    ]
    for k, (got, ref) in enumerate(pairs):
        assert got.dtype == jnp.float32, k
        np.testing.assert_allclose(got, ref, rtol=1e-5, err_msg=str(k))


# ---------------------------------------------------------------------------------------------
# Validation.


def test_validation_errors():
    x = np.zeros((4, 3), np.float32)
    y = np.array([0, 1, 0, 1])
    s = np.zeros(4, np.float32)
    for fn in [contrastive_pair, online_contrastive]:
        with pytest.raises(ValueError, match=r"a must have rank 2; got shape \[4\]"):
            fn(np.zeros(4, np.float32), x, y)
        with pytest.raises(ValueError, match=r"b must be \[batch, dim\] like a \[4, 3\]; got"):
            fn(x, np.zeros((5, 3), np.float32), y)
        with pytest.raises(ValueError, match="a must have a float dtype"):
            fn(x.astype(np.int32), x, y)
        with pytest.raises(ValueError, match=r"labels must have shape \[4\].*got \[3\]"):
            fn(x, x, y[:3])
        with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
            fn(x, x, y, margin=-0.5)
    with pytest.raises(ValueError, match="distance must be one of"):
        contrastive_pair(x, x, y, distance="dot")
    for fn in [cosent, angle, cosine_mse]:
        with pytest.raises(ValueError, match=r"b must be \[batch, dim\].*got \[4, 2\]"):
            fn(x, np.zeros((4, 2), np.float32), s)
        with pytest.raises(ValueError, match=r"scores must have shape \[4\].*got \[5\]"):
            fn(x, x, np.zeros(5, np.float32))
        with pytest.raises(ValueError, match="scores must have rank 1"):
            fn(x, x, np.zeros((4, 1), np.float32))
        with pytest.raises(ValueError, match="b must have a float dtype"):
            fn(x, x.astype(np.int64), s)
    for fn in [cosent, angle]:
        with pytest.raises(ValueError, match="scale must be a finite number > 0; got 0.0"):
            fn(x, x, s, scale=0.0)
    with pytest.raises(ValueError, match=r"negatives must be \[batch, dim\] like queries"):
        margin_mse(x, x, np.zeros((3, 3), np.float32), s)
    with pytest.raises(ValueError, match=r"teacher_margins must have shape \[4\]"):
        margin_mse(x, x, x, np.zeros(2, np.float32))
    docs = np.zeros((4, 2, 3), np.float32)
    with pytest.raises(ValueError, match="documents must have rank 3"):
        distill_kl(x, x, np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"documents must be \[batch, candidates, dim\]"):
        distill_kl(x, np.zeros((4, 2, 5), np.float32), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2 candidates"):
        distill_kl(x, np.zeros((4, 1, 3), np.float32), np.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"teacher_scores must be \[batch, candidates\]"):
        distill_kl(x, docs, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        distill_kl(x, docs, np.zeros((4, 2)), temperature=0.0)
    with pytest.raises(ValueError, match="documents must have a float dtype"):
        distill_kl(x, docs.astype(np.int32), np.zeros((4, 2)))


# ---------------------------------------------------------------------------------------------
# Invariants (hypothesis).


@settings(max_examples=20, deadline=None)
@given(seed=hst.integers(0, 2**32 - 1))
def test_permutation_invariance(seed):
    r = np.random.default_rng(seed)
    p = r.permutation(8)
    a, b, c = (r.normal(size=(8, 5)).astype(np.float32) for _ in range(3))
    y = r.integers(0, 2, size=8)
    s = r.uniform(size=8).round(1).astype(np.float32)
    docs = r.normal(size=(8, 3, 5)).astype(np.float32)
    ts = r.normal(size=(8, 3)).astype(np.float32)
    checks = [
        (contrastive_pair(a[p], b[p], y[p]), contrastive_pair(a, b, y)),
        (online_contrastive(a[p], b[p], y[p], margin=1.0), online_contrastive(a, b, y, margin=1.0)),
        (cosent(a[p], b[p], s[p]), cosent(a, b, s)),
        (angle(a[p], b[p], s[p]), angle(a, b, s)),
        (cosine_mse(a[p], b[p], s[p]), cosine_mse(a, b, s)),
        (margin_mse(a[p], b[p], c[p], s[p]), margin_mse(a, b, c, s)),
        (distill_kl(a[p], docs[p], ts[p]), distill_kl(a, docs, ts)),
    ]
    for k, (got, want) in enumerate(checks):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=str(k))


@settings(max_examples=20, deadline=None)
@given(seed=hst.integers(0, 2**32 - 1), log_scale=hst.floats(-3.0, 3.0))
def test_cosine_losses_scale_invariant(seed, log_scale):
    r = np.random.default_rng(seed)
    a, b = (r.normal(size=(8, 6)).astype(np.float32) for _ in range(2))
    sa = np.float32(10.0**log_scale) * r.uniform(0.5, 2.0, size=(8, 1)).astype(np.float32)
    sb = r.uniform(0.5, 2.0, size=(8, 1)).astype(np.float32)
    y = r.integers(0, 2, size=8)
    s = r.uniform(size=8).astype(np.float32)
    fns = [
        lambda u, w: contrastive_pair(u, w, y),
        lambda u, w: online_contrastive(u, w, y, margin=1.0),
        lambda u, w: cosent(u, w, s),
        lambda u, w: angle(u, w, s),
        lambda u, w: cosine_mse(u, w, s),
    ]
    for k, fn in enumerate(fns):
        np.testing.assert_allclose(
            fn(a * sa, b * sb), fn(a, b), rtol=1e-5, atol=1e-6, err_msg=str(k)
        )
