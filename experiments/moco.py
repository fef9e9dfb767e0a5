"""MoCo v2 (momentum encoder + key queue, optional MoCHi) on handwritten digits vs SimCLR.

Reads top to bottom in named sections like ``experiments/quickstart.py``, whose model
(``SimCLRModel``: MLP encoder + Matryoshka projection head), augmentations and SimCLR trainer it
reuses: config, input pipeline, model and optimizer, momentum encoder and queue, update step,
checkpoint restore, train loop, evaluators (kNN at every Matryoshka width, for MoCo and for the
quickstart's SimCLR trained for the same number of steps), report.

Run it directly::

    python -m experiments.moco --workdir runs/moco steps=2000 mochi=True

Every ``key=value`` overrides a field of ``MocoConfig`` (``--help`` lists them). Re-running with
the same workdir resumes from the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments import quickstart as qs
from jaxemb import analysis, checkpoint, data, experiment, parallel
from jaxemb.analysis import plots
from jaxemb.experiment import option

# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


class MocoError(experiment.ConfigError):
    """A problem with the configuration, data or workdir, explained in one paragraph."""


@dataclasses.dataclass(frozen=True)
class MocoConfig(qs.DigitsConfig):
    """MoCo v2 on digits: the quickstart's data, model and training keys plus MoCo's own."""

    program: ClassVar[str] = "The MoCo experiment"
    error: ClassVar[type[experiment.ConfigError]] = MocoError

    # MoCo v2 (Chen et al. 2020): τ = 0.2; a queue of a few batches and a faster momentum suit
    # the 1,437 training digits and the short schedule (ImageNet uses K = 65536, m = 0.999).
    queue_size: int = option(1024, minimum=1, help="keys in the queue")
    momentum: float = option(0.99, minimum=0, maximum=1, help="EMA momentum of the key encoder")
    symmetric: bool = option(True, help="also score view 2's queries against view 1's keys")
    matryoshka: bool = option(True, help="sum the loss over the Matryoshka prefixes")
    # MoCHi (Kalantidis et al. 2020) on the full-width term
    mochi: bool = option(False, help="add MoCHi mixed hard negatives")
    mochi_n_hard: int = option(128, minimum=1, help="MoCHi: hardest queue negatives mixed")
    mochi_n_mix: int = option(128, minimum=0, help="MoCHi: negative-negative mixes")
    mochi_n_mix_query: int = option(64, minimum=0, help="MoCHi: query-negative mixes")
    # baseline: the quickstart's SimCLR trained for the same number of steps
    compare_simclr: bool = option(
        True, resumable=True, help="also train the quickstart's SimCLR for comparison"
    )
    simclr_temperature: float = option(0.2, positive=True, help="the SimCLR baseline's τ")

    def check(self) -> None:
        super().check()
        n_keys = self.batch_size * (2 if self.symmetric else 1)
        if self.queue_size < n_keys:
            raise self.invalid("queue_size", f"at least the {n_keys} keys enqueued per step")
        if self.mochi and self.mochi_n_hard > self.queue_size:
            raise self.invalid("mochi_n_hard", f"at most queue_size={self.queue_size}")


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------


def moco_loss(q, k, queue, key, c):
    """MoCo loss of queries ``q`` against keys ``k`` and the queue (+ MoCHi), per config."""
    extra = None
    if c.mochi:
        extra = parallel.mochi_negatives(
            q,
            queue,
            key,
            n_hard=c.mochi_n_hard,
            n_mix=c.mochi_n_mix,
            n_mix_query=c.mochi_n_mix_query,
        )
    full = c.dims[-1]
    widths = c.dims if c.matryoshka else (full,)
    total = 0.0
    for m in widths:
        total = total + parallel.moco_info_nce(
            q[:, :m],
            k[:, :m],
            queue.keys[:, :m],
            temperature=c.temperature,
            extra_negatives=extra if m == full else None,
        )
    return total


# ----------------------------------------------------------------------------------------------
# Train
# ----------------------------------------------------------------------------------------------


def _train_moco(c: MocoConfig, workdir: Path, mesh, train) -> tuple[Any, dict]:
    # Model and optimizer (the online/query encoder), replicated over the mesh.
    model = qs.SimCLRModel(c, rngs=nnx.Rngs(c.seed))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, c.learning_rate, min(100, c.steps // 10 + 1), c.steps
    )
    optimizer = nnx.Optimizer(
        model, optax.adamw(schedule, weight_decay=c.weight_decay), wrt=nnx.Param
    )
    # Momentum (key) encoder: starts as a copy of the query encoder; updated by EMA only.
    model_def, key_params, _ = nnx.split(model, nnx.Param, ...)
    key_params = jax.tree.map(jnp.copy, key_params)
    width = c.dims[-1]
    queue = parallel.KeyQueue.init(c.queue_size, width, key=jax.random.key(c.seed + 2))
    arrays = {
        "model": nnx.state(model),
        "opt": nnx.state(optimizer),
        "key_params": key_params,
        "queue": {"keys": queue.keys, "ptr": queue.ptr},
        "rng": jax.random.key(c.seed + 1),
    }
    state = {**jax.device_put(arrays, parallel.replicated(mesh)), "data_position": np.int64(0)}

    # Checkpoint restore (or fresh init).
    ckpt = checkpoint.Checkpointer(
        workdir / "checkpoints",
        save_every=c.ckpt_every,
        keep=c.keep_checkpoints,
        config=c.record(),
    )
    state, start = experiment.resume(ckpt, state, program="moco")
    nnx.update(model, state["model"])
    nnx.update(optimizer, state["opt"])
    key_params = state["key_params"]
    queue = parallel.KeyQueue(**state["queue"])

    aug = dict(
        max_shift=c.aug_max_shift,
        noise_std=c.aug_noise_std,
        cutout_size=c.aug_cutout_size,
        cutout_prob=c.aug_cutout_prob,
    )
    graphdef, train_state = nnx.split((model, optimizer))

    # Update step: pure and jitted; model, optimizer, key encoder and queue are donated.
    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def train_step(train_state, key_params, queue, images, rng):
        model, optimizer = nnx.merge(graphdef, train_state)
        k1, k2, k_mix1, k_mix2 = jax.random.split(rng, 4)
        x = qs.to_float(images)
        v1 = data.augment_images(k1, x, **aug)
        v2 = data.augment_images(k2, x, **aug)
        rest = nnx.state(model, nnx.Not(nnx.Param))
        key_model = nnx.merge(model_def, key_params, rest)
        keys2 = jax.lax.stop_gradient(key_model(v2))
        keys1 = jax.lax.stop_gradient(key_model(v1)) if c.symmetric else None

        def objective(m):
            loss = moco_loss(m(v1), keys2, queue, k_mix1, c)
            if c.symmetric:
                loss = 0.5 * (loss + moco_loss(m(v2), keys1, queue, k_mix2, c))
            return loss

        loss, grads = nnx.value_and_grad(objective)(model)
        optimizer.update(model, grads)
        key_params = parallel.ema_update(
            key_params, nnx.state(model, nnx.Param), momentum=c.momentum
        )
        new_keys = keys2 if keys1 is None else jnp.concatenate([keys2, keys1])
        queue = queue.update(new_keys)
        return nnx.state((model, optimizer)), key_params, queue, loss

    base_key = state["rng"]
    pipeline = data.make_pipeline(train, batch_size=c.batch_size, seed=c.seed, start_step=start)

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
                steps=c.steps,
                start=start,
                log_every=c.log_every,
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
    timings = {"train_s": time.perf_counter() - t0, "train_steps_run": c.steps - start}
    return model, {"curve": curve, "timings": timings}


def _train_simclr(c: MocoConfig, workdir: Path, mesh, train):
    """The quickstart's SimCLR trainer, same model, data, schedule and number of steps."""
    shared = {f.name: getattr(c, f.name) for f in dataclasses.fields(qs.DigitsConfig)}
    qc = qs.QuickstartConfig.create(shared | {"temperature": c.simclr_temperature})
    run = qs.Run(config=qc, workdir=workdir, mesh=mesh)
    workdir.mkdir(parents=True, exist_ok=True)
    qs.train_simclr(run, train)
    return run.model, {"curve": run.losses, "timings": run.timings}


# ----------------------------------------------------------------------------------------------
# Evaluators
# ----------------------------------------------------------------------------------------------


def _knn_per_dim(model, c, train, test) -> dict[int, float]:
    tr, te = qs.embed_images(model, train["image"]), qs.embed_images(model, test["image"])
    return {
        m: float(
            analysis.knn_accuracy(
                tr[:, :m],
                train["label"],
                te[:, :m],
                test["label"],
                k=c.knn_k,
                temperature=c.knn_temperature,
            )
        )
        for m in c.dims
    }


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _write_report(c: MocoConfig, workdir: Path, knn: dict[str, dict[int, float]], runs: dict):
    names = list(knn)
    report = experiment.Report(workdir, "MoCo v2 on digits")
    report.text(
        f"MoCo v2 (queue {c.queue_size}, momentum {c.momentum}, τ {c.temperature}, "
        f"symmetric={c.symmetric}, MoCHi={c.mochi}) with the quickstart's model, {c.steps} "
        f"steps of batch {c.batch_size}; kNN (k={c.knn_k}) accuracy on the held-out test split "
        "per Matryoshka width."
    )
    report.table(
        ["dims", *names],
        [[m, *(f"{knn[n][m]:.3f}" for n in names)] for m in c.dims],
        align="r" * (1 + len(names)),
    )
    curve = runs["moco"]["curve"]
    if curve:
        steps, vals = zip(*curve)
        report.figure(plots.loss_curve(list(steps), list(vals)), "loss.png", "MoCo training loss")
    report.text(
        "Timings: "
        + ", ".join(f"{n} {runs[n]['timings'].get('train_s', 0):.1f} s" for n in runs)
        + "."
    )
    report.write()


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------


def train_and_evaluate(config: MocoConfig | dict[str, Any], workdir: str | Path) -> dict[str, Any]:
    """Trains MoCo (and, with ``compare_simclr``, the quickstart's SimCLR) and evaluates kNN.

    Args:
      config: a :class:`MocoConfig`, or a dict of overrides of its defaults.
      workdir: output directory: MoCo checkpoints in ``workdir/checkpoints``, the SimCLR
        baseline in ``workdir/simclr``, ``metrics.jsonl`` and ``report.md``.

    Returns:
      ``{"knn": {"moco": {dim: acc}, "simclr": {dim: acc}}, "steps": ..., "timings": ...}``
      (``"simclr"`` only with ``compare_simclr``), also the last line of ``metrics.jsonl``.
    """
    c = config if isinstance(config, MocoConfig) else MocoConfig.create(config)
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise MocoError(f"The workdir {str(workdir)!r} exists but is not a directory.")
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = qs.make_run_mesh(c)

    # Input pipeline.
    try:
        train = data.load_arrays("digits", "train", data_dir=c.data_dir)
        test = data.load_arrays("digits", "test", data_dir=c.data_dir)
    except (OSError, ValueError) as e:
        raise MocoError(f"Could not prepare or read the digits dataset: {e}") from e

    runs = {}
    model, runs["moco"] = _train_moco(c, workdir, mesh, train)
    knn = {"moco": _knn_per_dim(model, c, train, test)}
    if c.compare_simclr:
        model, runs["simclr"] = _train_simclr(c, workdir / "simclr", mesh, train)
        knn["simclr"] = _knn_per_dim(model, c, train, test)
    _write_report(c, workdir, knn, runs)
    summary = {
        "final": True,
        "steps": c.steps,
        "knn": knn,
        "timings": {n: r["timings"] for n, r in runs.items()},
    }
    with experiment.MetricsLog(workdir / "metrics.jsonl") as log:
        log.write(summary)
    return summary


def _summarize(config: MocoConfig, summary: dict[str, Any], workdir: str, seconds: float):
    del workdir
    full = config.dims[-1]
    parts = [f"{n} {acc[full]:.3f}" for n, acc in summary["knn"].items()]
    return f"kNN@{full} after {config['steps']} steps ({seconds:.0f} s): " + ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    return experiment.run_command(
        argv,
        config_class=MocoConfig,
        program="moco",
        description=__doc__.split("\n\n")[0],
        default_workdir="runs/moco",
        train_and_evaluate=train_and_evaluate,
        summarize=_summarize,
        errors=(qs.QuickstartError,),
    )


if __name__ == "__main__":
    sys.exit(main())
