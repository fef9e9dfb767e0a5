"""Fine-tune a sentence-transformers model for code search, against BM25 and itself zero-shot.

Reads top to bottom in named sections: config, model, data, baselines (BM25 with bm25s and the
starting model zero-shot), hard negatives (mined once with ``jaxemb.negatives``, optionally
refreshed), update step (InfoNCE = MNRL or GISTEmbed with the frozen starting model as guide,
Matryoshka widths, GradCache, AdamW with warm-up, data-parallel), train loop (the shared
``jaxemb.experiment`` loop: checkpoints, exact resume, divergence guard), evaluation at every
Matryoshka width, export back to sentence-transformers, report.

Data: ``python_code_search`` (docstring summary -> function source without its docstring),
train split for training, the test split's queries against every test function.

    bash scripts/code_search.sh                       # all-MiniLM-L6-v2, the default run
    .venv/bin/python -m experiments.code_search --workdir runs/cs model=path/to/st_model

Every ``key=value`` overrides a field of ``CodeSearchConfig`` (``--help`` lists them).
Re-running with the same workdir resumes from the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxemb import checkpoint, data, experiment, losses, parallel
from jaxemb.analysis import plots
from jaxemb.encoders import (
    Embedder,
    load_sentence_transformer,
    packaged_model_path,
    save_sentence_transformer,
)
from jaxemb.experiment import option
from jaxemb.negatives import NegativeRefresh, RefreshState
from jaxemb.retrieval import retrieval_metrics, search

# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


class CodeSearchError(experiment.ConfigError):
    """A problem with the configuration, model, data or workdir, explained in one paragraph."""


@dataclasses.dataclass(frozen=True)
class CodeSearchConfig(experiment.Config):
    """code_search's settings (``key=value`` on the command line; r: may change on resume)."""

    program: ClassVar[str] = "code_search"
    error: ClassVar[type[experiment.ConfigError]] = CodeSearchError

    model: str | None = option(
        None, help="sentence-transformers directory (None: all-MiniLM-L6-v2 from its package)"
    )
    data_dir: str | None = option(None, resumable=True, help="TFDS data directory")
    devices: int = option(-1, resumable=True, help="data-parallel over the first N devices")
    seed: int = option(0, minimum=0, help="data order, negatives sampling and dropout seed")
    train_limit: int | None = option(None, minimum=1, help="use the first N training pairs")
    test_limit: int | None = option(
        None, minimum=1, resumable=True, help="evaluate on the first N test pairs (corpus too)"
    )
    # loss
    loss: str = option("mnrl", choices=("mnrl", "gist"), help="InfoNCE (MNRL) or GISTEmbed")
    temperature: float = option(0.05, positive=True, help="τ (MNRL scale 20 = 1/0.05)")
    gist_margin: float = option(0.0, minimum=0, help="GIST absolute margin")
    matryoshka_dims: tuple[int, ...] = option(
        (384, 256, 128, 64), positive=True, help="Matryoshka widths (the first: full width)"
    )
    # hard negatives
    hard_negatives: int = option(1, minimum=0, help="mined negatives per pair (0: in-batch only)")
    relative_margin: float | None = option(
        0.05, minimum=0, help="mining: NV-Retriever TopK-PercPos margin (None: off)"
    )
    refresh_every: int | None = option(
        None, minimum=1, help="re-mine with the current model every N steps (None: once)"
    )
    # optimisation
    epochs: int = option(1, minimum=1, resumable=True, help="passes over the training pairs")
    batch_size: int = option(64, minimum=2, help="global batch (in-batch negatives)")
    grad_cache_chunk: int | None = option(
        32, minimum=1, help="GradCache chunk rows per device (None: plain backprop)"
    )
    learning_rate: float = option(5e-5, positive=True, help="AdamW peak learning rate")
    warmup_ratio: float = option(0.1, minimum=0, maximum=1, help="linear warm-up fraction")
    weight_decay: float = option(0.01, minimum=0, help="AdamW decay (matrices only)")
    max_grad_norm: float = option(1.0, positive=True, help="global gradient clipping")
    max_query_length: int = option(64, minimum=4, help="query tokens in training")
    max_doc_length: int = option(128, minimum=4, help="code tokens in training")
    compute_dtype: str = option("float32", choices=("float32", "bfloat16"), help="matmul dtype")
    dropout: bool = option(
        True, help="train with the checkpoint's dropout (as sentence-transformers)"
    )
    # bookkeeping
    eval_batch_size: int = option(64, minimum=1, resumable=True, help="texts per encode call")
    ckpt_every: int = option(20, minimum=1, resumable=True, help="checkpoint interval (steps)")
    keep_checkpoints: int = option(2, minimum=1, resumable=True, help="checkpoints kept")
    log_every: int = option(1, minimum=1, resumable=True, help="metrics interval (steps)")
    export: bool = option(True, resumable=True, help="save the fine-tuned model in workdir/model")

    def check(self) -> None:
        if list(self.matryoshka_dims) != sorted(self.matryoshka_dims, reverse=True):
            raise self.invalid("matryoshka_dims", "distinct widths, largest first")
        if len(set(self.matryoshka_dims)) != len(self.matryoshka_dims):
            raise self.invalid("matryoshka_dims", "distinct widths, largest first")
        if self.loss == "gist" and self.hard_negatives > 1:
            raise self.invalid("hard_negatives", "0 or 1 with loss='gist' (one per anchor)")
        if not (self.devices == -1 or 1 <= self.devices <= jax.device_count()):
            raise self.invalid("devices", f"-1 or an integer in [1, {jax.device_count()}]")
        n_dev = jax.device_count() if self.devices == -1 else self.devices
        if self.batch_size % n_dev:
            raise self.invalid("batch_size", f"a multiple of the {n_dev} devices")
        chunk = self.grad_cache_chunk
        if chunk is not None and (self.batch_size // n_dev) % chunk:
            raise self.invalid(
                "grad_cache_chunk", f"a divisor of the per-device batch {self.batch_size // n_dev}"
            )


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


def load_model(c: CodeSearchConfig) -> Embedder:
    """The starting model (``compute_dtype`` applied); refuses a non-model directory early."""
    try:
        path = packaged_model_path() if c.model is None else Path(c.model).expanduser()
        model = load_sentence_transformer(path)
    except ValueError as e:
        where = "the default model" if c.model is None else f"model={c.model!r}"
        raise CodeSearchError(f"{where} is not usable: {e}") from None
    if c.compute_dtype != model.encoder.config.compute_dtype:
        model = model.with_compute_dtype(c.compute_dtype)
    if max(c.matryoshka_dims) > model.dim:
        raise CodeSearchError(
            f"matryoshka_dims {c.matryoshka_dims} exceed the model's output width {model.dim}; "
            f"pass matryoshka_dims with widths <= {model.dim}, largest first."
        )
    return model


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def load_split(c: CodeSearchConfig, split: str) -> tuple[list[str], list[str]]:
    """(queries, code) of a split, in stored order (limited by train_limit / test_limit)."""
    try:
        arrays = data.load_arrays("python_code_search", split, data_dir=c.data_dir)
    except (OSError, ValueError) as e:
        raise CodeSearchError(f"Could not prepare or read python_code_search/{split}: {e}") from e
    queries = [q.decode("utf-8") for q in arrays["query"]]
    code = [x.decode("utf-8") for x in arrays["code"]]
    limit = c.train_limit if split == "train" else c.test_limit
    if limit is not None:
        queries, code = queries[:limit], code[:limit]
    if not queries:
        raise CodeSearchError(f"The {split} split of python_code_search is empty.")
    return queries, code


# ----------------------------------------------------------------------------------------------
# Baselines and evaluation
# ----------------------------------------------------------------------------------------------

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORD = re.compile(r"[A-Za-z0-9]+")


def code_tokens(text: str) -> list[str]:
    """BM25 terms: words and identifier parts (snake_case and camelCase split), lowercased."""
    return [w.lower() for w in _WORD.findall(_CAMEL.sub(r"\1 \2", text)) if len(w) > 1]


def metrics_of(run: dict[str, dict[str, float]], n: int) -> dict[str, float]:
    """nDCG@10, recall@100 and MRR@10 (pytrec_eval semantics) with query ``i`` -> code ``i``."""
    qrels = {str(i): {str(i): 1} for i in range(n)}
    m = retrieval_metrics(run, qrels, ks=(10, 100))
    return {"ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"], "mrr@10": m["mrr@10"]}


def bm25_baseline(queries: list[str], code: list[str]) -> dict[str, float]:
    """BM25 over ``code_tokens`` with bm25s' defaults (Lucene variant, k1 = 1.5, b = 0.75): the
    top 100 functions of each query, scored as :func:`metrics_of`.

    A function sharing no term with the query (score 0) is not retrieved, as in Lucene; bm25s
    would otherwise fill the top 100 with such functions in an arbitrary order.
    """
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets itself to DEBUG
    retriever = bm25s.BM25()
    retriever.index([code_tokens(x) for x in code], show_progress=False)
    k = min(100, len(code))
    docs, scores = retriever.retrieve([code_tokens(q) for q in queries], k=k, show_progress=False)
    run = {
        str(i): {str(int(d)): float(s) for d, s in zip(docs[i], scores[i], strict=True) if s > 0}
        for i in range(len(queries))
    }
    return metrics_of(run, len(queries))


class _Bound:
    """An Embedder's encode_query / encode_document with given parameters (for mining)."""

    def __init__(self, model: Embedder, params: Any, batch_size: int):
        self.model, self.params, self.batch_size = model, params, batch_size

    def encode_query(self, texts):
        return self.model.encode_query(texts, params=self.params, batch_size=self.batch_size)

    def encode_document(self, texts):
        return self.model.encode_document(texts, params=self.params, batch_size=self.batch_size)


def evaluate(
    model: Embedder, params: Any, queries: list[str], code: list[str], c: CodeSearchConfig
) -> dict[str, Any]:
    """Metrics at every Matryoshka width (prefix, re-normalised) and the similarity samples."""
    bound = _Bound(model, params, c.eval_batch_size)
    q, d = bound.encode_query(queries), bound.encode_document(code)
    out: dict[str, Any] = {"widths": {}}
    for width in c.matryoshka_dims:
        scores, idx = search(q[:, :width], d[:, :width], min(100, len(code)), metric="cosine")
        scores, idx = np.asarray(scores), np.asarray(idx)
        run = {
            str(i): {str(int(j)): float(s) for j, s in zip(idx[i], scores[i], strict=True)}
            for i in range(len(queries))
        }
        out["widths"][width] = metrics_of(run, len(queries))
    out["metrics"] = out["widths"][c.matryoshka_dims[0]]
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    dn = d / np.linalg.norm(d, axis=1, keepdims=True)
    sims = qn @ dn.T
    out["positive_similarity"] = np.diagonal(sims).copy()
    np.fill_diagonal(sims, -np.inf)
    out["hard_negative_similarity"] = sims.max(axis=1)  # each query's best wrong function
    return out


# ----------------------------------------------------------------------------------------------
# Update step
# ----------------------------------------------------------------------------------------------


def make_loss(c: CodeSearchConfig):
    """The loss of the towers' embeddings ``(q, d[, n], *guides)``, Matryoshka-summed.

    MNRL: ``info_nce(q, d, n)`` with ``n`` ``[B, H, dim]``. GIST: ``gist_info_nce`` with the
    frozen starting model's embeddings as guide (``ga, gp[, gn]`` after the towers); only the
    trained embeddings are truncated, as sentence-transformers' ``MatryoshkaLoss`` does.
    """
    if c.loss == "mnrl":
        base = functools.partial(losses.info_nce, temperature=c.temperature)
        return losses.matryoshka(base, c.matryoshka_dims, argnums=(0, 1, 2))
    base = functools.partial(losses.gist_info_nce, temperature=c.temperature, margin=c.gist_margin)
    gist = losses.matryoshka(base, c.matryoshka_dims, argnums=(0, 1, 4))

    def loss(q, d, *rest):
        if c.hard_negatives:  # towers (q, d, n) then guides (gq, gd, gn); one negative each
            n, gq, gd, gn = rest
            return gist(q, d, gq, gd, n[:, 0], gn[:, 0])
        return gist(q, d, *rest)

    return loss


def tower_embed(model: Embedder):
    """``(params, inputs, key) -> [..., dim]``: a tower of ``model`` on ``prepare``'d inputs
    whose leading axes are kept (``[B, H, T]`` hard negatives give ``[B, H, dim]``); with a key
    the checkpoint's dropout applies (GradCache replays the same masks in its second pass)."""

    def embed(params, inputs, key):
        lead = inputs["input_ids"].shape[:-1]
        flat = {k: x.reshape(-1, x.shape[-1]) for k, x in inputs.items()}
        out = model.embed(
            params, flat["input_ids"], flat["attention_mask"], flat["pool_mask"], dropout_key=key
        )
        return out.reshape(*lead, out.shape[-1])

    return embed


def make_train_step(model: Embedder, c: CodeSearchConfig, tx, mesh):
    """``(params, opt_state, batch, key, guide_params) -> (params, opt_state, loss)``, jitted.

    ``batch`` maps the towers ``"q"``, ``"d"`` (and ``"n"``) to ``prepare``'d inputs sharded
    over the mesh's ``data`` axis; ``key`` drives dropout (``None``: none); ``guide_params`` are
    GIST's frozen guide (``None`` for MNRL). With ``grad_cache_chunk`` the gradient is
    GradCache's (exact, the activations of one chunk at a time); otherwise plain backprop.
    """
    loss_fn = make_loss(c)
    embed = tower_embed(model)
    towers = ("q", "d", "n") if c.hard_negatives else ("q", "d")
    if c.grad_cache_chunk is not None:
        value_and_grad = parallel.grad_cache(
            (embed,) * len(towers), loss_fn, chunk_size=c.grad_cache_chunk, mesh=mesh
        )
    else:

        def value_and_grad(params, inputs, key, *guides):
            def objective(p):
                keys = [None if key is None else jax.random.fold_in(key, t) for t in range(3)]
                return loss_fn(*(embed(p, x, k) for x, k in zip(inputs, keys)), *guides)

            return jax.value_and_grad(objective)(params)

    def guide(guide_params, inputs):
        # the frozen starting model, chunk by chunk (no activations of the whole batch at once)
        flat = {k: x.reshape(-1, x.shape[-1]) for k, x in inputs.items()}
        chunk = c.grad_cache_chunk or flat["input_ids"].shape[0]
        out = jax.lax.map(lambda x: embed(guide_params, x, None), flat, batch_size=chunk)
        return jax.lax.stop_gradient(out.reshape(*inputs["input_ids"].shape[:-1], -1))

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, batch, key, guide_params):
        inputs = tuple(batch[t] for t in towers)
        guides = tuple(guide(guide_params, x) for x in inputs) if c.loss == "gist" else ()
        loss, grads = value_and_grad(params, inputs, key, *guides)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


# ----------------------------------------------------------------------------------------------
# Train loop
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    config: CodeSearchConfig
    workdir: Path
    mesh: Any
    model: Embedder
    losses: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)


def train(run: Run, queries: list[str], code: list[str]) -> Any:
    """Fine-tunes (or resumes); returns the trained parameters."""
    c, model, mesh = run.config, run.model, run.mesh
    n = len(queries)
    steps_per_epoch = max(1, n // c.batch_size)
    steps = c.epochs * steps_per_epoch
    warmup = int(round(c.warmup_ratio * steps))
    schedule = optax.warmup_cosine_decay_schedule(0.0, c.learning_rate, warmup, steps, 0.0)
    if warmup == 0:
        schedule = optax.cosine_decay_schedule(c.learning_rate, steps)
    decay_mask = jax.tree.map(lambda x: jnp.ndim(x) >= 2, model.params)
    tx = optax.chain(
        optax.clip_by_global_norm(c.max_grad_norm),
        optax.adamw(schedule, weight_decay=c.weight_decay, mask=decay_mask),
    )
    replicated = parallel.replicated(mesh)
    # a copy (the step donates it; on one device device_put would alias model.params, which
    # stay the starting model: GIST's frozen guide)
    params = jax.device_put(model.params, replicated, may_alias=False)
    guide_params = jax.device_put(model.params, replicated) if c.loss == "gist" else None
    opt_state = jax.device_put(tx.init(params), replicated)

    refresh = None
    negatives = RefreshState(np.int64(-1), np.zeros((n, max(1, c.hard_negatives)), np.int32))
    if c.hard_negatives:
        refresh = NegativeRefresh(
            queries,
            code,
            refresh_every=c.refresh_every or 10**9,
            num_negatives=c.hard_negatives,
            relative_margin=c.relative_margin,
            seed=c.seed,
        )
        negatives = refresh.init()

    ckpt = checkpoint.Checkpointer(
        run.workdir / "checkpoints",
        save_every=c.ckpt_every,
        keep=c.keep_checkpoints,
        config=c.record(),
    )
    template = {"params": params, "opt": opt_state, "negatives": negatives}
    state, start = experiment.resume(ckpt, template, program="code_search")
    params, opt_state = state["params"], state["opt"]
    negatives = RefreshState(*state["negatives"])
    train_step = make_train_step(model, c, tx, mesh)
    base_key = jax.random.key(c.seed)
    fallback = None
    if refresh is not None:
        # for an anchor left without a mined negative: a random other function
        size = len(refresh.corpus)
        fallback = np.random.default_rng(c.seed).integers(0, size, size=(n, c.hard_negatives))
        own = np.array(
            [[refresh.corpus[j] == code[i] for j in row] for i, row in enumerate(fallback)]
        )
        fallback = np.where(own, (fallback + 1) % size, fallback)

    def tokens(texts, prompt_name, length):
        return model.prepare(texts, prompt_name=prompt_name, max_length=length, pad_to=length)

    t_mine = 0.0

    def step_fn(carry, batch, step):
        nonlocal negatives, t_mine
        params, opt_state = carry
        if refresh is not None:
            t0 = time.perf_counter()
            negatives = refresh.update(negatives, step, _Bound(model, params, c.eval_batch_size))
            t_mine += time.perf_counter() - t0
        rows = np.asarray(batch["row"])
        q_name, d_name = model.query_prompt_name, model.document_prompt_name
        out = {
            "q": tokens([queries[i] for i in rows], q_name, c.max_query_length),
            "d": tokens([code[i] for i in rows], d_name, c.max_doc_length),
        }
        if c.hard_negatives:
            neg = np.asarray(negatives.negatives)[rows]
            neg = np.where(neg >= 0, neg, fallback[rows])  # an anchor without a mined one
            flat = tokens([refresh.corpus[j] for j in neg.reshape(-1)], d_name, c.max_doc_length)
            out["n"] = {k: x.reshape(*neg.shape, -1) for k, x in flat.items()}
        out = parallel.shard_batch(mesh, out)
        key = jax.random.fold_in(base_key, step) if c.dropout else None
        with jax.set_mesh(mesh):  # (not around mining: encode uses all local devices)
            params, opt_state, loss = train_step(params, opt_state, out, key, guide_params)
        return (params, opt_state), {"loss": loss}

    def saveable(carry, done):
        params, opt_state = carry
        return {"params": params, "opt": opt_state, "negatives": negatives}

    pipeline = data.make_pipeline(
        {"row": np.arange(n)}, batch_size=c.batch_size, seed=c.seed, start_step=start
    )
    t0 = time.perf_counter()
    try:
        with experiment.MetricsLog(run.workdir / "metrics.jsonl") as log:
            (params, opt_state), _ = experiment.train_loop(
                step_fn,
                (params, opt_state),
                iter(pipeline),
                steps=steps,
                start=start,
                log_every=c.log_every,
                metrics_log=log,
                checkpointer=ckpt,
                saveable=saveable,
                desc="fine-tune",
                extra_log=lambda done: {"lr": float(schedule(done))},
            )
    finally:
        ckpt.close()
    run.timings["train_s"] = time.perf_counter() - t0 - t_mine
    run.timings["mining_s"] = t_mine
    run.timings["train_steps_run"] = steps - start
    run.timings["steps"] = steps
    records = experiment.MetricsLog.read(run.workdir / "metrics.jsonl")
    run.losses = sorted({r["step"]: r["loss"] for r in records if "loss" in r}.items())
    return params


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _write_report(run: Run, results: dict[str, Any], before: dict, after: dict) -> None:
    c = run.config
    title = "Code search: fine-tuning a sentence-transformers model"
    report = experiment.Report(run.workdir, title)
    report.text(
        f"python_code_search: {results['n_train']} training pairs (docstring summary → function "
        f"source without its docstring), evaluated on the {results['n_test']} test queries "
        f"against all {results['n_test']} test functions. Model: {results['model_name']}; loss "
        f"{c.loss.upper()} (τ {c.temperature}) with {c.hard_negatives} mined hard negative(s) "
        f"per pair (relative margin {c.relative_margin}), Matryoshka widths "
        f"{list(c.matryoshka_dims)}, batch {c.batch_size}"
        + (f" (GradCache chunks of {c.grad_cache_chunk})" if c.grad_cache_chunk else "")
        + f", {results['steps']} steps ({c.epochs} epoch(s)), AdamW lr {c.learning_rate}, "
        f"{c.compute_dtype} on {run.mesh.size} device(s)."
    )
    report.heading("Test retrieval (full width)")
    rows = [
        [name, *(f"{m[k]:.4f}" for k in ("ndcg@10", "recall@100", "mrr@10"))]
        for name, m in (
            ("BM25 (bm25s)", results["bm25"]),
            ("zero-shot", results["zero_shot"]),
            ("fine-tuned", results["fine_tuned"]),
        )
    ]
    report.table(["model", "nDCG@10", "recall@100", "MRR@10"], rows)
    report.heading("Per Matryoshka width (nDCG@10)")
    report.table(
        ["width", "zero-shot", "fine-tuned"],
        [
            [w, f"{before['widths'][w]['ndcg@10']:.4f}", f"{after['widths'][w]['ndcg@10']:.4f}"]
            for w in c.matryoshka_dims
        ],
        align="rrr",
    )
    report.heading("Plots")
    if run.losses:
        steps, vals = zip(*run.losses)
        report.figure(plots.loss_curve(list(steps), list(vals)), "loss.png", "training loss")
    widths = list(reversed(c.matryoshka_dims))
    curves = {
        "fine-tuned": [after["widths"][w]["ndcg@10"] for w in widths],
        "zero-shot": [before["widths"][w]["ndcg@10"] for w in widths],
        "BM25": [results["bm25"]["ndcg@10"]] * len(widths),
    }
    report.figure(
        plots.matryoshka_curve(widths, curves, ylabel="nDCG@10 (test)"),
        "ndcg_by_width.png",
        "nDCG@10 against embedding width",
    )
    for name, ev in (("zero_shot", before), ("fine_tuned", after)):
        fig = plots.similarity_histogram(
            ev["positive_similarity"],
            ev["hard_negative_similarity"],
            labels=("query · its function", "query · best wrong function"),
        )
        report.figure(fig, f"similarity_{name}.png", f"similarities, {name.replace('_', '-')}")
    t = run.timings
    report.text(
        f"Timings: baselines and zero-shot evaluation {t.get('baselines_s', 0):.0f} s, mining "
        f"{t.get('mining_s', 0):.0f} s, training {t.get('train_s', 0):.0f} s "
        f"({t.get('train_steps_run', 0)} steps this run), evaluation "
        f"{t.get('eval_s', 0):.0f} s."
        + (
            " The fine-tuned model is in `model/` (sentence-transformers layout)."
            if c.export
            else ""
        )
    )
    report.write()


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------


def train_and_evaluate(
    config: CodeSearchConfig | dict[str, Any], workdir: str | Path
) -> dict[str, Any]:
    """Evaluates the baselines, fine-tunes, evaluates, exports and writes the report.

    Returns:
      The summary also written as the last line of ``metrics.jsonl``: ``bm25``,
      ``zero_shot`` and ``fine_tuned`` metrics (nDCG@10, recall@100, MRR@10), the per-width
      nDCG@10 and timings.
    """
    c = config if isinstance(config, CodeSearchConfig) else CodeSearchConfig.create(config)
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise CodeSearchError(f"The workdir {str(workdir)!r} exists but is not a directory.")
    model = load_model(c)  # input first: a bad model or data fails before anything is written
    train_q, train_code = load_split(c, "train")
    test_q, test_code = load_split(c, "test")
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = parallel.make_mesh(devices=None if c.devices == -1 else jax.devices()[: c.devices])
    run = Run(config=c, workdir=workdir, mesh=mesh, model=model)

    t0 = time.perf_counter()
    bm25 = bm25_baseline(test_q, test_code)
    before = evaluate(model, model.params, test_q, test_code, c)
    run.timings["baselines_s"] = time.perf_counter() - t0
    params = train(run, train_q, train_code)
    t0 = time.perf_counter()
    after = evaluate(model, params, test_q, test_code, c)
    run.timings["eval_s"] = time.perf_counter() - t0
    results = {
        "final": True,
        "model_name": c.model or "all-MiniLM-L6-v2",
        "n_train": len(train_q),
        "n_test": len(test_q),
        "steps": run.timings["steps"],
        "bm25": bm25,
        "zero_shot": before["metrics"],
        "fine_tuned": after["metrics"],
        "ndcg_by_width": {
            "zero_shot": {w: before["widths"][w]["ndcg@10"] for w in c.matryoshka_dims},
            "fine_tuned": {w: after["widths"][w]["ndcg@10"] for w in c.matryoshka_dims},
        },
        "timings": run.timings,
    }
    _write_report(run, results, before, after)
    if c.export:
        model.params = jax.device_get(params)
        save_sentence_transformer(
            model,
            workdir / "model",
            overwrite=True,
            model_card={
                "title": f"{results['model_name']} fine-tuned for Python code search",
                "training_data": (
                    f"jaxemb's python_code_search train split: {len(train_q)} (docstring "
                    "summary, function source without its docstring) pairs from the Python "
                    "standard library."
                ),
                "loss": (
                    ("MultipleNegativesRankingLoss (InfoNCE)" if c.loss == "mnrl" else "GISTEmbed")
                    + f" with τ = {c.temperature}, {c.hard_negatives} mined hard negative(s), "
                    f"Matryoshka widths {list(c.matryoshka_dims)}, batch {c.batch_size}."
                ),
                "evaluation": {
                    "BM25": bm25,
                    "zero-shot": before["metrics"],
                    "fine-tuned": after["metrics"],
                },
            },
        )
    with experiment.MetricsLog(workdir / "metrics.jsonl") as log:
        log.write(results)
    return results


def _summarize(c: CodeSearchConfig, summary: dict[str, Any], workdir: str, seconds: float) -> str:
    return (
        f"done in {seconds:.0f} s. nDCG@10: BM25 {summary['bm25']['ndcg@10']:.4f}, zero-shot "
        f"{summary['zero_shot']['ndcg@10']:.4f}, fine-tuned "
        f"{summary['fine_tuned']['ndcg@10']:.4f}. Report: {Path(workdir) / 'report.md'}"
    )


def main(argv: list[str] | None = None) -> int:
    return experiment.run_command(
        argv,
        config_class=CodeSearchConfig,
        program="code_search",
        description=__doc__.split("\n\n")[0],
        default_workdir="runs/code_search",
        train_and_evaluate=train_and_evaluate,
        summarize=_summarize,
    )


if __name__ == "__main__":
    sys.exit(main())
