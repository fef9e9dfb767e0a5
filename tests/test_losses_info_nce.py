"""info_nce against an independent NumPy (float64) reference of sentence-transformers v6's
MultipleNegativesRankingLoss, for every directions × partition_mode × hardness_mode × similarity.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from losses_reference import logsumexp, normalize, numeric_grad
from tolerances import EPS32

from jaxemb.losses import info_nce
from jaxemb.parallel import shard_batch

OTHER_DIRECTIONS = ("query_to_query", "doc_to_query", "doc_to_doc")
DIRECTION_SETS = [
    ("query_to_doc", *extra)
    for r in range(4)
    for extra in itertools.combinations(OTHER_DIRECTIONS, r)
]
HARDNESS = [None, "in_batch_negatives", "hard_negatives", "all_negatives"]
ALL_DIRECTIONS = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")


# --------------------------------------------------------------------------------------------
# NumPy reference, written entry by entry from the sentence-transformers v6 semantics.
# --------------------------------------------------------------------------------------------
def np_info_nce(
    q,
    p,
    n=None,
    *,
    t,
    similarity="cosine",
    directions=("query_to_doc",),
    partition="joint",
    hardness=None,
    alpha=0.0,
    frozen=None,
):
    """Mean over anchors of logZ_i − s(q_i, p_i)/t.

    ``frozen`` = (q, p, n) from which the hardness term α·s is taken (it carries no gradient in
    sentence-transformers, so finite differences must not move it); defaults to the inputs.
    """

    def prep(q, p, n):
        q, p = np.asarray(q, np.float64), np.asarray(p, np.float64)
        n = np.zeros((len(q), 0, q.shape[1])) if n is None else np.asarray(n, np.float64)
        if similarity == "cosine":
            q, p, n = normalize(q), normalize(p), normalize(n)
        # candidate documents: positives, then negative column 0, column 1, ...
        docs = np.concatenate([p] + [n[:, k] for k in range(n.shape[1])])
        return q, p, docs

    q, p, docs = prep(q, p, n)
    fq, _, fdocs = prep(*frozen) if frozen is not None else (q, p, docs)
    b = len(q)
    owner = np.arange(len(docs)) % b  # the anchor each document belongs to
    is_neg = np.arange(len(docs)) >= b  # an explicit hard negative (not a positive)
    total = 0.0
    for i in range(b):
        own = owner == i
        penalised = {
            None: np.zeros(len(docs), bool),
            "in_batch_negatives": ~own,
            "hard_negatives": own & is_neg,
            "all_negatives": ~(own & ~is_neg),
        }[hardness]
        row = docs @ q[i] / t + alpha * (fdocs @ fq[i]) * penalised
        blocks = [row]
        if "query_to_query" in directions:
            blocks.append(np.delete(q @ q[i], i) / t)
        if "doc_to_query" in directions:
            blocks.append(q @ p[i] / t)
        if "doc_to_doc" in directions:
            blocks.append((docs @ p[i])[~own] / t)
        if partition == "joint":
            log_z = logsumexp(np.concatenate(blocks))
        else:
            log_z = np.mean([logsumexp(x) for x in blocks])
        total += log_z - q[i] @ p[i] / t
    return total / b


def np_clip(q, p, n, t):
    """½(CE over rows of q·[p; n]ᵀ/t + CE over columns of q·pᵀ/t), cosine."""
    q, p = normalize(q), normalize(p)
    docs = p if n is None else np.concatenate([p] + [normalize(n[:, k]) for k in range(n.shape[1])])
    s = q @ docs.T / t
    b = len(q)
    rows = np.mean([logsumexp(s[i]) - s[i, i] for i in range(b)])
    cols = np.mean([logsumexp(s[:, i][:b]) - s[i, i] for i in range(b)])
    return 0.5 * (rows + cols)


def _inputs(seed, b=5, d=3, h=2, scale=1.0):
    """Random inputs with duplicate rows and hard negatives equal to other anchors' positives."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(b, d))
    p = q + 0.8 * rng.normal(size=(b, d))
    n = rng.normal(size=(b, h, d))
    q[3] = q[1]  # duplicate anchors
    p[4] = p[2]  # duplicate positives
    n[0, 0] = p[1]  # a hard negative that is another anchor's positive
    n[2, h - 1] = p[3]
    return tuple(np.float32(scale * x) for x in (q, p, n))


def _numeric_grads(f, args):
    grads = []
    for k in range(len(args)):

        def fk(x, k=k):
            return f(*args[:k], x, *args[k + 1 :])

        grads.append(numeric_grad(fk, args[k]))
    return grads


def _per_direction_invalid(directions, partition):
    return partition == "per_direction" and bool({"query_to_query", "doc_to_doc"} & set(directions))


# --------------------------------------------------------------------------------------------
# Values and gradients for every option combination.
# --------------------------------------------------------------------------------------------
# _EAGER_NOTE: the ~100 option combinations below run eagerly (jax.disable_jit) so they share
# the compiled primitives instead of compiling one XLA program each; the jitted (and sharded)
# path is checked against these values further down.
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
@pytest.mark.parametrize("hardness", HARDNESS)
@pytest.mark.parametrize("partition", ["joint", "per_direction"])
@pytest.mark.parametrize("directions", DIRECTION_SETS, ids="+".join)
def test_info_nce_matches_reference(directions, partition, hardness, similarity):
    t, alpha = 0.1, (3.0 if hardness else 0.0)
    kw = dict(
        temperature=t,
        similarity=similarity,
        directions=directions,
        partition_mode=partition,
        hardness_mode=hardness,
        hardness_strength=alpha,
    )
    if _per_direction_invalid(directions, partition):
        # sentence-transformers v6 rejects these (their blocks never hold the positive)
        q, p, n = _inputs(0)
        with pytest.raises(ValueError, match="per_direction"):
            info_nce(q, p, n, **kw)
        return
    f = jax.value_and_grad(lambda a, b, c: info_nce(a, b, c, **kw), argnums=(0, 1, 2))
    scale = 1.0 if similarity == "cosine" else 0.5
    seeds = (0, 1, 2)
    batch = [_inputs(seed, scale=scale) for seed in seeds]
    with jax.disable_jit():  # see _EAGER_NOTE; the seeds ride on one vmapped evaluation
        vals, grads = jax.vmap(f)(*(np.stack(x) for x in zip(*batch, strict=True)))
    for k, args in enumerate(batch):
        base = tuple(np.float64(x) for x in args)

        def ref(q, p, n, base=base):
            return np_info_nce(
                q,
                p,
                n,
                t=t,
                similarity=similarity,
                directions=directions,
                partition=partition,
                hardness=hardness,
                alpha=alpha,
                frozen=base,
            )

        np.testing.assert_allclose(vals[k], ref(*base), rtol=1e-5, atol=1e-6)
        for g, r in zip(grads, _numeric_grads(ref, base), strict=True):
            np.testing.assert_allclose(g[k], r, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("hardness", [None, "in_batch_negatives"])
@pytest.mark.parametrize(
    "directions, partition",
    [(ds, "joint") for ds in DIRECTION_SETS]
    + [(("query_to_doc",), "per_direction"), (("query_to_doc", "doc_to_query"), "per_direction")],
)
def test_info_nce_without_negatives_matches_reference(directions, partition, hardness):
    t, alpha = 0.07, 2.0
    kw = dict(
        temperature=t,
        directions=directions,
        partition_mode=partition,
        hardness_mode=hardness,
        hardness_strength=alpha,
    )
    f = jax.value_and_grad(lambda a, b: info_nce(a, b, **kw), argnums=(0, 1))
    batch = [_inputs(seed, b=6)[:2] for seed in (3, 4)]
    with jax.disable_jit():  # see _EAGER_NOTE
        vals, grads = jax.vmap(f)(*(np.stack(x) for x in zip(*batch, strict=True)))
    for k, args in enumerate(batch):
        base = tuple(np.float64(x) for x in args)

        def ref(a, b, base=base):
            return np_info_nce(
                a,
                b,
                t=t,
                directions=directions,
                partition=partition,
                hardness=hardness,
                alpha=alpha,
                frozen=(*base, None),
            )

        np.testing.assert_allclose(vals[k], ref(*base), rtol=1e-5, atol=1e-6)
        for g, r in zip(grads, _numeric_grads(ref, base), strict=True):
            np.testing.assert_allclose(g[k], r, rtol=2e-3, atol=5e-4)
    if hardness == "in_batch_negatives":
        # without hard negatives every negative is an in-batch one: all_negatives is the same
        q, p = batch[0]
        other = dict(kw, hardness_mode="all_negatives")
        with jax.disable_jit():
            np.testing.assert_allclose(info_nce(q, p, **other), vals[0], rtol=1e-6)


def test_hardness_penalty_is_not_divided_by_temperature_and_has_no_gradient():
    # One anchor-specific hand check: B = 2, no negatives, in-batch hardness.
    q = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    p = np.array([[1.0, 0.0], [0.6, 0.8]], np.float32)
    t, alpha = 0.5, 4.0
    got = info_nce(q, p, temperature=t, hardness_mode="in_batch_negatives", hardness_strength=alpha)
    # anchor 0: positive cos 1, negative cos 0.6 → logits 2 and 0.6/0.5 + 4·0.6
    # anchor 1: positive cos 0.8, negative cos 0 → logits 1.6 and 0 + 0
    l0 = np.log(np.exp(2.0) + np.exp(1.2 + 2.4)) - 2.0
    l1 = np.log(np.exp(1.6) + np.exp(0.0)) - 1.6
    np.testing.assert_allclose(got, (l0 + l1) / 2, rtol=1e-6)


@pytest.mark.parametrize("with_negatives", [False, True])
def test_symmetric_is_clip_loss(with_negatives):
    q, p, n = _inputs(3, b=6)
    n = n if with_negatives else None
    f = jax.value_and_grad(lambda *a: info_nce(*a, temperature=0.2, symmetric=True), argnums=(0, 1))
    args = (q, p) if n is None else (q, p, n)
    val, (gq, gp) = f(*args)
    base_n = None if n is None else np.float64(n)

    def ref(a, b):
        return np_clip(a, b, base_n, 0.2)

    np.testing.assert_allclose(val, ref(np.float64(q), np.float64(p)), rtol=1e-5)
    rq, rp = _numeric_grads(ref, (np.float64(q), np.float64(p)))
    np.testing.assert_allclose(gq, rq, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(gp, rp, rtol=2e-3, atol=2e-4)
    # sentence-transformers' equivalent configuration
    same = info_nce(
        *args,
        temperature=0.2,
        directions=("query_to_doc", "doc_to_query"),
        partition_mode="per_direction",
    )
    np.testing.assert_allclose(val, same, rtol=1e-6)


def test_defaults_and_duplicate_directions():
    q, p, n = _inputs(4)
    # default τ = 0.05 (ST scale 20), cosine
    np.testing.assert_allclose(info_nce(q, p, n), np_info_nce(q, p, n, t=0.05), rtol=1e-5)
    # ST keys its blocks by name: a repeated direction counts once
    np.testing.assert_allclose(
        info_nce(q, p, n, directions=("query_to_doc", "doc_to_query", "query_to_doc")),
        info_nce(q, p, n, directions=("doc_to_query", "query_to_doc")),
        rtol=1e-6,
    )
    # nested lists are array-likes too
    np.testing.assert_allclose(info_nce(q.tolist(), p.tolist(), n.tolist()), info_nce(q, p, n))
    # zero hard negatives per anchor are the same as none
    np.testing.assert_allclose(info_nce(q, p, n[:, :0]), info_nce(q, p), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Sharding, robustness, validation.
# --------------------------------------------------------------------------------------------
_SHARDED_CONFIGS = [
    dict(),
    dict(directions=ALL_DIRECTIONS, hardness_mode="all_negatives", hardness_strength=5.0),
    dict(
        directions=("query_to_doc", "doc_to_query"),
        partition_mode="per_direction",
        similarity="dot",
        hardness_mode="in_batch_negatives",
        hardness_strength=2.0,
    ),
    dict(symmetric=True, hardness_mode="hard_negatives", hardness_strength=1.0),
]


def test_info_nce_sharded_matches_single_device(mesh8):
    q, p, n = _inputs(5, b=16, d=8, h=2, scale=0.5)

    # all configurations in one program: one SPMD compilation instead of one per configuration
    @jax.jit
    def f(a, b, c):
        return [
            jax.value_and_grad(lambda *x, kw=kw: info_nce(*x, **kw), argnums=(0, 1, 2))(a, b, c)
            for kw in _SHARDED_CONFIGS
        ]

    single = f(q, p, n)
    sharded = f(*shard_batch(mesh8, (q, p, n)))
    for kw, (v1, g1), (v8, g8) in zip(_SHARDED_CONFIGS, single, sharded, strict=True):
        np.testing.assert_allclose(v8, v1, rtol=1e-5, err_msg=str(kw))
        # the jitted single-device value is the eager/reference-checked one
        with jax.disable_jit():
            np.testing.assert_allclose(v1, info_nce(q, p, n, **kw), rtol=1e-6, err_msg=str(kw))
        for a, b in zip(g8, g1, strict=True):
            # rtol 1e-5 of the gradient's scale: entries that cancel to ~0 differ by float32
            # summation order across shards (|Δ| ~ 1e-7 · max|g|)
            np.testing.assert_allclose(
                a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max(), err_msg=str(kw)
            )


def _finite(val, grads):
    return bool(np.isfinite(val)) and all(np.isfinite(np.asarray(g)).all() for g in grads)


_ROBUST_CONFIGS = [
    dict(),
    dict(directions=ALL_DIRECTIONS, hardness_mode="all_negatives", hardness_strength=9.0),
    dict(symmetric=True),
    dict(similarity="dot", directions=ALL_DIRECTIONS),
]


def _np_for_config(kw, q, p, n, t):
    if kw.get("symmetric"):
        return np_clip(q, p, n, t)
    return np_info_nce(
        q,
        p,
        n,
        t=t,
        similarity=kw.get("similarity", "cosine"),
        directions=kw.get("directions", ("query_to_doc",)),
        hardness=kw.get("hardness_mode"),
        alpha=kw.get("hardness_strength", 0.0),
    )


def test_info_nce_robust():
    q, p, n = _inputs(6, b=6)

    @jax.jit  # every configuration in one program (one compilation per input dtype)
    def f(a, b, c, t):
        return [
            jax.value_and_grad(
                lambda *x, kw=kw: info_nce(*x, temperature=t, **kw), argnums=(0, 1, 2)
            )(a, b, c)
            for kw in _ROBUST_CONFIGS
        ]

    cases = {
        "tiny_tau": (q, p, n, 1e-3),
        "huge_norm": (q * 1e4, p * 1e4, n * 1e4, 0.05),
        "all_equal": (np.ones_like(q), np.ones_like(p), np.ones_like(n), 0.05),
        "zero_vectors": (q * 0, p, n, 1e-3),
    }
    for name, args in cases.items():
        for kw, (val, grads) in zip(_ROBUST_CONFIGS, f(*args), strict=True):
            assert _finite(val, grads), (name, kw)
    # all-equal embeddings: every logit ties, loss = log(#candidates) for the default layout
    np.testing.assert_allclose(f(*cases["all_equal"])[0][0], np.log(18.0), rtol=1e-5)
    # zero anchors: every cosine logit is 0 (normalisation maps 0 to 0)
    np.testing.assert_allclose(f(*cases["zero_vectors"])[0][0], np.log(18.0), rtol=1e-5)
    # tiny τ: still the reference value
    for kw, (val, _) in zip(_ROBUST_CONFIGS, f(*cases["tiny_tau"]), strict=True):
        np.testing.assert_allclose(val, _np_for_config(kw, q, p, n, 1e-3), rtol=1e-4)
    # bfloat16 inputs accumulate in float32 and match the float64 reference of the rounded inputs
    low = tuple(jnp.asarray(x, jnp.bfloat16) for x in (q, p, n))
    rounded = tuple(np.asarray(x, np.float64) for x in low)
    for kw, (val, grads) in zip(_ROBUST_CONFIGS, f(*low, 0.1), strict=True):
        assert val.dtype == jnp.float32 and all(g.dtype == jnp.bfloat16 for g in grads)
        np.testing.assert_allclose(val, _np_for_config(kw, *rounded, 0.1), rtol=1e-5)


_Q = np.ones((4, 3), np.float32)
_N = np.ones((4, 2, 3), np.float32)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: info_nce(_Q, _Q[:-1]), r"positives must be \[batch, dim\] like anchors \[4, 3\]"),
        (lambda: info_nce(_Q, _Q[:, :2]), "positives"),
        (lambda: info_nce(_Q[0], _Q[0]), "anchors"),
        (lambda: info_nce(_Q, _Q, _Q), "negatives"),
        (lambda: info_nce(_Q, _Q, _N[:3]), r"negatives.*\[3, 2, 3\]"),
        (lambda: info_nce(_Q, _Q, _N[..., :2]), "negatives"),
        (lambda: info_nce(_Q.astype(np.int32), _Q.astype(np.int32)), "float"),
        (lambda: info_nce(_Q[:0], _Q[:0]), "empty"),
        (lambda: info_nce(_Q, _Q, temperature=0.0), "temperature"),
        (lambda: info_nce(_Q, _Q, temperature=-0.1), "temperature"),
        (lambda: info_nce(_Q, _Q, similarity="l2"), "similarity"),
        (lambda: info_nce(_Q, _Q, directions=("doc_to_query",)), "query_to_doc"),
        (lambda: info_nce(_Q, _Q, directions=("query_to_doc", "q2q")), "directions"),
        (lambda: info_nce(_Q, _Q, directions="query_to_doc"), "directions"),
        (lambda: info_nce(_Q, _Q, partition_mode="sum"), "partition_mode"),
        (lambda: info_nce(_Q, _Q, hardness_mode="hard"), "hardness_mode"),
        (lambda: info_nce(_Q, _Q, hardness_strength=-1.0), "hardness_strength"),
        (lambda: info_nce(_Q, _Q, symmetric=True, partition_mode="per_direction"), "symmetric"),
        (lambda: info_nce(_Q, _Q, symmetric=True, directions=ALL_DIRECTIONS), "symmetric"),
    ],
)
def test_info_nce_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_info_nce_traced_temperature_is_accepted():
    q, p, n = _inputs(7)
    f = jax.jit(lambda t: info_nce(q, p, n, temperature=t))
    np.testing.assert_allclose(f(0.3), np_info_nce(q, p, n, t=0.3), rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Property tests.
# --------------------------------------------------------------------------------------------
_SETTINGS = settings(max_examples=20, deadline=None, derandomize=True)


@_SETTINGS
@given(seed=st.integers(0, 2**16), perm=st.permutations(list(range(6))))
def test_batch_permutation_invariance(seed, perm):
    q, p, n = _inputs(seed, b=6)
    perm = np.array(perm)
    kw = dict(directions=ALL_DIRECTIONS, hardness_mode="all_negatives", hardness_strength=3.0)
    # two float32 computations; logits of magnitude 1/τ = 20 round to ~eps32 · 20 absolute
    np.testing.assert_allclose(
        info_nce(q[perm], p[perm], n[perm], **kw),
        info_nce(q, p, n, **kw),
        rtol=2e-5,
        atol=16 * EPS32 * 20,
    )


@_SETTINGS
@given(
    seed=st.integers(0, 2**16),
    log_scales=st.lists(st.floats(-3.0, 3.0), min_size=30, max_size=30),
)
def test_cosine_scaling_invariance(seed, log_scales):
    q, p, n = _inputs(seed, b=6)
    s = 10.0 ** np.asarray(log_scales, np.float32)
    kw = dict(directions=ALL_DIRECTIONS, hardness_mode="in_batch_negatives", hardness_strength=2.0)
    scaled = (q * s[:6, None], p * s[6:12, None], n * s[12:].reshape(6, 3)[:, :2, None])
    np.testing.assert_allclose(
        info_nce(*scaled, **kw), info_nce(q, p, n, **kw), rtol=2e-5, atol=16 * EPS32 * 20
    )


@_SETTINGS
@given(seed=st.integers(0, 2**16), t=st.floats(0.02, 2.0))
def test_default_is_cross_entropy_of_scaled_cosines(seed, t):
    q, p, _ = _inputs(seed, b=6)
    s = normalize(q) @ normalize(p).T / t
    expect = np.mean([logsumexp(s[i]) - s[i, i] for i in range(6)])
    np.testing.assert_allclose(info_nce(q, p, temperature=t), expect, rtol=1e-5, atol=1e-6)
