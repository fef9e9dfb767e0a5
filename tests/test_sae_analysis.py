"""Tests for jaxemb.sae.analysis: co-occurrence, feature families, steering, clamping, clustering.

Every check compares with an independent NumPy (float64) reference written here, a hand-worked
case, or an invariant (brute-force maximum spanning tree, clamp at the current value).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxemb import sae
from jaxemb.sae import SparseCode, analysis

# ------------------------------------------------------------------------------------------------
# NumPy references


def np_binary_sparse(values, indices, d_sae):
    b = np.zeros((values.shape[0], d_sae), bool)
    for n in range(values.shape[0]):
        for val, j in zip(values[n], indices[n]):
            if val != 0:
                b[n, j] = True
    return b


def np_cooc(binary):
    b = binary.astype(np.int64)
    return b.T @ b


def random_sparse(rng, n, k, d_sae, *, zero_frac=0.2, dup=True):
    indices = np.stack([rng.choice(d_sae, k, replace=False) for _ in range(n)]).astype(np.int32)
    values = rng.uniform(0.1, 2.0, (n, k)).astype(np.float32)
    values[rng.random((n, k)) < zero_frac] = 0.0
    if dup:  # a repeated index within a row must count once
        indices[0, 1] = indices[0, 0]
        values[0, :2] = [1.0, 2.0]
    return SparseCode(jnp.asarray(values), jnp.asarray(indices))


# ------------------------------------------------------------------------------------------------
# co-occurrence


def test_cooccurrence_sparse_streaming_matches_numpy(rng):
    d_sae = 13
    batches = [random_sparse(rng, n, 4, d_sae, dup=(i == 0)) for i, n in enumerate((7, 1, 9))]
    got = np.asarray(analysis.cooccurrence(batches, d_sae))
    binary = np.concatenate(
        [np_binary_sparse(np.asarray(b.values), np.asarray(b.indices), d_sae) for b in batches]
    )
    want = np_cooc(binary)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    # a single code gives the same as a one-element list
    np.testing.assert_array_equal(
        analysis.cooccurrence(batches[0], d_sae), analysis.cooccurrence([batches[0]], d_sae)
    )


def test_cooccurrence_dense_matches_numpy_and_sparse(rng):
    d_sae = 9
    code = random_sparse(rng, 20, 3, d_sae, dup=False)
    dense = sae.densify(code, d_sae)
    got = np.asarray(analysis.cooccurrence([dense[:11], dense[11:]], d_sae))
    want = np_cooc(np.asarray(dense) != 0)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, analysis.cooccurrence(code, d_sae))


def test_cooccurrence_tiny_hand_case():
    # rows: {0, 1}, {1}, {0, 1, 2}  ->  f = [2, 3, 1]; c01 = 2, c02 = 1, c12 = 1
    dense = jnp.array([[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [3.0, 1.0, 1.0]])
    assert analysis.cooccurrence(dense, 3).tolist() == [[2, 2, 1], [2, 3, 1], [1, 1, 1]]


def test_normalized_cooccurrence_matches_numpy():
    counts = np.array([[4, 2, 1, 0], [2, 2, 0, 0], [1, 0, 3, 0], [0, 0, 0, 0]])
    f = np.diagonal(counts).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        refs = {
            "conditional": counts / f[:, None],
            "jaccard": counts / (f[:, None] + f[None, :] - counts),
            "cosine": counts / np.sqrt(np.outer(f, f)),
        }
    for method, ref in refs.items():
        ref = np.nan_to_num(ref, nan=0.0, posinf=0.0)
        got = np.asarray(analysis.normalized_cooccurrence(counts, method=method))
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0)
    # conditional: P(0 | 1) = 1 (latent 1 always fires with 0), P(1 | 0) = 1/2
    cond = np.asarray(analysis.normalized_cooccurrence(counts))
    assert cond[1, 0] == 1.0 and cond[0, 1] == 0.5


# ------------------------------------------------------------------------------------------------
# maximum spanning forest and families


def brute_force_max_forest_weight(w):
    """Largest total weight of an acyclic edge set using only positive edges (all subsets)."""
    n = w.shape[0]
    cand = [(i, j) for i in range(n) for j in range(i + 1, n) if w[i, j] > 0]
    best = 0.0
    for r in range(len(cand) + 1):
        for subset in itertools.combinations(cand, r):
            parent = list(range(n))

            def find(a, parent=parent):
                while parent[a] != a:
                    a = parent[a]
                return a

            ok = True
            for i, j in subset:
                ri, rj = find(i), find(j)
                if ri == rj:
                    ok = False
                    break
                parent[ri] = rj
            if ok:
                best = max(best, sum(w[i, j] for i, j in subset))
    return best


def test_maximum_spanning_forest_on_hand_graph():
    # 0-1: 4, 0-2: 1, 1-2: 3, 2-3: 2, 1-3: 5; MST = {1-3 (5), 0-1 (4), 1-2 (3)} total 12
    w = np.zeros((5, 5))
    for (i, j), wt in {(0, 1): 4, (0, 2): 1, (1, 2): 3, (2, 3): 2, (1, 3): 5}.items():
        w[i, j] = w[j, i] = wt
    edges, ew = analysis.maximum_spanning_forest(w)
    assert {frozenset(e) for e in edges.tolist()} == {
        frozenset(e) for e in [(1, 3), (0, 1), (1, 2)]
    }
    assert ew.sum() == 12.0 == brute_force_max_forest_weight(w)  # vertex 4 is isolated
    assert len(edges) == 3


def test_maximum_spanning_forest_random_graphs_match_brute_force(rng):
    for _ in range(5):
        w = rng.uniform(0, 1, (6, 6))
        w[rng.random((6, 6)) < 0.5] = 0.0
        w = np.triu(w, 1)
        w = w + w.T
        edges, ew = analysis.maximum_spanning_forest(w)
        np.testing.assert_allclose(ew.sum(), brute_force_max_forest_weight(w), rtol=1e-12)
        np.testing.assert_array_equal(ew, w[edges[:, 0], edges[:, 1]])


def test_feature_families_orientation_and_threshold():
    # latent 0 is general (fires 10 times); 1 and 2 are its specialisations; 3-4 a second pair.
    counts = np.array(
        [
            [10, 4, 3, 0, 0],
            [4, 4, 0, 0, 0],
            [3, 0, 6, 0, 1],
            [0, 0, 0, 5, 5],
            [0, 0, 1, 5, 8],
        ]
    )
    cooc = analysis.normalized_cooccurrence(counts)
    fam = analysis.feature_families(cooc, frequency=counts.diagonal(), threshold=0.5)
    # symmetrised conditional: w01 = 4/4 = 1, w02 = 3/6 = .5, w34 = 5/5 = 1, w24 = 1/6
    assert fam.parent.tolist() == [-1, 0, 0, 4, 2]
    assert [tuple(e) for e in fam.edges.tolist()] == [(0, 1), (4, 3), (0, 2), (2, 4)]
    np.testing.assert_allclose(fam.weights, [1.0, 1.0, 0.5, 1 / 6], rtol=1e-6)
    assert [f.tolist() for f in fam.families] == [[0, 1, 2], [4, 3]]
    # a higher threshold splits latent 2 off; min_size filters singletons
    fam2 = analysis.feature_families(cooc, frequency=counts.diagonal(), threshold=0.6)
    assert [f.tolist() for f in fam2.families] == [[0, 1], [4, 3]]


# ------------------------------------------------------------------------------------------------
# steering and clamping


def make_topk(rng, d_in=6, d_sae=10, k=3):
    model = sae.TopKSAE(d_in, d_sae, k=k, rngs=nnx.Rngs(int(rng.integers(1 << 30))))
    model.b_enc[...] = jnp.asarray(0.1 * rng.normal(size=d_sae), jnp.float32)
    model.b_dec[...] = jnp.asarray(rng.normal(size=d_in), jnp.float32)
    return model


def test_steer_adds_exactly_strength_times_row(rng):
    model = make_topk(rng)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    W = np.asarray(model.W_dec[...])
    got = np.asarray(analysis.steer(model, x, 7, 2.5))
    np.testing.assert_array_equal(got, x + np.float32(2.5) * W[7][None, :])
    got1 = np.asarray(analysis.steer(model, x[0], 3, -1.0))
    np.testing.assert_array_equal(got1, x[0] - W[3])


def np_topk_dense(p, x, k):
    pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    r = np.maximum(pre, 0.0)
    idx = np.argsort(-r, axis=1, kind="stable")[:, :k]
    z = np.zeros_like(r)
    np.put_along_axis(z, idx, np.take_along_axis(r, idx, axis=1), axis=1)
    return z


def test_clamp_matches_numpy_and_current_value_is_identity(rng):
    model = make_topk(rng)
    p = {k: np.asarray(v, np.float64) for k, v in nnx.to_pure_dict(nnx.state(model)).items()}
    x = rng.normal(size=(5, 6)).astype(np.float32)
    x64 = x.astype(np.float64)
    z = np_topk_dense(p, x64, 3)
    x_hat = z @ p["W_dec"] + p["b_dec"]
    for latent, value in [(int(np.argmax(z[0])), 0.0), (2, 3.0), (9, -1.5)]:
        z2 = z.copy()
        z2[:, latent] = value
        want = z2 @ p["W_dec"] + p["b_dec"] + (x64 - x_hat)
        got = np.asarray(analysis.clamp(model, x, latent, value))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # clamping row-wise to the current activations changes nothing
    latent = int(np.argmax(z.sum(0)))
    got = np.asarray(analysis.clamp(model, x, latent, jnp.asarray(z[:, latent], jnp.float32)))
    np.testing.assert_allclose(got, x, rtol=1e-5, atol=1e-5)


def test_clamp_dense_code_model(rng):
    """A model with dense codes goes through the dense branch."""

    class Dense(nnx.Module):
        def __init__(self, W_dec, b_dec):
            self.d_in, self.d_sae = W_dec.shape[1], W_dec.shape[0]
            self.W_enc = nnx.Param(jnp.asarray(W_dec.T))
            self.b_enc = nnx.Param(jnp.zeros(self.d_sae))
            self.W_dec = nnx.Param(jnp.asarray(W_dec))
            self.b_dec = nnx.Param(jnp.asarray(b_dec))

        def encode(self, x):
            return jax.nn.relu((x - self.b_dec[...][None, :]) @ self.W_enc[...])

        def decode(self, z):
            return z @ self.W_dec[...] + self.b_dec[...][None, :]

    W = rng.normal(size=(5, 3)).astype(np.float32)
    b = rng.normal(size=3).astype(np.float32)
    m = Dense(W, b)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    z = np.maximum((x - b) @ W.T, 0).astype(np.float64)
    z2 = z.copy()
    z2[:, 1] = 2.0
    want = z2 @ W + b + (x - (z @ W + b))
    np.testing.assert_allclose(analysis.clamp(m, x, 1, 2.0), want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# clustering


def test_cluster_decoder_directions_recovers_planted_groups(rng):
    centers = np.linalg.qr(rng.normal(size=(8, 3)))[0].T  # 3 orthonormal directions in R^8
    truth = np.repeat(np.arange(3), 10)
    W = centers[truth] + 0.05 * rng.normal(size=(30, 8))
    W *= rng.uniform(0.5, 3.0, (30, 1))  # row norms must not matter
    labels, cent = analysis.cluster_decoder_directions(
        jnp.asarray(W, jnp.float32), 3, key=jax.random.key(1)
    )
    labels, cent = np.asarray(labels), np.asarray(cent)
    # same partition up to relabelling
    pairs_same = truth[:, None] == truth[None, :]
    np.testing.assert_array_equal(labels[:, None] == labels[None, :], pairs_same)
    # fixed point of spherical k-means, checked with NumPy float64
    U = W / np.linalg.norm(W, axis=1, keepdims=True)
    np.testing.assert_array_equal(labels, np.argmax(U @ cent.T, axis=1))
    for c in range(3):
        m = U[labels == c].sum(0)
        np.testing.assert_allclose(cent[c], m / np.linalg.norm(m), atol=1e-5)
        assert abs(cent[c] @ centers[truth[labels == c][0]]) > 0.99


def test_cluster_accepts_model_and_validates(rng):
    model = make_topk(rng)
    labels, cent = analysis.cluster_decoder_directions(model, 4, key=jax.random.key(0))
    assert labels.shape == (10,) and cent.shape == (4, 6)
    with pytest.raises(ValueError, match="n_clusters"):
        analysis.cluster_decoder_directions(model.W_dec[...], 11, key=jax.random.key(0))


def test_validation_errors(rng):
    model = make_topk(rng)
    x = jnp.ones((2, 6))
    with pytest.raises(ValueError, match=r"latent must be in \[0, d_sae=10\)"):
        analysis.steer(model, x, 10, 1.0)
    with pytest.raises(ValueError, match=r"x must be \[N, d_in=6\]"):
        analysis.steer(model, jnp.ones((2, 5)), 0, 1.0)
    with pytest.raises(ValueError, match="latent"):
        analysis.clamp(model, x, -1, 1.0)
    with pytest.raises(ValueError, match="value must be a scalar or"):
        analysis.clamp(model, x, 0, jnp.ones(3))
    with pytest.raises(ValueError, match="square"):
        analysis.normalized_cooccurrence(np.ones((2, 3)))
    with pytest.raises(ValueError, match="method"):
        analysis.normalized_cooccurrence(np.ones((2, 2)), method="pmi")
    with pytest.raises(ValueError, match=r"codes_or_batches\[0\] must be \[N, d_sae=4\]"):
        analysis.cooccurrence(jnp.ones((2, 3)), 4)
    with pytest.raises(ValueError, match="frequency"):
        analysis.feature_families(np.eye(3), frequency=np.ones(2))
