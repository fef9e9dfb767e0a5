"""GradCache and the blocked InfoNCE: full-batch gradients, sharding, memory, validation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxemb.encoders import MLPEncoder
from jaxemb.losses import gist_info_nce, info_nce, matryoshka, supcon
from jaxemb.parallel import batch_sharding, blocked_info_nce, grad_cache, make_mesh


def assert_tree_close(got, want, rtol=1e-5):
    """Element-wise rtol 1e-5; atol 1e-6 of the largest gradient entry.

    Some entries are zero in exact arithmetic (e.g. the attention key bias, which shifts every
    logit of a softmax row equally) and are float32 noise of ~1e-8 in both computations.
    """
    scale = max(float(np.abs(np.asarray(w)).max()) for w in jax.tree.leaves(want))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=rtol * 0.1 * scale)


# ---------------------------------------------------------------------------------- encoders


class TinyTransformer(nnx.Module):
    """One pre-LN block: token + position embedding, self-attention, MLP, masked mean pool."""

    def __init__(self, vocab, seq, dim, *, rate, rngs):
        self.tok = nnx.Embed(vocab, dim, rngs=rngs)
        self.pos = nnx.Param(0.1 * jax.random.normal(rngs.params(), (seq, dim)))
        self.ln = nnx.LayerNorm(dim, rngs=rngs)
        self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
        self.fc1 = nnx.Linear(dim, 2 * dim, rngs=rngs)
        self.fc2 = nnx.Linear(2 * dim, dim, rngs=rngs)
        self.drop = nnx.Dropout(rate)

    def __call__(self, tokens, *, rngs=None):
        det = rngs is None
        keep = tokens > 0
        x = self.tok(tokens) + self.pos[None]
        q, k, v = jnp.split(self.qkv(self.ln(x)), 3, axis=-1)
        scores = jnp.einsum("bqd,bkd->bqk", q, k) / np.sqrt(q.shape[-1])
        scores = jnp.where(keep[:, None, :], scores, -1e9)
        h = jnp.einsum("bqk,bkd->bqd", jax.nn.softmax(scores, axis=-1), v)
        x = x + self.drop(h, deterministic=det, rngs=rngs)
        h = self.fc2(jax.nn.gelu(self.fc1(x)))
        x = x + self.drop(h, deterministic=det, rngs=rngs)
        w = keep.astype(x.dtype)[..., None]
        return jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


def make_transformer(seed=0, rate=0.2):
    graphdef, params = nnx.split(TinyTransformer(50, 6, 16, rate=rate, rngs=nnx.Rngs(seed)))

    def embed(params, tokens, key):
        model = nnx.merge(graphdef, params)
        return model(tokens, rngs=None if key is None else nnx.Rngs(dropout=key))

    return embed, params


def make_mlp(seed=0, in_features=10, out=8, rate=0.2):
    graphdef, params = nnx.split(MLPEncoder(in_features, out, hidden=(16,), rngs=nnx.Rngs(seed)))

    def embed(params, x, key):
        if key is not None:  # input dropout
            x = jnp.where(jax.random.bernoulli(key, 1 - rate, x.shape), x / (1 - rate), 0.0)
        return nnx.merge(graphdef, params)(x)

    return embed, params


def tokens(seed, shape):
    t = np.random.default_rng(seed).integers(1, 50, shape)
    t[..., -2:] *= np.random.default_rng(seed + 1).integers(0, 2, shape[:-1] + (2,))  # padding
    return jnp.asarray(t, jnp.int32)


def reference_embed(f, params, x, key, tower, chunk):
    """The full batch embedded in one differentiable pass with GradCache's per-chunk keys."""
    if key is None:
        return f(params, x, None)
    kt = jax.random.fold_in(key, tower)
    n = jax.tree.leaves(x)[0].shape[0] // chunk
    chunks = jax.tree.map(lambda a: a.reshape(n, chunk, *a.shape[1:]), x)
    keys = jax.vmap(lambda c: jax.random.fold_in(kt, c))(jnp.arange(n))
    out = jax.vmap(lambda xc, k: f(params, xc, k))(chunks, keys)
    return out.reshape(-1, *out.shape[2:])


def reference(fns, loss_fn, params, towers, key, chunk, *loss_args):
    def total(p):
        embs = [
            reference_embed(f, p, x, key, t, chunk) for t, (f, x) in enumerate(zip(fns, towers))
        ]
        return loss_fn(*embs, *loss_args)

    return jax.jit(jax.value_and_grad(total))(params)


def run_and_compare(
    fns, loss_fn, params, towers, key, chunk, *loss_args, mesh=None, multi=True, ref=None
):
    step = grad_cache(fns if multi else fns[0], loss_fn, chunk_size=chunk, mesh=mesh)
    batch = towers if multi else towers[0]
    if mesh is not None:
        batch = jax.device_put(batch, batch_sharding(mesh))
        loss_args = jax.device_put(loss_args, batch_sharding(mesh))
    loss, grads = step(params, batch, key, *loss_args)
    if ref is None:
        ref = reference(fns, loss_fn, params, towers, key, chunk, *loss_args)
    ref_loss, ref_grads = ref
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    assert_tree_close(grads, ref_grads)
    # the gradient is not trivially zero
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) > 1e-4
    return loss, grads


# ------------------------------------------------------------------ gradients vs jax.grad

INFO = functools.partial(info_nce, temperature=0.1)


def compare_on_1_and_8_devices(fns, loss_fn, params, towers, key, chunk, mesh8):
    """Both layouts against one reference: 1 device chunks the whole batch, the mesh chunks
    each device's rows; a global chunk gets the same dropout key in both layouts."""
    ref_loss, ref_grads = reference(fns, loss_fn, params, towers, key, chunk)
    for mesh in (None, mesh8):
        run_and_compare(
            fns, loss_fn, params, towers, key, chunk, mesh=mesh, ref=(ref_loss, ref_grads)
        )


def test_mlp_two_towers_without_dropout(mesh8):
    embed, params = make_mlp()
    x = jax.random.normal(jax.random.key(1), (2, 32, 10))
    compare_on_1_and_8_devices((embed, embed), INFO, params, (x[0], x[1]), None, 2, mesh8)


def test_transformer_two_towers_with_dropout(mesh8):
    embed, params = make_transformer()
    toks = (tokens(0, (32, 6)), tokens(1, (32, 6)))
    compare_on_1_and_8_devices((embed, embed), INFO, params, toks, jax.random.key(3), 4, mesh8)


def test_transformer_two_towers_without_dropout_sharded(mesh8):
    embed, params = make_transformer()
    toks = (tokens(2, (16, 6)), tokens(3, (16, 6)))
    run_and_compare((embed, embed), INFO, params, toks, None, 2, mesh=mesh8)


def test_one_tower_with_labels():
    embed, params = make_mlp()
    x = jax.random.normal(jax.random.key(4), (32, 10))
    labels = jnp.asarray(np.arange(32) % 5)
    loss = functools.partial(supcon, temperature=0.2)
    run_and_compare((embed,), loss, params, (x,), jax.random.key(5), 8, labels, multi=False)


def test_two_encoders_and_a_hard_negative_tower():
    q_embed, q_params = make_mlp(seed=0, in_features=10)
    d_embed, d_params = make_mlp(seed=1, in_features=12)

    def neg_embed(p, x, k):  # hard negatives through the document encoder: [chunk, H, 12]
        return d_embed(p[1], x.reshape(-1, x.shape[-1]), k).reshape(*x.shape[:2], -1)

    fns = (lambda p, x, k: q_embed(p[0], x, k), lambda p, x, k: d_embed(p[1], x, k), neg_embed)
    q = jax.random.normal(jax.random.key(1), (24, 10))
    d = jax.random.normal(jax.random.key(2), (24, 12))
    n = jax.random.normal(jax.random.key(3), (24, 2, 12))
    _, grads = run_and_compare(fns, INFO, (q_params, d_params), (q, d, n), jax.random.key(0), 6)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads[1]))


def test_matryoshka_info_nce(mesh8):
    embed, params = make_mlp()
    x = jax.random.normal(jax.random.key(3), (2, 16, 10))
    loss = matryoshka(INFO, dims=(8, 3), weights=(1.0, 0.5))
    run_and_compare((embed, embed), loss, params, (x[0], x[1]), jax.random.key(1), 2, mesh=mesh8)


def test_gist_with_frozen_guide(mesh8):
    embed, params = make_mlp()
    guide_embed, guide_params = make_mlp(seed=9, out=6)
    x = jax.random.normal(jax.random.key(6), (2, 32, 10))
    # the frozen guide embeds the same inputs without dropout; it gets no gradient
    gq, gp = guide_embed(guide_params, x[0], None), guide_embed(guide_params, x[1], None)
    loss = functools.partial(gist_info_nce, temperature=0.05, margin=0.05)
    run_and_compare(
        (embed, embed), loss, params, (x[0], x[1]), jax.random.key(2), 4, gq, gp, mesh=mesh8
    )


# ------------------------------------------------------------------------ blocked InfoNCE


def numpy_info_nce(q, p, n, temperature, similarity, symmetric):
    q, p = np.asarray(q, np.float64), np.asarray(p, np.float64)
    docs = (
        p
        if n is None
        else np.concatenate(
            [p, np.swapaxes(np.asarray(n, np.float64), 0, 1).reshape(-1, p.shape[1])]
        )
    )
    if similarity == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        p = p / np.linalg.norm(p, axis=1, keepdims=True)
        docs = docs / np.linalg.norm(docs, axis=1, keepdims=True)

    def lse(x):  # row-wise log-sum-exp
        m = x.max(axis=1, keepdims=True)
        return np.log(np.exp(x - m).sum(axis=1)) + m[:, 0]

    log_z = lse(q @ docs.T / temperature)
    if symmetric:  # CLIP: average with the column direction over the positives
        log_z = 0.5 * (log_z + lse(p @ q.T / temperature))
    return np.mean(log_z - np.sum(q * p, axis=1) / temperature)


@pytest.mark.parametrize(
    ("block", "similarity", "hard", "symmetric"),
    [(5, "cosine", 2, False), (1, "dot", 0, False), (64, "dot", 2, False), (3, "cosine", 0, True)],
)
def test_blocked_info_nce_matches_info_nce(block, similarity, hard, symmetric):
    k = jax.random.split(jax.random.key(block + hard), 3)
    q, p = jax.random.normal(k[0], (16, 6)), jax.random.normal(k[1], (16, 6))
    n = jax.random.normal(k[2], (16, hard, 6)) if hard else None
    kw = dict(temperature=0.2, similarity=similarity, symmetric=symmetric)
    args = (q, p) if n is None else (q, p, n)
    argnums = tuple(range(len(args)))
    got, g_got = jax.value_and_grad(
        lambda *a: blocked_info_nce(*a, block_size=block, **kw), argnums=argnums
    )(*args)
    want, g_want = jax.value_and_grad(lambda *a: info_nce(*a, **kw), argnums=argnums)(*args)
    np.testing.assert_allclose(float(got), numpy_info_nce(q, p, n, **kw), rtol=1e-5)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    assert_tree_close(g_got, g_want)


def test_blocked_info_nce_never_holds_the_full_logits():
    b, d, block = 2048, 8, 64
    q = jax.ShapeDtypeStruct((b, d), jnp.float32)
    vg = jax.jit(jax.value_and_grad(lambda q, p: blocked_info_nce(q, p, block_size=block), (0, 1)))
    mem = vg.lower(q, q).compile().memory_analysis()
    full = jax.jit(jax.value_and_grad(lambda q, p: info_nce(q, p), (0, 1)))
    mem_full = full.lower(q, q).compile().memory_analysis()
    logits_bytes = b * b * 4
    assert mem.temp_size_in_bytes < logits_bytes / 4, mem.temp_size_in_bytes
    assert mem_full.temp_size_in_bytes >= logits_bytes  # the baseline does hold them


def test_grad_cache_step_memory_does_not_hold_logits():
    embed, params = make_mlp(in_features=4, out=4)
    b = 2048
    step = grad_cache((embed, embed), INFO, chunk_size=64)
    x = jax.ShapeDtypeStruct((b, 4), jnp.float32)
    mem = jax.jit(lambda p, q, d: step(p, (q, d), None)).lower(params, x, x).compile()
    assert mem.memory_analysis().temp_size_in_bytes < b * b * 4 / 4


def test_blocked_info_nce_validation():
    q = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="positives must be"):
        blocked_info_nce(q, jnp.ones((5, 3)))
    with pytest.raises(ValueError, match="block_size"):
        blocked_info_nce(q, q, block_size=0)
    with pytest.raises(ValueError, match="temperature"):
        blocked_info_nce(q, q, temperature=0.0)
    with pytest.raises(ValueError, match="negatives must be"):
        blocked_info_nce(q, q, jnp.ones((4, 2, 5)))


# ------------------------------------------------------------------------------ validation


def test_validation_errors(mesh8):
    embed, params = make_mlp()
    x = jnp.ones((24, 10))
    step = grad_cache((embed, embed), INFO, chunk_size=5)
    with pytest.raises(
        ValueError, match=r"chunk_size must divide the per-device batch of batch\[0\], 24"
    ):
        step(params, (x, x), None)
    step8 = grad_cache((embed, embed), INFO, chunk_size=2, mesh=mesh8)
    with pytest.raises(ValueError, match=r"per-device batch of batch\[0\], 3 rows \(24 rows / 8"):
        step8(params, (x, x), None)
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        step8(params, (jnp.ones((12, 10)), jnp.ones((12, 10))), None)
    step = grad_cache((embed, embed), INFO, chunk_size=4)
    with pytest.raises(ValueError, match="batch must be a tuple of 2 tower inputs"):
        step(params, x, None)
    with pytest.raises(ValueError, match="batch must be a tuple of 2 tower inputs.*length 3"):
        step(params, (x, x, x), None)
    with pytest.raises(ValueError, match=r"params must be a pytree of floating-point.*int32"):
        step({"w": params, "count": jnp.zeros((), jnp.int32)}, (x, x), None)
    with pytest.raises(ValueError, match="key must be a PRNG key"):
        step(params, (x, x), jnp.ones(3))
    # mismatched tower outputs: the loss needs equal widths
    other, other_params = make_mlp(seed=1, out=6)
    mixed = grad_cache((embed, lambda p, x, k: other(other_params, x, k)), INFO, chunk_size=4)
    with pytest.raises(
        ValueError, match=r"loss_fn rejected the tower embeddings \(\[24, 8\], \[24, 6\]\)"
    ):
        mixed(params, (x, x), None)
    # tower batch sizes that the loss cannot pair
    with pytest.raises(ValueError, match=r"\[24, 8\], \[16, 8\]"):
        step(params, (x, jnp.ones((16, 10))), None)
    bad_rows = grad_cache(lambda p, x, k: embed(p, x, k)[:1], INFO, chunk_size=4)
    with pytest.raises(ValueError, match=r"must return \[4, dim\] embeddings"):
        bad_rows(params, x, None)
    with pytest.raises(ValueError, match="chunk_size"):
        grad_cache(embed, INFO, chunk_size=0)
    with pytest.raises(ValueError, match="embed_fn"):
        grad_cache((embed, 3), INFO, chunk_size=2)
    with pytest.raises(ValueError, match="loss_fn must be callable"):
        grad_cache(embed, "info_nce", chunk_size=2)
    no_data = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
    with pytest.raises(ValueError, match="'data' axis"):
        grad_cache(embed, INFO, chunk_size=2, mesh=no_data)


def test_plain_script_usage_under_user_jit():
    """The step composes with a user's own jit and optax-style update."""
    embed, params = make_mlp()
    step = grad_cache((embed, embed), INFO, chunk_size=4)
    x = jax.random.normal(jax.random.key(1), (2, 16, 10))

    @jax.jit
    def train_step(params, q, d, key):
        loss, grads = step(params, (q, d), key)
        return loss, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)

    loss0, params1 = train_step(params, x[0], x[1], jax.random.key(0))
    loss1, _ = train_step(params1, x[0], x[1], jax.random.key(0))
    assert float(loss1) < float(loss0)
    assert make_mesh().shape["data"] == 8


def test_loss_kwargs_must_be_arrays():
    embed, params = make_mlp()
    x = jnp.ones((8, 10))
    step = grad_cache((embed, embed), info_nce, chunk_size=4)
    with pytest.raises(ValueError, match=r"loss_kwargs\['similarity'\] must be an array.*partial"):
        step(params, (x, x), None, similarity="dot")
