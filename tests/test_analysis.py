"""Tests of jaxemb.analysis: diagnostics, probes and plots against NumPy float64 references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from matplotlib.figure import Figure

from jaxemb import analysis
from jaxemb.analysis import plots

# ---------------------------------------------------------------------------------------------
# Independent NumPy (float64) references
# ---------------------------------------------------------------------------------------------


def np_normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def np_rankme(x, eps=1e-7):
    s = np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)
    p = s / np.sum(s) + eps
    return np.exp(-np.sum(p * np.log(p)))


def np_participation_ratio(x):
    lam = np.linalg.eigvalsh(np.cov(np.asarray(x, np.float64), rowvar=False))
    return lam.sum() ** 2 / np.sum(lam**2)


def np_alignment(a, b, alpha=2.0):
    d = np_normalize(a) - np_normalize(b)
    return np.mean(np.linalg.norm(d, axis=1) ** alpha)


def np_uniformity(x, t=2.0):
    x = np_normalize(x)
    n = len(x)
    vals = [
        np.exp(-t * np.sum((x[i] - x[j]) ** 2)) for i in range(n) for j in range(i + 1, n)
    ]  # torch.pdist: unordered pairs
    return np.log(np.mean(vals))


def np_knn(train_x, train_y, test_x, k, temperature, num_classes):
    train, test = np_normalize(train_x), np_normalize(test_x)
    preds = []
    for q in test:
        sims = train @ q
        order = np.lexsort((np.arange(len(sims)), -sims))[:k]  # by similarity, then index
        votes = np.zeros(num_classes)
        for j in order:
            votes[train_y[j]] += np.exp(sims[j] / temperature)
        preds.append(int(np.argmax(votes)))
    return np.array(preds)


def np_softmax_objective(w, b, z, y, l2):
    logits = z @ w + b
    m = logits.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
    return np.mean(lse - logits[np.arange(len(y)), y]) + 0.5 * l2 * np.sum(w * w)


def np_logistic_gd(x, y, num_classes, l2, steps=3000, lr=0.5):
    """Plain full-batch gradient descent on the standardised multinomial logistic loss."""
    x = np.asarray(x, np.float64)
    mean, std = x.mean(0), x.std(0)
    z = (x - mean) / std
    n, d = z.shape
    w, b = np.zeros((d, num_classes)), np.zeros(num_classes)
    onehot = np.eye(num_classes)[y]
    for _ in range(steps):
        logits = z @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / n
        w -= lr * (z.T @ g + l2 * w)
        b -= lr * g.sum(0)
    return w, b, mean, std


def blobs(rng, n_per_class, num_classes, dim, spread):
    means = rng.normal(size=(num_classes, dim)) * spread
    y = np.repeat(np.arange(num_classes), n_per_class)
    x = means[y] + rng.normal(size=(len(y), dim))
    perm = rng.permutation(len(y))
    return x[perm].astype(np.float32), y[perm].astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Spectrum, RankMe, participation ratio
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(50, 12), (8, 20)])
def test_spectrum_matches_numpy_uncentred(rng, shape):
    x = rng.normal(size=shape) + 3.0  # a large mean: centring would change the values
    s = analysis.spectrum(x.astype(np.float32))
    assert s.shape == (min(shape),)
    np.testing.assert_allclose(s, np.linalg.svd(x, compute_uv=False), rtol=1e-4, atol=1e-5)
    assert np.all(np.diff(np.asarray(s)) <= 0)


@pytest.mark.parametrize("shape", [(64, 16), (10, 30)])
def test_rankme_matches_numpy(rng, shape):
    x = rng.normal(size=shape) * np.linspace(0.1, 3.0, shape[1])
    np.testing.assert_allclose(analysis.rankme(x.astype(np.float32)), np_rankme(x), rtol=1e-5)
    np.testing.assert_allclose(
        analysis.rankme(x.astype(np.float32), eps=1e-3), np_rankme(x, eps=1e-3), rtol=1e-5
    )


def test_rankme_known_answers(rng):
    r, eps = 5, 1e-7
    q, _ = np.linalg.qr(rng.normal(size=(64, r)))  # r orthonormal columns: equal singular values
    p = 1.0 / r + eps
    exact = math.exp(-r * p * math.log(p))
    got = float(analysis.rankme(q.astype(np.float32), eps=eps))
    assert got == pytest.approx(exact, rel=1e-5)
    assert got == pytest.approx(r, rel=1e-5)
    # Scale invariance and collapse to one direction.
    assert float(analysis.rankme(7.0 * q.astype(np.float32))) == pytest.approx(got, rel=1e-5)
    rank_one = np.outer(rng.normal(size=40), rng.normal(size=9)).astype(np.float32)
    assert float(analysis.rankme(rank_one)) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("shape", [(200, 10), (6, 10)])
def test_participation_ratio_matches_numpy(rng, shape):
    x = rng.normal(size=shape) * np.linspace(0.2, 2.0, shape[1]) + 5.0
    np.testing.assert_allclose(
        analysis.participation_ratio(x.astype(np.float32)), np_participation_ratio(x), rtol=1e-4
    )


def test_participation_ratio_isotropic_and_one_direction(rng):
    d = 8
    iso = rng.normal(size=(20000, d)).astype(np.float32)
    assert float(analysis.participation_ratio(iso)) == pytest.approx(d, rel=0.02)
    line = np.outer(rng.normal(size=100), rng.normal(size=d)).astype(np.float32)
    assert float(analysis.participation_ratio(line)) == pytest.approx(1.0, rel=1e-4)


# ---------------------------------------------------------------------------------------------
# Alignment and uniformity
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [2.0, 1.0, 3.5])
def test_alignment_matches_numpy(rng, alpha):
    a, b = rng.normal(size=(30, 7)), rng.normal(size=(30, 7))
    got = analysis.alignment(a.astype(np.float32), b.astype(np.float32), alpha=alpha)
    np.testing.assert_allclose(got, np_alignment(a, b, alpha), rtol=1e-5)


def test_alignment_hand_case():
    a = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    b = np.array([[0.0, 5.0], [0.0, 3.0], [-1.0, -1.0]], np.float32)
    # squared distances on the sphere: orthogonal 2, identical 0, antipodal 4 -> mean 2
    assert float(analysis.alignment(a, b)) == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 23, 100])
def test_uniformity_matches_numpy(rng, chunk_size):
    x = rng.normal(size=(23, 5))
    got = analysis.uniformity(x.astype(np.float32), chunk_size=chunk_size)
    np.testing.assert_allclose(got, np_uniformity(x), rtol=1e-5)
    np.testing.assert_allclose(
        analysis.uniformity(x.astype(np.float32), t=0.5, chunk_size=chunk_size),
        np_uniformity(x, t=0.5),
        rtol=1e-5,
    )


def test_uniformity_hand_cases():
    # Four points on the unit circle at 90°: 4 adjacent pairs (‖d‖² = 2), 2 opposite (‖d‖² = 4).
    square = np.array([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0], [0.0, -1.0]], np.float32)
    expected = math.log((4 * math.exp(-2 * 2) + 2 * math.exp(-2 * 4)) / 6)
    assert float(analysis.uniformity(square)) == pytest.approx(expected, rel=1e-6)
    assert float(analysis.uniformity(square, chunk_size=3)) == pytest.approx(expected, rel=1e-6)
    # Large t: exp underflows in a naive implementation; log-sum-exp keeps −t·4 exactly.
    antipodal = np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32)
    assert float(analysis.uniformity(antipodal, t=200.0)) == pytest.approx(-800.0, rel=1e-6)
    # Collapsed: every distance 0.
    assert float(analysis.uniformity(np.ones((5, 3), np.float32))) == pytest.approx(0.0, abs=1e-6)


def test_bfloat16_inputs_computed_in_float32(rng):
    x = jnp.asarray(rng.normal(size=(32, 8)), jnp.bfloat16)
    x32 = x.astype(jnp.float32)  # the same values, exactly
    for fn in (analysis.rankme, analysis.participation_ratio, analysis.uniformity):
        out = fn(x)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(out, fn(x32), rtol=1e-6)
    np.testing.assert_allclose(
        analysis.alignment(x, x[::-1]), analysis.alignment(x32, x32[::-1]), rtol=1e-6
    )


def test_diagnostics_jit_inside_user_code(rng):
    x = jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)

    @jax.jit
    def metrics(x):
        return analysis.rankme(x), analysis.uniformity(x, chunk_size=4), analysis.spectrum(x)

    r, u, s = metrics(x)
    np.testing.assert_allclose(r, np_rankme(np.asarray(x)), rtol=1e-5)
    np.testing.assert_allclose(u, np_uniformity(np.asarray(x)), rtol=1e-5)
    np.testing.assert_allclose(s, np.linalg.svd(np.asarray(x), compute_uv=False), rtol=1e-4)


def test_diagnostics_validation():
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="x must have rank 2"):
        analysis.rankme(np.ones(4, np.float32))
    with pytest.raises(ValueError, match="x must have a float dtype"):
        analysis.spectrum(np.ones((4, 3), np.int32))
    with pytest.raises(ValueError, match=r"b must have the same shape as a \[4, 3\]; got \[5, 3\]"):
        analysis.alignment(x, np.ones((5, 3), np.float32))
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        analysis.alignment(x, x, alpha=0.0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        analysis.uniformity(x[:1])
    with pytest.raises(ValueError, match="t must be a finite number > 0"):
        analysis.uniformity(x, t=-1.0)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        analysis.uniformity(x, chunk_size=0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        analysis.participation_ratio(x[:1])
    with pytest.raises(ValueError, match="x must not be empty"):
        analysis.rankme(np.ones((0, 3), np.float32))


# ---------------------------------------------------------------------------------------------
# kNN
# ---------------------------------------------------------------------------------------------


def test_knn_tie_in_similarity_lower_index_wins():
    train_x = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]], np.float32)  # rows 0, 1 tie
    test_x = np.array([[3.0, 0.0]], np.float32)
    pred = analysis.knn_classify(train_x, np.array([2, 0, 1]), test_x, k=1)
    assert pred.tolist() == [2]
    pred = analysis.knn_classify(train_x, np.array([0, 2, 1]), test_x, k=1)
    assert pred.tolist() == [0]


def test_knn_vote_weighting():
    h = math.sqrt(0.75)
    train_x = np.array([[1.0, 0.0], [0.5, h], [0.5, -h], [-1.0, 0.0]], np.float32)
    train_y = np.array([0, 1, 1, 0])
    test_x = np.array([[1.0, 0.0]], np.float32)  # similarities 1, 0.5, 0.5, -1
    # Sharp weights: e^{1/0.07} > 2·e^{0.5/0.07}, the single nearest neighbour outvotes two.
    assert analysis.knn_classify(train_x, train_y, test_x, k=3, temperature=0.07).tolist() == [0]
    # Flat weights: e^{0.1} < 2·e^{0.05}, the majority wins.
    assert analysis.knn_classify(train_x, train_y, test_x, k=3, temperature=10.0).tolist() == [1]
    # k = 4 brings in the far label-0 point: 2 votes each, which a plain count would tie (and
    # give to the lower class 0); weighted, e^{0.1} + e^{-0.1} = 2.010 < 2·e^{0.05} = 2.103.
    assert analysis.knn_classify(train_x, train_y, test_x, k=4, temperature=10.0).tolist() == [1]


@pytest.mark.parametrize(
    ("k", "temperature", "chunk_size"), [(1, 0.07, 1024), (5, 0.07, 7), (20, 0.5, 16)]
)
def test_knn_matches_numpy(rng, k, temperature, chunk_size):
    train_x, train_y = blobs(rng, 20, 4, 6, spread=0.8)
    test_x, test_y = blobs(rng, 10, 4, 6, spread=0.8)
    want = np_knn(train_x, train_y, test_x, k, temperature, 4)
    got = analysis.knn_classify(
        train_x, train_y, test_x, k=k, temperature=temperature, chunk_size=chunk_size
    )
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, want)
    acc = analysis.knn_accuracy(
        train_x, train_y, test_x, test_y, k=k, temperature=temperature, chunk_size=chunk_size
    )
    assert isinstance(acc, float)
    assert acc == pytest.approx(np.mean(want == test_y))


def test_knn_small_temperature_stays_finite(rng):
    train_x, train_y = blobs(rng, 10, 3, 4, spread=0.3)
    # exp(1/τ) overflows float32 for τ = 1e-3; the votes must stay finite, and as τ → 0 the
    # nearest neighbour (each query itself, at similarity 1) decides.
    got = analysis.knn_classify(train_x, train_y, train_x[:12], k=10, temperature=1e-3)
    np.testing.assert_array_equal(got, train_y[:12])


def test_knn_jit_with_num_classes(rng):
    train_x, train_y = blobs(rng, 10, 3, 4, spread=1.0)
    test_x = train_x[::3] + 0.1
    fn = jax.jit(lambda a, b, c: analysis.knn_classify(a, b, c, k=4, num_classes=3))
    np.testing.assert_array_equal(
        fn(train_x, train_y, test_x), np_knn(train_x, train_y, test_x, 4, 0.07, 3)
    )


def test_knn_validation():
    x = np.ones((4, 3), np.float32)
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"train_y must have shape \[4\]"):
        analysis.knn_classify(x, y[:3], x)
    with pytest.raises(ValueError, match="k must be <= the number of train points 4"):
        analysis.knn_classify(x, y, x, k=5)
    with pytest.raises(ValueError, match="k must be >= 1"):
        analysis.knn_classify(x, y, x, k=0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        analysis.knn_classify(x, y, x, k=2, temperature=0.0)
    with pytest.raises(ValueError, match="test_x"):
        analysis.knn_classify(x, y, np.ones((2, 5), np.float32), k=2)
    with pytest.raises(ValueError, match="train_y must have a int dtype"):
        analysis.knn_classify(x, y.astype(np.float32), x, k=2)
    with pytest.raises(ValueError, match=r"num_classes=2\); got 2"):
        analysis.knn_classify(x, np.array([0, 1, 2, 0]), x, k=2, num_classes=2)
    with pytest.raises(ValueError, match="non-negative"):
        analysis.knn_classify(x, np.array([0, -1, 0, 0]), x, k=2)
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(
        ValueError, match=r"test_x must be finite; got NaN/inf in 1 of 4 rows \(rows 2\)"
    ):
        analysis.knn_accuracy(x, y, bad, y, k=2)
    with pytest.raises(ValueError, match=r"test_y must have shape \[4\]"):
        analysis.knn_accuracy(x, y, x, y[:2], k=2)


# ---------------------------------------------------------------------------------------------
# Linear probe
# ---------------------------------------------------------------------------------------------


def test_linear_probe_separable_blobs(rng):
    x, y = blobs(rng, 100, 3, 5, spread=6.0)
    result = analysis.linear_probe(x[:240], y[:240], x[240:], y[240:])
    assert result.train_accuracy == 1.0
    assert result.accuracy >= 0.98
    assert result.weights.shape == (5, 3) and result.bias.shape == (3,)


def test_linear_probe_matches_numpy_gradient_descent(rng):
    x, y = blobs(rng, 150, 4, 6, spread=0.7)  # overlapping classes
    x[:, 2] = 50.0 * x[:, 2] + 20.0  # badly scaled feature: standardisation matters
    tr_x, tr_y, te_x, te_y = x[:400], y[:400], x[400:], y[400:]
    l2 = 1e-3
    result = analysis.linear_probe(tr_x, tr_y, te_x, te_y, l2=l2)

    w_ref, b_ref, mean, std = np_logistic_gd(tr_x, tr_y, 4, l2)
    z_te = (te_x - mean) / std
    ref_acc = np.mean(np.argmax(z_te @ w_ref + b_ref, axis=1) == te_y)
    assert 0.4 < ref_acc < 0.99  # a non-trivial problem
    assert abs(result.accuracy - ref_acc) <= 0.02

    # The returned weights act on raw inputs and reproduce the reported accuracies.
    w, b = np.asarray(result.weights, np.float64), np.asarray(result.bias, np.float64)
    raw_pred = np.argmax(te_x.astype(np.float64) @ w + b, axis=1)
    assert abs(np.mean(raw_pred == te_y) - result.accuracy) <= 1.0 / len(te_y)
    raw_train = np.argmax(tr_x.astype(np.float64) @ w + b, axis=1)
    assert abs(np.mean(raw_train == tr_y) - result.train_accuracy) <= 1.0 / len(tr_y)
    assert np.mean(raw_pred == np.argmax(z_te @ w_ref + b_ref, axis=1)) >= 0.97

    # Unfold to standardised space: the objective reached is at least as low as GD's.
    w_std, b_std = w * std[:, None], b + mean @ w
    z_tr = (tr_x - mean) / std
    ours = np_softmax_objective(w_std, b_std, z_tr, tr_y, l2)
    ref = np_softmax_objective(w_ref, b_ref, z_tr, tr_y, l2)
    assert ours <= ref + 1e-5
    # The problem is strongly convex (l2 > 0): both reach the same unique optimum.
    np.testing.assert_allclose(w_std, w_ref, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(b_std, b_ref, rtol=1e-3, atol=1e-3)


def test_linear_probe_adam_and_minibatch(rng):
    x, y = blobs(rng, 80, 3, 5, spread=6.0)
    for kwargs in ({}, {"batch_size": 64}):
        result = analysis.linear_probe(
            x[:180], y[:180], x[180:], y[180:], optimizer="adam", steps=200, **kwargs
        )
        assert result.train_accuracy >= 0.99 and result.accuracy >= 0.98


def test_linear_probe_standardisation_uses_train_statistics(rng):
    x, y = blobs(rng, 60, 3, 4, spread=1.0)
    tr_x, tr_y = x[:120], y[:120]
    te_x, te_y = x[120:], y[120:]
    base = analysis.linear_probe(tr_x, tr_y, te_x, te_y, l2=1e-2)
    # Shifting the test split only must change predictions exactly as raw weights say: train
    # statistics are fixed by the train split, so a shift of the test inputs is not undone.
    shifted = analysis.linear_probe(tr_x, tr_y, te_x + 100.0, te_y, l2=1e-2)
    np.testing.assert_allclose(shifted.weights, base.weights, rtol=1e-5, atol=1e-6)
    pred = np.argmax((te_x + 100.0) @ np.asarray(base.weights) + np.asarray(base.bias), axis=1)
    assert shifted.accuracy == pytest.approx(np.mean(pred == te_y), abs=1.0 / len(te_y))
    # Rescaling a train feature leaves the standardised problem, hence the predictions, intact.
    scale = np.array([1000.0, 1.0, 0.01, 1.0], np.float32)
    rescaled = analysis.linear_probe(tr_x * scale, tr_y, te_x * scale, te_y, l2=1e-2)
    assert rescaled.accuracy == pytest.approx(base.accuracy, abs=1.0 / len(te_y))
    np.testing.assert_allclose(
        np.asarray(rescaled.weights) * scale[:, None], base.weights, rtol=1e-3, atol=1e-4
    )


def test_linear_probe_validation():
    x = np.ones((4, 3), np.float32)
    y = np.array([0, 1, 0, 1])
    bad = x.copy()
    bad[[1, 3], 0] = np.nan
    with pytest.raises(
        ValueError, match=r"train_x must be finite; got NaN/inf in 2 of 4 rows \(rows 1, 3\)"
    ):
        analysis.linear_probe(bad, y, x, y)
    with pytest.raises(ValueError, match=r"test_y must have shape \[4\]"):
        analysis.linear_probe(x, y, x, y[:3])
    with pytest.raises(ValueError, match="batch_size needs optimizer='adam'"):
        analysis.linear_probe(x, y, x, y, batch_size=2)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        analysis.linear_probe(x, y, x, y, optimizer="sgd")
    with pytest.raises(ValueError, match="l2 must be a finite number >= 0"):
        analysis.linear_probe(x, y, x, y, l2=-1.0)
    with pytest.raises(ValueError, match="test_x"):
        analysis.linear_probe(x, y, np.ones((4, 2), np.float32), y)


# ---------------------------------------------------------------------------------------------
# Sharded inputs
# ---------------------------------------------------------------------------------------------


def test_sharded_inputs_match_unsharded(rng, mesh8):
    sharding = NamedSharding(mesh8, P("data"))
    x = rng.normal(size=(64, 16)).astype(np.float32)
    train_x, train_y = blobs(rng, 16, 4, 16, spread=0.5)
    test_x, test_y = blobs(rng, 8, 4, 16, spread=0.5)
    xs = jax.device_put(x, sharding)
    assert len(xs.sharding.device_set) == 8

    np.testing.assert_allclose(analysis.rankme(xs), analysis.rankme(x), rtol=1e-5)
    np.testing.assert_allclose(analysis.rankme(xs), np_rankme(x), rtol=1e-5)
    np.testing.assert_allclose(analysis.spectrum(xs), analysis.spectrum(x), rtol=1e-5)
    np.testing.assert_allclose(
        analysis.participation_ratio(xs), analysis.participation_ratio(x), rtol=1e-5
    )
    for chunk in (None, 5):
        np.testing.assert_allclose(
            analysis.uniformity(xs, chunk_size=chunk),
            analysis.uniformity(x, chunk_size=chunk),
            rtol=1e-5,
        )
    np.testing.assert_allclose(analysis.uniformity(xs), np_uniformity(x), rtol=1e-5)

    put = lambda a: jax.device_put(a, sharding)  # noqa: E731
    acc_sharded = analysis.knn_accuracy(
        put(train_x), put(train_y), put(test_x), put(test_y), k=5, chunk_size=12
    )
    acc = analysis.knn_accuracy(train_x, train_y, test_x, test_y, k=5, chunk_size=12)
    assert acc_sharded == pytest.approx(acc, rel=1e-5)
    want = np_knn(train_x, train_y, test_x, 5, 0.07, 4)
    assert acc == pytest.approx(np.mean(want == test_y))


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def _assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_return_figures_and_save_png(rng, tmp_path):
    x = rng.normal(size=(40, 10)).astype(np.float32)
    figs = {
        "spectrum": plots.spectrum_plot(x, label="x"),
        "spectrum_values": plots.spectrum_plot(np.array([3.0, 1.0, 0.0])),
        "matryoshka": plots.matryoshka_curve(
            [8, 16, 32, 64], {"mrl": [0.5, 0.6, 0.7, 0.8], "base": [0.3, 0.5, 0.7, 0.8]}
        ),
        "loss": plots.loss_curve(np.arange(5), [3.0, 2.0, 1.5, 1.2, 1.1]),
        "losses": plots.loss_curve([0, 1, 2], {"train": [2.0, 1.0, 0.5], "val": [2.1, 1.3, 0.9]}),
        "density": plots.density_histogram(
            np.concatenate([np.zeros(3), 10.0 ** -rng.uniform(0, 6, 50)])
        ),
    }
    for name, fig in figs.items():
        assert isinstance(fig, Figure), name
        out = plots.save(fig, tmp_path / "sub" / f"{name}.png")
        assert out == tmp_path / "sub" / f"{name}.png"
        _assert_png(out)
    # The spectrum plot shows the singular values of x against ranks 1..10.
    line = figs["spectrum"].axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), np.arange(1, 11))
    np.testing.assert_allclose(line.get_ydata(), np.linalg.svd(x, compute_uv=False), rtol=1e-4)
    assert len(figs["spectrum_values"].axes[0].get_lines()[0].get_xdata()) == 2  # zero dropped
    assert figs["density"].axes[0].get_title() == "feature density (dead: 3 of 53)"


def test_plots_overlay_on_given_axes_and_close_pyplot(rng, tmp_path):
    fig = plots.spectrum_plot(rng.normal(size=(20, 6)), label="a")
    again = plots.spectrum_plot(rng.normal(size=(20, 6)), ax=fig.axes[0], label="b")
    assert again is fig and len(fig.axes[0].get_lines()) == 2

    import matplotlib.pyplot as plt

    pfig, pax = plt.subplots()
    plots.density_histogram(np.array([0.1, 0.01]), ax=pax)
    num = pfig.number
    _assert_png(plots.save(pfig, tmp_path / "pyplot.png"))
    assert not plt.fignum_exists(num)


def test_plots_validation():
    with pytest.raises(ValueError, match=r"values\['a'\] must have one value per dim \(3\)"):
        plots.matryoshka_curve([8, 16, 32], {"a": [0.1, 0.2]})
    with pytest.raises(ValueError, match="dims must be positive and increasing"):
        plots.matryoshka_curve([16, 8], {"a": [0.1, 0.2]})
    with pytest.raises(ValueError, match="losses must have one value per step"):
        plots.loss_curve([0, 1, 2], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"firing_frequency must hold fractions in \[0, 1\]"):
        plots.density_histogram([0.5, 1.5])
    with pytest.raises(ValueError, match="x_or_singular_values must be embeddings"):
        plots.spectrum_plot(np.ones((2, 2, 2)))
