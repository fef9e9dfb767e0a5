"""jaxemb quickstart: SimCLR + Matryoshka on handwritten digits, then probes and a TopK SAE.

Reads top to bottom in named sections (big_vision style): config, input pipeline, model and
optimizer, sharding, update step, checkpoint restore, train loop, evaluators, sparse
autoencoder, report.

Run it with the README's main command, or directly::

    python -m experiments.quickstart --workdir runs/quickstart steps=800 temperature=0.1

Every ``key=value`` overrides a field of ``QuickstartConfig`` (``--help`` lists them). Re-running
with the same workdir resumes from the last checkpoint (a finished run goes straight to
evaluation).
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
from tqdm.auto import tqdm

from jaxemb import analysis, checkpoint, data, experiment, losses, parallel, sae
from jaxemb.analysis import plots
from jaxemb.encoders import ConvEncoder, MatryoshkaHead, MLPEncoder
from jaxemb.experiment import option

# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


class QuickstartError(experiment.ConfigError):
    """A problem with the configuration, data or workdir, explained in one paragraph."""


@dataclasses.dataclass(frozen=True)
class DigitsConfig(experiment.Config):
    """Data, model, training and kNN settings of a contrastive run on digits (shared by MoCo)."""

    program: ClassVar[str] = "The quickstart"
    error: ClassVar[type[experiment.ConfigError]] = QuickstartError

    seed: int = option(0, minimum=0, help="model init, data order and augmentation seed")
    data_dir: str | None = option(
        None, resumable=True, help="TFDS data directory (None: $JAXEMB_DATA_DIR or ~/.cache)"
    )
    devices: int = option(
        -1, resumable=True, help="data-parallel over the first N devices (-1: every device)"
    )
    # model
    encoder: str = option("mlp", choices=("mlp", "conv"), help="encoder architecture")
    hidden: tuple[int, ...] = option((256, 256), positive=True, help="MLP widths (conv: channels)")
    dims: tuple[int, ...] = option(
        (4, 8, 16, 32, 64), positive=True, help="Matryoshka prefixes; the last is the width"
    )
    head_expansion: int = option(4, minimum=1, help="projection head width / embedding width")
    # training
    steps: int = option(2000, minimum=1, resumable=True, help="training steps")
    batch_size: int = option(256, minimum=1, help="global batch size")
    learning_rate: float = option(2e-3, positive=True, help="AdamW peak learning rate")
    weight_decay: float = option(1e-4, minimum=0, help="AdamW weight decay")
    temperature: float = option(0.2, positive=True, help="contrastive loss temperature")
    aug_max_shift: int = option(1, minimum=0, help="random shift in pixels")
    aug_noise_std: float = option(0.1, minimum=0, help="Gaussian pixel noise")
    aug_cutout_size: int = option(2, minimum=0, help="cut-out square side (pixels)")
    aug_cutout_prob: float = option(0.5, minimum=0, maximum=1, help="cut-out probability")
    ckpt_every: int = option(500, minimum=1, resumable=True, help="checkpoint interval (steps)")
    keep_checkpoints: int = option(2, minimum=1, resumable=True, help="checkpoints kept")
    log_every: int = option(50, minimum=1, resumable=True, help="metrics interval (steps)")
    # evaluation
    knn_k: int = option(20, minimum=1, resumable=True, help="kNN neighbours")
    knn_temperature: float = option(0.07, positive=True, resumable=True, help="kNN temperature")

    def check(self) -> None:
        if not self.dims or any(b <= a for a, b in zip(self.dims[:-1], self.dims[1:])):
            raise self.invalid(
                "dims", "a strictly increasing tuple of positive integers, e.g. (4, 8, 16, 32, 64)"
            )
        if not (self.devices == -1 or 1 <= self.devices <= jax.device_count()):
            raise self.invalid(
                "devices", f"-1 (every device) or an integer in [1, {jax.device_count()}]"
            )


@dataclasses.dataclass(frozen=True)
class QuickstartConfig(DigitsConfig):
    """The quickstart's settings (``key=value`` on the command line; r: may change on resume)."""

    probe_steps: int = option(300, minimum=1, resumable=True, help="linear probe iterations")
    probe_l2: float = option(1e-4, minimum=0, resumable=True, help="linear probe L2")
    # sparse autoencoder on the learned embeddings
    sae_latents: int = option(256, minimum=1, resumable=True, help="SAE latents")
    sae_k: int = option(8, minimum=1, resumable=True, help="SAE active latents")
    sae_steps: int = option(1500, minimum=1, resumable=True, help="SAE training steps")
    sae_batch_size: int = option(256, minimum=1, resumable=True, help="SAE batch size")
    sae_learning_rate: float = option(2e-3, positive=True, resumable=True, help="SAE Adam lr")
    sae_grid_latents: int = option(6, minimum=1, resumable=True, help="latents in the SAE grid")

    def check(self) -> None:
        super().check()
        if self.sae_k > self.sae_latents:
            raise self.invalid("sae_k", f"at most sae_latents={self.sae_latents}")


def make_run_mesh(c: DigitsConfig):
    """The data-parallel mesh of a run: every device, or the first ``c.devices``."""
    return parallel.make_mesh(devices=None if c.devices == -1 else jax.devices()[: c.devices])


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


class SimCLRModel(nnx.Module):
    """Encoder (the embedding that is evaluated) + Matryoshka-nested projection head."""

    def __init__(self, config: DigitsConfig, *, rngs: nnx.Rngs):
        width = config.dims[-1]
        if config.encoder == "mlp":
            self.encoder = MLPEncoder(64, width, hidden=config.hidden, rngs=rngs)
        else:
            self.encoder = ConvEncoder(1, width, channels=config.hidden, rngs=rngs)
        self.head = MatryoshkaHead(config.dims, expansion=config.head_expansion, rngs=rngs)

    def embed(self, images: jax.Array) -> jax.Array:
        return self.encoder(images)

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.head(self.encoder(images))


def to_float(images) -> jax.Array:
    """Digits pixels (0..16) as float32 in [0, 1]."""
    return jnp.asarray(images, jnp.float32) / 16.0  # digits pixels are 0..16


@dataclasses.dataclass
class Run:
    """What the sections hand each other."""

    config: QuickstartConfig
    workdir: Path
    mesh: Any
    model: SimCLRModel | None = None
    losses: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Train
# ----------------------------------------------------------------------------------------------


def train_simclr(run: Run, train: dict[str, np.ndarray]) -> None:
    """Trains (or resumes) the SimCLR model of ``run.config`` on ``train``; sets ``run.model``."""
    c = run.config
    mesh = run.mesh

    # Model and optimizer, created replicated over the mesh.
    model = SimCLRModel(c, rngs=nnx.Rngs(c.seed))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, c.learning_rate, min(100, c.steps // 10 + 1), c.steps
    )
    optimizer = nnx.Optimizer(
        model, optax.adamw(schedule, weight_decay=c.weight_decay), wrt=nnx.Param
    )
    arrays = {
        "model": nnx.state(model),
        "opt": nnx.state(optimizer),
        "rng": jax.random.key(c.seed + 1),
    }
    state = {**jax.device_put(arrays, parallel.replicated(mesh)), "data_position": np.int64(0)}

    # Checkpoint restore (or fresh init).
    ckpt = checkpoint.Checkpointer(
        run.workdir / "checkpoints",
        save_every=c.ckpt_every,
        keep=c.keep_checkpoints,
        config=c.record(),
    )
    state, start = experiment.resume(ckpt, state, program="quickstart")
    nnx.update(model, state["model"])
    nnx.update(optimizer, state["opt"])

    dims = c.dims
    loss_fn = losses.matryoshka(losses.nt_xent, dims)
    aug = dict(
        max_shift=c.aug_max_shift,
        noise_std=c.aug_noise_std,
        cutout_size=c.aug_cutout_size,
        cutout_prob=c.aug_cutout_prob,
    )
    temperature = c.temperature

    # Update step: a pure jitted function of (graphdef, state) with the state donated.
    graphdef, train_state = nnx.split((model, optimizer))

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(train_state, images, key):
        model, optimizer = nnx.merge(graphdef, train_state)
        k1, k2 = jax.random.split(key)
        x = to_float(images)
        v1 = data.augment_images(k1, x, **aug)
        v2 = data.augment_images(k2, x, **aug)

        def objective(m):
            return loss_fn(m(v1), m(v2), temperature=temperature)

        loss, grads = nnx.value_and_grad(objective)(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    base_key = state["rng"]
    pipeline = data.make_pipeline(train, batch_size=c.batch_size, seed=c.seed, start_step=start)

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
                steps=c.steps,
                start=start,
                log_every=c.log_every,
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
    run.timings["train_steps_run"] = c.steps - start
    run.losses = _read_losses(metrics_path)
    run.model = model


def _read_losses(path: Path) -> list[tuple[int, float]]:
    """The loss curve of every run of this workdir (a step logged twice keeps its last value)."""
    out = {r["step"]: r["loss"] for r in experiment.MetricsLog.read(path) if "loss" in r}
    return sorted(out.items())


# ----------------------------------------------------------------------------------------------
# Evaluators
# ----------------------------------------------------------------------------------------------


def embed_images(model: SimCLRModel, images: np.ndarray, batch: int = 512) -> np.ndarray:
    """The encoder's embeddings of ``images`` (in batches), as NumPy."""
    fn = nnx.jit(lambda m, x: m.embed(to_float(x)))
    return np.concatenate(
        [np.asarray(fn(model, images[i : i + batch])) for i in range(0, len(images), batch)]
    )


def _evaluate(run: Run, train: dict, test: dict) -> dict[str, Any]:
    c = run.config
    random_model = SimCLRModel(c, rngs=nnx.Rngs(c.seed))  # the learned model's own init
    results: dict[str, Any] = {}
    for name, model in (("learned", run.model), ("random", random_model)):
        tr = embed_images(model, train["image"])
        te = embed_images(model, test["image"])
        per_dim = {}
        for m in c.dims:
            knn = analysis.knn_accuracy(
                tr[:, :m],
                train["label"],
                te[:, :m],
                test["label"],
                k=c.knn_k,
                temperature=c.knn_temperature,
            )
            probe = analysis.linear_probe(
                tr[:, :m],
                train["label"],
                te[:, :m],
                test["label"],
                l2=c.probe_l2,
                steps=c.probe_steps,
                seed=c.seed,
            )
            per_dim[m] = {"knn": float(knn), "linear_probe": float(probe.accuracy)}
        # two augmented views of the test images for alignment
        key = jax.random.key(c.seed + 7)
        x = to_float(test["image"])
        k1, k2 = jax.random.split(key)
        aug = dict(
            max_shift=c.aug_max_shift,
            noise_std=c.aug_noise_std,
            cutout_size=c.aug_cutout_size,
            cutout_prob=c.aug_cutout_prob,
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


def _train_sae(run: Run, train_emb: np.ndarray, test_emb: np.ndarray) -> dict[str, Any]:
    c = run.config
    d_in = train_emb.shape[1]
    model = sae.TopKSAE(
        d_in,
        c.sae_latents,
        k=c.sae_k,
        rngs=nnx.Rngs(c.seed),
        dead_threshold=10 * len(train_emb),
    )
    sae.init_b_dec(model, jnp.asarray(train_emb), method="geometric_median")
    train_step, state = sae.make_train_step(model, optax.adam(c.sae_learning_rate))
    pipeline = data.make_pipeline({"x": train_emb}, batch_size=c.sae_batch_size, seed=c.seed)
    t0 = time.perf_counter()
    batches = iter(pipeline)
    with jax.set_mesh(run.mesh):
        for _ in tqdm(range(c.sae_steps), desc="topk-sae", dynamic_ncols=True, disable=None):
            x = parallel.shard_batch(run.mesh, next(batches)["x"])
            state, _ = train_step(state, x)
    nnx.update(model, state.params)
    run.timings["sae_s"] = time.perf_counter() - t0

    x = jnp.asarray(test_emb)
    out = model(x)
    dense = sae.densify(out.code, c.sae_latents)
    freq = np.asarray(
        sae.metrics.firing_frequency(model.encode(jnp.asarray(train_emb)), c.sae_latents)
    )
    metrics = {
        "fvu": float(sae.metrics.fvu(x, out.reconstruction)),
        "l0": float(sae.metrics.l0(dense)),
        "dead_fraction": float(np.mean(freq == 0)),
        "cosine": float(sae.metrics.cosine(x, out.reconstruction)),
    }
    values, indices = sae.analysis.top_activating(
        lambda b: sae.densify(model.encode(jnp.asarray(b)), c.sae_latents),
        [train_emb[i : i + 512] for i in range(0, len(train_emb), 512)],
        c.sae_latents,
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


def _write_report(run: Run, ev: dict, sae_out: dict, train: dict) -> None:
    c, dims = run.config, run.config.dims
    report = experiment.Report(run.workdir, "jaxemb quickstart report")
    report.text(
        f"SimCLR (NT-Xent, Matryoshka dims {list(dims)}) on UCI handwritten digits, "
        f"{c.encoder.upper()} encoder, {c.steps} steps of batch {c.batch_size} on "
        f"{run.mesh.size} device(s); evaluated on the held-out test split against the same "
        "architecture at its random initialisation."
    )
    report.heading("Accuracy per Matryoshka dimension (test split)")
    rows = []
    for m in dims:
        L, R = ev["learned"]["per_dim"][m], ev["random"]["per_dim"][m]
        rows.append(
            [
                m,
                f"{L['knn']:.3f}",
                f"{R['knn']:.3f}",
                f"{L['linear_probe']:.3f}",
                f"{R['linear_probe']:.3f}",
            ]
        )
    report.table(
        ["dims", "kNN learned", "kNN random init", "probe learned", "probe random init"],
        rows,
        align="rrrrr",
    )
    report.heading("Embedding geometry (test split, full width)")
    report.table(
        ["", "RankMe", "alignment", "uniformity"],
        [
            [
                name,
                f"{ev[name]['rankme']:.2f}",
                f"{ev[name]['alignment']:.3f}",
                f"{ev[name]['uniformity']:.3f}",
            ]
            for name in ("learned", "random")
        ],
    )
    sm = sae_out["metrics"]
    report.heading(
        f"TopK sparse autoencoder ({c.sae_latents} latents, k={c.sae_k}, {c.sae_steps} steps on "
        "the learned train embeddings)"
    )
    report.table(
        ["FVU (test)", "cosine(x, x̂)", "L0", "dead fraction"],
        [
            [
                f"{sm['fvu']:.4f}",
                f"{sm['cosine']:.4f}",
                f"{sm['l0']:.2f}",
                f"{sm['dead_fraction']:.3f}",
            ]
        ],
        align="rrrr",
    )
    report.heading("Plots")
    if run.losses:
        steps, vals = zip(*run.losses)
        report.figure(plots.loss_curve(list(steps), list(vals)), "loss.png", "training loss")
    curves = {
        "learned kNN": [ev["learned"]["per_dim"][m]["knn"] for m in dims],
        "random-init kNN": [ev["random"]["per_dim"][m]["knn"] for m in dims],
        "learned linear probe": [ev["learned"]["per_dim"][m]["linear_probe"] for m in dims],
        "random-init linear probe": [ev["random"]["per_dim"][m]["linear_probe"] for m in dims],
    }
    report.figure(
        plots.matryoshka_curve(list(dims), curves, ylabel="test accuracy"),
        "matryoshka.png",
        "Matryoshka curve",
    )
    fig = plots.spectrum_plot(np.asarray(ev["learned"]["spectrum"]), label="learned")
    plots.spectrum_plot(np.asarray(ev["random"]["spectrum"]), ax=fig.axes[0], label="random init")
    fig.axes[0].legend()
    report.figure(fig, "spectrum.png", "singular-value spectrum")
    grid = _latent_grid(
        train["image"],
        train["label"],
        sae_out["firing_frequency"],
        sae_out["top_values"],
        sae_out["top_indices"],
        c.sae_grid_latents,
    )
    report.figure(grid, "sae_latents.png", "SAE top-activating digits")
    report.figure(
        plots.density_histogram(sae_out["firing_frequency"]),
        "sae_density.png",
        "SAE feature density",
    )
    report.text(
        f"Timings: training {run.timings.get('train_s', 0):.1f} s "
        f"({run.timings.get('train_steps_run', 0)} steps this run), SAE "
        f"{run.timings.get('sae_s', 0):.1f} s."
    )
    report.write()


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------


def train_and_evaluate(
    config: QuickstartConfig | dict[str, Any], workdir: str | Path
) -> dict[str, Any]:
    """Trains, evaluates and writes ``workdir/report.md`` and ``workdir/metrics.jsonl``.

    Args:
      config: a :class:`QuickstartConfig`, or a dict of overrides of its defaults (unknown
        keys are rejected).
      workdir: output directory; checkpoints go to ``workdir/checkpoints`` and a run resumes
        from them.

    Returns:
      The summary written as the last line of ``metrics.jsonl``: accuracy per dimension for the
      learned and random-init encoders, RankMe, alignment, uniformity and the SAE metrics.
    """
    if not isinstance(config, QuickstartConfig):
        config = QuickstartConfig.create(config)
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise QuickstartError(
            f"The workdir {str(workdir)!r} exists but is not a directory. Pass --workdir with a "
            "new or existing directory path."
        )
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = make_run_mesh(config)
    run = Run(config=config, workdir=workdir, mesh=mesh)

    # Input pipeline.
    try:
        train = data.load_arrays("digits", "train", data_dir=config.data_dir)
        test = data.load_arrays("digits", "test", data_dir=config.data_dir)
    except (OSError, ValueError) as e:
        raise QuickstartError(
            f"Could not prepare or read the digits dataset: {e} The quickstart needs no "
            "download; it prepares the dataset from the copy shipped with jaxemb into the data "
            "directory (data_dir=..., $JAXEMB_DATA_DIR, or ~/.cache/jaxemb). Point data_dir at "
            "a writable directory and run again."
        ) from e

    train_simclr(run, train)
    ev = _evaluate(run, train, test)
    sae_out = _train_sae(run, ev.pop("learned_train_embeddings"), ev.pop("learned_test_embeddings"))
    _write_report(run, ev, sae_out, train)

    summary = {
        "final": True,
        "steps": config.steps,
        "knn": {
            name: {m: ev[name]["per_dim"][m]["knn"] for m in config.dims}
            for name in ("learned", "random")
        },
        "linear_probe": {
            name: {m: ev[name]["per_dim"][m]["linear_probe"] for m in config.dims}
            for name in ("learned", "random")
        },
        "rankme": {n: ev[n]["rankme"] for n in ("learned", "random")},
        "alignment": {n: ev[n]["alignment"] for n in ("learned", "random")},
        "uniformity": {n: ev[n]["uniformity"] for n in ("learned", "random")},
        "sae": sae_out["metrics"],
        "timings": run.timings,
    }
    with experiment.MetricsLog(workdir / "metrics.jsonl") as log:
        log.write(summary)
    return summary


def _summarize(config: QuickstartConfig, summary: dict[str, Any], workdir: str, seconds: float):
    full = config.dims[-1]
    return (
        f"done in {seconds:.0f} s. kNN@{full}: learned "
        f"{summary['knn']['learned'][full]:.3f} vs random {summary['knn']['random'][full]:.3f}; "
        f"SAE FVU {summary['sae']['fvu']:.3f}. Report: {Path(workdir) / 'report.md'}"
    )


def main(argv: list[str] | None = None) -> int:
    return experiment.run_command(
        argv,
        config_class=QuickstartConfig,
        program="quickstart",
        description=__doc__.split("\n\n")[0],
        default_workdir="runs/quickstart",
        train_and_evaluate=train_and_evaluate,
        summarize=_summarize,
    )


if __name__ == "__main__":
    sys.exit(main())
