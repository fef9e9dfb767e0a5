"""Where datasets live on disk, and the checks that stop early with a useful message."""

from __future__ import annotations

import contextlib
import os
import pathlib

ENV_VAR = "JAXEMB_DATA_DIR"


def default_data_dir() -> pathlib.Path:
    """Returns the directory where jaxemb prepares and reads TFDS datasets.

    It is ``$JAXEMB_DATA_DIR`` when that environment variable is set and not empty, otherwise
    ``~/.cache/jaxemb/tensorflow_datasets``. The directory is not created here; the embedded
    datasets create it when they are first prepared.

    Returns:
      An absolute ``pathlib.Path`` (``~`` expanded).

    Examples:
      >>> import os
      >>> from unittest import mock
      >>> from jaxemb import data
      >>> with mock.patch.dict(os.environ, {"JAXEMB_DATA_DIR": "/tmp/jaxemb-example-data"}):
      ...     print(data.default_data_dir())
      /tmp/jaxemb-example-data
      >>> with mock.patch.dict(os.environ, {"JAXEMB_DATA_DIR": ""}):  # empty: the default
      ...     print(data.default_data_dir().parts[-3:])
      ('.cache', 'jaxemb', 'tensorflow_datasets')

    References:
      TFDS's own default is ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``
      (``tfds.core.constants.DATA_DIR``); jaxemb keeps its prepared data apart from it.
    """
    value = os.environ.get(ENV_VAR, "")
    base = pathlib.Path(value) if value else pathlib.Path("~/.cache/jaxemb/tensorflow_datasets")
    return base.expanduser().absolute()


def resolve_data_dir(data_dir: str | os.PathLike | None) -> pathlib.Path:
    """``data_dir`` as an absolute path, or the default when ``None``."""
    if data_dir is None:
        return default_data_dir()
    if not isinstance(data_dir, (str, os.PathLike)):
        raise ValueError(
            f"data_dir must be a path (str or os.PathLike) or None; got {type(data_dir).__name__}"
        )
    return pathlib.Path(data_dir).expanduser().absolute()


def _where_hint() -> str:
    return (
        f"Pass data_dir=... to point at another directory, or set ${ENV_VAR} "
        f"(the default is ~/.cache/jaxemb/tensorflow_datasets)."
    )


def check_readable_dir(path: pathlib.Path, *, purpose: str) -> None:
    """Raises a one-paragraph ``ValueError`` when ``path`` exists but cannot be read as a directory.

    A path that does not exist passes (the caller decides whether to create it).
    """
    if not path.exists():
        return
    if not path.is_dir():
        raise ValueError(
            f"The data directory {path} exists but is not a directory (it is a file or another "
            f"kind of entry), so {purpose} cannot be read from or written to it. Remove or "
            f"rename that entry, or choose another location. {_where_hint()}"
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise ValueError(
            f"The data directory {path} exists but cannot be read by this user, so {purpose} "
            f"cannot be loaded from it. Fix its permissions (for example `chmod u+rx {path}`) "
            f"or choose another location. {_where_hint()}"
        )


def ensure_writable_dir(path: pathlib.Path, *, purpose: str) -> None:
    """Creates ``path`` if needed; raises a one-paragraph ``ValueError`` if it cannot be written."""
    check_readable_dir(path, purpose=purpose)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(
            f"The data directory {path} does not exist and could not be created ({err}), so "
            f"{purpose} cannot be prepared there. Create it yourself with write permission, or "
            f"choose a location you can write to. {_where_hint()}"
        ) from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(
            f"The data directory {path} is not writable by this user, and {purpose} has not "
            f"been prepared in it yet (preparation writes a few megabytes there on first use). "
            f"Make it writable (for example `chmod u+w {path}`), prepare the dataset once as a "
            f"user who can write there, or choose another location. {_where_hint()}"
        )


@contextlib.contextmanager
def preparation_lock(path: pathlib.Path, name: str):
    """An inter-process lock so that concurrent first uses prepare a dataset only once."""
    import filelock

    lock = filelock.FileLock(str(path / f".jaxemb-{name.replace('/', '-')}.lock"))
    with lock:
        yield
