#!/usr/bin/env bash
# Run the integration tests against a WebUI built by setup_<webui>.sh.
#
#     TEST_PYTHON=/path/to/python tools/webui_smoke/smoke.sh {a1111|forge} [pytest args]
#
# TEST_PYTHON is a Python with pytest and this repository's test requirements (default: the
# repository's .venv); it is not the WebUI's venv. Starts the WebUI with the full API, runs
# SMOKE_TESTS (default: tests/webui/test_integration_webui.py, test_integration_workflows.py and
# test_integration_refine.py and test_integration_browser.py, the accordion in headless
# Chromium), restarts it API-only (--nowebui) for the X/Y/Z tests (the axes in script-info, the
# grids), the workflows and the refine routes, then stops it. Fails when a run failed, errored,
# or passed no test (nothing collected, or all skipped: a smoke run that ran nothing is not a
# pass).
# Logs: WEBUI_HOME/<webui>-pytest*.log.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ $# -ge 1 ] || { echo "usage: smoke.sh {a1111|forge} [pytest args]" >&2 && exit 2; }
name="$1"
shift
PORT="${PORT:-7860}"
TEST_PYTHON="${TEST_PYTHON:-$REPO_ROOT/.venv/bin/python}"
DEFAULT_TESTS="tests/webui/test_integration_webui.py tests/webui/test_integration_workflows.py"
DEFAULT_TESTS+=" tests/webui/test_integration_refine.py"
DEFAULT_TESTS+=" tests/webui/test_integration_browser.py" # UI only: skips under --nowebui
read -r -a TESTS <<<"${SMOKE_TESTS:-$DEFAULT_TESTS}"
if ! "$TEST_PYTHON" -c "import pytest" 2>/dev/null; then
    echo "smoke.sh: TEST_PYTHON=$TEST_PYTHON is not a Python with pytest;" \
        "set TEST_PYTHON to the test environment's python (see tools/webui_smoke/README.md)" >&2
    exit 2
fi
[ -d "$WEBUI_HOME/$name" ] || { echo "smoke.sh: no $WEBUI_HOME/$name; run setup_$name.sh" >&2 && exit 2; }
export SD_WEBUI_URL="http://127.0.0.1:$PORT" SD_WEBUI_FACE="$WEBUI_HOME/models/$name/face.png"
export SD_WEBUI_PHOTOS="$WEBUI_HOME/models/$name" SD_WEBUI_WEBUI="$name"
export SD_WEBUI_STEPS="${SD_WEBUI_STEPS:-1}" SD_WEBUI_SIZE="${SD_WEBUI_SIZE:-64}"
trap '"$SMOKE_DIR/launch.sh" stop "$name"' EXIT

# run_pytest LOG ARGS...: 0 only when pytest succeeded and passed at least one test.
run_pytest() {
    local log="$1" rc
    shift
    (cd "$REPO_ROOT" && "$TEST_PYTHON" -m pytest "${TESTS[@]}" -m integration -v \
        -p no:cacheprovider "$@") 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        log "pytest failed (exit $rc): $log"
        return 1
    fi
    if ! tail -n 1 "$log" | grep -q -E '[1-9][0-9]* passed'; then
        log "no test passed (nothing ran, or everything was skipped): $log"
        return 1
    fi
}

status=0
"$SMOKE_DIR/launch.sh" "$name"
run_pytest "$WEBUI_HOME/$name-pytest.log" "$@" || status=1

"$SMOKE_DIR/launch.sh" "$name" --nowebui
run_pytest "$WEBUI_HOME/$name-pytest-nowebui.log" \
    -k "script_info or grid or workflows or refine" "$@" || status=1
exit "$status"
