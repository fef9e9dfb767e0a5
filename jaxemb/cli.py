"""The ``jaxemb`` command line.

Subcommands:

- ``jaxemb analyze emb.npy [--labels labels.npy] [--other other.npy] --out DIR`` writes
  ``DIR/report.md`` with every diagnostic of :mod:`jaxemb.analysis` and its plots.
- ``jaxemb embed --model DIR --input texts.txt --output emb.npy [--batch-size N]`` embeds one
  text per line with a sentence-transformers (or plain Hugging Face encoder) checkpoint,
  sharded over the local devices, with a progress bar.

Adding a subcommand: write ``_add_<name>(subparsers)`` that creates its parser and sets
``handler=<function(args) -> int>`` with ``set_defaults``, and append it to ``_SUBCOMMANDS``.
Handlers raise :class:`CLIError` (or ``ValueError``) for bad input; :func:`main` prints the
message as one paragraph on stderr and returns exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

EXIT_OK = 0
EXIT_USAGE = 2


class CLIError(Exception):
    """Bad input to a subcommand: reported on stderr with exit code 2."""


# ---------------------------------------------------------------------------------------------
# Loading and checking inputs (before anything is computed or written)
# ---------------------------------------------------------------------------------------------


_NPY_MAGIC = b"\x93NUMPY"


def _load_npy(path: str, what: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{what} file not found: {path}")
    try:
        with open(p, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
    except OSError as err:
        raise CLIError(f"could not read {what} {path}: {err}") from err
    if head != _NPY_MAGIC:
        raise CLIError(
            f"{what} {path} is not a .npy file (it does not start with the NumPy format's magic "
            "string; text, CSV, pickle and .npz files are not read). Save the array with "
            "numpy.save(path, array) and pass that file."
        )
    try:
        return np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise CLIError(f"could not read {what} {path} as a .npy array: {err}") from err


def _embeddings(path: str, what: str) -> np.ndarray:
    x = _load_npy(path, what)
    if x.ndim != 2:
        raise CLIError(
            f"{what} {path} must be a 2-D array [N, D] of embeddings; got shape {list(x.shape)}"
        )
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise CLIError(f"{what} {path} must hold numbers; got dtype {x.dtype}")
    if x.shape[0] < 3 or x.shape[1] < 1:
        raise CLIError(f"{what} {path} must have at least 3 rows and 1 column; got {list(x.shape)}")
    x = x.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        shown = ", ".join(str(i) for i in bad[:10]) + (", ..." if bad.size > 10 else "")
        raise CLIError(
            f"{what} {path} must be finite; got NaN/inf in {bad.size} of {x.shape[0]} rows "
            f"(rows {shown})"
        )
    return x


def _labels(path: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels as class indices 0..C-1 plus the original class values."""
    y = _load_npy(path, "labels")
    if y.ndim != 1 or y.shape[0] != n:
        raise CLIError(
            f"labels {path} must be a 1-D array with one label per embedding row ({n}); "
            f"got shape {list(y.shape)}"
        )
    if not (
        np.issubdtype(y.dtype, np.integer)
        or np.issubdtype(y.dtype, np.bool_)
        or np.issubdtype(y.dtype, np.str_)
    ):
        raise CLIError(f"labels {path} must be integers or strings; got dtype {y.dtype}")
    classes, idx = np.unique(y, return_inverse=True)
    return idx.astype(np.int32), classes


# ---------------------------------------------------------------------------------------------
# analyze
# ---------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    v = float(v)
    if not np.isfinite(v):
        return str(v)
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_test = min(max(1, int(round(fraction * n))), n - 1)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _pair_similarities(x, y, max_points, seed):
    """Cosine similarities of same-label and different-label pairs i < j (subsampled rows)."""
    rng = np.random.default_rng(seed)
    idx = np.arange(len(x)) if len(x) <= max_points else rng.choice(len(x), max_points, False)
    u = x[idx].astype(np.float64)
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    sims = u @ u.T
    iu = np.triu_indices(len(idx), k=1)
    same = y[idx][iu[0]] == y[idx][iu[1]]
    return sims[iu][same], sims[iu][~same], len(idx)


def _analyze(args: argparse.Namespace) -> int:
    import jax.numpy as jnp

    from jaxemb import analysis
    from jaxemb.analysis import plots

    # 1. Read and check every input; nothing is written before all of it is computed.
    x = _embeddings(args.emb, "embeddings")
    n, d = x.shape
    y = classes = other = None
    if args.labels is not None:
        y, classes = _labels(args.labels, n)
    if args.other is not None:
        other = _embeddings(args.other, "other embeddings")
        if other.shape[0] != n:
            raise CLIError(
                f"other embeddings {args.other} must have one row per embedding row ({n}); "
                f"got shape {list(other.shape)}"
            )
    k = args.k
    if k < 1 or k > n - 1:
        raise CLIError(f"--k must be in [1, N - 1 = {n - 1}] for {n} embeddings; got {k}")
    if not 0.0 < args.test_fraction < 1.0:
        raise CLIError(f"--test-fraction must be in (0, 1); got {args.test_fraction}")
    if args.max_points < 3:
        raise CLIError(
            "--max-points (rows subsampled for RBF CKA and the similarity histogram) must be at "
            f"least 3; got {args.max_points}"
        )
    if y is not None:
        train, _ = _split(n, args.test_fraction, args.seed)
        if len(classes) < 2 or np.unique(y[train]).size < 2:
            raise CLIError(
                f"--labels {args.labels} must hold at least 2 classes in the training part of "
                f"the split (found {np.unique(y[train]).size}); kNN accuracy and a linear probe "
                "of a single class measure nothing. Pass labels with several classes, or change "
                "--test-fraction / --seed."
            )
    _check_writable_dir(Path(args.out), "--out")

    # 2. Compute.
    xj = jnp.asarray(x)
    rows: list[tuple[str, str, str]] = []  # (metric, value, note)
    sv = np.asarray(analysis.spectrum(xj))
    rows.append(("RankMe", _fmt(analysis.rankme(xj)), "exp entropy of singular values"))
    rows.append(("participation ratio", _fmt(analysis.participation_ratio(xj)), "(Σλ)²/Σλ²"))
    rows.append(("anisotropy", _fmt(analysis.anisotropy(xj)), "mean cosine, i ≠ j"))
    rows.append(("isotropy", _fmt(analysis.isotropy(xj)), "min Z(u) / max Z(u)"))
    rows.append(("uniformity", _fmt(analysis.uniformity(xj, chunk_size=1024)), "t = 2"))
    lid_k = max(k, 2)  # k = 1 makes the MLE degenerate; N >= 3 so 2 <= N - 1
    rows.append(
        ("LID (MLE)", _fmt(analysis.lid_mle(xj, lid_k)), f"k = {lid_k}, MacKay–Ghahramani mean")
    )
    rows.append(("LID (TwoNN)", _fmt(analysis.lid_twonn(xj)), "MLE N / Σ log(r2/r1)"))
    hub = analysis.hubness(xj, k)
    rows.append(("hubness skewness", _fmt(hub.skewness), f"k = {k}, cosine kNN"))
    rows.append(("anti-hub fraction", _fmt(hub.antihub_fraction), f"N_{k} = 0"))

    cka_rows: list[tuple[str, str, str]] = []
    if other is not None:
        oj = jnp.asarray(other)
        cka_rows.append(("linear CKA", _fmt(analysis.linear_cka(xj, oj)), "Kornblith et al."))
        if n >= 4:
            cka_rows.append(
                (
                    "linear CKA (debiased)",
                    _fmt(analysis.linear_cka(xj, oj, debiased=True)),
                    "unbiased HSIC",
                )
            )
        m = min(n, args.max_points)
        sub = np.sort(np.random.default_rng(args.seed).choice(n, m, replace=False))
        note = "σ = median distance" + (f", {m} random rows" if m < n else "")
        cka_rows.append(("RBF CKA", _fmt(analysis.rbf_cka(x[sub], other[sub])), note))
        if other.shape[1] == d:
            cka_rows.append(
                ("alignment", _fmt(analysis.alignment(xj, oj)), "row i of emb vs row i of other")
            )

    probe_rows: list[tuple[str, str, str]] = []
    sims = None
    if y is not None:
        train, test = _split(n, args.test_fraction, args.seed)
        num_classes = len(classes)
        kk = min(k, len(train))
        knn = analysis.knn_accuracy(
            x[train], y[train], x[test], y[test], k=kk, num_classes=num_classes
        )
        probe = analysis.linear_probe(x[train], y[train], x[test], y[test], num_classes=num_classes)
        split_note = f"{len(train)} train / {len(test)} test rows, seed {args.seed}"
        probe_rows.append(("kNN accuracy", _fmt(knn), f"k = {kk}, τ = 0.07; {split_note}"))
        probe_rows.append(("linear probe accuracy", _fmt(probe.accuracy), split_note))
        probe_rows.append(("linear probe train accuracy", _fmt(probe.train_accuracy), ""))
        sims = _pair_similarities(x, y, args.max_points, args.seed)

    figures = {"spectrum.png": plots.spectrum_plot(sv)}
    figures["projection.png"] = (
        plots.projection_2d(x, None if y is None else classes[y]) if d >= 2 else None
    )
    sim_note = None
    if sims is not None:
        pos, neg, used = sims
        if pos.size and neg.size:
            fig = plots.similarity_histogram(pos, neg, labels=("same label", "different label"))
            figures["similarity.png"] = fig
            sim_note = (
                f"Cosine similarity of all pairs of {used} rows"
                + (" (a random subset)" if used < n else "")
                + f": {pos.size} same-label pairs (mean {_fmt(pos.mean())}), "
                f"{neg.size} different-label pairs (mean {_fmt(neg.mean())})."
            )
        else:
            sim_note = (
                "Similarity histogram skipped: needs both same-label and different-label pairs."
            )

    # 3. Write: figures, then the report (atomically).
    from jaxemb.experiment import Report

    out = Path(args.out)
    try:
        report = Report(out, "Embedding analysis report")
        facts = [f"embeddings: `{args.emb}` — {n} rows × {d} dims"]
        if args.labels is not None:
            facts.append(f"labels: `{args.labels}` — {len(classes)} classes")
        if args.other is not None:
            facts.append(f"other: `{args.other}` — {other.shape[0]} rows × {other.shape[1]} dims")
        report.bullets(facts)
        report.heading("Diagnostics")
        report.table(["metric", "value", "notes"], rows, align="lll")
        report.text(f"Top singular values: {', '.join(_fmt(s) for s in sv[:5])}.")
        report.figure(figures["spectrum.png"], "spectrum.png", "spectrum")
        if cka_rows:
            report.heading("Similarity to `--other`")
            report.table(["metric", "value", "notes"], cka_rows, align="lll")
        if probe_rows:
            report.heading("Probes")
            report.text(
                "Fixed split: a seeded random permutation holds out "
                f"{args.test_fraction:.0%} of the rows as the test set (no leave-one-out)."
            )
            report.table(["metric", "value", "notes"], probe_rows, align="lll")
            report.heading("Similarity histogram")
            report.text(sim_note or "")
            if figures.get("similarity.png") is not None:
                report.figure(figures["similarity.png"], "similarity.png", "similarity")
        if figures.get("projection.png") is not None:
            report.heading("2-D projection (PCA)")
            report.figure(figures["projection.png"], "projection.png", "projection")
        report.write()
    except OSError as err:
        raise CLIError(f"could not write the report to {out}: {err}") from err
    print(out / "report.md")
    return EXIT_OK


def _add_analyze(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="write a Markdown report of embedding diagnostics and plots",
        description=(
            "Computes RankMe, participation ratio, anisotropy, isotropy, uniformity, LID "
            "(MLE and TwoNN), hubness and the spectrum of EMB; with --other also linear, "
            "debiased-linear and RBF CKA; with --labels also kNN accuracy and a linear probe "
            "on a fixed seeded train/test split and a same-label vs different-label "
            "similarity histogram. Writes OUT/report.md and PNG plots."
        ),
    )
    p.add_argument("emb", help="embeddings, a .npy array [N, D]")
    p.add_argument("--labels", help="labels, a .npy array [N] of integers or strings")
    p.add_argument("--other", help="a second representation of the same N inputs, .npy [N, D2]")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--k", type=int, default=10, help="neighbours for LID, hubness and kNN")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and subsamples")
    p.add_argument(
        "--test-fraction", type=float, default=0.2, help="held-out fraction for the probes"
    )
    p.add_argument(
        "--max-points",
        type=int,
        default=2000,
        help="rows subsampled for RBF CKA and the similarity histogram",
    )
    p.set_defaults(handler=_analyze)


def _check_writable_dir(path: Path, what: str) -> None:
    """Checks, before any work, that files can be created in ``path`` (or in the nearest folder
    above it that exists, when ``path`` is still to be created). Leaves nothing behind."""
    if path.exists() and not path.is_dir():
        raise CLIError(f"{what} {path} exists and is not a directory")
    base = path
    while not base.exists() and base != base.parent:
        base = base.parent
    probe = base / f".jaxemb-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise CLIError(
            f"{what} {path} is not writable ({err.strerror or err}, in {base}); nothing was "
            "computed. Choose a folder you can write to."
        ) from err


# ---------------------------------------------------------------------------------------------
# jaxemb embed
# ---------------------------------------------------------------------------------------------


def _read_texts(path: str) -> list[str]:
    """One text per line (``\\n`` or ``\\r\\n``), strictly UTF-8; every line is a text."""
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"input file not found: {path}")
    data = p.read_bytes()
    if not data:
        raise CLIError(f"input {path} is empty; it must hold one text per line")
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    texts = []
    for number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise CLIError(
                f"input {path} line {number} is not valid UTF-8 ({err.reason} at byte "
                f"{err.start}); re-encode the file as UTF-8"
            ) from err
        texts.append(text[:-1] if text.endswith("\r") else text)
    if not texts:
        raise CLIError(f"input {path} holds no lines")
    return texts


def _load_embedder(model_dir: str, pooling: str):
    from jaxemb.encoders import Embedder, load_hf_encoder, load_sentence_transformer

    d = Path(model_dir)
    if not d.is_dir():
        raise CLIError(f"model directory not found: {model_dir}")
    if (d / "modules.json").is_file():
        return load_sentence_transformer(d)
    encoder, tokenizer = load_hf_encoder(d)
    if tokenizer is None:
        raise CLIError(f"model directory {model_dir} has no tokenizer.json or vocab.txt")
    return Embedder(encoder, tokenizer, pooling=(pooling,))


def _embed(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be a positive integer; got {args.batch_size}")
    out = Path(args.output)
    if out.suffix != ".npy":
        raise CLIError(f"--output must be a .npy path; got {args.output}")
    if out.is_dir():
        raise CLIError(f"--output {out} is a directory; give the path of a .npy file")
    if not out.parent.is_dir():
        raise CLIError(f"output folder {out.parent} does not exist")
    _check_writable_dir(out.parent, "--output's folder")
    texts = _read_texts(args.input)
    embedder = _load_embedder(args.model, args.pooling)
    emb = embedder.encode(texts, batch_size=args.batch_size, show_progress=True)
    # Write to a temporary file in the same folder and rename: never a partial output file.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, emb)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"{out}: {emb.shape[0]} x {emb.shape[1]} float32")
    return EXIT_OK


def _add_embed(subparsers: Any) -> None:
    from jaxemb.encoders import POOL_METHODS

    p = subparsers.add_parser(
        "embed",
        help="embed one text per line with a sentence-transformers / Hugging Face checkpoint",
        description=(
            "Reads TEXTS (UTF-8, one text per line, empty lines included) and writes their "
            "embeddings [N, D] float32 to OUTPUT. MODEL is a sentence-transformers directory "
            "(modules.json: Transformer, Pooling, optional Dense and Normalize) or a plain "
            "Hugging Face directory of a supported family (pooled with --pooling). Inputs "
            "longer than the model's max_seq_length are truncated. Batches are sharded over "
            "the local devices."
        ),
    )
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--input", required=True, help="texts, UTF-8, one per line")
    p.add_argument("--output", required=True, help="output .npy path")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    p.add_argument(
        "--pooling",
        default="mean",
        choices=[m for m in POOL_METHODS if m not in ("first_last_mean", "attention")],
        help="pooling for a plain Hugging Face directory (sentence-transformers ones say theirs)",
    )
    p.set_defaults(handler=_embed)


_SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (_add_analyze, _add_embed)


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxemb`` argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="jaxemb", description="jaxemb command line tools")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def _error(command: str | None, message: str) -> int:
    prefix = f"jaxemb {command}: error: " if command else "jaxemb: error: "
    text = " ".join(str(message).split())  # one paragraph
    print(textwrap.fill(prefix + text, width=100), file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``jaxemb`` command line and returns its exit code.

    Args:
      argv: arguments without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
      0 on success, 2 on bad input (message on stderr, nothing written).

    Examples:
      >>> from jaxemb.cli import main
      >>> main(["analyze", "/no/such/file.npy", "--out", "/tmp/never"])
      2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse already printed its usage message
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_usage(sys.stderr)
        return _error(None, "a subcommand is required (e.g. jaxemb analyze --help)")
    try:
        return args.handler(args)
    except (CLIError, ValueError) as err:
        return _error(args.command, str(err))


if __name__ == "__main__":
    sys.exit(main())
