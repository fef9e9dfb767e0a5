"""Tests for jaxemb.checkpoint: bitwise resume, damaged steps on disk, config guard, sharding."""

from __future__ import annotations

import functools
import json
import os
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxemb.checkpoint import (
    CheckpointConfigError,
    Checkpointer,
    CheckpointWarning,
    DivergenceError,
    check_finite,
)

TOTAL_STEPS = 8
DATA_SEED = 1234


# ---------------------------------------------------------------------------------------------
# A tiny but real training loop: NNX MLP with dropout, adam, data and dropout RNG from state.


class MLP(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(4, 16, rngs=rngs)
        self.drop = nnx.Dropout(0.25)
        self.l2 = nnx.Linear(16, 2, rngs=rngs)

    def __call__(self, x, *, rngs: nnx.Rngs):
        return self.l2(self.drop(nnx.relu(self.l1(x)), rngs=rngs))


def batch_at(position: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch number ``position`` of a deterministic stream (independent of any state)."""
    g = np.random.default_rng((DATA_SEED, position))
    x = g.normal(size=(16, 4)).astype(np.float32)
    y = np.stack([x[:, 0] * x[:, 1], np.sin(x[:, 2]) + x[:, 3]], axis=1).astype(np.float32)
    return x, y


@functools.partial(jax.jit, static_argnums=0)
def train_step(graphdef, params, rng, x, y):
    model, opt = nnx.merge(graphdef, params)
    rng, dropout_key = jax.random.split(rng)

    def loss_fn(model):
        pred = model(x, rngs=nnx.Rngs(dropout=dropout_key))
        return jnp.mean((pred - y) ** 2)

    grads = nnx.grad(loss_fn)(model)
    opt.update(model, grads)
    return nnx.state((model, opt)), rng


def fresh_objects():
    """New model/optimizer objects, as a restarted process would build them."""
    model = MLP(rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    return model, opt


def as_ckpt(model, opt, rng, position):
    return {
        "model": nnx.state(model),
        "opt": nnx.state(opt),
        "rng": rng,
        "data_position": position,
    }


def train(workdir, *, until, save_every=2, keep=10, final_save=False, ckpt=True, snapshots=None):
    """Runs (or resumes) training up to step ``until``; returns (state dict, resumed-from step).

    ``final_save=False`` models a process killed right after step ``until`` (whatever was not
    saved yet is lost); ``final_save=True`` models a clean stop that saves at the end.
    """
    model, opt = fresh_objects()
    rng, position = jax.random.key(42), 0
    start = 0
    manager = Checkpointer(workdir, save_every=save_every, keep=keep) if ckpt else None
    try:
        if manager is not None:
            restored, start = manager.restore_or_init(as_ckpt(model, opt, rng, position))
            nnx.update(model, restored["model"])
            nnx.update(opt, restored["opt"])
            rng, position = restored["rng"], restored["data_position"]
        graphdef, params = nnx.split((model, opt))
        step = start
        while step < until:
            x, y = batch_at(position)
            params, rng = train_step(graphdef, params, rng, x, y)
            nnx.update((model, opt), params)
            position += 1
            step += 1
            state = as_ckpt(model, opt, rng, position)
            if snapshots is not None:
                snapshots[step] = jax.tree.map(np.asarray, leaves_of(state))
            if manager is not None:
                manager.save(step, state, force=final_save and step == until)
    finally:
        if manager is not None:
            manager.close()
    return as_ckpt(model, opt, rng, position), start


def leaves_of(state):
    """Comparable NumPy leaves (PRNG keys as their raw data)."""

    def conv(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return np.asarray(jax.random.key_data(x))
        return np.asarray(x)

    return [conv(x) for x in jax.tree.leaves(state)]


def assert_bitwise_equal(a, b):
    la, lb = leaves_of(a) if not isinstance(a, list) else a, leaves_of(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def snapshot_tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (a before/after picture of the disk)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted run (no checkpointing) and its state after every step."""
    snaps: dict[int, list[np.ndarray]] = {}
    final, _ = train(None, until=TOTAL_STEPS, ckpt=False, snapshots=snaps)
    return final, snaps


# ---------------------------------------------------------------------------------------------
# (a) deterministic resume


@pytest.mark.parametrize(
    "final_save, resumed_from",
    [(False, 3), (True, 5)],
    ids=["killed-after-step-5", "clean-stop-at-step-5"],
)
def test_resume_reaches_bitwise_same_state(tmp_path, reference, final_save, resumed_from):
    final_ref, snaps = reference
    # First process: saves every 3 steps and stops after step 5 (killed: the last save is
    # step 3 and steps 4-5 are recomputed; clean stop: a forced save at step 5).
    train(tmp_path, until=5, save_every=3, final_save=final_save)
    with Checkpointer(tmp_path, save_every=3) as ckpt:
        assert ckpt.all_steps() == sorted({3, resumed_from})
    # Second process: new objects, new Checkpointer, resumes and runs to the end.
    final, start = train(tmp_path, until=TOTAL_STEPS, save_every=3, final_save=True)
    assert start == resumed_from
    assert_bitwise_equal(final_ref, final)
    assert final["data_position"] == TOTAL_STEPS and isinstance(final["data_position"], int)
    with Checkpointer(tmp_path, save_every=3) as ckpt:
        assert ckpt.all_steps() == sorted({3, resumed_from, 6, TOTAL_STEPS})


def test_resume_without_restoring_rng_would_differ(tmp_path, reference):
    """Control: the bitwise comparison above is sensitive to the stored dropout key."""
    final_ref, _ = reference
    train(tmp_path, until=4, save_every=2)
    model, opt = fresh_objects()
    template = as_ckpt(model, opt, jax.random.key(42), 0)
    with Checkpointer(tmp_path, save_every=2) as ckpt:
        restored, start = ckpt.restore_or_init(template)
    assert start == 4
    nnx.update(model, restored["model"])
    nnx.update(opt, restored["opt"])
    graphdef, params = nnx.split((model, opt))
    rng = jax.random.key(42)  # the run's *initial* key instead of the stored one
    for position in range(4, TOTAL_STEPS):
        params, rng = train_step(graphdef, params, rng, *batch_at(position))
    nnx.update((model, opt), params)
    ref_kernel = np.asarray(final_ref["model"]["l1"]["kernel"][...])
    assert not np.array_equal(np.asarray(model.l1.kernel[...]), ref_kernel)


# ---------------------------------------------------------------------------------------------
# (b) half-written and corrupted steps, damaged for real on disk


def _damage_half_written(root: Path, step: int, how: str) -> str:
    step_dir = root / str(step)
    if how == "tmp-dir":  # orbax was still writing into its temporary directory
        name = f"{step}.orbax-checkpoint-tmp-1700000000123456"
        os.rename(step_dir, root / name)
        for f in sorted((root / name / "state" / "d").iterdir()):
            with open(f, "r+b") as fh:
                fh.truncate(os.path.getsize(f) // 3)
        return name
    if how == "no-commit-marker":  # copied/written without its commit marker
        (step_dir / "commit_success.txt").unlink()
        return str(step)
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["tmp-dir", "no-commit-marker"])
def test_half_written_latest_step_is_ignored(tmp_path, reference, how):
    final_ref, snaps = reference
    train(tmp_path, until=6, save_every=2)
    name = _damage_half_written(tmp_path, 6, how)
    damaged = snapshot_tree(tmp_path / name)
    intact = {s: snapshot_tree(tmp_path / str(s)) for s in (2, 4)}

    model, opt = fresh_objects()
    template = as_ckpt(model, opt, jax.random.key(42), 0)
    with pytest.warns(CheckpointWarning, match=f"half-written checkpoint {name}"):
        with Checkpointer(tmp_path, save_every=2) as ckpt:
            restored, start = ckpt.restore_or_init(template)
    assert start == 4
    assert_bitwise_equal(snaps[4], restored)
    # Nothing lost: the half-written directory is renamed, byte for byte; older steps intact.
    assert not (tmp_path / name).exists()
    assert snapshot_tree(tmp_path / "6.incomplete-0") == damaged
    for s in (2, 4):
        assert snapshot_tree(tmp_path / str(s)) == intact[s]
    # Training continues from step 4, re-saves step 6 and ends where the uninterrupted run did.
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        final, start = train(tmp_path, until=TOTAL_STEPS, save_every=2)
    assert start == 4
    assert_bitwise_equal(final_ref, final)
    with Checkpointer(tmp_path, save_every=2) as ckpt:
        assert ckpt.all_steps() == [2, 4, 6, 8]


def _corrupt(step_dir: Path, how: str) -> None:
    data = sorted((step_dir / "state" / "d").iterdir())
    assert data, "expected array data files in the step directory"
    if how == "truncated-arrays":
        for f in data:
            with open(f, "r+b") as fh:
                fh.truncate(os.path.getsize(f) // 2)
    elif how == "deleted-arrays":
        for f in data:
            f.unlink()
    elif how == "garbage-array-metadata":
        (step_dir / "state" / "_METADATA").write_text('{"tree_metadata": [garbage')
    elif how == "garbage-record":
        (step_dir / "meta" / "metadata").write_bytes(b"\x00\xffnot json")
    else:
        raise AssertionError(how)


# tensorstore may finish a cancelled read after orbax closed its event loop when a step is
# unreadable; Python reports that as an "unraisable" RuntimeError, which is noise here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "how", ["truncated-arrays", "deleted-arrays", "garbage-array-metadata", "garbage-record"]
)
def test_corrupted_latest_step_falls_back_to_previous(tmp_path, reference, how):
    final_ref, snaps = reference
    train(tmp_path, until=6, save_every=2)
    _corrupt(tmp_path / "6", how)
    damaged = snapshot_tree(tmp_path / "6")
    intact = {s: snapshot_tree(tmp_path / str(s)) for s in (2, 4)}

    model, opt = fresh_objects()
    template = as_ckpt(model, opt, jax.random.key(42), 0)
    with pytest.warns(CheckpointWarning, match=r"step 6 .*could not be restored") as record:
        with Checkpointer(tmp_path, save_every=2) as ckpt:
            restored, start = ckpt.restore_or_init(template)
            assert ckpt.all_steps() == [2, 4]
    assert "renamed 6.corrupt-0" in str(record[0].message)
    assert start == 4
    assert_bitwise_equal(snaps[4], restored)
    assert snapshot_tree(tmp_path / "6.corrupt-0") == damaged
    for s in (2, 4):
        assert snapshot_tree(tmp_path / str(s)) == intact[s]
    final, start = train(tmp_path, until=TOTAL_STEPS, save_every=2)
    assert start == 4
    assert_bitwise_equal(final_ref, final)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["2", "4", "6", "6.corrupt-0", "8"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_all_steps_corrupted_starts_fresh(tmp_path):
    state = {"w": jnp.arange(6.0).reshape(2, 3), "pos": 0}
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        ckpt.save(1, state)
        ckpt.save(2, state)
    _corrupt(tmp_path / "1", "deleted-arrays")
    _corrupt(tmp_path / "2", "garbage-record")
    template = {"w": jnp.zeros((2, 3)), "pos": 0}
    with pytest.warns(CheckpointWarning) as record:
        with Checkpointer(tmp_path, save_every=1) as ckpt:
            restored, start = ckpt.restore_or_init(template)
    messages = [str(r.message) for r in record]
    assert any("step 2 " in m for m in messages) and any("step 1 " in m for m in messages)
    assert any("starts from scratch" in m for m in messages)
    assert restored is template and start == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "1.corrupt-0",
        "2.corrupt-0",
    ]


# ---------------------------------------------------------------------------------------------
# Save policy, keep-last-K, value types


def test_save_policy_and_no_overwrite(tmp_path):
    a = {"w": jnp.full((3,), 1.0)}
    b = {"w": jnp.full((3,), 2.0)}
    with Checkpointer(tmp_path, save_every=2) as ckpt:
        assert ckpt.latest_step() is None and ckpt.all_steps() == []
        assert ckpt.save(3, a) is False  # not a multiple of save_every
        assert ckpt.save(4, a) is True
        before = snapshot_tree(tmp_path / "4")
        assert ckpt.save(4, b) is False  # never overwrite
        assert ckpt.save(4, b, force=True) is False
        assert ckpt.save(5, b, force=True) is True  # the final save
        assert ckpt.all_steps() == [4, 5] and ckpt.latest_step() == 5
    assert snapshot_tree(tmp_path / "4") == before
    # The step-4 checkpoint still holds ``a``: restore it by moving step 5 out of the way.
    os.rename(tmp_path / "5", tmp_path / "elsewhere")
    with Checkpointer(tmp_path, save_every=2) as ckpt:
        restored, step = ckpt.restore_or_init({"w": jnp.zeros(3)})
    assert step == 4
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.full(3, 1.0, np.float32))


def test_keeps_last_k(tmp_path):
    with Checkpointer(tmp_path, save_every=1, keep=2) as ckpt:
        for step in range(1, 6):
            assert ckpt.save(step, {"w": jnp.full((2,), float(step))})
        assert ckpt.all_steps() == [4, 5]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["4", "5"]
    with Checkpointer(tmp_path, save_every=1, keep=2) as ckpt:
        restored, step = ckpt.restore_or_init({"w": jnp.zeros(2)})
    assert step == 5
    np.testing.assert_array_equal(np.asarray(restored["w"]), [5.0, 5.0])


def test_round_trips_every_leaf_type(tmp_path):
    state = {
        "f32": jnp.linspace(-1.0, 1.0, 7).reshape(7, 1),
        "bf16": jnp.arange(5, dtype=jnp.bfloat16) / 3,
        "i32": jnp.array([3, -4], jnp.int32),
        "u32": jnp.array(7, jnp.uint32),
        "key": jax.random.key(3),
        "rbg_key": jax.random.key(5, impl="rbg"),
        "key_batch": jax.random.split(jax.random.key(1), 3),
        "np": np.arange(4, dtype=np.int16),
        "np_scalar": np.float32(2.5),
        "py_int": 2**40 + 3,
        "py_float": 0.1,
        "py_bool": True,
        "nested": [jnp.ones(2), (np.int64(9),)],
    }
    template = {
        "f32": jnp.zeros((7, 1)),
        "bf16": jnp.zeros(5, jnp.bfloat16),
        "i32": jnp.zeros(2, jnp.int32),
        "u32": jnp.zeros((), jnp.uint32),
        "key": jax.random.key(0),
        "rbg_key": jax.random.key(0, impl="rbg"),
        "key_batch": jax.random.split(jax.random.key(0), 3),
        "np": np.zeros(4, np.int16),
        "np_scalar": np.float32(0),
        "py_int": 0,
        "py_float": 0.0,
        "py_bool": False,
        "nested": [jnp.zeros(2), (np.int64(0),)],
    }
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        ckpt.save(1, state)
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        restored, step = ckpt.restore_or_init(template)
    assert step == 1
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert type(got) is type(want)
        if isinstance(want, jax.Array) and jax.dtypes.issubdtype(want.dtype, jax.dtypes.prng_key):
            assert jax.random.key_impl(got) == jax.random.key_impl(want)
            got, want = jax.random.key_data(got), jax.random.key_data(want)
        assert np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # The restored keys are usable and draw what the saved ones draw.
    np.testing.assert_array_equal(
        jax.random.uniform(restored["rbg_key"], (3,)), jax.random.uniform(state["rbg_key"], (3,))
    )


def test_async_save_and_abstract_template(tmp_path):
    state = {"w": jnp.arange(12.0).reshape(3, 4), "rng": jax.random.key(7), "pos": 5}
    ckpt = Checkpointer(tmp_path, save_every=10, async_save=True)
    assert ckpt.save(10, state)
    ckpt.wait()
    assert ckpt.all_steps() == [10]
    ckpt.close()
    ckpt.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        ckpt.save(20, state)
    abstract = {
        "w": jax.ShapeDtypeStruct((3, 4), jnp.float32),
        "rng": jax.eval_shape(lambda: jax.random.key(0)),
        "pos": 0,
    }
    with Checkpointer(tmp_path, save_every=10) as ckpt:
        restored, step = ckpt.restore_or_init(abstract)
    assert step == 10
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(
        jax.random.key_data(restored["rng"]), jax.random.key_data(jax.random.key(7))
    )
    assert restored["pos"] == 5


def test_empty_directory_returns_template(tmp_path):
    template = {"w": jnp.ones(3), "pos": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Checkpointer(tmp_path / "new" / "dir", save_every=1) as ckpt:
            restored, step = ckpt.restore_or_init(template)
    assert restored is template and step == 0
    assert (tmp_path / "new" / "dir").is_dir()


# ---------------------------------------------------------------------------------------------
# Sharded state on the 8-device mesh


def test_restores_onto_template_shardings(tmp_path, mesh8):
    replicated = NamedSharding(mesh8, P())
    by_data = NamedSharding(mesh8, P("data"))
    w = np.arange(24, dtype=np.float32).reshape(6, 4) / 7
    emb = np.arange(64, dtype=np.float32).reshape(16, 4) - 30
    state = {
        "w": jax.device_put(w, replicated),
        "emb": jax.device_put(emb, by_data),
        "rng": jax.device_put(jax.random.key(11), replicated),
        "pos": 3,
    }
    with Checkpointer(tmp_path / "sharded", save_every=1) as ckpt:
        ckpt.save(1, state)
    # Saved from a single device, restored onto the mesh (and the other way round below).
    single = {"w": jnp.asarray(w), "emb": jnp.asarray(emb), "rng": jax.random.key(11), "pos": 3}
    with Checkpointer(tmp_path / "single", save_every=1) as ckpt:
        ckpt.save(1, single)

    template = {
        "w": jax.device_put(np.zeros_like(w), replicated),
        "emb": jax.device_put(np.zeros_like(emb), by_data),
        "rng": jax.device_put(jax.random.key(0), replicated),
        "pos": 0,
    }
    for sub in ("sharded", "single"):
        with Checkpointer(tmp_path / sub, save_every=1) as ckpt:
            restored, step = ckpt.restore_or_init(template)
        assert step == 1
        for name in ("w", "emb", "rng"):
            assert restored[name].sharding == template[name].sharding, (sub, name)
        np.testing.assert_array_equal(np.asarray(restored["w"]), w)
        np.testing.assert_array_equal(np.asarray(restored["emb"]), emb)
        np.testing.assert_array_equal(
            jax.random.key_data(restored["rng"]), jax.random.key_data(jax.random.key(11))
        )
        # Each device holds exactly its slice.
        for shard in restored["emb"].addressable_shards:
            np.testing.assert_array_equal(np.asarray(shard.data), emb[shard.index])

    # A template whose sharding cannot hold its shape is the caller's bug, not a corrupt step.
    before = snapshot_tree(tmp_path)
    bad = {**template, "w": jax.ShapeDtypeStruct((6, 4), jnp.float32, sharding=by_data)}
    with Checkpointer(tmp_path / "sharded", save_every=1) as ckpt:
        with pytest.raises(ValueError, match="state leaf w has a sharding"):
            ckpt.restore_or_init(bad)
    assert snapshot_tree(tmp_path) == before

    one_device = {
        "w": jnp.zeros((6, 4)),
        "emb": jnp.zeros((16, 4)),
        "rng": jax.random.key(0),
        "pos": 0,
    }
    with Checkpointer(tmp_path / "sharded", save_every=1) as ckpt:
        restored, _ = ckpt.restore_or_init(one_device)
    assert restored["emb"].sharding == one_device["emb"].sharding
    np.testing.assert_array_equal(np.asarray(restored["emb"]), emb)


# ---------------------------------------------------------------------------------------------
# Incompatible directories: refused with a clear message, nothing touched


def _written_run(root: Path, config):
    with Checkpointer(root, save_every=1, config=config) as ckpt:
        ckpt.save(1, {"w": jnp.ones((2, 3)), "pos": 1})
        ckpt.save(2, {"w": jnp.ones((2, 3)) * 2, "pos": 2})


def test_config_mismatch_is_refused_and_nothing_changes(tmp_path):
    config = {"lr": 0.1, "model": {"dim": 8, "depth": 2}, "steps": 10, "workdir": str(tmp_path)}
    _written_run(tmp_path, config)
    stored = json.loads((tmp_path / "jaxemb_config.json").read_text())
    assert stored == config
    before = snapshot_tree(tmp_path)

    changed = {**config, "lr": 0.2, "model": {"dim": 16, "depth": 2}}
    with pytest.raises(CheckpointConfigError) as info:
        Checkpointer(tmp_path, save_every=1, config=changed)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "'lr' was 0.1 there and is 0.2 now" in message
    assert "'model.dim' was 8 there and is 16 now" in message
    assert "depth" not in message and "'steps'" not in message
    assert "new workdir" in message and "delete" in message and str(tmp_path) in message
    assert "\n" not in message  # one paragraph
    assert snapshot_tree(tmp_path) == before

    # A key that appeared or vanished counts too.
    with pytest.raises(CheckpointConfigError, match="'seed' was absent there and is 3 now"):
        Checkpointer(tmp_path, save_every=1, config={**config, "seed": 3})
    assert snapshot_tree(tmp_path) == before

    # Keys allowed to change on resume.
    resumed = {**config, "steps": 20, "workdir": "/elsewhere"}
    with Checkpointer(
        tmp_path, save_every=1, config=resumed, ignore_keys=("steps", "workdir")
    ) as c:
        restored, step = c.restore_or_init({"w": jnp.zeros((2, 3)), "pos": 0})
        assert step == 2 and restored["pos"] == 2
        assert c.save(3, restored)
    # The recorded config stays the original one.
    assert json.loads((tmp_path / "jaxemb_config.json").read_text()) == config


def test_directory_without_recorded_config_is_refused(tmp_path):
    _written_run(tmp_path, None)
    before = snapshot_tree(tmp_path)
    with pytest.raises(CheckpointConfigError, match="no record of the config"):
        Checkpointer(tmp_path, save_every=1, config={"lr": 0.1})
    assert snapshot_tree(tmp_path) == before
    # Opting out of the check still works.
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        assert ckpt.all_steps() == [1, 2]


def test_config_recovered_from_steps_when_root_file_missing(tmp_path):
    _written_run(tmp_path, {"lr": 0.1})
    (tmp_path / "jaxemb_config.json").unlink()
    with pytest.raises(CheckpointConfigError, match="'lr' was 0.1 there and is 0.3 now"):
        Checkpointer(tmp_path, save_every=1, config={"lr": 0.3})
    with Checkpointer(tmp_path, save_every=1, config={"lr": 0.1}) as ckpt:
        assert ckpt.latest_step() == 2


def test_state_layout_mismatch_is_refused_and_nothing_moves(tmp_path):
    _written_run(tmp_path, {"lr": 0.1})
    before = snapshot_tree(tmp_path)
    with Checkpointer(tmp_path, save_every=1, config={"lr": 0.1}) as ckpt:
        with pytest.raises(CheckpointConfigError, match=r"w has shape \[2, 3\] in the checkpoint"):
            ckpt.restore_or_init({"w": jnp.zeros((2, 4)), "pos": 0})
        with pytest.raises(CheckpointConfigError, match="template has 1 leaves the checkpoint"):
            ckpt.restore_or_init({"w": jnp.zeros((2, 3)), "pos": 0, "extra": jnp.zeros(1)})
        with pytest.raises(CheckpointConfigError, match="dtype float32 in the checkpoint"):
            ckpt.restore_or_init({"w": jnp.zeros((2, 3), jnp.int32), "pos": 0})
    assert snapshot_tree(tmp_path) == before


def test_key_impl_mismatch_is_refused(tmp_path):
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        ckpt.save(1, {"rng": jax.random.key(0, impl="rbg")})
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        with pytest.raises(CheckpointConfigError, match="rng has"):
            ckpt.restore_or_init({"rng": jax.random.key(0)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]


# ---------------------------------------------------------------------------------------------
# Argument validation


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"save_every": 0}, "save_every must be >= 1"),
        ({"save_every": -2}, "save_every must be >= 1"),
        ({"save_every": 1.5}, "save_every must be an integer"),
        ({"save_every": 1, "keep": 0}, "keep must be >= 1"),
        ({"save_every": 1, "config": {"f": object()}}, "config must be JSON-serialisable"),
        ({"save_every": 1, "config": [1, 2]}, "config must be a mapping"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Checkpointer(tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_bad_save_arguments(tmp_path):
    file_path = tmp_path / "a_file"
    file_path.write_text("x")
    with pytest.raises(ValueError, match="must be a directory"):
        Checkpointer(file_path, save_every=1)
    with Checkpointer(tmp_path / "ck", save_every=1) as ckpt:
        with pytest.raises(ValueError, match="step must be >= 0"):
            ckpt.save(-1, {"w": jnp.ones(2)})
        with pytest.raises(ValueError, match=r"state leaf name must be .* got str"):
            ckpt.save(1, {"name": "abc"})
        with pytest.raises(ValueError, match="at least one array leaf"):
            ckpt.save(1, {})
        assert ckpt.all_steps() == []


def test_config_file_written_on_first_save_only(tmp_path):
    ckpt = Checkpointer(
        tmp_path, save_every=1, config={"a": 1, "path": Path("/x"), "n": np.int64(2)}
    )
    assert not (tmp_path / "jaxemb_config.json").exists()
    ckpt.save(1, {"w": jnp.ones(1)})
    ckpt.close()
    assert json.loads((tmp_path / "jaxemb_config.json").read_text()) == {
        "a": 1,
        "n": 2,
        "path": "/x",
    }


# ---------------------------------------------------------------------------------------------
# Bytes damaged in place: detected by the file checksums before anything is read


def _flip_bytes(path: Path, count: int = 64, seed: int = 0) -> None:
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(data), size=min(count, len(data)), replace=False):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("target", ["largest-array-file", "manifest"])
def test_flipped_bytes_are_detected_and_the_previous_step_restored(
    tmp_path, reference, target, capfd
):
    final_ref, snaps = reference
    train(tmp_path, until=6, save_every=2)
    step_dir = tmp_path / "6"
    if target == "manifest":
        victim = step_dir / "state" / "manifest.ocdbt"
    else:
        victim = max((p for p in step_dir.rglob("*") if p.is_file()), key=os.path.getsize)
    _flip_bytes(victim)
    damaged = snapshot_tree(step_dir)
    capfd.readouterr()

    model, opt = fresh_objects()
    template = as_ckpt(model, opt, jax.random.key(42), 0)
    with pytest.warns(CheckpointWarning) as record:
        with Checkpointer(tmp_path, save_every=2) as ckpt:
            restored, start = ckpt.restore_or_init(template)
    messages = [str(r.message) for r in record if issubclass(r.category, CheckpointWarning)]
    assert len(messages) == 1, messages
    assert "step 6" in messages[0] and "damaged on disk" in messages[0]
    assert victim.relative_to(step_dir).as_posix() in messages[0]
    assert "\n" not in messages[0]
    # the previous step, bit for bit; the damaged one set aside untouched
    assert start == 4
    assert_bitwise_equal(snaps[4], restored)
    assert snapshot_tree(tmp_path / "6.corrupt-0") == damaged
    # nothing else reached the terminal: no tracebacks from orbax or TensorStore
    out, err = capfd.readouterr()
    assert err == "" and out == ""


def test_unsealed_step_is_set_aside_as_half_written(tmp_path, reference):
    """A step whose file list was never written (killed during an async save) is not used."""
    final_ref, snaps = reference
    train(tmp_path, until=6, save_every=2)
    (tmp_path / "6" / "jaxemb_files.json").unlink()
    model, opt = fresh_objects()
    with pytest.warns(CheckpointWarning, match="half-written checkpoint 6"):
        with Checkpointer(tmp_path, save_every=2) as ckpt:
            restored, start = ckpt.restore_or_init(as_ckpt(model, opt, jax.random.key(42), 0))
    assert start == 4
    assert_bitwise_equal(snaps[4], restored)
    assert (tmp_path / "6.incomplete-0").is_dir()


def test_legacy_steps_without_file_lists_still_restore(tmp_path):
    """Steps written before file checksums existed (format 1) are restored as before."""
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        ckpt.save(1, {"w": jnp.arange(3.0)})
    (tmp_path / "1" / "jaxemb_files.json").unlink()
    meta = tmp_path / "1" / "meta" / "metadata"
    record = json.loads(meta.read_text())
    record["format"] = "jaxemb.checkpoint/1"
    meta.write_text(json.dumps(record))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        with Checkpointer(tmp_path, save_every=1) as ckpt:
            restored, step = ckpt.restore_or_init({"w": jnp.zeros(3)})
    assert step == 1
    np.testing.assert_array_equal(np.asarray(restored["w"]), [0.0, 1.0, 2.0])


def test_async_steps_get_their_file_lists(tmp_path):
    ckpt = Checkpointer(tmp_path, save_every=1, async_save=True)
    for step in (1, 2):
        ckpt.save(step, {"w": jnp.full((4,), float(step))})
    ckpt.close()
    for step in (1, 2):
        listed = json.loads((tmp_path / str(step) / "jaxemb_files.json").read_text())["files"]
        on_disk = {
            p.relative_to(tmp_path / str(step)).as_posix()
            for p in (tmp_path / str(step)).rglob("*")
            if p.is_file() and p.name != "jaxemb_files.json"
        }
        assert set(listed) == on_disk


# ---------------------------------------------------------------------------------------------
# The divergence guard


def test_save_refuses_a_non_finite_state_and_names_the_last_good_step(tmp_path):
    good = {"model": {"w": jnp.ones((2, 3))}, "step_count": 1}
    bad = {"model": {"w": jnp.ones((2, 3)).at[1, 2].set(jnp.nan)}, "step_count": 2}
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        assert ckpt.save(1, good)
        with pytest.raises(DivergenceError) as info:
            ckpt.save(2, bad)
        assert ckpt.all_steps() == [1]
    message = str(info.value)
    assert "step 2" in message and "model/w" in message and "1 of 6" in message
    assert "step 1" in message and str(tmp_path) in message and "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]
    with Checkpointer(tmp_path / "fresh", save_every=1) as ckpt:
        with pytest.raises(DivergenceError, match="No checkpoint was saved before"):
            ckpt.save(1, {"w": jnp.array([jnp.inf], jnp.bfloat16)})
        # integers and keys are never "non-finite"
        assert ckpt.save(2, {"i": jnp.array([-1, 2]), "rng": jax.random.key(0)})


def test_check_finite_names_the_quantity():
    check_finite(3, {"loss": 0.25, "state": {"w": np.zeros(2), "n": 4}})
    with pytest.raises(DivergenceError, match=r"step 7: loss is not finite"):
        check_finite(7, {"loss": jnp.float32(jnp.inf)})
    with pytest.raises(DivergenceError, match=r"state/layers/0 holds 2 of 4 values"):
        check_finite(7, {"state": {"layers": [np.array([np.nan, 1, np.inf, 0.0])]}})
    with pytest.raises(ValueError, match="values must be a non-empty mapping"):
        check_finite(1, {})
