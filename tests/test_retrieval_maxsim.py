"""MaxSim (late interaction), its in-batch loss and the ColBERT token head against NumPy.

The references are written here in float64, pair by pair, from the definition
``Σ_s w_s · max_{t kept} ⟨q_s, d_t⟩`` (sentence-transformers 6.3 ``util.maxsim`` semantics:
masked document tokens are excluded from the max, the query mask multiplies the maxima).
Every test reuses the shapes below so XLA compiles each program once.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tolerances import assert_f32_close

from jaxemb.encoders import EncoderOutput
from jaxemb.losses import multi_vector_info_nce
from jaxemb.parallel import shard_batch
from jaxemb.retrieval import (
    TokenEmbeddingHead,
    maxsim,
    maxsim_pairwise,
    token_skiplist,
)
from jaxemb.retrieval import multi_vector_info_nce as reexported_loss
from jaxemb.retrieval._maxsim import _maxsim_scores

Q, TQ, N, TD, D = 3, 4, 5, 6, 8
B, TP, H, TN = 8, 6, 1, 5


def np_maxsim_pair(q, qm, d, dm, length_normalize=False):
    q, d = np.asarray(q, np.float64), np.asarray(d, np.float64)
    qm, dm = np.asarray(qm, np.float64), np.asarray(dm)
    kept = d[dm != 0]
    total = 0.0
    for s in range(len(q)):
        if qm[s] != 0:
            total += qm[s] * max(float(q[s] @ t) for t in kept)
    if length_normalize:
        total /= max(1, int((qm != 0).sum()))
    return total


def np_maxsim(q, qm, d, dm, length_normalize=False):
    return np.array(
        [
            [np_maxsim_pair(q[i], qm[i], d[j], dm[j], length_normalize) for j in range(len(d))]
            for i in range(len(q))
        ]
    )


def _masks(rng, n, t):
    m = rng.random((n, t)) < 0.7
    m[np.arange(n), rng.integers(0, t, n)] = True  # at least one kept token each
    return m


def _side(rng, n, t, d=D, *, shift=-0.3):
    """Tokens whose similarities are often negative; padded positions hold +50 garbage, which
    would win any maximum (or add to any sum) that let padding in."""
    shift = np.reshape(shift, (-1, 1, 1))
    x = (rng.normal(size=(n, t, d)) + shift).astype(np.float32)
    m = _masks(rng, n, t)
    x[~m] = 50.0
    return x, m


def test_maxsim_and_pairwise_match_numpy(rng):
    q, qm = _side(rng, Q, TQ, shift=1.0)
    d, dm = _side(rng, N, TD, shift=[-1.0, 0.5, -1.0, 0.5, -1.0])
    want = np_maxsim(q, qm, d, dm)
    assert (want < 0).any() and (want > 0).any()
    got = maxsim(q, qm.astype(np.int32), d, dm)
    assert got.shape == (Q, N) and got.dtype == jnp.float32
    assert_f32_close(got, want)
    # documents scored a few at a time (5 = 2 + 2 + 1: the last chunk is padded) agree
    assert_f32_close(maxsim(q, qm, d, dm, chunk_size=2), want)
    # float query masks weight the tokens (sentence-transformers multiplies by the mask)
    w = np.where(qm, rng.uniform(0.5, 2.0, qm.shape), 0.0).astype(np.float32)
    assert_f32_close(maxsim(q, w, d, dm), np_maxsim(q, w, d, dm))
    assert_f32_close(
        maxsim(q, qm, d, dm, length_normalize=True), np_maxsim(q, qm, d, dm, True), rtol=2e-5
    )
    # pairwise: query i with document i, documents of another length than in maxsim
    # (scored 2 pairs at a time: the last chunk re-scores pair 1)
    pairs = maxsim_pairwise(q, qm, d[:Q, :5], dm[:Q, :5] | np.eye(Q, 5, dtype=bool), chunk_size=2)
    want_p = [
        np_maxsim_pair(q[i], qm[i], d[i, :5], dm[i, :5] | np.eye(Q, 5, dtype=bool)[i])
        for i in range(Q)
    ]
    assert pairs.shape == (Q,) and pairs.dtype == jnp.float32
    assert_f32_close(pairs, want_p)


def test_masked_document_tokens_never_win_and_query_padding_adds_nothing():
    # hand-computed: the only real document token scores -1 against the query; the zero padding
    # token would score 0 and win a max that multiplied padding by 0 instead of excluding it
    q = np.array([[[1.0, 0.0], [7.0, 7.0]]], np.float32)
    d = np.array([[[-1.0, 0.0], [0.0, 0.0]]], np.float32)
    got = maxsim(q, np.array([[1, 0]]), d, np.array([[1, 0]]))
    np.testing.assert_array_equal(np.asarray(got), [[-1.0]])
    # without masks all-zero rows are padding (sentence-transformers' rule for padded tensors)
    np.testing.assert_array_equal(np.asarray(maxsim(q[:, :1], None, d, None)), [[-1.0]])


def test_mask_none_ragged_lists_and_single_items(rng):
    q, qm = _side(rng, Q, TQ)
    d, dm = _side(rng, N, TD)
    q[~qm], d[~dm] = 0.0, 0.0
    want = np_maxsim(q, qm, d, dm)
    assert_f32_close(maxsim(q, None, d, None), want)
    ragged_q = [q[i][qm[i]] for i in range(Q)]  # kept tokens only, [Tq_i, D]
    ragged_d = [d[j][dm[j]] for j in range(N)]
    assert_f32_close(maxsim(ragged_q, None, ragged_d, None), want, rtol=2e-5)
    # one [Tq, D] query (and its [Tq] mask) is a batch of one
    one = maxsim(q[1], qm[1], d, dm)
    assert one.shape == (1, N)
    assert_f32_close(one[0], want[1])


def test_nan_propagates_and_traced_empty_items():
    q = np.ones((1, 2, 2), np.float32)
    d = np.ones((2, 3, 2), np.float32)
    dm = np.array([[1, 1, 0], [1, 1, 1]])
    d[0, 2, 0] = np.nan  # in a masked (padding) token: ignored
    d[1, 0, 1] = np.nan  # in a kept token: document 1 scores NaN
    got = np.asarray(maxsim(q, None, d, dm))
    assert got[0, 0] == 4.0
    assert np.isnan(got[0, 1])
    # inside a caller's jit masks cannot be checked: an empty document scores -inf (it can
    # never be retrieved), a query without tokens NaN (never a plausible score)
    qm = np.array([[1, 1], [0, 0]])
    dm = np.array([[0, 0, 0], [1, 1, 1]])
    q2 = np.concatenate([q, q])
    d2 = np.ones((2, 3, 2), np.float32)
    for fn in (jax.jit(_maxsim_scores), jax.jit(maxsim)):
        s = np.asarray(fn(q2, qm, d2, dm))
        assert s[0, 0] == -np.inf and s[0, 1] == 4.0
        assert np.isnan(s[1]).all()


def _loss_inputs(rng):
    q, qm = _side(rng, B, TQ, shift=0.2)
    p, pm = _side(rng, B, TP, shift=0.2)
    n, nm = _side(rng, B * H, TN, shift=0.2)
    scale = np.float32(0.5)
    return (
        q * scale,
        qm.astype(np.int32),
        p * scale,
        pm,
        (n * scale).reshape(B, H, TN, D),
        nm.reshape(B, H, TN),
    )


def np_loss(q, qm, p, pm, n, nm, temperature, length_normalize=False):
    docs = list(zip(p, pm)) + [(n[i, k], nm[i, k]) for k in range(n.shape[1]) for i in range(B)]
    s = np.array(
        [[np_maxsim_pair(q[i], qm[i], t, m, length_normalize) for t, m in docs] for i in range(B)]
    )
    logits = s / temperature
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    return float(np.mean(lse - np.diag(logits[:, :B])))


def test_multi_vector_info_nce_matches_numpy_and_is_sharding_exact(rng, mesh8):
    inputs = _loss_inputs(rng)
    assert reexported_loss is multi_vector_info_nce
    assert_f32_close(
        multi_vector_info_nce(*inputs[:4], length_normalize=True),
        np_loss(*inputs[:4], inputs[4][:, :0], inputs[5][:, :0], 1.0, True),
    )

    f = jax.jit(
        jax.value_and_grad(
            lambda q, p, n, qm, pm, nm: multi_vector_info_nce(q, qm, p, pm, n, nm, temperature=0.5),
            argnums=(0, 1, 2),
        )
    )
    q, qm, p, pm, n, nm = inputs
    v1, g1 = f(q, p, n, qm, pm, nm)
    v8, g8 = f(*shard_batch(mesh8, (q, p, n, qm, pm, nm)))
    assert_f32_close(v1, np_loss(*inputs, 0.5))
    np.testing.assert_allclose(v8, v1, rtol=1e-5)
    for a, b in zip(g8, g1, strict=True):
        assert_f32_close(a, b)
    # padding tokens get no gradient; real ones do
    assert not np.asarray(g1[1])[~pm].any()
    assert np.abs(np.asarray(g1[1])[pm]).sum() > 0


def test_token_head_and_skiplist_from_a_tokenizer(rng):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {"[UNK]": 0, "[PAD]": 1, "the": 2, "cat": 3, ".": 4, ",": 5, "?": 6, "sat": 7}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    # the punctuation characters that are single vocabulary tokens; the other 29 are left out
    assert token_skiplist(tok) == (4, 5, 6)
    assert token_skiplist(vocab, words=["cat", "dog"]) == (3,)
    ids = np.array([[2, 3, 4, 7, 5, 1], [6, 2, 1, 1, 1, 1]], np.int32)
    mask = (ids != 1).astype(np.int32)
    hidden = rng.normal(size=(2, 6, 16)).astype(np.float32)

    head = TokenEmbeddingHead(16, D, skiplist_ids=token_skiplist(tok), rngs=nnx.Rngs(0))
    kernel = np.asarray(head.proj.kernel[...], np.float64)
    assert np.abs(kernel).max() <= 1 / np.sqrt(16)  # torch.nn.Linear's U(±1/sqrt(in))
    # an encoder's output goes in as it is (its last_hidden_state is used)
    doc = jax.jit(lambda out, m, i: head(out, m, i, task="document"))
    tokens, doc_mask = doc(EncoderOutput(hidden, None), mask, ids)
    want = hidden.astype(np.float64) @ kernel
    want /= np.linalg.norm(want, axis=-1, keepdims=True)
    assert tokens.shape == (2, 6, D) and tokens.dtype == jnp.float32
    assert_f32_close(tokens, want)
    np.testing.assert_array_equal(np.asarray(doc_mask), [[1, 1, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0]])
    query = jax.jit(lambda h, m, i: head(h, m, i, task="query"))
    query_tokens, query_mask = query(hidden, mask, ids)  # queries keep punctuation
    np.testing.assert_array_equal(np.asarray(query_mask), mask.astype(bool))
    np.testing.assert_array_equal(np.asarray(query_tokens), np.asarray(tokens))


_q, _qm = np.ones((Q, TQ, D), np.float32), np.ones((Q, TQ), bool)
_d, _dm = np.ones((N, TD, D), np.float32), np.ones((N, TD), bool)
_BAD_MAXSIM = [
    (dict(q_mask=np.ones((Q, TQ + 1))), r"q_mask must be \[batch, tokens\] = \[3, 4\]"),
    (dict(d_mask=np.ones((N - 1, TD))), r"d_mask must be \[batch, tokens\] = \[5, 6\]"),
    (dict(d_tokens=np.ones((N, TD, D - 1), np.float32)), r"embedding width of q_tokens"),
    (dict(d_mask=np.eye(N, TD) * 0), r"d_mask masks every token of 5 document\(s\): \[0, 1"),
    (dict(q_mask=np.eye(Q, TQ)[[0, 0, 2]] * [[1], [0], [1]]), r"q_mask masks every .* \[1\]"),
    (dict(d_tokens=np.zeros((N, TD, D), np.float32), d_mask=None), r"d_tokens has only all-zero"),
    (dict(q_tokens=np.ones((Q, TQ, D), np.int32)), r"q_tokens must have a float dtype"),
    (dict(q_tokens=np.ones((1, Q, TQ, D), np.float32)), r"q_tokens must have rank 2 or rank 3"),
    (dict(q_tokens=np.ones((0, TQ, D), np.float32)), r"q_tokens must not be empty"),
    (dict(d_tokens=np.ones((N, 0, D), np.float32)), r"d_tokens must not have an empty axis"),
    (dict(chunk_size=0), r"chunk_size must be >= 1"),
    (dict(length_normalize=1), r"length_normalize must be a bool"),
    (dict(q_mask=np.ones((Q, TQ), bool).astype(object)), r"q_mask must have a number dtype"),
    (
        dict(q_tokens=[np.ones((2, D)), np.ones((3, D - 1))], q_mask=None),
        r"one width; got widths \[7, 8\]",
    ),
    (dict(q_tokens=[np.ones((2, D))], q_mask=np.ones((1, 2))), r"q_mask must be None when"),
]


@pytest.mark.parametrize(("kw", "match"), _BAD_MAXSIM)
def test_maxsim_bad_input(kw, match):
    args = dict(q_tokens=_q, q_mask=_qm, d_tokens=_d, d_mask=_dm) | kw
    with pytest.raises(ValueError, match=match):
        maxsim(**args)


def test_pairwise_loss_and_head_bad_input():
    with pytest.raises(ValueError, match=r"one document per query .* \(axis 0: 3 vs 5\)"):
        maxsim_pairwise(_q, _qm, _d, _dm)
    with pytest.raises(ValueError, match=r"chunk_size must be >= 1"):
        maxsim_pairwise(_q, _qm, _d[:Q], _dm[:Q], chunk_size=0)
    q, qm = np.ones((B, TQ, D), np.float32), np.ones((B, TQ))
    p, pm = np.ones((B, TP, D), np.float32), np.ones((B, TP))
    n, nm = np.ones((B, H, TN, D), np.float32), np.ones((B, H, TN))
    cases = [
        (dict(p=p[:-1]), r"p_tokens must be \[8, tokens, dim\] to match q_tokens"),
        (dict(pm=pm[:, :-1]), r"p_mask must be \[8, 6\] to match p_tokens"),
        (dict(nm=nm[:, :, :-1]), r"n_mask must be \[8, 1, 5\] to match n_tokens"),
        (dict(nm=nm * (np.arange(B) != 3)[:, None, None]), r"n_mask masks every token .*\[3\]"),
        (dict(n=n[..., :-1], nm=nm), r"n_tokens .* embedding width of q_tokens"),
        (dict(p=p[..., :-1]), r"p_tokens .* embedding width of q_tokens"),
        (dict(n=None, nm=nm), r"n_mask must be None without n_tokens"),
        (dict(t=0.0), r"temperature must be a finite number > 0"),
        (dict(t=float("nan")), r"temperature must be a finite number > 0"),
    ]
    for kw, match in cases:
        a = dict(q=q, qm=qm, p=p, pm=pm, n=n, nm=nm, t=1.0) | kw
        with pytest.raises(ValueError, match=match):
            multi_vector_info_nce(
                a["q"], a["qm"], a["p"], a["pm"], a["n"], a["nm"], temperature=a["t"]
            )
    head = TokenEmbeddingHead(16, 4, skiplist_ids=(4,), rngs=nnx.Rngs(0))
    h, m, ids = np.ones((2, 6, 16), np.float32), np.ones((2, 6)), np.ones((2, 6), np.int32)
    for call, match in [
        (lambda: head(h[..., :-1], m, ids), r"hidden must be \[batch, tokens, in_features=16\]"),
        (lambda: head(h, m[:, :-1], ids), r"attention_mask must be \[batch, tokens\] = \[2, 6\]"),
        (lambda: head(h, m, ids[:1]), r"input_ids must be \[batch, tokens\] = \[2, 6\]"),
        (lambda: head(h, m), r"input_ids \[batch, tokens\] are needed for task='document'"),
        (lambda: head(h, m, ids, task="passage"), r"task must be one of"),
        (lambda: TokenEmbeddingHead(16, 4, skiplist_ids=(-1,), rngs=nnx.Rngs(0)), r">= 0"),
        (lambda: TokenEmbeddingHead(16, 0, rngs=nnx.Rngs(0)), r"out_features must be >= 1"),
        (lambda: token_skiplist(["."]), r"tokenizer must be a tokenizers.Tokenizer"),
        (lambda: token_skiplist({".": 1}, words=[1]), r"words must be strings"),
    ]:
        with pytest.raises(ValueError, match=match):
            call()
