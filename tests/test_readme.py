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
