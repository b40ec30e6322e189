"""Which WebUI are we running in, which adapter patches its UNet, and can this model take it."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.webui.adapter import ApplyReport, HostAdapter

__all__ = [
    "ApplyReport",
    "HostAdapter",
    "detect_host",
    "get_adapter",
    "list_models",
    "model_roots",
    "pipeline",
    "predict",
    "unsupported_reason",
]

_adapters: dict[str, HostAdapter] = {}

SDXL_BASE_CHANNELS = 320


def detect_host(p: Any = None) -> str:
    """``"forge"`` or ``"a1111"``; raises when neither LoRA system is available."""
    if p is not None and hasattr(getattr(p, "sd_model", None), "forge_objects"):
        return "forge"
    if _module_exists("modules_forge"):
        return "forge"
    if hasattr(sys.modules.get("networks"), "loaded_networks"):
        return "a1111"
    raise HyperLoRAError(
        "HyperLoRA needs the WebUI's builtin Lora extension (extensions-builtin/Lora), which is "
        "not loaded: enable it in Settings > Extensions and restart the WebUI."
    )


def get_adapter(p: Any = None) -> HostAdapter:
    """The process-wide adapter for the running host (adapters keep no per-job state)."""
    host = detect_host(p)
    if host not in _adapters:
        if host == "forge":
            from hyperlora_ext.webui.forge import ForgeAdapter

            _adapters[host] = ForgeAdapter()
        else:
            from hyperlora_ext.webui.a1111 import A1111Adapter

            _adapters[host] = A1111Adapter()
    return _adapters[host]


def unsupported_reason(sd_model: Any) -> str | None:
    """Why HyperLoRA cannot patch this checkpoint, or None for an SDXL base model."""
    if sd_model is None:
        return "no checkpoint is loaded"
    if getattr(sd_model, "is_sd3", False):
        return "the checkpoint is SD3; HyperLoRA needs an SDXL base checkpoint"
    if not getattr(sd_model, "is_sdxl", False):
        family = "SD1.x" if getattr(sd_model, "is_sd1", False) else None
        family = family or ("SD2.x" if getattr(sd_model, "is_sd2", False) else "not SDXL")
        return f"the checkpoint is {family}; HyperLoRA needs an SDXL base checkpoint"
    if getattr(sd_model, "is_ssd", False):
        return "the checkpoint is SSD-1B (a pruned SDXL); HyperLoRA needs the full SDXL UNet"
    if _is_refiner(sd_model):
        return "the checkpoint is the SDXL refiner; HyperLoRA needs an SDXL base checkpoint"
    return None


def _is_refiner(sd_model: Any) -> bool:
    if "refiner" in type(sd_model).__name__.lower():
        return True
    unet = getattr(getattr(sd_model, "model", None), "diffusion_model", None)
    channels = getattr(unet, "model_channels", SDXL_BASE_CHANNELS)
    return channels != SDXL_BASE_CHANNELS


def model_roots() -> Any:
    """HyperLoRA's model folders under the WebUI's models folder (``<models>/hyper_lora`` ...)."""
    from pathlib import Path

    from modules import paths

    from hyperlora_ext.models import ModelRoots

    return ModelRoots.from_models_dir(Path(paths.models_path))


def pipeline() -> Any:
    """The process-wide identity pipeline, configured for the WebUI on first use."""
    from hyperlora_ext import identity

    try:
        return identity.get_pipeline()
    except HyperLoRAError:  # not configured yet
        from modules import devices

        device = str(devices.get_device_for("hyperlora"))
        return identity.configure_pipeline(model_roots(), device=device)


def list_models() -> list[str]:
    from hyperlora_ext.models import list_hyperlora_models

    return list_hyperlora_models(model_roots())


def predict(args: Any) -> Any:
    """Run (or reuse from cache) the identity pipeline for a :class:`HyperLoRAArgs`."""
    from hyperlora_ext.identity import IdentityOptions

    options = IdentityOptions(
        model=args.model,
        face_choice=args.face,
        face_index=args.face_index,
        remove_background=args.remove_background,
        grayscale=args.grayscale,
    )
    return pipeline().predict(list(args.images), options)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
