"""Scalar (int8/uint8) and binary embedding quantization, equal to sentence-transformers.

The bucket arithmetic runs in NumPy on the host, in the dtype the reference uses (float32
ranges, the embeddings' own float dtype), because the result must equal the reference to the
last bit: a value lying exactly on a bucket edge (the calibration maximum, say) lands in the
bucket a correctly rounded division puts it in, and XLA's CPU float32 division is not always
correctly rounded.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxemb._validate import check_array, check_choice, shape_str

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
_HOST_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _host_floats(x: Any, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """``x`` as a NumPy float array (float16/32/64; other floats, e.g. bfloat16, as float32)."""
    if isinstance(x, jax.core.Tracer):
        raise ValueError(
            f"{name} must be a concrete array: quantize_embeddings runs in NumPy on the host "
            "(bit-identical to sentence-transformers); call it outside jax.jit"
        )
    x = check_array(x, name, ndim=ndim, kind="float", allow_empty=True)
    a = np.asarray(x)
    if a.dtype not in _HOST_FLOATS:
        a = a.astype(np.float32)  # bfloat16 and friends convert exactly
    if a.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one feature column; got {shape_str(a)}")
    return a


def _check_no_nan(a: np.ndarray, name: str, *, finite: bool = False) -> None:
    bad = ~np.isfinite(a) if finite else np.isnan(a)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(-1, a.shape[-1]).any(axis=1))
        shown = ", ".join(str(int(i)) for i in rows[:10])
        what = "NaN or inf" if finite else "NaN"
        raise ValueError(f"{name} {shape_str(a)} has {what} values in row(s) [{shown}]")


def resolve_ranges(
    embeddings: np.ndarray,
    precision: str,
    ranges: Any,
    calibration_embeddings: Any,
) -> np.ndarray:
    """The float32 ``[2, D]`` (min, max) rows the scalar buckets use, as the reference picks them.

    ``ranges`` when given, else the per-dimension min and max of ``calibration_embeddings``,
    else of ``embeddings`` themselves (which then need at least two rows).
    """
    d = embeddings.shape[-1]
    if ranges is None:
        if calibration_embeddings is None:
            if embeddings.ndim == 1 or embeddings.shape[0] == 1:
                raise ValueError(
                    f"Cannot compute {precision} quantization ranges from a single embedding "
                    f"(embeddings {shape_str(embeddings)}); pass ranges [2, {d}] or "
                    f"calibration_embeddings [M, {d}]"
                )
            cal = embeddings
        else:
            cal = _host_floats(calibration_embeddings, "calibration_embeddings", ndim=2)
            if cal.shape[0] == 0:
                raise ValueError(
                    f"calibration_embeddings must have at least one row; got {shape_str(cal)}"
                )
            if cal.shape[1] != d:
                raise ValueError(
                    f"calibration_embeddings must be [M, {d}] like embeddings "
                    f"{shape_str(embeddings)}; got {shape_str(cal)}"
                )
            _check_no_nan(cal, "calibration_embeddings", finite=True)
        # the reference's min/max in the calibration dtype, then cast to float32
        return np.vstack((np.min(cal, axis=0), np.max(cal, axis=0))).astype(np.float32)
    r = check_array(ranges, "ranges", kind="number", allow_empty=True)
    r = np.asarray(r)
    if r.shape != (2, d):
        raise ValueError(
            f"ranges must be [2, {d}] (a min row and a max row for embeddings "
            f"{shape_str(embeddings)}); got {shape_str(r)}"
        )
    r = r.astype(np.float32)
    _check_no_nan(r, "ranges", finite=True)
    if (r[0] > r[1]).any():
        cols = np.flatnonzero(r[0] > r[1])[:10].tolist()
        raise ValueError(f"ranges must have min (row 0) <= max (row 1); not so in columns {cols}")
    return r


def _scalar_buckets(a: np.ndarray, ranges: np.ndarray, precision: str) -> np.ndarray:
    """The reference's bucket arithmetic, operation for operation."""
    starts = ranges[0, :]
    steps = (ranges[1, :] - starts) / 255
    steps = np.where(steps == 0, 1, steps)
    q_vals = np.clip(np.floor((a - starts) / steps), 0, 255)
    if precision == "uint8":
        return q_vals.astype(np.uint8)
    return (q_vals - 128).astype(np.int8)


def quantize_embeddings(
    embeddings: ArrayLike,
    precision: str,
    *,
    ranges: ArrayLike | None = None,
    calibration_embeddings: ArrayLike | None = None,
) -> jax.Array:
    """Quantizes float embeddings to float32, int8, uint8 or packed (u)binary codes.

    Scalar precisions cut each dimension's calibration range ``[min, max]`` into 255 steps
    ``step = (max - min) / 255`` (a zero step counts as 1) and store
    ``clip(floor((x - min) / step), 0, 255)`` as uint8, or that minus 128 as int8; values
    outside the range clip to the end buckets; the float32 division can put the maximum itself
    in bucket 254, exactly as the reference does. ``ubinary`` packs ``x > 0`` eight dimensions to a
    byte, most significant bit first (``np.packbits``; the last byte is zero-padded) and
    ``binary`` stores those bytes minus 128 as int8. The result equals sentence-transformers 6.3
    ``quantize_embeddings`` bit for bit and in dtype; the arithmetic runs in NumPy on the host
    (not under ``jax.jit``), because XLA's CPU float32 division can move a value lying exactly
    on a bucket edge into the bucket below.

    Args:
      embeddings: [N, D] (or one embedding [D]) floating point, no NaN. ``N = 0`` gives an
        empty result of the precision's shape and dtype.
      precision: one of ``"float32"``, ``"int8"``, ``"uint8"``, ``"binary"``, ``"ubinary"``.
      ranges: [2, D] per-dimension (min, max) rows for ``int8``/``uint8``, cast to float32.
      calibration_embeddings: [M, D] embeddings whose per-dimension min and max give the ranges
        when ``ranges`` is None; when both are None the ranges come from ``embeddings`` (then at
        least two rows), as in the reference.

    Returns:
      ``float32`` [N, D]; ``int8``/``uint8`` [N, D] of that dtype; ``binary`` int8 /
      ``ubinary`` uint8 [N, ceil(D / 8)].

    Raises:
      ValueError: on an unknown precision, a non-float or NaN input, an empty feature axis,
        ranges not [2, D] (or with NaN/inf, or min > max), calibration embeddings of another
        width, or scalar ranges to be inferred from a single embedding.

    Examples:
      >>> import numpy as np
      >>> from jaxemb.retrieval import quantize_embeddings
      >>> x = np.array([[0.5, -1.0, 0.0, 2.0], [-1.0, 0.5, 0.25, 0.75]], np.float32)
      >>> codes = quantize_embeddings(x, "uint8")  # ranges from x itself (min, max per column)
      >>> codes.tolist(), codes.dtype  # a column maximum can land in 254, as in the reference
      ([[255, 0, 0, 254], [0, 255, 254, 0]], dtype('uint8'))
      >>> quantize_embeddings(x, "int8", ranges=np.array([[0.0] * 4, [2.0] * 4])).tolist()
      [[-65, -128, -128, 126], [-128, -65, -97, -33]]
      >>> bits = quantize_embeddings(x, "ubinary")  # 1001 0000, 0111 0000
      >>> bits.tolist(), bits.dtype, quantize_embeddings(x, "binary").tolist()
      ([[144], [112]], dtype('uint8'), [[16], [-16]])

    References:
      Shakir, Aarsen & Lee, "Binary and Scalar Embedding Quantization for Significantly Faster &
      Cheaper Retrieval", Hugging Face blog (2024); sentence-transformers 6.3
      ``sentence_transformers.util.quantize_embeddings``, which this equals.
    """
    check_choice(precision, "precision", PRECISIONS)
    a = _host_floats(embeddings, "embeddings", ndim=(1, 2))
    _check_no_nan(a, "embeddings")
    # Ranges and calibration embeddings are checked whenever given, though only the scalar
    # precisions use them (the others ignore them, as the reference does).
    r = None
    if ranges is not None or calibration_embeddings is not None:
        r = resolve_ranges(a, precision, ranges, calibration_embeddings)
    if precision == "float32":
        out = a.astype(np.float32)
    elif precision.endswith("int8"):
        if a.ndim == 2 and a.shape[0] == 0:
            out = np.zeros((0, a.shape[1]), np.int8 if precision == "int8" else np.uint8)
        else:
            r = resolve_ranges(a, precision, None, None) if r is None else r
            out = _scalar_buckets(a, r, precision)
    else:
        packed = np.packbits(a > 0, axis=-1)
        out = packed if precision == "ubinary" else (packed - 128).astype(np.int8)
    return jnp.asarray(out)
