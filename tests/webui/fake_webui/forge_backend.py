"""Test double of the Forge 2 (``backend/``) surface the HyperLoRA Forge adapter touches.

Written from docs/webui-integration.md and from reading Forge's
source for facts (HEAD dfdcbab6, version 2.0.1v1.10.1); no Forge code is copied. What is mirrored:

- ``backend.patcher.lora``: ``model_lora_keys_unet(model, key_map={})`` (mutable default, kohya
  SGM names, generic names and diffusers names derived from the UNet config), ``load_lora(lora,
  to_load) -> (patch_dict, remaining)`` (kohya ``lora_up/lora_down/alpha`` with ``alpha.item()``),
  ``merge_lora_to_weight`` (fp32 merge, strength * alpha / rank, cast back; a shape mismatch is not
  detected up front, Forge tries to pad and usually fails) and ``LoraLoader`` (one per torch model,
  shared by all clones; re-merges only when ``str(list(lora_patches))`` changes; reinstalls the
  original Parameters before merging; online patches go to ``layer.forge_online_loras``).
- ``backend.patcher.base.ModelPatcher`` / ``backend.patcher.unet.UnetPatcher``: ``clone()`` (shared
  torch model, shallow copy of ``lora_patches``), keyword-only ``add_patches`` returning the set of
  accepted keys, ``refresh_loras``, ``has_online_lora``.
- ``backend.memory_management``: ``load_models_gpu`` (an already loaded patcher is not reloaded,
  loading another clone of the same model unloads the old one, loading refreshes the LoRAs),
  ``unload_all_models`` (unloading does not restore merged weights), ``soft_empty_cache``.
- ``modules_forge.forge_version.version`` and the ``ForgeDiffusionEngine`` fields
  (``forge_objects`` with ``shallow_copy()``, ``forge_objects_original``,
  ``forge_objects_after_applying_lora``, ``current_lora_hash``).
- Processing order (``modules/processing.py``): each batch starts from ``forge_objects_original``,
  extra networks are activated, ``forge_objects`` is reset from ``after_applying_lora`` after
  activation and again right before every ``process_before_every_sampling``; hires fix calls that
  hook twice with a reset in between; sampling loads the UNet through ``load_models_gpu``.

Install it with ``install(monkeypatch)``; it puts the modules into ``sys.modules``.
"""

from __future__ import annotations

import copy
import enum
import re
import sys
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

FORGE_VERSION = "2.0.1v1.10.1"
CPU = torch.device("cpu")

# SDXL base UNet layout in the UNet config keys Forge uses (huggingface_guess / ldm_patched).
SDXL_UNET_CONFIG: dict[str, Any] = {
    "num_res_blocks": [2, 2, 2],
    "channel_mult": [1, 2, 4],
    "transformer_depth": [0, 0, 2, 2, 10, 10],
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "transformer_depth_middle": 10,
}
# Tiny widths: level width = TINY_CHANNELS * channel_mult; cross-attention context width.
TINY_CHANNELS = 4
TINY_CONTEXT_DIM = 12
ADM_CHANNELS = 8  # the width of SDXL's ``vector`` conditioning (2816) in the double

_ATTENTION_LINEARS = ("to_q", "to_k", "to_v", "to_out.0")
_ATTENTION_NAME = re.compile(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")


# --------------------------------------------------------------------------- tiny SDXL UNet


class Attention(nn.Module):
    def __init__(self, width: int, context_dim: int | None) -> None:
        super().__init__()
        source = context_dim or width
        self.to_q = nn.Linear(width, width, bias=False)
        self.to_k = nn.Linear(source, width, bias=False)
        self.to_v = nn.Linear(source, width, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(width, width), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        source = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(source), self.to_v(source)
        attention = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1)
        return self.to_out[1](self.to_out[0](attention @ v))


class FeedForward(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.ModuleList(
            [nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TransformerBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.attn1 = Attention(width, None)
        self.attn2 = Attention(width, TINY_CONTEXT_DIM)
        self.ff = FeedForward(width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.norm3 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Forge's ``BasicTransformerBlock._forward``: each residual is added into ``x`` in place
        (``x += n``), the block's input included, right after a LayerNorm read ``x``."""
        x += self.attn1(self.norm1(x))
        x += self.attn2(self.norm2(x), context)
        skip = x
        x = self.ff(self.norm3(x))
        x += skip
        return x


class SpatialTransformer(nn.Module):
    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.proj_in = nn.Linear(width, width)
        self.transformer_blocks = nn.ModuleList(TransformerBlock(width) for _ in range(depth))
        self.proj_out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context)
        return self.proj_out(x)


def _stage(width: int, depth: int) -> nn.ModuleList:
    """One ``input_blocks.N`` / ``output_blocks.N`` entry: a stand-in res block, maybe attention."""
    layers: list[nn.Module] = [nn.Linear(width, width)]
    if depth:
        layers.append(SpatialTransformer(width, depth))
    return nn.ModuleList(layers)


class TinySDXLUNet(nn.Module):
    """SGM-named SDXL UNet skeleton: 70 transformer blocks, 560 attention Linears, tiny widths."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = dict(config or SDXL_UNET_CONFIG)
        widths = [TINY_CHANNELS * m for m in self.config["channel_mult"]]
        depths = list(self.config["transformer_depth"])
        inputs = [nn.ModuleList([nn.Linear(TINY_CHANNELS, TINY_CHANNELS)])]
        for level, width in enumerate(widths):
            for _ in range(self.config["num_res_blocks"][level]):
                inputs.append(_stage(width, depths.pop(0)))
            if level < len(widths) - 1:
                inputs.append(nn.ModuleList([nn.Linear(width, width)]))  # downsampler
        self.input_blocks = nn.ModuleList(inputs)
        top = widths[-1]
        self.middle_block = nn.ModuleList(
            [
                nn.Linear(top, top),
                SpatialTransformer(top, self.config["transformer_depth_middle"]),
                nn.Linear(top, top),
            ]
        )
        outputs = []
        depths_out = list(self.config["transformer_depth_output"])
        for level in reversed(range(len(widths))):
            for _ in range(self.config["num_res_blocks"][level] + 1):
                outputs.append(_stage(widths[level], depths_out.pop()))
        self.output_blocks = nn.ModuleList(outputs)

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, y: torch.Tensor,
        **kwargs: Any,
    ) -> torch.Tensor:  # fmt: skip
        """Forge's call (``backend.nn.unet``): latents (B, 4, h, w), float timesteps (B,),
        ``context`` (B, tokens, ctx), ``y`` (B, ADM_CHANNELS). Each latent pixel is a token;
        every transformer sees the tokens widened to its width and adds to the output."""
        b, c, h, w = x.shape
        half = TINY_CHANNELS // 2
        angles = timesteps.float()[:, None] * torch.exp(-torch.arange(half) / half)[None]
        embedding = torch.cat([angles.sin(), angles.cos()], -1) + y[:, :TINY_CHANNELS]
        tokens = x.flatten(2).transpose(1, 2) + embedding[:, None].to(x.dtype)
        transformers = [m for m in self.modules() if isinstance(m, SpatialTransformer)]
        out = torch.zeros_like(tokens)
        for transformer in transformers:
            widened = tokens.repeat(1, 1, transformer.proj_in.in_features // TINY_CHANNELS)
            out = out + transformer(widened, context)[..., :TINY_CHANNELS]
        return (out / len(transformers)).transpose(1, 2).reshape(b, c, h, w)

    def attention_linears(self) -> dict[str, nn.Linear]:
        """``{parameter prefix: Linear}`` of the 560 attention projections, SGM names."""
        return {
            name: module
            for name, module in self.named_modules()
            if isinstance(module, nn.Linear) and _ATTENTION_NAME.search(name)
        }


def unet_to_diffusers(config: dict[str, Any]) -> dict[str, str]:
    """Diffusers -> SGM parameter names of the transformer blocks (what the LoRA mapping needs).

    Same numbering as Forge's ``utils.unet_to_diffusers``: down level ``x`` attention ``i`` sits
    in ``input_blocks.{1 + (res + 1) * x + i}.1``; up level ``x`` attention ``i`` (levels counted
    from the bottom) in ``output_blocks.{(res + 1) * x + i}.1``; the mid block in
    ``middle_block.1``.
    """
    if "num_res_blocks" not in config:
        return {}
    names: dict[str, str] = {}

    def add(diffusers_prefix: str, sgm_prefix: str, depth: int) -> None:
        for t in range(depth):
            for attn in ("attn1", "attn2"):
                for linear in _ATTENTION_LINEARS:
                    tail = f"transformer_blocks.{t}.{attn}.{linear}.weight"
                    names[f"{diffusers_prefix}.{tail}"] = f"{sgm_prefix}.{tail}"

    res = config["num_res_blocks"]
    depths = list(config["transformer_depth"])
    for level in range(len(config["channel_mult"])):
        for i in range(res[level]):
            depth = depths.pop(0)
            index = 1 + (res[level] + 1) * level + i
            add(f"down_blocks.{level}.attentions.{i}", f"input_blocks.{index}.1", depth)
    add("mid_block.attentions.0", "middle_block.1", config["transformer_depth_middle"])
    depths_out = list(config["transformer_depth_output"])
    reversed_res = list(reversed(res))
    for level in range(len(config["channel_mult"])):
        for i in range(reversed_res[level] + 1):
            depth = depths_out.pop()
            index = (reversed_res[level] + 1) * level + i
            add(f"up_blocks.{level}.attentions.{i}", f"output_blocks.{index}.1", depth)
    return names


@dataclass
class ModelConfig:
    huggingface_repo: str = "stabilityai/stable-diffusion-xl-base-1.0"


class Prediction(nn.Module):
    """``backend.modules.k_prediction.Prediction``: SDXL's scaled-linear schedule."""

    def __init__(self, prediction_type: str = "epsilon") -> None:
        super().__init__()
        self.prediction_type = prediction_type
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float())


class KModel(nn.Module):
    """Stand-in for ``backend.modules.k_model.KModel``: wraps the UNet as ``diffusion_model``."""

    def __init__(self, unet: nn.Module, storage_dtype: Any = None) -> None:
        super().__init__()
        self.diffusion_model = unet
        self.config = ModelConfig()
        first = next(unet.parameters())
        self.storage_dtype = first.dtype if storage_dtype is None else storage_dtype
        self.computation_dtype = first.dtype
        self.predictor = Prediction()


# --------------------------------------------------------------------------- backend.utils


def get_attr_with_parent(obj: Any, dotted: str) -> tuple[Any, str, Any]:
    parent, name = obj, dotted
    for name in dotted.split("."):
        parent, obj = obj, getattr(obj, name)
    return parent, name, obj


def set_attr_raw(obj: Any, dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    for name in path:
        obj = getattr(obj, name)
    setattr(obj, last, value)


# --------------------------------------------------------------------------- backend.patcher.lora


def model_lora_keys_unet(model: nn.Module, key_map: dict[str, str] = {}) -> dict[str, str]:  # noqa: B006
    """kohya / generic / diffusers LoRA names -> parameter names.

    The default ``key_map`` is one shared dict, as in Forge.
    """
    for key in model.state_dict():
        if not key.startswith("diffusion_model."):
            continue
        if key.endswith(".weight"):
            stem = key[len("diffusion_model.") : -len(".weight")]
            key_map["lora_unet_" + stem.replace(".", "_")] = key
            key_map[key[: -len(".weight")]] = key
        else:
            key_map[key] = key
    for diffusers_key, sgm_key in unet_to_diffusers(model.diffusion_model.config).items():
        if not diffusers_key.endswith(".weight"):
            continue
        target = "diffusion_model." + sgm_key
        stem = diffusers_key[: -len(".weight")]
        key_map["lora_unet_" + stem.replace(".", "_")] = target
        key_map["lycoris_" + stem.replace(".", "_")] = target
        processor = stem.replace(".to_", ".processor.to_")
        if processor.endswith(".to_out.0"):
            processor = processor[: -len(".0")]
        for prefix in ("", "unet."):
            key_map[prefix + processor] = target
    return key_map


def load_lora(lora: dict[str, torch.Tensor], to_load: dict[str, str]) -> tuple[dict, dict]:
    """Kohya LoRA tensors -> ``{param key: ("lora", (up, down, alpha, mid, dora))}`` + leftovers."""
    patches: dict[str, Any] = {}
    used: set[str] = set()
    for lora_name, param_key in to_load.items():
        up_name, down_name = f"{lora_name}.lora_up.weight", f"{lora_name}.lora_down.weight"
        if up_name not in lora:
            continue
        alpha = None
        if f"{lora_name}.alpha" in lora:
            alpha = lora[f"{lora_name}.alpha"].item()  # a float alpha raises, as in Forge
            used.add(f"{lora_name}.alpha")
        mid = lora.get(f"{lora_name}.lora_mid.weight")
        dora = lora.get(f"{lora_name}.dora_scale")
        used.update(
            k for k in (f"{lora_name}.lora_mid.weight", f"{lora_name}.dora_scale") if k in lora
        )
        patches[param_key] = ("lora", (lora[up_name], lora[down_name], alpha, mid, dora))
        used.update((up_name, down_name))
    remaining = {k: v for k, v in lora.items() if k not in used}
    return patches, remaining


@torch.inference_mode()
def merge_lora_to_weight(
    patches: list, weight: torch.Tensor, key: str = "online_lora", computation_dtype=torch.float32
) -> torch.Tensor:
    """Apply ``[[strength, value, strength_model, offset, fn], ...]`` to a copy of ``weight``."""
    original_dtype = weight.dtype
    weight = weight.to(dtype=computation_dtype, copy=True)
    for strength, value, strength_model, offset, function in patches:
        assert offset is None and function is None, "not used by LoRA files"
        if strength_model != 1.0:
            weight *= strength_model
        kind, tensors = value
        if kind == "diff":
            if strength != 0.0:
                weight += strength * tensors[0].to(weight.device, computation_dtype)
            continue
        assert kind == "lora", kind
        up = tensors[0].to(weight.device, computation_dtype)
        down = tensors[1].to(weight.device, computation_dtype)
        scale = 1.0 if tensors[2] is None else tensors[2] / down.shape[0]
        delta = up.flatten(start_dim=1) @ down.flatten(start_dim=1)
        try:
            delta = delta.reshape(weight.shape)
        except RuntimeError:
            # Forge pads the narrower of the two along dim 1 (meant for Flux tools) and then adds;
            # for any other mismatch the addition raises. Shapes must be checked before patching.
            pad = delta.shape[1] - weight.shape[1]
            if pad > 0:
                weight = nn.functional.pad(weight, (0, pad))
            elif pad < 0:
                delta = nn.functional.pad(delta, (0, -pad))
        weight += ((strength * scale) * delta).type(weight.dtype)
    return weight.to(dtype=original_dtype)


class LoraLoader:
    """One per torch model (``model.lora_loader``), shared by every clone of its patcher."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.backup: dict[str, nn.Parameter] = {}
        self.online_backup: list[nn.Module] = []
        self.loaded_hash = str([])
        self.merge_count = 0  # test hook: how many refreshes actually re-merged

    @torch.inference_mode()
    def refresh(self, lora_patches: dict, offload_device=CPU, force_refresh=False):
        hashes = str(list(lora_patches.keys()))
        if hashes == self.loaded_hash and not force_refresh:
            return
        self.merge_count += 1
        grouped: dict[tuple[str, bool], list] = {}
        for (_, _, _, online), per_key in lora_patches.items():
            for key, entries in per_key.items():
                grouped[(key, online)] = grouped.get((key, online), []) + entries
        for layer in set(self.online_backup):
            del layer.forge_online_loras
        self.online_backup = []
        for key, original in self.backup.items():
            set_attr_raw(self.model, key, original)
        self.backup = {}
        for (key, online), entries in grouped.items():
            parent, child, weight = get_attr_with_parent(self.model, key)
            if not isinstance(weight, nn.Parameter):
                raise ValueError(f"Wrong LoRA Key: {key}")
            if online:
                if not hasattr(parent, "forge_online_loras"):
                    parent.forge_online_loras = {}
                parent.forge_online_loras[child] = entries
                self.online_backup.append(parent)
                continue
            if key not in self.backup:
                self.backup[key] = weight.to(device=offload_device)  # the same object on CPU
            merged = merge_lora_to_weight(entries, weight, key)
            set_attr_raw(self.model, key, nn.Parameter(merged, requires_grad=False))
        self.loaded_hash = hashes


# --------------------------------------------------------------------------- patchers


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, current_device=None, **kwargs):
        self.model = model
        # model_size(): memory_management.module_size sums the model's named_parameters
        self.size = size or sum(p.numel() * p.element_size() for _, p in model.named_parameters())
        self.lora_patches: dict[tuple, dict[str, list]] = {}
        self.object_patches: dict[str, Any] = {}
        self.object_patches_backup: dict[str, Any] = {}
        self.model_options: dict[str, Any] = {"transformer_options": {}}
        self.load_device = load_device
        self.offload_device = offload_device
        if not hasattr(model, "lora_loader"):
            model.lora_loader = LoraLoader(model)
        self.lora_loader: LoraLoader = model.lora_loader
        self.current_device = offload_device if current_device is None else current_device

    def clone(self) -> ModelPatcher:
        other = type(self)(
            self.model, self.load_device, self.offload_device, self.size, self.current_device
        )
        other.lora_patches = self.lora_patches.copy()
        other.object_patches = self.object_patches.copy()
        other.model_options = copy.deepcopy(self.model_options)
        return other

    def add_patches(
        self, *, filename, patches, strength_patch=1.0, strength_model=1.0, online_mode=False
    ) -> set:
        parameter_names = {name for name, _ in self.model.named_parameters()}
        accepted, per_key = set(), {}
        for key in patches:
            if key in parameter_names:  # string keys only: LoRA files never use offsets
                accepted.add(key)
                per_key.setdefault(key, []).append(
                    [strength_patch, patches[key], strength_model, None, None]
                )
        self.lora_patches[(filename, strength_patch, strength_model, online_mode)] = per_key
        return accepted

    def has_online_lora(self) -> bool:
        return any(online for (_, _, _, online) in self.lora_patches)

    def refresh_loras(self) -> None:
        self.lora_loader.refresh(lora_patches=self.lora_patches, offload_device=self.offload_device)

    def forge_patch_model(self, target_device=None):
        if target_device is not None:
            self.model.to(target_device)
            self.current_device = target_device
        return self.model

    def forge_unpatch_model(self, target_device=None):
        if target_device is not None:
            self.model.to(target_device)
            self.current_device = target_device


class UnetPatcher(ModelPatcher):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.controlnet_linked_list = None
        self.extra_model_patchers_during_sampling: list[ModelPatcher] = []

    def clone(self) -> UnetPatcher:
        other = super().clone()
        other.controlnet_linked_list = self.controlnet_linked_list
        other.extra_model_patchers_during_sampling = (
            self.extra_model_patchers_during_sampling.copy()
        )
        return other

    def add_patched_controlnet(self, cnet: ControlNet) -> None:
        cnet.set_previous_controlnet(self.controlnet_linked_list)
        self.controlnet_linked_list = cnet

    def list_controlnets(self) -> list[ControlNet]:
        found, cnet = [], self.controlnet_linked_list
        while cnet is not None:
            found.append(cnet)
            cnet = cnet.previous_controlnet
        return found

    def set_model_attn2_replace(self, patch: Any, block_name: str, number: int) -> None:
        """Forge's IP-Adapter/InstantID face embedding: attn2 replaced per block, in the
        patcher's ``model_options`` (a clone's own deep copy), never on the torch modules."""
        replace = self.model_options["transformer_options"].setdefault("patches_replace", {})
        replace.setdefault("attn2", {})[(block_name, number)] = patch


class ControlNet:
    """``backend.patcher.controlnet.ControlBase``: a linked list node with its hint and range."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.previous_controlnet: ControlNet | None = None
        self.cond_hint: Any = None
        self.strength, self.timestep_percent_range = 1.0, (0.0, 1.0)

    def copy(self) -> ControlNet:
        return ControlNet(self.name)

    def set_cond_hint(self, hint: Any, strength: float, percent_range: tuple) -> ControlNet:
        self.cond_hint, self.strength, self.timestep_percent_range = hint, strength, percent_range
        return self

    def set_previous_controlnet(self, cnet: ControlNet | None) -> ControlNet:
        self.previous_controlnet = cnet
        return self


def apply_controlnet_advanced(unet, controlnet, image_bchw, strength, start_percent, end_percent):
    """``backend.patcher.controlnet.apply_controlnet_advanced`` (without the advanced weightings):
    a clone of ``unet`` with a copy of ``controlnet`` added; the given unet is left as it was."""
    cnet = controlnet.copy().set_cond_hint(image_bchw, strength, (start_percent, end_percent))
    m = unet.clone()
    m.add_patched_controlnet(cnet)
    return m


# --------------------------------------------------------------------------- memory management


class VRAMState(enum.Enum):
    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


class LoadedModel:
    """memory_management.LoadedModel: wraps a patcher; equal when the patcher is the same object."""

    def __init__(self, model: ModelPatcher) -> None:
        self.model = model

    def __eq__(self, other: object) -> bool:
        return self.model is getattr(other, "model", None)


class MemoryManagement:
    """State and functions of ``backend.memory_management`` (one instance per installed double)."""

    def __init__(self) -> None:
        self.cpu = CPU
        self.current_loaded_models: list[LoadedModel] = []
        self.empty_cache_calls = 0

    def get_torch_device(self) -> torch.device:
        return CPU

    def _unload(self, patcher: ModelPatcher) -> None:
        # LoadedModel.model_unload: moves the model off the GPU; merged LoRA weights stay merged.
        patcher.forge_unpatch_model(patcher.offload_device)
        self.current_loaded_models.remove(LoadedModel(patcher))

    def load_models_gpu(self, models, memory_required=0, hard_memory_preservation=0) -> None:
        for patcher in models:
            entry = LoadedModel(patcher)
            if entry in self.current_loaded_models:
                self.current_loaded_models.remove(entry)
                self.current_loaded_models.insert(0, entry)  # already loaded: no refresh
                continue
            for loaded in list(self.current_loaded_models):  # unload_model_clones
                if loaded.model.model is patcher.model:
                    self._unload(loaded.model)
            patcher.forge_patch_model(patcher.load_device)
            patcher.refresh_loras()
            self.current_loaded_models.insert(0, entry)

    def load_model_gpu(self, model) -> None:
        self.load_models_gpu([model])

    def unload_all_models(self) -> None:
        unloaded = list(self.current_loaded_models)
        for loaded in unloaded:
            self._unload(loaded.model)
        if unloaded:  # free_memory empties the cache after unloading
            self.soft_empty_cache()

    def soft_empty_cache(self, force=False) -> None:
        self.empty_cache_calls += 1


# --------------------------------------------------------------------------- engine + processing


@dataclass
class ForgeObjects:
    unet: Any
    clip: Any = None
    vae: Any = None
    clipvision: Any = None

    def shallow_copy(self) -> ForgeObjects:
        return ForgeObjects(self.unet, self.clip, self.vae, self.clipvision)


def as_loaded(model: nn.Module) -> nn.Module:
    """``backend.loader.forge_loader`` runs under ``torch.inference_mode()``: every weight it
    loads is an inference tensor (autograd can neither save it for backward nor version it)."""
    with torch.inference_mode():
        for module in model.modules():
            for name, param in module._parameters.items():
                if param is not None:
                    module._parameters[name] = nn.Parameter(param.clone(), param.requires_grad)
    return model


class FakeForgeSDXL:
    """``p.sd_model`` of Forge 2 for an SDXL checkpoint (``backend.diffusion_engine.sdxl``)."""

    is_sdxl, is_sd1, is_sd2, is_sd3 = True, False, False, False

    def __init__(self, unet: nn.Module, storage_dtype: Any = None) -> None:
        kmodel = KModel(as_loaded(unet), storage_dtype)
        patcher = UnetPatcher(kmodel, load_device=CPU, offload_device=CPU)
        self.forge_objects = ForgeObjects(unet=patcher)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.current_lora_hash = str([])

    @torch.inference_mode()
    def get_learned_conditioning(self, prompt: list[str]) -> dict[str, torch.Tensor]:
        """SDXL's ``crossattn`` and ``vector`` rows, one per prompt (seeded by its text)."""
        rows = []
        for text in prompt:
            generator = torch.Generator().manual_seed(sum(map(ord, text)))
            rows.append(torch.randn(1, 4 * TINY_CONTEXT_DIM + ADM_CHANNELS, generator=generator))
        flat = torch.cat(rows)
        crossattn = flat[:, : 4 * TINY_CONTEXT_DIM].reshape(-1, 4, TINY_CONTEXT_DIM)
        return {"crossattn": crossattn, "vector": flat[:, 4 * TINY_CONTEXT_DIM :]}

    @torch.inference_mode()
    def encode_first_stage(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/8, W/8), as ``x``'s dtype."""
        z = torch.nn.functional.avg_pool2d(x.float(), 8)
        return torch.cat([z, z.mean(1, keepdim=True)], 1).to(x)

    def get_first_stage_encoding(self, x: torch.Tensor) -> torch.Tensor:
        return x  # Forge: "legacy code", encode_first_stage already scaled


class FakeInitialModel:
    """``modules.sd_models.FakeInitialModel``: ``shared.sd_model`` until the first generation."""

    cond_stage_model = None
    chunk_length = 75


class ModelData:
    """``modules.sd_models``: ``model_data.sd_model`` is a placeholder until
    ``forge_model_reload()`` (called by processing before each job) loads the checkpoint; it
    returns ``(sd_model, reloaded)`` and does nothing once the checkpoint is loaded."""

    def __init__(self, checkpoint: FakeForgeSDXL) -> None:
        self.checkpoint = checkpoint
        self.sd_model: Any = FakeInitialModel()
        self.loads = 0

    def forge_model_reload(self) -> tuple[Any, bool]:
        if self.sd_model is self.checkpoint:
            return self.sd_model, False
        self.sd_model, self.loads = self.checkpoint, self.loads + 1
        return self.sd_model, True


def install_sd_models(monkeypatch, checkpoint: FakeForgeSDXL) -> ModelData:
    """Register ``modules.sd_models`` (Forge's lazy checkpoint loading) for ``checkpoint``."""
    data = ModelData(checkpoint)
    module = types.ModuleType("modules.sd_models")
    module.__dict__.update(model_data=data, forge_model_reload=data.forge_model_reload)
    monkeypatch.setitem(sys.modules, "modules.sd_models", module)
    return data


def load_networks(sd_model: FakeForgeSDXL, loras: Iterable[tuple[str, dict, float]]) -> None:
    """``sd_forge_lora`` ``load_networks`` for ``(filename, state_dict, unet strength)`` triples."""
    loras = list(loras)
    wanted = str([[name, strength, strength, False] for name, _, strength in loras])
    if sd_model.current_lora_hash == wanted:
        return
    sd_model.current_lora_hash = wanted
    sd_model.forge_objects.unet = sd_model.forge_objects_original.unet
    for filename, state_dict, strength in loras:
        unet = sd_model.forge_objects.unet
        patches, _ = load_lora(state_dict, model_lora_keys_unet(unet.model))  # Forge omits {}
        clone = unet.clone()
        clone.add_patches(filename=filename, patches=patches, strength_patch=strength)
        sd_model.forge_objects.unet = clone
    sd_model.forge_objects_after_applying_lora = sd_model.forge_objects.shallow_copy()


@dataclass
class FakeProcessing:
    """The fields of ``StableDiffusionProcessing`` the adapter and the driver below use."""

    sd_model: FakeForgeSDXL
    n_iter: int = 1
    enable_hr: bool = False
    user_loras: list[tuple[str, dict, float]] = field(default_factory=list)
    extra_generation_params: dict[str, Any] = field(default_factory=dict)
    sampled_unets: list[Any] = field(default_factory=list)


Hook = Callable[[FakeProcessing], None]


def run_job(
    p: FakeProcessing,
    memory: MemoryManagement,
    *,
    process_batch: Hook | None = None,
    before_every_sampling: Hook | None = None,
    on_sample: Hook | None = None,
) -> None:
    """Drive one job in Forge's order: reset, activate, reset, hook, load (refresh), sample."""

    def sample() -> None:
        unet = p.sd_model.forge_objects.unet
        memory.load_models_gpu([unet])  # sampling_prepare
        p.sampled_unets.append(unet)
        if on_sample:
            on_sample(p)

    sd = p.sd_model
    for _ in range(p.n_iter):
        sd.forge_objects = sd.forge_objects_original.shallow_copy()
        load_networks(sd, p.user_loras)  # extra_networks.activate
        sd.forge_objects = sd.forge_objects_after_applying_lora.shallow_copy()
        if process_batch:
            process_batch(p)
        sd.forge_objects = sd.forge_objects_after_applying_lora.shallow_copy()
        if before_every_sampling:
            before_every_sampling(p)
        sample()
        if p.enable_hr:
            load_networks(sd, p.user_loras)  # hr extra networks
            if before_every_sampling:  # after before_hr
                before_every_sampling(p)
            sd.forge_objects = sd.forge_objects_after_applying_lora.shallow_copy()
            if before_every_sampling:
                before_every_sampling(p)
            sample()


# --------------------------------------------------------------------------- installation


def install(monkeypatch) -> MemoryManagement:
    """Register the double as ``backend.*`` and ``modules_forge.*``; returns memory management."""
    memory = MemoryManagement()

    def module(name: str, **attrs: Any) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, mod)
        return mod

    mm_functions = (
        "get_torch_device",
        "load_models_gpu",
        "load_model_gpu",
        "unload_all_models",
        "soft_empty_cache",
    )
    mm = module(
        "backend.memory_management",
        cpu=CPU,
        VRAMState=VRAMState,
        vram_state=VRAMState.NORMAL_VRAM,
        current_loaded_models=memory.current_loaded_models,
        **{name: getattr(memory, name) for name in mm_functions},
    )
    lora = module(
        "backend.patcher.lora",
        model_lora_keys_unet=model_lora_keys_unet,
        load_lora=load_lora,
        merge_lora_to_weight=merge_lora_to_weight,
        LoraLoader=LoraLoader,
    )
    base = module("backend.patcher.base", ModelPatcher=ModelPatcher)
    unet = module("backend.patcher.unet", UnetPatcher=UnetPatcher)
    utils = module("backend.utils", get_attr_with_parent=get_attr_with_parent)
    patcher = module("backend.patcher", lora=lora, base=base, unet=unet, __path__=[])
    module("backend", patcher=patcher, memory_management=mm, utils=utils, __path__=[])
    version = module("modules_forge.forge_version", version=FORGE_VERSION)
    module("modules_forge", forge_version=version, __path__=[])
    return memory


def kohya_lora_for(
    unet: TinySDXLUNet,
    *,
    rank: int = 2,
    alpha: float = 1.0,
    style: str = "sgm",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """A random kohya LoRA over the 560 attention Linears of ``unet`` (``style``: sgm|diffusers)."""
    generator = torch.Generator().manual_seed(seed)
    sgm_to_diffusers = {
        v[: -len(".weight")]: k[: -len(".weight")]
        for k, v in unet_to_diffusers(unet.config).items()
    }
    lora: dict[str, torch.Tensor] = {}
    for name, linear in unet.attention_linears().items():
        path = name if style == "sgm" else sgm_to_diffusers[name]
        stem = "lora_unet_" + path.replace(".", "_")
        out_features, in_features = linear.weight.shape
        lora[f"{stem}.lora_down.weight"] = torch.randn(rank, in_features, generator=generator).to(
            dtype
        )
        lora[f"{stem}.lora_up.weight"] = torch.randn(out_features, rank, generator=generator).to(
            dtype
        )
        lora[f"{stem}.alpha"] = torch.tensor(alpha)
    return lora
