"""Write an identity LoRA as an ordinary kohya LoRA file the WebUIs, ComfyUI and kohya tools load.

Beside ``NAME.safetensors`` it writes ``NAME.json`` (the WebUI's Lora-card user metadata:
description, activation text, preferred weight, SD version) and ``NAME.preview.png``
(the card picture).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from .errors import ExportExistsError, FileExistsRefusedError, HyperLoRAError
from .facts import RECOMMENDED_WEIGHT, TRIGGER_WORDS
from .files import write_atomically
from .lora_format import NameStyle, convert_key_style, lora_digest
from .names import check_name
from .wording import counted

SIDE_FILES = (".json", ".preview.png")  # written beside NAME.safetensors


def export_paths(folder: str | Path, name: str) -> list[Path]:
    """The files an export of ``name`` writes: the LoRA first, then its card and preview."""
    stem = check_name(name, "LoRA file name")
    folder = Path(folder)
    return [folder / f"{stem}{suffix}" for suffix in (".safetensors", *SIDE_FILES)]


def check_export_target(folder: str | Path, name: str, *, overwrite: bool = False) -> Path:
    """The LoRA path of an export; refuses an existing LoRA, card or preview unless overwriting.

    Cheap, so callers run it before the prediction instead of failing after it.
    """
    paths = export_paths(folder, name)
    taken = [p for p in paths if p.exists() or p.is_symlink()]
    if taken and not overwrite:
        raise ExportExistsError(
            f"{taken[0]} already exists; choose another name or allow overwriting"
        )
    parent = Path(folder)
    if parent.exists() and not parent.is_dir():
        raise HyperLoRAError(f"cannot write into {parent}: it is a file, not a folder")
    return paths[0]


def lora_metadata(lora: dict[str, torch.Tensor], *, name: str, model: str, photos: int) -> dict:
    """Kohya-style safetensors metadata (string values) that LoRA loaders and the Lora tab read."""
    down = next(t for k, t in lora.items() if k.endswith(".lora_down.weight"))
    alpha = next(t for k, t in lora.items() if k.endswith(".alpha"))
    description = (
        f"HyperLoRA identity from {counted(photos, 'photo')}, model {model}. Start the prompt "
        f"with '{TRIGGER_WORDS}, '; recommended weight {RECOMMENDED_WEIGHT}. Made for CLIP's "
        "penultimate layer, which A1111 and Forge use for SDXL by default (ComfyUI: CLIP Set "
        "Last Layer -2)."
    )
    return {
        "ss_base_model_version": "sdxl_base_v1-0",
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(down.shape[0]),
        "ss_network_alpha": str(float(alpha)),
        "ss_network_args": json.dumps({"unet_only": True}),
        "ss_output_name": name,
        "ss_training_comment": description,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": name,
        "modelspec.description": description,
        "modelspec.trigger_phrase": TRIGGER_WORDS,
        "hyperlora_model": model,
        "hyperlora_digest": lora_digest(lora),
    }


def card_metadata(description: str) -> dict:
    """The WebUI's per-LoRA user metadata (``NAME.json``), shown and used by the Lora tab."""
    return {
        "description": description,
        "sd version": "SDXL",
        "activation text": TRIGGER_WORDS,
        "preferred weight": RECOMMENDED_WEIGHT,
        "negative text": "",
        "notes": "Created with sd-webui-hyperlora.",
    }


def export_lora(
    lora: dict[str, torch.Tensor],
    folder: str | Path,
    name: str,
    *,
    model: str,
    photos: int,
    style: NameStyle | None = None,
    preview: Image.Image | None = None,
    overwrite: bool = False,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``folder/NAME.safetensors`` (+ ``.json`` card and ``.preview.png``); return its path.

    ``style`` rewrites the kohya names ("sgm" for kohya sd-scripts' SDXL naming), None keeps them.
    Matrices keep their own dtype unless ``dtype`` is given, so the file reproduces the live
    identity exactly (bf16 from a CPU prediction, fp16 from a GPU one); alphas stay float32.
    """
    from safetensors.torch import save_file

    target = check_export_target(folder, name, overwrite=overwrite)
    card_path, preview_path = export_paths(folder, name)[1:]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HyperLoRAError(f"cannot create the folder {target.parent} ({exc})") from exc
    tensors = {
        key: value.detach().to("cpu", _file_dtype(key, value, dtype)).contiguous()
        for key, value in convert_key_style(lora, style).items()
    }
    metadata = lora_metadata(tensors, name=target.stem, model=model, photos=photos)
    card = json.dumps(card_metadata(metadata["modelspec.description"]), indent=4)
    try:
        write_atomically(
            target, lambda tmp: save_file(tensors, tmp, metadata=metadata), overwrite=overwrite
        )
    except FileExistsRefusedError as exc:  # another writer claimed the name just now
        raise ExportExistsError(f"{exc}; choose another name or allow overwriting") from None
    except OSError as exc:
        raise HyperLoRAError(f"cannot write {target} ({exc})") from exc
    write_atomically(card_path, lambda tmp: Path(tmp).write_text(card, "utf-8"))
    if preview is not None:
        write_atomically(preview_path, lambda tmp: preview.convert("RGB").save(tmp, "PNG"))
    return target


def _file_dtype(key: str, value: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    return value.dtype if dtype is None or key.endswith(".alpha") else dtype
