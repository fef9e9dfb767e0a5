"""MUVERA FDEs against a NumPy transcription of google/graph-mining's C++ loops; the Chamfer
bound; FDE-then-MaxSim search on a planted multi-vector corpus; sharding; bad input."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tolerances import assert_f32_close

from jaxemb.retrieval import MuveraConfig, _muvera, muvera_fde, muvera_search
from jaxemb.retrieval._muvera import _draws

D, T, N = 16, 6, 16  # one token shape for every encoding test (one compile per config)

CFG_ID = MuveraConfig(
    dimension=D, num_repetitions=6, num_simhash_projections=3, fill_empty_partitions=True, seed=3
)
CFG_PROJ = MuveraConfig(
    dimension=D,
    num_repetitions=3,
    num_simhash_projections=2,
    seed=-7,
    projection_dimension=5,
    fill_empty_partitions=True,
    final_projection_dimension=40,
)
CFG_NOFILL = MuveraConfig(dimension=D, num_repetitions=2, num_simhash_projections=4, seed=0)


# ---- NumPy reference: the C++ loops of fixed_dimensional_encoding.cc, in float64 ----------


def _append_to_gray_code(code: int, bit: bool) -> int:
    return (code << 1) + (int(bit) ^ (code & 1))


def _partition_index(sketch_row) -> int:
    idx = 0
    for v in sketch_row:
        idx = _append_to_gray_code(idx, v > 0)
    return idx


def _distance_to_partition(sketch_row, index: int) -> int:
    binary = index ^ (index >> 1)
    dist = 0
    for v in sketch_row[::-1]:
        dist += int((1 if v > 0 else 0) != (binary & 1))
        binary >>= 1
    return dist


def np_fde(points, config: MuveraConfig, kind: str, draws) -> np.ndarray:
    """One point cloud [n, D] (valid tokens only) -> its FDE, as the reference computes it."""
    pts = np.asarray(points, np.float64)
    k, nb, p = config.num_simhash_projections, config.num_partitions, config.block_dimension
    out = np.zeros(config.fde_dimension)
    for r in range(config.num_repetitions):
        sketch = pts @ np.asarray(draws.simhash[r], np.float64) if k > 0 else None
        if config.projection_dimension is None:
            proj = pts
        else:
            ams = np.zeros((config.dimension, p))
            for i in range(config.dimension):
                ams[i, int(draws.ams_index[r, i])] = float(draws.ams_sign[r, i])
            proj = pts @ ams
        sizes = np.zeros(nb)
        for t in range(len(pts)):
            part = _partition_index(sketch[t]) if k > 0 else 0
            base = r * nb * p + part * p
            out[base : base + p] += proj[t]
            sizes[part] += 1
        if kind == "query":
            continue
        for part in range(nb):
            base = r * nb * p + part * p
            if sizes[part] == 0 and k > 0:
                if config.fill_empty_partitions:
                    dists = [_distance_to_partition(sketch[t], part) for t in range(len(pts))]
                    nearest = int(np.argmin(dists))  # first of the minima, as the strict < loop
                    out[base : base + p] = proj[nearest]
                continue
            out[base : base + p] /= sizes[part]
    if config.final_projection_dimension is None:
        return out
    final = np.zeros(config.final_projection_dimension)
    for i, v in enumerate(out):
        final[int(draws.final_index[i])] += float(draws.final_sign[i]) * v
    return final


def np_chamfer(q, qm, d, dm) -> np.ndarray:
    """Σ_{q valid} max_{p valid} ⟨q, p⟩ for every pair, [Q, N] float64."""
    s = np.einsum("qsh,nth->qnst", np.asarray(q, np.float64), np.asarray(d, np.float64))
    s = np.where(dm[None, :, None, :], s, -np.inf).max(-1)
    return np.where(qm[:, None, :], s, 0.0).sum(-1)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _clouds(seed):
    """[N, T, D] unit tokens and a mask with 3..6 valid tokens per row; NaN in the padding."""
    rng = np.random.default_rng(seed)
    x = _unit(rng.standard_normal((N, T, D))).astype(np.float32)
    mask = np.arange(T)[None, :] < rng.integers(3, T + 1, N)[:, None]
    x[~mask] = np.nan  # padding must never reach an encoding
    return x, mask


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        (CFG_ID, "query"),
        (CFG_ID, "document"),
        (CFG_PROJ, "query"),
        (CFG_PROJ, "document"),
        (CFG_NOFILL, "document"),
    ],
)
def test_matches_reference_loops(config, kind):
    x, mask = _clouds(1)
    got = np.asarray(muvera_fde(x, mask, config=config, kind=kind))
    draws = jax.device_get(_draws(config))
    want = np.stack([np_fde(x[i][mask[i]], config, kind, draws) for i in range(N)])
    assert got.shape == (N, config.output_dimension) and got.dtype == np.float32
    assert np.isfinite(got).all()
    assert_f32_close(got, want)
    if config is CFG_NOFILL:  # 16 buckets for <= 6 tokens: empty blocks stay zero
        blocks = got.reshape(N, -1, config.block_dimension)
        assert (np.abs(blocks).sum(-1) == 0).any()


def test_one_token_document_fills_every_block_and_query_hits_one_per_repetition():
    rng = np.random.default_rng(3)
    x = _unit(rng.standard_normal((N, T, D))).astype(np.float32)
    mask = np.zeros((N, T), bool)
    mask[np.arange(N), rng.integers(0, T, N)] = True
    tok = np.asarray(x, np.float64)[mask]  # [N, D], each row's only token
    doc = np.asarray(muvera_fde(x, mask, config=CFG_ID, kind="document"), np.float64)
    blocks = doc.reshape(N, CFG_ID.num_repetitions * CFG_ID.num_partitions, D)
    assert_f32_close(blocks, np.broadcast_to(tok[:, None, :], blocks.shape))
    query = np.asarray(muvera_fde(x, mask, config=CFG_ID, kind="query"), np.float64)
    qb = query.reshape(N, CFG_ID.num_repetitions, CFG_ID.num_partitions, D)
    assert ((np.abs(qb).sum(-1) > 0).sum(-1) == 1).all()
    assert_f32_close(qb.sum(2), np.broadcast_to(tok[:, None, :], (N, CFG_ID.num_repetitions, D)))


def test_fde_dot_bounds_and_approximates_chamfer():
    x, mask = _clouds(4)
    xq, mq = _clouds(5)
    ch = np_chamfer(xq, mq, x, mask)
    r = CFG_ID.num_repetitions
    q = np.asarray(muvera_fde(xq, mq, config=CFG_ID), np.float64)
    d = np.asarray(muvera_fde(x, mask, config=CFG_ID, kind="document"), np.float64)
    est = q @ d.T / r
    # Each query token meets its bucket's mean (or the filled nearest token) <= its best match.
    assert (est <= ch + 1e-5 * np.abs(ch).max()).all()
    # Empirical quality on random unit tokens: the additive error per query token is bounded
    # (about 0.2 on average here; the paper's epsilon).
    err = (ch - est) / mq.sum(1)[:, None]
    assert err.mean() < 0.3 and err.max() < 0.5, (err.mean(), err.max())
    # Without the partition (one bucket) the estimate is Σ_q <q, mean(P)>: much looser.
    one = MuveraConfig(dimension=D, num_repetitions=1)
    est0 = (
        np.asarray(muvera_fde(xq, mq, config=one), np.float64)
        @ np.asarray(muvera_fde(x, mask, config=one, kind="document"), np.float64).T
    )
    assert_f32_close(est0, np_chamfer_mean(xq, mq, x, mask))
    assert ((ch - est0) / mq.sum(1)[:, None]).mean() > err.mean() + 0.05


def np_chamfer_mean(q, qm, d, dm):
    qs = np.where(qm[..., None], np.asarray(q, np.float64), 0.0).sum(1)
    dmean = np.where(dm[..., None], np.asarray(d, np.float64), 0.0).sum(1) / dm.sum(1)[:, None]
    return qs @ dmean.T


def _planted(seed, n_docs=64, n_q=N):
    """Documents of T unit tokens drawn from a shared vocabulary (so documents overlap), and
    queries made of 4 perturbed tokens of one target document each."""
    rng = np.random.default_rng(seed)
    vocab = _unit(rng.standard_normal((96, D)))
    docs = vocab[rng.integers(0, len(vocab), (n_docs, T))]
    docs = _unit(docs + 0.1 * rng.standard_normal(docs.shape)).astype(np.float32)
    d_mask = np.arange(T)[None, :] < rng.integers(4, T + 1, n_docs)[:, None]
    target = rng.choice(n_docs, n_q, replace=False)
    q = np.zeros((n_q, T, D), np.float32)
    q_mask = np.zeros((n_q, T), bool)
    for i, t in enumerate(target):
        picks = rng.choice(np.flatnonzero(d_mask[t]), 4, replace=False)
        q[i, :4] = _unit(docs[t, picks] + 0.2 * rng.standard_normal((4, D)))
        q_mask[i, :4] = True
    return q, q_mask, docs, d_mask, target


def test_search_recovers_exact_maxsim_on_planted_corpus():
    q, qm, d, dm, target = _planted(6)
    k, cand = 5, 12
    exact = np_chamfer(q, qm, d, dm)
    exact_top = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    assert (exact_top[:, 0] == target).mean() >= 0.9  # the planted corpus is well posed
    d_fde = muvera_fde(d, dm, config=CFG_ID, kind="document")
    scores, ids = muvera_search(q, qm, d, dm, k, config=CFG_ID, candidates=cand, d_fde=d_fde)
    ids, scores = np.asarray(ids), np.asarray(scores)
    assert ids.shape == scores.shape == (N, k) and ids.dtype == np.int32
    # scores are the exact MaxSim of the returned documents, in descending order
    assert_f32_close(scores, np.take_along_axis(exact, ids, axis=1))
    assert (np.diff(scores, axis=1) <= 0).all()
    # ... and the ids are the MaxSim top-k of the FDE inner-product shortlist (NumPy)
    fde_s = np.asarray(muvera_fde(q, qm, config=CFG_ID), np.float64) @ np.asarray(d_fde).T
    short = np.argsort(-fde_s, axis=1, kind="stable")[:, :cand]
    want = np.take_along_axis(short, np.argsort(-np.take_along_axis(exact, short, 1), 1), 1)
    np.testing.assert_array_equal(ids, want[:, :k])
    # The paper's recall: the exact MaxSim top-1 (here the planted target) is in the FDE
    # shortlist, so FDE + re-rank returns it first.
    assert (short == exact_top[:, :1]).any(axis=1).mean() >= 0.9
    assert (ids[:, 0] == exact_top[:, 0]).mean() >= 0.9

    # Re-ranking keeps every exact top-k member of the shortlist: never below FDE-only recall.
    def recall(got):
        return np.mean([len(set(a) & set(b)) / k for a, b in zip(got, exact_top)])

    assert recall(ids) >= recall(short[:, :k]) and recall(ids) > 0.5
    # encoding the documents inside gives the same result
    _, ids2 = muvera_search(q, qm, d, dm, k, config=CFG_ID, candidates=cand)
    np.testing.assert_array_equal(np.asarray(ids2), ids)


def test_sharded_and_row_chunked_encode_like_one_block(mesh8, monkeypatch):
    x, mask = _clouds(7)
    want = muvera_fde(x, mask, config=CFG_ID, kind="document")
    xs = jax.device_put(np.nan_to_num(x), NamedSharding(mesh8, P("data")))
    ms = jax.device_put(mask, NamedSharding(mesh8, P("data")))
    got = muvera_fde(xs, ms, config=CFG_ID, kind="document")
    assert_f32_close(got, want)
    # a memory bound of 5 rows: 4 chunks, the last one padded
    per_row = CFG_ID.num_repetitions * max(T * CFG_ID.num_partitions, T * D, 8 * D)
    monkeypatch.setattr(_muvera, "_BLOCK_ELEMENTS", 5 * per_row)
    assert_f32_close(muvera_fde(x, mask, config=CFG_ID, kind="document"), want)


def test_nan_in_a_valid_token_propagates():
    x, mask = _clouds(8)
    x = np.nan_to_num(x)
    x[2, 0, 5] = np.nan
    got = np.asarray(muvera_fde(x, mask, config=CFG_ID, kind="query"))
    assert np.isnan(got[2]).any() and np.isfinite(np.delete(got, 2, axis=0)).all()
    with pytest.raises(ValueError, match=r"q_tokens .*NaN or inf.*\[2\]"):
        muvera_search(x, mask, np.nan_to_num(x), mask, 1, config=CFG_ID, candidates=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_simhash_projections": -1}, "num_simhash_projections must be >= 0"),
        ({"num_simhash_projections": 31}, "num_simhash_projections must be <= 30"),
        ({"dimension": 0}, "dimension must be >= 1"),
        ({"num_repetitions": 0}, "num_repetitions must be >= 1"),
        ({"projection_dimension": 0}, "projection_dimension must be >= 1"),
        ({"final_projection_dimension": 2.5}, "final_projection_dimension must be an integer"),
        ({"fill_empty_partitions": 1}, "fill_empty_partitions must be a bool"),
        ({"seed": 2**31}, "seed must be <="),
        ({"num_simhash_projections": 30, "num_repetitions": 4}, "must fit an int32"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MuveraConfig(**{"dimension": D, **kwargs})


def test_bad_input():
    x, mask = _clouds(9)
    with pytest.raises(ValueError, match="kind must be one of"):
        muvera_fde(x, mask, config=CFG_ID, kind="doc")
    with pytest.raises(ValueError, match="config must be a MuveraConfig"):
        muvera_fde(x, mask, config={"dimension": D})
    with pytest.raises(ValueError, match=r"tokens must be \[N, T, 16\].*got \[16, 6, 15\]"):
        muvera_fde(x[..., :15], mask, config=CFG_ID)
    with pytest.raises(ValueError, match=r"tokens must have rank 3"):
        muvera_fde(x[0], mask[0], config=CFG_ID)
    with pytest.raises(ValueError, match=r"mask must be \[16, 6\].*got \[16, 5\]"):
        muvera_fde(x, mask[:, :5], config=CFG_ID)
    with pytest.raises(ValueError, match="mask must hold booleans or 0/1; got the value 2"):
        muvera_fde(x, mask.astype(np.int32) * 2, config=CFG_ID)
    empty = mask.copy()
    empty[[3, 11]] = False
    with pytest.raises(ValueError, match=r"every document needs .*row\(s\) \[3, 11\]"):
        muvera_fde(x, empty, config=CFG_ID, kind="document")
    zeros = np.nan_to_num(x) * mask[..., None]
    zeros[4] = 0.0
    with pytest.raises(ValueError, match=r"all-zero token rows .*\[4\]"):
        muvera_fde(zeros, None, config=CFG_ID, kind="query")
    with pytest.raises(ValueError, match=r"d_mask must be \[16, 6\]"):
        muvera_search(x, mask, x, mask[:, :4], 1, config=CFG_ID)
    with pytest.raises(ValueError, match="k must be <= candidates"):
        muvera_search(x, mask, x, mask, 5, config=CFG_ID, candidates=4)
    with pytest.raises(ValueError, match=r"d_fde must be \[16, 768\]"):
        muvera_search(x, mask, x, mask, 1, config=CFG_ID, d_fde=np.zeros((16, 10), np.float32))
