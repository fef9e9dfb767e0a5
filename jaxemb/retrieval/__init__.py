"""Exact search, quantization, k-means and retrieval metrics.

See shared/design/analysis.md (section Retrieval) and shared/design/roadmap.md ("Retrieval and
compression").
"""

from jaxemb.losses._multi_vector import multi_vector_info_nce as multi_vector_info_nce
from jaxemb.retrieval._dpq import DifferentiablePQ as DifferentiablePQ
from jaxemb.retrieval._funnel import funnel_search as funnel_search
from jaxemb.retrieval._kmeans import KMeans as KMeans
from jaxemb.retrieval._kmeans import kmeans as kmeans
from jaxemb.retrieval._leanvec import LeanVec as LeanVec
from jaxemb.retrieval._leanvec import fit_leanvec as fit_leanvec
from jaxemb.retrieval._linear import PCA as PCA
from jaxemb.retrieval._linear import apply_pca as apply_pca
from jaxemb.retrieval._linear import fit_pca as fit_pca
from jaxemb.retrieval._maxsim import maxsim as maxsim
from jaxemb.retrieval._maxsim import maxsim_pairwise as maxsim_pairwise
from jaxemb.retrieval._metrics import evaluate_retrieval as evaluate_retrieval
from jaxemb.retrieval._metrics import retrieval_metrics as retrieval_metrics
from jaxemb.retrieval._metrics import sts_spearman as sts_spearman
from jaxemb.retrieval._muvera import MuveraConfig as MuveraConfig
from jaxemb.retrieval._muvera import muvera_fde as muvera_fde
from jaxemb.retrieval._muvera import muvera_search as muvera_search
from jaxemb.retrieval._pq import OPQ as OPQ
from jaxemb.retrieval._pq import opq_train as opq_train
from jaxemb.retrieval._pq import pq_decode as pq_decode
from jaxemb.retrieval._pq import pq_encode as pq_encode
from jaxemb.retrieval._pq import pq_search as pq_search
from jaxemb.retrieval._pq import pq_train as pq_train
from jaxemb.retrieval._quantize import quantize_embeddings as quantize_embeddings
from jaxemb.retrieval._rescore import search_with_rescoring as search_with_rescoring
from jaxemb.retrieval._search import maxsim_search as maxsim_search
from jaxemb.retrieval._search import search as search
from jaxemb.retrieval._token_head import TokenEmbeddingHead as TokenEmbeddingHead
from jaxemb.retrieval._token_head import token_skiplist as token_skiplist

__all__ = [
    "search",
    "maxsim_search",
    "quantize_embeddings",
    "search_with_rescoring",
    "funnel_search",
    "fit_pca",
    "apply_pca",
    "PCA",
    "fit_leanvec",
    "LeanVec",
    "kmeans",
    "KMeans",
    "retrieval_metrics",
    "evaluate_retrieval",
    "sts_spearman",
    "maxsim",
    "maxsim_pairwise",
    "MuveraConfig",
    "muvera_fde",
    "muvera_search",
    "multi_vector_info_nce",
    "TokenEmbeddingHead",
    "token_skiplist",
    "pq_train",
    "pq_encode",
    "pq_decode",
    "pq_search",
    "opq_train",
    "OPQ",
    "DifferentiablePQ",
]
