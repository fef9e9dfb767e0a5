"""Contrastive, metric and self-supervised losses (see shared/design/losses.md).

Every loss is a pure function of ``[batch, dim]`` embeddings with keyword-only
hyperparameters, written for the global batch: jitted on batch-sharded inputs it gives the
single-device value and gradients.
"""

from jaxemb.losses._matryoshka import matryoshka as matryoshka
from jaxemb.losses._nt_xent import nt_xent as nt_xent

__all__ = ["matryoshka", "nt_xent"]
