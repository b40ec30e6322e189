"""Which WebUI are we running in, which adapter patches its UNet, and can this model take it."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.webui.adapter import ApplyReport, HostAdapter

__all__ = [
    "ApplyReport",
    "HostAdapter",
    "detect_host",
    "free_vram_for_encoders",
    "get_adapter",
    "identity_options",
    "list_models",
    "model_roots",
    "pipeline",
    "pipeline_config",
    "predict",
    "refresh_pipeline",
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
    """HyperLoRA's model folders: the Settings override, else ``--hyperlora-models-dir``, else the
    WebUI's models folder (``<models>/hyper_lora`` ...); ``--hyperlora-insightface-dir`` applies
    in every case."""
    import argparse

    from modules import paths, shared

    from hyperlora_ext.webui import settings
    from hyperlora_ext.webui.cmd_opts import roots_from_cmd_opts

    options = getattr(shared, "cmd_opts", None) or argparse.Namespace()
    override = settings.current().models_dir
    if override:
        options = argparse.Namespace(**{**vars(options), "hyperlora_models_dir": override})
    return roots_from_cmd_opts(options, paths.models_path)


@dataclass(frozen=True)
class PipelineConfig:
    """Everything the process-wide identity pipeline is built from."""

    roots: Any
    device: str
    face_device: str
    settings: tuple  # settings.Settings.pipeline_fingerprint()
    kwargs: dict = field(compare=False, hash=False)


_configured: tuple[PipelineConfig, Any] | None = None  # (config, the pipeline built from it)


def pipeline_config() -> PipelineConfig:
    from modules import shared

    from hyperlora_ext.webui import settings
    from hyperlora_ext.webui.cmd_opts import encoder_device, face_device

    cmd = getattr(shared, "cmd_opts", None)
    values = settings.current()
    device = encoder_device(cmd)
    if device == "auto":
        from modules import devices

        device = str(devices.get_device_for("hyperlora"))
    faces = face_device(cmd)
    return PipelineConfig(
        roots=model_roots(),
        device=device,
        face_device=faces,
        settings=values.pipeline_fingerprint(),
        kwargs={
            "device": device,
            "dtype": values.torch_dtype,
            "keep_on_device": values.keep_on_device,
            "cache_entries": values.cache_entries,
            "cache_bytes": values.cache_mb * settings.MB,
            "face_device": faces,
        },
    )


def pipeline() -> Any:
    """The process-wide identity pipeline, rebuilt when its settings or options changed.

    A pipeline set up by an explicit ``identity.configure_pipeline`` call is adopted as is until
    the next change.
    """
    global _configured
    config = pipeline_config()
    current = _current_pipeline()
    if current is not None and (_configured is None or _configured[1] is not current):
        _configured = (config, current)
    if current is not None and _configured is not None and _configured[0] == config:
        return current
    from hyperlora_ext import identity

    built = identity.configure_pipeline(config.roots, **config.kwargs)
    _configured = (config, built)
    return built


def refresh_pipeline() -> None:
    """Settings ``onchange``: rebuild a pipeline already in use now (unloading its models)."""
    if _configured is not None:
        pipeline()


def _current_pipeline() -> Any:
    from hyperlora_ext import identity

    try:
        return identity.get_pipeline()
    except HyperLoRAError:
        return None


def free_vram_for_encoders(p: Any) -> None:
    """Make room on the GPU before the encoders run there (called on a cache miss only).

    A1111 keeps the checkpoint on the GPU unless ``--medvram``/``--lowvram``; then its parts are
    evicted. Forge 2 manages memory itself: unload its models, it reloads them for sampling.
    """
    if _configured is not None and _configured[0].device == "cpu":
        return
    if detect_host(p) == "forge":
        from hyperlora_ext.webui import forge

        # Forge 1 / reForge have no backend package: ldm_patched frees memory when it loads.
        with contextlib.suppress(ImportError):
            forge.free_vram()
        return
    from modules import lowvram

    if lowvram.is_enabled(p.sd_model):
        lowvram.send_everything_to_cpu()


def list_models() -> list[str]:
    from hyperlora_ext.models import list_hyperlora_models

    return list_hyperlora_models(model_roots())


def predict(
    args: Any,
    before_compute: Callable[[], None] | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    images: Any = None,
    weights: Any = None,
) -> Any:
    """Run (or reuse from cache) the identity pipeline for a :class:`HyperLoRAArgs`.

    ``images`` / ``weights`` replace ``args.images`` / ``args.photo_weights`` (e.g. a slider's
    photos). ``progress`` gets each stage's name; it may raise to stop the encoding.
    """
    if images is None:
        images, weights = args.images, args.photo_weights
    return pipeline().predict(
        list(images),
        identity_options(args),
        before_compute=before_compute,
        progress=progress,
        weights=list(weights) if weights else None,
    )


def identity_options(args: Any) -> Any:
    """The pipeline's options for a :class:`HyperLoRAArgs`."""
    from hyperlora_ext.identity import IdentityOptions

    return IdentityOptions(
        model=args.model,
        face_choice=args.face,
        face_index=args.face_index,
        remove_background=args.remove_background,
        grayscale=args.grayscale,
    )


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
