"""Tests of the ``jaxemb analyze`` command line on small synthetic .npy files."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxemb.cli import main

# ---------------------------------------------------------------------------------------------
# Independent NumPy (float64) references for a few of the reported values
# ---------------------------------------------------------------------------------------------


def np_rankme(x, eps=1e-7):
    s = np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)
    p = s / s.sum() + eps
    return np.exp(-np.sum(p * np.log(p)))


def np_anisotropy(x):
    u = np.asarray(x, np.float64)
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    c = u @ u.T
    return (c.sum() - np.trace(c)) / (len(x) * (len(x) - 1))


def np_linear_cka(x, y):
    x = np.asarray(x, np.float64) - np.mean(x, 0)
    y = np.asarray(y, np.float64) - np.mean(y, 0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def reported(text, metric):
    m = re.search(rf"^\| {re.escape(metric)} \| ([^|]+) \|", text, re.MULTILINE)
    assert m, f"{metric} missing from the report"
    return float(m.group(1))


def png(path):
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("inputs")
    y = np.repeat(np.arange(3), 30)
    means = 6.0 * rng.normal(size=(3, 8))
    x = (means[y] + rng.normal(size=(90, 8))).astype(np.float32)
    other = np.tanh(x @ rng.normal(size=(8, 5))).astype(np.float32)
    paths = {
        "emb": d / "emb.npy",
        "labels": d / "labels.npy",
        "other": d / "other.npy",
        "short_labels": d / "short_labels.npy",
        "rank3": d / "rank3.npy",
        "other_rows": d / "other_rows.npy",
        "nan": d / "nan.npy",
        "text": d / "text.npy",
        "one_class": d / "one_class.npy",
    }
    np.save(paths["emb"], x)
    np.save(paths["labels"], y.astype(np.int64))
    np.save(paths["other"], other)
    np.save(paths["short_labels"], y[:-1])
    np.save(paths["rank3"], x.reshape(90, 2, 4))
    np.save(paths["other_rows"], other[:-2])
    bad = x.copy()
    bad[[4, 17], 0] = np.nan
    np.save(paths["nan"], bad)
    paths["text"].write_text("not a numpy file")
    np.save(paths["one_class"], np.zeros(90, np.int64))
    return paths, x, y, other


def test_analyze_full_report(files, tmp_path, capsys):
    paths, x, y, other = files
    out = tmp_path / "report"
    rc = main(
        [
            "analyze",
            str(paths["emb"]),
            "--labels",
            str(paths["labels"]),
            "--other",
            str(paths["other"]),
            "--out",
            str(out),
            "--k",
            "5",
        ]
    )
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(out / "report.md")
    text = (out / "report.md").read_text()
    for metric in (
        "RankMe",
        "participation ratio",
        "anisotropy",
        "isotropy",
        "uniformity",
        "LID (MLE)",
        "LID (TwoNN)",
        "hubness skewness",
        "anti-hub fraction",
        "linear CKA",
        "linear CKA (debiased)",
        "RBF CKA",
        "kNN accuracy",
        "linear probe accuracy",
    ):
        value = reported(text, metric)
        assert np.isfinite(value), metric
    assert reported(text, "RankMe") == pytest.approx(np_rankme(x), rel=1e-3)
    assert reported(text, "anisotropy") == pytest.approx(np_anisotropy(x), rel=1e-3, abs=1e-4)
    assert reported(text, "linear CKA") == pytest.approx(np_linear_cka(x, other), rel=1e-3)
    # Well-separated blobs: both probes are perfect on the held-out 20%.
    assert reported(text, "kNN accuracy") == 1.0
    assert reported(text, "linear probe accuracy") == 1.0
    assert "18 test rows" in text  # 20% of 90
    for name in ("spectrum.png", "similarity.png", "projection.png"):
        assert png(out / name), name
        assert f"({name})" in text
    # Same-label pair counts: 3 classes of 30 -> 3 · C(30, 2) same, 4005 - 1305 different.
    assert "1305 same-label pairs" in text and "2700 different-label pairs" in text
    assert not list(out.glob(".*tmp"))


def test_analyze_without_labels_or_other(files, tmp_path):
    paths, x, _, _ = files
    out = tmp_path / "plain"
    assert main(["analyze", str(paths["emb"]), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert reported(text, "RankMe") == pytest.approx(np_rankme(x), rel=1e-3)
    assert "kNN accuracy" not in text and "CKA" not in text
    assert png(out / "spectrum.png") and png(out / "projection.png")
    assert not (out / "similarity.png").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["{missing}"], r"embeddings file not found: .*missing\.npy"),
        (["{text}"], r"embeddings .*text\.npy is not a \.npy file .*numpy\.save"),
        (["{rank3}"], r"must be a 2-D array \[N, D\] of embeddings; got shape \[90, 2, 4\]"),
        (["{nan}"], r"NaN/inf in 2 of 90 rows \(rows 4, 17\)"),
        (
            ["{emb}", "--labels", "{short_labels}"],
            r"one label per embedding row \(90\); got shape \[89\]",
        ),
        (["{emb}", "--labels", "{other}"], r"labels .* must be a 1-D array"),
        (["{emb}", "--labels", "{missing}"], r"labels file not found"),
        (["{emb}", "--other", "{other_rows}"], r"one row per embedding row \(90\); got shape"),
        (["{emb}", "--k", "0"], r"--k must be in \[1, N - 1 = 89\]"),
        (["{emb}", "--k", "90"], r"--k must be in \[1, N - 1 = 89\] for 90 embeddings; got 90"),
        (["{emb}", "--max-points", "0"], r"--max-points .* must be at least 3; got 0"),
        (["{emb}", "--labels", "{one_class}"], r"--labels .* must hold at least 2 classes"),
    ],
)
def test_analyze_bad_input_exit_code_2_and_nothing_written(files, tmp_path, capsys, extra, message):
    paths, *_ = files
    names = {k: str(v) for k, v in paths.items()}
    names["missing"] = str(tmp_path / "missing.npy")
    out = tmp_path / "out"
    argv = ["analyze"] + [a.format(**names) for a in extra] + ["--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxemb analyze: error: ")
    assert "\n\n" not in err.strip() and "Traceback" not in err  # one paragraph
    assert re.search(message, " ".join(err.split())), err
    assert not out.exists()


def test_unwritable_out_is_refused_before_any_work(files, tmp_path, capsys):
    paths, *_ = files
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # running as root: a read-only mount is not available
            locked = Path("/proc/jaxemb-report")
        assert main(["analyze", str(paths["emb"]), "--out", str(locked / "out")]) == 2
    finally:
        (tmp_path / "locked").chmod(0o700)
    err = " ".join(capsys.readouterr().err.split())
    assert "--out" in err and "not writable" in err and "Traceback" not in err


def test_usage_errors_return_2(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "x.npy")]) == 2  # --out missing
    assert "--out" in capsys.readouterr().err
    assert main([]) == 2
    assert "subcommand is required" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2


def test_console_entry_point_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "jaxemb.cli", "analyze", str(tmp_path / "none.npy"), "--out", "o"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "embeddings file not found" in proc.stderr
    assert not (tmp_path / "o").exists()
