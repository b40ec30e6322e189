# Shared by setup_a1111.sh / setup_forge.sh / launch.sh (sourced, not run).
#
# Sources come from local bare mirrors when present (MIRRORS/<owner>+<name>/repo, as a fetch of
# the GitHub repository leaves them), else from a `git clone` of GitHub.

set -euo pipefail

SMOKE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SMOKE_DIR/../.." && pwd)"
WEBUI_HOME="${WEBUI_HOME:-/work/webui}"
MIRRORS="${MIRRORS:-/work/.mirror}"
PYTHON="${PYTHON:-python3.11}"
# CPU torch only: a CUDA build (or a newer torch) must never get into these venvs.
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0+cpu}"
TORCHVISION_SPEC="${TORCHVISION_SPEC:-torchvision==0.28.0}"

log() { printf '\n[webui_smoke] %s\n' "$*" >&2; }

# checkout OWNER/NAME COMMIT DEST: the files of COMMIT in DEST (no .git).
checkout() {
    local slug="$1" commit="$2" dest="$3"
    local mirror="$MIRRORS/${slug/\//+}/repo"
    if [ -e "$dest/.smoke-commit" ] && [ "$(cat "$dest/.smoke-commit")" = "$commit" ]; then
        return
    fi
    if [ ! -d "$mirror" ]; then
        mirror="$WEBUI_HOME/.clones/${slug/\//+}.git"
        [ -d "$mirror" ] || git clone --bare "https://github.com/$slug.git" "$mirror"
    fi
    log "checkout $slug@$commit -> $dest"
    mkdir -p "$dest"
    if ! git --git-dir="$mirror" archive "$commit" | tar -x -C "$dest" 2>/dev/null; then
        # Some snapshots lack a few large sample images: extract file by file, skip missing blobs.
        git --git-dir="$mirror" ls-tree -r "$commit" | while read -r mode type blob path; do
            [ "$type" = blob ] || continue
            mkdir -p "$dest/$(dirname "$path")"
            git --git-dir="$mirror" cat-file blob "$blob" >"$dest/$path" 2>/dev/null \
                || { rm -f "$dest/$path"; echo "  skipped missing $path" >&2; }
            [ "$mode" = 100755 ] && chmod +x "$dest/$path" 2>/dev/null || true
        done
    fi
    echo "$commit" >"$dest/.smoke-commit"
}

# make_venv DIR: a venv with the CPU torch pinned by DIR/constraints.txt for every later pip call.
make_venv() {
    local webui="$1"
    [ -x "$webui/venv/bin/python" ] || "$PYTHON" -m venv "$webui/venv"
    printf '%s\n' "$TORCH_SPEC" "$TORCHVISION_SPEC" "setuptools<81" >"$webui/constraints.txt"
    pip_in "$webui" -U pip "setuptools<81" wheel
    pip_in "$webui" "$TORCH_SPEC" "$TORCHVISION_SPEC"
    "$webui/venv/bin/python" - <<'EOF'
import torch
assert torch.version.cuda is None, f"a CUDA torch got in: {torch.__version__}"
print("torch", torch.__version__, "(CPU build)")
EOF
    guard_torchvision "$webui"
}

# pip_in WEBUI ARGS...: `pip install ARGS` in that WebUI's venv, always under its constraints
# file; the log goes to WEBUI/pip.log and is shown when pip fails.
pip_in() {
    local webui="$1"
    shift
    local constraints=()
    [ -f "$webui/constraints.txt" ] && constraints=(-c "$webui/constraints.txt")
    echo "+ pip install $*" >&2
    if ! "$webui/venv/bin/python" -m pip install --disable-pip-version-check "$@" \
        "${constraints[@]}" >>"$webui/pip.log" 2>&1; then
        tail -n 40 "$webui/pip.log" >&2
        return 1
    fi
}

# The WebUI's pinned requirements, minus torch and its setuptools pin (which conflicts with
# torch 2.13 and sends pip backtracking through torch wheels).
install_requirements() {
    local webui="$1"
    grep -v -E '^(torch|setuptools)([=<> ]|$)' "$webui/requirements_versions.txt" \
        >"$webui/requirements-smoke.txt"
    pip_in "$webui" -r "$webui/requirements-smoke.txt"
}

# PyPI's torchvision does not import beside the CPU torch (torchvision::nms does not exist):
# register its fake/autograd kernels only when its C++ ops loaded. A local hack: the WebUIs only
# use torchvision's transforms.
guard_torchvision() {
    local webui="$1"
    "$webui/venv/bin/python" "$SMOKE_DIR/guard_torchvision.py"
    "$webui/venv/bin/python" -c "import torchvision, torchvision.transforms; print('torchvision', torchvision.__version__, 'imports')"
}

# install_extension WEBUI: this repository's committed HEAD as an extension, then its installer
# run as the WebUI runs it (from the WebUI root, with the WebUI root on PYTHONPATH).
install_extension() {
    local webui="$1" source="${EXTENSION_SOURCE:-$REPO_ROOT}" ref="${EXTENSION_REF:-HEAD}"
    local dest="$webui/extensions/sd-webui-hyperlora"
    rm -rf "$dest" && mkdir -p "$dest"
    git -C "$source" archive "$ref" | tar -x -C "$dest"
    log "extension: $(git -C "$source" rev-parse --short "$ref") of $source"
    (cd "$webui" && PYTHONPATH="$webui" venv/bin/python "$dest/install.py")
}

# ------------------------------------------------------------------ other extensions (issue 22)
ADETAILER_COMMIT="${ADETAILER_COMMIT:-36189cbea735b85fd01e98ac42002b8ce6f0e41d}"   # v25.3.0
# The last commit before the 1.1.455 tag moved on; runs on A1111 1.10 (its version parsing fix).
CONTROLNET_COMMIT="${CONTROLNET_COMMIT:-56cec5b2958edf3b1807b7e7b2b1b5186dbd2f81}"

# pip_frozen WEBUI ARGS...: `pip install ARGS` that may add packages but never change an installed
# one (ultralytics would upgrade the WebUI's httpx/httpcore, and more): every installed version is
# pinned through a second constraints file.
pip_frozen() {
    local webui="$1"
    shift
    "$webui/venv/bin/python" -m pip freeze --exclude-editable 2>/dev/null \
        | grep -v -E '^(-e |.* @ )' >"$webui/constraints-frozen.txt"
    pip_in "$webui" -c "$webui/constraints-frozen.txt" "$@"
}

# install_adetailer WEBUI: ADetailer v25.3.0 from its fetched source, ultralytics (not mediapipe:
# it needs protobuf < 5) and rich; the WebUI runs with --skip-install, so ADetailer's install.py
# does not run.
install_adetailer() {
    local webui="$1"
    checkout Bing-su/adetailer "$ADETAILER_COMMIT" "$webui/extensions/adetailer"
    if [ ! -e "$webui/venv/.smoke-adetailer" ]; then
        pip_frozen "$webui" "ultralytics>=8.3.75,<8.4" "rich>=13.0.0"
        touch "$webui/venv/.smoke-adetailer"
    fi
}

# install_controlnet WEBUI: Mikubill/sd-webui-controlnet (A1111 only; Forge 2 has it built in)
# with the packages its scripts import when they load; its preprocessors that need more
# (mediapipe, insightface) are not used by the smoke test.
install_controlnet() {
    local webui="$1"
    checkout Mikubill/sd-webui-controlnet "$CONTROLNET_COMMIT" "$webui/extensions/sd-webui-controlnet"
    if [ ! -e "$webui/venv/.smoke-controlnet" ]; then
        pip_frozen "$webui" addict yapf svglib fvcore "controlnet_aux>=0.0.9"
        touch "$webui/venv/.smoke-controlnet"
    fi
}

# make_addon_models NAME WEBUI: the face detector, ControlNet and InstantID files (random).
make_addon_models() {
    local name="$1" webui="$2"
    "$webui/venv/bin/python" "$SMOKE_DIR/make_addon_models.py" "$name" --webui "$webui" \
        --checkpoint "$webui/models/Stable-diffusion/smoke_sdxl_base.safetensors" \
        --photos-dir "$WEBUI_HOME/models/$name"
}
