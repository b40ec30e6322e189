"""CLIP vision tower up to its second-to-last encoder layer, built from the checkpoint's tensors.

The computation of transformers' ``CLIPVisionModel`` (``hidden_states[-2]``: patch embedding,
class and position embeddings, ``pre_layrnorm``, then every encoder layer but the last) written
with torch's functional ops. Nothing is constructed or randomly initialised: the file's tensors
become frozen parameters under the file's names (``embeddings.patch_embedding.weight``,
``encoder.layers.0.self_attn.q_proj.weight``, ...), so ``state_dict()`` matches the file, ``.to()``
moves them and memory managers that sum ``parameters()`` (Forge) see them. A tensor that already
has the wanted dtype and device stays a view of the file's memory map.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Weights = Mapping[str, torch.Tensor]


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


# config.json ``hidden_act`` -> function (openai CLIP uses quick_gelu; "gelu" is the exact erf form)
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "quick_gelu": _quick_gelu,
    "gelu": F.gelu,
}


@dataclass(frozen=True)
class TowerConfig:
    """The config.json fields the tower needs, defaulting as transformers' ``CLIPVisionConfig``
    (ViT-B/32 sizes): transformers 4.46 saves a CLIPConfig's vision_config without its
    default-valued fields. ``num_hidden_layers`` counts the checkpoint's layers (the tower runs all
    but the last)."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    @property
    def positions(self) -> int:
        """Class token + patch grid, as transformers counts them."""
        return (self.image_size // self.patch_size) ** 2 + 1


def tower_shapes(config: TowerConfig) -> dict[str, tuple[int, ...]]:
    """Names (relative to ``vision_model.``) and shapes of the tensors the tower reads."""
    width, inner, patch = config.hidden_size, config.intermediate_size, config.patch_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.class_embedding": (width,),
        "embeddings.patch_embedding.weight": (width, config.num_channels, patch, patch),
        "embeddings.position_embedding.weight": (config.positions, width),
        "pre_layrnorm.weight": (width,),
        "pre_layrnorm.bias": (width,),
    }
    square = (width, width)
    linears = {
        "self_attn.q_proj": square,
        "self_attn.k_proj": square,
        "self_attn.v_proj": square,
        "self_attn.out_proj": square,
        "mlp.fc1": (inner, width),
        "mlp.fc2": (width, inner),
    }
    for index in range(config.num_hidden_layers - 1):
        layer = f"encoder.layers.{index}."
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{layer}{norm}.weight"] = shapes[f"{layer}{norm}.bias"] = (width,)
        for name, (out, into) in linears.items():
            shapes[f"{layer}{name}.weight"], shapes[f"{layer}{name}.bias"] = (out, into), (out,)
    return shapes


class ClipVisionTower(nn.Module):
    """(N, C, S, S) pixels -> (N, positions, hidden): the output of the second-to-last layer."""

    def __init__(self, config: TowerConfig, weights: Weights):
        super().__init__()
        self.config = config
        for name, tensor in weights.items():
            _register(self, name, tensor)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        config, w = self.config, dict(self.named_parameters())
        patches = F.conv2d(pixels, w["embeddings.patch_embedding.weight"], stride=config.patch_size)
        tokens = patches.flatten(2).transpose(1, 2)  # (N, grid * grid, hidden)
        if tokens.shape[1] + 1 != config.positions:
            raise ValueError(
                f"pixels of shape {list(pixels.shape)}: this CLIP tower takes "
                f"{config.image_size} x {config.image_size} images"
            )
        cls = w["embeddings.class_embedding"].expand(len(pixels), 1, -1)
        x = torch.cat([cls, tokens], dim=1) + w["embeddings.position_embedding.weight"]
        x = self._norm(x, w, "pre_layrnorm")
        for index in range(config.num_hidden_layers - 1):
            layer = f"encoder.layers.{index}."
            normed = self._norm(x, w, layer + "layer_norm1")
            x = x + self._attention(normed, w, layer + "self_attn.")
            x = x + self._mlp(self._norm(x, w, layer + "layer_norm2"), w, layer + "mlp.")
        return x

    def _norm(self, x: torch.Tensor, w: Weights, name: str) -> torch.Tensor:
        weight, bias = w[name + ".weight"], w[name + ".bias"]
        return F.layer_norm(x, weight.shape, weight, bias, self.config.layer_norm_eps)

    def _attention(self, x: torch.Tensor, w: Weights, prefix: str) -> torch.Tensor:
        batch, length, width = x.shape
        heads = self.config.num_attention_heads
        split = (batch, length, heads, width // heads)  # explicit: also for an empty batch
        q, k, v = (
            _linear(x, w, prefix + name).view(split).transpose(1, 2)
            for name in ("q_proj", "k_proj", "v_proj")
        )
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head width), no mask
        return _linear(out.transpose(1, 2).reshape(batch, length, width), w, prefix + "out_proj")

    def _mlp(self, x: torch.Tensor, w: Weights, prefix: str) -> torch.Tensor:
        activation = ACTIVATIONS[self.config.hidden_act]
        return _linear(activation(_linear(x, w, prefix + "fc1")), w, prefix + "fc2")


def _linear(x: torch.Tensor, w: Weights, name: str) -> torch.Tensor:
    return F.linear(x, w[name + ".weight"], w[name + ".bias"])


def _register(root: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """``tensor`` as a frozen parameter at the dotted ``name``, adding empty parent modules."""
    *path, leaf = name.split(".")
    module = root
    for part in path:
        child = module._modules.get(part)
        if child is None:
            child = nn.Module()
            module.add_module(part, child)
        module = child
    module.register_parameter(leaf, nn.Parameter(tensor, requires_grad=False))
