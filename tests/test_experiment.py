"""The shared run machinery: metrics log, training loop, divergence guard, resume."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxemb.checkpoint import Checkpointer, DivergenceError
from jaxemb.experiment import MetricsLog, resume, train_loop


def test_metrics_log_is_on_disk_line_by_line(tmp_path):
    path = tmp_path / "sub" / "metrics.jsonl"
    log = MetricsLog(path)
    log.write({"step": 1, "loss": np.float32(0.5), "w": jnp.arange(2)})
    # another reader sees the line while the log is still open (a kill loses nothing)
    assert json.loads(path.read_text()) == {"step": 1, "loss": 0.5, "w": [0, 1]}
    log.write({"step": 2, "loss": 0.25})
    log.close()
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')  # a line cut short by a kill
    assert [r["step"] for r in MetricsLog.read(path)] == [1, 2]
    assert MetricsLog.read(tmp_path / "missing.jsonl") == []
    with pytest.raises(ValueError, match="record must be a dict"):
        MetricsLog(path).write([1, 2])


def _step(state, batch, step):
    """A toy update: the state is a running sum; its loss turns NaN at the batch NaN."""
    new = {"w": state["w"] + batch}
    return new, {"loss": jnp.sum(new["w"]), "step_seen": step}


def test_loop_logs_saves_and_resumes(tmp_path, capsys):
    batches = [jnp.full((3,), float(i)) for i in range(10)]
    ckpt = Checkpointer(tmp_path / "ck", save_every=4)
    with MetricsLog(tmp_path / "m.jsonl") as log:
        state, history = train_loop(
            _step,
            {"w": jnp.zeros(3)},
            iter(batches),
            steps=10,
            log_every=3,
            metrics_log=log,
            checkpointer=ckpt,
            saveable=lambda s, done: {"w": s["w"], "pos": done},
            extra_log=lambda done: {"lr": 0.1 * done},
        )
    ckpt.close()
    assert [r["step"] for r in history] == [3, 6, 9, 10]
    np.testing.assert_allclose(history[-1]["lr"], 1.0)
    # the loss logged at step s is 3 · Σ_{i<s} i, computed here independently
    for r in history:
        assert r["loss"] == 3 * sum(range(r["step"])) and r["step_seen"] == r["step"] - 1
    assert MetricsLog.read(tmp_path / "m.jsonl") == history
    with Checkpointer(tmp_path / "ck", save_every=4) as again:
        assert again.all_steps() == [4, 8, 10]
        restored, start = resume(again, {"w": jnp.zeros(3), "pos": 0}, program="demo")
    assert start == 10 and restored["pos"] == 10
    np.testing.assert_array_equal(restored["w"], np.asarray(state["w"]))
    assert capsys.readouterr().out == f"demo: resumed from step 10 ({tmp_path / 'ck'})\n"
    with Checkpointer(tmp_path / "fresh", save_every=1) as fresh:
        assert resume(fresh, {"w": 0}, program="demo") == ({"w": 0}, 0)
    assert capsys.readouterr().out == ""  # nothing to say for a fresh run


def test_loop_stops_a_diverged_run_and_keeps_the_last_good_checkpoint(tmp_path):
    batches = [jnp.ones(2)] * 5 + [jnp.array([jnp.nan, 1.0])] + [jnp.ones(2)] * 4
    ckpt = Checkpointer(tmp_path / "ck", save_every=2)
    with MetricsLog(tmp_path / "m.jsonl") as log, pytest.raises(DivergenceError) as info:
        train_loop(
            _step,
            {"w": jnp.zeros(2)},
            iter(batches),
            steps=10,
            log_every=5,
            metrics_log=log,
            checkpointer=ckpt,
            saveable=lambda s, done: s,
        )
    ckpt.close()
    message = str(info.value)
    # step 6 (the NaN batch) is a save step: caught there, before anything is written
    assert "diverged at step 6: loss is not finite" in message
    assert "last good checkpoint, step 4" in message and "\n" not in message
    with Checkpointer(tmp_path / "ck", save_every=2) as again:
        assert again.all_steps() == [2, 4]
    assert [r["step"] for r in MetricsLog.read(tmp_path / "m.jsonl")] == [5]


def test_loop_arguments_are_checked(tmp_path):
    with MetricsLog(tmp_path / "m.jsonl") as log:
        with pytest.raises(ValueError, match="saveable is required"):
            train_loop(
                _step,
                {},
                iter([]),
                steps=1,
                log_every=1,
                metrics_log=log,
                checkpointer=Checkpointer(tmp_path / "c", save_every=1),
            )
        with pytest.raises(ValueError, match="log_every must be >= 1"):
            train_loop(_step, {}, iter([]), steps=1, log_every=0, metrics_log=log)
