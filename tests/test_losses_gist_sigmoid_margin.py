"""gist_info_nce, margin_info_nce and sigmoid_loss against independent float64 NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from losses_reference import logsumexp, normalize, numeric_grad
from tolerances import EPS32

from jaxemb.losses import gist_info_nce, margin_info_nce, sigmoid_loss
from jaxemb.parallel import shard_batch


# --------------------------------------------------------------------------------------------
# NumPy references, entry by entry.
# --------------------------------------------------------------------------------------------
def np_gist(
    a,
    p,
    ga,
    gp,
    n=None,
    gn=None,
    *,
    t,
    strategy="absolute",
    margin=0.0,
    contrast_anchors=True,
    contrast_positives=True,
    return_masked=False,
):
    """sentence-transformers GISTEmbedLoss: blocks a·p, a·a, p·p, a·n; guide-filtered."""
    a, p, ga, gp = (normalize(x) for x in (a, p, ga, gp))
    if n is not None:
        n, gn = normalize(n), normalize(gn)
    b = len(a)
    total, masked = 0.0, 0
    for i in range(b):
        g = ga[i] @ gp[i]
        thr = g - margin if strategy == "absolute" else g - abs(g) * margin
        # (model similarity, guide similarity, protected) for every candidate of the row
        cands = [(a[i] @ p[j], ga[i] @ gp[j], j == i) for j in range(b)]
        # the self-similarities (j == i) of the a·a and p·p blocks are never candidates
        if contrast_anchors:
            cands += [(a[i] @ a[j], ga[i] @ ga[j], False) for j in range(b) if j != i]
        if contrast_positives:
            cands += [(p[i] @ p[j], gp[i] @ gp[j], False) for j in range(b) if j != i]
        if n is not None:
            cands += [(a[i] @ n[j], ga[i] @ gn[j], False) for j in range(b)]
        kept = [s / t for s, gs, protected in cands if protected or not gs > thr]
        masked += len(cands) - len(kept)
        total += logsumexp(np.array(kept)) - a[i] @ p[i] / t
    return (total / b, masked) if return_masked else total / b


def np_margin(z1, z2, margin, scale, kind):
    a, b = normalize(z1), normalize(z2)
    c = a @ b.T
    n = len(a)

    def positive(cos):
        if kind == "cosface":
            return scale * (cos - margin)
        return scale * np.cos(np.arccos(np.clip(cos, -1.0, 1.0)) + margin)

    total = 0.0
    for i in range(n):
        row = scale * c[i].copy()
        row[i] = positive(c[i, i])
        col = scale * c[:, i].copy()
        col[i] = positive(c[i, i])
        total += (logsumexp(row) - row[i]) + (logsumexp(col) - col[i])
    return total / (2 * n)


def np_sigmoid(a, b, scale, bias):
    a, b = normalize(a), normalize(b)
    n = len(a)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = scale * (a[i] @ b[j]) + bias
            total += np.logaddexp(0.0, -z * logit)  # −log σ(z·logit)
    return total / n


def _numeric_grads(f, args):
    out = []
    for k in range(len(args)):

        def fk(x, k=k):
            return f(*args[:k], x, *args[k + 1 :])

        out.append(numeric_grad(fk, args[k]))
    return out


def _gist_inputs(seed, b=6, d=4, dg=5):
    """Model and correlated guide embeddings; duplicate rows; a negative equal to a positive."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(b, d))
    p = a + 0.7 * rng.normal(size=(b, d))
    n = rng.normal(size=(b, d))
    w = rng.normal(size=(d, dg))
    ga, gp, gn = (x @ w + 0.5 * rng.normal(size=(b, dg)) for x in (a, p, n))
    a[3], ga[3] = a[1], ga[1]  # duplicate anchors (for the model and the guide)
    n[0], gn[0] = p[2], gp[2]  # anchor 0's negative is anchor 2's positive
    return tuple(np.float32(x) for x in (a, p, n, ga, gp, gn))


def _pairs(seed, b=6, d=4, noise=0.6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(b, d))
    y = x + noise * rng.normal(size=(b, d))
    x[4] = x[1]  # duplicate rows
    y[5] = y[0]
    return np.float32(x), np.float32(y)


# --------------------------------------------------------------------------------------------
# gist_info_nce
# --------------------------------------------------------------------------------------------
_GIST_MARGINS = {"absolute": 0.05, "relative": 0.1}


@pytest.mark.parametrize("with_negatives", [False, True], ids=["pairs", "triplets"])
@pytest.mark.parametrize("contrast_positives", [True, False], ids=["pp", "no_pp"])
@pytest.mark.parametrize("contrast_anchors", [True, False], ids=["aa", "no_aa"])
@pytest.mark.parametrize("strategy", ["absolute", "relative"])
def test_gist_matches_reference(strategy, contrast_anchors, contrast_positives, with_negatives):
    t, margin = 0.05, _GIST_MARGINS[strategy]
    opts = dict(
        temperature=t,
        margin_strategy=strategy,
        margin=margin,
        contrast_anchors=contrast_anchors,
        contrast_positives=contrast_positives,
    )

    def loss(a, p, n, ga, gp, gn):
        if not with_negatives:
            n = gn = None
        return gist_info_nce(a, p, ga, gp, n, gn, **opts)

    seeds = (0, 1)
    batch = [_gist_inputs(seed) for seed in seeds]
    # eager (shared compiled primitives across the 16 configurations); seeds vmapped
    with jax.disable_jit():
        vals, grads = jax.vmap(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4, 5)))(
            *(np.stack(x) for x in zip(*batch, strict=True))
        )
    for k, (a, p, n, ga, gp, gn) in enumerate(batch):
        guide = tuple(np.float64(x) for x in (ga, gp, gn if with_negatives else None))
        neg = np.float64(n) if with_negatives else None

        def ref(a_, p_, n_, guide=guide):
            return np_gist(
                a_,
                p_,
                guide[0],
                guide[1],
                n_,
                guide[2],
                t=t,
                strategy=strategy,
                margin=margin,
                contrast_anchors=contrast_anchors,
                contrast_positives=contrast_positives,
            )

        expect, masked = np_gist(
            a,
            p,
            ga,
            gp,
            n if with_negatives else None,
            gn if with_negatives else None,
            t=t,
            strategy=strategy,
            margin=margin,
            contrast_anchors=contrast_anchors,
            contrast_positives=contrast_positives,
            return_masked=True,
        )
        assert masked > 0  # the guide does filter something here
        np.testing.assert_allclose(vals[k], expect, rtol=1e-5, atol=1e-6)
        if with_negatives:
            ra, rp, rn = _numeric_grads(ref, (np.float64(a), np.float64(p), neg))
            np.testing.assert_allclose(grads[2][k], rn, rtol=2e-3, atol=2e-4)
        else:
            ra, rp = _numeric_grads(lambda x, y: ref(x, y, None), (np.float64(a), np.float64(p)))
            np.testing.assert_allclose(grads[2][k], 0.0)
        np.testing.assert_allclose(grads[0][k], ra, rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(grads[1][k], rp, rtol=2e-3, atol=2e-4)
        for g in grads[3:]:  # the guide is frozen
            np.testing.assert_array_equal(g[k], 0.0)


def test_gist_margin_zero_default_temperature_and_self_similarity():
    rng = np.random.default_rng(5)
    a, p = rng.normal(size=(2, 6, 4)).astype(np.float32)
    ga, gp = (x @ rng.normal(size=(4, 5)) for x in (a, p))
    ga, gp = np.float32(ga), np.float32(gp)
    # defaults: τ = 0.01, absolute margin 0; logits reach 1/τ = 100, so float32 rounding of the
    # loss is about eps32 · 100 in absolute terms
    np.testing.assert_allclose(
        gist_info_nce(a, p, ga, gp), np_gist(a, p, ga, gp, t=0.01), rtol=1e-5, atol=1e-5
    )
    # a guide that rates every anchor identical to its positive (g_i = 1) drops nothing by its
    # rule with margin 0, but the self-similarities of the a·a and p·p blocks are always
    # excluded (as sentence-transformers does): per row the positive 1/τ = 2 and 3 + 3 + 3
    # zero entries, the same as with any positive margin
    x = np.eye(4, dtype=np.float32)
    expect = np.log(np.exp(2.0) + 9.0) - 2.0
    for margin in (0.0, 1e-3):
        got = gist_info_nce(x, x, x, x, temperature=0.5, margin=margin)
        np.testing.assert_allclose(got, expect, rtol=1e-6)


def _duplicate_pairs(seed, b=12, d=6, dg=5):
    """A batch where every third pair is a duplicate (positive == anchor, for model and guide)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(b, d))
    p = a + 0.5 * rng.normal(size=(b, d))
    n = rng.normal(size=(b, d))
    w = rng.normal(size=(d, dg))
    ga, gp, gn = (x @ w + 0.3 * rng.normal(size=(b, dg)) for x in (a, p, n))
    p[::3], gp[::3] = a[::3], ga[::3]  # guide cosine exactly 1 for these pairs
    return tuple(np.float32(x) for x in (a, p, n, ga, gp, gn))


@pytest.mark.parametrize("with_negatives", [False, True], ids=["pairs", "triplets"])
@pytest.mark.parametrize("strategy", ["absolute", "relative"])
def test_gist_duplicate_pairs_exclude_self_similarity(strategy, with_negatives):
    """Duplicate pairs with margin 0: every contrast flag, values and gradients vs NumPy."""
    a, p, n, ga, gp, gn = _duplicate_pairs(3)
    if not with_negatives:
        n = gn = None
    t = 0.05
    for contrast_anchors in (True, False):
        for contrast_positives in (True, False):
            opts = dict(
                t=t,
                strategy=strategy,
                margin=0.0,
                contrast_anchors=contrast_anchors,
                contrast_positives=contrast_positives,
            )

            def loss(a_, p_, n_, opts=opts):
                return gist_info_nce(
                    a_,
                    p_,
                    ga,
                    gp,
                    n_,
                    gn,
                    temperature=opts["t"],
                    margin_strategy=opts["strategy"],
                    margin=opts["margin"],
                    contrast_anchors=opts["contrast_anchors"],
                    contrast_positives=opts["contrast_positives"],
                )

            def ref(a_, p_, n_, opts=opts):
                g = tuple(None if x is None else np.float64(x) for x in (ga, gp, gn))
                return np_gist(a_, p_, g[0], g[1], n_, g[2], **opts)

            argnums = (0, 1, 2) if with_negatives else (0, 1)
            val, grads = jax.value_and_grad(loss, argnums=argnums)(a, p, n)
            f64 = tuple(np.float64(x) for x in (a, p, n) if x is not None)
            # logits reach 1/τ = 20: float32 rounding of the loss is about eps32 · 20 absolute
            np.testing.assert_allclose(
                val, ref(*f64, *((None,) * (3 - len(f64)))), rtol=1e-5, atol=2e-5
            )
            if with_negatives:
                expect = _numeric_grads(ref, f64)
            else:
                expect = _numeric_grads(lambda x, y: ref(x, y, None), f64)
            for g, e in zip(grads, expect, strict=True):
                np.testing.assert_allclose(g, e, rtol=2e-3, atol=2e-4)


# --------------------------------------------------------------------------------------------
# margin_info_nce and sigmoid_loss
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("margin", [0.0, 0.35])
@pytest.mark.parametrize("kind", ["cosface", "arcface"])
def test_margin_info_nce_matches_reference(kind, margin):
    scale = 8.0
    with jax.disable_jit():
        f = jax.value_and_grad(
            lambda x, y: margin_info_nce(x, y, margin=margin, scale=scale, kind=kind), (0, 1)
        )
        for seed in (0, 1):
            z1, z2 = _pairs(seed)
            val, grads = f(z1, z2)
            args = (np.float64(z1), np.float64(z2))

            def ref(x, y):
                return np_margin(x, y, margin, scale, kind)

            np.testing.assert_allclose(val, ref(*args), rtol=1e-5, atol=1e-6)
            for g, r in zip(grads, _numeric_grads(ref, args), strict=True):
                np.testing.assert_allclose(g, r, rtol=2e-3, atol=2e-4)


def test_margin_zero_is_symmetric_info_nce():
    from jaxemb.losses import info_nce

    z1, z2 = _pairs(2)
    for kind in ("cosface", "arcface"):
        np.testing.assert_allclose(
            margin_info_nce(z1, z2, margin=0.0, scale=20.0, kind=kind),
            info_nce(z1, z2, temperature=0.05, symmetric=True),
            rtol=1e-5,
        )


def test_arcface_at_cos_one_is_finite_and_exact():
    # identical views: cos θ⁺ = 1 (θ⁺ = 0), where d arccos / d cos is infinite
    z = np.float32(np.random.default_rng(3).normal(size=(6, 4)))
    for m in (0.2, 0.5):
        val, g = jax.value_and_grad(
            lambda x, m=m: margin_info_nce(x, x, margin=m, scale=30.0, kind="arcface")
        )(z)
        assert np.isfinite(val) and np.isfinite(np.asarray(g)).all()
        # logits of magnitude s = 30: float32 rounding of the loss is a few eps32 · 30
        np.testing.assert_allclose(
            val, np_margin(z, z, m, 30.0, "arcface"), rtol=1e-5, atol=16 * EPS32 * 30
        )
        # antipodal views: cos θ⁺ = −1
        val, g = jax.value_and_grad(
            lambda x, m=m: margin_info_nce(x, -x, margin=m, scale=30.0, kind="arcface")
        )(z)
        assert np.isfinite(val) and np.isfinite(np.asarray(g)).all()
        np.testing.assert_allclose(
            val, np_margin(z, -z, m, 30.0, "arcface"), rtol=1e-5, atol=16 * EPS32 * 30
        )


@pytest.mark.parametrize("scale, bias", [(10.0, -10.0), (1.0, 0.0), (3.5, 2.0)])
def test_sigmoid_loss_matches_reference(scale, bias):
    a, b = _pairs(4)
    f = jax.value_and_grad(
        lambda x, y, s, c: sigmoid_loss(x, y, logit_scale=s, logit_bias=c), (0, 1, 2, 3)
    )
    val, grads = f(a, b, scale, bias)
    args = (np.float64(a), np.float64(b), np.float64(scale), np.float64(bias))
    np.testing.assert_allclose(val, np_sigmoid(*args), rtol=1e-5, atol=1e-6)
    refs = _numeric_grads(np_sigmoid, args)
    for g, r in zip(grads, refs, strict=True):  # also d/d logit_scale and d/d logit_bias
        np.testing.assert_allclose(g, r, rtol=2e-3, atol=2e-4)
    # learnable parameters may be traced (e.g. exp(t′) inside the user's jit)
    traced = jax.jit(lambda t, c: sigmoid_loss(a, b, logit_scale=jnp.exp(t), logit_bias=c))
    np.testing.assert_allclose(traced(np.log(scale), bias), val, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Sharding, robustness, validation.
# --------------------------------------------------------------------------------------------
def _all_losses(a, p, n, ga, gp, gn, scale):
    """Every loss of this file on one set of inputs (one jitted program for all of them)."""
    return [
        gist_info_nce(a, p, ga, gp, n, gn, temperature=1.0 / scale, margin=0.05),
        gist_info_nce(
            a, p, ga, gp, temperature=1.0 / scale, margin_strategy="relative", margin=0.1
        ),
        margin_info_nce(a, p, margin=0.3, scale=scale, kind="cosface"),
        margin_info_nce(a, p, margin=0.3, scale=scale, kind="arcface"),
        sigmoid_loss(a, p, logit_scale=scale, logit_bias=-2.0),
    ]


_NAMES = ["gist_triplets", "gist_pairs_relative", "cosface", "arcface", "sigmoid"]


@jax.jit
def _all_values_and_grads(a, p, n, ga, gp, gn, scale):
    out = []
    for k in range(len(_NAMES)):
        out.append(
            jax.value_and_grad(
                lambda a, p, n, k=k: _all_losses(a, p, n, ga, gp, gn, scale)[k], (0, 1, 2)
            )(a, p, n)
        )
    return out


def test_sharded_matches_single_device(mesh8):
    rng = np.random.default_rng(7)
    a = rng.normal(size=(16, 8))
    p = a + 0.7 * rng.normal(size=(16, 8))
    n = rng.normal(size=(16, 8))
    w = rng.normal(size=(8, 6))
    arrays = tuple(np.float32(x) for x in (a, p, n, a @ w, p @ w, n @ w))
    single = _all_values_and_grads(*arrays, 10.0)
    sharded = _all_values_and_grads(*shard_batch(mesh8, arrays), 10.0)
    for name, (v1, g1), (v8, g8) in zip(_NAMES, single, sharded, strict=True):
        np.testing.assert_allclose(v8, v1, rtol=1e-5, atol=16 * EPS32 * 10.0, err_msg=name)
        for x, y in zip(g8, g1, strict=True):
            # rtol 1e-5 relative to the gradient's scale (float32 summation order differs)
            tol = 1e-5 * np.abs(y).max()
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=tol, err_msg=name)


def test_robust_extremes():
    a, p, n, ga, gp, gn = _gist_inputs(8)
    cases = {
        "tau_1e-3": ((a, p, n, ga, gp, gn), 1e3),
        "huge_norm": ((a * 1e4, p * 1e4, n * 1e4, ga * 1e4, gp * 1e4, gn * 1e4), 20.0),
        "all_equal": (tuple(np.ones_like(x) for x in (a, p, n, ga, gp, gn)), 20.0),
        "zero_vectors": ((a * 0, p, n * 0, ga * 0, gp, gn), 1e3),
    }
    for case, (arrays, scale) in cases.items():
        for name, (val, grads) in zip(_NAMES, _all_values_and_grads(*arrays, scale), strict=True):
            assert np.isfinite(val), (case, name)
            assert all(np.isfinite(np.asarray(g)).all() for g in grads), (case, name)
    # spot values at the extremes against the references. The logits reach the scale (1/τ):
    # float32 rounding of cosines (~eps32) becomes ~eps32 · scale in absolute terms, and the
    # reference can be (almost) 0, so each check has that atol
    arrays, scale = cases["tau_1e-3"]
    vals = [v for v, _ in _all_values_and_grads(*arrays, scale)]
    atol = 16 * EPS32 * scale
    np.testing.assert_allclose(
        vals[0], np_gist(a, p, ga, gp, n, gn, t=1e-3, margin=0.05), rtol=1e-4, atol=atol
    )
    np.testing.assert_allclose(vals[2], np_margin(a, p, 0.3, 1e3, "cosface"), rtol=1e-4, atol=atol)
    np.testing.assert_allclose(vals[4], np_sigmoid(a, p, 1e3, -2.0), rtol=1e-4, atol=atol)
    arrays, scale = cases["all_equal"]
    vals = [v for v, _ in _all_values_and_grads(*arrays, scale)]
    one = np.ones((6, 4))
    atol = 16 * EPS32 * scale
    np.testing.assert_allclose(
        vals[3], np_margin(one, one, 0.3, 20.0, "arcface"), rtol=1e-5, atol=atol
    )
    np.testing.assert_allclose(vals[4], np_sigmoid(one, one, 20.0, -2.0), rtol=1e-5, atol=atol)
    # bfloat16 in, float32 out, equal to the float64 reference of the rounded inputs
    low = tuple(jnp.asarray(x, jnp.bfloat16) for x in (a, p, n, ga, gp, gn))
    r = tuple(np.asarray(x, np.float64) for x in low)
    vals = [v for v, _ in _all_values_and_grads(*low, 10.0)]
    assert all(v.dtype == jnp.float32 for v in vals)
    atol = 16 * EPS32 * 10.0
    np.testing.assert_allclose(
        vals[0], np_gist(*r[:2], *r[3:5], r[2], r[5], t=0.1, margin=0.05), rtol=1e-5, atol=atol
    )
    np.testing.assert_allclose(
        vals[3], np_margin(r[0], r[1], 0.3, 10.0, "arcface"), rtol=1e-5, atol=atol
    )
    np.testing.assert_allclose(vals[4], np_sigmoid(r[0], r[1], 10.0, -2.0), rtol=1e-5, atol=atol)


_X = np.ones((4, 3), np.float32)
_G = np.ones((4, 5), np.float32)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: gist_info_nce(_X, _X[:-1], _G, _G), r"positives.*\[4, 3\].*\[3, 3\]"),
        (lambda: gist_info_nce(_X, _X, _G[:-1], _G[:-1]), "guide_anchors"),
        (lambda: gist_info_nce(_X, _X, _G, _G[:, :4]), "guide_positives"),
        (lambda: gist_info_nce(_X, _X, _G, _G, _X), "together"),
        (lambda: gist_info_nce(_X, _X, _G, _G, None, _G), "together"),
        (lambda: gist_info_nce(_X, _X, _G, _G, _X[:, :2], _G), "negatives"),
        (lambda: gist_info_nce(_X, _X, _G, _G, _X[:, None], _G), "negatives"),
        (lambda: gist_info_nce(_X, _X, _G, _G, _X, _G[:2]), "guide_negatives"),
        (lambda: gist_info_nce(_X, _X, _G, _G, temperature=0.0), "temperature"),
        (lambda: gist_info_nce(_X, _X, _G, _G, margin=-0.1), "margin"),
        (lambda: gist_info_nce(_X, _X, _G, _G, margin_strategy="soft"), "margin_strategy"),
        (lambda: gist_info_nce(_X, _X, _G.astype(int), _G.astype(int)), "float"),
        (lambda: gist_info_nce(_X, _X, _G, _G, contrast_anchors=1), "contrast_anchors"),
        (lambda: margin_info_nce(_X, _X[:, :2], margin=0.1, scale=10.0), "z2"),
        (lambda: margin_info_nce(_X[0], _X[0], margin=0.1, scale=10.0), "z1"),
        (lambda: margin_info_nce(_X, _X, margin=-0.1, scale=10.0), "margin"),
        (lambda: margin_info_nce(_X, _X, margin=0.1, scale=0.0), "scale"),
        (lambda: margin_info_nce(_X, _X, margin=0.1, scale=10.0, kind="sphere"), "kind"),
        (lambda: margin_info_nce(_X[:0], _X[:0], margin=0.1, scale=10.0), "empty"),
        (lambda: sigmoid_loss(_X, _X[:-1], logit_scale=10.0, logit_bias=-10.0), "b must be"),
        (lambda: sigmoid_loss(_X.astype(int), _X, logit_scale=1.0, logit_bias=0.0), "float"),
        (lambda: sigmoid_loss(_X, _X, logit_scale=-1.0, logit_bias=0.0), "logit_scale"),
        (lambda: sigmoid_loss(_X, _X, logit_scale=np.ones(2), logit_bias=0.0), "logit_scale"),
        (lambda: sigmoid_loss(_X, _X, logit_scale=1.0, logit_bias=np.nan), "logit_bias"),
        (lambda: sigmoid_loss(_X, _X, logit_scale=1.0, logit_bias=np.zeros(3)), "logit_bias"),
    ],
)
def test_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------------------------
# Property tests: batch permutation and positive row rescaling leave every loss unchanged.
# --------------------------------------------------------------------------------------------
_SETTINGS = settings(max_examples=20, deadline=None, derandomize=True)


@_SETTINGS
@given(seed=st.integers(0, 2**16), perm=st.permutations(list(range(6))))
def test_batch_permutation_invariance(seed, perm):
    arrays = _gist_inputs(seed)
    perm = np.array(perm)
    base = _all_values_and_grads(*arrays, 10.0)
    permuted = _all_values_and_grads(*(x[perm] for x in arrays), 10.0)
    for name, (v1, _), (v2, _) in zip(_NAMES, base, permuted, strict=True):
        # two float32 computations whose cosines differ by the rounding of the normalisation:
        # an absolute eps32 · scale (the loss can be near 0), as in test_robust_extremes
        np.testing.assert_allclose(v2, v1, rtol=2e-5, atol=16 * EPS32 * 10.0, err_msg=name)


@_SETTINGS
@given(
    seed=st.integers(0, 2**16),
    log_scales=st.lists(st.floats(-3.0, 3.0), min_size=36, max_size=36),
)
def test_row_scaling_invariance(seed, log_scales):
    arrays = _gist_inputs(seed)
    s = (10.0 ** np.asarray(log_scales, np.float32)).reshape(6, 6)
    scaled = tuple(x * s[k][:, None] for k, x in enumerate(arrays))
    base = _all_values_and_grads(*arrays, 10.0)
    rescaled = _all_values_and_grads(*scaled, 10.0)
    for name, (v1, _), (v2, _) in zip(_NAMES, base, rescaled, strict=True):
        # two float32 computations whose cosines differ by the rounding of the normalisation:
        # an absolute eps32 · scale (the loss can be near 0), as in test_robust_extremes
        np.testing.assert_allclose(v2, v1, rtol=2e-5, atol=16 * EPS32 * 10.0, err_msg=name)
