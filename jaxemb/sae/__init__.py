"""Sparse autoencoders for embeddings and activations (see shared/design/sae.md).

Every SAE uses the SAELens layout ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``,
``W_dec [d_sae, d_in]``, ``b_dec [d_in]``: ``pre = (x − b_dec) @ W_enc + b_enc`` and
``x̂ = z @ W_dec + b_dec``. Variants (:class:`ReluSAE`, :class:`TopKSAE`, :class:`BatchTopKSAE`,
:class:`JumpReluSAE`, :class:`GatedSAE`, ...) define their encoder and a
``training_loss(x, *, dead_mask)`` method (:func:`loss` evaluates it for any variant);
initialisation, decoding, the unit-norm decoder
tricks, dead-latent bookkeeping and the jitted training step are shared. Metrics live in
:mod:`jaxemb.sae.metrics`, feature analysis in :mod:`jaxemb.sae.analysis`.

Examples:
  >>> import jax, optax
  >>> from flax import nnx
  >>> from jaxemb import sae
  >>> x = jax.random.normal(jax.random.key(0), (256, 16))
  >>> model = sae.TopKSAE(16, 64, k=4, rngs=nnx.Rngs(0))
  >>> sae.init_b_dec(model, x)
  >>> train_step, state = sae.make_train_step(model, optax.adam(1e-3))
  >>> state, metrics = train_step(state, x)
  >>> sorted(metrics)
  ['auxk', 'dead_fraction', 'fvu', 'l0', 'loss', 'mse']
"""

from jaxemb.sae import analysis as analysis
from jaxemb.sae import metrics as metrics
from jaxemb.sae._base import SAEOutput as SAEOutput
from jaxemb.sae._base import SparseCode as SparseCode
from jaxemb.sae._base import densify as densify
from jaxemb.sae._base import geometric_median as geometric_median
from jaxemb.sae._base import init_b_dec as init_b_dec
from jaxemb.sae._base import init_sae_params as init_sae_params
from jaxemb.sae._base import normalize_decoder as normalize_decoder
from jaxemb.sae._base import param_axes as param_axes
from jaxemb.sae._base import remove_parallel_grad as remove_parallel_grad
from jaxemb.sae._base import sparse_decode as sparse_decode
from jaxemb.sae._batchtopk import BatchTopKConfig as BatchTopKConfig
from jaxemb.sae._batchtopk import BatchTopKSAE as BatchTopKSAE
from jaxemb.sae._batchtopk import batch_topk as batch_topk
from jaxemb.sae._config import SAEConfig as SAEConfig
from jaxemb.sae._config import TrainedSAEConfig as TrainedSAEConfig
from jaxemb.sae._dead import DeadLatentState as DeadLatentState
from jaxemb.sae._dead import dead_latents_init as dead_latents_init
from jaxemb.sae._dead import dead_latents_update as dead_latents_update
from jaxemb.sae._dead import dead_mask as dead_mask
from jaxemb.sae._gated import GatedConfig as GatedConfig
from jaxemb.sae._gated import GatedSAE as GatedSAE
from jaxemb.sae._io import load_sae as load_sae
from jaxemb.sae._io import sae_configs as sae_configs
from jaxemb.sae._io import sae_variants as sae_variants
from jaxemb.sae._io import save_sae as save_sae
from jaxemb.sae._jumprelu import JumpReluConfig as JumpReluConfig
from jaxemb.sae._jumprelu import JumpReluSAE as JumpReluSAE
from jaxemb.sae._jumprelu import heaviside_st as heaviside_st
from jaxemb.sae._jumprelu import jumprelu_st as jumprelu_st
from jaxemb.sae._kernels import topk_encode as topk_encode
from jaxemb.sae._loss import loss as loss
from jaxemb.sae._matryoshka import MatryoshkaConfig as MatryoshkaConfig
from jaxemb.sae._matryoshka import MatryoshkaSAE as MatryoshkaSAE
from jaxemb.sae._mp import MatchingPursuitConfig as MatchingPursuitConfig
from jaxemb.sae._mp import MatchingPursuitSAE as MatchingPursuitSAE
from jaxemb.sae._relu import ReluConfig as ReluConfig
from jaxemb.sae._relu import ReluSAE as ReluSAE
from jaxemb.sae._resample import resample_dead as resample_dead
from jaxemb.sae._scaling import InputScale as InputScale
from jaxemb.sae._scaling import fit_input_norm as fit_input_norm
from jaxemb.sae._scaling import fold_input_norm as fold_input_norm
from jaxemb.sae._schedules import k_anneal as k_anneal
from jaxemb.sae._schedules import l1_warmup as l1_warmup
from jaxemb.sae._schedules import lr_schedule as lr_schedule
from jaxemb.sae._sharding import state_shardings as state_shardings
from jaxemb.sae._state import TrainState as TrainState
from jaxemb.sae._state import sync as sync
from jaxemb.sae._topk import TopKConfig as TopKConfig
from jaxemb.sae._topk import TopKSAE as TopKSAE
from jaxemb.sae._train import make_train_step as make_train_step

__all__ = [
    "BatchTopKConfig",
    "SAEConfig",
    "TrainedSAEConfig",
    "GatedConfig",
    "JumpReluConfig",
    "MatryoshkaConfig",
    "MatchingPursuitConfig",
    "ReluConfig",
    "TopKConfig",
    "sae_configs",
    "SAEOutput",
    "SparseCode",
    "TrainState",
    "densify",
    "sparse_decode",
    "init_sae_params",
    "init_b_dec",
    "geometric_median",
    "normalize_decoder",
    "remove_parallel_grad",
    "make_train_step",
    "param_axes",
    "state_shardings",
    "loss",
    "DeadLatentState",
    "dead_latents_init",
    "dead_latents_update",
    "dead_mask",
    "TopKSAE",
    "ReluSAE",
    "BatchTopKSAE",
    "batch_topk",
    "JumpReluSAE",
    "jumprelu_st",
    "heaviside_st",
    "GatedSAE",
    "MatryoshkaSAE",
    "MatchingPursuitSAE",
    "topk_encode",
    "sync",
    "InputScale",
    "fit_input_norm",
    "fold_input_norm",
    "l1_warmup",
    "k_anneal",
    "lr_schedule",
    "resample_dead",
    "save_sae",
    "load_sae",
    "sae_variants",
    "metrics",
    "analysis",
]
