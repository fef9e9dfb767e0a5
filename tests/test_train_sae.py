"""experiments/train_sae.py on tiny configs: report, recovery metrics, saved SAE, resume, errors."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from experiments import train_sae as ts
from jaxemb import data, sae
from jaxemb.checkpoint import CheckpointWarning

TINY = dict(
    d_sae=32,
    k=3,
    batch_size=64,
    lr_warmup=2,
    eval_rows=512,
    top_latents=4,
    top_n=3,
    init_b_dec="mean",
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def np_recovered(W_dec, atoms, threshold=0.9):
    W = np.asarray(W_dec, np.float64)
    A = np.asarray(atoms, np.float64)
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    best = (A @ W.T).max(axis=1)
    return best.mean(), (best > threshold).mean()


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_planted_run_reports_recovery_saves_and_resumes(tmp_path, data_dir):
    cfg = dict(TINY, planted_config="small", data_dir=data_dir, ckpt_every=20, log_every=10)
    summary = ts.train_and_evaluate(ts.TrainSAEConfig.create(dict(cfg, steps=20)), tmp_path)
    m = summary["metrics"]
    for key in ("fvu", "explained_variance", "l0", "dead_fraction", "mmcs", "recovered_fraction"):
        assert key in m, key
    assert abs(m["fvu"] + m["explained_variance"] - 1.0) < 1e-9
    assert 0.0 <= m["l0"] <= 3.0
    # the saved SAE is the trained one: its recovery, computed here in NumPy, is the reported one
    model = sae.load_sae(tmp_path / "sae")
    assert type(model) is sae.TopKSAE and model.k == 3
    atoms = data.planted_dictionary_atoms(data_dir=data_dir, config="small")
    mmcs, rec = np_recovered(model.W_dec[...], atoms)
    assert abs(mmcs - m["mmcs"]) < 1e-5 and abs(rec - m["recovered_fraction"]) < 1e-9
    report = (tmp_path / "report.md").read_text()
    assert "MMCS" in report and "recovered" in report and "density.png" in report
    assert f"| {summary['top_examples'][0]['latent']} |" in report
    assert (tmp_path / "density.png").read_bytes()[:4] == b"\x89PNG"
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "step" in r] == [10, 20]
    for t in summary["top_examples"]:
        assert all(0 <= r < 4096 for r in t["rows"])
    members = [j for f in summary["families"] for j in f]
    assert len(members) == len(set(members)) and all(0 <= j < 32 for j in members)
    assert ("## Feature families" in report) == bool(summary["families"])

    # a second run with more steps continues from the step-20 checkpoint
    again = ts.train_and_evaluate(ts.TrainSAEConfig.create(dict(cfg, steps=25)), tmp_path)
    assert again["timings"]["steps_run"] == 5
    steps = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "step" in r]
    assert steps == [10, 20, 25]
    ckpts = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert ckpts == [20, 25]


def _batch_rows(n, batch_size, seed, step):
    """Row indices of global batch ``step`` of the seeded pipeline."""
    return data.make_pipeline({"i": np.arange(n)}, batch_size=batch_size, seed=seed).batch_at(step)[
        "i"
    ]


def test_nan_batch_stops_with_its_index_and_no_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(640, 8)).astype(np.float32)
    row = int(_batch_rows(640, 64, 0, 1)[5])  # first seen in batch 1 (0-based)
    assert row not in _batch_rows(640, 64, 0, 0)
    x[row, 5] = np.nan
    path = tmp_path / "emb.npy"
    np.save(path, x)
    cfg = ts.TrainSAEConfig.create(dict(TINY, source=str(path), steps=40, ckpt_every=1))
    with pytest.raises(ValueError, match=r"Batch 1 \(0-based"):
        ts.train_and_evaluate(cfg, tmp_path / "run")
    ckpts = [p.name for p in (tmp_path / "run/checkpoints").iterdir() if p.name[0].isdigit()]
    assert ckpts == ["1"]  # step 1 was saved; the NaN batch would have made step 2
    assert not (tmp_path / "run/sae").exists()


def test_npy_is_memory_mapped_and_npz_key(tmp_path):
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "b.npz", emb=x, other=x[:2])
    emb = ts._Embeddings(ts.TrainSAEConfig.create(dict(source=str(tmp_path / "a.npy"))))
    assert isinstance(emb.columns["x"], np.memmap) and (emb.n, emb.d_in) == (20, 3)
    np.testing.assert_array_equal(emb.rows(np.array([3, 7])), x[[3, 7]])
    emb = ts._Embeddings(
        ts.TrainSAEConfig.create(dict(source=str(tmp_path / "b.npz"), npz_key="emb"))
    )
    assert isinstance(emb.columns["x"], np.memmap)
    np.testing.assert_array_equal(emb.rows(np.array([0, 19])), x[[0, 19]])
    with pytest.raises(ValueError, match=r"holds the arrays \['emb', 'other'\]; pass npz_key"):
        ts._Embeddings(ts.TrainSAEConfig.create(dict(source=str(tmp_path / "b.npz"))))


def test_tfds_source_reads_the_feature(data_dir):
    emb = ts._Embeddings(
        ts.TrainSAEConfig.create(
            dict(source="tfds:planted_dictionary:test", planted_config="small", data_dir=data_dir)
        )
    )
    x = data.load_arrays("planted_dictionary", "test", data_dir=data_dir, config="small")["x"]
    assert (emb.n, emb.d_in) == x.shape
    np.testing.assert_array_equal(emb.rows(np.array([5, 0, 1000])), x[[5, 0, 1000]])
    batch = next(iter(emb.pipeline(batch_size=8, seed=0, start_step=0)))
    assert emb.batch_array(batch).shape == (8, 16)
    with pytest.raises(ValueError, match="no feature 'emb'; its features are"):
        ts._Embeddings(
            ts.TrainSAEConfig.create(
                dict(
                    source="tfds:planted_dictionary:test",
                    planted_config="small",
                    data_dir=data_dir,
                    feature="emb",
                )
            )
        )


def test_wrong_rank_file_and_unknown_key_exit_2(tmp_path, capsys):
    np.save(tmp_path / "cube.npy", np.zeros((4, 3, 2), np.float32))
    workdir = tmp_path / "out"
    assert ts.main(["--workdir", str(workdir), f"source={tmp_path / 'cube.npy'}"]) == 2
    err = capsys.readouterr().err
    assert "shape [4, 3, 2] (rank 3)" in err and "rank-2 [rows, dim]" in err
    assert not workdir.exists()
    assert ts.main(["--workdir", str(workdir), "stepz=3"]) == 2
    err = capsys.readouterr().err
    assert "Unknown config key 'stepz'" in err
    with pytest.raises(ValueError, match=r"k=40.*at most d_sae=32"):
        ts.TrainSAEConfig.create(dict(d_sae=32, k=40))
    with pytest.raises(ValueError, match="variant='sparse'"):
        ts.TrainSAEConfig.create(dict(variant="sparse"))


def test_divergence_stops_the_run_and_damaged_steps_are_skipped(tmp_path, capsys):
    """lr=1e12 stops with exit code 3 and keeps only finite checkpoints; a re-run that stops
    before the diverging step resumes from the newest intact checkpoint (after skipping a
    damaged step with one warning line) and says so on stdout, which is not a terminal here."""
    x = np.random.default_rng(0).normal(size=(640, 8)).astype(np.float32)
    np.save(tmp_path / "emb.npy", x)
    run = tmp_path / "run"
    argv = ["--workdir", str(run), f"source={tmp_path / 'emb.npy'}", "d_sae=32", "k=3"]
    argv += ["batch_size=64", "lr_warmup=2", "ckpt_every=1", "log_every=1"]
    argv += ["eval_rows=256", "lr=1e12"]
    assert ts.main(argv + ["steps=12"]) == 3
    err = " ".join(capsys.readouterr().err.split())
    assert "Training diverged at step 3: loss is not finite" in err
    assert "last good checkpoint, step 2" in err and str(run / "checkpoints") in err
    steps = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == ["1", "2"]
    assert not (run / "report.md").exists() and not (run / "sae").exists()
    logged = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in logged] == [1, 2] and all(np.isfinite(r["loss"]) for r in logged)

    # damage step 2 in place: it is skipped with one warning line, step 1 is resumed
    victim = max(
        (p for p in (run / "checkpoints/2").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    data = bytearray(victim.read_bytes())
    for i in range(0, len(data), max(1, len(data) // 64)):
        data[i] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.warns(CheckpointWarning) as record:
        assert ts.main(argv + ["steps=2"]) == 0
    out, err = capsys.readouterr()
    assert f"train_sae: resumed from step 1 ({run / 'checkpoints'})" in out
    assert err == ""  # no traceback from orbax or TensorStore
    (message,) = [str(r.message) for r in record if r.category is CheckpointWarning]
    assert message.startswith("Checkpoint step 2 ") and "damaged on disk" in message
    # the experiments print each warning on one line while they run, and give the process its
    # own formatter back when they return
    from jaxemb.experiment._config import _one_line_warning

    assert warnings.formatwarning is not _one_line_warning
    line = _one_line_warning(message, CheckpointWarning, "x.py", 1)
    assert line.count("\n") == 1 and line.startswith("warning: Checkpoint step 2 ")
    summary = read_jsonl(run / "metrics.jsonl")[-1]
    assert summary["final"] is True and summary["steps"] == 2
