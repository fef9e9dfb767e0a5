"""experiments.embedding_sae on a tiny random sentence-transformers model and 300 docstrings.

The run's numbers are checked against computations written here: the cached embeddings against
the model, FVU / L0 / density from the saved SAE in NumPy, each feature's top texts by a stable
NumPy sort and their words and the package F1 table by the plain-Python references of
``test_analysis_keywords``, the steering curve at λ = 0 against a NumPy cosine search.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from encoder_fixtures import write_sentence_transformer
from test_analysis_keywords import ref_distinctive, ref_f1

from experiments import embedding_sae as es
from jaxemb import sae
from jaxemb.encoders import load_sentence_transformer

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("embedding_sae_experiment")]

N = 300
CONFIG = dict(
    limit=N,
    d_sae=48,
    k=4,
    dead_threshold=256,
    steps=40,
    batch_size=64,
    lr=3e-3,
    lr_warmup=4,
    ckpt_every=20,
    log_every=10,
    top_n=5,
    n_words=3,
    report_features=5,
    family_threshold=0.2,
    family_plots=2,
    n_steer=2,
    steer_density=(0.01, 0.5),
    steer_queries=6,
    steer_strengths=(0.0, 0.5, 2.0),
    remove_fractions=(1.0, 0.0),
)


@pytest.fixture(scope="module")
def corpus():
    return es.load_corpus(es.EmbeddingSAEConfig.create(CONFIG))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, corpus):
    """One layer, width 32, a WordPiece vocabulary learnt from the sampled texts."""
    d = tmp_path_factory.mktemp("tiny_st")
    write_sentence_transformer(
        d,
        corpus=corpus.texts,
        vocab_size=400,
        max_seq_length=32,
        normalize=True,
        hidden_size=32,
        num_hidden_layers=1,
        intermediate_size=32,
    )
    return d


@pytest.fixture(scope="module")
def finished(tiny_model, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("embedding_sae")
    results = es.train_and_evaluate(dict(CONFIG, model=str(tiny_model)), workdir)
    return workdir, results


def _codes(workdir):
    """The saved SAE's dense activations of the cached embeddings (float64 NumPy)."""
    model = sae.load_sae(workdir / "sae")
    x = np.load(workdir / "embeddings.npy")
    code = model.encode(x)
    z = np.zeros((len(x), model.d_sae))
    np.put_along_axis(z, np.asarray(code.indices), np.asarray(code.values, np.float64), axis=1)
    return model, x, z


def test_report_plots_metrics_and_cache(tiny_model, corpus, finished):
    workdir, results = finished
    report = (workdir / "report.md").read_text()
    for name in ("loss.png", "density.png", "steering.png", "family_0.png"):
        assert (workdir / name).read_bytes()[:4] == b"\x89PNG" and f"]({name})" in report
    for heading in ("## SAE metrics", "## Package alignment", "## Feature families", "## Steering"):
        assert heading in report
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "step" in r] == [10, 20, 30, 40]
    assert records[-1]["final"] is True and records[-1]["n_texts"] == N
    # the cache holds the model's (normalised) embeddings of the sampled texts
    x = np.load(workdir / "embeddings.npy", mmap_mode="r")
    assert isinstance(x, np.memmap) and x.shape == (N, 32)
    want = load_sentence_transformer(tiny_model).encode(corpus.texts)
    np.testing.assert_allclose(x, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    # the metrics of the saved SAE, computed here
    model, x, z = _codes(workdir)
    x64 = x.astype(np.float64)
    x_hat = z @ np.asarray(model.W_dec[...], np.float64) + np.asarray(model.b_dec[...])
    fvu = np.sum((x64 - x_hat) ** 2) / np.sum((x64 - x64.mean(0)) ** 2)
    m = results["metrics"]
    assert m["fvu"] == pytest.approx(fvu, rel=1e-4) and m["fvu"] < 1.0
    assert m["l0"] == pytest.approx(np.mean(np.sum(z != 0, axis=1)), abs=1e-6)
    assert m["dead_fraction"] == pytest.approx(np.mean(np.all(z == 0, axis=0)), abs=1e-6)
    assert f"{m['fvu']:.4f}" in report


def test_words_and_package_f1_equal_the_references(corpus, finished):
    workdir, results = finished
    _, _, z = _codes(workdir)
    # top texts: a stable sort of each feature's activations (ties to the earlier text)
    groups = []
    for f in range(z.shape[1]):
        order = np.argsort(-z[:, f], kind="stable")[: CONFIG["top_n"]]
        groups.append([int(i) for i in order if z[i, f] > 0])
    want_words = [[w for w, _ in g] for g in ref_distinctive(corpus.texts, groups, 3, 2)]
    report = (workdir / "report.md").read_text()
    want_f1 = ref_f1(z, corpus.package)
    got = results["package_f1"]
    assert [r["package"] for r in got] == [r[0] for r in want_f1]
    assert len(got) >= 4  # the sample mixes packages
    for row, (name, n, f, f1, p, r) in zip(got, want_f1, strict=True):
        assert (row["texts"], row["feature"]) == (n, f)
        assert row["f1"] == pytest.approx(f1, abs=1e-6)
        assert (row["precision"], row["recall"]) == pytest.approx((p, r), abs=1e-6)
        assert row["words"] == want_words[f]
        assert f"| {name} | {n} | {f} | {f1:.3f} |" in report
    for e in results["steering"]:
        assert e["words"] == want_words[e["feature"]]


def test_steering_at_zero_is_plain_search_and_removal_clears_the_feature(finished):
    workdir, results = finished
    model, x, z = _codes(workdir)
    steering = results["steering"]
    assert len(steering) == 2
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    for e in steering:
        f, fires = e["feature"], z[:, e["feature"]] > 0
        assert CONFIG["steer_density"][0] <= fires.mean() <= CONFIG["steer_density"][1]
        rows = np.asarray(e["add"]["queries"])
        assert not fires[rows].any()  # queries on which f does not fire
        # λ = 0: the top 10 of a NumPy cosine search, the query itself left out
        sims = unit[rows] @ unit.T
        sims[np.arange(len(rows)), rows] = -np.inf
        top = np.argsort(-sims, axis=1, kind="stable")[:, :10]
        assert e["add"]["fraction"][0] == pytest.approx(fires[top].mean(axis=1).mean(), abs=1e-9)
        assert e["add"]["fraction"][-1] > e["add"]["fraction"][0]  # λ = 2 moves towards f
        # removal: clamping f to 0 subtracts its contribution a_f · W_dec[f] ...
        rows = np.asarray(e["remove"]["queries"])
        assert fires[rows].all()
        edited = np.asarray(sae.analysis.clamp(model, x[rows], f, 0.0))
        W = np.asarray(model.W_dec[...])
        np.testing.assert_allclose(edited, x[rows] - z[rows, f][:, None] * W[f], atol=1e-5)
        # ... and f no longer fires on the edited queries
        assert es._activation(model, edited, f).max() == 0.0
        assert e["remove"]["activation"][-1] == 0.0 < e["remove"]["activation"][0]
        assert e["remove"]["fraction"][-1] <= e["remove"]["fraction"][0]


def test_rerun_reuses_the_embeddings_and_does_no_training(tiny_model, finished, capsys):
    workdir, results = finished
    again = es.train_and_evaluate(dict(CONFIG, model=str(tiny_model)), workdir)
    out = capsys.readouterr().out
    assert f"resumed from step {CONFIG['steps']}" in out and "embedded" not in out
    assert again["timings"]["steps_run"] == 0 and again["timings"]["embedded_rows"] == 0
    assert again["metrics"] == results["metrics"]
    assert again["package_f1"] == results["package_f1"]


def test_a_mismatching_cache_is_rebuilt(tiny_model, corpus, finished, tmp_path, capsys):
    workdir, _ = finished
    for name in ("embeddings.npy", "embeddings.json"):
        shutil.copy(workdir / name, tmp_path / name)
    meta = json.loads((tmp_path / "embeddings.json").read_text())
    (tmp_path / "embeddings.json").write_text(json.dumps({**meta, "key": "another model"}))
    np.save(tmp_path / "embeddings.npy", np.zeros((N, 32), np.float32))
    c = es.EmbeddingSAEConfig.create(dict(CONFIG, model=str(tiny_model)))
    run = es.Run(config=c, workdir=tmp_path)
    x = es.embed_corpus(
        c, load_sentence_transformer(tiny_model), corpus, meta["key"], tmp_path, run
    )
    assert "another model or corpus; rebuilding it" in capsys.readouterr().out
    np.testing.assert_allclose(x, np.load(workdir / "embeddings.npy"), atol=1e-6)
    assert run.timings["embedded_rows"] == N


def test_bad_input_is_one_paragraph_and_exit_code_2(tiny_model, finished, tmp_path, capsys):
    workdir, _ = finished
    model = f"model={tiny_model}"
    args = [f"{k}={v!r}" if isinstance(v, (tuple, str)) else f"{k}={v}" for k, v in CONFIG.items()]

    def run(work, *extra):
        code = es.main(["--workdir", str(work), *args, model, *extra])
        return code, " ".join(capsys.readouterr().err.split())

    code, err = run(tmp_path / "a", "stepz=3")
    assert code == 2 and "Unknown config key 'stepz'" in err
    code, err = run(tmp_path / "a", "steer_features=(3, 48)")
    assert code == 2 and "steer_features=(3, 48) is invalid" in err and "d_sae=48" in err
    code, err = run(tmp_path / "a", f"model={tmp_path}")
    assert code == 2 and f"model={str(tmp_path)!r} is not usable" in err
    assert not (tmp_path / "a").exists()
    # a model of another width than the SAE checkpointed in the workdir
    narrow = tmp_path / "narrow"
    write_sentence_transformer(narrow, hidden_size=16, num_hidden_layers=1, intermediate_size=16)
    code, err = run(workdir, f"model={narrow}")
    assert code == 2 and "gives 16-dimensional embeddings" in err
    assert "trained on 32-dimensional ones" in err and f"model={str(narrow)!r}" in err
    # NaN rows in the (matching) cache
    nan = tmp_path / "nan"
    nan.mkdir()
    for name in ("embeddings.npy", "embeddings.json"):
        shutil.copy(workdir / name, nan / name)
    x = np.load(nan / "embeddings.npy")
    x[[7, 9], 3] = np.nan
    np.save(nan / "embeddings.npy", x)
    code, err = run(nan)
    assert code == 2 and f"The embeddings in {nan / 'embeddings.npy'}" in err
    assert "NaN or Inf in 2 of 300 rows (first rows [7, 9]" in err
    assert not (nan / "checkpoints").exists()


def test_divergence_stops_the_run_with_exit_code_3(tiny_model, finished, tmp_path, capsys):
    workdir, _ = finished
    for name in ("embeddings.npy", "embeddings.json"):
        shutil.copy(workdir / name, tmp_path / name)
    argv = ["--workdir", str(tmp_path), f"model={tiny_model}", f"limit={N}", "d_sae=48", "k=4"]
    argv += ["batch_size=64", "lr_warmup=0", "steps=12", "log_every=1", "ckpt_every=1", "lr=1e12"]
    assert es.main(argv) == 3
    err = " ".join(capsys.readouterr().err.split())
    assert "Training diverged at step" in err and "loss is not finite" in err
    assert not (tmp_path / "report.md").exists()
