"""Write an identity LoRA as an ordinary kohya LoRA file the WebUIs, ComfyUI and kohya tools load.

Beside ``NAME.safetensors`` it writes ``NAME.json`` (the WebUI's Lora-card user metadata:
description, activation text, preferred weight, SD version) and ``NAME.preview.png``
(the card picture).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import torch
from PIL import Image

from .args import TRIGGER_WORDS
from .errors import HyperLoRAError, InvalidNameError
from .lora_format import NameStyle, convert_key_style, lora_digest

RECOMMENDED_WEIGHT = 0.8
_UNSAFE_CHARS = re.compile(r"[^\w\- .()\[\]]+")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {
    f"{p}{i}" for p in ("com", "lpt") for i in range(10)
}


class ExportExistsError(HyperLoRAError):
    """The export target exists and overwriting was not requested."""


def sanitize_name(name: str) -> str:
    """Turn a user-given identity name into a safe file stem (no folders, no odd characters)."""
    stem = re.sub(r"\.{2,}", "_", _UNSAFE_CHARS.sub("_", name.strip()))
    stem = re.sub(r"_+", "_", stem).strip(" ._")[:100]
    if not stem or stem.lower() in _WINDOWS_RESERVED:
        raise InvalidNameError(
            f"{name!r} is not usable as a LoRA name: use letters, digits, spaces, '-', '_' or '.'"
        )
    return stem


def lora_metadata(lora: dict[str, torch.Tensor], *, name: str, model: str, photos: int) -> dict:
    """Kohya-style safetensors metadata (string values) that LoRA loaders and the Lora tab read."""
    down = next(t for k, t in lora.items() if k.endswith(".lora_down.weight"))
    alpha = next(t for k, t in lora.items() if k.endswith(".alpha"))
    description = (
        f"HyperLoRA identity from {photos} photo(s), model {model}. Start the prompt with "
        f"'{TRIGGER_WORDS}, '; recommended weight {RECOMMENDED_WEIGHT}; CLIP skip 2."
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

    stem = sanitize_name(name)
    folder = Path(folder)
    target = folder / f"{stem}.safetensors"
    if target.exists() and not overwrite:
        raise ExportExistsError(
            f"{target} already exists; choose another name or allow overwriting"
        )
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        key: value.detach().to("cpu", _file_dtype(key, value, dtype)).contiguous()
        for key, value in convert_key_style(lora, style).items()
    }
    metadata = lora_metadata(tensors, name=stem, model=model, photos=photos)
    _write_atomically(target, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    card = json.dumps(card_metadata(metadata["modelspec.description"]), indent=4)
    _write_atomically(folder / f"{stem}.json", lambda tmp: Path(tmp).write_text(card, "utf-8"))
    if preview is not None:
        _write_atomically(
            folder / f"{stem}.preview.png", lambda tmp: preview.convert("RGB").save(tmp, "PNG")
        )
    return target


def _file_dtype(key: str, value: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    return value.dtype if dtype is None or key.endswith(".alpha") else dtype


def _write_atomically(target: Path, write) -> None:
    """Write through a temporary file in the same folder so a failure never leaves half a file."""
    handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
