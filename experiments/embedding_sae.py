"""Features of a real sentence-embedding model: a TopK SAE on embedded Python docstrings.

Reads top to bottom in named sections (big_vision style): config, model, corpus, embeddings
(cached in the workdir as a memory-mapped ``.npy``), SAE training (data-parallel, checkpoints,
exact resume, divergence guard), evaluation (``jaxemb.sae.metrics``), interpretation (top
texts, their distinctive TF-IDF words, density, package; feature families from the maximum
spanning tree of co-occurrence; the best single-feature F1 per package), search steering
(adding ``λ · W_dec[f]`` to queries, removing a feature's contribution) and the report.

After O'Neill et al. (2024), "Disentangling Dense Embeddings with Sparse Autoencoders", and
Kim and Ghadiyaram (2025), "Concept Steerers". Data: ``python_docs``, 19,387 docstring
paragraphs of numpy, scipy, jax, flax, optax, matplotlib and the standard library.

    bash scripts/embedding_sae.sh                      # all-MiniLM-L6-v2, the default run
    .venv/bin/python -m experiments.embedding_sae --workdir runs/esae model=path/to/st_model

Every ``key=value`` overrides a field of ``EmbeddingSAEConfig`` (``--help`` lists them).
Re-running with the same workdir reuses the embeddings and resumes from the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.sparse import csr_array

from jaxemb import checkpoint, data, experiment, parallel, sae
from jaxemb.analysis import distinctive_words, label_feature_f1, plots
from jaxemb.encoders import Embedder, load_sentence_transformer, packaged_model_path
from jaxemb.experiment import option
from jaxemb.retrieval import search

# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


class EmbeddingSAEError(experiment.ConfigError):
    """A problem with the configuration, model, data or workdir, explained in one paragraph."""


@dataclasses.dataclass(frozen=True)
class EmbeddingSAEConfig(experiment.Config):
    """embedding_sae's settings (``key=value`` on the command line; r: may change on resume)."""

    program: ClassVar[str] = "embedding_sae"
    error: ClassVar[type[experiment.ConfigError]] = EmbeddingSAEError

    model: str | None = option(
        None,
        resumable=True,
        help="sentence-transformers directory (None: all-MiniLM-L6-v2 from its package)",
    )
    data_dir: str | None = option(None, resumable=True, help="TFDS data directory")
    corpus: str = option("all", choices=("all", "stdlib"), help="python_docs config")
    limit: int | None = option(
        None, minimum=1, help="a seeded sample of N texts, in stored order (None: all)"
    )
    devices: int = option(-1, resumable=True, help="data-parallel over the first N devices")
    seed: int = option(0, minimum=0, help="sample, SAE init, data order and steering seed")
    embed_batch_size: int = option(64, minimum=1, resumable=True, help="texts per encode call")
    # SAE
    d_sae: int = option(3072, minimum=1, help="latents")
    k: int = option(32, minimum=1, help="active latents per text")
    dead_threshold: int = option(
        20_000, minimum=0, help="texts without firing before a latent is dead (AuxK revives it)"
    )
    steps: int = option(2000, minimum=1, resumable=True, help="training steps")
    batch_size: int = option(1024, minimum=1, help="global batch size")
    lr: float = option(1e-3, positive=True, help="Adam learning rate")
    lr_warmup: int = option(100, minimum=0, help="linear warm-up steps")
    ckpt_every: int = option(500, minimum=1, resumable=True, help="checkpoint interval (steps)")
    keep_checkpoints: int = option(2, minimum=1, resumable=True, help="checkpoints kept")
    log_every: int = option(50, minimum=1, resumable=True, help="metrics interval (steps)")
    # interpretation
    top_n: int = option(10, minimum=1, resumable=True, help="top texts per feature")
    n_words: int = option(5, minimum=1, resumable=True, help="TF-IDF words per feature")
    report_features: int = option(10, minimum=1, resumable=True, help="features per table")
    family_threshold: float = option(
        0.3, minimum=0, maximum=1, resumable=True, help="weakest co-occurrence edge in a family"
    )
    family_plots: int = option(4, minimum=0, resumable=True, help="families drawn as trees")
    family_nodes: int = option(15, minimum=2, resumable=True, help="most nodes drawn per tree")
    # steering
    steer_features: tuple[int, ...] = option(
        (), minimum=0, resumable=True, help="features to steer with (empty: chosen by density)"
    )
    n_steer: int = option(3, minimum=1, resumable=True, help="features chosen when none given")
    steer_density: tuple[float, ...] = option(
        (0.002, 0.05), minimum=0, maximum=1, resumable=True, help="(min, max) chosen density"
    )
    steer_queries: int = option(20, minimum=1, resumable=True, help="queries per feature")
    steer_strengths: tuple[float, ...] = option(
        (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0),
        minimum=0,
        resumable=True,
        help="λ grid of the added decoder direction (embeddings are unit-norm)",
    )
    remove_fractions: tuple[float, ...] = option(
        (1.0, 0.75, 0.5, 0.25, 0.0),
        minimum=0,
        maximum=1,
        resumable=True,
        help="the feature's activation kept on removal (clamp to α · a)",
    )
    results_k: int = option(10, minimum=1, resumable=True, help="top results measured")

    def check(self) -> None:
        if self.k > self.d_sae:
            raise self.invalid("k", f"at most d_sae={self.d_sae}")
        if not (self.devices == -1 or 1 <= self.devices <= jax.device_count()):
            raise self.invalid("devices", f"-1 or an integer in [1, {jax.device_count()}]")
        n_dev = jax.device_count() if self.devices == -1 else self.devices
        if self.batch_size % n_dev:
            raise self.invalid("batch_size", f"a multiple of the {n_dev} devices")
        if any(f >= self.d_sae for f in self.steer_features):
            raise self.invalid(
                "steer_features", f"feature indices in [0, d_sae={self.d_sae}) (or empty)"
            )
        lo_hi = self.steer_density
        if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
            raise self.invalid("steer_density", "a pair (min, max) with min <= max")
        if not self.steer_strengths or not self.remove_fractions:
            raise self.invalid(
                "steer_strengths" if not self.steer_strengths else "remove_fractions",
                "at least one value",
            )


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


def model_dir(c: EmbeddingSAEConfig) -> Path:
    """The sentence-transformers directory: ``model=`` or all-MiniLM-L6-v2 from its package."""
    try:
        return packaged_model_path() if c.model is None else Path(c.model).expanduser()
    except ValueError as e:
        raise EmbeddingSAEError(f"The default model is not usable: {e}") from None


def load_model(c: EmbeddingSAEConfig) -> Embedder:
    """The embedding model; refuses a non-model directory before anything is written."""
    path = model_dir(c)
    try:
        return load_sentence_transformer(path)
    except ValueError as e:
        where = "the default model" if c.model is None else f"model={c.model!r}"
        raise EmbeddingSAEError(f"{where} is not usable: {e}") from None


def fingerprint(directory: Path) -> str:
    """SHA-256 of a model directory's files (relative paths and contents)."""
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(directory)).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# Corpus
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Corpus:
    texts: list[str]
    package: np.ndarray  # [N] str
    module: np.ndarray  # [N] str
    object: np.ndarray  # [N] str
    name: str

    def key(self) -> str:
        h = hashlib.sha256(self.name.encode())
        for t in self.texts:
            h.update(t.encode() + b"\0")
        return h.hexdigest()


def load_corpus(c: EmbeddingSAEConfig) -> Corpus:
    """python_docs/train (config ``corpus``), or a seeded sample of ``limit`` texts of it."""
    try:
        arrays = data.load_arrays("python_docs", "train", data_dir=c.data_dir, config=c.corpus)
    except (OSError, ValueError) as e:
        raise EmbeddingSAEError(f"Could not prepare or read python_docs/{c.corpus}: {e}") from e
    n = len(arrays["text"])
    keep = np.arange(n)
    if c.limit is not None and c.limit < n:
        keep = np.sort(np.random.default_rng(c.seed).choice(n, c.limit, replace=False))

    def column(name):
        return np.char.decode(arrays[name][keep], "utf-8")

    return Corpus(
        texts=[str(t) for t in column("text")],
        package=column("package"),
        module=column("module"),
        object=column("object"),
        name=f"python_docs/{c.corpus}" + (f" (sample of {len(keep)})" if len(keep) < n else ""),
    )


# ----------------------------------------------------------------------------------------------
# Embeddings (cached, memory-mapped)
# ----------------------------------------------------------------------------------------------

_CHUNK = 1024  # texts embedded between two cache updates


def embed_corpus(
    c: EmbeddingSAEConfig, model: Embedder, corpus: Corpus, key: str, workdir: Path, run: Run
) -> np.ndarray:
    """``[N, dim]`` float32 embeddings, read-only memory-mapped from ``workdir/embeddings.npy``.

    The cache is keyed by the model's files and the corpus texts (``embeddings.json``). A
    matching cache is reused (and a partial one completed); any other is rebuilt. Texts are
    embedded longest first (less padding) in chunks, and the count done is saved after each.
    """
    path, meta_path = workdir / "embeddings.npy", workdir / "embeddings.json"
    n, dim = len(corpus.texts), model.dim
    meta = None
    if meta_path.is_file() and path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            shape = np.load(path, mmap_mode="r").shape
        except (OSError, ValueError):
            meta = None
        if meta is not None and (meta.get("key") != key or shape != (n, dim)):
            print(
                f"embedding_sae: {path} holds the embeddings of another model or corpus; "
                "rebuilding it",
                flush=True,
            )
            meta = None
    if meta is None:
        np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim)).flush()
        meta = {"key": key, "model": c.model or "all-MiniLM-L6-v2", "rows": n, "dim": dim}
        meta["done"] = 0
        _write_json(meta_path, meta)
    order = np.argsort(-np.asarray([len(t) for t in corpus.texts]), kind="stable")
    done = int(meta["done"])
    t0 = time.perf_counter()
    if done < n:
        out = np.lib.format.open_memmap(path, mode="r+")
        for start in range(done, n, _CHUNK):
            rows = order[start : start + _CHUNK]
            out[rows] = model.encode_document(
                [corpus.texts[i] for i in rows], batch_size=c.embed_batch_size
            )
            out.flush()
            meta["done"] = min(n, start + _CHUNK)
            _write_json(meta_path, meta)
            print(f"embedding_sae: embedded {meta['done']}/{n} texts", flush=True)
        del out
    run.timings["embed_s"] = time.perf_counter() - t0
    run.timings["embedded_rows"] = n - done
    x = np.load(path, mmap_mode="r")
    bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
    if bad.size:
        who = "the default model" if c.model is None else f"model={c.model!r}"
        raise EmbeddingSAEError(
            f"The embeddings in {path} (from {who}) hold NaN or Inf in {bad.size} of {n} rows "
            f"(first rows {bad[:5].tolist()}: {corpus.texts[bad[0]][:60]!r}...), so no SAE can "
            "be trained on them. Delete the file to embed again, or check the model's weights; "
            "nothing has been trained."
        )
    return x


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, sort_keys=True))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# SAE training
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    config: EmbeddingSAEConfig
    workdir: Path
    mesh: Any = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)


def check_checkpoint_width(c: EmbeddingSAEConfig, workdir: Path, d_in: int) -> None:
    """Refuses a model whose width differs from the SAE checkpointed in ``workdir``."""
    path = workdir / "checkpoints" / "jaxemb_config.json"
    if not path.is_file():
        return
    try:
        stored = json.loads(path.read_text()).get("d_in")
    except (OSError, ValueError, AttributeError):
        return  # the Checkpointer explains an unreadable record
    if stored is not None and stored != d_in:
        who = "the default model (all-MiniLM-L6-v2)" if c.model is None else f"model={c.model!r}"
        raise EmbeddingSAEError(
            f"{who} gives {d_in}-dimensional embeddings, but the SAE checkpointed in "
            f"{path.parent} was trained on {stored}-dimensional ones. Pass model= with the "
            "model that run used, or a new --workdir for this model; nothing has been written."
        )


def train(run: Run, x: np.ndarray, key: str) -> tuple[nnx.Module, dict]:
    """Trains (or resumes) the TopK SAE on the embeddings; returns it and the training log."""
    c, mesh, workdir = run.config, run.mesh, run.workdir
    n, d_in = x.shape
    rng = np.random.default_rng(c.seed)
    sample = np.asarray(x[np.sort(rng.choice(n, size=min(n, 8192), replace=False))])
    model = sae.TopKSAE(
        d_in, c.d_sae, k=c.k, rngs=nnx.Rngs(c.seed), dead_threshold=c.dead_threshold
    )
    sae.init_b_dec(model, jnp.asarray(sample))
    total = max(c.steps, c.lr_warmup)
    schedule = sae.lr_schedule(c.lr, total_steps=total, warmup_steps=c.lr_warmup)
    train_step, state = sae.make_train_step(model, optax.adam(schedule))
    state = jax.device_put(state, parallel.replicated(mesh))

    ckpt = checkpoint.Checkpointer(
        workdir / "checkpoints",
        save_every=c.ckpt_every,
        keep=c.keep_checkpoints,
        config={**c.record(), "d_in": d_in, "embeddings": key},
    )
    restored, start = experiment.resume(ckpt, {"train": state}, program="embedding_sae")
    state = restored["train"]
    pipeline = data.make_pipeline({"x": x}, batch_size=c.batch_size, seed=c.seed, start_step=start)

    def step_fn(state, batch, step):
        return train_step(state, parallel.shard_batch(mesh, np.asarray(batch["x"], np.float32)))

    t0 = time.perf_counter()
    try:
        with experiment.MetricsLog(workdir / "metrics.jsonl") as log, jax.set_mesh(mesh):
            state, _ = experiment.train_loop(
                step_fn,
                state,
                iter(pipeline),
                steps=c.steps,
                start=start,
                log_every=c.log_every,
                metrics_log=log,
                checkpointer=ckpt,
                saveable=lambda state, done: {"train": state},
                desc="topk-sae",
                show="fvu",
            )
    finally:
        ckpt.close()
    sae.sync(model, state)
    run.timings["train_s"] = time.perf_counter() - t0
    run.timings["steps_run"] = max(0, c.steps - start)
    records = experiment.MetricsLog.read(workdir / "metrics.jsonl")
    history = sorted({r["step"]: r for r in records if "fvu" in r and "step" in r}.items())
    return model, {"history": [r for _, r in history]}


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------

_EVAL_CHUNK = 4096


@dataclasses.dataclass
class Codes:
    """The SAE's code of every text: ``values``/``indices`` ``[N, k]`` and their matrices."""

    values: np.ndarray
    indices: np.ndarray
    d_sae: int

    def matrix(self) -> csr_array:
        """``[N, d_sae]`` sparse activations (zeros dropped)."""
        n, k = self.values.shape
        rows = np.repeat(np.arange(n), k)
        m = csr_array(
            (self.values.ravel().astype(np.float64), (rows, self.indices.ravel())),
            shape=(n, self.d_sae),
        )
        m.eliminate_zeros()
        return m

    def sparse(self) -> sae.SparseCode:
        return sae.SparseCode(jnp.asarray(self.values), jnp.asarray(self.indices))


def evaluate(model: nnx.Module, x: np.ndarray) -> tuple[dict[str, float], Codes, np.ndarray]:
    """SAE metrics on every text (``jaxemb.sae.metrics``), the codes and firing frequencies."""

    @nnx.jit
    def forward(m, batch):
        out = m(batch)
        return out.reconstruction, out.code.values, out.code.indices

    recon, values, indices = [], [], []
    for s in range(0, len(x), _EVAL_CHUNK):
        r, v_, i_ = forward(model, jnp.asarray(x[s : s + _EVAL_CHUNK]))
        recon.append(np.asarray(r))
        values.append(np.asarray(v_))
        indices.append(np.asarray(i_))
    x_hat = np.concatenate(recon)
    codes = Codes(np.concatenate(values), np.concatenate(indices), model.d_sae)
    code = codes.sparse()
    xs = jnp.asarray(x)
    freq = np.asarray(sae.metrics.firing_frequency(code, model.d_sae))
    threshold = model.dead_threshold
    never = jnp.asarray(freq == 0, jnp.int32) * (threshold + 1)  # metrics.dead_fraction's recipe
    result = {
        "fvu": float(sae.metrics.fvu(xs, x_hat)),
        "explained_variance": float(sae.metrics.explained_variance(xs, x_hat)),
        "cosine": float(sae.metrics.cosine(xs, x_hat)),
        "l0": float(sae.metrics.l0(code)),
        "dead_fraction": float(sae.metrics.dead_fraction(never, threshold)),
        "dense_fraction": float(sae.metrics.dense_fraction(jnp.asarray(freq))),
        "rows": len(x),
    }
    return result, codes, freq


# ----------------------------------------------------------------------------------------------
# Interpretation
# ----------------------------------------------------------------------------------------------


def interpret(
    c: EmbeddingSAEConfig, model: nnx.Module, x: np.ndarray, corpus: Corpus, codes: Codes, freq
) -> dict[str, Any]:
    """Per feature: top texts, TF-IDF words, package; families; the package F1 table."""
    d_sae = model.d_sae
    encode = nnx.jit(lambda m, b: m.encode(b))
    batches = (np.asarray(x[s : s + _EVAL_CHUNK]) for s in range(0, len(x), _EVAL_CHUNK))
    top_values, top_rows = sae.analysis.top_activating(
        lambda b: encode(model, b), batches, d_sae, top_n=c.top_n
    )
    top_values, top_rows = np.asarray(top_values), np.asarray(top_rows)
    groups = [r[r >= 0] for r in top_rows]
    words = distinctive_words(corpus.texts, groups, top_k=c.n_words).words

    # the package each feature concentrates on: its share of the feature's activation mass
    acts = codes.matrix()
    packages, package_of = np.unique(corpus.package, return_inverse=True)
    onehot = csr_array(
        (np.ones(len(package_of)), (np.arange(len(package_of)), package_of)),
        shape=(len(package_of), len(packages)),
    )
    mass = (onehot.T @ acts).toarray()  # [P, d_sae]
    total = mass.sum(axis=0)
    main = np.argmax(mass, axis=0)
    share = np.where(total > 0, mass[main, np.arange(d_sae)] / np.maximum(total, 1e-30), 0.0)

    features = {
        f: {
            "feature": f,
            "density": float(freq[f]),
            "words": words[f],
            "package": str(packages[main[f]]) if total[f] > 0 else "-",
            "package_share": float(share[f]),
            "top_rows": [int(r) for r in groups[f]],
            "top_activations": [float(a) for a in top_values[f][: len(groups[f])]],
        }
        for f in range(d_sae)
    }

    # feature families (O'Neill et al.): maximum spanning tree of normalised co-occurrence
    chunks = [
        sae.SparseCode(
            jnp.asarray(codes.values[s : s + 2048]), jnp.asarray(codes.indices[s : s + 2048])
        )
        for s in range(0, len(codes.values), 2048)
    ]
    counts = sae.analysis.cooccurrence(chunks, d_sae)
    fam = sae.analysis.feature_families(
        sae.analysis.normalized_cooccurrence(counts),
        frequency=np.asarray(counts).diagonal(),
        threshold=c.family_threshold,
    )
    families = [[int(j) for j in f] for f in fam.families]

    alignment = label_feature_f1(acts, corpus.package)
    package_f1 = [
        {
            "package": str(name),
            "texts": int(n),
            "feature": int(f),
            "f1": float(f1),
            "precision": float(p),
            "recall": float(r),
            "words": words[f] if f >= 0 else [],
        }
        for name, n, f, f1, p, r in zip(*alignment, strict=True)
    ]
    return {
        "features": features,
        "families": families,
        "parent": fam.parent,
        "package_f1": package_f1,
        "package_share": share,
        "main_package": np.array([features[f]["package"] for f in range(d_sae)]),
    }


# ----------------------------------------------------------------------------------------------
# Steering search
# ----------------------------------------------------------------------------------------------


def top_results(queries: Any, rows: np.ndarray, corpus: np.ndarray, k: int) -> np.ndarray:
    """``[Q, k]`` corpus rows nearest (cosine) to each query, without the query's own row."""
    _, idx = search(jnp.asarray(queries), corpus, min(k + 1, len(corpus)), metric="cosine")
    idx = np.asarray(idx)
    out = np.empty((len(idx), min(k, len(corpus) - 1)), np.int64)
    for i, (row, found) in enumerate(zip(rows, idx, strict=True)):
        out[i] = [j for j in found if j != row][: out.shape[1]]
    return out


def choose_steering_features(c: EmbeddingSAEConfig, freq: np.ndarray, interp: dict) -> list[int]:
    """``steer_features``, or the features of moderate density most concentrated on one package
    (``steer_density`` range; by package share, then density, then index), one per package."""
    if c.steer_features:
        return list(c.steer_features)
    lo, hi = c.steer_density
    share, main = interp["package_share"], interp["main_package"]
    ok = np.flatnonzero((freq >= lo) & (freq <= hi))
    ranked = ok[np.lexsort((ok, -freq[ok], -share[ok]))]
    chosen, seen = [], set()
    for f in ranked:
        if main[f] not in seen:
            chosen.append(int(f))
            seen.add(main[f])
        if len(chosen) == c.n_steer:
            break
    return chosen


def steer_curve(model, x, fires: np.ndarray, f: int, rows: np.ndarray, strengths, k: int):
    """Fraction of each query's top ``k`` results on which ``f`` fires, for each strength λ of
    ``steer(model, x[rows], f, λ)``: ``[len(strengths), Q]``."""
    q = np.asarray(x[rows])
    out = []
    for lam in strengths:
        steered = sae.analysis.steer(model, jnp.asarray(q), f, float(lam))
        found = top_results(steered, rows, x, k)
        out.append(fires[found].mean(axis=1))
    return np.asarray(out)


def remove_curve(model, x, fires: np.ndarray, f: int, rows: np.ndarray, kept, k: int, a_f):
    """Removal (Concept Steerers): clamp ``f`` on the queries to ``α ·`` its activation.

    Returns ``{"fraction": [len(kept), Q] share of the top k on which f fires, "dropped": [Q]
    share of the unedited top k carrying f that leave it at α = min(kept), "activation":
    [len(kept), Q] f's activation when the edited query is encoded again}``; ``a_f`` is f's
    ``[N]`` activation on every text.
    """
    q = jnp.asarray(np.asarray(x[rows]))
    a = np.asarray(a_f)[rows]
    base = top_results(q, rows, x, k)
    fraction, activation, last = [], [], None
    for alpha in kept:
        edited = sae.analysis.clamp(model, q, f, jnp.asarray(alpha * a, jnp.float32))
        last = top_results(edited, rows, x, k)
        fraction.append(fires[last].mean(axis=1))
        activation.append(_activation(model, edited, f))
    dropped = []
    for before, after in zip(base, last, strict=True):
        carrying = set(before[fires[before]].tolist())
        dropped.append(len(carrying - set(after.tolist())) / len(carrying) if carrying else 0.0)
    return {
        "fraction": np.asarray(fraction),
        "dropped": np.asarray(dropped),
        "activation": np.asarray(activation),
        "base": base,
    }


def _activation(model, x, f: int) -> np.ndarray:
    code = model.encode(x)
    values, indices = np.asarray(code.values), np.asarray(code.indices)
    return np.where(indices == f, values, 0.0).sum(axis=1)


def steer_search(
    c: EmbeddingSAEConfig, model, x: np.ndarray, codes: Codes, freq, interp: dict
) -> list[dict]:
    """Steering and removal curves of the chosen features (queries sampled with ``seed``)."""
    acts = codes.matrix()
    rng = np.random.default_rng(c.seed + 2)
    out = []
    for f in choose_steering_features(c, freq, interp):
        a_f = acts[:, [f]].toarray().ravel()
        fires = a_f != 0
        off, on = np.flatnonzero(~fires), np.flatnonzero(fires)
        entry = {"feature": f, "words": interp["features"][f]["words"]}
        entry["package"] = interp["features"][f]["package"]
        entry["density"] = float(freq[f])
        if len(off) >= 1:
            rows = np.sort(rng.choice(off, size=min(c.steer_queries, len(off)), replace=False))
            curve = steer_curve(model, x, fires, f, rows, c.steer_strengths, c.results_k)
            entry["add"] = {
                "queries": rows.tolist(),
                "strengths": list(c.steer_strengths),
                "fraction": curve.mean(axis=1).tolist(),
            }
        if len(on) >= 1:
            rows = np.sort(rng.choice(on, size=min(c.steer_queries, len(on)), replace=False))
            rem = remove_curve(model, x, fires, f, rows, c.remove_fractions, c.results_k, a_f)
            entry["remove"] = {
                "queries": rows.tolist(),
                "kept": list(c.remove_fractions),
                "fraction": rem["fraction"].mean(axis=1).tolist(),
                "dropped": float(rem["dropped"].mean()),
                "activation": rem["activation"].mean(axis=1).tolist(),
            }
        out.append(entry)
    return out


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def _figure(width: float, height: float, ncols: int = 1):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def family_tree_figure(family: list[int], parent: np.ndarray, label, max_nodes: int) -> Figure:
    """A family as a tree (root on top): the ``max_nodes`` members nearest the root."""
    members = set(family)
    children: dict[int, list[int]] = {j: [] for j in family}
    for j in family:
        p = int(parent[j])
        if p in members and j != family[0]:
            children[p].append(j)
    shown, queue = [], [family[0]]
    while queue and len(shown) < max_nodes:  # breadth first from the root
        j = queue.pop(0)
        shown.append(j)
        queue += sorted(children[j])
    keep = set(shown)
    kids = {j: [i for i in sorted(children[j]) if i in keep] for j in shown}
    pos: dict[int, tuple[float, int]] = {}
    next_x = [0.0]

    def place(j: int, depth: int) -> float:
        if not kids[j]:
            pos[j] = (next_x[0], depth)
            next_x[0] += 1.0
        else:
            xs = [place(i, depth + 1) for i in kids[j]]
            pos[j] = (sum(xs) / len(xs), depth)
        return pos[j][0]

    place(family[0], 0)
    depth = max(d for _, d in pos.values())
    fig, (ax,) = _figure(max(5.0, 1.7 * next_x[0]), 1.3 * (depth + 1) + 0.6)
    for j in shown:
        for i in kids[j]:
            ax.plot([pos[j][0], pos[i][0]], [-pos[j][1], -pos[i][1]], color="0.6", zorder=1)
    for j in shown:
        ax.text(
            pos[j][0],
            -pos[j][1],
            label(j),
            ha="center",
            va="center",
            fontsize=6.5,
            zorder=2,
            bbox={"boxstyle": "round", "fc": "#e8f0fa" if j != family[0] else "#fbe3c4"},
        )
    ax.set_xlim(-0.7, next_x[0] - 0.3)
    ax.set_ylim(-depth - 0.6, 0.6)
    ax.axis("off")
    more = f" ({len(shown)} of {len(family)} shown)" if len(shown) < len(family) else ""
    ax.set_title(f"family of feature {family[0]}: {len(family)} features{more}", fontsize=9)
    return fig


def steering_figure(steering: list[dict], k: int) -> Figure:
    """Left: top-k share carrying f against λ; right: against the activation kept on removal."""
    fig, (left, right) = _figure(9.0, 3.6, ncols=2)
    for e in steering:
        name = f"f{e['feature']} ({e['package']}: {' '.join(e['words'][:2])})"
        if "add" in e:
            left.plot(e["add"]["strengths"], e["add"]["fraction"], marker="o", label=name)
        if "remove" in e:
            right.plot(e["remove"]["kept"], e["remove"]["fraction"], marker="o", label=name)
    left.set_xlabel("λ (added λ · W_dec[f], query norm 1)")
    left.set_ylabel(f"top-{k} results where f fires")
    left.set_title("steering towards f", fontsize=10)
    right.set_xlabel("α (f clamped to α · its activation)")
    right.set_ylabel(f"top-{k} results where f fires")
    right.set_title("removing f (Concept Steerers)", fontsize=10)
    right.invert_xaxis()
    for ax in (left, right):
        ax.set_ylim(-0.03, 1.03)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return fig


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _snippet(text: str, n: int = 110) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= n else text[: n - 1] + "…"


def _feature_rows(ids, interp, corpus: Corpus) -> list[list[Any]]:
    rows = []
    for f in ids:
        e = interp["features"][f]
        example = _snippet(corpus.texts[e["top_rows"][0]]) if e["top_rows"] else ""
        rows.append(
            [
                f,
                f"{e['density']:.4f}",
                ", ".join(e["words"]),
                f"{e['package']} ({e['package_share']:.0%})",
                example,
            ]
        )
    return rows


def write_report(run: Run, corpus: Corpus, results: dict, interp: dict, freq, history) -> None:
    c, workdir = run.config, run.workdir
    m = results["metrics"]
    report = experiment.Report(workdir, "Features of a sentence-embedding model (TopK SAE)")
    report.text(
        f"{results['model_name']} embeddings ({results['d_in']}-d, normalised as the model does) "
        f"of {len(corpus.texts)} docstring paragraphs ({corpus.name}); TopK SAE d_sae={c.d_sae}, "
        f"k={c.k}, AuxK on latents silent for {c.dead_threshold} texts, {c.steps} steps of batch "
        f"{c.batch_size} (Adam lr {c.lr}) on {run.mesh.size} device(s). Metrics on every text."
    )
    report.heading("SAE metrics")
    cols = [
        ("FVU", "fvu", ".4f"),
        ("explained variance", "explained_variance", ".4f"),
        ("cosine(x, x̂)", "cosine", ".4f"),
        ("L0", "l0", ".2f"),
        ("dead fraction", "dead_fraction", ".4f"),
        ("dense (> 10%) fraction", "dense_fraction", ".4f"),
    ]
    report.table([n for n, _, _ in cols], [[format(m[k], f) for _, k, f in cols]], align="r" * 6)
    if history:
        steps = [r["step"] for r in history]
        fig = plots.loss_curve(
            steps, {"loss": [r["loss"] for r in history], "FVU": [r["fvu"] for r in history]}
        )
        report.figure(fig, "loss.png", "training loss and FVU")
    report.figure(plots.density_histogram(freq), "density.png", "feature density")

    alive = np.flatnonzero(freq > 0)
    frequent = [int(f) for f in alive[np.lexsort((alive, -freq[alive]))][: c.report_features]]
    rng = np.random.default_rng(c.seed + 3)
    sampled = sorted(
        int(f) for f in rng.choice(alive, size=min(c.report_features, len(alive)), replace=False)
    )
    header = ["feature", "density", "TF-IDF words of its top texts", "package", "top text"]
    report.heading("Features")
    report.text(
        f"Words: TF-IDF of each feature's {c.top_n} top-activating texts against the corpus "
        "(`jaxemb.analysis.distinctive_words`). Package: the package holding the largest share "
        "of the feature's activation mass. Most frequent features first, then "
        f"{len(sampled)} alive features drawn at random (seed {c.seed + 3})."
    )
    report.heading("Most frequent", level=3)
    report.table(header, _feature_rows(frequent, interp, corpus), align="rrlll")
    report.heading("Random sample", level=3)
    report.table(header, _feature_rows(sampled, interp, corpus), align="rrlll")

    report.heading("Package alignment")
    report.text(
        "For each package, the single feature whose firing best predicts that a text comes from "
        "it (`jaxemb.analysis.label_feature_f1`)."
    )
    report.table(
        ["package", "texts", "feature", "F1", "precision", "recall", "feature's words"],
        [
            [
                r["package"],
                r["texts"],
                r["feature"],
                f"{r['f1']:.3f}",
                f"{r['precision']:.3f}",
                f"{r['recall']:.3f}",
                ", ".join(r["words"]),
            ]
            for r in interp["package_f1"]
        ],
        align="lrrrrrl",
    )

    families = interp["families"]
    report.heading("Feature families")
    sizes = [len(f) for f in families]
    report.text(
        f"{len(families)} families (sizes: largest {sizes[:8]}, {sum(sizes)} features in all): "
        "pieces of the maximum spanning tree over feature co-occurrence normalised by firing "
        f"counts (O'Neill et al. 2024), cut at edges below {c.family_threshold}; the parent is "
        "the family's most frequent feature."
    )

    def label(j: int) -> str:
        return f"{j}\n" + "\n".join(interp["features"][j]["words"][:2])

    if families:
        report.table(
            ["parent", "size", "parent's words", "members (words)"],
            [
                [
                    f[0],
                    len(f),
                    ", ".join(interp["features"][f[0]]["words"][:3]),
                    "; ".join(
                        f"{j} ({' '.join(interp['features'][j]['words'][:2])})" for j in f[1:7]
                    )
                    + (" …" if len(f) > 7 else ""),
                ]
                for f in families[: c.report_features]
            ],
            align="rrll",
        )
    for i, fam in enumerate(families[: c.family_plots]):
        fig = family_tree_figure(fam, interp["parent"], label, c.family_nodes)
        report.figure(fig, f"family_{i}.png", f"family of feature {fam[0]}")

    steering = results["steering"]
    report.heading("Steering search")
    report.text(
        f"Cosine search over all {len(corpus.texts)} embeddings (the query's own text left "
        f"out). Steering: up to {c.steer_queries} texts on which feature f does not fire, as "
        f"queries, moved by λ · W_dec[f] (`sae.analysis.steer`); the share of their top "
        f"{c.results_k} results on which f fires. Removal (Concept Steerers): up to "
        f"{c.steer_queries} texts on which f fires, with f clamped to α times its activation "
        "(`sae.analysis.clamp`: the rest of the code and the SAE error are kept). Features "
        + (
            "given by steer_features."
            if c.steer_features
            else f"of density in {list(c.steer_density)} most concentrated on one package, one "
            "per package."
        )
    )
    rows = []
    for e in steering:
        add = e.get("add", {}).get("fraction", [])
        rem = e.get("remove", {})
        rows.append(
            [
                e["feature"],
                f"{e['package']}: {', '.join(e['words'][:3])}",
                f"{e['density']:.4f}",
                " → ".join(f"{v:.2f}" for v in add),
                " → ".join(f"{v:.2f}" for v in rem.get("fraction", [])),
                f"{rem['dropped']:.2f}" if rem else "",
                " → ".join(f"{v:.2f}" for v in rem.get("activation", [])),
            ]
        )
    report.table(
        [
            "feature",
            "package: words",
            "density",
            f"share with f, λ = {' → '.join(map(str, c.steer_strengths))}",
            f"share with f, α = {' → '.join(map(str, c.remove_fractions))}",
            "dropped at α = min",
            "f re-encoded",
        ],
        rows,
        align="rlrllrl",
    )
    if steering:
        report.figure(steering_figure(steering, c.results_k), "steering.png", "steering curves")
    t = run.timings
    report.text(
        f"Timings: embedding {t.get('embed_s', 0):.0f} s ({t.get('embedded_rows', 0)} texts "
        f"this run), training {t.get('train_s', 0):.0f} s ({t.get('steps_run', 0)} steps this "
        f"run), evaluation {t.get('eval_s', 0):.0f} s, interpretation "
        f"{t.get('interpret_s', 0):.0f} s, steering {t.get('steer_s', 0):.0f} s. The SAE is "
        "saved in the SAELens layout in `sae/`; the embeddings in `embeddings.npy`."
    )
    report.write()


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------


def train_and_evaluate(
    config: EmbeddingSAEConfig | dict[str, Any], workdir: str | Path
) -> dict[str, Any]:
    """Embeds the corpus, trains the SAE, interprets its features, steers search, reports.

    Returns:
      The summary also written as the last line of ``metrics.jsonl``: SAE metrics, the number
      and sizes of families, the package F1 table, the steering curves and timings.
    """
    c = config if isinstance(config, EmbeddingSAEConfig) else EmbeddingSAEConfig.create(config)
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise EmbeddingSAEError(f"The workdir {str(workdir)!r} exists but is not a directory.")
    model = load_model(c)  # input first: a bad model or data fails before anything is written
    corpus = load_corpus(c)
    check_checkpoint_width(c, workdir, model.dim)
    key = hashlib.sha256((fingerprint(model_dir(c)) + corpus.key()).encode()).hexdigest()[:16]
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = parallel.make_mesh(devices=None if c.devices == -1 else jax.devices()[: c.devices])
    run = Run(config=c, workdir=workdir, mesh=mesh)

    x = embed_corpus(c, model, corpus, key, workdir, run)
    del model  # the encoder is not needed any more
    sae_model, log = train(run, x, key)
    t0 = time.perf_counter()
    metrics, codes, freq = evaluate(sae_model, x)
    run.timings["eval_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    interp = interpret(c, sae_model, x, corpus, codes, freq)
    run.timings["interpret_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    steering = steer_search(c, sae_model, x, codes, freq, interp)
    run.timings["steer_s"] = time.perf_counter() - t0
    sae.save_sae(workdir / "sae", sae_model, format="saelens")
    results = {
        "final": True,
        "model_name": c.model or "all-MiniLM-L6-v2",
        "n_texts": len(corpus.texts),
        "d_in": int(x.shape[1]),
        "steps": c.steps,
        "metrics": metrics,
        "families": {
            "count": len(interp["families"]),
            "sizes": [len(f) for f in interp["families"]],
            "largest": interp["families"][: c.report_features],
        },
        "package_f1": interp["package_f1"],
        "steering": steering,
        "timings": run.timings,
    }
    write_report(run, corpus, results, interp, freq, log["history"])
    with experiment.MetricsLog(workdir / "metrics.jsonl") as mlog:
        mlog.write(results)
    return results


def _summarize(c: EmbeddingSAEConfig, summary: dict[str, Any], workdir: str, seconds: float):
    m = summary["metrics"]
    return (
        f"done in {seconds:.0f} s. FVU {m['fvu']:.4f}, L0 {m['l0']:.2f}, dead "
        f"{m['dead_fraction']:.4f}, {summary['families']['count']} feature families. Report: "
        f"{Path(workdir) / 'report.md'}"
    )


def main(argv: list[str] | None = None) -> int:
    return experiment.run_command(
        argv,
        config_class=EmbeddingSAEConfig,
        program="embedding_sae",
        description=__doc__.split("\n\n")[0],
        default_workdir="runs/embedding_sae",
        train_and_evaluate=train_and_evaluate,
        summarize=_summarize,
    )


if __name__ == "__main__":
    sys.exit(main())
