"""CLIP ViT-L/14 vision encoder returning ``hidden_states[-2]`` (docs/reference-pipeline.md).

Accepted layouts:
* a folder with ``config.json`` + ``model.safetensors`` of the full openai/clip-vit-large-patch14
  (CLIPConfig, text tower included): only the vision tower's weights are read;
* a folder with a CLIPVisionConfig (``CLIPVisionModel`` / ``...WithProjection``);
* a single ``.safetensors`` file of the vision tower (``vision_model.*`` keys, as WebUI users
  keep in ``models/clip_vision/``): the config is built in code with the ViT-L/14 settings, sizes
  taken from the tensor shapes.

HyperLoRA only needs the output of the second-to-last encoder layer: the forward pass is our own
``ClipVisionTower`` (clip_vision_tower.py), which stops there (the last layer's weights are never
read) and is built straight from the file's tensors. config.json is parsed here, as transformers'
``CLIPVisionConfig`` reads it; transformers is not imported (tests compare against it). Nothing
here contacts a model hub.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..engine.checkpoint import open_safetensors
from ..errors import CheckpointError, ModelNotFoundError
from ..files import read_json
from .clip_vision_tower import ACTIVATIONS, ClipVisionTower, TowerConfig, tower_shapes

REQUIRED_ENCODER = "CLIP ViT-L/14 vision encoder (openai/clip-vit-large-patch14)"
VIT_L14 = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    projection_dim=768,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)
# part of every CLIP vision model (checked like the rest of the file) but after hidden_states[-2]
_UNUSED = ("post_layernorm.weight", "post_layernorm.bias")
_KNOWN_WIDTHS = {768: "ViT-B", 1024: "ViT-L/14", 1280: "ViT-H/14", 1664: "ViT-bigG/14"}
_PREFIX = "vision_model."
_TOWER_PARTS = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")
_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.")
_PATCH = "embeddings.patch_embedding.weight"


def heads_for_width(hidden_size: int) -> int:
    """Attention heads of a CLIP vision tower of this width: 64-wide heads (ViT-L/14: 16 heads).

    Test-size towers narrower than 64 use 16-wide heads.
    """
    return hidden_size // 64 if hidden_size >= 64 else max(1, hidden_size // 16)


class ClipVisionEncoder:
    """A loaded CLIP vision tower; ``encode`` gives the tokens HyperLoRA's resampler reads."""

    def __init__(self, model: ClipVisionTower, source: Path):
        self.model = model
        self.source = source

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, 224, 224) CLIP-normalised pixels -> (N, 257, hidden) ``hidden_states[-2]``."""
        pixels = pixel_values.to(self.device, self.dtype)
        return self.model(pixels)

    def to(self, device: torch.device | str) -> ClipVisionEncoder:
        self.model.to(device)
        return self


def load_clip_vision(
    path: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    expected_hidden_size: int = 1024,
) -> ClipVisionEncoder:
    """Load the CLIP vision tower from a HuggingFace folder or a single safetensors file."""
    path = Path(path)
    if path.is_dir():
        weights_path = path / "model.safetensors"
        if not weights_path.is_file():
            raise ModelNotFoundError(
                f"{weights_path}: file is missing (only safetensors weights are loaded, never "
                f"pickled .bin files); download model.safetensors of the {REQUIRED_ENCODER}"
            )
        config = _folder_config(path)
    elif path.is_file() and path.suffix == ".safetensors":
        weights_path, config = path, None
    else:
        raise ModelNotFoundError(
            f"{path}: no CLIP vision encoder here; expected a folder with config.json and "
            f"model.safetensors, or a .safetensors file, of the {REQUIRED_ENCODER}"
        )
    with open_safetensors(weights_path) as handle:
        shapes = _vision_shapes(weights_path, handle)
        if config is None:
            config = _config_from_shapes(weights_path, shapes)
        _check_width(path, config.hidden_size, expected_hidden_size)
        _check_width(path, shapes[_PATCH][0], expected_hidden_size)
        model = _build(config, handle, shapes, weights_path, torch.device(device), dtype)
    return ClipVisionEncoder(model, path)


CLIP_MODEL_TYPES = ("clip", "clip_vision_model")


def _folder_config(folder: Path) -> TowerConfig:
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(
            f"{folder}: config.json is missing; download the {REQUIRED_ENCODER} folder "
            "(config.json + model.safetensors)"
        )
    path = folder / "config.json"
    try:
        raw = read_json(path)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{error}; download the {REQUIRED_ENCODER} folder again") from error
    kind = raw.get("model_type") if isinstance(raw, dict) else None
    if kind not in CLIP_MODEL_TYPES:
        raise CheckpointError(
            f"{path} describes a model of type {kind!r}, not CLIP: this folder holds another "
            f"model. Put the {REQUIRED_ENCODER} files (config.json + model.safetensors) there."
        )
    values = raw.get("vision_config") if kind == "clip" else raw  # a CLIPConfig nests it
    if not isinstance(values, dict):
        raise CheckpointError(f"{path}: not a usable CLIP config (vision_config is {values!r})")
    return _tower_config(path, values)


def _tower_config(path: Path, values: Mapping[str, Any]) -> TowerConfig:
    """Checked settings; an absent field takes CLIPVisionConfig's default, as in transformers."""
    fields = dataclasses.fields(TowerConfig)
    config = TowerConfig(**{f.name: values[f.name] for f in fields if f.name in values})
    for field in fields:
        value = getattr(config, field.name)
        if not _usable(value, field.default):
            raise CheckpointError(f"{path}: not a usable CLIP config ({field.name} is {value!r})")
    if config.hidden_act not in ACTIVATIONS:
        raise CheckpointError(
            f"{path}: CLIP activation {config.hidden_act!r} is not supported (the "
            f"{REQUIRED_ENCODER} uses 'quick_gelu'; 'gelu' works too)"
        )
    if config.hidden_size % config.num_attention_heads:
        raise CheckpointError(
            f"{path}: not a usable CLIP config (hidden_size {config.hidden_size} is not a "
            f"multiple of num_attention_heads {config.num_attention_heads})"
        )
    return config


def _usable(value: Any, default: Any) -> bool:
    """A string where the default is one, else a positive number (an integer unless a float)."""
    if isinstance(default, str):
        return isinstance(value, str)
    kinds = (int, float) if isinstance(default, float) else (int,)
    return isinstance(value, kinds) and not isinstance(value, bool) and value > 0


def _tower_keys(handle: Any) -> dict[str, str]:
    """Vision-tower keys relative to the tower (``embeddings.*``, ``encoder.*``) -> file keys."""
    names = {}
    keys = handle.keys()  # a safe_open handle is not iterable
    for key in keys:
        name = key.removeprefix(_PREFIX)
        if name.startswith(_TOWER_PARTS) and not name.endswith("position_ids"):
            names[name] = key
    return names


def _vision_shapes(path: Path, handle: Any) -> dict[str, tuple[int, ...]]:
    """Tower-relative vision keys -> shapes, from the header."""
    shapes = {
        name: tuple(handle.get_slice(key).get_shape()) for name, key in _tower_keys(handle).items()
    }
    if _PATCH not in shapes:
        raise CheckpointError(
            f"{path}: no CLIP vision-tower weights (transformers 'vision_model.*' keys) found; "
            f"HyperLoRA needs the {REQUIRED_ENCODER} in transformers format"
        )
    return shapes


def _config_from_shapes(path: Path, shapes: dict[str, tuple[int, ...]]) -> TowerConfig:
    """ViT-L/14 settings with the sizes a single vision-tower file reveals."""
    hidden, _, patch, _ = shapes[_PATCH]
    positions = shapes.get("embeddings.position_embedding.weight", (0,))[0]
    layers = {int(m[1]) for k in shapes if (m := _LAYER.match(k))}
    fc1 = shapes.get("encoder.layers.0.mlp.fc1.weight")
    if not layers or fc1 is None or positions < 2:
        raise CheckpointError(f"{path}: incomplete CLIP vision tower (no encoder layers found)")
    grid = round((positions - 1) ** 0.5)
    settings = VIT_L14 | dict(
        hidden_size=hidden,
        intermediate_size=fc1[0],
        num_hidden_layers=max(layers) + 1,
        num_attention_heads=heads_for_width(hidden),
        patch_size=patch,
        image_size=grid * patch,
    )
    return _tower_config(path, settings)


def _check_width(path: Path, hidden: int, expected: int) -> None:
    if hidden != expected:
        kind = _KNOWN_WIDTHS.get(hidden, "an unknown CLIP")
        raise CheckpointError(
            f"{path}: this CLIP vision encoder has hidden size {hidden} ({kind}); HyperLoRA needs "
            f"the {REQUIRED_ENCODER}, hidden size {expected}"
        )


def _build(
    config: TowerConfig,
    handle: Any,
    shapes: dict[str, tuple[int, ...]],
    path: Path,
    device: torch.device,
    dtype: torch.dtype,
) -> ClipVisionTower:
    """The tower, its tensors straight from the file (views of it when dtype and device match)."""
    used = tower_shapes(config)
    hidden = (config.hidden_size,)
    expected = used | {name: hidden for name in _UNUSED}
    dropped = f"encoder.layers.{config.num_hidden_layers - 1}."  # hidden_states[-1]: not needed
    problems = [f"missing key {k!r}" for k in expected if k not in shapes]
    problems += [
        f"key {k!r}: expected shape {list(s)}, found {list(shapes[k])}"
        for k, s in expected.items()
        if k in shapes and shapes[k] != s
    ]
    problems += [
        f"unexpected key {k!r}" for k in shapes if k not in expected and not k.startswith(dropped)
    ]
    if problems:
        raise CheckpointError(f"{path} is not a {REQUIRED_ENCODER} ({'; '.join(problems[:5])})")
    names = _tower_keys(handle)
    weights = {k: handle.get_tensor(names[k]).to(device=device, dtype=dtype) for k in used}
    return ClipVisionTower(config, weights).eval()
