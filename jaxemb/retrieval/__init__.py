"""Exact search and retrieval metrics (see shared/design/analysis.md, section Retrieval)."""

from jaxemb.retrieval._search import search as search

__all__ = ["search"]
