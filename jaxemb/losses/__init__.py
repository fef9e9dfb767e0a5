"""Contrastive, metric and self-supervised losses (see shared/design/losses.md).

Every loss is a pure function of ``[batch, dim]`` embeddings with keyword-only
hyperparameters, written for the global batch: jitted on batch-sharded inputs it gives the
single-device value and gradients.
"""

from jaxemb.losses._gist import gist_info_nce as gist_info_nce
from jaxemb.losses._info_nce import info_nce as info_nce
from jaxemb.losses._margin import margin_info_nce as margin_info_nce
from jaxemb.losses._matryoshka import matryoshka as matryoshka
from jaxemb.losses._nt_xent import nt_xent as nt_xent
from jaxemb.losses._sigmoid import sigmoid_loss as sigmoid_loss

__all__ = [
    "gist_info_nce",
    "info_nce",
    "margin_info_nce",
    "matryoshka",
    "nt_xent",
    "sigmoid_loss",
]
