"""Contrastive, metric and self-supervised losses (see shared/design/losses.md).

Every loss is a pure function of ``[batch, dim]`` embeddings with keyword-only
hyperparameters, written for the global batch: jitted on batch-sharded inputs it gives the
single-device value and gradients.
"""

from jaxemb.losses._debiased import debiased_nt_xent as debiased_nt_xent
from jaxemb.losses._debiased import hard_negative_nt_xent as hard_negative_nt_xent
from jaxemb.losses._dhn import dhn_nce as dhn_nce
from jaxemb.losses._gist import gist_info_nce as gist_info_nce
from jaxemb.losses._info_nce import info_nce as info_nce
from jaxemb.losses._margin import margin_info_nce as margin_info_nce
from jaxemb.losses._matryoshka import matryoshka as matryoshka
from jaxemb.losses._matryoshka_2d import adaptive_layer as adaptive_layer
from jaxemb.losses._matryoshka_2d import matryoshka_2d as matryoshka_2d
from jaxemb.losses._multi_vector import multi_vector_info_nce as multi_vector_info_nce
from jaxemb.losses._nt_xent import nt_xent as nt_xent
from jaxemb.losses._pairs import contrastive_pair as contrastive_pair
from jaxemb.losses._pairs import online_contrastive as online_contrastive
from jaxemb.losses._scores import angle as angle
from jaxemb.losses._scores import cosent as cosent
from jaxemb.losses._scores import cosine_mse as cosine_mse
from jaxemb.losses._scores import distill_kl as distill_kl
from jaxemb.losses._scores import margin_mse as margin_mse
from jaxemb.losses._sigmoid import sigmoid_loss as sigmoid_loss
from jaxemb.losses._soft import cwcl as cwcl
from jaxemb.losses._soft import soft_label_kl as soft_label_kl
from jaxemb.losses._soft import soft_target_info_nce as soft_target_info_nce
from jaxemb.losses._ssl import alignment as alignment
from jaxemb.losses._ssl import barlow_twins as barlow_twins
from jaxemb.losses._ssl import care_equivariance as care_equivariance
from jaxemb.losses._ssl import ldreg as ldreg
from jaxemb.losses._ssl import uniformity as uniformity
from jaxemb.losses._ssl import vicreg as vicreg
from jaxemb.losses._supcon import supcon as supcon
from jaxemb.losses._triplet import batch_all_triplet as batch_all_triplet
from jaxemb.losses._triplet import batch_hard_soft_margin_triplet as batch_hard_soft_margin_triplet
from jaxemb.losses._triplet import batch_hard_triplet as batch_hard_triplet
from jaxemb.losses._triplet import batch_semi_hard_triplet as batch_semi_hard_triplet
from jaxemb.losses._triplet import triplet_margin as triplet_margin

__all__ = [
    "adaptive_layer",
    "alignment",
    "angle",
    "barlow_twins",
    "batch_all_triplet",
    "batch_hard_soft_margin_triplet",
    "batch_hard_triplet",
    "batch_semi_hard_triplet",
    "care_equivariance",
    "contrastive_pair",
    "cosent",
    "cosine_mse",
    "cwcl",
    "debiased_nt_xent",
    "dhn_nce",
    "distill_kl",
    "gist_info_nce",
    "hard_negative_nt_xent",
    "info_nce",
    "ldreg",
    "margin_info_nce",
    "margin_mse",
    "matryoshka",
    "matryoshka_2d",
    "multi_vector_info_nce",
    "nt_xent",
    "online_contrastive",
    "sigmoid_loss",
    "soft_label_kl",
    "soft_target_info_nce",
    "supcon",
    "triplet_margin",
    "uniformity",
    "vicreg",
]
