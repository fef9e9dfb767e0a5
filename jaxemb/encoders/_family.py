"""How a Hugging Face ``model_type`` maps onto a jaxemb encoder (one :class:`Family` per file).

A family translates ``config.json`` into its config dataclass and back, and names, for every
checkpoint tensor, its shape, where it lives in the NNX module and whether it is transposed
(``nn.Linear`` stores ``[out, in]``, ``nnx.Linear`` ``[in, out]``). Loading
(:func:`~jaxemb.encoders.load_hf_encoder`) and export (:func:`~jaxemb.encoders.save_hf_encoder`)
are written once against this description.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

#: ``checkpoint name -> (checkpoint shape, path of the variable in the module, transpose)``.
TensorPlan = dict[str, tuple[tuple[int, ...], tuple[str | int, ...], bool]]


@dataclasses.dataclass(frozen=True)
class Family:
    """One architecture family as stored by Hugging Face ``transformers``.

    The encoder class must be built as ``encoder_class(config, rngs=nnx.Rngs(...))``, be called
    as ``encoder(input_ids [B, T], attention_mask [B, T] | None, *, output_hidden_states=False,
    rngs=None) -> EncoderOutput``, and its config must be a frozen dataclass with
    ``vocab_size``, ``hidden_size``, ``max_positions`` (longest input it accepts),
    ``pad_token_id`` and ``compute_dtype`` fields (so :class:`~jaxemb.encoders.Embedder` works
    on every family) and carry logical axis names on every parameter (so
    :func:`~jaxemb.encoders.param_shardings` shards it).

    Attributes:
      name: a short name for messages (``"BERT"``).
      model_types: the ``config.json`` ``model_type`` values it reads.
      encoder_class: the NNX module class.
      config_class: its config dataclass.
      config_from_hf: ``(config.json dict, where) -> config``; raises ``ValueError`` naming the
        setting it does not reproduce.
      config_to_hf: ``config -> config.json dict`` (the inverse, for export).
      tensor_plan: ``config -> TensorPlan``.
      checkpoint_prefixes: prefixes of task-head checkpoints stripped before matching names
        (``"bert."`` for ``BertForMaskedLM``).
      renames: legacy suffixes mapped to current ones (``"LayerNorm.gamma" -> "LayerNorm.weight"``).
      tokenizer_class: the ``transformers`` fast tokenizer class written on export.
      examples: published checkpoints of this family, for the README and messages.

    Examples:
      >>> from jaxemb.encoders._hf import FAMILIES, family_for_model_type
      >>> bert = family_for_model_type("bert")
      >>> bert.name, len(bert.tensor_plan(bert.config_from_hf({"vocab_size": 10,
      ...     "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2}, "x")))
      ('BERT', 21)
      >>> bert.canonical_names(["bert.embeddings.LayerNorm.gamma"])
      {'embeddings.LayerNorm.weight': 'bert.embeddings.LayerNorm.gamma'}
      >>> sorted(t for f in FAMILIES for t in f.model_types)[:3]
      ['bert', 'distilbert', 'gemma3_text']

    References:
      Hugging Face ``transformers`` ``PreTrainedModel.save_pretrained`` / ``from_pretrained``
      (checkpoint names and ``config.json`` of each architecture).
    """

    name: str
    model_types: tuple[str, ...]
    encoder_class: type
    config_class: type
    config_from_hf: Callable[[dict[str, Any], str], Any]
    config_to_hf: Callable[[Any], dict[str, Any]]
    tensor_plan: Callable[[Any], TensorPlan]
    checkpoint_prefixes: tuple[str, ...] = ()
    renames: tuple[tuple[str, str], ...] = ()
    tokenizer_class: str = "PreTrainedTokenizerFast"
    examples: tuple[str, ...] = ()

    def canonical_names(self, names: list[str] | Any) -> dict[str, str]:
        """``{canonical name: name in the checkpoint}`` (prefixes stripped, legacy renamed)."""
        out = {}
        for key in names:
            name = key
            for prefix in self.checkpoint_prefixes:
                if name.startswith(prefix):
                    name = name[len(prefix) :]
                    break
            for old, new in self.renames:
                if name.endswith(old):
                    name = name[: -len(old)] + new
                    break
            out[name] = key
        return out


def variable_at(module: Any, path: tuple[str | int, ...]) -> Any:
    """The NNX variable at ``path`` (attribute names and list indices) inside ``module``."""
    node = module
    for part in path:
        node = node[part] if isinstance(part, int) else getattr(node, part)
    return node


def module_tensors(module: Any, plan: TensorPlan) -> dict[str, np.ndarray]:
    """The checkpoint tensors of ``module`` by ``plan`` (float32, checkpoint layout)."""
    out = {}
    for name, (shape, path, transpose) in plan.items():
        value = np.asarray(variable_at(module, path)[...], np.float32)
        value = value.T if transpose else value
        if value.shape != shape:
            raise ValueError(f"tensor {name} has shape {list(value.shape)}; expected {list(shape)}")
        out[name] = np.ascontiguousarray(value)
    return out
