"""Refine's host interface around the WebUI double's tiny SDXL (UNet in float32 unless asked)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from hyperlora_ext.refine.crops import FacePhoto, make_crops
from hyperlora_ext.refine.host import RefineModel
from hyperlora_ext.refine.trainer import TrainingSet, encode_crops
from tests.webui.fake_webui.tiny_sdxl import TinySDXL
from tests.webui.loras import make_lora


def tiny_model(prediction="eps", dtype=torch.float32, seed=0, inference=False):
    """(the tiny sd_model, a RefineModel on it). ``inference``: built under inference mode, as
    Forge 2 loads checkpoints, so every weight is an inference tensor."""
    with torch.inference_mode(inference):
        sd_model = TinySDXL(seed=seed)
        unet = sd_model.model.diffusion_model.to(dtype)
    model = RefineModel(
        unet=unet,
        denoise=sd_model.apply_model,
        encode_images=sd_model.encode_first_stage,
        encode_prompts=lambda prompts: {"crossattn": sd_model.get_learned_conditioning(prompts)},
        alphas_cumprod=sd_model.alphas_cumprod,
        prediction=prediction,
        device=torch.device("cpu"),
        dtype=dtype,
        checkpoint_hash="tiny0000",
    )
    return sd_model, model


def identity(sd_model, seed=0):
    """A rank-8, alpha-4 identity over all 560 layers, diffusers-style names like the models."""
    return make_lora(sd_model, style="diffusers", rank=8, alpha=4.0, seed=seed, scale=0.2)


def photos(count=2, size=96):
    rng = np.random.default_rng(1)
    out = []
    for i in range(count):
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        out.append(FacePhoto(Image.fromarray(pixels), (30, 30, 66, 70), 1.0 / (i + 1), f"p{i}"))
    return out


def crops(resolution=32, jitters=1, count=2):
    return [c for p in photos(count) for c in make_crops(p, resolution, jitters)]


def training_set(model, resolution=32) -> TrainingSet:
    return encode_crops(model, crops(resolution), "fcsks fxhks fhyks, a photo of a person")


def unet_state(unet):
    return {name: t.detach().clone() for name, t in unet.state_dict().items()}


def assert_restored(unet, before):
    """Bit-exact weights, no hooks, no wrapped forwards, requires_grad as before (True)."""
    after = unet.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name
        assert tensor.dtype == after[name].dtype
    for module in unet.modules():
        assert not module._forward_hooks and "forward" not in module.__dict__
    assert all(p.requires_grad for p in unet.parameters())
