"""MaxSim (ColBERT late interaction) scoring throughput against a NumPy einsum baseline.

Random ColBERT-shaped data (no download), seeded: unit 128-d token embeddings, queries of 32
tokens, documents of up to 180 tokens (a random length each, the rest padding under the mask).
Rows, each in (query, document) pairs scored per second and as a ratio to the NumPy baseline
measured in the same run:

- NumPy: ``np.einsum("qsh,nth->qnst", optimize=True)`` (a BLAS matmul) over blocks of ~6M
  similarities (its fastest block size), masked max over document tokens, masked sum over
  query tokens (float32);
- :func:`jaxemb.retrieval.maxsim` (all-pairs ``[Q, N]``, its default document chunking);
- :func:`jaxemb.retrieval.maxsim_pairwise` on aligned pairs against NumPy's batched matmul
  ``q @ ascontiguousarray(d.transpose(0, 2, 1))`` with the same masking (its own baseline row);
- sentence-transformers ``util.maxsim`` on torch CPU, only when ``sentence_transformers`` is
  importable (it is never a dependency).

Every row is checked against the NumPy scores (max |difference| printed). Median of 3 timed
runs after a warm-up (the warm-up compiles).

    python benchmarks/compression_maxsim.py            # Q=64 queries x N=4,000 documents
    python benchmarks/compression_maxsim.py --quick    # Q=16 x N=500
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from jaxemb.retrieval import maxsim, maxsim_pairwise

_TQ, _TD, _DIM = 32, 180, 128


def _median_time(fn, reps: int = 3):
    out = jax.block_until_ready(fn())  # compile / warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _tokens(rng, n, t, min_len):
    x = rng.standard_normal((n, t, _DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    lengths = rng.integers(min_len, t + 1, n)
    mask = np.arange(t)[None, :] < lengths[:, None]
    x[~mask] = 0.0
    return x, mask


def numpy_maxsim(q, q_mask, d, d_mask):
    """The NumPy baseline: blocked einsum, masked max over document tokens, masked sum.

    Blocks of ~6M similarities (64 documents at Q=16), the fastest block size measured for it.
    """
    block = max(1, 6_000_000 // (q.shape[0] * q.shape[1] * d.shape[1]))
    out = np.empty((q.shape[0], d.shape[0]), np.float32)
    w = q_mask.astype(np.float32)[:, None, :]
    for start in range(0, d.shape[0], block):
        s = np.einsum("qsh,nth->qnst", q, d[start : start + block], optimize=True)
        s = np.where(d_mask[None, start : start + block, None, :], s, -np.inf).max(axis=-1)
        out[:, start : start + block] = (s * w).sum(axis=-1)
    return out


def numpy_maxsim_pairwise(q, q_mask, d, d_mask):
    # batched BLAS matmul on a contiguous transpose: the fastest NumPy form measured (~2x
    # np.einsum "bsh,bth->bst", ~8x matmul on the transposed view)
    s = q @ np.ascontiguousarray(d.transpose(0, 2, 1))
    s = np.where(d_mask[:, None, :], s, -np.inf).max(axis=-1)
    return (s * q_mask).sum(axis=-1)


def run(quick: bool) -> None:
    """Prints (query, document) pairs/s of MaxSim scoring and the ratio to NumPy einsum."""
    nq, nd = (16, 500) if quick else (64, 4_000)
    rng = np.random.default_rng(0)
    q, q_mask = _tokens(rng, nq, _TQ, 8)
    d, d_mask = _tokens(rng, nd, _TD, 20)
    q_dev, qm_dev, d_dev, dm_dev = (jax.device_put(x) for x in (q, q_mask, d, d_mask))
    pairs = nq * nd
    print(f"devices: {jax.devices()}")
    print(
        f"Q={nq} queries x {_TQ} tokens, N={nd} documents x <= {_TD} tokens, dim {_DIM} "
        f"({pairs:,} pairs; median of 3)"
    )

    t_np, want = _median_time(lambda: numpy_maxsim(q, q_mask, d, d_mask))
    print(f"{'numpy einsum (baseline)':34s} {pairs / t_np:14,.0f} pairs/s   ratio 1.00")

    t_jx, got = _median_time(lambda: maxsim(q_dev, qm_dev, d_dev, dm_dev))
    err = float(np.abs(np.asarray(got) - want).max())
    print(
        f"{'jaxemb.retrieval.maxsim':34s} {pairs / t_jx:14,.0f} pairs/s   "
        f"ratio {t_np / t_jx:5.2f}   max|diff| {err:.1e}"
    )

    try:
        import torch
        from sentence_transformers.util import maxsim as st_maxsim
    except ImportError:
        print("sentence_transformers (torch) not importable: its row is skipped")
    else:
        tq, tqm, td, tdm = (torch.from_numpy(x) for x in (q, q_mask, d, d_mask))
        t_st, st = _median_time(lambda: st_maxsim(tq, td, tqm, tdm).numpy())
        err = float(np.abs(st - want).max())
        print(
            f"{'sentence-transformers util.maxsim':34s} {pairs / t_st:14,.0f} pairs/s   "
            f"ratio {t_np / t_st:5.2f}   max|diff| {err:.1e}   "
            f"(torch {torch.get_num_threads()} threads)"
        )

    # pairwise: nq aligned pairs, repeated to fill N documents' worth of work
    reps = max(1, nd // nq)
    qp, qpm = np.tile(q, (reps, 1, 1)), np.tile(q_mask, (reps, 1))
    dp, dpm = d[: nq * reps], d_mask[: nq * reps]
    n_pairs = qp.shape[0]
    t_npp, want_p = _median_time(lambda: numpy_maxsim_pairwise(qp, qpm, dp, dpm))
    args = tuple(jax.device_put(x) for x in (qp, qpm, dp, dpm))
    t_jxp, got_p = _median_time(lambda: maxsim_pairwise(*args))
    err = float(np.abs(np.asarray(got_p) - want_p).max())
    print(f"{'numpy pairwise matmul (baseline)':34s} {n_pairs / t_npp:14,.0f} pairs/s   ratio 1.00")
    print(
        f"{'jaxemb.retrieval.maxsim_pairwise':34s} {n_pairs / t_jxp:14,.0f} pairs/s   "
        f"ratio {t_npp / t_jxp:5.2f}   max|diff| {err:.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Q=16 x N=500 instead of 64 x 4,000")
    run(parser.parse_args().quick)


if __name__ == "__main__":
    main()
