"""``metrics.jsonl``: one JSON object per line, on disk as soon as it is written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray, jax.Array)):
        return np.asarray(value).tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


class MetricsLog:
    """An append-only JSON-lines log whose every line is flushed to the OS when written.

    A run killed at any moment keeps every line written before the kill, so a resumed run's
    log (and the loss curve drawn from it) has no gap. Re-reading the file with :meth:`read`
    skips a last line cut short by the kill.

    Args:
      path: the ``.jsonl`` file; created (with its folder) if missing, appended to otherwise.

    Examples:
      >>> import tempfile, pathlib
      >>> from jaxemb.experiment import MetricsLog
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
      >>> with MetricsLog(path) as log:
      ...     log.write({"step": 10, "loss": 0.5})
      ...     log.write({"step": 20, "loss": 0.25})
      >>> MetricsLog.read(path)
      [{'step': 10, 'loss': 0.5}, {'step': 20, 'loss': 0.25}]
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        """Appends ``record`` as one line and flushes it."""
        if not isinstance(record, dict):
            raise ValueError(f"record must be a dict; got {type(record).__name__}")
        self._file.write(json.dumps(record, default=_plain) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Closes the file (idempotent)."""
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @staticmethod
    def read(path: str | os.PathLike) -> list[dict[str, Any]]:
        """Every complete record of a log (``[]`` when the file does not exist)."""
        path = Path(path)
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if isinstance(record, dict):
                out.append(record)
        return out
