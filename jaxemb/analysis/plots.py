"""Plots of embedding diagnostics, drawn with matplotlib and saved as PNG.

Every function draws into the given ``ax`` (and returns its figure) or into a new
``matplotlib.figure.Figure`` bound to the non-interactive Agg canvas. No ``pyplot`` state is
touched, so the functions are safe in scripts, threads and headless machines; pass the figure
to :func:`save` to write it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from jaxemb._validate import check_choice, shape_str

_FIGSIZE = (5.0, 3.6)
_DENSITY_EPS = 1e-10


def _axes(ax: Axes | None) -> tuple[Figure, Axes]:
    if ax is None:
        fig = Figure(figsize=_FIGSIZE, layout="constrained")
        FigureCanvasAgg(fig)
        return fig, fig.add_subplot()
    if not isinstance(ax, Axes):
        raise ValueError(f"ax must be a matplotlib Axes or None; got {type(ax).__name__}")
    return ax.get_figure(root=True), ax


def _vector(x: Any, name: str) -> np.ndarray:
    v = np.asarray(x)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence; got shape {shape_str(v)}")
    if not (np.issubdtype(v.dtype, np.number) or v.dtype.name == "bfloat16"):
        raise ValueError(f"{name} must be numeric; got dtype {v.dtype}")
    return v.astype(np.float64)


def spectrum_plot(
    x_or_singular_values: Any,
    *,
    ax: Axes | None = None,
    label: str | None = None,
    normalize: bool = False,
) -> Figure:
    """Log–log plot of singular values against their rank.

    Args:
      x_or_singular_values: embeddings [N, D] (their uncentred singular values are computed
        with :func:`jaxemb.analysis.spectrum`) or singular values [K] already computed.
      ax: axes to draw into; ``None`` makes a new figure.
      label: legend entry for this curve (call again with the same ``ax`` to overlay).
      normalize: divide by the largest singular value.

    Returns:
      The figure holding the plot. Zero singular values are left out (log scale).

    Examples:
      >>> import numpy as np
      >>> from jaxemb.analysis import plots
      >>> fig = plots.spectrum_plot(np.diag([4.0, 2.0, 1.0]), label="toy")
      >>> type(fig).__name__, fig.axes[0].get_xscale(), fig.axes[0].get_yscale()
      ('Figure', 'log', 'log')

    References:
      Spectrum plots of Agrawal et al., "α-ReQ: Assessing Representation Quality in
      Self-Supervised Learning by measuring eigenspectrum decay", NeurIPS 2022.
    """
    values = np.asarray(x_or_singular_values)
    if values.ndim == 2:
        from jaxemb.analysis._diagnostics import spectrum

        values = np.asarray(spectrum(x_or_singular_values))
    elif values.ndim != 1:
        raise ValueError(
            "x_or_singular_values must be embeddings [N, D] or singular values [K]; "
            f"got shape {shape_str(values)}"
        )
    s = _vector(values, "x_or_singular_values")
    if np.any(s < 0) or not np.all(np.isfinite(s)):
        raise ValueError("singular values must be finite and non-negative")
    fig, ax = _axes(ax)
    rank = np.arange(1, s.size + 1)
    keep = s > 0
    if normalize and keep.any():
        s = s / s.max()
    ax.loglog(rank[keep], s[keep], label=label)
    ax.set_xlabel("rank")
    ax.set_ylabel("singular value" + (" / max" if normalize else ""))
    ax.set_title("singular-value spectrum")
    ax.grid(True, which="both", alpha=0.3)
    if label is not None:
        ax.legend()
    return fig


def matryoshka_curve(
    dims: Sequence[int],
    values: Mapping[str, Sequence[float]],
    *,
    ylabel: str = "kNN accuracy",
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """A metric against the truncated embedding dimension, one curve per method.

    Args:
      dims: the truncation dimensions [K], positive and increasing (x axis, log base 2).
      values: curve name → metric values [K], one per entry of ``dims``.
      ylabel: y-axis label.
      ax: axes to draw into; ``None`` makes a new figure.
      title: optional title.

    Returns:
      The figure holding the plot.

    Examples:
      >>> from jaxemb.analysis import plots
      >>> curves = {"mrl": [0.7, 0.8, 0.9], "base": [0.5, 0.7, 0.9]}
      >>> fig = plots.matryoshka_curve([8, 16, 32], curves)
      >>> len(fig.axes[0].get_lines())
      2

    References:
      Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022 (accuracy vs.
      representation size plots).
    """
    d = _vector(dims, "dims")
    if np.any(d <= 0) or np.any(np.diff(d) <= 0):
        raise ValueError(f"dims must be positive and increasing; got {list(dims)}")
    if not isinstance(values, Mapping) or not values:
        raise ValueError("values must be a non-empty mapping of curve name -> list of values")
    fig, ax = _axes(ax)
    for name, ys in values.items():
        y = _vector(ys, f"values[{name!r}]")
        if y.size != d.size:
            raise ValueError(
                f"values[{name!r}] must have one value per dim ({d.size}); got {y.size}"
            )
        ax.plot(d, y, marker="o", label=str(name))
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(d))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{int(v)}" if float(v).is_integer() else f"{v:g}" for v in d])
    ax.set_xlabel("embedding dimension")
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def loss_curve(
    steps: Sequence[float],
    losses: Sequence[float] | Mapping[str, Sequence[float]],
    *,
    ax: Axes | None = None,
    label: str | None = None,
    ylabel: str = "loss",
    log_y: bool = False,
) -> Figure:
    """Training loss against step.

    Args:
      steps: the steps [T] (x axis).
      losses: loss values [T], or a mapping name → values [T] for several curves.
      ax: axes to draw into; ``None`` makes a new figure.
      label: legend entry when ``losses`` is a single curve.
      ylabel: y-axis label.
      log_y: logarithmic y axis (for positive losses).

    Returns:
      The figure holding the plot.

    Examples:
      >>> from jaxemb.analysis import plots
      >>> fig = plots.loss_curve([0, 10, 20], [2.3, 1.1, 0.6])
      >>> fig.axes[0].get_lines()[0].get_ydata().tolist()
      [2.3, 1.1, 0.6]
    """
    x = _vector(steps, "steps")
    series = dict(losses) if isinstance(losses, Mapping) else {label: losses}
    if not series:
        raise ValueError("losses must not be an empty mapping")
    fig, ax = _axes(ax)
    for name, ys in series.items():
        y = _vector(ys, "losses" if name is None else f"losses[{name!r}]")
        if y.size != x.size:
            raise ValueError(f"losses must have one value per step ({x.size}); got {y.size}")
        ax.plot(x, y, label=name)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if any(name is not None for name in series):
        ax.legend()
    return fig


def density_histogram(
    firing_frequency: Any,
    *,
    ax: Axes | None = None,
    bins: int = 50,
) -> Figure:
    """Histogram of ``log10`` feature firing frequencies (sparse-autoencoder feature density).

    Frequencies are plotted as ``log10(f + 1e-10)`` (the SAELens convention), so dead features
    (``f = 0``) sit at −10; the title reports how many there are.

    Args:
      firing_frequency: per-feature fraction of inputs on which the feature fires, [F] in
        ``[0, 1]``.
      ax: axes to draw into; ``None`` makes a new figure.
      bins: number of histogram bins.

    Returns:
      The figure holding the plot.

    Examples:
      >>> from jaxemb.analysis import plots
      >>> fig = plots.density_histogram([0.0, 1e-4, 1e-3, 1e-2, 0.1])
      >>> fig.axes[0].get_title()
      'feature density (dead: 1 of 5)'

    References:
      Bricken et al., "Towards Monosemanticity", 2023 (feature density histograms); SAELens'
      ``log10(feature_sparsity + 1e-10)`` logging.
    """
    f = _vector(firing_frequency, "firing_frequency")
    if not np.all(np.isfinite(f)) or np.any(f < 0) or np.any(f > 1):
        raise ValueError("firing_frequency must hold fractions in [0, 1]")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer; got {bins!r}")
    fig, ax = _axes(ax)
    ax.hist(np.log10(f + _DENSITY_EPS), bins=int(bins))
    ax.set_xlabel("log10 firing frequency")
    ax.set_ylabel("features")
    ax.set_title(f"feature density (dead: {int(np.sum(f == 0))} of {f.size})")
    return fig


def similarity_histogram(
    pos_sims: Any,
    neg_sims: Any,
    *,
    ax: Axes | None = None,
    bins: int = 50,
    labels: tuple[str, str] = ("positive pairs", "negative pairs"),
) -> Figure:
    """Overlaid density histograms of positive-pair and negative-pair similarities.

    Both histograms share the same bin edges (spanning the union of the values) and are
    normalised to unit area, so sets of different sizes compare directly; the gap between the
    two modes is what a contrastive model learns to widen.

    Args:
      pos_sims: similarities of positive (same-label / matching) pairs, [P].
      neg_sims: similarities of negative pairs, [Q].
      ax: axes to draw into; ``None`` makes a new figure.
      bins: number of shared bins.
      labels: legend entries for the two histograms.

    Returns:
      The figure holding the plot.

    Examples:
      >>> from jaxemb.analysis import plots
      >>> fig = plots.similarity_histogram([0.9, 0.8, 0.7], [0.1, -0.2, 0.0, 0.3], bins=5)
      >>> [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
      ['positive pairs', 'negative pairs']

    References:
      Similarity distribution plots as in Wang & Isola 2020 (Fig. 2) and the
      sentence-transformers evaluation of positive vs. negative cosine scores.
    """
    pos = _vector(pos_sims, "pos_sims")
    neg = _vector(neg_sims, "neg_sims")
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))):
        raise ValueError("pos_sims and neg_sims must be finite")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer; got {bins!r}")
    lo = min(pos.min(), neg.min())
    hi = max(pos.max(), neg.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, int(bins) + 1)
    fig, ax = _axes(ax)
    ax.hist(pos, bins=edges, density=True, alpha=0.55, label=labels[0])
    ax.hist(neg, bins=edges, density=True, alpha=0.55, label=labels[1])
    ax.set_xlabel("similarity")
    ax.set_ylabel("density")
    ax.set_title("similarity distribution")
    ax.legend()
    return fig


def projection_2d(
    x: Any,
    labels: Any = None,
    *,
    method: str = "pca",
    ax: Axes | None = None,
    max_legend: int = 20,
) -> Figure:
    """Scatter plot of embeddings projected to two dimensions, coloured by label.

    ``method="pca"`` centres the rows and projects them onto the top two right singular
    vectors of the centred matrix (SVD in float64, no scikit-learn); the axis labels give the
    fraction of variance each component explains. Points of each label are drawn as one
    scatter collection, in increasing label order.

    Args:
      x: embeddings, [N, D] with N >= 2 and D >= 2.
      labels: optional [N] labels (integers or strings) to colour by.
      method: ``"pca"`` (the only projection offered).
      ax: axes to draw into; ``None`` makes a new figure.
      max_legend: show a legend only when there are at most this many labels.

    Returns:
      The figure holding the plot.

    Examples:
      >>> import numpy as np
      >>> from jaxemb.analysis import plots
      >>> x = np.array([[0.0, 0.0, 1.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
      >>> fig = plots.projection_2d(x, labels=[0, 1, 1, 0])
      >>> len(fig.axes[0].collections)
      2

    References:
      Principal component analysis (Pearson 1901) via the SVD of the centred data matrix.
    """
    check_choice(method, "method", ("pca",))
    data = np.asarray(x)
    if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] < 2:
        raise ValueError(
            f"x must be embeddings [N, D] with N >= 2 and D >= 2; got {shape_str(data)}"
        )
    if not (np.issubdtype(data.dtype, np.number) or data.dtype.name == "bfloat16"):
        raise ValueError(f"x must be numeric; got dtype {data.dtype}")
    data = data.astype(np.float64)
    if not np.all(np.isfinite(data)):
        bad = np.flatnonzero(~np.isfinite(data).all(axis=1))
        raise ValueError(f"x must be finite; got NaN/inf in rows {bad[:10].tolist()}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (data.shape[0],):
            raise ValueError(
                f"labels must have one entry per row of x ({data.shape[0]}); "
                f"got shape {shape_str(labels)}"
            )
    centred = data - data.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    var = s**2
    explained = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    fig, ax = _axes(ax)
    if labels is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=8)
    else:
        uniq = np.unique(labels)
        for value in uniq:
            keep = labels == value
            ax.scatter(coords[keep, 0], coords[keep, 1], s=8, label=str(value))
        if len(uniq) <= max_legend:
            ax.legend(fontsize="small", markerscale=2)
    ax.set_xlabel(f"PC 1 ({explained[0]:.1%} of variance)")
    ax.set_ylabel(f"PC 2 ({explained[1]:.1%} of variance)")
    ax.set_title("2-D projection (PCA)")
    return fig


def save(fig: Figure, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Writes ``fig`` as a PNG (creating parent folders) and closes it.

    Args:
      fig: a figure from this module (or any matplotlib figure, ``pyplot`` ones included).
      path: destination file; written as PNG whatever its suffix.
      dpi: resolution.

    Returns:
      The path written, as a ``pathlib.Path``.

    Examples:
      >>> import tempfile, pathlib
      >>> from jaxemb.analysis import plots
      >>> fig = plots.loss_curve([0, 1], [1.0, 0.5])
      >>> out = plots.save(fig, pathlib.Path(tempfile.mkdtemp()) / "loss.png")
      >>> out.read_bytes()[:4]
      b'\\x89PNG'
    """
    if not isinstance(fig, Figure):
        raise ValueError(f"fig must be a matplotlib Figure; got {type(fig).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    if getattr(fig.canvas, "manager", None) is not None:  # a pyplot figure: release it
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


__all__ = [
    "spectrum_plot",
    "matryoshka_curve",
    "loss_curve",
    "density_histogram",
    "similarity_histogram",
    "projection_2d",
    "save",
]
