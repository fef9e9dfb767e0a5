"""SimANS, UNPG and NV-Retriever samplers and info_nce's negative_mask, against NumPy."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from losses_reference import logsumexp, normalize

from jaxemb.losses import info_nce
from jaxemb.negatives import false_negative_mask, simans_probs, simans_sample, unpg_filter
from jaxemb.parallel import shard_batch


def np_simans(scores, pos, a, b, valid=None):
    s = np.asarray(scores, np.float64)
    w = np.exp(-a * (s - np.asarray(pos, np.float64)[:, None] - b) ** 2)
    ok = np.isfinite(s) if valid is None else valid & np.isfinite(s)
    w = np.where(ok, w, 0.0)
    total = w.sum(1, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


_S = np.array(
    [[0.91, 0.85, 0.80, 0.62, 0.30, -np.inf], [0.5, 0.45, 0.44, 0.2, 0.1, 0.0]], np.float32
)
_P = np.array([0.8, 0.55], np.float32)


@pytest.mark.parametrize("a, b", [(1.0, 0.0), (25.0, 0.0), (40.0, -0.1)])
def test_simans_probs_match_numpy(a, b):
    valid = np.ones(_S.shape, bool)
    valid[1, 2] = False
    for mask in (None, valid):
        got = simans_probs(_S, _P, a=a, b=b, valid=mask)
        np.testing.assert_allclose(got, np_simans(_S, _P, a, b, mask), rtol=1e-5, atol=1e-7)
    # a row without any valid candidate is all zero
    none = simans_probs(np.full((1, 3), -np.inf, np.float32), np.zeros(1, np.float32))
    np.testing.assert_array_equal(none, 0.0)


@pytest.mark.parametrize("replace", [False, True])
def test_simans_sample_follows_the_distribution(replace):
    n = 4000  # the same row repeated: n independent draws from one key
    scores = np.repeat(_S[:1], n, axis=0)
    pos = np.repeat(_P[:1], n)
    idx = np.asarray(simans_sample(jax.random.key(0), scores, pos, 2, a=25.0, replace=replace))
    p = np_simans(_S[:1], _P[:1], 25.0, 0.0)[0]
    # the first draw follows p (also without replacement); never the missing candidate
    freq = np.bincount(idx[:, 0], minlength=6) / n
    assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-9), (freq, p)
    assert (idx != 5).all()
    if not replace:
        assert (idx[:, 0] != idx[:, 1]).all()  # distinct
    else:
        assert (idx[:, 0] == idx[:, 1]).any()  # independent draws may repeat
    # deterministic for a key, different for another
    again = np.asarray(simans_sample(jax.random.key(0), scores, pos, 2, a=25.0, replace=replace))
    np.testing.assert_array_equal(idx, again)
    other = np.asarray(simans_sample(jax.random.key(1), scores, pos, 2, a=25.0, replace=replace))
    assert (other != idx).any()


def test_simans_sample_marks_missing_draws():
    s = np.array([[0.9, -np.inf, 0.3, -np.inf]], np.float32)
    idx = simans_sample(jax.random.key(3), s, np.array([0.8], np.float32), 3)
    assert sorted(idx[0].tolist()) == [-1, 0, 2]


def np_unpg(s, neg, k, per_row):
    s = np.asarray(s, np.float64)
    out = np.ones(s.shape, bool)
    rows = [np.arange(s.shape[0])] if not per_row else [[i] for i in range(s.shape[0])]
    for r in rows:
        vals = s[r][neg[r]]
        q1, q3 = np.quantile(vals, [0.25, 0.75])
        fence = (s[r] >= q1 - k * (q3 - q1)) & (s[r] <= q3 + k * (q3 - q1))
        out[r] = np.where(neg[r], fence, True)
    return out


@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("k", [1.5, 0.5])
def test_unpg_filter_matches_numpy(per_row, k):
    rng = np.random.default_rng(0)
    s = np.round(rng.normal(0.2, 0.1, size=(6, 6)), 3).astype(np.float32)
    s[1, 4], s[3, 0] = 0.95, -0.6  # outliers above and below
    neg = ~np.eye(6, dtype=bool)  # the diagonal holds the positives
    got = unpg_filter(s, neg, k=k, axis=-1 if per_row else None)
    want = np_unpg(s, neg, k, per_row)
    np.testing.assert_array_equal(got, want)
    assert not got[1, 4] and np.asarray(got)[np.eye(6, dtype=bool)].all()


def test_false_negative_mask_is_sign_safe():
    s = np.array([[0.9, 0.76, 0.5], [-0.3, -0.31, -0.5]], np.float32)
    pos = np.array([0.8, -0.3], np.float32)
    got = false_negative_mask(s, pos, fraction=0.95)
    thr = pos - np.abs(pos) * 0.05  # 0.76 and -0.315
    np.testing.assert_array_equal(got, s > thr[:, None])
    assert got.tolist() == [[True, False, False], [True, True, False]]


def np_masked_info_nce(q, p, n, keep, t):
    q, p = normalize(q), normalize(p)
    docs = np.concatenate([p] + [normalize(n[:, h]) for h in range(n.shape[1])])
    total = 0.0
    for i in range(len(q)):
        logits = docs @ q[i] / t
        ok = keep[i].copy()
        ok[i] = True
        total += logsumexp(logits[ok]) - logits[i]
    return total / len(q)


def test_info_nce_negative_mask(mesh8):
    rng = np.random.default_rng(1)
    q = rng.normal(size=(8, 5)).astype(np.float32)
    p = (q + 0.5 * rng.normal(size=(8, 5))).astype(np.float32)
    n = rng.normal(size=(8, 2, 5)).astype(np.float32)
    keep = rng.random((8, 24)) > 0.4
    keep[np.arange(8), np.arange(8)] = False  # the positive stays regardless
    got, grads = jax.value_and_grad(
        lambda a, b: info_nce(a, b, n, temperature=0.1, negative_mask=keep), argnums=(0, 1)
    )(q, p)
    np.testing.assert_allclose(got, np_masked_info_nce(q, p, n, keep, 0.1), rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(
        info_nce(q, p, n, temperature=0.1, negative_mask=np.ones((8, 24), bool)),
        info_nce(q, p, n, temperature=0.1),
        rtol=1e-6,
    )
    sq, sp, sn, sk = shard_batch(mesh8, (q, p, n, keep))
    np.testing.assert_allclose(
        info_nce(sq, sp, sn, temperature=0.1, negative_mask=sk), got, rtol=1e-5, atol=2e-6
    )
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)
    with pytest.raises(ValueError, match=r"negative_mask must be \[batch, batch · \(1 \+ "):
        info_nce(q, p, n, negative_mask=np.ones((8, 8), bool))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: simans_probs(_S, _P[:1]), "positive_scores must have one entry per row"),
        (lambda: simans_probs(_S, _P, a=0.0), "a must be"),
        (lambda: simans_probs(_S * np.nan, _P), "must not hold NaN"),
        (lambda: simans_sample(jax.random.key(0), _S, _P, 7), "num_samples must be <= 6"),
        (lambda: simans_sample(0, _S, _P, 2), "key must be a PRNG key"),
        (lambda: unpg_filter(_S, k=-1.0), "k must be"),
        (lambda: unpg_filter(_S, np.ones((2, 5), bool)), "negative_mask"),
        (lambda: false_negative_mask(_S, _P, fraction=1.5), r"fraction must be in \(0, 1\]"),
    ],
)
def test_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()
