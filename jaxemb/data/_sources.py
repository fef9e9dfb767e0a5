"""Random-access TFDS data sources; jaxemb's embedded datasets are prepared on first use."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxemb.data import _code_search, _digits, _paths, _planted, _python_docs

EMBEDDED_BUILDERS = {
    "digits": _digits.Digits,
    "planted_dictionary": _planted.PlantedDictionary,
    "python_code_search": _code_search.PythonCodeSearch,
    "python_docs": _python_docs.PythonDocs,
}


def _resolve_config(name: str, config: Any) -> Any:
    cls = EMBEDDED_BUILDERS[name]
    if config is None:
        return None
    if not cls.BUILDER_CONFIGS:
        raise ValueError(
            f"config must be None for dataset {name!r} (it has no configs); got {config!r}"
        )
    known = {c.name: c for c in cls.BUILDER_CONFIGS}
    if isinstance(config, str):
        if config not in known:
            raise ValueError(f"config for {name!r} must be one of {sorted(known)}; got {config!r}")
        return config
    if name == "planted_dictionary" and isinstance(config, _planted.PlantedDictionaryConfig):
        fields = _planted.config_fields
        if config.name in known and fields(config) != fields(known[config.name]):
            raise ValueError(
                f"config {config.name!r} is the name of a built-in {name} config, but its "
                f"parameters differ from the built-in ones; give your config another name, e.g. "
                f"PlantedDictionaryConfig(name='my_variant', ...)"
            )
        return config
    objects = " or a PlantedDictionaryConfig" if name == "planted_dictionary" else ""
    raise ValueError(
        f"config for {name!r} must be None or a config name ({sorted(known)}){objects}; "
        f"got {type(config).__name__}"
    )


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
    # TFDS renames the finished version directory into place, so its metadata file marks a
    # complete preparation (builder.is_prepared() logs a warning for every missing folder).
    return (builder.data_path / "dataset_info.json").is_file()


def _prepare_quietly(builder: tfds.core.DatasetBuilder) -> None:
    from tensorflow_datasets.core.utils import tqdm_utils

    print(
        f"jaxemb.data: preparing {builder.name} into {builder.data_path} (first use)...",
        file=sys.stderr,
        flush=True,
    )
    was_active = tqdm_utils._active  # noqa: SLF001 - restore the user's progress-bar setting
    tqdm_utils.display_progress_bar(False)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints size banners to stdout
            builder.download_and_prepare(
                file_format="array_record",
                download_config=tfds.download.DownloadConfig(
                    compute_stats=tfds.download.ComputeStatsMode.SKIP
                ),
            )
    finally:
        tqdm_utils.display_progress_bar(was_active)


def embedded_builder(name: str, *, data_dir=None, config=None) -> tfds.core.DatasetBuilder:
    """The builder of an embedded dataset, prepared (under an inter-process lock) if needed."""
    root = _paths.resolve_data_dir(data_dir)
    config = _resolve_config(name, config)
    cls = EMBEDDED_BUILDERS[name]
    purpose = f"the embedded dataset {name!r}"
    _paths.check_readable_dir(root, purpose=purpose)

    def make():
        kwargs = {"data_dir": os.fspath(root), "file_format": "array_record"}
        if config is not None:
            kwargs["config"] = config
        return cls(**kwargs)

    builder = make()
    if not _is_prepared(builder):
        _paths.ensure_writable_dir(root, purpose=purpose)
        with _paths.preparation_lock(root, name):
            builder = make()  # Another process may have prepared it while we waited.
            if not _is_prepared(builder):
                _prepare_quietly(builder)
                builder = make()
    if isinstance(builder.builder_config, _planted.PlantedDictionaryConfig):
        saved = builder.data_path / _planted.CONFIG_FILENAME
        want = json.dumps(_planted.config_fields(builder.builder_config), sort_keys=True)
        if saved.exists() and json.loads(saved.read_text()) != json.loads(want):
            raise ValueError(
                f"The data directory {builder.data_path} holds a {name} dataset prepared with "
                f"config {builder.builder_config.name!r} but different parameters "
                f"({saved.read_text()}) from the ones requested ({want}). Give the new config "
                f"another name, or delete that directory to prepare it again."
            )
    return builder


def _check_split(split: Any, available: Sequence[str], name: str) -> None:
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string such as 'train'; got {split!r}")
    base = re.split(r"[\[+]", split, maxsplit=1)[0].strip()
    if base not in available:
        raise ValueError(
            f"split {split!r} is not a split of dataset {name!r}; its splits are "
            f"{sorted(available)}. Slices such as 'train[:10%]' or 'train[:1000]' are accepted."
        )


def data_source(name: str, split: str, *, data_dir=None, config=None) -> Sequence[Any]:
    """Returns a random-access source of decoded examples for one split of a TFDS dataset.

    jaxemb's embedded datasets (``"digits"``, ``"planted_dictionary"``,
    ``"python_code_search"``, ``"python_docs"``) are prepared into ``data_dir`` on first use
    (about 1 to 10 s each; safe when several processes start together).
    Any other name goes through ``tfds.data_source`` and must be a TFDS dataset prepared (or
    preparable) in array_record format in ``data_dir``. Each element is a dict of NumPy values.

    Args:
      name: ``"digits"``, ``"planted_dictionary"``, ``"python_code_search"``,
        ``"python_docs"`` or a TFDS dataset name (e.g. ``"mnist"``).
      split: a split name (``"train"``, ``"test"``) or a TFDS slice such as ``"train[:10%]"``.
      data_dir: the TFDS data directory; ``None`` means ``default_data_dir()``.
      config: builder config: for ``planted_dictionary`` a config name (``"default"``,
        ``"small"``) or a ``PlantedDictionaryConfig``; for ``python_docs`` ``"all"`` (the
        default) or ``"stdlib"``; for TFDS datasets a config name.

    Returns:
      A sequence (``len`` and ``[i]``) of example dicts, e.g. an ``ArrayRecordDataSource``.

    Raises:
      ValueError: a one-paragraph message for an unknown dataset or split, or a data directory
        that is a file, cannot be read, cannot be written when preparation is needed, or (for
        downloadable datasets) does not exist.

    Examples:
      >>> import tempfile
      >>> from jaxemb import data
      >>> tmp = tempfile.mkdtemp()
      >>> train = data.data_source("digits", "train", data_dir=tmp)
      >>> len(train), sorted(train[0])
      (1438, ['image', 'index', 'label'])
      >>> train[0]["image"].shape, train[0]["image"].dtype
      ((8, 8, 1), dtype('uint8'))

    References:
      ``tfds.data_source`` (TensorFlow Datasets), whose semantics it follows for non-embedded
      datasets; the digits come from ``sklearn.datasets.load_digits``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty dataset name such as 'digits'; got {name!r}")
    if name in EMBEDDED_BUILDERS:
        builder = embedded_builder(name, data_dir=data_dir, config=config)
        _check_split(split, list(builder.info.splits.keys()), name)
        return builder.as_data_source(split=split)
    return _tfds_source(name, split, data_dir=data_dir, config=config)


def _tfds_source(name: str, split: str, *, data_dir, config) -> Sequence[Any]:
    root = _paths.resolve_data_dir(data_dir)
    _paths.check_readable_dir(root, purpose=f"the dataset {name!r}")
    if not root.exists():
        raise ValueError(
            f"The data directory {root} does not exist, so the dataset {name!r} cannot have been "
            f"prepared there. Prepare it once in array_record format (for example `tfds build "
            f"{name} --data_dir {root} --file_format array_record` on a machine with network "
            f"access), or create the directory to let TFDS download and prepare it on first "
            f"use. The embedded datasets {sorted(EMBEDDED_BUILDERS)} need no download. "
            f"{_paths._where_hint()}"
        )
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string such as 'train'; got {split!r}")
    if config is not None and not isinstance(config, str):
        raise ValueError(
            f"config for the TFDS dataset {name!r} must be a config name or None; "
            f"got {type(config).__name__}"
        )
    full_name = name if config is None else f"{name}/{config}"
    try:
        return tfds.data_source(
            full_name,
            split=split,
            data_dir=os.fspath(root),
            builder_kwargs={"file_format": "array_record"},
        )
    except tfds.core.registered.DatasetNotFoundError as err:
        raise ValueError(
            f"There is no dataset named {name!r}: it is neither one of jaxemb's embedded "
            f"datasets {sorted(EMBEDDED_BUILDERS)} nor a TFDS dataset (see "
            f"https://www.tensorflow.org/datasets/catalog/overview). Check the spelling. "
            f"(TFDS said: {str(err).splitlines()[0]})"
        ) from err
    except Exception as err:  # noqa: BLE001 - every failure gets the same guidance
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"Could not open split {split!r} of the TFDS dataset {full_name!r} in {root}: "
            f"{type(err).__name__}: {first}. Check that the split exists and that the dataset "
            f"is prepared there in array_record format (for example `tfds build {name} "
            f"--data_dir {root} --file_format array_record` on a machine with network access); "
            f"the embedded datasets {sorted(EMBEDDED_BUILDERS)} need no download."
        ) from err


def load_arrays(name: str, split: str, *, data_dir=None, config=None) -> dict[str, np.ndarray]:
    """Reads a whole split into memory as stacked NumPy arrays, one per feature.

    Feature names and dtypes: ``digits`` gives ``image`` uint8 [N, 8, 8, 1] (values 0..16),
    ``label`` int64 [N] and ``index`` int64 [N] (row in the embedded csv); ``planted_dictionary``
    gives ``x`` float32 [N, d_in], ``atoms`` int32 [N, max_active] (active atom indices, padded
    with -1) and ``coefficients`` float32 [N, max_active] (their magnitudes, padded with 0);
    ``python_docs`` gives ``text``, ``package``, ``module`` and ``object``, UTF-8 byte strings
    (NumPy ``bytes_`` arrays [N]; ``np.char.decode(a, "utf-8")`` gives ``str``).

    Args:
      name: dataset name, as for ``data_source``.
      split: split name or slice, as for ``data_source``.
      data_dir: the TFDS data directory; ``None`` means ``default_data_dir()``.
      config: builder config, as for ``data_source``.

    Returns:
      A dict from feature name to an array whose leading axis is the example, in stored order.

    Examples:
      >>> import tempfile
      >>> from jaxemb import data
      >>> arrays = data.load_arrays("digits", "test", data_dir=tempfile.mkdtemp())
      >>> {k: (v.dtype.name, v.shape) for k, v in sorted(arrays.items())}
      {'image': ('uint8', (359, 8, 8, 1)), 'index': ('int64', (359,)), 'label': ('int64', (359,))}

    References:
      Equivalent to ``tfds.as_numpy(tfds.load(name, split=split, batch_size=-1))`` without
      TensorFlow.
    """
    source = data_source(name, split, data_dir=data_dir, config=config)
    n = len(source)
    if n == 0:
        raise ValueError(f"split {split!r} of dataset {name!r} is empty; nothing to load")
    getitems = getattr(source, "__getitems__", None)
    examples = getitems(list(range(n))) if getitems else [source[i] for i in range(n)]
    keys = sorted(examples[0])
    return {k: np.stack([np.asarray(ex[k]) for ex in examples]) for k in keys}


def planted_dictionary_atoms(*, data_dir=None, config=None) -> np.ndarray:
    """Returns the known dictionary of ``planted_dictionary``: float32 [n_atoms, d_in], unit rows.

    The atoms are read from ``dictionary_atoms.npy`` saved next to the prepared dataset (which
    is prepared first if needed); they equal the atoms regenerated from the config's seed.

    Args:
      data_dir: the TFDS data directory; ``None`` means ``default_data_dir()``.
      config: ``None`` / ``"default"``, ``"small"`` or a ``PlantedDictionaryConfig``.

    Returns:
      The dictionary ``D`` such that ``x = coefficients @ D[atoms] + noise``.

    Examples:
      >>> import tempfile
      >>> import numpy as np
      >>> from jaxemb import data
      >>> atoms = data.planted_dictionary_atoms(data_dir=tempfile.mkdtemp(), config="small")
      >>> atoms.shape, atoms.dtype, bool(np.allclose(np.linalg.norm(atoms, axis=1), 1.0))
      ((32, 16), dtype('float32'), True)

    References:
      Sharkey, Braun and Millidge (2022), "Taking features out of superposition with sparse
      autoencoders" (the planted-dictionary recovery benchmark).
    """
    builder = embedded_builder("planted_dictionary", data_dir=data_dir, config=config)
    path = builder.data_path / _planted.ATOMS_FILENAME
    if not path.exists():
        raise ValueError(
            f"The prepared planted_dictionary dataset in {builder.data_path} has no "
            f"{_planted.ATOMS_FILENAME}; the directory is damaged or was prepared by other code. "
            f"Delete that directory and call again to prepare it afresh."
        )
    with path.open("rb") as f:
        return np.load(f)
