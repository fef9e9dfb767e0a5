"""One loss entry point for every SAE variant: ``sae.loss(model, x)``."""

from __future__ import annotations

import inspect
from typing import Any

import jax
from flax import nnx
from jax.typing import ArrayLike

from jaxemb.sae._base import check_sae


def loss_keywords(model: Any) -> set[str] | None:
    """Keyword names ``model.training_loss`` accepts (``None``: it takes ``**kwargs``)."""
    sig = inspect.signature(model.training_loss)
    names = set()
    for p in sig.parameters.values():
        if p.kind == inspect.Parameter.VAR_KEYWORD:
            return None
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            names.add(p.name)
    return names


def loss(
    model: Any, x: ArrayLike, dead_mask: ArrayLike | None = None, **hyperparameters: Any
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The training loss of any SAE variant on a batch, with its metrics.

    Calls ``model.training_loss(x, dead_mask=dead_mask, **hyperparameters)``, the method
    :func:`make_train_step` differentiates, and drops the forward output; the model itself is
    not changed (the running threshold of :class:`BatchTopKSAE` moves only in training). Each
    variant's ``training_loss`` docstring gives its formula and metrics: FVU + AuxK for
    :class:`TopKSAE` and :class:`BatchTopKSAE`, squared error + decoder-norm-weighted L1 for
    :class:`ReluSAE`, + L0 for :class:`JumpReluSAE`, the gated loss of :class:`GatedSAE`, the
    summed prefix losses of :class:`MatryoshkaSAE` and the residual loss of
    :class:`MatchingPursuitSAE`.

    Args:
      model: a jaxemb SAE module.
      x: ``[N, d_in]`` float inputs.
      dead_mask: optional ``[d_sae]`` bool mask of dead latents (used by the AuxK losses,
        reported as ``dead_fraction`` by the others).
      **hyperparameters: step values of the variant's scheduled hyperparameters, keyword only:
        ``l1_coef`` (ReLU, Gated), ``l0_coef`` (JumpReLU), ``k`` (BatchTopK).

    Returns:
      ``(loss, metrics)``: a float32 scalar and a dict of float32 scalars (``loss``, ``fvu``,
      ``l0``, ``mse``, ``dead_fraction`` and the variant's own terms).

    Raises:
      ValueError: if ``model`` is not an SAE, or for invalid inputs or hyperparameters (the
        variant's ``training_loss`` names the argument).

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> x = jnp.array([[1.0, 0.0], [0.0, 3.0]])
      >>> relu = sae.ReluSAE(2, 4, rngs=nnx.Rngs(0))
      >>> topk = sae.TopKSAE(2, 4, k=1, rngs=nnx.Rngs(0))
      >>> for model, hyper in ((relu, {"l1_coef": 0.0}), (topk, {})):
      ...     value, metrics = sae.loss(model, x, **hyper)
      ...     print(type(model).__name__, sorted(metrics)[:3], bool(value >= 0))
      ReluSAE ['dead_fraction', 'fvu', 'l0'] True
      TopKSAE ['auxk', 'dead_fraction', 'fvu'] True
      >>> sae.loss(topk, x, l1_coef=1.0)
      Traceback (most recent call last):
      ...
      ValueError: l1_coef is not a hyperparameter of TopKSAE.training_loss; expected one of []

    References:
      eai-sparsify ``SparseCoder.forward`` and SAELens ``TrainingSAE.training_forward_pass``
      (one forward that returns the loss and its terms, for every architecture).
    """
    check_sae(model)
    if not callable(getattr(model, "training_loss", None)):
        raise ValueError(
            f"model must be a jaxemb SAE with a training_loss method; got {type(model).__name__}"
        )
    accepted = loss_keywords(model)
    unknown = sorted(set(hyperparameters) - (accepted or set(hyperparameters)))
    if unknown:
        ok = sorted((accepted or set()) - {"x", "dead_mask", "k_max"})
        raise ValueError(
            f"{unknown[0]} is not a hyperparameter of {type(model).__name__}.training_loss; "
            f"expected one of {ok}"
        )
    # On a copy that shares the arrays: the model's buffers (BatchTopK's running threshold and
    # call counter) are left as they are, whatever training_loss updates.
    copy = nnx.clone(model)
    value, metrics, _ = copy.training_loss(x, dead_mask=dead_mask, **hyperparameters)
    return value, metrics
