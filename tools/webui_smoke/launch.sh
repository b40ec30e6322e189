#!/usr/bin/env bash
# Start a WebUI built by setup_a1111.sh / setup_forge.sh on 127.0.0.1 and wait until its API answers.
#
#     tools/webui_smoke/launch.sh {a1111|forge} [--nowebui] [more WebUI flags]
#     tools/webui_smoke/launch.sh stop {a1111|forge}
#
# PORT (default 7860) selects the port. Logs go to WEBUI_HOME/<webui>.log, the process id to
# WEBUI_HOME/<webui>.pid. Keep one WebUI running at a time on a small machine.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PORT="${PORT:-7860}"

stop() {
    local pidfile="$WEBUI_HOME/$1.pid"
    [ -f "$pidfile" ] || return 0
    local pid
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -- "-$pid" 2>/dev/null || kill "$pid"
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -9 -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    log "stopped $1 ($pid)"
}

if [ "${1:-}" = stop ]; then
    stop "$2"
    exit
fi

name="$1"
shift
WEBUI="$WEBUI_HOME/$name"
common=(--api --port "$PORT" --skip-torch-cuda-test --skip-prepare-environment --skip-install
    --skip-version-check --ckpt "$WEBUI/models/Stable-diffusion/smoke_sdxl_base.safetensors"
    --hyperlora-models-dir "$WEBUI_HOME/models/$name")
case "$name" in
a1111) flags=(--use-cpu all --no-half --precision full --no-download-sd-model) ;;
forge) flags=(--always-cpu) ;;
*) echo "usage: launch.sh {a1111|forge} [flags] | launch.sh stop {a1111|forge}" >&2 && exit 2 ;;
esac

# ADetailer's preload adds the flag; without it ADetailer tries the Hugging Face hub for models.
[ -d "$WEBUI/extensions/adetailer" ] && flags+=(--ad-no-huggingface)

stop "$name"
log "starting $name on 127.0.0.1:$PORT (log: $WEBUI_HOME/$name.log)"
(
    cd "$WEBUI"
    # A1111 reads CLIP-L's tokenizer from the offline Hugging Face cache made by make_hf_cache.py.
    export HF_HOME="$WEBUI_HOME/hf" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
    # ultralytics sets torch's CPU thread count to min(8, cores - 1) on its first detection, and
    # later images then differ by a few levels: start with that count. YOLO_OFFLINE stops its
    # online checks.
    threads=$(($(nproc) - 1))
    threads=$((threads < 1 ? 1 : threads > 8 ? 8 : threads))
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$threads}" YOLO_OFFLINE=True
    exec setsid venv/bin/python launch.py "${common[@]}" "${flags[@]}" "$@"
) >"$WEBUI_HOME/$name.log" 2>&1 &
echo $! >"$WEBUI_HOME/$name.pid"

url="http://127.0.0.1:$PORT"
for _ in $(seq 600); do
    if curl -sf "$url/sdapi/v1/options" >/dev/null 2>&1; then
        # No live previews: the preview model would be downloaded.
        curl -sf -X POST "$url/sdapi/v1/options" -H 'Content-Type: application/json' \
            -d '{"live_previews_enable": false, "show_progress_type": "Approx cheap"}' >/dev/null
        log "$name answers at $url"
        exit 0
    fi
    kill -0 "$(cat "$WEBUI_HOME/$name.pid")" 2>/dev/null || break
    sleep 2
done
tail -n 40 "$WEBUI_HOME/$name.log" >&2
log "$name did not come up"
exit 1
