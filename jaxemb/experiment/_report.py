"""The report writer: a Markdown file with tables and PNG figures, written atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxemb.analysis import plots


class Report:
    """A Markdown report built section by section, with its figures saved beside it.

    The one writer of every experiment's ``report.md`` and of ``jaxemb analyze``: headings,
    paragraphs, bullet lists, tables (left-aligned first column, right-aligned numbers by
    default) and PNG figures (saved when added, linked from the report). :meth:`write` replaces
    the file atomically, so a reader never sees a half-written report.

    Args:
      directory: where ``report.md`` and the figures go (created on the first write).
      title: the report's title (a level-1 heading).

    Examples:
      >>> import tempfile, pathlib
      >>> from jaxemb.analysis import plots
      >>> from jaxemb.experiment import Report
      >>> out = pathlib.Path(tempfile.mkdtemp())
      >>> report = Report(out, "Demo")
      >>> report.table(["dims", "accuracy"], [[8, "0.912"], [64, "0.965"]])
      >>> _ = report.figure(plots.loss_curve([1, 2], [1.0, 0.5]), "loss.png", "training loss")
      >>> print(report.write().read_text())
      # Demo
      <BLANKLINE>
      | dims | accuracy |
      |---|---:|
      | 8 | 0.912 |
      | 64 | 0.965 |
      <BLANKLINE>
      ![training loss](loss.png)
      <BLANKLINE>
    """

    def __init__(self, directory: str | os.PathLike, title: str):
        self.directory = Path(directory)
        self._lines: list[str] = [f"# {title}", ""]

    def heading(self, text: str, level: int = 2) -> None:
        """A section heading (``level`` 2 to 6)."""
        if not 2 <= level <= 6:
            raise ValueError(f"level must be in [2, 6]; got {level}")
        self._lines += [f"{'#' * level} {text}", ""]

    def text(self, paragraph: str) -> None:
        """A paragraph."""
        self._lines += [paragraph, ""]

    def bullets(self, items: Sequence[str]) -> None:
        """A bullet list."""
        self._lines += [f"- {item}" for item in items] + [""]

    def table(
        self, header: Sequence[str], rows: Sequence[Sequence[Any]], *, align: str | None = None
    ) -> None:
        """A table; ``align`` is one of ``l``/``r``/``c`` per column (default ``l`` then ``r``)."""
        n = len(header)
        align = align or ("l" + "r" * (n - 1))
        if len(align) != n or set(align) - set("lrc"):
            raise ValueError(f"align must hold one of l/r/c per column ({n}); got {align!r}")
        for i, row in enumerate(rows):
            if len(row) != n:
                raise ValueError(f"row {i} has {len(row)} cells; the header has {n}")
        marks = {"l": "---", "r": "---:", "c": ":---:"}
        self._lines.append("| " + " | ".join(map(str, header)) + " |")
        self._lines.append("|" + "|".join(marks[a] for a in align) + "|")
        self._lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
        self._lines.append("")

    def figure(self, fig: Any, filename: str, caption: str) -> Path:
        """Saves ``fig`` as ``directory/filename`` (PNG) and links it; returns the path."""
        path = plots.save(fig, self.directory / filename)
        self.image(filename, caption)
        return path

    def image(self, filename: str, caption: str) -> None:
        """Links an image already in the directory."""
        self._lines += [f"![{caption}]({filename})", ""]

    def markdown(self) -> str:
        """The report's text so far."""
        return "\n".join(self._lines)

    def write(self, filename: str = "report.md") -> Path:
        """Writes the report atomically; returns its path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / filename
        tmp = path.with_name(f".{filename}.{os.getpid()}.tmp")
        tmp.write_text(self.markdown(), encoding="utf-8")
        os.replace(tmp, path)
        return path
