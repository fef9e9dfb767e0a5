"""Embedding diagnostics and probes, and the interpretation of features (distinctive words of
groups of texts, the best single-feature F1 per metadata label); see shared/design/analysis.md.

Plots live in the submodule ``jaxemb.analysis.plots``.
"""

from jaxemb.analysis import plots as plots
from jaxemb.analysis._alignment import LabelAlignment as LabelAlignment
from jaxemb.analysis._alignment import label_feature_f1 as label_feature_f1
from jaxemb.analysis._cka import linear_cka as linear_cka
from jaxemb.analysis._cka import rbf_cka as rbf_cka
from jaxemb.analysis._concepts import CAV as CAV
from jaxemb.analysis._concepts import concept_activation_vector as concept_activation_vector
from jaxemb.analysis._concepts import tcav_score as tcav_score
from jaxemb.analysis._diagnostics import alignment as alignment
from jaxemb.analysis._diagnostics import participation_ratio as participation_ratio
from jaxemb.analysis._diagnostics import rankme as rankme
from jaxemb.analysis._diagnostics import spectrum as spectrum
from jaxemb.analysis._diagnostics import uniformity as uniformity
from jaxemb.analysis._geometry import Hubness as Hubness
from jaxemb.analysis._geometry import Whitening as Whitening
from jaxemb.analysis._geometry import anisotropy as anisotropy
from jaxemb.analysis._geometry import fit_whitening as fit_whitening
from jaxemb.analysis._geometry import hubness as hubness
from jaxemb.analysis._geometry import isotropy as isotropy
from jaxemb.analysis._geometry import lid_mle as lid_mle
from jaxemb.analysis._geometry import lid_twonn as lid_twonn
from jaxemb.analysis._geometry import pick_anchors as pick_anchors
from jaxemb.analysis._geometry import relative_representation as relative_representation
from jaxemb.analysis._geometry import whiten as whiten
from jaxemb.analysis._keywords import STOP_WORDS as STOP_WORDS
from jaxemb.analysis._keywords import DistinctiveWords as DistinctiveWords
from jaxemb.analysis._keywords import distinctive_words as distinctive_words
from jaxemb.analysis._keywords import words as words
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
    "anisotropy",
    "isotropy",
    "lid_mle",
    "lid_twonn",
    "hubness",
    "Hubness",
    "linear_cka",
    "rbf_cka",
    "relative_representation",
    "pick_anchors",
    "fit_whitening",
    "whiten",
    "Whitening",
    "concept_activation_vector",
    "tcav_score",
    "CAV",
    "distinctive_words",
    "DistinctiveWords",
    "words",
    "STOP_WORDS",
    "label_feature_f1",
    "LabelAlignment",
]
