"""Hand-built kohya LoRA dicts for the tiny SDXL double (random tensors, real key names)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from hyperlora_ext.identity_value import Identity
from hyperlora_ext.lora_format import lora_digest
from tests.webui.fake_webui.tiny_sdxl import SDXL_ATTENTION_BLOCKS

# SGM block -> diffusers block, written out by hand (independent of hyperlora_ext.lora_format).
DIFFUSERS_BLOCK = {
    "input_blocks.4.1": "down_blocks_1_attentions_0",
    "input_blocks.5.1": "down_blocks_1_attentions_1",
    "input_blocks.7.1": "down_blocks_2_attentions_0",
    "input_blocks.8.1": "down_blocks_2_attentions_1",
    "middle_block.1": "mid_block_attentions_0",
    "output_blocks.0.1": "up_blocks_0_attentions_0",
    "output_blocks.1.1": "up_blocks_0_attentions_1",
    "output_blocks.2.1": "up_blocks_0_attentions_2",
    "output_blocks.3.1": "up_blocks_1_attentions_0",
    "output_blocks.4.1": "up_blocks_1_attentions_1",
    "output_blocks.5.1": "up_blocks_1_attentions_2",
}
PARTS = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out_0": "to_out.0"}


def target_layers(style: str = "sgm"):
    """Yield (kohya layer name, module path in the UNet) for the 560 attention Linears."""
    for path, depth, _width in SDXL_ATTENTION_BLOCKS:
        block = path.replace(".", "_") if style == "sgm" else DIFFUSERS_BLOCK[path]
        for i in range(depth):
            for attn in ("attn1", "attn2"):
                for part, attr in PARTS.items():
                    kohya = f"lora_unet_{block}_transformer_blocks_{i}_{attn}_{part}"
                    yield kohya, f"{path}.transformer_blocks.{i}.{attn}.{attr}"


def make_lora(sd_model, style="sgm", rank=4, alpha=2.0, seed=0, scale=0.05, only=None):
    """A kohya LoRA for every target layer of ``sd_model`` (or the first ``only`` layers)."""
    unet = sd_model.model.diffusion_model
    g = torch.Generator().manual_seed(seed)
    lora = {}
    for n, (kohya, path) in enumerate(target_layers(style)):
        if only is not None and n >= only:
            break
        out_f, in_f = unet.get_submodule(path).weight.shape
        lora[f"{kohya}.lora_down.weight"] = torch.randn(rank, in_f, generator=g) * scale
        lora[f"{kohya}.lora_up.weight"] = torch.randn(out_f, rank, generator=g) * scale
        lora[f"{kohya}.alpha"] = torch.tensor(float(alpha))
    return lora


def expected_delta(lora, kohya, weight):
    """weight * alpha/rank * up @ down, computed in fp16 like A1111's holders."""
    up = lora[f"{kohya}.lora_up.weight"].to(torch.float16)
    down = lora[f"{kohya}.lora_down.weight"].to(torch.float16)
    alpha = float(lora[f"{kohya}.alpha"])
    return (up @ down) * (alpha / down.shape[0]) * weight


def unmatched(lora):
    """The same LoRA under layer names this checkpoint does not have."""
    return {key.replace("lora_unet_", "lora_unet_nowhere_"): t for key, t in lora.items()}


def with_lora(result: Identity, change: Callable[[dict], dict]) -> Identity:
    """``result`` with its LoRA changed by ``change`` (and the digest that goes with it)."""
    lora = change(result.lora)
    return replace(result, lora=lora, digest=lora_digest(lora))
