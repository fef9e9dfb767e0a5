#!/usr/bin/env bash
# The whole test suite (8 simulated CPU devices, see tests/conftest.py).
source "$(dirname "$0")/_env.sh"
exec .venv/bin/python -m pytest -n 2 jaxemb tests "$@"
