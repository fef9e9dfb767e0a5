"""Negatives: hard-negative mining, samplers, clustered batches and refresh during training.

See ``shared/design/roadmap.md`` ("Negatives"): offline mining with sentence-transformers'
semantics on the exact search engine, the SimANS / UNPG / NV-Retriever samplers as pure
functions of scores and a key, NGAME-style clustered batches, and ANCE-style refresh.
"""

from jaxemb.negatives._clustered import ClusteredBatches as ClusteredBatches
from jaxemb.negatives._clustered import ClusteredBatchState as ClusteredBatchState
from jaxemb.negatives._mine import mine_hard_negatives as mine_hard_negatives
from jaxemb.negatives._refresh import NegativeRefresh as NegativeRefresh
from jaxemb.negatives._refresh import RefreshState as RefreshState
from jaxemb.negatives._samplers import false_negative_mask as false_negative_mask
from jaxemb.negatives._samplers import simans_probs as simans_probs
from jaxemb.negatives._samplers import simans_sample as simans_sample
from jaxemb.negatives._samplers import unpg_filter as unpg_filter

__all__ = [
    "mine_hard_negatives",
    "simans_probs",
    "simans_sample",
    "unpg_filter",
    "false_negative_mask",
    "ClusteredBatches",
    "ClusteredBatchState",
    "NegativeRefresh",
    "RefreshState",
]
