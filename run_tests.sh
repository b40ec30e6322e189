#!/usr/bin/env bash
# One command to set up the test environment and run the tests: ./run_tests.sh [pytest args]
# Creates .venv (torch 2.13.0 CPU wheel + the A1111 1.10 pin set) when missing.
set -euo pipefail
cd "$(dirname "$0")"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import torch, insightface, transformers" 2>/dev/null; then
    python3.11 -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet torch==2.13.0
    .venv/bin/python -m pip install --quiet -r requirements-test.txt
fi
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
.venv/bin/python -m pytest "$@"
