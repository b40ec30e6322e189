"""Helpers of the Forge double's tests (a helper module, not a test module): tiny Forge SDXL
models, their weights' fingerprint, and HyperLoRA's Forge adapter as a sampling hook."""

from __future__ import annotations

import hashlib

import torch

from hyperlora_ext.lora_format import lora_digest
from tests.webui.fake_webui import forge_backend as fb

WEIGHT = 0.8


def make_model(dtype=torch.float32, storage_dtype=None, seed=0) -> fb.FakeForgeSDXL:
    torch.manual_seed(seed)
    return fb.FakeForgeSDXL(fb.TinySDXLUNet().to(dtype), storage_dtype)


def unet_of(sd_model: fb.FakeForgeSDXL) -> fb.TinySDXLUNet:
    return sd_model.forge_objects_original.unet.model.diffusion_model


def snapshot(sd_model) -> dict[str, torch.Tensor]:
    kmodel = sd_model.forge_objects_original.unet.model
    return {name: param.detach().clone() for name, param in kmodel.named_parameters()}


def fingerprint(sd_model) -> str:
    digest = hashlib.sha256()
    for name, tensor in snapshot(sd_model).items():
        digest.update(name.encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def hook(adapter, lora, weight=WEIGHT, reports=None):
    digest = lora_digest(lora)

    def process_before_every_sampling(p):
        report = adapter.apply(p, lora, weight, digest)
        if reports is not None:
            reports.append(report)

    return process_before_every_sampling
