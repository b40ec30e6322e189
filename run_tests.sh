#!/usr/bin/env bash
# Set up the test environments and run lint, the type check and the suite: ./run_tests.sh [pytest args]
#
# Runs the suite twice, once per WebUI stack (docs/dependencies.md):
#   a1111: .venv        torch 2.13.0 CPU + requirements-test.txt       (A1111 1.10 pins, gradio 3.41)
#   forge: .venv-forge  torch 2.13.0 CPU + requirements-test-forge.txt (Forge 2 pins, gradio 4.40)
# HYPERLORA_TEST_ENVS="a1111" (or "forge") runs only one. Environments are created when missing
# or when their requirements file changed.
set -euo pipefail
cd "$(dirname "$0")"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False NO_ALBUMENTATIONS_UPDATE=1

ensure_env() {  # ensure_env VENV REQUIREMENTS
    local venv=$1 requirements=$2 stamp
    stamp="$(sha256sum "$requirements" | cut -c1-16)"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements-stamp" 2>/dev/null)" = "$stamp" ]; then
        return
    fi
    echo "== creating $venv from $requirements"
    rm -rf "$venv"
    python3.11 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet torch==2.13.0  # the CPU wheel; never a CUDA build
    "$venv/bin/python" -m pip install --quiet -r "$requirements"
    echo "$stamp" > "$venv/.requirements-stamp"
}

envs=${HYPERLORA_TEST_ENVS:-a1111 forge}
status=0
for env in $envs; do
    case $env in
        a1111) venv=.venv requirements=requirements-test.txt ;;
        forge) venv=.venv-forge requirements=requirements-test-forge.txt ;;
        *) echo "unknown test environment: $env (use a1111 or forge)"; exit 2 ;;
    esac
    ensure_env "$venv" "$requirements"
    if [ "$env" = "${envs%% *}" ]; then
        "$venv/bin/python" -m ruff check .
        "$venv/bin/python" -m ruff format --check .
        "$venv/bin/python" -m mypy  # over hyperlora_ext/, configured in pyproject.toml
    fi
    echo "== tests in the $env environment"
    "$venv/bin/python" -m pytest "$@" || status=$?
done
exit $status
