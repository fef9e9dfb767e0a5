"""Train any jaxemb sparse autoencoder on embeddings and write a report.

Reads top to bottom in named sections (big_vision style): config, input, mesh, model and
optimizer, sharding, checkpoint restore, train loop, evaluation, report.

Inputs (``source=``):

* ``planted_dictionary`` (default): the embedded synthetic dataset with a known dictionary, so
  the report also gives the recovery of the true atoms (MMCS, fraction above 0.9 cosine);
  ``planted_config="small"`` is a quick variant.
* a ``.npy`` file of ``[rows, dim]`` float embeddings, memory-mapped (batches are read by row
  index; the file is never loaded whole), or a ``.npz`` file (``npz_key=`` picks the array;
  uncompressed members are memory-mapped too).
* ``tfds:NAME[:SPLIT]``: a TFDS dataset prepared in array_record format; ``feature=`` names the
  embedding feature.

Run it directly::

    python -m experiments.train_sae --workdir runs/sae variant=topk d_sae=512 k=8 steps=3000
    python -m experiments.train_sae --workdir runs/emb source=embeddings.npy d_sae=8192 k=32

Every ``key=value`` overrides a field of ``TrainSAEConfig`` (``--help`` lists them). Re-running
with the same workdir resumes from the last checkpoint. Writes ``report.md``, ``density.png``,
``metrics.jsonl`` and the trained SAE in the SAELens layout under ``sae/``
(``jaxemb.sae.load_sae`` reads it back).
"""

from __future__ import annotations

import dataclasses
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxemb import checkpoint, data, experiment, parallel, sae
from jaxemb.analysis import plots
from jaxemb.experiment import option

# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


class TrainSAEError(experiment.ConfigError):
    """A problem with the configuration, data or workdir, explained in one paragraph."""


@dataclasses.dataclass(frozen=True)
class TrainSAEConfig(experiment.Config):
    """train_sae's settings (``key=value`` on the command line; r: may change on resume)."""

    program: ClassVar[str] = "train_sae"
    error: ClassVar[type[experiment.ConfigError]] = TrainSAEError

    seed: int = option(0, minimum=0, help="model init and data order seed")
    data_dir: str | None = option(
        None, resumable=True, help="TFDS data directory (None: $JAXEMB_DATA_DIR or ~/.cache)"
    )
    # input
    source: str = option(
        "planted_dictionary",
        help="'planted_dictionary', a .npy/.npz path of [rows, dim] floats or 'tfds:NAME[:SPLIT]'",
    )
    planted_config: str = option(
        "default", choices=("default", "small"), help="planted_dictionary config"
    )
    npz_key: str | None = option(None, help="array inside a .npz (None: its only array)")
    feature: str = option("x", help="feature holding the embedding in a TFDS example")
    # model
    variant: str = option("topk", help="a name in jaxemb.sae.sae_variants()")
    d_sae: int = option(512, minimum=1, help="latents")
    k: int = option(8, minimum=1, help="active latents (MatchingPursuit: its steps)")
    variant_kwargs: dict = option({}, help="extra constructor arguments, e.g. {'l1_coef': 3.0}")
    dead_threshold: int | None = option(
        None, minimum=0, help="tokens without firing before a latent is dead (None: default)"
    )
    init_b_dec: str = option(
        "geometric_median", choices=("geometric_median", "mean", "none"), help="b_dec init"
    )
    normalize_input: bool = option(False, help="scale inputs to E||x||^2 = d_in")
    # training
    steps: int = option(2000, minimum=1, resumable=True, help="training steps")
    batch_size: int = option(1024, minimum=1, help="global batch size")
    lr: float = option(2e-3, positive=True, help="Adam learning rate")
    lr_warmup: int = option(100, minimum=0, help="linear warm-up steps")
    model_axis: int = option(1, minimum=1, help="> 1 shards the latents over a model axis")
    ckpt_every: int = option(500, minimum=1, resumable=True, help="checkpoint interval (steps)")
    keep_checkpoints: int = option(2, minimum=1, resumable=True, help="checkpoints kept")
    log_every: int = option(50, minimum=1, resumable=True, help="metrics interval (steps)")
    # evaluation and report
    eval_rows: int = option(8192, minimum=1, resumable=True, help="rows evaluated")
    top_latents: int = option(8, minimum=1, resumable=True, help="latents in the report")
    top_n: int = option(8, minimum=1, resumable=True, help="top examples per latent")
    families: bool = option(True, resumable=True, help="feature families when d_sae <= 4096")
    family_threshold: float = option(
        0.5, minimum=0, maximum=1, resumable=True, help="family edge threshold"
    )

    def check(self) -> None:
        variants = sae.sae_variants()
        if self.variant not in variants:
            raise self.invalid("variant", f"one of {sorted(variants)}")
        try:  # the variant's keys before any data is read (their values: _build_model)
            sae.sae_configs()[self.variant].check_keys(self.variant_kwargs)
        except ValueError as e:
            raise self.error(f"variant_kwargs: {e}.") from e
        if self.k > self.d_sae:
            raise self.invalid("k", f"at most d_sae={self.d_sae}")
        if not self.source:
            raise self.invalid("source", "'planted_dictionary', a .npy/.npz path or 'tfds:NAME'")
        n_dev = jax.device_count()
        if n_dev % self.model_axis:
            raise self.invalid("model_axis", f"a divisor of the {n_dev} devices")
        if self.d_sae % self.model_axis:
            raise self.invalid(
                "model_axis", f"a divisor of d_sae={self.d_sae} (latents are split evenly)"
            )
        data_axis = n_dev // self.model_axis
        if self.batch_size % data_axis:
            raise self.invalid("batch_size", f"a multiple of the {data_axis} data-axis devices")


# ----------------------------------------------------------------------------------------------
# Input
# ----------------------------------------------------------------------------------------------


class _Embeddings:
    """Row-indexed access to the training embeddings, whatever their source."""

    def __init__(self, c: TrainSAEConfig):
        self.atoms = None
        self.name = c.source
        self.feature = "x"
        source = c.source
        if source == "planted_dictionary":
            try:
                arrays = data.load_arrays(
                    "planted_dictionary",
                    "train",
                    data_dir=c.data_dir,
                    config=c.planted_config,
                )
                self.atoms = data.planted_dictionary_atoms(
                    data_dir=c.data_dir, config=c.planted_config
                )
            except (OSError, ValueError) as e:
                raise TrainSAEError(
                    f"Could not prepare or read the planted_dictionary dataset: {e} It needs no "
                    "download; point data_dir at a writable directory and run again."
                ) from e
            self.name = f"planted_dictionary/{c.planted_config}"
            self._set_columns({"x": arrays["x"]}, source)
        elif source.startswith("tfds:"):
            parts = source[len("tfds:") :].split(":")
            name, split = parts[0], (parts[1] if len(parts) > 1 else "train")
            try:
                config = c.planted_config if name == "planted_dictionary" else None
                self.columns = data.data_source(name, split, data_dir=c.data_dir, config=config)
            except ValueError as e:
                raise TrainSAEError(str(e)) from e
            self.feature = c.feature
            if len(self.columns) == 0:
                raise TrainSAEError(f"The TFDS source {source!r} is empty.")
            first = self.columns[0]
            if self.feature not in first:
                raise TrainSAEError(
                    f"The TFDS dataset {name!r} has no feature {self.feature!r}; its features are "
                    f"{sorted(first)}. Pass feature=<name of the embedding feature>."
                )
            self._check(np.asarray(first[self.feature])[None], f"{source} feature {self.feature!r}")
            self.n = len(self.columns)
            self.d_in = int(np.asarray(first[self.feature]).shape[0])
        elif source.endswith(".npy") or source.endswith(".npz"):
            path = Path(source).expanduser()
            if not path.is_file():
                raise TrainSAEError(
                    f"The embeddings file {str(path)!r} does not exist. Pass source= with the path "
                    "of a .npy or .npz file holding a [rows, dim] float array."
                )
            try:
                array = _open_npy(path) if path.suffix == ".npy" else _open_npz(path, c.npz_key)
            except (OSError, ValueError, zipfile.BadZipFile) as e:
                if isinstance(e, TrainSAEError):
                    raise
                raise TrainSAEError(f"Could not read the embeddings file {str(path)!r}: {e}") from e
            self._set_columns({"x": array}, str(path))
        else:
            raise TrainSAEError(
                f"source={source!r} is not a known input: use 'planted_dictionary', the path of a "
                ".npy or .npz file of [rows, dim] float embeddings, or 'tfds:NAME[:SPLIT]' with "
                "feature=<embedding feature>."
            )

    def _set_columns(self, columns: dict[str, Any], where: str) -> None:
        x = columns["x"]
        self._check(x, where)
        self.columns = columns
        self.n, self.d_in = int(x.shape[0]), int(x.shape[1])

    @staticmethod
    def _check(x: Any, where: str) -> None:
        if x.ndim != 2:
            raise TrainSAEError(
                f"The embeddings in {where} have shape {list(x.shape)} (rank {x.ndim}); train_sae "
                "needs a rank-2 [rows, dim] array of float embeddings, one row per example. "
                "Reshape (or flatten token axes) before saving it."
            )
        if not np.issubdtype(x.dtype, np.floating):
            raise TrainSAEError(
                f"The embeddings in {where} have dtype {x.dtype}; train_sae needs floats "
                "(float16, float32, float64)."
            )
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise TrainSAEError(f"The embeddings in {where} are empty (shape {list(x.shape)}).")

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """Float32 ``[len(indices), d_in]`` rows, read by index."""
        indices = np.asarray(indices)
        if isinstance(self.columns, dict):
            return np.asarray(self.columns["x"][indices], np.float32)
        examples = [self.columns[int(i)] for i in indices]
        return np.stack([np.asarray(ex[self.feature], np.float32) for ex in examples])

    def pipeline(self, *, batch_size: int, seed: int, start_step: int):
        return data.make_pipeline(
            self.columns, batch_size=batch_size, seed=seed, start_step=start_step
        )

    def batch_array(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(batch[self.feature if not isinstance(self.columns, dict) else "x"])


def _open_npy(path: Path) -> np.ndarray:
    """Memory-maps a .npy file (nothing is read until rows are indexed)."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _open_npz(path: Path, key: str | None) -> np.ndarray:
    """One array of a .npz: memory-mapped when stored uncompressed, else read into memory."""
    with zipfile.ZipFile(path) as zf:
        names = [n[: -len(".npy")] for n in zf.namelist() if n.endswith(".npy")]
        if key is None:
            if len(names) != 1:
                raise TrainSAEError(
                    f"The .npz file {str(path)!r} holds the arrays {names}; pass npz_key=<name> "
                    "to pick the embeddings."
                )
            key = names[0]
        if key not in names:
            raise TrainSAEError(
                f"The .npz file {str(path)!r} has no array {key!r}; it holds {names}. Pass "
                "npz_key=<one of them>."
            )
        info = zf.getinfo(key + ".npy")
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as f:
                f.seek(info.header_offset)
                local = f.read(30)
                name_len = int.from_bytes(local[26:28], "little")
                extra_len = int.from_bytes(local[28:30], "little")
                start = info.header_offset + 30 + name_len + extra_len
                f.seek(start)
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                offset = f.tell()
            if not fortran and not dtype.hasobject:
                return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    with np.load(path, allow_pickle=False) as z:
        return z[key]


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


def _build_model(c: TrainSAEConfig, d_in: int) -> nnx.Module:
    """The variant's module, from its config class (``jaxemb.sae.sae_configs()``)."""
    config_cls = sae.sae_configs()[c.variant]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    values: dict[str, Any] = {"d_in": d_in, "d_sae": c.d_sae}
    if "k" in fields:
        values["k"] = c.k
    if "n_steps" in fields:
        values["n_steps"] = c.k
    if "group_sizes" in fields:  # Matryoshka: nested prefixes doubling in size
        sizes, rest = [], c.d_sae
        while rest > c.d_sae // 8 and len(sizes) < 3:
            sizes.append(rest - rest // 2)
            rest //= 2
        values["group_sizes"] = ((rest,) if rest else ()) + tuple(reversed(sizes))
    if c.dead_threshold is not None and "dead_threshold" in fields:
        values["dead_threshold"] = c.dead_threshold
    values.update(c.variant_kwargs)
    try:
        config = config_cls.create(values)
    except ValueError as e:
        raise TrainSAEError(f"variant_kwargs: {e}.") from e
    try:
        return config.build(rngs=nnx.Rngs(c.seed))
    except (TypeError, ValueError) as e:
        raise TrainSAEError(f"Cannot build {config_cls.module} with {values}: {e}") from e


# ----------------------------------------------------------------------------------------------
# Train
# ----------------------------------------------------------------------------------------------


def _sync(model: nnx.Module, state: Any) -> None:
    sync = getattr(sae, "sync", None)
    if sync is not None:
        sync(model, state)
    else:
        nnx.update(model, state.params)


def _train(c: TrainSAEConfig, workdir: Path, emb: _Embeddings, mesh) -> tuple[nnx.Module, dict]:
    rng = np.random.default_rng(c.seed)
    sample_idx = np.sort(rng.choice(emb.n, size=min(emb.n, 8192), replace=False))
    sample = emb.rows(sample_idx)
    # Rows with NaN/Inf stay out of the initialisation sample; the batch that holds them stops
    # training with its index below.
    sample = sample[np.all(np.isfinite(sample), axis=1)]
    if len(sample) == 0:
        raise TrainSAEError(
            "Every row of the initialisation sample holds NaN or Inf values. Clean the input "
            "embeddings before training; nothing has been trained."
        )

    # Model and optimizer.
    model = _build_model(c, emb.d_in)
    if c.init_b_dec != "none":
        sae.init_b_dec(model, jnp.asarray(sample), method=c.init_b_dec)
    if c.normalize_input:
        fit = getattr(sae, "fit_input_norm", None)
        if fit is None:
            raise TrainSAEError("normalize_input=True needs jaxemb.sae.fit_input_norm.")
        fit(model, jnp.asarray(sample))
    total = max(c.steps, c.lr_warmup)  # a run shorter than its warm-up stays in it
    schedule = sae.lr_schedule(c.lr, total_steps=total, warmup_steps=c.lr_warmup)
    train_step, state = sae.make_train_step(model, optax.adam(schedule))

    # Sharding: replicated, or latents split over the "model" axis.
    if c.model_axis > 1:
        state = jax.device_put(state, sae.state_shardings(state, model, mesh))
    else:
        state = jax.device_put(state, parallel.replicated(mesh))

    # Checkpoint restore (or fresh init).
    ckpt = checkpoint.Checkpointer(
        workdir / "checkpoints",
        save_every=c.ckpt_every,
        keep=c.keep_checkpoints,
        config=c.record(),
    )
    template = {"train": state, "data_position": np.int64(0)}
    restored, start = experiment.resume(ckpt, template, program="train_sae")
    state = restored["train"]

    pipeline = emb.pipeline(batch_size=c.batch_size, seed=c.seed, start_step=start)

    def step_fn(state, batch, step):
        x = emb.batch_array(batch)
        if not np.all(np.isfinite(x)):
            last = ckpt.latest_step()
            where = "none was written yet" if last is None else f"the last is step {last}"
            raise TrainSAEError(
                f"Batch {step} (0-based, of {c.batch_size} rows) contains NaN or Inf "
                "values; training stopped before using it, so no checkpoint holds it "
                f"({where}). Clean the input embeddings and run again; the run resumes "
                "from the last checkpoint."
            )
        return train_step(state, parallel.shard_batch(mesh, x))

    t0 = time.perf_counter()
    try:
        with experiment.MetricsLog(workdir / "metrics.jsonl") as log, jax.set_mesh(mesh):
            state, history = experiment.train_loop(
                step_fn,
                state,
                iter(pipeline),
                steps=c.steps,
                start=start,
                log_every=c.log_every,
                metrics_log=log,
                checkpointer=ckpt,
                saveable=lambda state, done: {"train": state, "data_position": np.int64(done)},
                desc=f"{c.variant}-sae",
                show="fvu",
            )
    finally:
        ckpt.close()
    _sync(model, state)
    timing = {"train_s": time.perf_counter() - t0, "steps_run": max(0, c.steps - start)}
    return model, {"history": history, **timing}


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


def _evaluate(c: TrainSAEConfig, model: nnx.Module, emb: _Embeddings) -> dict[str, Any]:
    rng = np.random.default_rng(c.seed + 1)
    idx = np.sort(rng.choice(emb.n, size=min(emb.n, c.eval_rows), replace=False))
    d_sae = c.d_sae

    @nnx.jit
    def forward(m, x):
        out = m(x)
        return out.reconstruction, out.code

    # Rows per chunk: dense [chunk, d_sae] codes stay below ~64 MB.
    chunk = int(max(1, min(4096, len(idx), (16 << 20) // d_sae)))
    streaming = sae.metrics.reconstruction_metrics(emb.d_in, d_sae)
    state = streaming.init()
    codes = []
    for s in range(0, len(idx), chunk):
        x = jnp.asarray(emb.rows(idx[s : s + chunk]))
        xh, code = forward(model, x)
        state = streaming.update(state, x, xh, code)
        codes.append(_dense_code(code, d_sae))
    n = len(idx)
    ev = streaming.compute(state)
    freq = np.asarray(ev["firing_frequency"], np.float64)
    metrics = {
        key: float(ev[key])
        for key in ("fvu", "explained_variance", "l0", "cosine", "dead_fraction")
    }
    metrics["eval_rows"] = n
    if emb.atoms is not None:
        W_dec = model.W_dec[...]
        metrics["mmcs"] = float(sae.metrics.mmcs(W_dec, emb.atoms))
        metrics["recovered_fraction"] = float(sae.metrics.recovered_fraction(W_dec, emb.atoms))

    values, rows = sae.analysis.top_activating(lambda z: z, codes, d_sae, top_n=c.top_n)
    values, rows = np.asarray(values), np.asarray(rows)
    latents = [int(j) for j in np.argsort(-freq, kind="stable") if freq[j] > 0][: c.top_latents]
    top = [
        {
            "latent": j,
            "frequency": float(freq[j]),
            "rows": [int(idx[r]) for r in rows[j] if r >= 0],
            "activations": [float(a) for a, r in zip(values[j], rows[j]) if r >= 0],
        }
        for j in latents
    ]
    families = []
    if c.families and d_sae <= 4096:
        # O'Neill et al.: spanning tree over co-occurrence normalised by firing counts.
        counts = sae.analysis.cooccurrence(codes, d_sae)
        fam = sae.analysis.feature_families(
            sae.analysis.normalized_cooccurrence(counts),
            frequency=np.asarray(counts).diagonal(),
            threshold=c.family_threshold,
        )
        families = [[int(j) for j in f] for f in fam.families]
    return {
        "metrics": metrics,
        "firing_frequency": freq,
        "top_examples": top,
        "families": families,
    }


def _dense_code(code: Any, d_sae: int) -> np.ndarray:
    """A sparse or dense code as a dense float32 NumPy ``[N, d_sae]`` matrix."""
    if isinstance(code, sae.SparseCode):
        code = sae.densify(code, d_sae)
    return np.asarray(code, np.float32)


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _write_report(c: TrainSAEConfig, workdir: Path, emb: _Embeddings, ev: dict, train: dict, mesh):
    m = ev["metrics"]
    cols = [
        ("FVU", "fvu", ".4f"),
        ("explained variance", "explained_variance", ".4f"),
        ("cosine(x, x̂)", "cosine", ".4f"),
        ("L0", "l0", ".2f"),
        ("dead fraction", "dead_fraction", ".3f"),
    ]
    if "mmcs" in m:
        cols += [("MMCS", "mmcs", ".4f"), ("recovered (cos > 0.9)", "recovered_fraction", ".3f")]
    config_cls = sae.sae_configs()[c.variant]
    params = {f.name for f in dataclasses.fields(config_cls)}
    k_text = f", k={c.k}" if "k" in params else ""
    k_text += f", n_steps={c.k}" if "n_steps" in params else ""
    report = experiment.Report(workdir, f"{c.variant} sparse autoencoder on {emb.name}")
    report.text(
        f"{config_cls.module} with d_in={emb.d_in}, d_sae={c.d_sae}{k_text}; {c.steps} steps of "
        f"batch {c.batch_size} (lr {c.lr}) on a {mesh.shape['data']}x{mesh.shape['model']} "
        f"(data x model) mesh; {emb.n} training rows. Metrics on {m['eval_rows']} rows of the "
        "training data."
    )
    report.heading("Metrics")
    report.table(
        [name for name, _, _ in cols],
        [[format(m[key], fmt) for _, key, fmt in cols]],
        align="r" * len(cols),
    )
    report.heading("Feature density")
    report.figure(plots.density_histogram(ev["firing_frequency"]), "density.png", "feature density")
    report.heading("Top-activating examples")
    report.text(
        f"Row indices (in the training data) of the {c.top_n} examples that activate the "
        f"{len(ev['top_examples'])} most frequently firing latents most, with their activations."
    )
    report.table(
        ["latent", "firing frequency", "top rows (activation)"],
        [
            [
                t["latent"],
                f"{t['frequency']:.4f}",
                ", ".join(f"{r} ({a:.3g})" for r, a in zip(t["rows"], t["activations"])),
            ]
            for t in ev["top_examples"]
        ],
        align="rrl",
    )
    if ev["families"]:
        shown = ev["families"][: c.top_latents]
        report.heading("Feature families")
        report.text(
            f"{len(ev['families'])} families: pieces of the maximum spanning tree over latent "
            "co-occurrence (normalised by each latent's firing count, O'Neill et al. 2024) "
            f"joined by edges of at least {c.family_threshold}. The parent is the family's "
            f"most frequent latent. Largest {len(shown)}:"
        )
        rows = []
        for f in shown:
            more = f" … (+{len(f) - 17})" if len(f) > 17 else ""
            rows.append([f[0], len(f), f"{', '.join(map(str, f[1:17]))}{more}"])
        report.table(["parent", "size", "members"], rows, align="rrl")
    report.text(
        f"Training: {train['steps_run']} steps this run in {train['train_s']:.1f} s. The SAE is "
        "saved in the SAELens layout in `sae/` (`jaxemb.sae.load_sae('sae')`)."
    )
    report.write()


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------


def train_and_evaluate(
    config: TrainSAEConfig | dict[str, Any], workdir: str | Path
) -> dict[str, Any]:
    """Trains an SAE, evaluates it and writes the report, metrics and the saved SAE.

    Args:
      config: a :class:`TrainSAEConfig`, or a dict of overrides of its defaults.
      workdir: output directory; checkpoints go to ``workdir/checkpoints`` and a run resumes
        from them.

    Returns:
      The summary written as the last line of ``metrics.jsonl``: the metrics (with MMCS and
      recovered fraction for planted_dictionary), the top-activating examples and timings.
    """
    c = config if isinstance(config, TrainSAEConfig) else TrainSAEConfig.create(config)
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise TrainSAEError(
            f"The workdir {str(workdir)!r} exists but is not a directory. Pass --workdir with a "
            "new or existing directory path."
        )
    emb = _Embeddings(c)  # input first: bad data fails before anything is written
    if c.top_latents > c.d_sae:
        c = c.replace(top_latents=c.d_sae)
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = parallel.make_mesh(data=-1, model=c.model_axis)
    model, train = _train(c, workdir, emb, mesh)
    ev = _evaluate(c, model, emb)
    sae.save_sae(workdir / "sae", model, format="saelens")
    _write_report(c, workdir, emb, ev, train, mesh)
    summary = {
        "final": True,
        "steps": c.steps,
        "variant": c.variant,
        "metrics": ev["metrics"],
        "top_examples": ev["top_examples"],
        "families": ev["families"],
        "timings": {"train_s": train["train_s"], "steps_run": train["steps_run"]},
    }
    with experiment.MetricsLog(workdir / "metrics.jsonl") as log:
        log.write(summary)
    return summary


def _summarize(config: TrainSAEConfig, summary: dict[str, Any], workdir: str, seconds: float):
    m = summary["metrics"]
    extra = f", recovered {m['recovered_fraction']:.3f}" if "recovered_fraction" in m else ""
    return (
        f"done in {seconds:.0f} s. FVU {m['fvu']:.4f}, L0 {m['l0']:.2f}, dead "
        f"{m['dead_fraction']:.3f}{extra}. Report: {Path(workdir) / 'report.md'}"
    )


def main(argv: list[str] | None = None) -> int:
    return experiment.run_command(
        argv,
        config_class=TrainSAEConfig,
        program="train_sae",
        description=__doc__.split("\n\n")[0],
        default_workdir="runs/train_sae",
        train_and_evaluate=train_and_evaluate,
        summarize=_summarize,
    )


if __name__ == "__main__":
    sys.exit(main())
