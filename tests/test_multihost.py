"""Two local processes x 4 CPU devices equal one process x 8 devices (parallel.initialize)."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tolerances import assert_f32_close

from jaxemb import parallel
from jaxemb.parallel import initialize

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "multihost_worker.py"
TIMEOUT_S = 120


def _load_worker():
    spec = importlib.util.spec_from_file_location("multihost_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_processes(tmp_path):
    port = _free_port()
    procs, outs = [], []
    for pid in range(2):
        env = dict(os.environ)
        env.update(
            XLA_FLAGS="--xla_force_host_platform_device_count=4",
            JAX_PLATFORMS="cpu",
            JAXEMB_COORDINATOR=f"127.0.0.1:{port}",
            JAXEMB_NUM_PROCESSES="2",
            JAXEMB_PROCESS_ID=str(pid),
            PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        out = tmp_path / f"worker{pid}.json"
        log = open(tmp_path / f"worker{pid}.log", "w")
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(out)],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        outs.append(out)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = "\n".join(
        f"--- worker {i} (exit {p.returncode}) ---\n"
        + (tmp_path / f"worker{i}.log").read_text()[-3000:]
        for i, p in enumerate(procs)
    )
    if any(p.returncode != 0 for p in procs):
        pytest.fail(f"a worker failed or timed out after {TIMEOUT_S} s:\n{logs}")
    return [json.loads(o.read_text()) for o in outs]


def test_two_processes_equal_one_process(tmp_path, mesh8):
    worker = _load_worker()
    results = _run_two_processes(tmp_path)
    batch, params = worker.global_data()
    want = worker.compute(mesh8, batch, params)  # this process: all rows on 8 devices

    # the loss must actually see both halves: a half-batch loss differs
    half = {k: v[:16] for k, v in batch.items()}
    half_loss = worker.compute(parallel.make_mesh(data=8), half, params)["info_nce"]
    assert abs(half_loss - want["info_nce"]) > 1e-3

    # dropout is live in the GradCache step (so its keys had to be replayed identically)
    assert abs(want["grad_cache_step"]["loss"] - want["plain_step"]["loss"]) > 1e-4
    for r in results:
        assert (r["process_count"], r["local_devices"], r["global_devices"]) == (2, 4, 8)
        for key in ("info_nce", "ring_info_nce"):
            np.testing.assert_allclose(r[key], want[key], rtol=1e-5, err_msg=key)
        for step in ("plain_step", "grad_cache_step"):
            np.testing.assert_allclose(r[step]["loss"], want[step]["loss"], rtol=1e-5)
            for name, w in want[step]["params"].items():
                assert_f32_close(r[step]["params"][name], w, err_msg=name)
    # the single-process reference itself matches a NumPy float64 InfoNCE
    q = batch["q"] / np.linalg.norm(batch["q"], axis=1, keepdims=True)
    p = batch["p"] / np.linalg.norm(batch["p"], axis=1, keepdims=True)
    s = q.astype(np.float64) @ p.T / worker.TEMPERATURE
    ref = np.mean(np.log(np.exp(s).sum(1)) - np.diag(s))
    np.testing.assert_allclose(want["info_nce"], ref, rtol=1e-5)


@pytest.mark.parametrize(
    "args, env, match",
    [
        (("127.0.0.1:1234", 2, None), {}, "not process_id"),
        ((None, None, None), {"JAXEMB_NUM_PROCESSES": "2"}, r"num_processes \(from \$JAXEMB"),
        (("127.0.0.1:1234", 2, 2), {}, r"process_id must be in \[0, 2\)"),
        (("127.0.0.1", 2, 0), {}, "host:port"),
        (("127.0.0.1:99999", 2, 0), {}, "host:port"),
        (("127.0.0.1:1234", 0, 0), {}, "num_processes must be >= 1"),
        (
            (None, None, None),
            {"JAXEMB_COORDINATOR": "h:1", "JAXEMB_NUM_PROCESSES": "two", "JAXEMB_PROCESS_ID": "0"},
            r"\$JAXEMB_NUM_PROCESSES must be an",
        ),
    ],
)
def test_initialize_validates_before_starting(monkeypatch, args, env, match):
    for name in ("JAXEMB_COORDINATOR", "JAXEMB_NUM_PROCESSES", "JAXEMB_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        initialize(*args)


def test_initialize_after_jax_started_is_refused(monkeypatch, mesh8):
    # in this process JAX already runs computations: a complete, valid setting must be refused
    monkeypatch.delenv("JAXEMB_COORDINATOR", raising=False)
    with pytest.raises(RuntimeError):
        initialize("127.0.0.1:1234", 1, 0)
