"""Per-variant SAE configs: one frozen dataclass each, read by the registry, I/O and experiments."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class SAEConfig:
    """Base of the SAE configs: the widths, the parameter dtype and what every variant declares.

    Each variant (``TopKSAE``, ``ReluSAE``, ...) has a frozen subclass whose fields are its
    hyperparameters with the module's defaults (``TopKConfig``, ``ReluConfig``, ...); a module
    keeps the config it was built with as ``model.config``. The class variables declare how the
    variant is named and stored: ``variant`` (the registry name, e.g. ``"topk"``), ``module``
    (the class name in :mod:`jaxemb.sae`), ``saelens_architecture`` (the SAELens
    ``architecture`` it is saved as) and ``sparsify`` (whether the eai-sparsify layout can hold
    it). :func:`~jaxemb.sae.save_sae` / :func:`~jaxemb.sae.load_sae`,
    :func:`~jaxemb.sae.sae_variants` and ``experiments/train_sae.py`` read these instead of class
    names or constructor signatures.

    Attributes:
      d_in: input width.
      d_sae: number of latents.
      param_dtype: dtype name of the parameters (``"float32"``, ``"bfloat16"``, ...).
    """

    d_in: int
    d_sae: int
    param_dtype: str = "float32"

    variant: ClassVar[str] = ""
    module: ClassVar[str] = ""
    saelens_architecture: ClassVar[str] = "standard"
    sparsify: ClassVar[bool] = False

    @classmethod
    def check_keys(cls, keys: Iterable[str]) -> None:
        """Refuses a key that is not a setting of this config (before any value is needed).

        Args:
          keys: setting names, e.g. a mapping of overrides.

        Raises:
          ValueError: naming the first unknown key (in sorted order) and listing the valid ones.

        Examples:
          >>> from jaxemb.sae import ReluConfig
          >>> ReluConfig.check_keys({"l1_coef": 3.0})
          >>> ReluConfig.check_keys({"l2_coef": 1.0})
          Traceback (most recent call last):
          ...
          ValueError: 'l2_coef' is not a setting of ReluConfig (the relu SAE); valid keys: [...]
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(keys) - set(names))
        if unknown:
            raise ValueError(
                f"{unknown[0]!r} is not a setting of {cls.__name__} (the {cls.variant} SAE); "
                f"valid keys: {names}"
            )

    @classmethod
    def create(cls, values: Mapping[str, Any]) -> SAEConfig:
        """A config from a mapping of field values (lists become tuples; dtypes their names).

        Args:
          values: field name -> value; ``d_in`` and ``d_sae`` are required.

        Returns:
          The config.

        Raises:
          ValueError: naming an unknown key (and listing the valid ones) or a missing one.

        Examples:
          >>> from jaxemb.sae import TopKConfig
          >>> TopKConfig.create({"d_in": 8, "d_sae": 32, "k": 4}).k
          4
        """
        if not isinstance(values, Mapping):
            raise ValueError(f"values must be a mapping; got {type(values).__name__}")
        cls.check_keys(values)
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [n for n in required if n not in values]
        if missing:
            raise ValueError(f"{cls.__name__} needs {missing}; got keys {sorted(values)}")
        clean = {}
        for key, value in values.items():
            if isinstance(value, list):
                value = tuple(value)
            if key == "param_dtype":
                value = dtype_name(value)
            clean[key] = value
        return cls(**clean)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (tuples as lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def architecture(self) -> str:
        """The SAELens ``architecture`` this config is saved as."""
        return self.saelens_architecture

    def build(self, *, rngs: Any) -> Any:
        """The module this config describes, with fresh parameters from ``rngs``.

        Args:
          rngs: ``nnx.Rngs`` whose ``params`` stream draws the initial weights.

        Returns:
          An instance of the variant's module class (its constructor validates the values).

        Examples:
          >>> from flax import nnx
          >>> from jaxemb.sae import TopKConfig
          >>> model = TopKConfig(8, 32, k=4).build(rngs=nnx.Rngs(0))
          >>> type(model).__name__, model.config == TopKConfig(8, 32, k=4)
          ('TopKSAE', True)
        """
        import jaxemb.sae as sae_pkg

        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        kwargs["param_dtype"] = jnp.dtype(kwargs["param_dtype"])
        d_in, d_sae = kwargs.pop("d_in"), kwargs.pop("d_sae")
        return getattr(sae_pkg, self.module)(d_in, d_sae, rngs=rngs, **kwargs)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainedSAEConfig(SAEConfig):
    """The settings shared by the variants trained with dead-latent tracking (all but matching
    pursuit): ``dead_threshold`` (tokens without firing after which a latent is dead) and
    ``init_encoder_from_decoder`` (``W_enc = W_decᵀ`` at initialisation, Gao et al.)."""

    dead_threshold: int = 10_000_000
    init_encoder_from_decoder: bool = True


def dtype_name(dtype: Any) -> str:
    """The NumPy name of a dtype (``jnp.float32`` -> ``"float32"``), for a config field."""
    try:
        return str(np.dtype(dtype))
    except TypeError as e:
        raise ValueError(f"param_dtype must be a dtype; got {dtype!r}") from e
