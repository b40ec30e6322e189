"""Which WebUI are we running in, which adapter patches its UNet, and can this model take it."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from dataclasses import dataclass, field
from typing import Any

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.facts import ERROR_LABEL
from hyperlora_ext.webui.adapter import ApplyReport, HostAdapter, unsupported_reason

__all__ = [
    "ApplyReport",
    "HostAdapter",
    "default_model",
    "detect_host",
    "free_vram_for_encoders",
    "get_adapter",
    "identity_store",
    "list_models",
    "model_roots",
    "pipeline",
    "pipeline_config",
    "preload",
    "refresh_pipeline",
    "release",
    "services",
    "unsupported_reason",
]

_adapters: dict[str, HostAdapter] = {}


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
            "free_after_use": values.free_encoders,
            "placement": _placement(device),
        },
    )


def _placement(device: str) -> Any:
    """Forge 2 with a GPU: the encoders are loaded through Forge's memory management."""
    if device == "cpu" or not _module_exists("modules_forge"):
        return None
    from hyperlora_ext.webui import forge, forge_vram

    return forge_vram.ForgePlacement() if forge.detect_generation() == "forge2" else None


def pipeline() -> Any:
    """The process-wide identity pipeline, rebuilt when its settings or options changed."""
    from hyperlora_ext.identity import IdentityPipeline
    from hyperlora_ext.webui.services import shared_pipeline

    config = pipeline_config()
    return shared_pipeline(config, lambda: IdentityPipeline(config.roots, **config.kwargs))


def refresh_pipeline() -> None:
    """Settings ``onchange``: rebuild a pipeline already in use now (unloading its models)."""
    from hyperlora_ext.webui.services import current_pipeline

    if current_pipeline() is not None:
        pipeline()


def services() -> Any:
    """The services object of the running WebUI (``webui.services.Services``)."""
    import hyperlora_ext
    from hyperlora_ext.webui import settings
    from hyperlora_ext.webui.services import Services

    try:
        from modules.call_queue import queue_lock
    except ImportError:  # pragma: no cover - every supported WebUI has it
        queue_lock = contextlib.nullcontext()
    return Services(
        roots=model_roots,
        pipeline=pipeline,
        store=identity_store,
        settings=settings.current,
        lock=queue_lock,
        version=getattr(hyperlora_ext, "__version__", ""),
        preload=preload,
    )


def release() -> None:
    """``on_script_unloaded`` (Reload UI): take any identity out of the UNet and free the
    pipeline, so the reloaded extension starts clean. Failures go to the console."""
    import traceback

    from hyperlora_ext.webui.services import release as release_pipeline

    for adapter in list(_adapters.values()):
        try:
            adapter.restore(None)
        except Exception:
            print(f"{ERROR_LABEL}: restoring the checkpoint on unload failed")
            traceback.print_exc()
    _adapters.clear()
    release_pipeline()


def identity_store() -> Any:
    """The WebUI's saved identities (``<Lora folder>/hyperlora``)."""
    from modules import shared

    from hyperlora_ext.store import get_store

    return get_store(shared.cmd_opts.lora_dir)


def free_vram_for_encoders(p: Any) -> None:
    """Make room on the GPU before the encoders run there (called on a cache miss only).

    A1111 keeps the checkpoint on the GPU unless ``--medvram``/``--lowvram``; then its parts are
    evicted. Forge 2 loads the encoders through its memory management, which frees only the room
    they need; Forge 1 / reForge: unload its models, it reloads them for sampling.
    """
    from hyperlora_ext.webui.services import current_pipeline

    current = current_pipeline()
    if current is not None and current.device.type == "cpu":
        return
    if current is not None and current.placement is not None:
        return  # Forge 2 makes room for the encoders when they load: nothing to evict up front
    if detect_host(p) == "forge":
        from hyperlora_ext.webui import forge_vram

        # Forge 1 / reForge have no backend package: ldm_patched frees memory when it loads.
        with contextlib.suppress(ImportError):
            forge_vram.free_vram()
        return
    from modules import lowvram

    if lowvram.is_enabled(p.sd_model):
        lowvram.send_everything_to_cpu()


def list_models() -> list[str]:
    from hyperlora_ext.models import list_hyperlora_models

    return list_hyperlora_models(model_roots())


def default_model() -> str:
    """The model used when none is chosen: fidelity when installed (see default_hyperlora)."""
    from hyperlora_ext.models import default_hyperlora

    return default_hyperlora(model_roots())


def preload(model: str = "") -> None:
    """Start loading the encoders of ``model`` in the background (an unknown or empty one: the
    default model, fidelity when installed, the first in ``list_models``' order).

    Nothing happens when no model is installed (the first-run checklist says what is missing).
    """
    from hyperlora_ext.identity import IdentityOptions

    models = list_models()
    if model not in models:
        model = models[0] if models else ""
    if model:
        pipeline().preload(IdentityOptions(model))


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
