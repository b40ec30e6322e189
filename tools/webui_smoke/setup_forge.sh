#!/usr/bin/env bash
# Forge 2 (dfdcbab6) on a CPU, offline, with this extension and small random models.
#
#     tools/webui_smoke/setup_forge.sh        (WEBUI_HOME=/work/webui by default; ~10 min)
#
# Leaves WEBUI_HOME/forge (WebUI + venv + extension) and WEBUI_HOME/models/forge (HyperLoRA
# models); launch with `launch.sh forge`. Re-running is cheap: finished steps are skipped, the
# extension is always re-copied from this repository's HEAD.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WEBUI="$WEBUI_HOME/forge"
REPOS="$WEBUI/repositories"

checkout lllyasviel/stable-diffusion-webui-forge dfdcbab6 "$WEBUI"
# The UI assets and huggingface_guess: launch.py clones them, but not with --skip-prepare-environment.
checkout AUTOMATIC1111/stable-diffusion-webui-assets 6f7db24 "$REPOS/stable-diffusion-webui-assets"
checkout lllyasviel/huggingface_guess 84826248 "$REPOS/huggingface_guess"
# Not used by Forge: make_models.py reads the SDXL key layout from it.
checkout Stability-AI/generative-models 45c443b "$REPOS/generative-models"

if [ ! -e "$WEBUI/venv/.smoke-ready" ]; then
    make_venv "$WEBUI"
    install_requirements "$WEBUI"
    pip_in "$WEBUI" joblib torchdiffeq==0.2.3 torchsde==0.2.6
    pip_in "$WEBUI" --no-deps openai-clip
    "$WEBUI/venv/bin/python" -c "import torch; assert torch.version.cuda is None, torch.__version__"
    touch "$WEBUI/venv/.smoke-ready"
fi

install_extension "$WEBUI"

"$WEBUI/venv/bin/python" "$SMOKE_DIR/make_models.py" forge \
    --checkpoint "$WEBUI/models/Stable-diffusion/smoke_sdxl_base.safetensors" \
    --models-dir "$WEBUI_HOME/models/forge" --sgm "$REPOS/generative-models"
install_adetailer "$WEBUI"
make_addon_models forge "$WEBUI"
log "Forge ready: tools/webui_smoke/launch.sh forge"
