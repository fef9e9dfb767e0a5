"""Bad and degenerate input across the public API, class by class.

Every public function of arrays is listed once with a valid call; each class of bad input is
then derived from that call mechanically, so a new function joins every check by adding one
line to ``CALLS``:

* an empty feature axis (every float array cut to width 0) raises a ``ValueError``;
* one NaN in an input gives a NaN (or raises a ``ValueError``), never a plausible number;
* nested Python lists are accepted wherever arrays are, with the same result;
* a string where a numeric hyperparameter belongs raises a ``ValueError`` naming it.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxemb import analysis, losses, parallel, retrieval, sae
from jaxemb.sae import analysis as sae_analysis
from jaxemb.sae import metrics as sae_metrics

B, D, H = 6, 4, 2
_rng = np.random.default_rng(0)


def _f(*shape):
    return _rng.normal(size=shape).astype(np.float32)


A, P, N, G = _f(B, D), _f(B, D), _f(B, D), _f(B, 5)
A2, P2 = A + 0.3 * _f(B, D), P + 0.1
NEG3 = _f(B, H, D)
LABELS = np.array([0, 0, 1, 1, 2, 2])
BIN = np.array([1, 0, 1, 0, 1, 0])
SCORES = np.array([0.1, 0.9, 0.4, 0.3, 0.8, 0.5], np.float32)
X = _f(24, D)
Y = np.arange(24) % 3
TEACHER = _f(B, 3)
DOCS = _f(B, 3, D)
W_DEC = _f(8, D)


# name -> (function, positional args, keyword args, names of numeric hyperparameters)
CALLS = {
    # losses
    "info_nce": (losses.info_nce, (A, P, NEG3), {"temperature": 0.1}, ("temperature",)),
    "nt_xent": (losses.nt_xent, (A, P), {"temperature": 0.5}, ("temperature",)),
    "nt_xent_labels": (losses.nt_xent, (A, P), {"labels": LABELS}, ()),
    "supcon": (losses.supcon, (A, LABELS), {"temperature": 0.1}, ("temperature",)),
    "debiased_nt_xent": (losses.debiased_nt_xent, (A, P), {}, ("temperature", "tau_plus")),
    "hard_negative_nt_xent": (losses.hard_negative_nt_xent, (A, P), {}, ("beta",)),
    "dhn_nce": (losses.dhn_nce, (A, P), {}, ("temperature", "beta1")),
    "gist_info_nce": (losses.gist_info_nce, (A, P, G, G + 0.1), {}, ("temperature", "margin")),
    "soft_target_info_nce": (
        losses.soft_target_info_nce,
        (A, P, np.eye(B, dtype=np.float32)),
        {"temperature": 0.2},
        ("temperature",),
    ),
    "cwcl": (losses.cwcl, (A, P, A2), {"temperature": 0.2}, ("temperature",)),
    "soft_label_kl": (losses.soft_label_kl, (A, DOCS, TEACHER), {}, ("temperature",)),
    "margin_info_nce": (
        losses.margin_info_nce,
        (A, P),
        {"margin": 0.2, "scale": 20.0},
        ("margin", "scale"),
    ),
    "sigmoid_loss": (
        losses.sigmoid_loss,
        (A, P),
        {"logit_scale": 10.0, "logit_bias": -10.0},
        ("logit_scale", "logit_bias"),
    ),
    "triplet_margin": (losses.triplet_margin, (A, P, N), {}, ("margin",)),
    "batch_all_triplet": (losses.batch_all_triplet, (A, LABELS), {}, ("margin",)),
    "batch_hard_triplet": (losses.batch_hard_triplet, (A, LABELS), {}, ("margin",)),
    "batch_hard_soft_margin_triplet": (
        losses.batch_hard_soft_margin_triplet,
        (A, LABELS),
        {},
        (),
    ),
    "batch_semi_hard_triplet": (losses.batch_semi_hard_triplet, (A, LABELS), {}, ("margin",)),
    "contrastive_pair": (losses.contrastive_pair, (A, P, BIN), {}, ("margin",)),
    "online_contrastive": (losses.online_contrastive, (A, A2, BIN), {}, ("margin",)),
    "cosent": (losses.cosent, (A, P, SCORES), {}, ("scale",)),
    "angle": (losses.angle, (A, P, SCORES), {}, ("scale",)),
    "cosine_mse": (losses.cosine_mse, (A, P, SCORES), {}, ()),
    "margin_mse": (losses.margin_mse, (A, P, N, SCORES), {}, ()),
    "distill_kl": (losses.distill_kl, (A, DOCS, TEACHER), {}, ("temperature",)),
    "alignment": (losses.alignment, (A, A2), {}, ("alpha",)),
    "uniformity": (losses.uniformity, (A,), {}, ("t",)),
    "vicreg": (losses.vicreg, (A, A2), {}, ("sim_weight",)),
    "barlow_twins": (losses.barlow_twins, (A, A2), {}, ("lambda_",)),
    "ldreg": (losses.ldreg, (X,), {"k": 5}, ("beta",)),
    "care_equivariance": (losses.care_equivariance, (A, A2), {}, ()),
    "multi_vector_info_nce": (
        losses.multi_vector_info_nce,
        (DOCS, None, DOCS[:, :2] + 0.5, None, DOCS[:, None] - 0.5, None),
        {"temperature": 0.5},
        ("temperature",),
    ),
    "matryoshka": (
        losses.matryoshka(losses.nt_xent, (2, 4)),
        (A, P),
        {"temperature": 0.5},
        ("temperature",),
    ),
    # parallel
    "blocked_info_nce": (parallel.blocked_info_nce, (A, P), {}, ("temperature",)),
    "moco_info_nce": (parallel.moco_info_nce, (A, P, N), {}, ("temperature",)),
    # analysis
    "rankme": (analysis.rankme, (X,), {}, ("eps",)),
    "spectrum": (analysis.spectrum, (X,), {}, ()),
    "participation_ratio": (analysis.participation_ratio, (X,), {}, ()),
    "analysis.alignment": (analysis.alignment, (A, A2), {}, ("alpha",)),
    "analysis.uniformity": (analysis.uniformity, (X,), {}, ("t",)),
    "anisotropy": (analysis.anisotropy, (X,), {}, ()),
    "isotropy": (analysis.isotropy, (X,), {}, ()),
    "lid_mle": (analysis.lid_mle, (X, 5), {}, ()),
    "lid_twonn": (analysis.lid_twonn, (X,), {}, ("discard_fraction",)),
    "hubness": (analysis.hubness, (X, 3), {}, ()),
    "linear_cka": (analysis.linear_cka, (X, X + 0.5 * _f(24, D)), {}, ()),
    "rbf_cka": (analysis.rbf_cka, (X, X + 0.5 * _f(24, D)), {}, ("sigma",)),
    "relative_representation": (analysis.relative_representation, (X, X[:3]), {}, ()),
    "fit_whitening": (analysis.fit_whitening, (X,), {}, ("eps",)),
    "knn_accuracy": (analysis.knn_accuracy, (X, Y, X[:6], Y[:6]), {"k": 3}, ("temperature",)),
    "knn_classify": (analysis.knn_classify, (X, Y, X[:6]), {"k": 3}, ("temperature",)),
    "linear_probe": (analysis.linear_probe, (X, Y, X, Y), {"steps": 20}, ("l2",)),
    "concept_activation_vector": (
        analysis.concept_activation_vector,
        (X[:12], X[12:] + 1.0),
        {"steps": 20},
        ("l2",),
    ),
    # retrieval
    "search": (retrieval.search, (A, X, 3), {}, ()),
    "sts_spearman": (retrieval.sts_spearman, (A, P, SCORES), {}, ()),
    "maxsim": (retrieval.maxsim, (DOCS, None, X.reshape(8, 3, D), None), {}, ("chunk_size",)),
    "maxsim_pairwise": (
        retrieval.maxsim_pairwise,
        (DOCS, None, DOCS[:, :2] + 0.5, None),
        {},
        ("chunk_size",),
    ),
    # sae
    "geometric_median": (sae.geometric_median, (X,), {}, ("tol",)),
    "remove_parallel_grad": (sae.remove_parallel_grad, (W_DEC, W_DEC + 1.0), {}, ()),
    "sae.metrics.fvu": (sae_metrics.fvu, (A, A2), {}, ()),
    "sae.metrics.mse": (sae_metrics.mse, (A, A2), {}, ()),
    "sae.metrics.cosine": (sae_metrics.cosine, (A, A2), {}, ("eps",)),
    "sae.metrics.explained_variance": (sae_metrics.explained_variance, (A, A2), {}, ()),
    "sae.metrics.shrinkage": (sae_metrics.shrinkage, (A, A2), {}, ("eps",)),
    "sae.metrics.mmcs": (sae_metrics.mmcs, (W_DEC, W_DEC[:5]), {}, ()),
    "sae.metrics.max_cosine": (sae_metrics.max_cosine, (W_DEC, W_DEC[:5]), {}, ("eps",)),
    "sae.metrics.recovered_fraction": (
        sae_metrics.recovered_fraction,
        (W_DEC, W_DEC[:5]),
        {},
        ("threshold",),
    ),
    "sae.analysis.cluster_decoder_directions": (
        sae_analysis.cluster_decoder_directions,
        (W_DEC, 2),
        {"key": jax.random.key(0)},
        ("eps",),
    ),
}


def _call(name, transform=lambda x: x):
    fn, args, kwargs, _ = CALLS[name]
    args = tuple(transform(a) for a in args)
    kwargs = {k: transform(v) for k, v in kwargs.items()}
    return fn(*args, **kwargs)


def _floats_of(out):
    """Every floating value of a function's output (a pytree of arrays / NamedTuples)."""
    leaves = jax.tree.leaves(out)
    vals = [np.asarray(x, np.float64).ravel() for x in leaves if _is_float(x)]
    return np.concatenate(vals) if vals else np.zeros(0)


def _is_float(x):
    return isinstance(x, float) or (
        hasattr(x, "dtype") and np.issubdtype(np.dtype(x.dtype), np.floating)
    )


def _float_array(x):
    return isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)


@pytest.mark.parametrize("name", list(CALLS))
def test_valid_call_is_finite(name):
    """The reference call of every entry works (so the checks below test the bad input)."""
    assert np.isfinite(_floats_of(_call(name))).all()


@pytest.mark.parametrize("name", list(CALLS))
def test_empty_feature_axis_is_refused(name):
    def cut(x):
        return x[..., :0] if _float_array(x) and x.ndim >= 2 else x

    with pytest.raises(ValueError, match=r"empty|must not|got shape|\[\d+, 0\]"):
        _call(name, cut)


@pytest.mark.parametrize("name", list(CALLS))
def test_nan_input_never_gives_a_plausible_number(name):
    """One NaN in any one float input: NaN out (or a ValueError saying so)."""
    fn, args, kwargs, _ = CALLS[name]
    for i in [i for i, a in enumerate(args) if _float_array(a)]:
        bad = args[i].copy()
        bad.flat[bad.size // 2 + 1] = np.nan
        try:
            out = fn(*args[:i], bad, *args[i + 1 :], **kwargs)
        except ValueError as e:
            assert "NaN" in str(e) or "finite" in str(e), (name, i, str(e))
            continue
        values = _floats_of(out)
        assert values.size and not np.isfinite(values).all(), (name, i, values[:8])


@pytest.mark.parametrize("name", list(CALLS))
def test_nested_lists_are_accepted_like_arrays(name):
    def as_lists(x):
        return x.tolist() if isinstance(x, np.ndarray) else x

    want = _floats_of(_call(name))
    got = _floats_of(_call(name, as_lists))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


_HPARAMS = [(name, h) for name, entry in CALLS.items() for h in entry[3]]


@pytest.mark.parametrize("name, hparam", _HPARAMS)
def test_string_hyperparameter_is_refused_by_name(name, hparam):
    fn, args, kwargs, _ = CALLS[name]
    with pytest.raises(ValueError, match=hparam):
        fn(*args, **{**kwargs, hparam: "0.5"})


def test_the_registry_covers_the_array_functions():
    """A new public loss / metric cannot be added without joining these checks."""
    listed = {entry[0] for entry in CALLS.values()}
    for module, skip in (
        (losses, {"matryoshka", "matryoshka_2d", "adaptive_layer"}),
        (sae_metrics, {"dead_fraction", "dense_fraction", "firing_frequency", "l0", "l1"}),
    ):
        for public in module.__all__:
            fn = getattr(module, public)
            if callable(fn) and public not in skip and not isinstance(fn, type):
                assert fn in listed, f"{module.__name__}.{public} is not in CALLS"


# ---------------------------------------------------------------------------------------------
# Latent indices out of range (concrete inputs) are refused, never dropped


_OUT_OF_RANGE = sae.SparseCode(np.ones((2, 2), np.float32), np.array([[0, 3], [1, 4]]))


@pytest.mark.parametrize(
    "call",
    [
        lambda: sae.densify(_OUT_OF_RANGE, 4),
        lambda: sae_analysis.cooccurrence(_OUT_OF_RANGE, 4),
        lambda: sae_metrics.firing_frequency(_OUT_OF_RANGE, 4),
        lambda: sae.dead_latents_update(sae.dead_latents_init(4), _OUT_OF_RANGE, 2),
        lambda: sae.sparse_decode(_OUT_OF_RANGE.values, _OUT_OF_RANGE.indices, W_DEC[:4]),
    ],
    ids=["densify", "cooccurrence", "firing_frequency", "dead_latents_update", "sparse_decode"],
)
def test_latent_indices_out_of_range_are_refused(call):
    with pytest.raises(ValueError, match=r"indices must lie in \[0, d_sae=4\); got values in"):
        call()


# ---------------------------------------------------------------------------------------------
# Settings that make the result meaningless


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: analysis.lid_mle(X, 1), "k must be >= 2"),
        (lambda: analysis.linear_probe(X, Y * 0, X, Y), "at least 2 classes"),
        (lambda: losses.matryoshka(losses.nt_xent, (4, 4, 8)), r"dims must be distinct"),
        (lambda: losses.matryoshka(losses.nt_xent, (2, 4), (1.0, -1.0)), "weights entries"),
        (lambda: losses.matryoshka(losses.nt_xent, (2, 4), (0.0, 0.0)), "must not all be 0"),
        (lambda: losses.matryoshka_2d(losses.nt_xent, (2, 2)), "dims must be distinct"),
        (lambda: sae.init_sae_params(jax.random.key(0), 4, 8, dtype=np.int32), "floating"),
        (lambda: parallel.local_batch_size(parallel.make_mesh(), -8), "global_batch"),
        (lambda: parallel.local_batch_size(parallel.make_mesh(), 12), "data axis size 8"),
        (lambda: losses.contrastive_pair(A, P, np.array([0, 1, 2, 1, 0, 1])), "labels must be"),
        (lambda: losses.online_contrastive(A, P, SCORES), "labels must be"),
        (lambda: losses.nt_xent(A[:1], P[:1]), "at least 2 rows"),
        (lambda: losses.nt_xent(A[:1], P[:1], labels=np.zeros(1, int)), "at least 2 rows"),
    ],
)
def test_meaningless_settings_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_init_b_dec_refuses_non_finite_rows():
    from flax import nnx

    model = sae.TopKSAE(D, 8, k=2, rngs=nnx.Rngs(0))
    before = np.asarray(model.b_dec[...]).copy()
    bad = X.copy()
    bad[5, 1] = np.nan
    for method in ("mean", "geometric_median"):
        with pytest.raises(ValueError, match=r"rows \[5\] hold NaN"):
            sae.init_b_dec(model, bad, method=method)
    np.testing.assert_array_equal(np.asarray(model.b_dec[...]), before)  # untouched
