"""Triplet losses (sentence-transformers v6 semantics) against independent NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from losses_reference import normalize, numeric_grad

from jaxemb.losses import (
    batch_all_triplet,
    batch_hard_soft_margin_triplet,
    batch_hard_triplet,
    batch_semi_hard_triplet,
    triplet_margin,
)
from jaxemb.parallel import shard_batch

# ---------------------------------------------------------------------------------------------
# NumPy float64 references, written from the definitions (direct distances, explicit loops).


def np_pdist(x):
    diff = x[:, None, :] - x[None, :, :]
    return np.sqrt(np.sum(diff**2, axis=-1))


def np_triplet_margin(a, p, n, margin, distance):
    if distance == "euclidean":
        dist = lambda u, w: np.sqrt(np.sum((u - w) ** 2, axis=-1))  # noqa: E731
    elif distance == "manhattan":
        dist = lambda u, w: np.sum(np.abs(u - w), axis=-1)  # noqa: E731
    else:
        dist = lambda u, w: 1.0 - np.sum(normalize(u) * normalize(w), axis=-1)  # noqa: E731
    return np.mean(np.maximum(dist(a, p) - dist(a, n) + margin, 0.0))


def np_batch_hard(x, y, margin=5.0, soft=False):
    d = np_pdist(np.asarray(x, np.float64))
    out = []
    for i in range(len(y)):
        pos = [d[i, j] for j in range(len(y)) if j != i and y[j] == y[i]]
        neg = [d[i, j] for j in range(len(y)) if y[j] != y[i]]
        hp = max(pos) if pos else 0.0  # no positive: the masked max is 0
        hn = min(neg) if neg else d[i].max()  # no negative: ST's masking gives the row max
        out.append(np.logaddexp(0.0, hp - hn) if soft else max(hp - hn + margin, 0.0))
    return np.mean(out)


def np_batch_all(x, y, margin=5.0):
    d = np_pdist(np.asarray(x, np.float64))
    losses = []
    n = len(y)
    for a in range(n):
        for p in range(n):
            if p == a or y[p] != y[a]:
                continue
            for k in range(n):
                if y[k] != y[a]:
                    losses.append(max(d[a, p] - d[a, k] + margin, 0.0))
    losses = np.array(losses)
    return losses.sum() / (np.sum(losses > 1e-16) + 1e-16)


def np_batch_semi_hard(x, y, margin=5.0):
    d = np_pdist(np.asarray(x, np.float64))
    total, count = 0.0, 0
    n = len(y)
    for a in range(n):
        negs = [d[a, k] for k in range(n) if y[k] != y[a]]
        for p in range(n):
            if p == a or y[p] != y[a]:
                continue
            farther = [v for v in negs if v > d[a, p]]
            dn = min(farther) if farther else (max(negs) if negs else 0.0)
            total += max(d[a, p] - dn + margin, 0.0)
            count += 1
    return total / count if count else 0.0


def np_batch_hard_grad(x, y, margin=5.0):
    """Analytic gradient of the batch-hard loss with torch's tie rule (first extremal index)."""
    x = np.asarray(x, np.float64)
    n = len(y)
    d = np_pdist(x)
    same = y[:, None] == y[None, :]
    mask_pos = (same & ~np.eye(n, dtype=bool)).astype(float)
    mask_neg = (~same).astype(float)
    g = np.zeros_like(x)

    def add_dd(i, j, w):  # w * d(d_ij)/dx, zero at d_ij == 0 (ST's mask trick)
        if d[i, j] > 0:
            u = (x[i] - x[j]) / d[i, j]
            g[i] += w * u
            g[j] -= w * u

    for i in range(n):
        jp = int(np.argmax(mask_pos[i] * d[i]))
        jm = int(np.argmax(d[i]))
        row = d[i] + d[i, jm] * (1 - mask_neg[i])
        jn = int(np.argmin(row))
        if d[i, jp] * mask_pos[i, jp] - row[jn] + margin < 0:
            continue
        add_dd(i, jp, mask_pos[i, jp] / n)
        add_dd(i, jn, -1.0 / n)
        add_dd(i, jm, -(1 - mask_neg[i, jn]) / n)
    return g


BATCH_LOSSES = {
    "hard": (lambda x, y, m: batch_hard_triplet(x, y, margin=m), np_batch_hard),
    "soft": (
        lambda x, y, m: batch_hard_soft_margin_triplet(x, y),
        lambda x, y, m: np_batch_hard(x, y, soft=True),
    ),
    "all": (lambda x, y, m: batch_all_triplet(x, y, margin=m), np_batch_all),
    "semi": (lambda x, y, m: batch_semi_hard_triplet(x, y, margin=m), np_batch_semi_hard),
}

# Singletons (classes 3 and 4: anchors without positives), pairs and a triple.
LABELS = np.array([0, 1, 0, 2, 3, 1, 2, 0, 4, 2])


def _x(rng, n=10, d=4, scale=1.0):
    return (scale * rng.normal(size=(n, d))).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Values and gradients.


@pytest.mark.parametrize("distance", ["euclidean", "cosine", "manhattan"])
@pytest.mark.parametrize("margin", [0.5, 5.0])
def test_triplet_margin_value_and_grad(rng, distance, margin):
    a, p, n = (_x(rng, n=8) for _ in range(3))
    if distance == "cosine":
        margin = margin / 5.0  # keep some triplets active and some inactive
    got = triplet_margin(a, p, n, margin=margin, distance=distance)
    np.testing.assert_allclose(got, np_triplet_margin(a, p, n, margin, distance), rtol=1e-5)
    grads = jax.grad(
        lambda *t: triplet_margin(*t, margin=margin, distance=distance), argnums=(0, 1, 2)
    )(a, p, n)
    args = [t.astype(np.float64) for t in (a, p, n)]
    for k, gk in enumerate(grads):

        def f(t, k=k):
            full = list(args)
            full[k] = t
            return np_triplet_margin(*full, margin, distance)

        np.testing.assert_allclose(gk, numeric_grad(f, args[k]), rtol=2e-3, atol=2e-5)


def test_triplet_margin_hand_computed_and_no_eps():
    a = np.zeros((3, 2), np.float32)
    p = np.array([[3, 0], [0, 1], [0, 0]], np.float32)  # the last positive equals its anchor
    n = np.array([[0, 4], [0, 10], [0, 0.5]], np.float32)
    # euclidean (v6: plain ‖a − p‖, no 1e-6 added): 3-4+5, 1-10+5 -> 0, 0-0.5+5
    np.testing.assert_allclose(triplet_margin(a, p, n), (4.0 + 0.0 + 4.5) / 3, rtol=1e-6)
    # manhattan on the same points equals euclidean (axis-aligned differences)
    np.testing.assert_allclose(triplet_margin(a, p, n, distance="manhattan"), 8.5 / 3, rtol=1e-6)
    # a == p == n exactly: loss = margin, gradient exactly 0 (not NaN) at the zero distances
    x = np.ones((2, 3), np.float32)
    val, g = jax.value_and_grad(lambda u: triplet_margin(u, x, x, margin=1.5))(x)
    assert float(val) == 1.5
    np.testing.assert_array_equal(g, 0.0)


@pytest.mark.parametrize("name", list(BATCH_LOSSES))
@pytest.mark.parametrize("margin", [1.0, 5.0])
def test_batch_losses_value_and_grad(rng, name, margin):
    fn, ref = BATCH_LOSSES[name]
    x = _x(rng)
    np.testing.assert_allclose(fn(x, LABELS, margin), ref(x, LABELS, margin), rtol=1e-5)
    g = jax.grad(lambda u: fn(u, LABELS, margin))(x)
    g_ref = numeric_grad(lambda u: ref(u, LABELS, margin), x.astype(np.float64))
    np.testing.assert_allclose(g, g_ref, rtol=2e-3, atol=2e-5)


def test_batch_hard_semantics_hand_computed():
    x = np.array([[0.0], [1.0], [3.0], [7.0]], np.float32)
    y = np.array([0, 0, 1, 1])
    # d01=1 d02=3 d03=7 d12=2 d13=6 d23=4; (hp, hn) = (1,3) (1,2) (4,2) (4,6)
    assert float(batch_hard_triplet(x, y)) == pytest.approx((3 + 4 + 7 + 3) / 4, rel=1e-6)
    assert float(batch_hard_triplet(x, y, margin=1.0)) == pytest.approx(3 / 4, rel=1e-6)
    # margin 2: anchor 1 sits exactly at hp - hn + m = 0, which passes ST's `tl < 0` test,
    # so it keeps its gradient (unlike relu); compare with the analytic reference.
    val, g = jax.value_and_grad(lambda u: batch_hard_triplet(u, y, margin=2.0))(x)
    assert float(val) == pytest.approx((0 + 1 + 4 + 0) / 4, rel=1e-6)
    np.testing.assert_allclose(g, np_batch_hard_grad(x, y, 2.0), rtol=1e-6, atol=1e-7)
    # all-anchor semi-hard/all on the same points (FaceNet / batch-all by hand)
    assert float(batch_all_triplet(x, y)) == pytest.approx(25 / 6, rel=1e-6)
    assert float(batch_semi_hard_triplet(x, y)) == pytest.approx(16 / 4, rel=1e-6)


def test_batch_hard_ties_follow_torch_first_index():
    # Anchor 0 at the origin: negatives 2 and 3 tie at distance 2; positive 1 and 4 tie at 1.
    x = np.array([[0, 0], [1, 0], [0, 2], [0, -2], [-1, 0], [5, 5]], np.float32)
    y = np.array([0, 0, 1, 1, 0, 2])
    for margin in [0.5, 5.0]:
        val, g = jax.value_and_grad(lambda u, m=margin: batch_hard_triplet(u, y, margin=m))(x)
        np.testing.assert_allclose(val, np_batch_hard(x, y, margin), rtol=1e-6)
        np.testing.assert_allclose(g, np_batch_hard_grad(x, y, margin), rtol=1e-5, atol=1e-6)
    # the tie-broken semi-hard/all losses still have the reference values
    np.testing.assert_allclose(batch_semi_hard_triplet(x, y), np_batch_semi_hard(x, y), rtol=1e-6)
    np.testing.assert_allclose(batch_all_triplet(x, y), np_batch_all(x, y), rtol=1e-6)


def test_duplicate_rows_zero_distances(rng):
    x = _x(rng, n=8)
    x[3] = x[1]  # same label (1): a zero positive distance
    x[6] = x[0]  # different labels (0 vs 2): a zero negative distance
    y = np.array([0, 1, 0, 1, 3, 2, 2, 3])
    for name, (fn, ref) in BATCH_LOSSES.items():
        val, g = jax.value_and_grad(lambda u, f=fn: f(u, y, 5.0))(x)
        np.testing.assert_allclose(val, ref(x, y, 5.0), rtol=1e-5, err_msg=name)
        assert np.isfinite(np.asarray(g)).all(), name
    # the zero distances are exact (ST's diagonal trick) and carry no gradient
    g = jax.grad(lambda u: batch_hard_triplet(u, y, margin=5.0))(x)
    np.testing.assert_allclose(g, np_batch_hard_grad(x, y), rtol=1e-4, atol=1e-5)


def test_single_class_batch_no_negatives(rng):
    x = _x(rng, n=6)
    y = np.zeros(6, int)
    # batch-hard: hn is the row max = hp, so every anchor gives exactly the margin, and the
    # gradients of hp and of the row max (same first index) cancel
    val, g = jax.value_and_grad(lambda u: batch_hard_triplet(u, y, margin=2.0))(x)
    assert float(val) == pytest.approx(2.0, rel=1e-6)
    np.testing.assert_allclose(g, 0.0, atol=1e-6)
    assert float(batch_hard_soft_margin_triplet(x, y)) == pytest.approx(np.log(2.0), rel=1e-6)
    # batch-all: no triplet at all -> 0 / 1e-16 = 0 with zero gradient
    val, g = jax.value_and_grad(lambda u: batch_all_triplet(u, y))(x)
    assert float(val) == 0.0
    np.testing.assert_array_equal(g, 0.0)
    # semi-hard: no negative -> the "farthest negative" is 0 -> mean over pairs of d + margin
    d = np_pdist(x.astype(np.float64))
    expected = (d.sum() + 30 * 1.0) / 30
    np.testing.assert_allclose(batch_semi_hard_triplet(x, y, margin=1.0), expected, rtol=1e-5)
    np.testing.assert_allclose(
        batch_semi_hard_triplet(x, y, margin=1.0), np_batch_semi_hard(x, y, 1.0), rtol=1e-5
    )


def test_all_distinct_labels_no_positives(rng):
    x = _x(rng, n=6)
    y = np.arange(6)
    # semi-hard: no positive pair -> 0 / clamp(0, 1e-16) = 0 (v6), not NaN
    val, g = jax.value_and_grad(lambda u: batch_semi_hard_triplet(u, y))(x)
    assert float(val) == 0.0
    np.testing.assert_array_equal(g, 0.0)
    # batch-hard: hp = 0 for every anchor, hn = nearest other row
    np.testing.assert_allclose(batch_hard_triplet(x, y), np_batch_hard(x, y), rtol=1e-5)
    assert float(batch_all_triplet(x, y)) == 0.0


# ---------------------------------------------------------------------------------------------
# Sharding, robustness, dtypes.


@pytest.mark.parametrize("name", [*BATCH_LOSSES, "triplet"])
def test_sharded_matches_single_device(rng, mesh8, name):
    x = _x(rng, n=16, d=6)
    y = np.arange(16) % 5
    if name == "triplet":
        p, n = _x(rng, n=16, d=6), _x(rng, n=16, d=6)
        f = jax.jit(jax.value_and_grad(lambda u, yy: triplet_margin(u, p, n, margin=2.0)))
    else:
        fn = BATCH_LOSSES[name][0]
        f = jax.jit(jax.value_and_grad(lambda u, yy: fn(u, yy, 3.0)))
    v1, g1 = f(x, y)
    xs, ys = shard_batch(mesh8, (x, y))
    v8, g8 = f(xs, ys)
    assert len(g8.sharding.device_set) == 8
    np.testing.assert_allclose(v8, v1, rtol=1e-5)
    # elementwise rtol, plus an atol of a few float32 ulps of the largest component
    np.testing.assert_allclose(g8, g1, rtol=1e-5, atol=1e-6 * np.abs(np.asarray(g1)).max())


@pytest.mark.parametrize("name", list(BATCH_LOSSES))
def test_robust_large_norms_equal_and_zero_rows(rng, name):
    fn, ref = BATCH_LOSSES[name]
    # norms ~1e4: finite, and the float32 Gram-matrix distances stay accurate
    x = _x(rng, scale=1e4)
    val, g = jax.value_and_grad(lambda u: fn(u, LABELS, 5.0))(x)
    assert np.isfinite(float(val)) and np.isfinite(np.asarray(g)).all()
    np.testing.assert_allclose(val, ref(x, LABELS, 5.0), rtol=1e-4)
    # all-equal rows (every distance 0) and zero rows
    for x in [np.ones((10, 4), np.float32), np.zeros((10, 4), np.float32)]:
        val, g = jax.value_and_grad(lambda u: fn(u, LABELS, 5.0))(x)
        np.testing.assert_allclose(val, ref(x, LABELS, 5.0), rtol=1e-6)
        np.testing.assert_array_equal(g, 0.0)


@pytest.mark.parametrize("distance", ["euclidean", "cosine", "manhattan"])
def test_triplet_margin_robust(rng, distance):
    a, p = _x(rng, n=8, scale=1e4), _x(rng, n=8, scale=1e4)
    n = np.zeros((8, 4), np.float32)
    val, g = jax.value_and_grad(lambda u: triplet_margin(u, p, n, distance=distance))(a)
    assert np.isfinite(float(val)) and np.isfinite(np.asarray(g)).all()
    np.testing.assert_allclose(val, np_triplet_margin(a, p, n, 5.0, distance), rtol=1e-5)
    z = np.zeros((8, 4), np.float32)
    val, gs = jax.value_and_grad(
        lambda *t: triplet_margin(*t, distance=distance), argnums=(0, 1, 2)
    )(z, z, z)
    assert float(val) == 5.0
    assert all(np.isfinite(np.asarray(gk)).all() for gk in gs)


def test_bfloat16_inputs_accumulate_in_float32(rng):
    x = jnp.asarray(_x(rng), jnp.bfloat16)
    x64 = np.asarray(x, np.float64)
    for name, (fn, ref) in BATCH_LOSSES.items():
        out = fn(x, LABELS, 5.0)
        assert out.dtype == jnp.float32, name
        np.testing.assert_allclose(out, ref(x64, LABELS, 5.0), rtol=1e-5, err_msg=name)
    a, p, n = (jnp.asarray(_x(rng, n=8), jnp.bfloat16) for _ in range(3))
    out = triplet_margin(a, p, n)
    assert out.dtype == jnp.float32
    ref = np_triplet_margin(*(np.asarray(t, np.float64) for t in (a, p, n)), 5.0, "euclidean")
    np.testing.assert_allclose(out, ref, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Validation.


def test_validation_errors():
    x = np.zeros((4, 3), np.float32)
    y = np.array([0, 0, 1, 1])
    batch_fns = [
        batch_hard_triplet,
        batch_hard_soft_margin_triplet,
        batch_all_triplet,
        batch_semi_hard_triplet,
    ]
    for fn in batch_fns:
        with pytest.raises(ValueError, match=r"embeddings must have rank 2; got shape \[4\]"):
            fn(np.zeros(4, np.float32), y)
        with pytest.raises(ValueError, match="embeddings must have a float dtype"):
            fn(np.zeros((4, 3), np.int32), y)
        with pytest.raises(ValueError, match=r"labels must have shape \[4\].*got \[3\]"):
            fn(x, y[:3])
        with pytest.raises(ValueError, match="labels must have a int dtype"):
            fn(x, y.astype(np.float32))
        with pytest.raises(ValueError, match="embeddings must not be empty"):
            fn(np.zeros((0, 3), np.float32), y[:0])
    for fn in [batch_hard_triplet, batch_all_triplet, batch_semi_hard_triplet]:
        with pytest.raises(ValueError, match="margin must be a finite number >= 0; got -1.0"):
            fn(x, y, margin=-1.0)
    with pytest.raises(ValueError, match=r"positives must be \[batch, dim\] like anchors"):
        triplet_margin(x, np.zeros((3, 3), np.float32), x)
    with pytest.raises(ValueError, match=r"negatives must be \[batch, dim\].*got \[4, 2\]"):
        triplet_margin(x, x, np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="negatives must have rank 2"):
        triplet_margin(x, x, np.zeros((4, 1, 3), np.float32))
    with pytest.raises(ValueError, match="distance must be one of"):
        triplet_margin(x, x, x, distance="dot")
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        triplet_margin(x, x, x, margin=-0.1)
    with pytest.raises(ValueError, match="anchors must have a float dtype"):
        triplet_margin(x.astype(np.int32), x, x)


# ---------------------------------------------------------------------------------------------
# Invariants (hypothesis).


@settings(max_examples=20, deadline=None)
@given(seed=hst.integers(0, 2**32 - 1))
def test_batch_losses_permutation_invariant(seed):
    r = np.random.default_rng(seed)
    x = r.normal(size=(10, 4)).astype(np.float32)
    y = r.integers(0, 4, size=10)
    perm = r.permutation(10)
    for name, (fn, _) in BATCH_LOSSES.items():
        np.testing.assert_allclose(
            fn(x[perm], y[perm], 2.0), fn(x, y, 2.0), rtol=1e-5, atol=1e-6, err_msg=name
        )
    a, p, n = (r.normal(size=(10, 4)).astype(np.float32) for _ in range(3))
    np.testing.assert_allclose(
        triplet_margin(a[perm], p[perm], n[perm]), triplet_margin(a, p, n), rtol=1e-5
    )


@settings(max_examples=20, deadline=None)
@given(seed=hst.integers(0, 2**32 - 1), log_scale=hst.floats(-3.0, 3.0))
def test_triplet_cosine_scale_invariant(seed, log_scale):
    r = np.random.default_rng(seed)
    a, p, n = (r.normal(size=(8, 5)).astype(np.float32) for _ in range(3))
    s = np.float32(10.0**log_scale) * r.uniform(0.5, 2.0, size=(8, 1)).astype(np.float32)
    np.testing.assert_allclose(
        triplet_margin(a * s, p, n / s, margin=0.3, distance="cosine"),
        triplet_margin(a, p, n, margin=0.3, distance="cosine"),
        rtol=1e-5,
        atol=1e-6,
    )
