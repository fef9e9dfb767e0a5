"""Encoders that turn inputs into embeddings, and heads on top of them (see encoders.md)."""

from jaxemb.encoders._distilbert import DistilBertConfig as DistilBertConfig
from jaxemb.encoders._distilbert import DistilBertEncoder as DistilBertEncoder
from jaxemb.encoders._export import save_hf_encoder as save_hf_encoder
from jaxemb.encoders._export import save_sentence_transformer as save_sentence_transformer
from jaxemb.encoders._gemma3 import Gemma3Config as Gemma3Config
from jaxemb.encoders._gemma3 import Gemma3Encoder as Gemma3Encoder
from jaxemb.encoders._heads import L2Normalize as L2Normalize
from jaxemb.encoders._heads import MatryoshkaHead as MatryoshkaHead
from jaxemb.encoders._heads import ProjectionHead as ProjectionHead
from jaxemb.encoders._heads import nested_mask as nested_mask
from jaxemb.encoders._hf import SUPPORTED_MODEL_TYPES as SUPPORTED_MODEL_TYPES
from jaxemb.encoders._hf import load_hf_encoder as load_hf_encoder
from jaxemb.encoders._modernbert import ModernBertConfig as ModernBertConfig
from jaxemb.encoders._modernbert import ModernBertEncoder as ModernBertEncoder
from jaxemb.encoders._mpnet import MPNetConfig as MPNetConfig
from jaxemb.encoders._mpnet import MPNetEncoder as MPNetEncoder
from jaxemb.encoders._packaged import PACKAGED_MODELS as PACKAGED_MODELS
from jaxemb.encoders._packaged import packaged_model_path as packaged_model_path
from jaxemb.encoders._pool import POOL_METHODS as POOL_METHODS
from jaxemb.encoders._pool import AttentionPool as AttentionPool
from jaxemb.encoders._pool import pool as pool
from jaxemb.encoders._qwen3 import Qwen3Config as Qwen3Config
from jaxemb.encoders._qwen3 import Qwen3Encoder as Qwen3Encoder
from jaxemb.encoders._roberta import RobertaConfig as RobertaConfig
from jaxemb.encoders._roberta import RobertaEncoder as RobertaEncoder
from jaxemb.encoders._roberta import XLMRobertaConfig as XLMRobertaConfig
from jaxemb.encoders._set import SetEncoder as SetEncoder
from jaxemb.encoders._simple import ConvEncoder as ConvEncoder
from jaxemb.encoders._simple import MLPEncoder as MLPEncoder
from jaxemb.encoders._st import Embedder as Embedder
from jaxemb.encoders._st import load_sentence_transformer as load_sentence_transformer
from jaxemb.encoders._towers import EquiangularClassifier as EquiangularClassifier
from jaxemb.encoders._towers import FixedWeight as FixedWeight
from jaxemb.encoders._towers import SimplexClassifier as SimplexClassifier
from jaxemb.encoders._towers import TwoTower as TwoTower
from jaxemb.encoders._towers import equiangular_basis as equiangular_basis
from jaxemb.encoders._towers import regular_simplex as regular_simplex
from jaxemb.encoders._transformer import TENSOR_PARALLEL_RULES as TENSOR_PARALLEL_RULES
from jaxemb.encoders._transformer import EncoderOutput as EncoderOutput
from jaxemb.encoders._transformer import TransformerConfig as TransformerConfig
from jaxemb.encoders._transformer import TransformerEncoder as TransformerEncoder
from jaxemb.encoders._transformer import TransformerLayer as TransformerLayer
from jaxemb.encoders._transformer import param_shardings as param_shardings
from jaxemb.encoders._vit import ViTEncoder as ViTEncoder

__all__ = [
    "AttentionPool",
    "ConvEncoder",
    "DistilBertConfig",
    "DistilBertEncoder",
    "Embedder",
    "EncoderOutput",
    "EquiangularClassifier",
    "FixedWeight",
    "Gemma3Config",
    "Gemma3Encoder",
    "L2Normalize",
    "MLPEncoder",
    "MPNetConfig",
    "MPNetEncoder",
    "MatryoshkaHead",
    "ModernBertConfig",
    "ModernBertEncoder",
    "PACKAGED_MODELS",
    "POOL_METHODS",
    "ProjectionHead",
    "Qwen3Config",
    "Qwen3Encoder",
    "RobertaConfig",
    "RobertaEncoder",
    "SUPPORTED_MODEL_TYPES",
    "SetEncoder",
    "SimplexClassifier",
    "TENSOR_PARALLEL_RULES",
    "TransformerConfig",
    "TransformerEncoder",
    "TransformerLayer",
    "TwoTower",
    "ViTEncoder",
    "XLMRobertaConfig",
    "equiangular_basis",
    "load_hf_encoder",
    "load_sentence_transformer",
    "nested_mask",
    "packaged_model_path",
    "param_shardings",
    "pool",
    "regular_simplex",
    "save_hf_encoder",
    "save_sentence_transformer",
]
