"""Refine's Forge 2 host on the Forge double: a clean UNet (no merged LoRA), training around
Forge's inference-tensor weights, refusals."""

from __future__ import annotations

import math

import pytest
import torch

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.refine.lora_path import find_layers
from hyperlora_ext.refine.trainer import RefineSettings, refine
from hyperlora_ext.webui import refine_host
from hyperlora_ext.webui.refine_host import WebUIRefineSettings
from tests.refine.tiny import crops, photos
from tests.webui.fake_webui import forge_backend as fb

CAPTION = "fcsks fxhks fhyks, a photo of a person"


@pytest.fixture
def memory(monkeypatch) -> fb.MemoryManagement:
    return fb.install(monkeypatch)


def make_model(storage_dtype=None) -> fb.FakeForgeSDXL:
    torch.manual_seed(0)
    return fb.FakeForgeSDXL(fb.TinySDXLUNet(), storage_dtype)


def weights(unet) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in unet.named_parameters()}


def test_forge_host_trains_on_the_unet_without_the_users_merged_lora(memory):
    sd_model = make_model()
    unet = sd_model.forge_objects_original.unet.model.diffusion_model
    base = weights(unet)
    user_lora = fb.kohya_lora_for(unet, rank=2, alpha=1.0, seed=1)
    job = fb.FakeProcessing(sd_model, user_loras=[("user.safetensors", user_lora, 1.0)])
    fb.run_job(job, memory)  # the last generation merged the user's LoRA into the weights
    merged = weights(unet)
    assert any(not torch.equal(merged[k], base[k]) for k in base)
    model = refine_host.refine_model(sd_model, 768)
    assert model.unet is unet and model.prediction == "eps"
    now = weights(model.unet)
    assert all(torch.equal(now[k], base[k]) for k in base)
    names = [
        "lora_unet_" + name.replace(".", "_") for name in unet.attention_linears()
    ]  # SGM names, as the identity's keys become
    assert len(find_layers(model.unet, names)) == 560
    fb.run_job(job, memory)  # the next generation merges the user's LoRA again
    again = weights(unet)
    assert all(torch.equal(again[k], merged[k]) for k in merged)


def test_v_prediction_checkpoints_train_on_v(memory):
    sd_model = make_model()
    sd_model.forge_objects_original.unet.model.predictor.prediction_type = "v_prediction"
    assert refine_host.refine_model(sd_model, 768).prediction == "v"


def test_low_vram_mode_is_refused(memory, monkeypatch):
    import sys

    mm = sys.modules["backend.memory_management"]
    monkeypatch.setattr(mm, "vram_state", mm.VRAMState.LOW_VRAM)
    with pytest.raises(HyperLoRAError, match="low-VRAM"):
        refine_host.refine_model(make_model(), 768)


def test_quantised_storage_is_refused(memory):
    with pytest.raises(HyperLoRAError, match="fp16, bf16 or fp32"):
        refine_host.refine_model(make_model(storage_dtype=torch.float8_e4m3fn), 768)


def test_refine_trains_around_forges_inference_tensors_and_gives_them_back(memory):
    """Forge loads the UNet under inference mode; refine trains around copies, and afterwards
    the UNet holds Forge's own tensors again, so Forge's LoRA backups restore the right ones."""
    sd_model = make_model()
    unet = sd_model.forge_objects_original.unet.model.diffusion_model
    assert all(p.is_inference() for p in unet.parameters())
    user_lora = fb.kohya_lora_for(unet, rank=2, alpha=1.0, seed=1)
    job = fb.FakeProcessing(sd_model, user_loras=[("user.safetensors", user_lora, 1.0)])
    fb.run_job(job, memory)  # the user's LoRA merged; Forge's backups hold the loaded tensors
    merged = weights(unet)
    model = refine_host.refine_model(sd_model, 32)  # Forge puts the loaded tensors back
    loaded, base = dict(unet.named_parameters()), weights(unet)
    flags = {name: p.requires_grad for name, p in loaded.items()}
    identity = fb.kohya_lora_for(unet, rank=8, alpha=4.0, seed=2)
    settings = RefineSettings(steps=3, learning_rate=1e-2)
    result = refine(model, identity, crops(), CAPTION, settings)
    assert result.steps_done == 3 and all(math.isfinite(v) for v in result.losses)
    assert any(not torch.equal(result.lora[k], identity[k]) for k in identity)
    now = dict(unet.named_parameters())
    assert all(now[name] is tensor and tensor.is_inference() for name, tensor in loaded.items())
    assert all(torch.equal(now[name], base[name]) for name in base)
    assert {name: p.requires_grad for name, p in now.items()} == flags
    fb.run_job(job, memory)  # the next generation merges the user's LoRA into the same tensors
    assert all(torch.equal(weights(unet)[k], merged[k]) for k in merged)
    backup = sd_model.forge_objects_original.unet.lora_loader.backup
    prefix = len("diffusion_model.")
    assert backup and all(tensor is loaded[key[prefix:]] for key, tensor in backup.items())


def test_forges_in_place_residuals_train_alike_with_and_without_checkpointing(memory):
    """Forge's blocks add into their input in place; the checkpoint's recomputation must still
    see the input as it was, or the gradients (not the loss) silently differ."""
    results = []
    for checkpointing in (False, True):
        sd_model = make_model()
        model = refine_host.refine_model(sd_model, 32)
        identity = fb.kohya_lora_for(model.unet, rank=8, alpha=4.0, seed=2)
        settings = RefineSettings(steps=2, learning_rate=1e-3, gradient_checkpointing=checkpointing)
        results.append(refine(model, identity, crops(), CAPTION, settings))
    plain, checkpointed = results
    assert checkpointed.losses == pytest.approx(plain.losses, rel=1e-5)
    for key, tensor in plain.lora.items():
        torch.testing.assert_close(checkpointed.lora[key], tensor, rtol=1e-4, atol=1e-5)


def test_a_refine_before_the_first_generation_loads_the_checkpoint_as_forge_does(
    webui, memory, monkeypatch
):
    """Forge loads the checkpoint on the first generation; until then shared.sd_model is a
    placeholder, so a refine right after start-up said 'the checkpoint is not SDXL'."""
    sd_model = make_model()
    models = fb.install_sd_models(monkeypatch, sd_model)
    settings = WebUIRefineSettings(steps=1, resolution=32, jitters=0)
    unet = sd_model.forge_objects_original.unet.model.diffusion_model
    identity = fb.kohya_lora_for(unet, rank=8, alpha=4.0, seed=2)
    result = refine_host.refine_in_webui(models.sd_model, identity, photos(), settings)
    assert result.steps_done == 1 and models.loads == 1
    refine_host.refine_in_webui(models.sd_model, identity, photos(), settings)
    assert models.loads == 1  # loaded once, as generations share it
