#!/usr/bin/env bash
# The whole test suite (8 simulated CPU devices, see tests/conftest.py).
# Usage: bash scripts/test.sh [--isa SSE4_2|AVX|AVX2|AVX512] [pytest arguments ...]
# --isa limits the instruction sets XLA compiles for (XLA_FLAGS=--xla_cpu_max_isa=...), which
# reproduces the float32 rounding of other CPU kinds on this one; the suite passes under each.
source "$(dirname "$0")/_env.sh"
if [ "${1:-}" = "--isa" ]; then
  case "${2:-}" in
    SSE4_2|AVX|AVX2|AVX512) ;;
    *) echo "scripts/test.sh: --isa takes SSE4_2, AVX, AVX2 or AVX512; got '${2:-}'" >&2; exit 2 ;;
  esac
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_cpu_max_isa=$2"
  shift 2
fi
exec .venv/bin/python -m pytest -n 2 --dist loadgroup jaxemb tests "$@"
