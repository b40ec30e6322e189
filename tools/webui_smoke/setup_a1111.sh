#!/usr/bin/env bash
# AUTOMATIC1111 1.10.1 on a CPU, offline, with this extension and small random models.
#
#     tools/webui_smoke/setup_a1111.sh        (WEBUI_HOME=/work/webui by default; ~10 min)
#
# Leaves WEBUI_HOME/a1111 (WebUI + venv + extension), WEBUI_HOME/hf (offline CLIP tokenizer)
# and WEBUI_HOME/models (HyperLoRA models); launch with `launch.sh a1111`. Re-running is cheap:
# finished steps are skipped, the extension is always re-copied from this repository's HEAD.
# A1111_FULL_DEPTH=1 makes the checkpoint with SDXL's own transformer depths (6.9 GB, ~14 GB of
# RAM in fp32), which sd-webui-controlnet's InstantID (IP-Adapter) needs; the default is depth 1.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WEBUI="$WEBUI_HOME/a1111"
REPOS="$WEBUI/repositories"

checkout CoderBotics-ai/stable-diffusion-webui 82a973c0 "$WEBUI" # v1.10.1
checkout AUTOMATIC1111/stable-diffusion-webui-assets 6f7db24 "$REPOS/stable-diffusion-webui-assets"
checkout Stability-AI/stablediffusion cf1d67a "$REPOS/stable-diffusion-stability-ai"
checkout Stability-AI/generative-models 45c443b "$REPOS/generative-models"
checkout crowsonkb/k-diffusion ab527a9 "$REPOS/k-diffusion"

if [ ! -e "$WEBUI/venv/.smoke-ready" ]; then
    make_venv "$WEBUI"
    install_requirements "$WEBUI"
    # launch.py installs CLIP from a GitHub archive; PyPI's openai-clip is the same package.
    pip_in "$WEBUI" --no-deps openai-clip
    "$WEBUI/venv/bin/python" -c "import torch; assert torch.version.cuda is None, torch.__version__"
    touch "$WEBUI/venv/.smoke-ready"
fi

install_extension "$WEBUI"

# A1111 builds CLIP-L from the Hugging Face config + tokenizer of openai/clip-vit-large-patch14.
[ -d "$WEBUI_HOME/hf/hub" ] || "$WEBUI/venv/bin/python" "$SMOKE_DIR/make_hf_cache.py" "$WEBUI_HOME/hf"

depth=()
[ "${A1111_FULL_DEPTH:-0}" = 1 ] && depth=(--full-depth)
"$WEBUI/venv/bin/python" "$SMOKE_DIR/make_models.py" a1111 "${depth[@]}" \
    --checkpoint "$WEBUI/models/Stable-diffusion/smoke_sdxl_base.safetensors" \
    --models-dir "$WEBUI_HOME/models/a1111" --sgm "$REPOS/generative-models"
install_adetailer "$WEBUI"
install_controlnet "$WEBUI"
make_addon_models a1111 "$WEBUI"
log "A1111 ready: tools/webui_smoke/launch.sh a1111"
