"""The kohya training kit: everything ``sdxl_train_network.py`` needs to refine an identity.

Written into one folder: the identity LoRA with sd-scripts' SDXL key names (SGM-style
``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``: sd-scripts loads
``--network_weights`` with ``strict=False``, so any other name silently trains from zero), the
face crops with captions, their loss masks, ``dataset.toml`` and the authors' recipe as
``train.sh`` / ``train.bat``.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.export import export_lora
from hyperlora_ext.facts import TRIGGER_WORDS
from hyperlora_ext.lora_format import LORA_PARTS, sdxl_attention_modules, to_sgm_name
from hyperlora_ext.names import check_name
from hyperlora_ext.refine.crops import FacePhoto, make_crops

CAPTION = f"{TRIGGER_WORDS}, a photo of a person"
BASE_PLACEHOLDER = "PATH/TO/SDXL_CHECKPOINT.safetensors"
MAX_REPEATS = 4  # the heaviest photo is repeated this often per epoch
LORA_SUFFIXES = ("lora_down.weight", "lora_up.weight", "alpha")


def sd_scripts_layer_names() -> set[str]:
    """The 560 layer names sd-scripts' SDXL LoRA network gives HyperLoRA's target Linears."""
    return {f"{m}_{part}" for m in sdxl_attention_modules("sgm") for part in LORA_PARTS}


def to_sd_scripts_keys(lora: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``lora`` with SGM-style keys, fp32 matrices and 0-d fp32 alphas; refuses unknown layers.

    A key sd-scripts would not load is an error here rather than a silent no-load there.
    """
    known = sd_scripts_layer_names()
    out: dict[str, torch.Tensor] = {}
    for key, value in lora.items():
        layer, _, suffix = to_sgm_name(key).partition(".")
        if layer not in known or suffix not in LORA_SUFFIXES:
            raise HyperLoRAError(
                f"the LoRA key {key!r} is not one of HyperLoRA's SDXL attention layers; "
                "sd-scripts would silently ignore it (is this an identity LoRA?)"
            )
        tensor = value.detach().to("cpu", torch.float32)
        out[f"{layer}.{suffix}"] = tensor.reshape(()) if suffix == "alpha" else tensor.contiguous()
    return out


@dataclass(frozen=True)
class KitSettings:
    resolution: int = 768
    jitters: int = 2  # extra scale/shift variants per photo
    steps: int = 50
    learning_rate: float = 1e-4
    batch_size: int = 4
    seed: int = 0
    base_checkpoint: str = ""  # the SDXL checkpoint to train on (RealVisXL in the recipe)


@dataclass(frozen=True)
class Kit:
    folder: Path
    lora: Path
    dataset: Path
    command: list[str]
    images: int


def recipe_command(folder: Path, name: str, settings: KitSettings) -> list[str]:
    """The authors' recipe as an ``accelerate launch`` argument list (paths inside ``folder``)."""
    return [
        "accelerate", "launch", "sdxl_train_network.py",
        "--pretrained_model_name_or_path", settings.base_checkpoint or BASE_PLACEHOLDER,
        "--dataset_config", str(folder / "dataset.toml"),
        "--output_dir", str(folder / "output"),
        "--output_name", f"{name}-refined",
        "--save_model_as", "safetensors",
        "--network_module", "networks.lora",
        "--network_weights", str(folder / f"{name}.safetensors"),
        "--dim_from_weights",
        "--network_train_unet_only",
        "--learning_rate", f"{settings.learning_rate:g}",
        "--optimizer_type", "AdamW",
        "--lr_scheduler", "constant",
        "--train_batch_size", str(settings.batch_size),
        "--max_train_steps", str(settings.steps),
        "--resolution", str(settings.resolution),
        "--seed", str(settings.seed),
        "--clip_skip", "2",
        "--cache_latents",
        "--cache_text_encoder_outputs",
        "--gradient_checkpointing",
        "--mixed_precision", "bf16",
        "--sdpa",
        "--masked_loss",
    ]  # fmt: skip


def write_kit(
    folder: str | Path,
    name: str,
    lora: dict[str, torch.Tensor],
    photos: list[FacePhoto],
    settings: KitSettings | None = None,
    *,
    overwrite: bool = False,
) -> Kit:
    """Write the kit for identity ``name`` into ``folder`` (created; must be empty or new)."""
    settings = settings or KitSettings()
    name = check_name(name, "identity name")
    folder = Path(folder).resolve()
    if not photos:
        raise HyperLoRAError("the training kit needs at least one photo with a face")
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise HyperLoRAError(f"{folder} is not empty; choose a new folder or allow overwriting")
    keys = to_sd_scripts_keys(lora)  # checked before anything is written
    path = export_lora(keys, folder, name, model="hyperlora", photos=len(photos),
                       overwrite=overwrite)  # fmt: skip
    top = max(p.weight for p in photos)
    subsets, images = [], 0
    for index, photo in enumerate(photos, 1):
        stem = f"photo{index:02d}"
        crops = make_crops(photo, settings.resolution, settings.jitters, settings.seed)
        for sub in ("img", "mask"):
            (folder / "data" / stem / sub).mkdir(parents=True, exist_ok=True)
        for j, crop in enumerate(crops):
            base = folder / "data" / stem
            crop.image.save(base / "img" / f"{stem}_{j}.png")
            (base / "img" / f"{stem}_{j}.txt").write_text(CAPTION, "utf-8")
            crop.mask.save(base / "mask" / f"{stem}_{j}.png")
        images += len(crops)
        repeats = max(1, round(MAX_REPEATS * photo.weight / top))
        subsets.append((folder / "data" / stem, repeats))
    dataset = folder / "dataset.toml"
    dataset.write_text(dataset_toml(subsets, settings), "utf-8")
    command = recipe_command(folder, name, settings)
    (folder / "train.sh").write_text("#!/bin/sh\n" + shlex.join(command) + "\n", "utf-8")
    (folder / "train.bat").write_text(subprocess.list2cmdline(command) + "\r\n", "utf-8")
    return Kit(folder, path, dataset, command, images)


def dataset_toml(subsets: list[tuple[Path, int]], settings: KitSettings) -> str:
    """sd-scripts' dataset config: one subset per photo, its weight as ``num_repeats``."""
    lines = [
        "[general]",
        'caption_extension = ".txt"',
        "shuffle_caption = false",
        "",
        "[[datasets]]",
        f"resolution = {settings.resolution}",
        f"batch_size = {settings.batch_size}",
        "enable_bucket = false",
    ]
    for path, repeats in subsets:
        lines += [
            "",
            "  [[datasets.subsets]]",
            f"  image_dir = {toml_string(path / 'img')}",
            f"  conditioning_data_dir = {toml_string(path / 'mask')}",
            f"  num_repeats = {repeats}",
        ]
    return "\n".join(lines) + "\n"


def toml_string(path: Path) -> str:
    """A TOML basic string (Windows back-slashes and quotes escaped)."""
    text = str(path).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
