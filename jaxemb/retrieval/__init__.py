"""Exact search, k-means and retrieval metrics (shared/design/analysis.md, section Retrieval)."""

from jaxemb.retrieval._kmeans import KMeans as KMeans
from jaxemb.retrieval._kmeans import kmeans as kmeans
from jaxemb.retrieval._metrics import evaluate_retrieval as evaluate_retrieval
from jaxemb.retrieval._metrics import retrieval_metrics as retrieval_metrics
from jaxemb.retrieval._metrics import sts_spearman as sts_spearman
from jaxemb.retrieval._search import search as search

__all__ = [
    "search",
    "kmeans",
    "KMeans",
    "retrieval_metrics",
    "evaluate_retrieval",
    "sts_spearman",
]
