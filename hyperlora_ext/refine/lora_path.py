"""The identity LoRA as trainable parameters, applied as an additive path around frozen Linears.

``y = W·x + b + s·up(down(x))`` with ``s = strength · alpha / rank``: the base weights are never
written, so nothing has to be un-merged afterwards. Parameters are float32 whatever the UNet's
dtype (the update of 50 steps at lr 1e-4 is below bf16's resolution).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.lora_format import group_layers, to_sgm_name

DOWN, UP, ALPHA = "lora_down.weight", "lora_up.weight", "alpha"
KOHYA_PREFIX = "lora_unet_"


def is_linear(module: nn.Module) -> bool:
    """A linear layer: torch's, or Forge 2's ``backend.operations`` Linear, which is a plain
    ``nn.Module`` with ``in_features``/``out_features`` and a ``weight`` (not an ``nn.Linear``)."""
    if isinstance(module, nn.Linear):
        return True
    return all(hasattr(module, name) for name in ("in_features", "out_features", "weight"))


def find_layers(unet: nn.Module, layer_names: list[str]) -> dict[str, nn.Linear]:
    """The Linear of ``unet`` (SGM module tree, as A1111's and Forge's UNets are) per kohya name."""
    by_name = {
        KOHYA_PREFIX + path.replace(".", "_"): module
        for path, module in unet.named_modules()
        if is_linear(module)
    }
    found, missing = {}, []
    for name in layer_names:
        module = by_name.get(to_sgm_name(name))
        if module is None:
            missing.append(name)
        else:
            found[name] = module
    if missing:
        raise HyperLoRAError(
            f"{len(missing)} of the identity's {len(layer_names)} layers are not in this UNet "
            f"(first: {missing[0]}); refining needs an SDXL base checkpoint"
        )
    return found


class TrainableLoRA(nn.Module):
    """One (down, up) parameter pair per layer, initialised from a kohya LoRA dict."""

    def __init__(self, lora: Mapping[str, torch.Tensor], strength: float = 1.0) -> None:
        super().__init__()
        self.names: list[str] = []
        self.downs = nn.ParameterList()
        self.ups = nn.ParameterList()
        self.scales: list[float] = []
        self.alphas: dict[str, torch.Tensor] = {}
        self.parts: dict[str, list[str]] = {}  # each layer's keys in the input's order
        for layer, parts in group_layers(lora).items():
            if DOWN not in parts or UP not in parts:
                raise HyperLoRAError(f"the identity's layer {layer} lacks lora_down/lora_up")
            down, up = parts[DOWN].detach().float(), parts[UP].detach().float()
            rank = down.shape[0]
            alpha = parts.get(ALPHA)
            self.alphas[layer] = torch.as_tensor(alpha if alpha is not None else float(rank))
            self.names.append(layer)
            self.parts[layer] = [p for p in parts if p in (DOWN, UP, ALPHA)] + (
                [] if alpha is not None else [ALPHA]
            )
            self.downs.append(nn.Parameter(down.clone()))
            self.ups.append(nn.Parameter(up.clone()))
            self.scales.append(strength * float(self.alphas[layer]) / rank)

    def attach(self, layers: Mapping[str, nn.Linear]) -> list[Any]:
        """Register the additive path on each layer; returns the hook handles to remove."""
        handles = []
        for index, name in enumerate(self.names):
            handles.append(layers[name].register_forward_hook(self._hook(index)))
        return handles

    def _hook(self, index: int):
        def add_delta(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            down, up = self.downs[index], self.ups[index]
            x = inputs[0].to(down.dtype)
            delta = F.linear(F.linear(x, down), up) * self.scales[index]
            return output + delta.to(output.dtype)

        return add_delta

    def state(self) -> dict[str, torch.Tensor]:
        """The trained LoRA in kohya form (the input's key names and order), float32 on CPU."""
        out: dict[str, torch.Tensor] = {}
        for name, down, up in zip(self.names, self.downs, self.ups, strict=True):
            values = {ALPHA: self.alphas[name].float().reshape(()), DOWN: down, UP: up}
            for part in self.parts[name]:
                out[f"{name}.{part}"] = values[part].detach().float().cpu().clone()
        return out
