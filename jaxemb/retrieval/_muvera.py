"""MUVERA fixed-dimensional encodings (FDEs) of multi-vector sets.

A set of token vectors (a ColBERT-style query or document) becomes one vector whose inner
product with another set's vector approximates their Chamfer (MaxSim) similarity
``Σ_{q∈Q} max_{p∈P} ⟨q, p⟩``, so multi-vector retrieval can run as single-vector maximum inner
product search (then an exact MaxSim re-rank of the shortlist).

Per repetition ``r`` the space is cut into ``B = 2**k_sim`` buckets by the signs of ``k_sim``
Gaussian projections (SimHash), read as a Gray code as google/graph-mining's C++ does: the
bucket index has bits ``c_j = b_0 XOR ... XOR b_j`` (most significant first), where ``b_j`` is
``⟨x, g_j⟩ > 0``. Each token is optionally projected to ``projection_dimension`` coordinates
by an AMS (count) sketch; the block of bucket ``b`` holds the sum of its query tokens, or the
mean of its document tokens. With ``fill_empty_partitions`` an empty document bucket holds the
valid token whose sign bits are nearest (Hamming, first token on ties) to the bucket's bits
``b XOR (b >> 1)``. Repetitions are concatenated (repetition-major, then bucket, then
coordinate) and optionally count-sketched to ``final_projection_dimension``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.typing import ArrayLike

from jaxemb._validate import check_array, check_choice, check_int, shape_str
from jaxemb.retrieval._maxsim import _maxsim_scores
from jaxemb.retrieval._search import _check_finite_rows, search

_KINDS = ("query", "document")
# google/graph-mining refuses num_simhash_projections >= 31 (a uint32 bucket index).
_MAX_SIMHASH = 30
_INT32_MAX = 2**31 - 1


def _check_optional_dim(value: Any, name: str) -> None:
    if value is not None:
        check_int(value, name, minimum=1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MuveraConfig:
    """Settings of a MUVERA fixed-dimensional encoding (use one config for queries and documents).

    The fields and defaults follow google/graph-mining's ``FixedDimensionalEncodingConfig``
    proto: ``projection_dimension=None`` is its ``DEFAULT_IDENTITY`` projection type, an
    integer its ``AMS_SKETCH`` type with that ``projection_dimension``; an unset
    ``final_projection_dimension`` is ``None``. The paper's retrieval settings are
    ``num_repetitions=20, num_simhash_projections=5`` (or more), ``projection_dimension=16``
    and ``fill_empty_partitions=True``.

    Attributes:
      dimension: width D of the token vectors (>= 1).
      num_repetitions: independent repetitions R concatenated into the FDE (>= 1).
      num_simhash_projections: SimHash projections k_sim per repetition, ``0 <= k_sim <= 30``;
        the FDE has ``2**k_sim`` blocks per repetition (``0``: one block of all tokens).
      seed: seed of every random draw (an int32); queries and documents must share it.
      projection_dimension: ``None`` keeps the tokens as they are (block width D); an integer
        >= 1 projects them with a ±1 count sketch to that many coordinates.
      fill_empty_partitions: fill the block of an empty document bucket with its nearest token
        (in Hamming distance of SimHash bits). It applies to documents only; queries are
        encoded without it (the reference refuses it for queries).
      final_projection_dimension: ``None``, or the width (>= 1) of a final count sketch of the
        whole FDE.

    Raises:
      ValueError: on a field of the wrong type or outside its range, naming the field.

    Examples:
      >>> from jaxemb.retrieval import MuveraConfig
      >>> cfg = MuveraConfig(dimension=128, num_repetitions=20, num_simhash_projections=5,
      ...                    projection_dimension=16, fill_empty_partitions=True)
      >>> cfg.num_partitions, cfg.block_dimension, cfg.output_dimension
      (32, 16, 10240)

    References:
      Dhulipala, Hadian, Jayaram, Lee & Mirrokni, "MUVERA: Multi-Vector Retrieval via Fixed
      Dimensional Encodings" (NeurIPS 2024); the fields and defaults are those of
      google/graph-mining's ``FixedDimensionalEncodingConfig`` (sketching/point_cloud).
    """

    dimension: int
    num_repetitions: int = 1
    num_simhash_projections: int = 0
    seed: int = 1
    projection_dimension: int | None = None
    fill_empty_partitions: bool = False
    final_projection_dimension: int | None = None

    def __post_init__(self) -> None:
        check_int(self.dimension, "dimension", minimum=1)
        check_int(self.num_repetitions, "num_repetitions", minimum=1)
        check_int(
            self.num_simhash_projections, "num_simhash_projections", minimum=0, maximum=_MAX_SIMHASH
        )
        check_int(self.seed, "seed", minimum=-(2**31), maximum=_INT32_MAX)
        _check_optional_dim(self.projection_dimension, "projection_dimension")
        _check_optional_dim(self.final_projection_dimension, "final_projection_dimension")
        if not isinstance(self.fill_empty_partitions, (bool, np.bool_)):
            raise ValueError(
                f"fill_empty_partitions must be a bool; got {self.fill_empty_partitions!r}"
            )
        if self.fde_dimension > _INT32_MAX:
            raise ValueError(
                "num_repetitions * 2**num_simhash_projections * block width must fit an int32 "
                f"index; got {self.num_repetitions} * {self.num_partitions} * "
                f"{self.block_dimension} = {self.fde_dimension}"
            )

    @property
    def num_partitions(self) -> int:
        """Buckets per repetition, ``2**num_simhash_projections``."""
        return 2**self.num_simhash_projections

    @property
    def block_dimension(self) -> int:
        """Width of one bucket's block: ``projection_dimension``, or ``dimension``."""
        return self.dimension if self.projection_dimension is None else self.projection_dimension

    @property
    def fde_dimension(self) -> int:
        """Width before the final projection, ``R * 2**k_sim * block_dimension``."""
        return self.num_repetitions * self.num_partitions * self.block_dimension

    @property
    def output_dimension(self) -> int:
        """Width of the encodings :func:`muvera_fde` returns."""
        if self.final_projection_dimension is not None:
            return self.final_projection_dimension
        return self.fde_dimension


class _Draws(NamedTuple):
    """The random draws of a config (the reference's RNG cannot be reproduced bit for bit)."""

    simhash: jax.Array  # [R, D, k_sim] standard normal
    ams_index: jax.Array  # [R, D] int32 in [0, P): each input coordinate's output coordinate
    ams_sign: jax.Array  # [R, D] float32 ±1
    final_index: jax.Array  # [fde_dimension] int32 in [0, final_projection_dimension)
    final_sign: jax.Array  # [fde_dimension] float32 ±1


def _unit_interval(bits: jax.Array) -> jax.Array:
    """uint32 random bits -> float32 uniform in (0, 1): the top 24 bits, centred in their cell."""
    return ((bits >> 8).astype(jnp.float32) + 0.5) * (2.0**-24)


def _index_and_sign(bits: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """A uniform index in ``[0, n)`` from the top 24 bits and a ±1 sign from the lowest bit."""
    index = jnp.minimum(jnp.floor(_unit_interval(bits) * n), n - 1).astype(jnp.int32)
    sign = jnp.where((bits & 1) == 1, 1.0, -1.0).astype(jnp.float32)
    return index, sign


def _draws(config: MuveraConfig) -> _Draws:
    """The config's random draws; the seed is traced, so one program serves every seed."""
    shape = (
        config.num_repetitions,
        config.dimension,
        config.num_simhash_projections,
        config.block_dimension,
        config.fde_dimension,
        config.final_projection_dimension,
    )
    return _draws_jit(jnp.asarray(config.seed, jnp.int32), shape=shape)


@functools.partial(jax.jit, static_argnames=("shape",))
def _draws_jit(seed: jax.Array, *, shape: tuple[int, int, int, int, int, int | None]) -> _Draws:
    """Independent draws per repetition (key ``fold_in(rep_key, r)``), one final sketch.

    The reference seeds repetition ``r`` with ``seed + r`` and the final sketch with ``seed``;
    here ``rep_key`` and ``final_key`` are split from ``jax.random.key(seed)``, so repetition
    ``r``'s draws do not depend on ``num_repetitions`` either. Each key gives
    one ``jax.random.bits`` draw (one threefry program compiles several times faster than
    separate normal / randint / bernoulli draws): Gaussians by the inverse error function of
    24-bit uniforms, indices from the top 24 bits, signs from the lowest bit.
    """
    r, d, ks, p, fde_dim, final_dim = shape
    rep_key, final_key = jax.random.split(jax.random.key(seed))
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rep_key, jnp.arange(r))
    bits = jax.vmap(lambda k: jax.random.bits(k, (d * ks + d,), jnp.uint32))(keys)  # [R, .]
    u = _unit_interval(bits[:, : d * ks])
    simhash = (np.sqrt(2.0) * jax.scipy.special.erfinv(2.0 * u - 1.0)).reshape(r, d, ks)
    ams_index, ams_sign = _index_and_sign(bits[:, d * ks :], p)
    if final_dim is None:
        final_index = jnp.zeros((0,), jnp.int32)
        final_sign = jnp.zeros((0,), jnp.float32)
    else:
        fbits = jax.random.bits(final_key, (fde_dim,), jnp.uint32)
        final_index, final_sign = _index_and_sign(fbits, final_dim)
    return _Draws(simhash, ams_index, ams_sign, final_index, final_sign)


def _bucket_bits(n_bits: int) -> jax.Array:
    """``[n_bits]`` weights ``2**(k-1-j)``: projection ``j`` is bit ``k-1-j`` (first = MSB)."""
    return (2 ** jnp.arange(n_bits - 1, -1, -1)).astype(jnp.int32)


_HI = jax.lax.Precision.HIGHEST  # one-hot sums and selections must not round (TF32 on GPU)
# Elements of the [R, rows, T, B] one-hot block encoded at a time (64 MiB of float32).
_BLOCK_ELEMENTS = 1 << 24


def _encode_rows(x, mask, dr: _Draws, *, config: MuveraConfig, document: bool):
    """``[R, n, B, P]`` blocks of every repetition for tokens ``x`` [n, T, D] (padding zero).

    Bucket sums, counts and the filled tokens are one-hot contractions (matmuls), all
    repetitions at once.
    """
    dtype = x.dtype
    ks, nb = config.num_simhash_projections, config.num_partitions
    r = config.num_repetitions
    n, t, _ = x.shape
    if ks > 0:
        s = jnp.einsum("ntd,rdk->rntk", x, dr.simhash.astype(dtype), precision=_HI)
        bits = (s > 0).astype(jnp.int32)  # [R, n, T, k]; NaN and 0 give bit 0, as the reference
        sign_code = jnp.sum(bits * _bucket_bits(ks)[None, None, None, :], axis=-1)  # [R, n, T]
        # The reference's AppendToGrayCode makes bit c_j = b_0 XOR ... XOR b_j (MSB first): a
        # prefix XOR of the sign bits, i.e. the sign bits read as a Gray code, in log2(k) steps.
        part = sign_code
        shift = 1
        while shift < ks:
            part = part ^ (part >> shift)
            shift *= 2
    else:
        part = jnp.zeros((r, n, t), jnp.int32)
    onehot = jax.nn.one_hot(part, nb, dtype=dtype) * mask[None, :, :, None].astype(dtype)
    if config.projection_dimension is None:
        sums = jnp.einsum("rntb,ntp->rnbp", onehot, x, precision=_HI)
        proj = None
    else:
        # AMS sketch: input coordinate i goes to output ams_index[r, i] with sign ams_sign[r, i].
        ams = jax.nn.one_hot(dr.ams_index, config.block_dimension, dtype=dtype)
        ams = ams * dr.ams_sign[:, :, None].astype(dtype)  # [R, D, P]
        proj = jnp.einsum("ntd,rdp->rntp", x, ams, precision=_HI)
        sums = jnp.einsum("rntb,rntp->rnbp", onehot, proj, precision=_HI)
    if not document:
        return sums
    counts = jnp.sum(onehot, axis=2)  # [R, n, B]
    out = sums / jnp.maximum(counts, 1)[..., None]
    if config.fill_empty_partitions and ks > 0:
        b = jnp.arange(nb, dtype=jnp.int32)
        target = (b ^ (b >> 1))[None, None, None, :]  # bucket b's sign bits (GrayCodeToBinary)
        dist = jax.lax.population_count(sign_code[..., None] ^ target)  # [R, n, T, B]
        dist = jnp.where(mask[None, :, :, None], dist, ks + 1)  # padding is never the nearest
        pick = jax.nn.one_hot(jnp.argmin(dist, axis=2), t, dtype=dtype)  # [R, n, B, T]; first min
        if proj is None:
            filled = jnp.einsum("rnbt,ntp->rnbp", pick, x, precision=_HI)
        else:
            filled = jnp.einsum("rnbt,rntp->rnbp", pick, proj, precision=_HI)
        out = jnp.where((counts == 0)[..., None], filled, out)
    return out


def _fde(tokens, mask, *, config: MuveraConfig, kind: str) -> jax.Array:
    """The encodings of validated ``tokens`` [N, T, D] and ``mask`` [N, T]."""
    n, t = tokens.shape[:2]
    nb, p = config.num_partitions, config.block_dimension
    per_row = config.num_repetitions * max(t * nb, nb * p, t * p)
    rows = max(1, min(n, _BLOCK_ELEMENTS // per_row))
    return _fde_jit(tokens, mask, _draws(config), config=config, kind=kind, rows=rows)


@functools.partial(jax.jit, static_argnames=("config", "kind", "rows"))
def _fde_jit(tokens, mask, dr: _Draws, *, config: MuveraConfig, kind: str, rows: int):
    dtype = jnp.promote_types(tokens.dtype, jnp.float32)
    mask = mask.astype(bool)
    # where, not a product: NaN or inf in padding must not reach the encoding.
    x = jnp.where(mask[..., None], tokens.astype(dtype), jnp.zeros((), dtype))
    enc = functools.partial(_encode_rows, dr=dr, config=config, document=kind == "document")
    n = x.shape[0]
    if rows >= n:
        blocks = enc(x, mask)  # [R, N, B, P]
    else:  # bounded memory: `rows` point clouds at a time (zero padding rows are cut off)
        n_chunks = -(-n // rows)
        pad = n_chunks * rows - n
        xc = jnp.pad(x, ((0, pad), (0, 0), (0, 0))).reshape(n_chunks, rows, *x.shape[1:])
        mc = jnp.pad(mask, ((0, pad), (0, 0))).reshape(n_chunks, rows, mask.shape[1])
        blocks = jax.lax.map(lambda a: enc(a[0], a[1]), (xc, mc))  # [C, R, rows, B, P]
        blocks = jnp.moveaxis(blocks, 0, 1).reshape(config.num_repetitions, n_chunks * rows, -1)
        blocks = blocks[:, :n]
    fde = jnp.moveaxis(blocks.reshape(config.num_repetitions, n, -1), 0, 1)
    fde = fde.reshape(n, config.fde_dimension)
    if config.final_projection_dimension is None:
        return fde
    # Count sketch: FDE coordinate i is added to final_index[i] with sign final_sign[i].
    out = jnp.zeros((n, config.final_projection_dimension), dtype)
    return out.at[:, dr.final_index].add(fde * dr.final_sign.astype(dtype)[None, :])


@jax.jit
def _nonzero_rows(x: jax.Array) -> jax.Array:
    return jnp.any(x != 0, axis=-1)


def _check_mask(mask: Any, tokens: Any, kind: str, name: str, tokens_name: str) -> Any:
    """Validates a [N, T] boolean / 0-1 mask of ``tokens`` (``None``: nonzero token rows)."""
    derived = mask is None
    if derived:
        mask = _nonzero_rows(jnp.asarray(tokens))
    mask = check_array(mask, name, ndim=2, kind="int", allow_empty=True)
    if tuple(mask.shape) != tuple(tokens.shape[:2]):
        raise ValueError(
            f"{name} must be [{tokens.shape[0]}, {tokens.shape[1]}] (one flag per token of "
            f"{tokens_name} {shape_str(tokens)}); got {shape_str(mask)}"
        )
    if isinstance(mask, jax.core.Tracer):
        return mask
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        bad = (m != 0) & (m != 1)
        if bad.any():
            raise ValueError(
                f"{name} must hold booleans or 0/1; got the value {m[bad].flat[0].item()!r} "
                f"({name} {shape_str(m)}, dtype {m.dtype})"
            )
    empty = np.flatnonzero(~m.astype(bool).any(axis=1))
    if empty.size:
        shown = ", ".join(str(int(i)) for i in empty[:10])
        more = f" and {empty.size - 10} more" if empty.size > 10 else ""
        how = "has only all-zero token rows (no mask given)" if derived else "keeps no token"
        raise ValueError(
            f"every {kind} needs at least one valid token; {name} {shape_str(m)} {how} in "
            f"row(s) [{shown}]{more}"
        )
    return mask


def _check_config(config: Any) -> None:
    if not isinstance(config, MuveraConfig):
        raise ValueError(f"config must be a MuveraConfig; got {type(config).__name__}")


def _check_tokens(tokens, mask, config: MuveraConfig, kind: str, name: str, mask_name: str):
    tokens = check_array(tokens, name, ndim=3, kind="float")
    if tokens.shape[2] != config.dimension:
        raise ValueError(
            f"{name} must be [N, T, {config.dimension}] (config.dimension={config.dimension}); "
            f"got {shape_str(tokens)}"
        )
    return tokens, _check_mask(mask, tokens, kind, mask_name, name)


def muvera_fde(
    tokens: ArrayLike,
    mask: ArrayLike | None,
    *,
    config: MuveraConfig,
    kind: str = "query",
) -> jax.Array:
    """Fixed-dimensional encodings of multi-vector queries or documents (MUVERA).

    For a query encoding ``F_q`` and a document encoding ``F_d`` made with the same config,
    ``⟨F_q, F_d⟩ / num_repetitions`` approximates the Chamfer similarity
    ``Σ_{q valid} max_{p valid} ⟨q, p⟩``. Without projections (``projection_dimension`` and
    ``final_projection_dimension`` ``None``) and with ``fill_empty_partitions`` it never exceeds
    it: each query token meets the mean of the document tokens in its bucket (or the nearest
    one), whose inner product is at most the maximum.

    The structure and scaling match google/graph-mining's ``GenerateQueryFixedDimensionalEncoding``
    (``kind="query"``: block sums) and ``GenerateDocumentFixedDimensionalEncoding``
    (``kind="document"``: block means, empty buckets optionally filled): Gray-coded SimHash
    bucket indices, one draw per repetition, a ±1 count-sketch (AMS) inner projection without
    rescaling, repetition-major layout and a ±1 count-sketch final projection. The random draws
    come from ``jax.random`` with ``config.seed`` and cannot equal the reference's
    ``std::mt19937`` streams; given the reference's own matrices instead, the encodings equal
    the C++ output to float32 rounding. The paper describes dense ±1 projections scaled by
    ``1/sqrt(d_proj)``; the reference's count sketches (one ±1 per input coordinate, no
    scaling) are unbiased for inner products too, and are what is implemented here.

    Args:
      tokens: [N, T, D] float token vectors (rows padded to T), ``D = config.dimension``.
      mask: [N, T] booleans (or 0/1), True for the valid tokens; every row needs one. ``None``:
        all-zero token rows are padding (as :func:`maxsim`). Padded tokens never affect the
        encoding.
      config: a :class:`MuveraConfig`, the same for queries and documents.
      kind: ``"query"`` (bucket sums) or ``"document"`` (bucket means, empty buckets filled
        when ``config.fill_empty_partitions``).

    Returns:
      [N, config.output_dimension] float32 encodings (float64 for float64 tokens under x64). A
      NaN or inf in a valid token propagates to its encoding.

    Raises:
      ValueError: when tokens is not [N, T, D] floats with ``D = config.dimension``, mask is
        not [N, T] booleans or 0/1 or leaves a row without a valid token, config is not a
        MuveraConfig, or kind is unknown.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxemb.retrieval import MuveraConfig, muvera_fde
      >>> tokens = jnp.array([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
      >>> mask = jnp.array([[True, True, False]])
      >>> one_block = MuveraConfig(dimension=2)  # k_sim = 0: one bucket, no projection
      >>> muvera_fde(tokens, mask, config=one_block, kind="query").tolist()
      [[1.0, 1.0]]
      >>> muvera_fde(tokens, mask, config=one_block, kind="document").tolist()
      [[0.5, 0.5]]

    References:
      Dhulipala, Hadian, Jayaram, Lee & Mirrokni, "MUVERA: Multi-Vector Retrieval via Fixed
      Dimensional Encodings", NeurIPS 2024. Reference implementation: google/graph-mining,
      ``sketching/point_cloud/fixed_dimensional_encoding.cc`` and its
      ``FixedDimensionalEncodingConfig`` proto.
    """
    _check_config(config)
    check_choice(kind, "kind", _KINDS)
    tokens, mask = _check_tokens(tokens, mask, config, kind, "tokens", "mask")
    return _fde(jnp.asarray(tokens), jnp.asarray(mask), config=config, kind=kind)


@functools.partial(jax.jit, static_argnames=("k", "batch"))
def _rerank(q, q_mask, d, d_mask, cand, *, k: int, batch: int):
    """Exact MaxSim of each query against its shortlisted documents; the best ``k`` of them.

    ``batch`` queries are gathered and scored at a time (``lax.map`` with ``batch_size``).
    """

    def one(args):
        qi, qmi, ci = args
        s = _maxsim_scores(qi[None], qmi[None], d[ci], d_mask[ci])[0]  # [C]
        # top_k keeps the lower shortlist position (the better FDE score) first among ties
        v, pos = jax.lax.top_k(s, k)
        return v, ci[pos]

    return jax.lax.map(one, (q, q_mask, cand), batch_size=batch)


def muvera_search(
    q_tokens: ArrayLike,
    q_mask: ArrayLike | None,
    d_tokens: ArrayLike,
    d_mask: ArrayLike | None,
    k: int,
    *,
    config: MuveraConfig,
    candidates: int = 100,
    d_fde: ArrayLike | None = None,
    chunk_size: int = 4096,
    query_chunk_size: int = 64,
    mesh: Mesh | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Multi-vector retrieval by MUVERA: FDE inner-product shortlist, then exact MaxSim re-rank.

    The queries' and documents' encodings (:func:`muvera_fde`) are searched exactly by inner
    product with :func:`search` (``metric="dot"``) for the ``candidates`` best documents of each
    query; those are re-scored by exact MaxSim (Chamfer similarity, :func:`maxsim`) and the
    ``k`` best returned, ties to the better FDE rank. The paper's pipeline, with exact search
    in place of its DiskANN graph index.

    Args:
      q_tokens: [Q, Tq, D] query token vectors, ``D = config.dimension``.
      q_mask: [Q, Tq] booleans or 0/1 (``None``: all-zero rows are padding).
      d_tokens: [N, Td, D] document token vectors.
      d_mask: [N, Td] booleans or 0/1 (``None`` as above).
      k: documents returned per query, ``1 <= k <= candidates``.
      config: the :class:`MuveraConfig` of the encodings.
      candidates: FDE shortlist size re-ranked by MaxSim (capped at N).
      d_fde: [N, config.output_dimension] document encodings made beforehand with
        ``muvera_fde(d_tokens, d_mask, config=config, kind="document")``; ``None`` encodes
        them here.
      chunk_size: corpus rows per chunk of the FDE search (see :func:`search`).
      query_chunk_size: queries searched at a time, and re-ranked at a time off CPU (the
        re-rank then holds ``query_chunk_size * candidates * Td * D`` gathered document
        values; on CPU it re-ranks one query at a time).
      mesh: a mesh with a ``data`` axis to shard the FDE search over (see :func:`search`).

    Returns:
      ``(scores, ids)``, both [Q, k]: float32 MaxSim scores in descending order and int32
      document rows.

    Raises:
      ValueError: on tokens or masks as :func:`muvera_fde` refuses them, different query and
        document widths, ``d_fde`` not [N, output_dimension], ``k`` or ``candidates`` out of
        range, or NaN or inf in a valid token (named by row).

    Examples:
      >>> import numpy as np
      >>> from jaxemb.retrieval import MuveraConfig, muvera_search
      >>> rng = np.random.default_rng(0)
      >>> docs = rng.standard_normal((40, 4, 8)).astype(np.float32)
      >>> docs /= np.linalg.norm(docs, axis=-1, keepdims=True)  # unit tokens, as ColBERT's
      >>> queries = docs[[3, 17], :2] + 0.05  # two tokens of documents 3 and 17, perturbed
      >>> cfg = MuveraConfig(dimension=8, num_repetitions=8, num_simhash_projections=3,
      ...                    fill_empty_partitions=True)
      >>> scores, ids = muvera_search(queries, None, docs, None, 1, config=cfg, candidates=10)
      >>> ids.tolist()
      [[3], [17]]

    References:
      Dhulipala, Hadian, Jayaram, Lee & Mirrokni, "MUVERA: Multi-Vector Retrieval via Fixed
      Dimensional Encodings", NeurIPS 2024 (FDE retrieval, then Chamfer re-ranking);
      google/graph-mining ``fixed_dimensional_encoding.cc`` for the encodings.
    """
    _check_config(config)
    q, qm = _check_tokens(q_tokens, q_mask, config, "query", "q_tokens", "q_mask")
    d, dm = _check_tokens(d_tokens, d_mask, config, "document", "d_tokens", "d_mask")
    n = d.shape[0]
    check_int(k, "k", minimum=1)
    check_int(candidates, "candidates", minimum=1)
    if k > min(candidates, n):
        raise ValueError(
            f"k must be <= candidates ({candidates}) and <= the number of documents {n} "
            f"(d_tokens {shape_str(d)}); got {k}"
        )
    check_int(query_chunk_size, "query_chunk_size", minimum=1)
    q, qm, d, dm = (jnp.asarray(a) for a in (q, qm, d, dm))
    q_fde = _fde(q, qm, config=config, kind="query")
    _check_finite_rows(q_fde, "q_tokens (the FDEs of its valid tokens)")
    if d_fde is None:
        d_fde = _fde(d, dm, config=config, kind="document")
        _check_finite_rows(d_fde, "d_tokens (the FDEs of its valid tokens)")
    else:
        d_fde = check_array(d_fde, "d_fde", ndim=2, kind="float")
        if tuple(d_fde.shape) != (n, config.output_dimension):
            raise ValueError(
                f"d_fde must be [{n}, {config.output_dimension}] (one document encoding of "
                f"config.output_dimension per row of d_tokens); got {shape_str(d_fde)}"
            )
        _check_finite_rows(jnp.asarray(d_fde), "d_fde")
    shortlist = min(int(candidates), n)
    _, cand = search(
        q_fde,
        d_fde,
        shortlist,
        metric="dot",
        chunk_size=chunk_size,
        query_chunk_size=query_chunk_size,
        mesh=mesh,
        check_finite=False,
    )
    # On CPU one query at a time keeps its gathered [candidates, Td, D] documents in cache (4x
    # faster than gathering a block); accelerators score query_chunk_size queries at once.
    batch = 1 if jax.default_backend() == "cpu" else min(int(query_chunk_size), q.shape[0])
    return _rerank(q, qm, d, dm, cand, k=int(k), batch=batch)
