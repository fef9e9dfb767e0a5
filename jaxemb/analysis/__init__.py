"""Embedding diagnostics and probes (see shared/design/analysis.md).

Plots live in the submodule ``jaxemb.analysis.plots``.
"""

from jaxemb.analysis import plots as plots
from jaxemb.analysis._diagnostics import alignment as alignment
from jaxemb.analysis._diagnostics import participation_ratio as participation_ratio
from jaxemb.analysis._diagnostics import rankme as rankme
from jaxemb.analysis._diagnostics import spectrum as spectrum
from jaxemb.analysis._diagnostics import uniformity as uniformity
from jaxemb.analysis._probes import ProbeResult as ProbeResult
from jaxemb.analysis._probes import knn_accuracy as knn_accuracy
from jaxemb.analysis._probes import knn_classify as knn_classify
from jaxemb.analysis._probes import linear_probe as linear_probe

__all__ = [
    "plots",
    "spectrum",
    "rankme",
    "participation_ratio",
    "alignment",
    "uniformity",
    "knn_classify",
    "knn_accuracy",
    "linear_probe",
    "ProbeResult",
]
