"""Resumable training checkpoints: an orbax ``CheckpointManager`` with guard rails.

A checkpoint holds one pytree (model state, optimizer state, RNG key, data position, ...) and a
small JSON record (step, run config, and the path/shape/dtype of every leaf). The record lets a
restart tell a *corrupted* step (moved aside, the previous step is used) from a checkpoint of a
*different run* (refused with :class:`CheckpointConfigError`, nothing touched). Each finished
step also gets a list of its files with their sizes and CRC-32 checksums, verified before any
byte of the step is read back, so a step damaged on disk is never restored.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import multihost

from jaxemb._validate import check_int
from jaxemb.checkpoint._guard import DivergenceError, count_nonfinite, divergence_message

_STATE = "state"
_META = "meta"
_CONFIG_FILE = "jaxemb_config.json"
_COMMIT_FILE = "commit_success.txt"
_FILES = "jaxemb_files.json"  # inside each step directory: every file's size and CRC-32
_TMP_MARK = ".orbax-checkpoint-tmp"
_FORMAT = "jaxemb.checkpoint/2"
_LEGACY_FORMAT = "jaxemb.checkpoint/1"  # steps written before file checksums existed
_CHUNK = 1 << 22
_STEP_RE = re.compile(r"^(0|[1-9]\d*)$")
_MAX_LISTED = 6


class CheckpointConfigError(ValueError):
    """A checkpoint directory belongs to a different run (config or state layout differ)."""


class CheckpointWarning(UserWarning):
    """A checkpoint step could not be used and was moved aside."""


# --------------------------------------------------------------------------------------------
# Leaves: what may be saved and how each kind is written and read back.


def _path_name(entry: Any) -> str:
    if isinstance(entry, jax.tree_util.DictKey):
        name = entry.key
    elif isinstance(entry, jax.tree_util.GetAttrKey):
        name = entry.name
    elif isinstance(entry, jax.tree_util.SequenceKey):
        name = entry.idx
    elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
        name = entry.key
    else:  # pragma: no cover - jax has no other key types today
        name = entry
    # orbax joins nested names with "."; keep names free of separators.
    return str(name).replace(".", "_").replace("/", "_") or "_"


def _is_key(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _leaf_kind(leaf: Any, where: str) -> str:
    """One of "key", "array", "abstract", "numpy", "npscalar", "bool", "int", "float"."""
    if _is_key(leaf):
        return "key"
    if isinstance(leaf, jax.Array):
        return "array"
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return "abstract"
    if isinstance(leaf, np.ndarray):
        return "numpy"
    if isinstance(leaf, np.generic):
        return "npscalar"
    if isinstance(leaf, bool):
        return "bool"
    if isinstance(leaf, int):
        return "int"
    if isinstance(leaf, float):
        return "float"
    raise ValueError(
        f"state leaf {where} must be a jax.Array, NumPy array or Python/NumPy scalar; "
        f"got {type(leaf).__name__}"
    )


def _stored_shape_dtype(leaf: Any, kind: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the array actually written for ``leaf``."""
    if kind == "key":
        data = jax.eval_shape(jax.random.key_data, leaf)
        return tuple(data.shape), np.dtype(data.dtype)
    if kind in ("array", "abstract", "numpy", "npscalar"):
        return tuple(leaf.shape), np.dtype(leaf.dtype)
    arr = np.asarray(leaf)
    return tuple(arr.shape), arr.dtype


def _key_impl_of(leaf: Any) -> Any:
    """The PRNG implementation of a key array or of an abstract key (``ShapeDtypeStruct``)."""
    if isinstance(leaf, jax.Array):
        return jax.random.key_impl(leaf)
    found = []
    jax.eval_shape(lambda k: found.append(jax.random.key_impl(k)), leaf)
    return found[0]


def _key_impl(leaf: Any) -> str:
    return str(_key_impl_of(leaf))


def _flatten(state: Any) -> tuple[list[tuple[str, ...]], list[Any], Any]:
    items, treedef = jax.tree_util.tree_flatten_with_path(state)
    if not items:
        raise ValueError("state must be a pytree with at least one array leaf; got no leaves")
    paths = [tuple(_path_name(e) for e in path) for path, _ in items]
    seen: dict[tuple[str, ...], int] = {}
    for i, p in enumerate(paths):
        if p in seen:
            raise ValueError(
                f"state leaves {jax.tree_util.keystr(items[seen[p]][0])} and "
                f"{jax.tree_util.keystr(items[i][0])} map to the same checkpoint name "
                f"{'/'.join(p)!r}; rename one of them"
            )
        seen[p] = i
    return paths, [leaf for _, leaf in items], treedef


def _describe(paths: list[tuple[str, ...]], leaves: list[Any]) -> list[dict[str, Any]]:
    """The JSON layout record of a state: one entry per leaf."""
    out = []
    for path, leaf in zip(paths, leaves, strict=True):
        name = "/".join(path)
        kind = _leaf_kind(leaf, name)
        shape, dtype = _stored_shape_dtype(leaf, kind)
        entry = {"path": name, "shape": list(shape), "dtype": dtype.name}
        if kind == "key":
            entry["key_impl"] = _key_impl(leaf)
        out.append(entry)
    return out


def _nest(paths: list[tuple[str, ...]], values: list[Any]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path, value in zip(paths, values, strict=True):
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return root


def _lookup(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = tree
    for part in path:
        node = node[part]
    return node


def _to_saveable(leaf: Any, name: str) -> Any:
    kind = _leaf_kind(leaf, name)
    if kind == "key":
        return jax.random.key_data(leaf)
    if kind == "array":
        return leaf
    if kind == "abstract":
        raise ValueError(
            f"state leaf {name} is an abstract jax.ShapeDtypeStruct; save needs concrete arrays"
        )
    return np.asarray(leaf)


def _default_sharding() -> jax.sharding.Sharding:
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _restore_target(leaf: Any, name: str) -> Any:
    """An abstract restore target that keeps the template leaf's shape, dtype and sharding."""
    kind = _leaf_kind(leaf, name)
    if kind == "key":
        if isinstance(leaf, jax.Array):
            data = jax.random.key_data(leaf)
            return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=data.sharding)
        data = jax.eval_shape(jax.random.key_data, leaf)
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=_default_sharding())
    if kind in ("array", "abstract"):
        sharding = getattr(leaf, "sharding", None) or _default_sharding()
        try:
            sharding.shard_shape(tuple(leaf.shape))
        except Exception as e:  # noqa: BLE001 - report the template problem, not a corrupt step
            raise ValueError(
                f"state leaf {name} has a sharding that cannot hold shape {list(leaf.shape)}: {e}"
            ) from None
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
    shape, dtype = _stored_shape_dtype(leaf, kind)
    return np.zeros(shape, dtype)


def _from_restored(value: Any, template: Any, name: str) -> Any:
    kind = _leaf_kind(template, name)
    if kind == "key":
        return jax.random.wrap_key_data(value, impl=_key_impl_of(template))
    if kind in ("array", "abstract"):
        return value
    arr = np.asarray(value)
    if kind == "numpy":
        return arr
    if kind == "npscalar":
        return template.dtype.type(arr[()])
    return {"bool": bool, "int": int, "float": float}[kind](arr[()])


def _layout_mismatch(stored: list[dict], wanted: list[dict]) -> list[str]:
    """Human-readable differences between a stored layout record and the template's."""
    have = {e["path"]: e for e in stored}
    want = {e["path"]: e for e in wanted}
    problems = []
    missing = [p for p in want if p not in have]
    extra = [p for p in have if p not in want]
    if missing:
        problems.append(
            f"the template has {len(missing)} leaves the checkpoint lacks "
            f"({', '.join(missing[:_MAX_LISTED])}{', ...' if len(missing) > _MAX_LISTED else ''})"
        )
    if extra:
        problems.append(
            f"the checkpoint has {len(extra)} leaves the template lacks "
            f"({', '.join(extra[:_MAX_LISTED])}{', ...' if len(extra) > _MAX_LISTED else ''})"
        )
    for p in want:
        if p not in have:
            continue
        a, b = have[p], want[p]
        for field in ("shape", "dtype", "key_impl"):
            if a.get(field) != b.get(field):
                problems.append(
                    f"{p} has {field} {a.get(field)} in the checkpoint but "
                    f"{b.get(field)} in the template"
                )
    return problems


# --------------------------------------------------------------------------------------------
# Files of a finished step: sizes and checksums, written once and verified before a restore.


def _file_crc(path: Path) -> tuple[int, int]:
    size, crc = 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            size += len(chunk)
            crc = zlib.crc32(chunk, crc)
    return size, crc


def _step_files(step_dir: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, crc32)}`` of every file of a step (except the list itself)."""
    return {
        p.relative_to(step_dir).as_posix(): _file_crc(p)
        for p in sorted(step_dir.rglob("*"))
        if p.is_file() and p.name != _FILES
    }


def _damage(step_dir: Path) -> str | None:
    """What differs between a step's files and the list written when it was saved.

    Returns ``None`` when every file is as saved, ``"unsealed"`` when the step has no list, or
    a short description of the first difference.
    """
    listing = step_dir / _FILES
    if not listing.is_file():
        return "unsealed"
    try:
        saved = json.loads(listing.read_text())
        if not isinstance(saved, dict) or not isinstance(saved.get("files"), dict):
            raise ValueError("no 'files' entry")
        saved = {k: tuple(v) for k, v in saved["files"].items()}
    except (OSError, ValueError, TypeError) as e:
        return f"its file list {_FILES} is unreadable ({type(e).__name__})"
    found = _step_files(step_dir)
    problems = []
    for name in sorted(set(saved) | set(found)):
        if name not in found:
            problems.append(f"{name} is missing")
        elif name not in saved:
            problems.append(f"{name} was not part of the save")
        elif found[name][0] != saved[name][0]:
            problems.append(f"{name} has {found[name][0]} bytes, {saved[name][0]} were saved")
        elif found[name][1] != saved[name][1]:
            problems.append(f"{name} has changed bytes (CRC-32 mismatch)")
    if not problems:
        return None
    more = f" (and {len(problems) - 1} other files differ)" if len(problems) > 1 else ""
    return problems[0] + more


# --------------------------------------------------------------------------------------------
# Run configs.


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _normalise_config(config: Mapping | None) -> dict | None:
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise ValueError(
            f"config must be a mapping (a dict of run settings) or None; "
            f"got {type(config).__name__}"
        )
    try:
        return json.loads(json.dumps(dict(config), sort_keys=True, default=_json_default))
    except (TypeError, ValueError) as e:
        raise ValueError(f"config must be JSON-serialisable; got {e}") from None


def _flat_config(config: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flat_config(v, key + "."))
        else:
            out[key] = v
    return out


_ABSENT = object()


def _config_diff(old: Mapping, new: Mapping, ignore: Iterable[str]) -> list[str]:
    ignore = tuple(ignore)

    def ignored(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in ignore)

    a, b = _flat_config(old), _flat_config(new)
    diffs = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if ignored(key) or va == vb:
            continue
        sa = "absent" if va is _ABSENT else json.dumps(va)
        sb = "absent" if vb is _ABSENT else json.dumps(vb)
        diffs.append(f"{key!r} was {sa} there and is {sb} now")
    return diffs


# --------------------------------------------------------------------------------------------


class Checkpointer:
    """Saves and restores a training-state pytree every ``save_every`` steps, keeping the last K.

    A thin wrapper over orbax's ``CheckpointManager`` (``StandardSave`` of the arrays plus a
    ``JsonSave`` record) that makes resuming safe:

    * ``restore_or_init(template)`` restores the newest complete step onto the template's
      shardings and dtypes, or returns the template and step 0 when there is nothing to restore.
    * A half-written step (orbax's ``*.orbax-checkpoint-tmp-*`` directory, a step directory
      without ``commit_success.txt``, or one whose file list was never written) is never loaded:
      it is renamed ``<name>.incomplete-<n>`` with a :class:`CheckpointWarning`.
    * Every finished step lists its files with their sizes and CRC-32 checksums
      (``<step>/jaxemb_files.json``). Before a step is read, its files are checked against the
      list; a step damaged on disk (flipped bytes, truncated, missing or added files) or one
      that fails to restore is renamed ``<step>.corrupt-<n>`` with a one-line warning naming
      the step and what is wrong, and the previous step is tried; when none restores, training
      starts fresh with a warning. Nothing is ever deleted except by orbax's keep-last-K policy.
    * ``save`` refuses a state holding NaN or infinite floating values: it raises
      :class:`DivergenceError` naming the step, the leaf and the last good checkpoint, and
      writes nothing (the divergence guard of every experiment).
    * A directory written under a different ``config`` (or with a different state layout) raises
      :class:`CheckpointConfigError` before anything is read or written.

    Typed PRNG keys are stored as their ``key_data`` and re-wrapped with the template's
    implementation; Python and NumPy scalars (e.g. the data position) come back as the same type.

    Args:
      directory: where the step directories live (created if missing). Other files (metrics,
        reports) may share it.
      save_every: ``save(step, ...)`` writes when ``step % save_every == 0`` (or ``force=True``).
      keep: how many of the newest steps to keep (orbax ``max_to_keep``).
      config: a JSON-serialisable mapping describing the run, recorded in
        ``<directory>/jaxemb_config.json`` on the first save and in every step. Reopening a
        directory whose checkpoints were written under a different config raises
        :class:`CheckpointConfigError`. ``None`` skips the check.
      ignore_keys: config keys (dotted for nested ones, e.g. ``"train.steps"``) that may change
        between a run and its resumption, such as the total number of steps or the workdir.
      async_save: write in a background thread (orbax async checkpointing); ``wait()`` blocks
        until the last save is on disk. A step saved asynchronously gets its file list at the
        next ``save``, ``wait``, ``close`` or ``restore_or_init``; a process killed before that
        leaves it unlisted, and a restart sets it aside as half-written. Synchronous by
        default.

    Raises:
      ValueError: ``save_every`` or ``keep`` < 1, or a config that is not JSON-serialisable.
      CheckpointConfigError: the directory holds checkpoints of a different config.

    Examples:
      >>> import tempfile
      >>> import jax.numpy as jnp
      >>> from jaxemb.checkpoint import Checkpointer
      >>> with tempfile.TemporaryDirectory() as workdir:
      ...     state = {"w": jnp.zeros(3), "data_position": 0}
      ...     with Checkpointer(workdir, save_every=2, keep=2) as ckpt:
      ...         for step in range(1, 6):
      ...             state = {"w": state["w"] + 1.0, "data_position": step}
      ...             _ = ckpt.save(step, state)
      ...         _ = ckpt.save(5, state, force=True)  # at the end
      ...         print(ckpt.all_steps())
      ...     with Checkpointer(workdir, save_every=2, keep=2) as ckpt:  # a restarted run
      ...         state, step = ckpt.restore_or_init({"w": jnp.zeros(3), "data_position": 0})
      [4, 5]
      >>> step, state["w"].tolist(), state["data_position"]
      (5, [5.0, 5.0, 5.0], 5)

    References:
      orbax-checkpoint ``CheckpointManager`` (``max_to_keep``, atomic rename of
      ``*.orbax-checkpoint-tmp-*`` directories); Flax NNX checkpointing guide
      (``nnx.state`` through orbax, restoring onto abstract ``ShapeDtypeStruct`` targets).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        save_every: int,
        keep: int = 3,
        config: Mapping | None = None,
        ignore_keys: Iterable[str] = (),
        async_save: bool = False,
    ):
        if not isinstance(directory, (str, os.PathLike)):
            raise ValueError(
                f"directory must be a str or os.PathLike; got {type(directory).__name__}"
            )
        check_int(save_every, "save_every", minimum=1)
        check_int(keep, "keep", minimum=1)
        if isinstance(ignore_keys, str):
            ignore_keys = (ignore_keys,)
        self._ignore_keys = tuple(str(k) for k in ignore_keys)
        self._directory = Path(directory).expanduser().absolute()
        if self._directory.exists() and not self._directory.is_dir():
            raise ValueError(f"directory must be a directory; {self._directory} is a file")
        self._save_every = int(save_every)
        self._config = _normalise_config(config)
        self._async = bool(async_save)
        self._unsealed: list[int] = []  # async steps whose file list is not written yet
        self._barriers = 0
        self._closed = False
        # Check before orbax is constructed: a refused directory is never written to.
        self._check_config()
        self._directory.mkdir(parents=True, exist_ok=True)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=int(keep),
            create=True,
            enable_async_checkpointing=bool(async_save),
            cleanup_tmp_directories=False,
        )
        self._manager = ocp.CheckpointManager(
            self._directory, options=options, item_names=(_STATE, _META)
        )

    # -- context manager ----------------------------------------------------------------------

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- queries ------------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The checkpoint directory (absolute)."""
        return self._directory

    @property
    def save_every(self) -> int:
        """The save interval in steps."""
        return self._save_every

    def all_steps(self) -> list[int]:
        """The steps with a complete checkpoint, oldest first."""
        return sorted(int(s) for s in self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest step with a complete checkpoint, or ``None``."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    # -- save ---------------------------------------------------------------------------------

    def save(self, step: int, state: Any, *, force: bool = False) -> bool:
        """Saves ``state`` as step ``step`` when ``step % save_every == 0`` or ``force``.

        A step that already has a checkpoint is never overwritten (returns ``False``). Call
        ``save(last_step, state, force=True)`` at the end of training.

        Args:
          step: the number of completed training steps the state corresponds to (>= 0).
          state: a pytree of arrays / scalars (same layout as the ``restore_or_init`` template).
          force: save regardless of ``save_every``.

        Returns:
          Whether a checkpoint was written (started, with ``async_save``).

        Raises:
          DivergenceError: a floating leaf of ``state`` holds NaN or infinite values; nothing
            is written, and the message names the step, the leaf and the last good step.
        """
        self._check_open()
        check_int(step, "step", minimum=0)
        step = int(step)
        if not (force or step % self._save_every == 0):
            return False
        self._seal_finished()
        if step in self.all_steps():
            return False
        paths, leaves, _ = _flatten(state)
        names = ["/".join(p) for p in paths]
        arrays = [_to_saveable(leaf, n) for leaf, n in zip(leaves, names, strict=True)]
        for name, leaf, bad in zip(names, leaves, count_nonfinite(leaves), strict=True):
            if bad:
                size = int(np.prod(np.shape(leaf)))
                raise DivergenceError(
                    divergence_message(
                        step, f"state leaf {name}", bad, size, self.latest_step(), self._directory
                    )
                )
        meta = {
            "format": _FORMAT,
            "step": step,
            "config": self._config,
            "leaves": _describe(paths, leaves),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self._write_config_once()
        saved = bool(
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    **{
                        _STATE: ocp.args.StandardSave(_nest(paths, arrays)),
                        _META: ocp.args.JsonSave(meta),
                    }
                ),
                force=True,
            )
        )
        if saved:
            self._unsealed.append(step)
            if not self._async:
                self._seal_finished()
        return saved

    # -- restore ------------------------------------------------------------------------------

    def restore_or_init(self, state: Any) -> tuple[Any, int]:
        """Restores the newest usable checkpoint onto the template ``state``.

        Half-written steps are set aside; a step that fails to restore is renamed
        ``<step>.corrupt-<n>`` (with a :class:`CheckpointWarning` naming the step and the error)
        and the previous one is tried.

        Args:
          state: the template pytree, e.g. ``{"model": nnx.state(model), "opt":
            nnx.state(optimizer), "rng": key, "data_position": 0}``. Arrays are restored with
            its shapes, dtypes and shardings; leaves may be ``jax.ShapeDtypeStruct``.

        Returns:
          ``(restored_state, step)``, or ``(state, 0)`` unchanged when nothing can be restored.

        Raises:
          CheckpointConfigError: the newest checkpoint's leaves (paths, shapes, dtypes) differ
            from the template's: it belongs to a different model; nothing is changed on disk.
        """
        self._check_open()
        paths, leaves, treedef = _flatten(state)
        names = ["/".join(p) for p in paths]
        wanted = _describe(paths, leaves)
        # Built before anything is read, so a bad template never passes for a corrupt step.
        targets = [_restore_target(leaf, n) for leaf, n in zip(leaves, names, strict=True)]
        self.wait()
        self._set_aside_incomplete()
        self._manager.reload()
        steps = self.all_steps()
        for step in reversed(steps):
            damage = _damage(self._directory / str(step))
            if damage is not None and damage != "unsealed":
                self._set_aside(step, f"damaged on disk: {damage}")
                continue
            try:
                meta = self._manager.restore(
                    step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()})
                )[_META]
                if not isinstance(meta, Mapping) or not isinstance(meta.get("leaves"), list):
                    raise ValueError(f"unreadable record: {str(meta)[:80]!r}")
            except Exception as e:  # noqa: BLE001 - any failure means the step is unusable
                self._set_aside(step, e)
                continue
            if damage == "unsealed" and meta.get("format") != _LEGACY_FORMAT:
                # Saved by this version but its file list was never written: the save (or the
                # process) stopped before the step was finished.
                self._set_aside_unfinished(step)
                continue
            problems = _layout_mismatch(meta["leaves"], wanted)
            if problems:
                raise CheckpointConfigError(
                    f"The checkpoint at step {step} in {self._directory} does not fit the state "
                    f"you asked to restore: {'; '.join(problems[:_MAX_LISTED])}. It was written "
                    "by a run with a different model or optimizer, so nothing was loaded and no "
                    "file was changed. Point this run at a new checkpoint directory, or delete "
                    f"(or move away) {self._directory} if the old run is no longer needed."
                )
            try:
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        **{_STATE: ocp.args.StandardRestore(_nest(paths, targets))}
                    ),
                )[_STATE]
                values = [
                    _from_restored(_lookup(restored, p), leaf, n)
                    for p, leaf, n in zip(paths, leaves, names, strict=True)
                ]
            except Exception as e:  # noqa: BLE001
                self._set_aside(step, e)
                continue
            return jax.tree_util.tree_unflatten(treedef, values), step
        if steps:
            warnings.warn(
                f"No checkpoint in {self._directory} could be restored (steps {steps} were moved "
                "aside); training starts from scratch.",
                CheckpointWarning,
                stacklevel=2,
            )
        return state, 0

    # -- lifecycle ----------------------------------------------------------------------------

    def wait(self) -> None:
        """Blocks until pending (async) saves are written and their file lists recorded."""
        if not self._closed:
            self._seal_finished()

    def close(self) -> None:
        """Waits for pending saves and releases orbax's resources (idempotent)."""
        if self._closed:
            return
        self._seal_finished()
        self._manager.close()
        self._closed = True

    # -- internals ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"this Checkpointer for {self._directory} is closed")

    def _seal_finished(self) -> None:
        """Writes the file list of every step saved since the last call, once it is on disk."""
        self._manager.wait_until_finished()
        if not self._unsealed:
            return
        if multihost.is_primary_host(0):
            for step in self._unsealed:
                step_dir = self._directory / str(step)
                if not step_dir.is_dir():  # already removed by keep-last-K
                    continue
                record = {"format": _FORMAT, "step": step, "files": _step_files(step_dir)}
                tmp = step_dir / (_FILES + ".tmp")
                tmp.write_text(json.dumps(record, sort_keys=True) + "\n")
                os.replace(tmp, step_dir / _FILES)
        self._unsealed = []
        self._sync("sealed")

    def _step_dirs(self) -> dict[int, Path]:
        if not self._directory.is_dir():
            return {}
        return {
            int(p.name): p
            for p in self._directory.iterdir()
            if p.is_dir() and _STEP_RE.match(p.name)
        }

    def _check_config(self) -> None:
        if self._config is None:
            return
        stored = self._stored_config()
        if stored is None:
            return
        diffs = _config_diff(stored, self._config, self._ignore_keys)
        if diffs:
            steps = sorted(self._step_dirs())
            held = f"checkpoints of steps {steps}" if steps else "a run config"
            raise CheckpointConfigError(
                f"The checkpoint directory {self._directory} already holds {held} written under "
                f"a different config: {'; '.join(diffs)}. Resuming would mix two different runs, "
                "so nothing was loaded and no file was changed. Pick a new workdir for this "
                "config, or delete (or move away) the old directory if that run is no longer "
                "needed; keys that may legitimately change on resume can be listed in "
                "ignore_keys."
            )

    def _stored_config(self) -> dict | None:
        """The config the directory was written under, or None for a fresh directory."""
        path = self._directory / _CONFIG_FILE
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise CheckpointConfigError(
                    f"The run config {path} cannot be read ({e}), so it is unknown which run the "
                    f"checkpoints in {self._directory} belong to; nothing was loaded and no file "
                    "was changed. Pick a new workdir, or delete the old directory if that run is "
                    "no longer needed."
                ) from None
        steps = self._step_dirs()
        for step in sorted(steps, reverse=True):
            meta = steps[step] / _META / "metadata"
            try:
                record = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, Mapping) and isinstance(record.get("config"), Mapping):
                return dict(record["config"])
        if steps:
            raise CheckpointConfigError(
                f"The checkpoint directory {self._directory} holds checkpoints of steps "
                f"{sorted(steps)} with no record of the config they were written under, so it "
                "cannot be checked that they belong to this run; nothing was loaded and no file "
                "was changed. Pick a new workdir for this run, or delete (or move away) the old "
                "directory if that run is no longer needed (or pass config=None to skip the "
                "check)."
            )
        return None

    def _write_config_once(self) -> None:
        path = self._directory / _CONFIG_FILE
        if self._config is None or path.exists() or not multihost.is_primary_host(0):
            return
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self._config, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)

    def _free_name(self, base: str, tag: str) -> Path:
        n = 0
        while (self._directory / f"{base}.{tag}-{n}").exists():
            n += 1
        return self._directory / f"{base}.{tag}-{n}"

    def _sync(self, what: str) -> None:
        if jax.process_count() > 1:
            self._barriers += 1
            multihost.sync_global_processes(f"jaxemb_checkpoint_{what}_{self._barriers}")

    def _set_aside_incomplete(self) -> None:
        """Renames half-written step directories so they are never loaded."""
        if multihost.is_primary_host(0):
            for p in sorted(self._directory.iterdir()):
                if not p.is_dir():
                    continue
                if _TMP_MARK in p.name:
                    base = p.name.split(_TMP_MARK)[0]
                elif _STEP_RE.match(p.name) and not (p / _COMMIT_FILE).exists():
                    base = p.name
                else:
                    continue
                target = self._free_name(base, "incomplete")
                os.rename(p, target)
                warnings.warn(
                    f"Ignoring half-written checkpoint {p.name} in {self._directory} (the save "
                    f"never finished); it was renamed {target.name}.",
                    CheckpointWarning,
                    stacklevel=3,
                )
        self._sync("incomplete")

    def _set_aside_unfinished(self, step: int) -> None:
        """Renames a step whose file list was never written to ``<step>.incomplete-<n>``."""
        target = self._free_name(str(step), "incomplete")
        if multihost.is_primary_host(0):
            os.rename(self._directory / str(step), target)
        self._sync("unfinished")
        self._manager.reload()
        warnings.warn(
            f"Ignoring half-written checkpoint {step} in {self._directory} (its save never "
            f"finished: the list of its files was not written); it was renamed {target.name}.",
            CheckpointWarning,
            stacklevel=3,
        )

    def _set_aside(self, step: int, error: BaseException | str) -> None:
        """Renames a step that failed to restore to ``<step>.corrupt-<n>`` and warns."""
        source = self._directory / str(step)
        target = self._free_name(str(step), "corrupt")
        if multihost.is_primary_host(0):
            os.rename(source, target)
        self._sync("corrupt")
        self._manager.reload()
        if isinstance(error, str):
            message = error
        else:
            message = " ".join(f"{type(error).__name__}: {error}".split())
        if len(message) > 300:
            message = message[:297] + "..."
        warnings.warn(
            f"Checkpoint step {step} in {self._directory} could not be restored ({message}); "
            f"it was renamed {target.name} and an earlier step is tried.",
            CheckpointWarning,
            stacklevel=3,
        )
