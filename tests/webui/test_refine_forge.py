"""Refine's Forge 2 host on the Forge double: a clean UNet (no merged LoRA), refusals."""

from __future__ import annotations

import pytest
import torch

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.refine.lora_path import find_layers
from hyperlora_ext.webui import refine_host
from tests.webui.fake_webui import forge_backend as fb


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


def test_inference_tensor_weights_are_a_clear_refusal(memory):
    """Forge 2 on a CPU loads the UNet under inference mode: autograd cannot train around it."""
    sd_model = make_model()
    unet = sd_model.forge_objects_original.unet.model.diffusion_model
    with torch.inference_mode():
        frozen = {name: p.detach().clone() for name, p in unet.named_parameters()}
    for name, value in frozen.items():
        module_path, _, attr = name.rpartition(".")
        setattr(unet.get_submodule(module_path), attr, torch.nn.Parameter(value, False))
    with pytest.raises(HyperLoRAError, match=r"inference tensors.*training kit"):
        refine_host.refine_model(sd_model, 768)
