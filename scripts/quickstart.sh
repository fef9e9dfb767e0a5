#!/usr/bin/env bash
# The main job: set up the environment, then run the quickstart experiment.
# Usage: bash scripts/quickstart.sh [--workdir runs/quickstart] [--set key=value ...]
source "$(dirname "$0")/_env.sh"
exec .venv/bin/python -m experiments.quickstart "$@"
