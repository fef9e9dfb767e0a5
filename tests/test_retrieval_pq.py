"""Product quantization (pq_train / pq_encode / pq_decode / pq_search / opq_train) against
NumPy references of faiss's semantics, and DifferentiablePQ (hard/soft quantizer, training).

faiss 1.15.1 ``ProductQuantizer`` / ``IndexPQ`` were cross-checked outside the suite (same
codebooks: equal codes, equal ids, distances to float32 rounding); the NumPy references here
pin those semantics: nearest centroid by squared L2 (ties: lower id), ``METRIC_L2`` = the sum
of per-sub-space squared distances, ``METRIC_INNER_PRODUCT`` = the sum of sub-inner products.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from tolerances import assert_f32_close

from jaxemb.losses import info_nce
from jaxemb.retrieval import (
    DifferentiablePQ,
    opq_train,
    pq_decode,
    pq_encode,
    pq_search,
    pq_train,
)

N, D, M, NBITS, KSUB, Q = 300, 16, 4, 4, 16, 20  # one set of shapes: XLA compiles once
DSUB = D // M


# ---------------------------------------------------------------------------------------------
# NumPy references (float64)


def np_encode(x, cb):
    xs = np.asarray(x, np.float64).reshape(len(x), cb.shape[0], cb.shape[2])
    d2 = ((xs[:, :, None, :] - np.asarray(cb, np.float64)[None]) ** 2).sum(-1)
    return d2.argmin(-1)  # first minimum: the lower id


def np_decode(codes, cb):
    return np.concatenate([np.asarray(cb)[j][codes[:, j]] for j in range(cb.shape[0])], axis=1)


def np_adc(q, codes, cb, k, metric):
    """Per-query lookup tables, summed over the codes (faiss IndexPQ); stable order."""
    qs = np.asarray(q, np.float64).reshape(len(q), cb.shape[0], 1, cb.shape[2])
    cb = np.asarray(cb, np.float64)[None]
    lut = ((qs - cb) ** 2).sum(-1) if metric == "l2" else (qs * cb).sum(-1)  # [Q, m, ksub]
    s = sum(lut[:, j, codes[:, j]] for j in range(codes.shape[1]))  # [Q, N]
    order = np.argsort(s if metric == "l2" else -s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), order


def _data(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, 4)) @ rng.normal(size=(4, D)) + 0.5 * rng.normal(size=(N, D))
    return x.astype(np.float32), rng.normal(size=(Q, D)).astype(np.float32)


@pytest.fixture(scope="module")
def trained():
    x, q = _data(0)
    return x, q, np.asarray(pq_train(x, m=M, nbits=NBITS, key=0))


# ---------------------------------------------------------------------------------------------
# pq_encode / pq_decode / pq_search


def test_encode_and_decode_match_numpy(trained):
    x, _, cb = trained
    codes = pq_encode(x, cb)
    assert codes.dtype == np.uint8 and codes.shape == (N, M)
    np.testing.assert_array_equal(codes, np_encode(x, cb))
    np.testing.assert_array_equal(pq_decode(codes, cb), np_decode(np.asarray(codes), cb))
    # more than 256 centroids: uint16 ids; lists are accepted
    cb9 = np.random.default_rng(1).normal(size=(2, 512, 2)).astype(np.float32)
    codes9 = pq_encode(x[:10, :4].tolist(), cb9)
    assert codes9.dtype == np.uint16
    np.testing.assert_array_equal(codes9, np_encode(x[:10, :4], cb9))


def test_encode_ties_go_to_the_lower_id():
    cb = np.array([[[1.0], [-1.0], [1.0]]], np.float32)  # ids 0 and 2 equal, 1 as far as 0
    x = np.array([[1.0], [0.0], [-1.0], [2.0]], np.float32)
    np.testing.assert_array_equal(pq_encode(x, cb)[:, 0], [0, 0, 1, 0])


@pytest.mark.parametrize("metric", ["l2", "dot"])
def test_search_matches_numpy_adc_single_and_sharded(trained, metric, mesh8):
    x, q, cb = trained
    codes = np.asarray(pq_encode(x, cb))
    want_s, want_i = np_adc(q, codes, cb, 10, metric)
    # chunks that do not divide N, several query blocks
    got_s, got_i = pq_search(q, codes, cb, 10, metric=metric, chunk_size=64, query_chunk_size=8)
    np.testing.assert_array_equal(got_i, want_i)
    assert got_i.dtype == np.int32 and got_s.dtype == np.float32
    assert_f32_close(got_s, want_s)
    # codes split over 8 devices (300 rows: padded), each device's list merged
    sh_s, sh_i = pq_search(q, codes, cb, 10, metric=metric, chunk_size=64, mesh=mesh8)
    np.testing.assert_array_equal(sh_i, want_i)
    assert_f32_close(sh_s, want_s)


@pytest.mark.parametrize("metric", ["l2", "dot"])
def test_search_exact_ties_lower_id_first(trained, metric, mesh8):
    # integer centroids and queries: every sum is exact, many codes repeat (exact ties)
    x, q, cb = trained
    cb = np.round(2 * cb)
    q = np.round(2 * q)
    codes = np.asarray(pq_encode(x, cb))[np.random.default_rng(2).integers(0, 12, N)]
    want_s, want_i = np_adc(q, codes, cb, 10, metric)
    got_s, got_i = pq_search(q, codes, cb, 10, metric=metric, chunk_size=64, query_chunk_size=8)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_array_equal(got_s, want_s)
    sh_s, sh_i = pq_search(q, codes, cb, 10, metric=metric, chunk_size=64, mesh=mesh8)
    np.testing.assert_array_equal(sh_i, want_i)
    np.testing.assert_array_equal(sh_s, want_s)


# ---------------------------------------------------------------------------------------------
# training


def _blobs(seed):
    """Each sub-space holds KSUB tight, far-apart clusters; every row picks one per sub-space."""
    rng = np.random.default_rng(seed)
    centers = 10.0 * rng.normal(size=(M, KSUB, DSUB))
    labels = np.concatenate([rng.permutation(N) % KSUB for _ in range(M)]).reshape(M, N).T
    x = np_decode(labels, centers) + 0.05 * rng.normal(size=(N, D))
    return x.astype(np.float32), centers, labels


def test_train_recovers_planted_codebooks_and_shards(mesh8):
    x, centers, labels = _blobs(3)
    cb = np.asarray(pq_train(x, m=M, nbits=NBITS, key=1))
    assert cb.shape == (M, KSUB, DSUB) and cb.dtype == np.float32
    codes = np.asarray(pq_encode(x, cb))
    for j in range(M):
        # one centroid per planted cluster, each the mean of its cluster's sub-vectors
        match = np.argmin(((cb[j][:, None] - centers[j][None]) ** 2).sum(-1), axis=1)
        assert sorted(match.tolist()) == list(range(KSUB))
        np.testing.assert_array_equal(match[codes[:, j]], labels[:, j])
        xs = x[:, j * DSUB : (j + 1) * DSUB].astype(np.float64)
        means = np.stack([xs[codes[:, j] == c].mean(0) for c in range(KSUB)])
        assert_f32_close(cb[j], means, rtol=1e-5, scale_tol=1e-6)
    # rows split over the mesh: the same codebooks (psum-reduced sums)
    sharded = np.asarray(pq_train(x, m=M, nbits=NBITS, key=1, mesh=mesh8))
    assert_f32_close(sharded, cb)
    # a warm start at the fixed point stays there
    assert_f32_close(pq_train(x, m=M, nbits=NBITS, init=cb), cb)


def test_opq_rotation_lowers_distortion_and_is_applied_everywhere(trained):
    x, q, _ = trained
    # sub-spaces of very unequal variance: a rotation can balance them
    x = x * np.repeat([4.0, 1.0, 0.25, 0.1], DSUB).astype(np.float32)
    cb_pq = np.asarray(pq_train(x, m=M, nbits=NBITS, key=2))
    rot, cb = opq_train(x, m=M, nbits=NBITS, key=2, opq_iter=6)
    rot, cb = np.asarray(rot, np.float64), np.asarray(cb)
    np.testing.assert_allclose(rot @ rot.T, np.eye(D), atol=1e-5)
    codes = np.asarray(pq_encode(x, cb, rotation=rot))
    recon = np.asarray(pq_decode(codes, cb, rotation=rot))
    assert_f32_close(recon, np_decode(codes, cb) @ rot.T, rtol=1e-5, scale_tol=1e-6)
    err_opq = ((recon - x) ** 2).sum()
    err_pq = ((np_decode(np.asarray(pq_encode(x, cb_pq)), cb_pq) - x) ** 2).sum()
    assert err_opq < 0.8 * err_pq, (err_opq, err_pq)
    # queries are rotated like the codes
    want_s, want_i = np_adc(q @ rot, codes, cb, 10, "l2")
    got_s, got_i = pq_search(q, codes, cb, 10, rotation=rot, chunk_size=64, query_chunk_size=8)
    np.testing.assert_array_equal(got_i, want_i)
    assert_f32_close(got_s, want_s, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# differentiable PQ


def test_differentiable_pq_forward_and_gradients(trained):
    x, _, cb = trained
    x = x[:32]
    w = np.random.default_rng(4).normal(size=(32, D)).astype(np.float32)
    st = DifferentiablePQ(D, m=M, nbits=NBITS, codebooks=cb, temperature=2.0)
    soft = DifferentiablePQ(D, m=M, nbits=NBITS, codebooks=cb, mode="soft", temperature=2.0)
    codes = np.asarray(pq_encode(x, cb))

    @nnx.jit
    def outputs(st, soft, x):
        def lin(model, x):
            return jnp.sum(model(x) * w)

        grads = [nnx.grad(lin, argnums=(0, 1))(model, x) for model in (st, soft)]
        g_dec = nnx.grad(lambda model: jnp.sum(model.decode(codes)))(st)
        return st.encode(x), st(x), st.soft_assignment(x), soft(x), grads, g_dec

    enc, hard, p_got, soft_x, (g_st, g_soft), g_dec = outputs(st, soft, x)
    np.testing.assert_array_equal(enc, codes)
    np.testing.assert_array_equal(hard, np_decode(codes, cb))  # the hard reconstruction
    # soft: softmax(-d²/τ)-weighted centroids
    xs = x.astype(np.float64).reshape(32, M, 1, DSUB)
    logits = -((xs - cb[None].astype(np.float64)) ** 2).sum(-1) / 2.0
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    assert_f32_close(p_got, p)
    assert_f32_close(soft_x, np.einsum("nmk,mkd->nmd", p, cb).reshape(32, D))
    # straight-through: the soft reconstruction's gradient, for the codebooks and the inputs
    assert_f32_close(g_st[0]["codebooks"][...], g_soft[0]["codebooks"][...])
    assert_f32_close(g_st[1], g_soft[1])
    # d/dx Σ w·Σ_k p_k c_k = Σ_k (w·c_k) dp_k/dx,
    # dp_k/dx = p_k (2 Σ_l p_l (x − c_l) − 2 (x − c_k)) / τ
    diff = xs - cb[None]  # [32, M, K, DSUB]
    dp = p[..., None] * (-2 * diff + 2 * (p[..., None] * diff).sum(2, keepdims=True)) / 2.0
    wc = np.einsum("nmd,mkd->nmk", w.reshape(32, M, DSUB), cb)  # w · c_k per sub-space
    assert_f32_close(g_soft[1], np.einsum("nmk,nmke->nme", wc, dp).reshape(32, D))
    # decode(codes): each code's gradient lands on its own centroids
    counts = np.stack([np.bincount(codes[:, j], minlength=KSUB) for j in range(M)])
    want = np.repeat(counts[:, :, None], DSUB, axis=2).astype(np.float32)
    np.testing.assert_array_equal(g_dec["codebooks"][...], want)


def _planted_retrieval(seed=0, noise=3.0):
    """Documents: per sub-space 2 signal dims (std 1) and 2 noise dims (std ``noise``); the
    query of document i is its signal (noise dims zero) plus a little noise. k-means spends the
    centroids on the noise; the relevant geometry is in the signal."""
    rng = np.random.default_rng(seed)
    sig = rng.normal(size=(N, M, 2))
    docs = np.concatenate([sig, noise * rng.normal(size=(N, M, 2))], axis=2).reshape(N, D)
    q = np.concatenate([sig + 0.1 * rng.normal(size=sig.shape), np.zeros((N, M, 2))], axis=2)
    return docs.astype(np.float32), q.reshape(N, D).astype(np.float32)


def _pq_recall_at_10(queries, codes, cb):
    """Recall@10 of query i finding document i, searched Q queries at a time (one compile)."""
    hits = 0
    for start in range(0, N, Q):
        _, ids = pq_search(
            queries[start : start + Q],
            codes,
            cb,
            10,
            metric="dot",
            chunk_size=64,
            query_chunk_size=8,
        )
        hits += sum(start + i in row for i, row in enumerate(np.asarray(ids)))
    return hits / N


def test_contrastive_training_of_codebooks_raises_pq_recall():
    docs, queries = _planted_retrieval()
    cb = np.asarray(pq_train(docs, m=M, nbits=NBITS, key=0))
    recall_kmeans = _pq_recall_at_10(queries, np.asarray(pq_encode(docs, cb)), cb)

    # a query tower (a linear map, from the identity) and the codebooks, trained jointly against
    # the quantized documents with in-batch InfoNCE
    class Model(nnx.Module):
        def __init__(self):
            self.tower = nnx.Linear(D, D, kernel_init=lambda *_: jnp.eye(D), rngs=nnx.Rngs(0))
            self.pq = DifferentiablePQ(D, m=M, nbits=NBITS, codebooks=cb)

    model = Model()
    opt = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))

    @jax.jit
    def train(state, queries, docs):
        def step(state, _):
            model, opt = nnx.merge(graphdef, state)

            def loss_fn(model):
                q = model.tower(queries)
                return info_nce(q, model.pq(docs), similarity="dot", temperature=1.0)

            loss, grads = nnx.value_and_grad(loss_fn)(model)
            opt.update(model, grads)
            return nnx.state((model, opt)), loss

        return jax.lax.scan(step, state, length=100)

    state, losses = train(state, queries, docs)
    model, _ = nnx.merge(graphdef, state)
    assert float(losses[-1]) < 0.6 * float(losses[0])
    trained_cb = np.asarray(model.pq.codebooks[...])
    codes = np.asarray(model.pq.encode(docs))
    np.testing.assert_array_equal(codes, pq_encode(docs, trained_cb))
    recall_trained = _pq_recall_at_10(np.asarray(model.tower(queries)), codes, trained_cb)
    assert recall_kmeans < 0.4 and recall_trained > 0.65, (recall_kmeans, recall_trained)


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_input_names_the_argument(trained):
    x, q, cb = trained
    codes = np.asarray(pq_encode(x, cb))
    with pytest.raises(ValueError, match=r"m must divide the dimension of x \[300, 16\].*m=5"):
        pq_train(x, m=5)
    with pytest.raises(ValueError, match=r"2\*\*nbits = 512 centroids .* 300 training rows"):
        pq_train(x, m=M, nbits=9)
    with pytest.raises(ValueError, match="nbits must be <= 16"):
        pq_train(x, m=M, nbits=17)
    bad = x.copy()
    bad[7, 3] = np.nan
    for fn in (lambda: pq_train(bad, m=M), lambda: pq_encode(bad, cb)):
        with pytest.raises(ValueError, match=r"x \[300, 16\] has NaN or inf .*\[7\]"):
            fn()
    with pytest.raises(ValueError, match=r"queries \[20, 16\] has NaN or inf .*\[7\]"):
        pq_search(bad[:Q], codes, cb, 3)
    cb_nan = cb.copy()
    cb_nan[2, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"codebooks .* NaN or inf .* sub-space\(s\) \[2\]"):
        pq_search(q, codes, cb_nan, 3)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, ksub=16\) .*values in \[1, 16\]"):
        pq_search(q, codes.astype(np.int32) + 1, cb, 3)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, ksub=16\)"):
        pq_decode(codes.astype(np.int8) - 1, cb)
    with pytest.raises(ValueError, match="codes must be integer centroid ids.*float32"):
        pq_search(q, codes.astype(np.float32), cb, 3)
    with pytest.raises(ValueError, match=r"codes must be \[N, m=4\].*got \[300, 3\]"):
        pq_search(q, codes[:, :3], cb, 3)
    with pytest.raises(ValueError, match=r"queries must be \[Q, m · dsub\] = \[Q, 16\]"):
        pq_search(q[:, :8], codes, cb, 3)
    with pytest.raises(ValueError, match=r"k must be <= the number of codes 300"):
        pq_search(q, codes, cb, 301)
    with pytest.raises(ValueError, match="metric must be one of"):
        pq_search(q, codes, cb, 3, metric="cosine")
    with pytest.raises(ValueError, match=r"rotation must be \[d, d\] = \[16, 16\]"):
        pq_encode(x, cb, rotation=np.eye(8, dtype=np.float32))
    with pytest.raises(
        ValueError, match=r"init given as codebooks must be \[m, 2\*\*nbits, d // m\]"
    ):
        pq_train(x, m=M, nbits=NBITS, init=cb[:, :8])
    with pytest.raises(ValueError, match="opq_iter must be >= 0"):
        opq_train(x, m=M, opq_iter=-1)
    with pytest.raises(ValueError, match=r"codebooks must be \[m, 2\*\*nbits, dim // m\]"):
        DifferentiablePQ(D, m=M, nbits=3, codebooks=cb)
    with pytest.raises(ValueError, match="rngs must be an nnx.Rngs"):
        DifferentiablePQ(D, m=M)
    with pytest.raises(ValueError, match="mode must be one of"):
        DifferentiablePQ(D, m=M, codebooks=cb, nbits=NBITS, mode="gumbel")
    with pytest.raises(ValueError, match=r"m must divide dim=16 into equal sub-vectors; got m=3"):
        DifferentiablePQ(D, m=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x \[300, 16\] has NaN or inf .*\[7\]"):
        DifferentiablePQ(D, m=M, nbits=NBITS, codebooks=cb).encode(bad)
