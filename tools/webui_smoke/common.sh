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
