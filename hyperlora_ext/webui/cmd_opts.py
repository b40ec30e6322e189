"""Turns the ``--hyperlora-*`` options of ``preload.py`` into model roots and device choices.

Pure functions over an argparse namespace (``shared.cmd_opts``); options that are missing, e.g. when
preload.py did not run, count as not given.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hyperlora_ext.facts import DEVICES

if TYPE_CHECKING:
    from hyperlora_ext.models import ModelRoots

CPU_TASKS = {"all", "hyperlora"}  # A1111 --use-cpu task names that send HyperLoRA to the CPU


def resolve_models_dir(path: str | Path) -> Path:
    """The models folder (holding ``hyper_lora/`` and ``insightface/``) for what a user gave: that
    folder itself, its ``hyper_lora/`` child, or the root of a ComfyUI install."""
    from hyperlora_ext.models import user_path

    folder = user_path(path)
    if _is_models_dir(folder):
        return folder
    if folder.name == "hyper_lora" and _is_models_dir(folder.parent):
        return folder.parent
    if _is_models_dir(folder / "models"):
        return folder / "models"
    return folder  # nothing there yet: downloads go here


def _is_models_dir(folder: Path) -> bool:
    return any(
        (folder / child).is_dir()
        for child in ("hyper_lora/hyper_lora", "hyper_lora/clip_vit", "insightface")
    )


def roots_from_cmd_opts(cmd_opts: Any, models_path: str | Path) -> ModelRoots:
    """ModelRoots from ``--hyperlora-models-dir`` (default ``models_path``, the WebUI's models
    folder) and ``--hyperlora-insightface-dir``."""
    from hyperlora_ext.models import ModelRoots, user_path

    models_dir = getattr(cmd_opts, "hyperlora_models_dir", None) or models_path
    roots = ModelRoots.from_models_dir(resolve_models_dir(models_dir))
    insightface_dir = getattr(cmd_opts, "hyperlora_insightface_dir", None)
    if insightface_dir:
        roots = dataclasses.replace(roots, insightface=user_path(insightface_dir))
    return roots


def face_device(cmd_opts: Any) -> str:
    """``auto``, ``cpu`` or ``cuda`` for face analysis."""
    return _device(cmd_opts, "hyperlora_face_device")


def encoder_device(cmd_opts: Any) -> str:
    """``auto``, ``cpu`` or ``cuda`` for the CLIP encoder and HyperLoRA networks."""
    return _device(cmd_opts, "hyperlora_device")


def _device(cmd_opts: Any, dest: str) -> str:
    value = getattr(cmd_opts, dest, None) or "auto"
    if value not in DEVICES:
        value = "auto"
    use_cpu = {str(task).lower() for task in getattr(cmd_opts, "use_cpu", None) or ()}
    if value == "auto" and use_cpu & CPU_TASKS:
        return "cpu"
    return value
