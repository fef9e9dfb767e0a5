"""``jaxemb embed``: texts file in, .npy out, sharded over the 8 test devices."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from encoder_fixtures import (
    SENTENCES,
    np_bert,
    np_sentence_embeddings,
    tokenize,
    write_bert,
    write_sentence_transformer,
)

from jaxemb.cli import main


@pytest.fixture(scope="module")
def st_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("st")
    cfg, tensors, tok, dts = write_sentence_transformer(d, dense=[(8, "Tanh")], max_seq_length=16)
    return d, cfg, tensors, tok, dts


def test_embed_writes_sentence_embeddings(st_model, tmp_path, capsys):
    d, cfg, tensors, tok, dts = st_model
    texts = SENTENCES + ["", "ünïcode text"]
    (tmp_path / "texts.txt").write_text("\r\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    rc = main(
        [
            "embed",
            "--model",
            str(d),
            "--input",
            str(tmp_path / "texts.txt"),
            "--output",
            str(out),
            "--batch-size",
            "3",
        ]
    )
    assert rc == 0
    got = np.load(out)
    want = np_sentence_embeddings(
        cfg, tensors, tok, dts, texts, modes=("mean",), normalize=True, max_seq_length=16
    )
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert "10 x 8" in capsys.readouterr().out


def test_embed_plain_hf_directory_with_cls_pooling(tmp_path):
    cfg, tensors, tok = write_bert(tmp_path / "bert", seed=3)
    (tmp_path / "t.txt").write_text("\n".join(SENTENCES[:3]), encoding="utf-8")
    out = tmp_path / "e.npy"
    assert (
        main(
            [
                "embed",
                "--model",
                str(tmp_path / "bert"),
                "--input",
                str(tmp_path / "t.txt"),
                "--output",
                str(out),
                "--pooling",
                "cls",
            ]
        )
        == 0
    )
    ids, mask = tokenize(tok, SENTENCES[:3], 40)
    np.testing.assert_allclose(
        np.load(out), np_bert(tensors, cfg, ids, mask)[-1][:, 0], atol=1e-4, rtol=0
    )


def test_embed_bad_inputs_write_nothing(st_model, tmp_path, capsys):
    d = st_model[0]
    out = tmp_path / "o.npy"
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "latin1.txt").write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    (tmp_path / "good.txt").write_text("a\nb\n")
    cases = [
        (["--input", str(tmp_path / "empty.txt")], "is empty"),
        (["--input", str(tmp_path / "latin1.txt")], "line 2 is not valid UTF-8"),
        (["--input", str(tmp_path / "missing.txt")], "not found"),
    ]
    for extra, message in cases:
        assert main(["embed", "--model", str(d), "--output", str(out), *extra]) == 2
        assert message in " ".join(capsys.readouterr().err.split())
    assert (
        main(
            [
                "embed",
                "--model",
                str(tmp_path),
                "--input",
                str(tmp_path / "good.txt"),
                "--output",
                str(out),
            ]
        )
        == 2
    )
    assert "no config.json" in " ".join(capsys.readouterr().err.split())
    assert (
        main(
            [
                "embed",
                "--model",
                str(d),
                "--input",
                str(tmp_path / "good.txt"),
                "--output",
                str(out),
                "--batch-size",
                "0",
            ]
        )
        == 2
    )
    assert not out.exists() and not list(tmp_path.glob(".o.npy*"))


def test_embed_unwritable_output_fails_before_embedding(st_model, tmp_path, capsys, monkeypatch):
    """Exit 2 with one paragraph, before the model is even loaded."""
    import jaxemb.cli as cli

    (tmp_path / "good.txt").write_text("a\nb\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded although the output cannot be written")

    monkeypatch.setattr(cli, "_load_embedder", never)
    target = locked if not os.access(locked, os.W_OK) else Path("/proc")  # root writes anyway
    try:
        argv = ["embed", "--model", str(st_model[0]), "--input", str(tmp_path / "good.txt")]
        assert main([*argv, "--output", str(target / "emb.npy")]) == 2
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err
    assert "not writable" in " ".join(err.split()) and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3  # one wrapped paragraph
