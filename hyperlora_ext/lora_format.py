"""Kohya LoRA key names for the SDXL UNet attention layers HyperLoRA targets.

HyperLoRA's module JSON names each attention module with a kohya prefix such as
``lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1`` (diffusers-style) or
``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1`` (SGM-style). Both describe the same
layer; this module converts between them and to the WebUI's compvis layer names
(``diffusion_model_input_blocks_4_1_transformer_blocks_0_attn1_to_q``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Literal

import torch

KOHYA_UNET_PREFIX = "lora_unet_"
WEBUI_UNET_PREFIX = "diffusion_model_"
# Output suffixes of the four linears of one attention module, in the reference's order.
LORA_PARTS = ("to_q", "to_k", "to_v", "to_out_0")

NameStyle = Literal["diffusers", "sgm"]

# SDXL base UNet: (diffusers block, SGM block, transformer depth, width), in SGM order.
_SDXL_ATTENTION_BLOCKS = (
    ("down_blocks_1_attentions_0", "input_blocks_4_1", 2, 640),
    ("down_blocks_1_attentions_1", "input_blocks_5_1", 2, 640),
    ("down_blocks_2_attentions_0", "input_blocks_7_1", 10, 1280),
    ("down_blocks_2_attentions_1", "input_blocks_8_1", 10, 1280),
    ("mid_block_attentions_0", "middle_block_1", 10, 1280),
    ("up_blocks_0_attentions_0", "output_blocks_0_1", 10, 1280),
    ("up_blocks_0_attentions_1", "output_blocks_1_1", 10, 1280),
    ("up_blocks_0_attentions_2", "output_blocks_2_1", 10, 1280),
    ("up_blocks_1_attentions_0", "output_blocks_3_1", 2, 640),
    ("up_blocks_1_attentions_1", "output_blocks_4_1", 2, 640),
    ("up_blocks_1_attentions_2", "output_blocks_5_1", 2, 640),
)
SDXL_CROSS_ATTENTION_DIM = 2048

_DIFFUSERS_DOWN = re.compile(r"down_blocks_(\d+)_attentions_(\d+)")
_DIFFUSERS_UP = re.compile(r"up_blocks_(\d+)_attentions_(\d+)")
_SGM_INPUT = re.compile(r"input_blocks_(\d+)_1")
_SGM_OUTPUT = re.compile(r"output_blocks_(\d+)_1")


def sdxl_attention_modules(style: NameStyle = "diffusers") -> dict[str, dict[str, int | None]]:
    """The 140 SDXL attention modules as a HyperLoRA module JSON would list them.

    Values carry ``hidden_size`` and ``cross_attention_dim`` (None for self-attention ``attn1``).
    """
    modules: dict[str, dict[str, int | None]] = {}
    for diffusers_block, sgm_block, depth, width in _SDXL_ATTENTION_BLOCKS:
        block = diffusers_block if style == "diffusers" else sgm_block
        for index in range(depth):
            stem = f"{KOHYA_UNET_PREFIX}{block}_transformer_blocks_{index}"
            modules[f"{stem}_attn1"] = {"hidden_size": width, "cross_attention_dim": None}
            modules[f"{stem}_attn2"] = {
                "hidden_size": width,
                "cross_attention_dim": SDXL_CROSS_ATTENTION_DIM,
            }
    return modules


def to_sgm_name(name: str) -> str:
    """Rewrite a diffusers-style kohya name to SGM style; SGM-style names pass through unchanged."""
    name = _DIFFUSERS_DOWN.sub(
        lambda m: f"input_blocks_{1 + 3 * int(m[1]) + int(m[2])}_1", name, count=1
    )
    name = _DIFFUSERS_UP.sub(
        lambda m: f"output_blocks_{3 * int(m[1]) + int(m[2])}_1", name, count=1
    )
    return name.replace("mid_block_attentions_0", "middle_block_1", 1)


def to_diffusers_name(name: str) -> str:
    """Rewrite an SGM-style kohya name to diffusers style; diffusers-style names pass through."""

    def input_block(m: re.Match[str]) -> str:
        block, attention = divmod(int(m[1]) - 1, 3)
        return f"down_blocks_{block}_attentions_{attention}"

    def output_block(m: re.Match[str]) -> str:
        block, attention = divmod(int(m[1]), 3)
        return f"up_blocks_{block}_attentions_{attention}"

    name = _SGM_INPUT.sub(input_block, name, count=1)
    name = _SGM_OUTPUT.sub(output_block, name, count=1)
    return name.replace("middle_block_1", "mid_block_attentions_0", 1)


def kohya_to_webui_layer(kohya_name: str) -> str:
    """Map a kohya UNet layer name (either style) to A1111's compvis layer name."""
    if not kohya_name.startswith(KOHYA_UNET_PREFIX):
        raise ValueError(
            f"not a kohya UNet LoRA name: {kohya_name!r} (expected prefix 'lora_unet_')"
        )
    return WEBUI_UNET_PREFIX + to_sgm_name(kohya_name)[len(KOHYA_UNET_PREFIX) :]


def convert_key_style(lora: dict[str, Any], style: NameStyle | None) -> dict[str, Any]:
    """Return ``lora`` with its kohya keys rewritten to ``style`` (None keeps them as given)."""
    if style is None:
        return dict(lora)
    rename = to_sgm_name if style == "sgm" else to_diffusers_name
    return {rename(key): value for key, value in lora.items()}


def lora_digest(lora: dict[str, torch.Tensor], length: int = 12) -> str:
    """Short content hash of a LoRA dict (keys, dtypes, shapes, values), whatever the key order."""
    digest = hashlib.sha256()
    for key, tensor in sorted(lora.items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{data.dtype}|{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:length]


def group_layers(lora: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{"lora_unet_x.lora_up.weight": t}`` -> ``{"lora_unet_x": {"lora_up.weight": t}}``."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in lora.items():
        layer, _, part = key.partition(".")
        layers.setdefault(layer, {})[part] = tensor
    return layers
