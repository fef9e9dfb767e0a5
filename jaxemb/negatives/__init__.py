"""Negatives: hard-negative mining, samplers, clustered batches and refresh during training.

See ``shared/design/roadmap.md`` ("Negatives"): offline mining with sentence-transformers'
semantics on the exact search engine, the SimANS / UNPG / NV-Retriever samplers as pure
functions of scores and a key, NGAME-style clustered batches, and ANCE-style refresh.
"""

from jaxemb.negatives._mine import mine_hard_negatives as mine_hard_negatives

__all__ = ["mine_hard_negatives"]
