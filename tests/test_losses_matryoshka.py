"""matryoshka, matryoshka_2d and adaptive_layer against independent NumPy float64 references
(sentence-transformers MatryoshkaLoss / AdaptiveLayerLoss / Matryoshka2dLoss semantics)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from losses_reference import logsumexp, normalize, numeric_grad
from losses_reference import nt_xent as np_nt_xent
from tolerances import assert_f32_close

from jaxemb.losses import adaptive_layer, matryoshka, matryoshka_2d, nt_xent
from jaxemb.parallel import shard_batch

# ---------------------------------------------------------------------------------------------
# Tiny local losses (JAX and NumPy twins) to exercise argument handling
# ---------------------------------------------------------------------------------------------


def neg_loss(q, p, n, *, scale=5.0):
    """Cross-entropy of each anchor over its positive and its own H hard negatives
    (q, p: [B, D]; n: [B, H, D]); dot products of the (already normalised) inputs."""
    pos = jnp.sum(q * p, axis=-1)
    negs = jnp.einsum("bd,bhd->bh", q, n)
    logits = scale * jnp.concatenate([pos[:, None], negs], axis=1)
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[:, 0])


def np_neg_loss(q, p, n, scale=5.0):
    out = []
    for i in range(len(q)):
        logits = scale * np.array([q[i] @ p[i]] + [q[i] @ n[i, h] for h in range(n.shape[1])])
        out.append(logsumexp(logits) - logits[0])
    return np.mean(out)


def label_loss(x, labels):
    """Mean squared distance between same-label rows minus that between different-label rows;
    labels are a positional int argument that must pass through untouched."""
    d2 = jnp.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    same = labels[:, None] == labels[None, :]
    off = ~jnp.eye(x.shape[0], dtype=bool)
    pos = jnp.sum(jnp.where(same & off, d2, 0.0)) / jnp.sum(same & off)
    neg = jnp.sum(jnp.where(~same, d2, 0.0)) / jnp.sum(~same)
    return pos - neg


def np_label_loss(x, labels):
    pos, neg = [], []
    for i, j in itertools.product(range(len(x)), repeat=2):
        d2 = np.sum((x[i] - x[j]) ** 2)
        if i != j and labels[i] == labels[j]:
            pos.append(d2)
        elif labels[i] != labels[j]:
            neg.append(d2)
    return np.mean(pos) - np.mean(neg)


# ---------------------------------------------------------------------------------------------
# NumPy reference of AdaptiveLayerLoss(MatryoshkaLoss(loss))
# ---------------------------------------------------------------------------------------------


def np_softmax(x, t):
    z = np.asarray(x, np.float64) / t
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def np_kl_batchmean(final_args, layer_args, t):
    """F.kl_div(log_softmax(layer/t), softmax(final/t), reduction="batchmean") over the rows of
    every embedding argument concatenated (ST concatenates its per-input forward passes)."""
    total, rows = 0.0, 0
    for f, h in zip(final_args, layer_args, strict=True):
        f = np.reshape(f, (-1, f.shape[-1]))
        h = np.reshape(h, (-1, h.shape[-1]))
        p, q = np_softmax(f, t), np_softmax(h, t)
        total += np.sum(p * (np.log(p) - np.log(q)))
        rows += len(f)
    return total / rows


def np_matryoshka_term(loss_np, emb, other, dims, weights, dim_idx):
    """Σ_{m ∈ chosen dims} w_m · loss(truncate + normalise every embedding argument)."""
    total = 0.0
    for j in dim_idx:
        m = dims[j]
        trunc = [normalize(e[..., :m]) for e in emb]
        total += weights[j] * loss_np(*trunc, *other)
    return total


def np_2d(
    loss_np,
    emb,
    other=(),
    *,
    dims=None,
    weights=None,
    layer_idx=None,
    dim_choice=None,
    last_w=1.0,
    prior_w=1.0,
    kl_w=1.0,
    kl_t=0.3,
):
    """Reference value. ``emb``: per-layer embedding args [L, ...]; ``layer_idx``: the prior
    layers used (default all); ``dim_choice``: per call (last layer first, then each used
    layer) the dim indices evaluated (default all). ``dims=None`` = adaptive layer only."""
    emb = [np.asarray(e, np.float64) for e in emb]
    n_layers = emb[0].shape[0]
    layer_idx = list(range(n_layers - 1)) if layer_idx is None else list(layer_idx)

    def m_loss(layer, call):
        args = [e[layer] for e in emb]
        if dims is None:
            return loss_np(*args, *other)
        idx = range(len(dims)) if dim_choice is None else dim_choice[call]
        w = weights or [1.0] * len(dims)
        return np_matryoshka_term(loss_np, args, other, dims, w, idx)

    total = last_w * m_loss(n_layers - 1, 0)
    for c, layer in enumerate(layer_idx, start=1):
        total += m_loss(layer, c) / (1 + layer) / len(layer_idx) * prior_w
        if kl_t > 0:
            final = [e[n_layers - 1] for e in emb]
            total += kl_w * kl_t * np_kl_batchmean(final, [e[layer] for e in emb], kl_t)
    return total


def _layers(rng, n_layers=3, b=4, d=4, h=None):
    shape = (n_layers, b, d) if h is None else (n_layers, b, h, d)
    return rng.normal(size=shape).astype(np.float32)


def _np_nt(a, b, labels=None):
    return np_nt_xent(a, b, 0.5, labels)


# ---------------------------------------------------------------------------------------------
# 1-D matryoshka: more compositions than tests/test_losses_nt_xent.py covers
# ---------------------------------------------------------------------------------------------


def test_matryoshka_with_hard_negatives_and_grad(rng):
    q, p = rng.normal(size=(2, 4, 6)).astype(np.float32)
    n = rng.normal(size=(4, 3, 6)).astype(np.float32)
    dims, weights = (6, 3, 2), (1.0, 0.25, 2.0)
    loss = matryoshka(neg_loss, dims, weights)

    def ref(a, b, c):
        return np_matryoshka_term(np_neg_loss, [a, b, c], (), dims, weights, range(3))

    value, (gq, gn) = jax.jit(jax.value_and_grad(loss, argnums=(0, 2)))(q, p, n)
    np.testing.assert_allclose(value, ref(q, p, n), rtol=1e-5)
    q64, p64, n64 = (np.asarray(x, np.float64) for x in (q, p, n))
    np.testing.assert_allclose(
        gq, numeric_grad(lambda a: ref(a, p64, n64), q64), rtol=2e-3, atol=2e-4
    )
    np.testing.assert_allclose(
        gn, numeric_grad(lambda c: ref(q64, p64, c), n64), rtol=2e-3, atol=2e-4
    )


def test_matryoshka_positional_labels_pass_through(rng):
    x = rng.normal(size=(8, 6)).astype(np.float32)
    labels = np.array([0, 1, 0, 2, 1, 2, 0, 1])
    dims = (6, 4, 1)
    got = matryoshka(label_loss, dims)(x, labels)
    expect = np_matryoshka_term(np_label_loss, [x], (labels,), dims, [1.0] * 3, range(3))
    np.testing.assert_allclose(got, expect, rtol=1e-5)


def test_matryoshka_sampling_is_deterministic_per_key(rng):
    z1, z2 = rng.normal(size=(2, 8, 8)).astype(np.float32)
    dims = (8, 4, 2, 1)
    loss = matryoshka(nt_xent, dims, n_dims_per_step=2)
    per_dim = [_np_nt(normalize(z1[:, :m]), normalize(z2[:, :m])) for m in dims]
    pair_sums = {
        tuple(c): per_dim[c[0]] + per_dim[c[1]] for c in itertools.combinations(range(4), 2)
    }
    jitted = jax.jit(lambda x, y, k: loss(x, y, key=k))
    seen = set()
    for s in range(12):
        key = jax.random.key(s)
        a = float(jitted(z1, z2, key))
        assert a == float(jitted(z1, z2, key))  # same key, same draw
        if s < 2:  # eager and jitted agree
            np.testing.assert_allclose(loss(z1, z2, key=key), a, rtol=1e-6)
        match = [c for c, val in pair_sums.items() if abs(val - a) <= 1e-5 * abs(val)]
        assert len(match) == 1, (a, pair_sums)
        seen.add(match[0])
    assert len(seen) >= 3  # different keys draw different subsets


def test_matryoshka_sharded_matches_single_device(rng, mesh8):
    q, p = rng.normal(size=(2, 16, 8)).astype(np.float32)
    n = rng.normal(size=(16, 2, 8)).astype(np.float32)
    loss = matryoshka(neg_loss, (8, 4, 2), (1.0, 0.5, 0.5), n_dims_per_step=2)
    key = jax.random.key(7)
    f = jax.jit(jax.value_and_grad(lambda a, b, c, k: loss(a, b, c, key=k), argnums=(0, 1, 2)))
    v1, g1 = f(q, p, n, key)
    v8, g8 = f(*shard_batch(mesh8, (q, p, n)), key)
    np.testing.assert_allclose(v8, v1, rtol=1e-5)
    for a, b in zip(g8, g1, strict=True):
        assert_f32_close(a, b)


# ---------------------------------------------------------------------------------------------
# matryoshka_2d / adaptive_layer: values and gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "weights, last_w, prior_w, kl_w, kl_t",
    [
        (None, 1.0, 1.0, 1.0, 0.3),
        ((1.0, 0.5), 2.0, 0.5, 3.0, 1.0),
        ((2.0, 1.0), 1.0, 1.0, 1.0, 0.0),
    ],
)
def test_matryoshka_2d_all_layers_value_and_grad(rng, weights, last_w, prior_w, kl_w, kl_t):
    h1, h2 = _layers(rng), _layers(rng)
    dims = (4, 2)
    kw = dict(
        weights=weights,
        last_layer_weight=last_w,
        prior_layers_weight=prior_w,
        kl_div_weight=kl_w,
        kl_temperature=kl_t,
    )
    loss = matryoshka_2d(nt_xent, dims, n_layers_per_step=-1, n_dims_per_step=-1, **kw)
    ref_kw = dict(
        dims=dims,
        weights=list(weights) if weights else None,
        last_w=last_w,
        prior_w=prior_w,
        kl_w=kl_w,
        kl_t=kl_t,
    )

    def ref(a, b):
        return np_2d(_np_nt, [a, b], **ref_kw)

    value, (g1, g2) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(h1, h2)
    np.testing.assert_allclose(value, ref(h1, h2), rtol=1e-5)
    a64, b64 = np.asarray(h1, np.float64), np.asarray(h2, np.float64)
    np.testing.assert_allclose(g1, numeric_grad(lambda a: ref(a, b64), a64), rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(g2, numeric_grad(lambda b: ref(a64, b), b64), rtol=2e-3, atol=2e-4)


def test_matryoshka_2d_hard_negatives_value_and_grad(rng):
    q, p = _layers(rng, d=6), _layers(rng, d=6)
    n = _layers(rng, d=6, h=2)
    dims = (6, 3)
    loss = matryoshka_2d(neg_loss, dims, n_layers_per_step=-1, n_dims_per_step=-1)

    def ref(a, b, c):
        return np_2d(np_neg_loss, [a, b, c], dims=dims)

    value, gn = jax.jit(jax.value_and_grad(loss, argnums=2))(q, p, n)
    np.testing.assert_allclose(value, ref(q, p, n), rtol=1e-5)
    q64, p64, n64 = (np.asarray(x, np.float64) for x in (q, p, n))
    np.testing.assert_allclose(
        gn, numeric_grad(lambda c: ref(q64, p64, c), n64), rtol=2e-3, atol=2e-4
    )


def test_matryoshka_2d_labels_positional_and_keyword(rng):
    x = _layers(rng, b=8, d=4)
    labels = np.array([0, 1, 0, 2, 1, 2, 0, 1])
    dims = (4, 2)
    loss = matryoshka_2d(label_loss, dims, n_layers_per_step=-1, n_dims_per_step=-1)
    np.testing.assert_allclose(
        loss(x, labels), np_2d(np_label_loss, [x], (labels,), dims=dims), rtol=1e-5
    )
    # nt_xent's keyword labels (supervised form) pass through too
    h1, h2 = _layers(rng, b=8), _layers(rng, b=8)
    loss = matryoshka_2d(nt_xent, dims, n_layers_per_step=-1, n_dims_per_step=-1)

    def np_sup(a, b):
        return np_nt_xent(a, b, 0.5, labels)

    np.testing.assert_allclose(
        loss(h1, h2, labels=labels), np_2d(np_sup, [h1, h2], dims=dims), rtol=1e-5
    )


def test_adaptive_layer_weights_by_hand():
    # layer l holds the constant l + 1; loss = mean → M(l) = l + 1, no KL (T = 0)
    h = np.stack([np.full((2, 3), c, np.float32) for c in (1.0, 2.0, 3.0, 4.0)])
    loss = adaptive_layer(jnp.mean, n_layers_per_step=-1, kl_temperature=0.0)
    np.testing.assert_allclose(loss(h), 4.0 + (1 / 1 + 2 / 2 + 3 / 3) / 3, rtol=1e-6)
    loss = adaptive_layer(
        jnp.mean,
        n_layers_per_step=-1,
        last_layer_weight=2.0,
        prior_layers_weight=3.0,
        kl_temperature=0.0,
    )
    np.testing.assert_allclose(loss(h), 2.0 * 4.0 + 3.0 * (1 + 1 + 1) / 3, rtol=1e-6)
    # None means "all prior layers", like -1
    none = adaptive_layer(jnp.mean, n_layers_per_step=None, kl_temperature=0.0)
    np.testing.assert_allclose(none(h), 4.0 + (1 / 1 + 2 / 2 + 3 / 3) / 3, rtol=1e-6)
    # a single layer: only the final-layer term
    np.testing.assert_allclose(loss(h[-1:]), 8.0, rtol=1e-6)


@pytest.mark.parametrize("t", [0.3, 1.0, 0.05])
def test_kl_term_direction_rows_and_scale(rng, t):
    """Zero base loss isolates Σ_l kl_w · T · KL(softmax(h_L/T) ‖ softmax(h_l/T)), with
    batchmean over the rows of all embedding arguments (B + B·H here)."""
    q = _layers(rng, n_layers=3, b=4, d=5)
    n = _layers(rng, n_layers=3, b=4, d=5, h=2)

    def zero(a, c):
        return 0.0 * (jnp.sum(a) + jnp.sum(c))

    loss = adaptive_layer(zero, n_layers_per_step=-1, kl_div_weight=2.0, kl_temperature=t)
    got = loss(q, n)
    expect = sum(
        2.0 * t * np_kl_batchmean([q[2], n[2]], [q[layer], n[layer]], t) for layer in (0, 1)
    )
    np.testing.assert_allclose(got, expect, rtol=1e-5)
    # the other direction, KL(layer ‖ final), is a different number
    reverse = sum(2.0 * t * np_kl_batchmean([q[lay], n[lay]], [q[2], n[2]], t) for lay in (0, 1))
    assert abs(reverse - expect) > 1e-3 * abs(expect)
    # the final layer's distribution is not detached (as in ST): gradient reaches h_L
    g = jax.jit(jax.grad(loss))(q, n)
    q64, n64 = np.asarray(q, np.float64), np.asarray(n, np.float64)

    def ref(a):
        return sum(
            2.0 * t * np_kl_batchmean([a[2], n64[2]], [a[lay], n64[lay]], t) for lay in (0, 1)
        )

    np.testing.assert_allclose(g, numeric_grad(ref, q64), rtol=2e-3, atol=2e-4)
    assert np.abs(np.asarray(g[2])).max() > 1e-4


def test_kl_uses_full_width_embeddings_not_truncated(rng):
    h = _layers(rng, n_layers=2, b=4, d=6)

    def zero(a):
        return 0.0 * jnp.sum(a)

    loss = matryoshka_2d(zero, (6, 2), n_layers_per_step=-1, n_dims_per_step=-1)
    np.testing.assert_allclose(loss(h), 0.3 * np_kl_batchmean([h[1]], [h[0]], 0.3), rtol=1e-5)
    loss = matryoshka_2d(zero, (6, 2), n_layers_per_step=None, n_dims_per_step=None)
    np.testing.assert_allclose(loss(h), 0.3 * np_kl_batchmean([h[1]], [h[0]], 0.3), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Sampling of layers and dims
# ---------------------------------------------------------------------------------------------


def _combo_values(h1, h2, dims, n_layers_per_step, kl_t=0.3):
    """Every value matryoshka_2d(n_layers_per_step, n_dims_per_step=1) can take."""
    n_prior = h1.shape[0] - 1
    out = {}
    for layers in itertools.permutations(range(n_prior), n_layers_per_step):
        if list(layers) != sorted(layers):
            continue
        for choice in itertools.product(range(len(dims)), repeat=1 + len(layers)):
            out[(layers, choice)] = np_2d(
                _np_nt,
                [h1, h2],
                dims=dims,
                layer_idx=layers,
                dim_choice=[[c] for c in choice],
                kl_t=kl_t,
            )
    return out


def _match(value, combos):
    hits = [c for c, v in combos.items() if abs(v - value) <= 1e-5 * abs(v)]
    assert len(hits) == 1, (value, sorted(combos.values()))
    return hits[0]


@pytest.mark.parametrize("n_layers_per_step", [1, 2])
def test_matryoshka_2d_sampling_deterministic_and_covering(rng, n_layers_per_step):
    h1, h2 = _layers(rng, n_layers=4), _layers(rng, n_layers=4)
    dims = (4, 2)
    loss = matryoshka_2d(nt_xent, dims, n_layers_per_step=n_layers_per_step)  # n_dims_per_step=1
    combos = _combo_values(h1, h2, dims, n_layers_per_step)
    jitted = jax.jit(lambda a, b, k: loss(a, b, key=k))
    seen_layers, seen = set(), set()
    for s in range(16):
        key = jax.random.key(s)
        value = float(jitted(h1, h2, key))
        assert value == float(jitted(h1, h2, key))
        if s < 2:  # eager and jitted agree
            np.testing.assert_allclose(loss(h1, h2, key=key), value, rtol=1e-6)
        hit = _match(value, combos)
        seen.add(hit)
        seen_layers.update(hit[0])
    assert seen_layers == {0, 1, 2}  # every prior layer gets drawn
    assert len(seen) >= 6


def test_matryoshka_2d_sampled_gradient_matches_drawn_combination(rng):
    h1, h2 = _layers(rng, n_layers=3), _layers(rng, n_layers=3)
    dims = (4, 2)
    loss = matryoshka_2d(nt_xent, dims)
    combos = _combo_values(h1, h2, dims, 1)
    key = jax.random.key(11)
    value, g1 = jax.jit(jax.value_and_grad(lambda a: loss(a, h2, key=key)))(h1)
    layers, choice = _match(float(value), combos)
    b64 = np.asarray(h2, np.float64)

    def ref(a):
        return np_2d(
            _np_nt, [a, b64], dims=dims, layer_idx=layers, dim_choice=[[c] for c in choice]
        )

    ref_g = numeric_grad(ref, np.asarray(h1, np.float64))
    np.testing.assert_allclose(g1, ref_g, rtol=2e-3, atol=2e-4)
    # layers that were not drawn get no gradient
    unused = [layer for layer in range(2) if layer not in layers]
    for layer in unused:
        np.testing.assert_array_equal(np.asarray(g1[layer]), 0.0)


def test_sampling_needs_a_key(rng):
    h1, h2 = _layers(rng, n_layers=4), _layers(rng, n_layers=4)
    with pytest.raises(ValueError, match="key"):
        matryoshka_2d(nt_xent, (4, 2))(h1, h2)
    with pytest.raises(ValueError, match="key"):
        adaptive_layer(nt_xent)(h1, h2)
    # nothing to sample: no key needed (n_layers_per_step >= L - 1, a single dim)
    matryoshka_2d(nt_xent, (4,), n_layers_per_step=3)(h1, h2)
    adaptive_layer(nt_xent, n_layers_per_step=5)(h1, h2)


# ---------------------------------------------------------------------------------------------
# Sharding, robustness, validation
# ---------------------------------------------------------------------------------------------


def test_matryoshka_2d_sharded_matches_single_device(rng, mesh8):
    h1, h2 = _layers(rng, n_layers=3, b=16, d=8), _layers(rng, n_layers=3, b=16, d=8)
    n = _layers(rng, n_layers=3, b=16, d=8, h=2)
    loss = matryoshka_2d(neg_loss, (8, 4, 2), n_dims_per_step=2)
    key = jax.random.key(3)
    f = jax.jit(jax.value_and_grad(lambda a, b, c, k: loss(a, b, c, key=k), argnums=(0, 1, 2)))
    v1, g1 = f(h1, h2, n, key)
    sh = NamedSharding(mesh8, P(None, "data"))
    args = [jax.device_put(x, sh) for x in (h1, h2, n)]
    assert all(len(a.addressable_shards) == 8 for a in args)
    v8, g8 = f(*args, key)
    np.testing.assert_allclose(v8, v1, rtol=1e-5)
    for a, b in zip(g8, g1, strict=True):
        assert_f32_close(a, b)


def test_matryoshka_2d_robust_inputs(rng):
    loss = matryoshka_2d(nt_xent, (4, 2), n_layers_per_step=-1, n_dims_per_step=-1)
    h1, h2 = _layers(rng), _layers(rng)
    zero = h1.copy()
    zero[:, 1] = 0.0
    vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    for a, b in [(h1 * 1e4, h2 * 1e4), (np.ones_like(h1), np.ones_like(h2)), (zero, h2)]:
        val, grads = vg(a, b)
        assert np.isfinite(float(val))
        assert all(np.isfinite(np.asarray(g)).all() for g in grads)
    out = loss(jnp.asarray(h1, jnp.bfloat16), jnp.asarray(h2, jnp.bfloat16))
    assert out.dtype == jnp.float32
    r1, r2 = (np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32) for x in (h1, h2))
    np.testing.assert_allclose(out, loss(r1, r2), rtol=1e-5)


@pytest.mark.parametrize(
    "make, args, match",
    [
        (lambda: matryoshka_2d(nt_xent, (8, 2)), "h", r"dims must be <= the embedding width.*8"),
        (lambda: matryoshka_2d(nt_xent, ()), None, "dims must be a non-empty"),
        (lambda: matryoshka_2d(nt_xent, (4, 0)), None, "dims entries must be >= 1"),
        (lambda: matryoshka_2d(nt_xent, (4, 2), weights=(1.0,)), None, "weights must have one"),
        (lambda: matryoshka_2d(nt_xent, (4, 2), n_dims_per_step=0), None, "n_dims_per_step"),
        (lambda: matryoshka_2d(nt_xent, (4, 2), n_dims_per_step=3), None, "n_dims_per_step"),
        (lambda: matryoshka_2d(nt_xent, (4,), n_layers_per_step=0), None, "n_layers_per_step"),
        (lambda: matryoshka_2d(nt_xent, (4,), kl_temperature=-0.1), None, "kl_temperature"),
        (lambda: matryoshka_2d(nt_xent, (4,), kl_div_weight=-1.0), None, "kl_div_weight"),
        (lambda: matryoshka_2d(nt_xent, (4,), last_layer_weight=-1.0), None, "last_layer_w"),
        (lambda: matryoshka_2d(nt_xent, (4,), prior_layers_weight=np.nan), None, "prior_layers"),
        (lambda: matryoshka_2d("nt_xent", (4,)), None, "loss_fn must be callable"),
        (lambda: adaptive_layer(None), None, "loss_fn must be callable"),
        (lambda: adaptive_layer(nt_xent, n_layers_per_step=-2), None, "n_layers_per_step"),
        (lambda: adaptive_layer(nt_xent, argnums=()), None, "argnums"),
        (lambda: adaptive_layer(nt_xent), "layers_mismatch", "same number of layers"),
        (lambda: adaptive_layer(nt_xent), "no_layers", "no per-layer embedding"),
        (lambda: adaptive_layer(nt_xent, argnums=(0, 1)), "int", "float"),
        (lambda: adaptive_layer(nt_xent, argnums=(0, 5)), "h", "argnums"),
    ],
)
def test_validation(make, args, match):
    h = np.ones((3, 4, 4), np.float32)
    inputs = {
        "h": (h, h),
        "layers_mismatch": (h, h[:2]),
        "no_layers": (h[0], h[0]),
        "int": (h.astype(np.int32), h.astype(np.int32)),
    }
    with pytest.raises(ValueError, match=match):
        fn = make()
        fn(*inputs[args], key=jax.random.key(0))
