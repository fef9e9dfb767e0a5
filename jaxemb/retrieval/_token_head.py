"""ColBERT token-embedding head: per-token projection, L2 norm and the punctuation skip-list."""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxemb import _validate as v
from jaxemb.losses._common import l2_normalize

_TASKS = ("query", "document")


def token_skiplist(tokenizer: Any, *, words: Iterable[str] = tuple(string.punctuation)) -> tuple:
    """Token ids of ``words`` that are single tokens of ``tokenizer``'s vocabulary.

    ColBERT drops these ids (by default every ``string.punctuation`` character) from the
    document side of MaxSim. A word that is not one vocabulary token is left out, as
    sentence-transformers does (it would otherwise map to the unknown token and mask every
    ``[UNK]``).

    Args:
      tokenizer: a ``tokenizers.Tokenizer``, an object with one as ``.tokenizer`` (e.g.
        :class:`~jaxemb.encoders.Embedder`), or a vocabulary mapping ``{token: id}``.
      words: the tokens to skip (default: the 32 ASCII punctuation characters).

    Returns:
      The sorted distinct ids, a tuple of ints.

    Raises:
      ValueError: for anything else as ``tokenizer``, or ``words`` not strings.

    Examples:
      >>> from jaxemb.retrieval import token_skiplist
      >>> token_skiplist({"[PAD]": 0, "hello": 1, ".": 2, ",": 3})
      (2, 3)

    References:
      sentence-transformers 6.3 ``MultiVectorMask.resolve_with_tokenizer`` (``skiplist_words=
      list(string.punctuation)``, the PyLate / Stanford ColBERT default).
    """
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None and hasattr(inner, "token_to_id"):
        tokenizer = inner
    if isinstance(tokenizer, Mapping):
        lookup = tokenizer.get
    elif hasattr(tokenizer, "token_to_id"):
        lookup = tokenizer.token_to_id
    else:
        raise ValueError(
            "tokenizer must be a tokenizers.Tokenizer, an object with one as .tokenizer, or a "
            f"{{token: id}} mapping; got {type(tokenizer).__name__}"
        )
    if isinstance(words, str):
        words = list(words)
    ids = set()
    for word in words:
        if not isinstance(word, str):
            raise ValueError(f"words must be strings; got {word!r}")
        token_id = lookup(word)
        if token_id is not None:
            ids.add(int(token_id))
    return tuple(sorted(ids))


class TokenEmbeddingHead(nnx.Module):
    """ColBERT's head over an encoder's token outputs: ``Linear(H → dim, no bias)``, L2 norm.

    Turns ``last_hidden_state`` ``[B, T, H]`` of any :mod:`jaxemb.encoders` model into unit
    token embeddings ``[B, T, dim]`` and their scoring mask for
    :func:`~jaxemb.retrieval.maxsim` / :func:`~jaxemb.losses.multi_vector_info_nce`: documents
    keep their real tokens minus the skip-list ids (punctuation, see :func:`token_skiplist`);
    queries keep every real token.

    Args:
      in_features: the encoder's hidden size ``H``.
      out_features: the token embedding width (ColBERT: 128).
      skiplist_ids: token ids dropped from document masks (default none; ColBERT uses
        ``token_skiplist(tokenizer)``).
      rngs: parameter RNG stream; the kernel is drawn as ``torch.nn.Linear`` draws it,
        ``U(±1/sqrt(H))``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxemb.retrieval import TokenEmbeddingHead
      >>> head = TokenEmbeddingHead(8, 4, skiplist_ids=(5,), rngs=nnx.Rngs(0))
      >>> hidden = jnp.ones((1, 3, 8))  # e.g. encoder(ids, mask).last_hidden_state
      >>> ids, mask = jnp.array([[7, 5, 0]]), jnp.array([[1, 1, 0]])
      >>> tokens, doc_mask = head(hidden, mask, ids, task="document")
      >>> tokens.shape, doc_mask.tolist()  # token 1 is on the skip-list, token 2 is padding
      ((1, 3, 4), [[True, False, False]])
      >>> head(hidden, mask, ids, task="query")[1].tolist()
      [[True, True, False]]

    References:
      Khattab & Zaharia, "ColBERT", SIGIR 2020 (linear projection to 128, normalised tokens,
      punctuation masked in documents). Reference implementation: sentence-transformers 6.3
      ``MultiVectorEncoder``'s modules ``Dense(H, 128, bias=False, activation=Identity)``,
      ``MultiVectorMask(skiplist_words=list(string.punctuation))`` (skip-list on the
      ``document`` task only) and token-level ``Normalize`` (``F.normalize``, eps 1e-12).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 128,
        *,
        skiplist_ids: Sequence[int] = (),
        rngs: nnx.Rngs,
    ):
        v.check_int(in_features, "in_features", minimum=1)
        v.check_int(out_features, "out_features", minimum=1)
        ids = np.asarray(list(skiplist_ids))
        if ids.size and (ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"skiplist_ids must be a sequence of ints; got {skiplist_ids!r}")
        if ids.size and ids.min() < 0:
            raise ValueError(f"skiplist_ids must be >= 0 (token ids); got {int(ids.min())}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.skiplist_ids = tuple(sorted({int(i) for i in ids.tolist()}))
        self.proj = nnx.Linear(
            in_features,
            out_features,
            use_bias=False,
            kernel_init=nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
            rngs=rngs,
        )

    def __call__(
        self,
        hidden: Any,
        attention_mask: Any,
        input_ids: Any | None = None,
        *,
        task: str = "document",
    ) -> tuple[jax.Array, jax.Array]:
        """Projects and normalises every token; returns ``(tokens, mask)``.

        Args:
          hidden: [B, T, H] float hidden states, or an encoder output with
            ``last_hidden_state`` (e.g. :class:`~jaxemb.encoders.EncoderOutput`).
          attention_mask: [B, T], nonzero for real tokens.
          input_ids: [B, T] int token ids; needed for documents when the skip-list is not
            empty.
          task: ``"document"`` (the skip-list applies) or ``"query"`` (every real token
            counts).

        Returns:
          ``tokens`` [B, T, out_features] float32, each row L2-normalised (padding rows too:
          the mask marks them), and ``mask`` [B, T] bool.

        Raises:
          ValueError: on wrong ranks, a hidden size other than ``in_features``, a mask or ids
            that do not match the tokens, a bad task, or missing ``input_ids``.
        """
        hidden = getattr(hidden, "last_hidden_state", hidden)
        hidden = v.check_array(hidden, "hidden", ndim=3)
        if hidden.shape[2] != self.in_features:
            raise ValueError(
                f"hidden must be [batch, tokens, in_features={self.in_features}]; got "
                f"{v.shape_str(hidden)}"
            )
        v.check_choice(task, "task", _TASKS)
        attention_mask = v.check_array(attention_mask, "attention_mask", ndim=2, kind="number")
        if tuple(attention_mask.shape) != tuple(hidden.shape[:2]):
            raise ValueError(
                f"attention_mask must be [batch, tokens] = {list(hidden.shape[:2])} to "
                f"match hidden {v.shape_str(hidden)}; got {v.shape_str(attention_mask)}"
            )
        skip = task == "document" and bool(self.skiplist_ids)
        if input_ids is None and skip:
            raise ValueError(
                f"input_ids [batch, tokens] are needed for task='document' with a skip-list of "
                f"{len(self.skiplist_ids)} ids; got None"
            )
        if input_ids is not None:
            input_ids = v.check_array(input_ids, "input_ids", ndim=2, kind="int")
            if tuple(input_ids.shape) != tuple(hidden.shape[:2]):
                raise ValueError(
                    f"input_ids must be [batch, tokens] = {list(hidden.shape[:2])} to "
                    f"match hidden {v.shape_str(hidden)}; got {v.shape_str(input_ids)}"
                )
        x = jnp.asarray(hidden)
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        tokens = l2_normalize(self.proj(x))
        mask = jnp.asarray(attention_mask) != 0
        if skip:
            skip_ids = jnp.asarray(self.skiplist_ids, jnp.int32)
            mask = mask & ~jnp.isin(jnp.asarray(input_ids), skip_ids)
        return tokens, mask
