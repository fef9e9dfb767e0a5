"""Encoders that turn inputs into embeddings, and heads on top of them (see encoders.md)."""

from jaxemb.encoders._heads import L2Normalize as L2Normalize
from jaxemb.encoders._heads import MatryoshkaHead as MatryoshkaHead
from jaxemb.encoders._heads import ProjectionHead as ProjectionHead
from jaxemb.encoders._heads import nested_mask as nested_mask
from jaxemb.encoders._simple import ConvEncoder as ConvEncoder
from jaxemb.encoders._simple import MLPEncoder as MLPEncoder

__all__ = [
    "ConvEncoder",
    "L2Normalize",
    "MLPEncoder",
    "MatryoshkaHead",
    "ProjectionHead",
    "nested_mask",
]
