"""jaxemb quickstart: SimCLR + Matryoshka on handwritten digits, then probes and a TopK SAE.

Reads top to bottom in named sections (big_vision style): config, input pipeline, model and
optimizer, sharding, update step, checkpoint restore, train loop, evaluators, sparse
autoencoder, report.

Run it with the README's main command, or directly::

    python experiments/quickstart.py --workdir runs/quickstart steps=800 temperature=0.1

Every ``key=value`` overrides a key of ``DEFAULT_CONFIG``. Re-running with the same workdir
resumes from the last checkpoint (a finished run goes straight to evaluation).
"""

from __future__ import annotations

import dataclasses
import functools
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
from tqdm.auto import tqdm

from jaxemb import analysis, checkpoint, data, experiment, losses, parallel, sae
from jaxemb.analysis import plots
from jaxemb.config import ConfigError, check_numbers, invalid, merge_overrides, run_main
from jaxemb.encoders import ConvEncoder, MatryoshkaHead, MLPEncoder

# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------

DEFAULT_CONFIG: dict[str, Any] = dict(
    seed=0,
    data_dir=None,  # None: $JAXEMB_DATA_DIR or ~/.cache/jaxemb/tensorflow_datasets
    devices=-1,  # data-parallel mesh over the first this many devices; -1: every device
    # model
    encoder="mlp",  # "mlp" | "conv"
    hidden=(256, 256),  # MLP hidden widths (conv: channels)
    dims=(4, 8, 16, 32, 64),  # Matryoshka prefixes; the last is the embedding width
    head_expansion=4,
    # training
    steps=2000,
    batch_size=256,
    learning_rate=2e-3,
    weight_decay=1e-4,
    temperature=0.2,
    aug_max_shift=1,
    aug_noise_std=0.1,
    aug_cutout_size=2,
    aug_cutout_prob=0.5,
    ckpt_every=500,
    keep_checkpoints=2,
    log_every=50,
    # evaluation
    knn_k=20,
    knn_temperature=0.07,
    probe_steps=300,
    probe_l2=1e-4,
    # sparse autoencoder on the learned embeddings
    sae_latents=256,
    sae_k=8,
    sae_steps=1500,
    sae_batch_size=256,
    sae_learning_rate=2e-3,
    sae_grid_latents=6,
)

# Keys that may change between a run and its resumption without invalidating checkpoints.
RESUMABLE_KEYS = (
    "data_dir",
    "devices",
    "steps",
    "ckpt_every",
    "keep_checkpoints",
    "log_every",
    "knn_k",
    "knn_temperature",
    "probe_steps",
    "probe_l2",
    "sae_latents",
    "sae_k",
    "sae_steps",
    "sae_batch_size",
    "sae_learning_rate",
    "sae_grid_latents",
)

_POSITIVE_INT = {
    "steps",
    "batch_size",
    "head_expansion",
    "ckpt_every",
    "keep_checkpoints",
    "log_every",
    "knn_k",
    "probe_steps",
    "sae_latents",
    "sae_k",
    "sae_steps",
    "sae_batch_size",
    "sae_grid_latents",
}
_POSITIVE_FLOAT = {"learning_rate", "temperature", "knn_temperature", "sae_learning_rate"}
_NONNEG = {"weight_decay", "aug_max_shift", "aug_noise_std", "aug_cutout_size", "probe_l2"}


def make_run_mesh(c: dict[str, Any]):
    """The data-parallel mesh of a run: every device, or the first ``c["devices"]``."""
    n = c["devices"]
    return parallel.make_mesh(devices=None if n == -1 else jax.devices()[:n])


class QuickstartError(ConfigError):
    """A problem with the configuration, data or workdir, explained in one paragraph."""


def make_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Returns ``DEFAULT_CONFIG`` updated with ``overrides``, validated."""
    config = merge_overrides(
        DEFAULT_CONFIG, overrides, program="The quickstart", error=QuickstartError
    )
    _validate_config(config)
    return config


def _validate_config(c: dict[str, Any]) -> None:
    def bad(key, expected):
        raise invalid(c, DEFAULT_CONFIG, key, expected, error=QuickstartError)

    check_numbers(
        c,
        DEFAULT_CONFIG,
        positive_int=_POSITIVE_INT,
        positive=_POSITIVE_FLOAT,
        nonnegative=_NONNEG,
        error=QuickstartError,
    )
    if not isinstance(c["seed"], int):
        bad("seed", "an integer")
    if c["encoder"] not in ("mlp", "conv"):
        bad("encoder", "'mlp' or 'conv'")
    dims = c["dims"]
    if (
        not isinstance(dims, (tuple, list))
        or not dims
        or not all(isinstance(d, int) and d > 0 for d in dims)
        or any(b <= a for a, b in zip(dims[:-1], dims[1:]))
    ):
        bad("dims", "a strictly increasing tuple of positive integers, e.g. (4, 8, 16, 32, 64)")
    hidden = c["hidden"]
    if not isinstance(hidden, (tuple, list)) or not all(
        isinstance(h, int) and h > 0 for h in hidden
    ):
        bad("hidden", "a tuple of positive integers")
    if c["sae_k"] > c["sae_latents"]:
        bad("sae_k", f"at most sae_latents={c['sae_latents']}")
    n_dev = c["devices"]
    if (
        not isinstance(n_dev, int)
        or isinstance(n_dev, bool)
        or not (n_dev == -1 or 1 <= n_dev <= jax.device_count())
    ):
        bad("devices", f"-1 (every device) or an integer in [1, {jax.device_count()}]")
    if c["data_dir"] is not None and not isinstance(c["data_dir"], str):
        bad("data_dir", "a directory path")
    c["dims"], c["hidden"] = tuple(dims), tuple(hidden)


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


class SimCLRModel(nnx.Module):
    """Encoder (the embedding that is evaluated) + Matryoshka-nested projection head."""

    def __init__(self, config: dict[str, Any], *, rngs: nnx.Rngs):
        width = config["dims"][-1]
        if config["encoder"] == "mlp":
            self.encoder = MLPEncoder(64, width, hidden=config["hidden"], rngs=rngs)
        else:
            self.encoder = ConvEncoder(1, width, channels=config["hidden"], rngs=rngs)
        self.head = MatryoshkaHead(config["dims"], expansion=config["head_expansion"], rngs=rngs)

    def embed(self, images: jax.Array) -> jax.Array:
        return self.encoder(images)

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.head(self.encoder(images))


def _to_float(images) -> jax.Array:
    return jnp.asarray(images, jnp.float32) / 16.0  # digits pixels are 0..16


@dataclasses.dataclass
class _Run:
    """What the sections hand each other."""

    config: dict[str, Any]
    workdir: Path
    mesh: Any
    model: SimCLRModel | None = None
    losses: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Train
# ----------------------------------------------------------------------------------------------


def _train(run: _Run, train: dict[str, np.ndarray]) -> None:
    c = run.config
    mesh = run.mesh

    # Model and optimizer, created replicated over the mesh.
    model = SimCLRModel(c, rngs=nnx.Rngs(c["seed"]))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, c["learning_rate"], min(100, c["steps"] // 10 + 1), c["steps"]
    )
    optimizer = nnx.Optimizer(
        model, optax.adamw(schedule, weight_decay=c["weight_decay"]), wrt=nnx.Param
    )
    arrays = {
        "model": nnx.state(model),
        "opt": nnx.state(optimizer),
        "rng": jax.random.key(c["seed"] + 1),
    }
    state = {**jax.device_put(arrays, parallel.replicated(mesh)), "data_position": np.int64(0)}

    # Checkpoint restore (or fresh init).
    ckpt_config = {k: v for k, v in c.items() if k not in RESUMABLE_KEYS}
    ckpt_config = json.loads(json.dumps(ckpt_config))
    ckpt = checkpoint.Checkpointer(
        run.workdir / "checkpoints",
        save_every=c["ckpt_every"],
        keep=c["keep_checkpoints"],
        config=ckpt_config,
    )
    state, start = experiment.resume(ckpt, state, program="quickstart")
    nnx.update(model, state["model"])
    nnx.update(optimizer, state["opt"])

    dims = c["dims"]
    loss_fn = losses.matryoshka(losses.nt_xent, dims)
    aug = dict(
        max_shift=c["aug_max_shift"],
        noise_std=c["aug_noise_std"],
        cutout_size=c["aug_cutout_size"],
        cutout_prob=c["aug_cutout_prob"],
    )
    temperature = c["temperature"]

    # Update step: a pure jitted function of (graphdef, state) with the state donated.
    graphdef, train_state = nnx.split((model, optimizer))

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(train_state, images, key):
        model, optimizer = nnx.merge(graphdef, train_state)
        k1, k2 = jax.random.split(key)
        x = _to_float(images)
        v1 = data.augment_images(k1, x, **aug)
        v2 = data.augment_images(k2, x, **aug)

        def objective(m):
            return loss_fn(m(v1), m(v2), temperature=temperature)

        loss, grads = nnx.value_and_grad(objective)(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    base_key = state["rng"]
    pipeline = data.make_pipeline(
        train, batch_size=c["batch_size"], seed=c["seed"], start_step=start
    )

    def step_fn(train_state, batch, step):
        images = parallel.shard_batch(mesh, batch["image"])
        train_state, loss = train_step(train_state, images, jax.random.fold_in(base_key, step))
        return train_state, {"loss": loss}

    def saveable(train_state, done):
        nnx.update((model, optimizer), train_state)
        return {
            "model": nnx.state(model),
            "opt": nnx.state(optimizer),
            "rng": base_key,
            "data_position": np.int64(done),
        }

    metrics_path = run.workdir / "metrics.jsonl"
    t0 = time.perf_counter()
    try:
        with experiment.MetricsLog(metrics_path) as log, jax.set_mesh(mesh):
            train_state, history = experiment.train_loop(
                step_fn,
                train_state,
                iter(pipeline),
                steps=c["steps"],
                start=start,
                log_every=c["log_every"],
                metrics_log=log,
                checkpointer=ckpt,
                saveable=saveable,
                desc="simclr",
                extra_log=lambda done: {"lr": float(schedule(done))},
            )
    finally:
        ckpt.close()
    del history  # the whole curve, earlier runs of a resumed workdir included, is on disk
    nnx.update((model, optimizer), train_state)
    run.timings["train_s"] = time.perf_counter() - t0
    run.timings["train_steps_run"] = c["steps"] - start
    run.losses = _read_losses(metrics_path)
    run.model = model


def _read_losses(path: Path) -> list[tuple[int, float]]:
    """The loss curve of every run of this workdir (a step logged twice keeps its last value)."""
    out = {r["step"]: r["loss"] for r in experiment.MetricsLog.read(path) if "loss" in r}
    return sorted(out.items())


# ----------------------------------------------------------------------------------------------
# Evaluators
# ----------------------------------------------------------------------------------------------


def _embed(model: SimCLRModel, images: np.ndarray, batch: int = 512) -> np.ndarray:
    fn = nnx.jit(lambda m, x: m.embed(_to_float(x)))
    return np.concatenate(
        [np.asarray(fn(model, images[i : i + batch])) for i in range(0, len(images), batch)]
    )


def _evaluate(run: _Run, train: dict, test: dict) -> dict[str, Any]:
    c = run.config
    random_model = SimCLRModel(c, rngs=nnx.Rngs(c["seed"]))  # the learned model's own init
    results: dict[str, Any] = {}
    for name, model in (("learned", run.model), ("random", random_model)):
        tr = _embed(model, train["image"])
        te = _embed(model, test["image"])
        per_dim = {}
        for m in c["dims"]:
            knn = analysis.knn_accuracy(
                tr[:, :m],
                train["label"],
                te[:, :m],
                test["label"],
                k=c["knn_k"],
                temperature=c["knn_temperature"],
            )
            probe = analysis.linear_probe(
                tr[:, :m],
                train["label"],
                te[:, :m],
                test["label"],
                l2=c["probe_l2"],
                steps=c["probe_steps"],
                seed=c["seed"],
            )
            per_dim[m] = {"knn": float(knn), "linear_probe": float(probe.accuracy)}
        # two augmented views of the test images for alignment
        key = jax.random.key(c["seed"] + 7)
        x = _to_float(test["image"])
        k1, k2 = jax.random.split(key)
        aug = dict(
            max_shift=c["aug_max_shift"],
            noise_std=c["aug_noise_std"],
            cutout_size=c["aug_cutout_size"],
            cutout_prob=c["aug_cutout_prob"],
        )
        fn = nnx.jit(lambda mm, xx: mm.embed(xx))
        a = fn(model, data.augment_images(k1, x, **aug))
        b = fn(model, data.augment_images(k2, x, **aug))
        results[name] = {
            "per_dim": per_dim,
            "rankme": float(analysis.rankme(te)),
            "alignment": float(analysis.alignment(a, b)),
            "uniformity": float(analysis.uniformity(te)),
            "spectrum": np.asarray(analysis.spectrum(te)).tolist(),
        }
        if name == "learned":
            results["learned_train_embeddings"] = tr
            results["learned_test_embeddings"] = te
    return results


# ----------------------------------------------------------------------------------------------
# Sparse autoencoder on the learned embeddings
# ----------------------------------------------------------------------------------------------


def _train_sae(run: _Run, train_emb: np.ndarray, test_emb: np.ndarray) -> dict[str, Any]:
    c = run.config
    d_in = train_emb.shape[1]
    model = sae.TopKSAE(
        d_in,
        c["sae_latents"],
        k=c["sae_k"],
        rngs=nnx.Rngs(c["seed"]),
        dead_threshold=10 * len(train_emb),
    )
    sae.init_b_dec(model, jnp.asarray(train_emb), method="geometric_median")
    train_step, state = sae.make_train_step(model, optax.adam(c["sae_learning_rate"]))
    pipeline = data.make_pipeline({"x": train_emb}, batch_size=c["sae_batch_size"], seed=c["seed"])
    t0 = time.perf_counter()
    batches = iter(pipeline)
    with jax.set_mesh(run.mesh):
        for _ in tqdm(range(c["sae_steps"]), desc="topk-sae", dynamic_ncols=True, disable=None):
            x = parallel.shard_batch(run.mesh, next(batches)["x"])
            state, _ = train_step(state, x)
    nnx.update(model, state.params)
    run.timings["sae_s"] = time.perf_counter() - t0

    x = jnp.asarray(test_emb)
    out = model(x)
    dense = sae.densify(out.code, c["sae_latents"])
    freq = np.asarray(
        sae.metrics.firing_frequency(model.encode(jnp.asarray(train_emb)), c["sae_latents"])
    )
    metrics = {
        "fvu": float(sae.metrics.fvu(x, out.reconstruction)),
        "l0": float(sae.metrics.l0(dense)),
        "dead_fraction": float(np.mean(freq == 0)),
        "cosine": float(sae.metrics.cosine(x, out.reconstruction)),
    }
    values, indices = sae.analysis.top_activating(
        lambda b: sae.densify(model.encode(jnp.asarray(b)), c["sae_latents"]),
        [train_emb[i : i + 512] for i in range(0, len(train_emb), 512)],
        c["sae_latents"],
        top_n=8,
    )
    return {
        "metrics": metrics,
        "firing_frequency": freq,
        "top_values": np.asarray(values),
        "top_indices": np.asarray(indices),
    }


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _latent_grid(images, labels, freq, top_values, top_indices, n_latents):
    """Figure of the top-activating digits for the most frequently firing latents."""
    from matplotlib.figure import Figure

    order = [j for j in np.argsort(-freq) if np.isfinite(top_values[j, 0]) and freq[j] > 0]
    order = order[:n_latents]
    cols = top_indices.shape[1]
    fig = Figure(figsize=(cols * 0.9, max(1, len(order)) * 1.0), constrained_layout=True)
    axes = fig.subplots(max(1, len(order)), cols, squeeze=False)
    for r, j in enumerate(order):
        for col in range(cols):
            ax = axes[r][col]
            ax.set_xticks([])
            ax.set_yticks([])
            i = int(top_indices[j, col])
            if i < 0:
                ax.axis("off")
                continue
            ax.imshow(images[i, :, :, 0], cmap="gray_r", vmin=0, vmax=16)
            ax.set_title(str(int(labels[i])), fontsize=7, pad=1)
        axes[r][0].set_ylabel(f"latent {j}", fontsize=7)
    fig.suptitle("TopK SAE: top-activating training digits per latent (title = label)", fontsize=8)
    return fig


def _write_report(run: _Run, ev: dict, sae_out: dict, train: dict) -> dict[str, Any]:
    c, wd = run.config, run.workdir
    dims = c["dims"]
    files = {}
    if run.losses:
        steps, vals = zip(*run.losses)
        files["loss"] = plots.save(plots.loss_curve(list(steps), list(vals)), wd / "loss.png")
    curves = {
        "learned kNN": [ev["learned"]["per_dim"][m]["knn"] for m in dims],
        "random-init kNN": [ev["random"]["per_dim"][m]["knn"] for m in dims],
        "learned linear probe": [ev["learned"]["per_dim"][m]["linear_probe"] for m in dims],
        "random-init linear probe": [ev["random"]["per_dim"][m]["linear_probe"] for m in dims],
    }
    files["matryoshka"] = plots.save(
        plots.matryoshka_curve(list(dims), curves, ylabel="test accuracy"), wd / "matryoshka.png"
    )
    fig = plots.spectrum_plot(np.asarray(ev["learned"]["spectrum"]), label="learned")
    plots.spectrum_plot(np.asarray(ev["random"]["spectrum"]), ax=fig.axes[0], label="random init")
    fig.axes[0].legend()
    files["spectrum"] = plots.save(fig, wd / "spectrum.png")
    files["sae_latents"] = plots.save(
        _latent_grid(
            train["image"],
            train["label"],
            sae_out["firing_frequency"],
            sae_out["top_values"],
            sae_out["top_indices"],
            c["sae_grid_latents"],
        ),
        wd / "sae_latents.png",
    )
    files["sae_density"] = plots.save(
        plots.density_histogram(sae_out["firing_frequency"]), wd / "sae_density.png"
    )

    lines = ["# jaxemb quickstart report", ""]
    lines += [
        "SimCLR (NT-Xent, Matryoshka dims "
        f"{list(dims)}) on UCI handwritten digits, {c['encoder'].upper()} encoder, "
        f"{c['steps']} steps of batch {c['batch_size']} on {run.mesh.size} device(s); "
        "evaluated on the held-out test split against the same architecture at its random "
        "initialisation.",
        "",
        "## Accuracy per Matryoshka dimension (test split)",
        "",
        "| dims | kNN learned | kNN random init | probe learned | probe random init |",
        "|---:|---:|---:|---:|---:|",
    ]
    for m in dims:
        L, R = ev["learned"]["per_dim"][m], ev["random"]["per_dim"][m]
        lines.append(
            f"| {m} | {L['knn']:.3f} | {R['knn']:.3f} | {L['linear_probe']:.3f} | "
            f"{R['linear_probe']:.3f} |"
        )
    lines += [
        "",
        "## Embedding geometry (test split, full width)",
        "",
        "| | RankMe | alignment | uniformity |",
        "|---|---:|---:|---:|",
    ]
    for name in ("learned", "random"):
        e = ev[name]
        lines.append(
            f"| {name} | {e['rankme']:.2f} | {e['alignment']:.3f} | {e['uniformity']:.3f} |"
        )
    sm = sae_out["metrics"]
    lines += [
        "",
        f"## TopK sparse autoencoder ({c['sae_latents']} latents, k={c['sae_k']}, "
        f"{c['sae_steps']} steps on the learned train embeddings)",
        "",
        "| FVU (test) | cosine(x, x̂) | L0 | dead fraction |",
        "|---:|---:|---:|---:|",
        f"| {sm['fvu']:.4f} | {sm['cosine']:.4f} | {sm['l0']:.2f} | {sm['dead_fraction']:.3f} |",
        "",
        "## Plots",
        "",
        "![training loss](loss.png)",
        "![Matryoshka curve](matryoshka.png)",
        "![singular-value spectrum](spectrum.png)",
        "![SAE top-activating digits](sae_latents.png)",
        "![SAE feature density](sae_density.png)",
        "",
        f"Timings: training {run.timings.get('train_s', 0):.1f} s "
        f"({run.timings.get('train_steps_run', 0)} steps this run), SAE "
        f"{run.timings.get('sae_s', 0):.1f} s.",
        "",
    ]
    (wd / "report.md").write_text("\n".join(lines))
    return files


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------


def train_and_evaluate(config: dict[str, Any], workdir: str | Path) -> dict[str, Any]:
    """Trains, evaluates and writes ``workdir/report.md`` and ``workdir/metrics.jsonl``.

    Args:
      config: a full config (see :func:`make_config`); unknown keys are rejected.
      workdir: output directory; checkpoints go to ``workdir/checkpoints`` and a run resumes
        from them.

    Returns:
      The summary written as the last line of ``metrics.jsonl``: accuracy per dimension for the
      learned and random-init encoders, RankMe, alignment, uniformity and the SAE metrics.
    """
    config = make_config({k: v for k, v in config.items()})
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise QuickstartError(
            f"The workdir {str(workdir)!r} exists but is not a directory. Pass --workdir with a "
            "new or existing directory path."
        )
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = make_run_mesh(config)
    run = _Run(config=config, workdir=workdir, mesh=mesh)

    # Input pipeline.
    try:
        train = data.load_arrays("digits", "train", data_dir=config["data_dir"])
        test = data.load_arrays("digits", "test", data_dir=config["data_dir"])
    except (OSError, ValueError) as e:
        raise QuickstartError(
            f"Could not prepare or read the digits dataset: {e} The quickstart needs no "
            "download; it prepares the dataset from the copy shipped with jaxemb into the data "
            "directory (data_dir=..., $JAXEMB_DATA_DIR, or ~/.cache/jaxemb). Point data_dir at "
            "a writable directory and run again."
        ) from e

    _train(run, train)
    ev = _evaluate(run, train, test)
    sae_out = _train_sae(run, ev.pop("learned_train_embeddings"), ev.pop("learned_test_embeddings"))
    _write_report(run, ev, sae_out, train)

    summary = {
        "final": True,
        "steps": config["steps"],
        "knn": {
            name: {m: ev[name]["per_dim"][m]["knn"] for m in config["dims"]}
            for name in ("learned", "random")
        },
        "linear_probe": {
            name: {m: ev[name]["per_dim"][m]["linear_probe"] for m in config["dims"]}
            for name in ("learned", "random")
        },
        "rankme": {n: ev[n]["rankme"] for n in ("learned", "random")},
        "alignment": {n: ev[n]["alignment"] for n in ("learned", "random")},
        "uniformity": {n: ev[n]["uniformity"] for n in ("learned", "random")},
        "sae": sae_out["metrics"],
        "timings": run.timings,
    }
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(summary) + "\n")
    return summary


def _summarize(config: dict[str, Any], summary: dict[str, Any], workdir: str, seconds: float):
    full = config["dims"][-1]
    return (
        f"done in {seconds:.0f} s. kNN@{full}: learned "
        f"{summary['knn']['learned'][full]:.3f} vs random {summary['knn']['random'][full]:.3f}; "
        f"SAE FVU {summary['sae']['fvu']:.3f}. Report: {Path(workdir) / 'report.md'}"
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(
        argv,
        program="quickstart",
        description=__doc__.split("\n\n")[0],
        defaults=DEFAULT_CONFIG,
        default_workdir="runs/quickstart",
        make_config=make_config,
        train_and_evaluate=train_and_evaluate,
        summarize=_summarize,
        errors=(QuickstartError, checkpoint.CheckpointConfigError),
    )


if __name__ == "__main__":
    sys.exit(main())
