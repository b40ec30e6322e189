#!/usr/bin/env bash
# Run tests/webui/test_integration_webui.py against a WebUI built by setup_<webui>.sh.
#
#     tools/webui_smoke/smoke.sh {a1111|forge} [pytest args]
#
# Starts the WebUI with the full API, runs the whole file, restarts it API-only (--nowebui) for
# the X/Y/Z tests (the axes in script-info, the grids), then stops it.
# Results: WEBUI_HOME/<webui>-pytest*.log.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

name="$1"
shift
PORT="${PORT:-7860}"
TEST_PYTHON="${TEST_PYTHON:-$REPO_ROOT/.venv/bin/python}"
export SD_WEBUI_URL="http://127.0.0.1:$PORT" SD_WEBUI_FACE="$WEBUI_HOME/models/$name/face.png"
export SD_WEBUI_STEPS="${SD_WEBUI_STEPS:-1}" SD_WEBUI_SIZE="${SD_WEBUI_SIZE:-64}"
trap '"$SMOKE_DIR/launch.sh" stop "$name"' EXIT

run_pytest() {
    local log="$1"
    shift
    (cd "$REPO_ROOT" && "$TEST_PYTHON" -m pytest tests/webui/test_integration_webui.py \
        -m integration -v -p no:cacheprovider "$@") 2>&1 | tee "$log" || true
}

status=0
"$SMOKE_DIR/launch.sh" "$name"
run_pytest "$WEBUI_HOME/$name-pytest.log" "$@"
grep -q -E '(failed|error)' <(tail -n 1 "$WEBUI_HOME/$name-pytest.log") && status=1

"$SMOKE_DIR/launch.sh" "$name" --nowebui
run_pytest "$WEBUI_HOME/$name-pytest-nowebui.log" -k "script_info or grid" "$@"
grep -q -E '(failed|error)' <(tail -n 1 "$WEBUI_HOME/$name-pytest-nowebui.log") && status=1
exit "$status"
