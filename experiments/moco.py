"""MoCo v2 (momentum encoder + key queue, optional MoCHi) on handwritten digits vs SimCLR.

Reads top to bottom in named sections like ``experiments/quickstart.py``, whose model
(``SimCLRModel``: MLP encoder + Matryoshka projection head), augmentations and SimCLR trainer it
reuses: config, input pipeline, model and optimizer, momentum encoder and queue, update step,
checkpoint restore, train loop, evaluators (kNN at every Matryoshka width, for MoCo and for the
quickstart's SimCLR trained for the same number of steps), report.

Run it directly::

    python experiments/moco.py --workdir runs/moco steps=2000 mochi=True

Every ``key=value`` overrides a key of ``DEFAULT_CONFIG``. Re-running with the same workdir
resumes from the last checkpoint.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxemb import analysis, checkpoint, data, experiment, parallel
from jaxemb.config import ConfigError, check_numbers, invalid, merge_overrides, run_main


def _load_quickstart():
    name = "jaxemb_experiments_quickstart"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("quickstart.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


qs = _load_quickstart()

# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------

_SHARED = (
    "seed",
    "data_dir",
    "devices",
    "encoder",
    "hidden",
    "dims",
    "head_expansion",
    "steps",
    "batch_size",
    "learning_rate",
    "weight_decay",
    "aug_max_shift",
    "aug_noise_std",
    "aug_cutout_size",
    "aug_cutout_prob",
    "ckpt_every",
    "keep_checkpoints",
    "log_every",
    "knn_k",
    "knn_temperature",
)

DEFAULT_CONFIG: dict[str, Any] = dict(
    {k: qs.DEFAULT_CONFIG[k] for k in _SHARED},
    # MoCo v2 (Chen et al. 2020): τ = 0.2; a queue of a few batches and a faster momentum suit
    # the 1,437 training digits and the short schedule (ImageNet uses K = 65536, m = 0.999).
    temperature=0.2,
    queue_size=1024,
    momentum=0.99,
    symmetric=True,  # also score view 2's queries against view 1's keys (as MoCo v3)
    matryoshka=True,  # sum the loss over the Matryoshka prefixes, like the quickstart
    # MoCHi (Kalantidis et al. 2020) on the full-width term
    mochi=False,
    mochi_n_hard=128,
    mochi_n_mix=128,
    mochi_n_mix_query=64,
    # baseline: the quickstart's SimCLR trained for the same number of steps
    compare_simclr=True,
    simclr_temperature=qs.DEFAULT_CONFIG["temperature"],
)

_POSITIVE_INT = {"queue_size", "mochi_n_hard", "steps", "batch_size", "knn_k", "log_every"}
_NONNEG_INT = {"mochi_n_mix", "mochi_n_mix_query"}
_BOOL = {"symmetric", "matryoshka", "mochi", "compare_simclr"}


class MocoError(ConfigError):
    """A problem with the configuration, data or workdir, explained in one paragraph."""


def make_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Returns ``DEFAULT_CONFIG`` updated with ``overrides``, validated."""
    config = merge_overrides(
        DEFAULT_CONFIG, overrides, program="The MoCo experiment", error=MocoError
    )

    def bad(key, expected):
        raise invalid(config, DEFAULT_CONFIG, key, expected, error=MocoError)

    check_numbers(
        config,
        DEFAULT_CONFIG,
        positive_int=_POSITIVE_INT,
        nonnegative_int=_NONNEG_INT,
        booleans=_BOOL,
        error=MocoError,
    )
    m = config["momentum"]
    if not isinstance(m, (int, float)) or isinstance(m, bool) or not 0 <= m <= 1:
        bad("momentum", "a number in [0, 1]")
    n_keys = config["batch_size"] * (2 if config["symmetric"] else 1)
    if config["queue_size"] < n_keys:
        bad("queue_size", f"at least the {n_keys} keys enqueued per step")
    if config["mochi"] and config["mochi_n_hard"] > config["queue_size"]:
        bad("mochi_n_hard", f"at most queue_size={config['queue_size']}")
    # the shared keys go through the quickstart's own validation
    try:
        shared = qs.make_config(
            {k: config[k] for k in _SHARED} | {"temperature": config["simclr_temperature"]}
        )
    except qs.QuickstartError as e:
        raise MocoError(str(e)) from e
    config.update({k: shared[k] for k in _SHARED})
    v = config["temperature"]
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
        bad("temperature", "a positive number")
    return config


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------


def moco_loss(q, k, queue, key, c):
    """MoCo loss of queries ``q`` against keys ``k`` and the queue (+ MoCHi), per config."""
    extra = None
    if c["mochi"]:
        extra = parallel.mochi_negatives(
            q,
            queue,
            key,
            n_hard=c["mochi_n_hard"],
            n_mix=c["mochi_n_mix"],
            n_mix_query=c["mochi_n_mix_query"],
        )
    full = c["dims"][-1]
    widths = c["dims"] if c["matryoshka"] else (full,)
    total = 0.0
    for m in widths:
        total = total + parallel.moco_info_nce(
            q[:, :m],
            k[:, :m],
            queue.keys[:, :m],
            temperature=c["temperature"],
            extra_negatives=extra if m == full else None,
        )
    return total


# ----------------------------------------------------------------------------------------------
# Train
# ----------------------------------------------------------------------------------------------


def _train_moco(c: dict[str, Any], workdir: Path, mesh, train) -> tuple[Any, dict]:
    # Model and optimizer (the online/query encoder), replicated over the mesh.
    model = qs.SimCLRModel(c, rngs=nnx.Rngs(c["seed"]))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, c["learning_rate"], min(100, c["steps"] // 10 + 1), c["steps"]
    )
    optimizer = nnx.Optimizer(
        model, optax.adamw(schedule, weight_decay=c["weight_decay"]), wrt=nnx.Param
    )
    # Momentum (key) encoder: starts as a copy of the query encoder; updated by EMA only.
    model_def, key_params, _ = nnx.split(model, nnx.Param, ...)
    key_params = jax.tree.map(jnp.copy, key_params)
    width = c["dims"][-1]
    queue = parallel.KeyQueue.init(c["queue_size"], width, key=jax.random.key(c["seed"] + 2))
    arrays = {
        "model": nnx.state(model),
        "opt": nnx.state(optimizer),
        "key_params": key_params,
        "queue": {"keys": queue.keys, "ptr": queue.ptr},
        "rng": jax.random.key(c["seed"] + 1),
    }
    state = {**jax.device_put(arrays, parallel.replicated(mesh)), "data_position": np.int64(0)}

    # Checkpoint restore (or fresh init).
    resumable = {"data_dir", "devices", "steps", "ckpt_every", "keep_checkpoints", "log_every"}
    resumable |= {"knn_k"}
    resumable |= {"knn_temperature", "compare_simclr"}
    ckpt_config = json.loads(json.dumps({k: v for k, v in c.items() if k not in resumable}))
    ckpt = checkpoint.Checkpointer(
        workdir / "checkpoints",
        save_every=c["ckpt_every"],
        keep=c["keep_checkpoints"],
        config=ckpt_config,
    )
    state, start = experiment.resume(ckpt, state, program="moco")
    nnx.update(model, state["model"])
    nnx.update(optimizer, state["opt"])
    key_params = state["key_params"]
    queue = parallel.KeyQueue(**state["queue"])

    aug = dict(
        max_shift=c["aug_max_shift"],
        noise_std=c["aug_noise_std"],
        cutout_size=c["aug_cutout_size"],
        cutout_prob=c["aug_cutout_prob"],
    )
    graphdef, train_state = nnx.split((model, optimizer))

    # Update step: pure and jitted; model, optimizer, key encoder and queue are donated.
    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def train_step(train_state, key_params, queue, images, rng):
        model, optimizer = nnx.merge(graphdef, train_state)
        k1, k2, k_mix1, k_mix2 = jax.random.split(rng, 4)
        x = qs._to_float(images)
        v1 = data.augment_images(k1, x, **aug)
        v2 = data.augment_images(k2, x, **aug)
        rest = nnx.state(model, nnx.Not(nnx.Param))
        key_model = nnx.merge(model_def, key_params, rest)
        keys2 = jax.lax.stop_gradient(key_model(v2))
        keys1 = jax.lax.stop_gradient(key_model(v1)) if c["symmetric"] else None

        def objective(m):
            loss = moco_loss(m(v1), keys2, queue, k_mix1, c)
            if c["symmetric"]:
                loss = 0.5 * (loss + moco_loss(m(v2), keys1, queue, k_mix2, c))
            return loss

        loss, grads = nnx.value_and_grad(objective)(model)
        optimizer.update(model, grads)
        key_params = parallel.ema_update(
            key_params, nnx.state(model, nnx.Param), momentum=c["momentum"]
        )
        new_keys = keys2 if keys1 is None else jnp.concatenate([keys2, keys1])
        queue = queue.update(new_keys)
        return nnx.state((model, optimizer)), key_params, queue, loss

    base_key = state["rng"]
    pipeline = data.make_pipeline(
        train, batch_size=c["batch_size"], seed=c["seed"], start_step=start
    )

    def step_fn(carry, batch, step):
        images = parallel.shard_batch(mesh, batch["image"])
        *carry, loss = train_step(*carry, images, jax.random.fold_in(base_key, step))
        return tuple(carry), {"moco_loss": loss}

    def saveable(carry, done):
        train_state, key_params, queue = carry
        nnx.update((model, optimizer), train_state)
        return {
            "model": nnx.state(model),
            "opt": nnx.state(optimizer),
            "key_params": key_params,
            "queue": {"keys": queue.keys, "ptr": queue.ptr},
            "rng": base_key,
            "data_position": np.int64(done),
        }

    t0 = time.perf_counter()
    try:
        with experiment.MetricsLog(workdir / "metrics.jsonl") as log, jax.set_mesh(mesh):
            (train_state, key_params, queue), history = experiment.train_loop(
                step_fn,
                (train_state, key_params, queue),
                iter(pipeline),
                steps=c["steps"],
                start=start,
                log_every=c["log_every"],
                metrics_log=log,
                checkpointer=ckpt,
                saveable=saveable,
                desc="moco",
                show="moco_loss",
                finite=("moco_loss",),
            )
    finally:
        ckpt.close()
    curve = [(r["step"], r["moco_loss"]) for r in history]
    nnx.update((model, optimizer), train_state)
    timings = {"train_s": time.perf_counter() - t0, "train_steps_run": c["steps"] - start}
    return model, {"curve": curve, "timings": timings}


def _train_simclr(c: dict[str, Any], workdir: Path, mesh, train):
    """The quickstart's SimCLR trainer, same model, data, schedule and number of steps."""
    qc = qs.make_config({k: c[k] for k in _SHARED} | {"temperature": c["simclr_temperature"]})
    run = qs._Run(config=qc, workdir=workdir, mesh=mesh)
    workdir.mkdir(parents=True, exist_ok=True)
    qs._train(run, train)
    return run.model, {"curve": run.losses, "timings": run.timings}


# ----------------------------------------------------------------------------------------------
# Evaluators
# ----------------------------------------------------------------------------------------------


def _knn_per_dim(model, c, train, test) -> dict[int, float]:
    tr, te = qs._embed(model, train["image"]), qs._embed(model, test["image"])
    return {
        m: float(
            analysis.knn_accuracy(
                tr[:, :m],
                train["label"],
                te[:, :m],
                test["label"],
                k=c["knn_k"],
                temperature=c["knn_temperature"],
            )
        )
        for m in c["dims"]
    }


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _write_report(c, workdir: Path, knn: dict[str, dict[int, float]], runs: dict) -> None:
    from jaxemb.analysis import plots

    names = list(knn)
    lines = [
        "# MoCo v2 on digits",
        "",
        f"MoCo v2 (queue {c['queue_size']}, momentum {c['momentum']}, τ {c['temperature']}, "
        f"symmetric={c['symmetric']}, MoCHi={c['mochi']}) with the quickstart's model, "
        f"{c['steps']} steps of batch {c['batch_size']}; kNN (k={c['knn_k']}) accuracy on the "
        "held-out test split per Matryoshka width.",
        "",
        "| dims | " + " | ".join(names) + " |",
        "|---:|" + "---:|" * len(names),
    ]
    for m in c["dims"]:
        lines.append(f"| {m} | " + " | ".join(f"{knn[n][m]:.3f}" for n in names) + " |")
    curve = runs["moco"]["curve"]
    if curve:
        steps, vals = zip(*curve)
        plots.save(plots.loss_curve(list(steps), list(vals)), workdir / "loss.png")
        lines += ["", "![MoCo training loss](loss.png)"]
    lines += [
        "",
        "Timings: "
        + ", ".join(f"{n} {runs[n]['timings'].get('train_s', 0):.1f} s" for n in runs)
        + ".",
        "",
    ]
    (workdir / "report.md").write_text("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------


def train_and_evaluate(config: dict[str, Any], workdir: str | Path) -> dict[str, Any]:
    """Trains MoCo (and, with ``compare_simclr``, the quickstart's SimCLR) and evaluates kNN.

    Args:
      config: a config (see :func:`make_config`); unknown keys are rejected.
      workdir: output directory: MoCo checkpoints in ``workdir/checkpoints``, the SimCLR
        baseline in ``workdir/simclr``, ``metrics.jsonl`` and ``report.md``.

    Returns:
      ``{"knn": {"moco": {dim: acc}, "simclr": {dim: acc}}, "steps": ..., "timings": ...}``
      (``"simclr"`` only with ``compare_simclr``), also the last line of ``metrics.jsonl``.
    """
    c = make_config(dict(config))
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise MocoError(f"The workdir {str(workdir)!r} exists but is not a directory.")
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = qs.make_run_mesh(c)

    # Input pipeline.
    try:
        train = data.load_arrays("digits", "train", data_dir=c["data_dir"])
        test = data.load_arrays("digits", "test", data_dir=c["data_dir"])
    except (OSError, ValueError) as e:
        raise MocoError(f"Could not prepare or read the digits dataset: {e}") from e

    runs = {}
    model, runs["moco"] = _train_moco(c, workdir, mesh, train)
    knn = {"moco": _knn_per_dim(model, c, train, test)}
    if c["compare_simclr"]:
        model, runs["simclr"] = _train_simclr(c, workdir / "simclr", mesh, train)
        knn["simclr"] = _knn_per_dim(model, c, train, test)
    _write_report(c, workdir, knn, runs)
    summary = {
        "final": True,
        "steps": c["steps"],
        "knn": knn,
        "timings": {n: r["timings"] for n, r in runs.items()},
    }
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(summary) + "\n")
    return summary


def _summarize(config: dict[str, Any], summary: dict[str, Any], workdir: str, seconds: float):
    del workdir
    full = config["dims"][-1]
    parts = [f"{n} {acc[full]:.3f}" for n, acc in summary["knn"].items()]
    return f"kNN@{full} after {config['steps']} steps ({seconds:.0f} s): " + ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    return run_main(
        argv,
        program="moco",
        description=__doc__.split("\n\n")[0],
        defaults=DEFAULT_CONFIG,
        default_workdir="runs/moco",
        make_config=make_config,
        train_and_evaluate=train_and_evaluate,
        summarize=_summarize,
        errors=(MocoError, qs.QuickstartError, checkpoint.CheckpointConfigError),
    )


if __name__ == "__main__":
    sys.exit(main())
