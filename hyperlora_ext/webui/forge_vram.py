"""Forge's GPU memory for HyperLoRA's encoders: make room before encoding, or load the encoders
through Forge's memory management (Forge 2) so it evicts and reloads them like its own models."""

from __future__ import annotations

import torch


def free_vram() -> None:
    """Unload every model Forge holds on the GPU and empty the CUDA cache.

    For the pipeline to call before encoding on a small GPU when it does not use
    ``load_encoder``. Forge reloads the UNet at the next sampling (a few seconds).
    """
    from backend import memory_management

    memory_management.unload_all_models()
    memory_management.soft_empty_cache()


def load_encoder(module: torch.nn.Module) -> torch.device:
    """Put ``module`` on Forge's compute device through Forge's memory management.

    Forge evicts or offloads other models (the UNet) as needed and moves ``module`` back to the
    CPU when it needs the room later. Call before every use (Forge may have evicted it); returns
    the device to run on. Forge 2 only.
    """
    from backend import memory_management
    from backend.patcher.base import ModelPatcher

    # One patcher per module: Forge tells loaded models apart by patcher identity.
    patcher = module.__dict__.get("hyperlora_forge_patcher")
    if patcher is None:
        patcher = ModelPatcher(
            module,
            load_device=memory_management.get_torch_device(),
            offload_device=torch.device("cpu"),
        )
        module.__dict__["hyperlora_forge_patcher"] = patcher
    memory_management.load_model_gpu(patcher)
    device = patcher.load_device
    # Forge's low-VRAM path moves only layers with a .weight; loose tensors would stay behind.
    if any(t.device != device for t in module.parameters()):
        module.to(device)
    return device


def release_encoder(module: torch.nn.Module) -> None:
    """Take ``module`` out of Forge's loaded models (it goes back to the CPU), so that the next
    ``load_encoder`` loads it again and Forge never counts VRAM it no longer holds."""
    from backend import memory_management

    patcher = module.__dict__.get("hyperlora_forge_patcher")
    loaded = memory_management.current_loaded_models
    for entry in [e for e in loaded if getattr(e, "model", None) is patcher]:
        loaded.remove(entry)
    module.to("cpu")


class ForgePlacement:
    """The identity pipeline's encoders under Forge's memory management (Forge 2, GPU)."""

    load = staticmethod(load_encoder)
    release = staticmethod(release_encoder)
