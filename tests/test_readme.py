"""The README's import example runs as written (on the 8-device test mesh)."""

import re
from pathlib import Path

import numpy as np


def test_readme_example_runs(capsys):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.strip()
    assert np.isfinite(float(printed)) and float(printed) > 0
    assert len(namespace["x1"].sharding.device_set) == 8


def test_readme_compression_example_runs(capsys):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Compress and search") :]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    capsys.readouterr()
    np.testing.assert_array_equal(np.asarray(namespace["ids"])[:, 0], np.arange(5))
    np.testing.assert_array_equal(np.asarray(namespace["pq_ids"])[:, 0], np.arange(5))
