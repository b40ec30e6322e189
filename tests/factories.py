"""Builders of tiny random models in the released on-disk layouts, shared by all tests and benches.

``write_tiny_hyperlora`` writes a HyperLoRA model folder with the real key names and resampler
layout (two conditions, attn1/attn2/attn3 blocks) at toy sizes; ``write_tiny_clip`` writes a tiny
CLIP in the three layouts users keep CLIP ViT-L/14 in. Both are deterministic per ``seed``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from hyperlora_ext.lora_format import sdxl_attention_modules

# Real SDXL widths scaled down: 640 -> 20, 1280 -> 40, cross-attention 2048 -> 64.
_TINY_WIDTHS = {640: 20, 1280: 40, 2048: 64}
# Real module names: down_blocks_1 (640) attn1 + attn2, mid block (1280) attn1 + attn2.
_TINY_MODULE_INDICES = (0, 1, 48, 49)


def tiny_modules(style: Literal["diffusers", "sgm"] = "diffusers") -> dict[str, dict[str, Any]]:
    """A few real SDXL kohya module names (self- and cross-attention) with toy widths."""
    real = list(sdxl_attention_modules(style).items())
    modules = {}
    for index in _TINY_MODULE_INDICES:
        name, info = real[index]
        cross = info["cross_attention_dim"]
        modules[name] = {
            "hidden_size": _TINY_WIDTHS[info["hidden_size"]],
            "cross_attention_dim": _TINY_WIDTHS[cross] if cross else None,
        }
    return modules


def tiny_hyperlora_tensors(
    modules: dict[str, dict[str, Any]],
    *,
    embedding_dim: int = 32,
    dim: int = 48,
    num_id_tokens: int = 4,
    rank: int = 4,
    hyper_dim: int = 16,
    depth: int = 2,
    heads: int = 2,
    dim_head: int = 64,
    ff_mult: int = 4,
    id_embed_dim: int = 512,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, dict[str, torch.Tensor]]:
    """State dicts {file name: {key: tensor}} of a random HyperLoRA model, in ``dtype``.

    Each tensor is cast as it is drawn, so full-size models (bench) never exist in float32.
    """
    gen = torch.Generator().manual_seed(seed)

    def linear(out_features: int, in_features: int) -> torch.Tensor:
        return torch.randn(out_features, in_features, generator=gen) / in_features**0.5

    def vector(size: int, centre: float = 0.0) -> torch.Tensor:
        return centre + 0.1 * torch.randn(size, generator=gen)

    d, inner, e = dim, heads * dim_head, embedding_dim
    resampler = {"latents": torch.randn(1, 8 * len(modules), d, generator=gen) / d**0.5}
    for name in ("proj_in", "proj_in_2"):
        resampler |= {f"{name}.weight": linear(d, e), f"{name}.bias": vector(d)}
    resampler |= {"proj_out.weight": linear(hyper_dim, d), "proj_out.bias": vector(hyper_dim)}
    for layer in range(depth):
        p = f"layers.{layer}."
        for norm in ("attn1", "attn2_l", "attn2_x", "attn3_l", "attn3_y", "ff"):
            resampler |= {
                f"{p}norm_{norm}.weight": vector(d, 1.0),
                f"{p}norm_{norm}.bias": vector(d),
            }
        for attn in ("attn1", "attn2", "attn3"):
            for proj in ("to_q", "to_k", "to_v"):
                resampler[f"{p}{attn}.{proj}.weight"] = linear(inner, d)
            resampler[f"{p}{attn}.to_out.0.weight"] = linear(d, inner)
        resampler |= {
            f"{p}ff.net.0.proj.weight": linear(ff_mult * d, d),
            f"{p}ff.net.0.proj.bias": vector(ff_mult * d),
            f"{p}ff.net.2.weight": linear(d, ff_mult * d),
            f"{p}ff.net.2.bias": vector(d),
        }
    projector = {
        "0.weight": linear(num_id_tokens * e, id_embed_dim),
        "0.bias": vector(num_id_tokens * e),
        "2.weight": vector(e, 1.0),
        "2.bias": vector(e),
    }
    bases = {}
    for index, info in enumerate(modules.values()):
        hidden = info["hidden_size"]
        kv_in = info.get("cross_attention_dim") or hidden
        for layer in ("to_q", "to_k", "to_v", "to_out"):
            width_in = kv_in if layer in ("to_k", "to_v") else hidden
            down = torch.randn(hyper_dim, width_in, rank, generator=gen)
            bases[f"{index}.{layer}.id_down_basis"] = down.to(dtype)
            up = torch.randn(hyper_dim, rank, hidden, generator=gen)
            bases[f"{index}.{layer}.id_up_basis"] = up.to(dtype)
    return {
        "resampler.safetensors": {k: v.to(dtype) for k, v in resampler.items()},
        "id_projector.safetensors": {k: v.to(dtype) for k, v in projector.items()},
        "hyper_lora_modules.safetensors": bases,
    }


def write_tiny_hyperlora(
    folder: str | Path,
    *,
    modules: dict[str, dict[str, Any]] | None = None,
    style: Literal["diffusers", "sgm"] = "diffusers",
    dtype: torch.dtype = torch.float16,
    **sizes: Any,
) -> Path:
    """Write a tiny random HyperLoRA model folder in the released layout; returns the folder.

    ``sizes`` go to :func:`tiny_hyperlora_tensors` (embedding_dim = 32 matches the tiny CLIP of
    :func:`write_tiny_clip`; dim_head must stay 64 unless the loader is told otherwise).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    modules = tiny_modules(style) if modules is None else modules
    (folder / "hyper_lora_modules.json").write_text(json.dumps(modules, indent=2))
    for name, state in tiny_hyperlora_tensors(modules, dtype=dtype, **sizes).items():
        save_file(state, str(folder / name))
    return folder


TINY_CLIP_VISION = dict(
    intermediate_size=64,
    num_hidden_layers=2,
    image_size=224,
    patch_size=14,
    projection_dim=16,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)
TINY_CLIP_TEXT = dict(
    vocab_size=99,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=16,
    projection_dim=16,
)


def tiny_clip_vision_config(hidden_size: int = 32):
    from transformers import CLIPVisionConfig

    from hyperlora_ext.encoders.clip_encoder import heads_for_width

    return CLIPVisionConfig(
        hidden_size=hidden_size,
        num_attention_heads=heads_for_width(hidden_size),
        **TINY_CLIP_VISION,
    )


def write_tiny_clip(
    folder: str | Path,
    *,
    layout: Literal["hf_full", "vision_folder", "vision_file"] = "hf_full",
    hidden_size: int = 32,
    seed: int = 0,
) -> Path:
    """Write a tiny random CLIP; returns the folder, or the .safetensors file for "vision_file".

    * ``hf_full``: full CLIPModel (text tower too) with a CLIPConfig, like
      openai/clip-vit-large-patch14.
    * ``vision_folder``: CLIPVisionModelWithProjection with a CLIPVisionConfig.
    * ``vision_file``: a single safetensors file of the vision tower (``vision_model.*`` keys).
    """
    from transformers import CLIPConfig, CLIPModel, CLIPVisionModelWithProjection

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vision_config = tiny_clip_vision_config(hidden_size)
    model = CLIPVisionModelWithProjection(vision_config).eval()  # same vision weights per seed
    if layout == "hf_full":
        config = CLIPConfig(
            text_config=TINY_CLIP_TEXT, vision_config=vision_config.to_dict(), projection_dim=16
        )
        full = CLIPModel(config).eval()
        full.vision_model.load_state_dict(model.vision_model.state_dict())
        full.save_pretrained(folder, safe_serialization=True)
        return folder
    if layout == "vision_folder":
        model.save_pretrained(folder, safe_serialization=True)
        return folder
    path = folder / "clip_vision_tiny.safetensors"
    state = {k: v.contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}
    save_file(state, str(path))
    return path


# ------------------------------------------------------------- saved identities
STORE_PREFIX = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"


def tiny_lora(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        f"{STORE_PREFIX}.lora_down.weight": torch.randn(4, 20, generator=g),
        f"{STORE_PREFIX}.lora_up.weight": torch.randn(20, 4, generator=g),
        f"{STORE_PREFIX}.alpha": torch.tensor(4.0),
    }


def save_identity(store, name="alice", seed=0, **kwargs):
    kwargs.setdefault("model", "fidelity")
    kwargs.setdefault("photos", 3)
    return store.save(name, tiny_lora(seed), **kwargs)
