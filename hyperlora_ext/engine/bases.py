"""The LoRA bases of ``hyper_lora_modules.safetensors`` and their mixing.

The math is in docs/reference-pipeline.md.

Each of the M x 4 attention linears has a down basis (H, in, r) and an up basis (H, r, out); a
LoRA matrix is a linear combination of its H basis matrices with coefficients taken from one
resampler token. Bases of the same direction and width are stored together in one
(G, H, width * r) tensor per group, filled tensor by tensor straight from the file (one cast-copy
in the file's own layout, no second copy), so that mixing a whole group is one ``bmm`` that reads
every basis once. Only the small mixed matrices are transposed into kohya's orientation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .checkpoint import ModuleSpec, Shape

# Layer names in the file, in the reference's order; "to_out" becomes "to_out_0" in LoRA keys.
LAYERS = ("to_q", "to_k", "to_v", "to_out")
TOKENS_PER_MODULE = 2 * len(LAYERS)  # one down token and one up token per layer


def layer_widths(spec: ModuleSpec, layer: str) -> tuple[int, int]:
    """(in_features, out_features) of one attention linear."""
    return (spec.kv_in if layer in ("to_k", "to_v") else spec.hidden_size), spec.hidden_size


def expected_shapes(specs: list[ModuleSpec], hyper_dim: int, rank: int) -> dict[str, Shape]:
    shapes: dict[str, Shape] = {}
    for index, spec in enumerate(specs):
        for layer in LAYERS:
            width_in, width_out = layer_widths(spec, layer)
            shapes[f"{index}.{layer}.id_down_basis"] = (hyper_dim, width_in, rank)
            shapes[f"{index}.{layer}.id_up_basis"] = (hyper_dim, rank, width_out)
    return shapes


class _Group(nn.Module):
    """All bases of one direction ("down" / "up") and one width; its tensors are buffers."""

    bases: torch.Tensor  # (G, H, width * r): file layout (H, in, r) / (H, r, out)
    token_index: torch.Tensor  # (G,): the resampler token driving each member

    def __init__(self, direction: str, width: int) -> None:
        super().__init__()
        self.direction, self.width = direction, width
        self.keys: list[str] = []  # file keys, in member order
        self.members: list[tuple[int, int]] = []  # (module, layer) indices
        self.tokens: list[int] = []  # resampler token driving each member
        self.register_buffer("bases", torch.empty(0), False)  # filled by BasisBank.load
        self.register_buffer("token_index", torch.empty(0, dtype=torch.long), False)


class BasisBank(nn.Module):
    """Grouped bases of every module, and the mixing of resampler tokens into LoRA matrices."""

    def __init__(self, specs: list[ModuleSpec], hyper_dim: int, rank: int):
        super().__init__()
        self.hyper_dim, self.rank = hyper_dim, rank
        groups: dict[tuple[str, int], _Group] = {}
        for module, spec in enumerate(specs):
            for layer_index, layer in enumerate(LAYERS):
                width_in, width_out = layer_widths(spec, layer)
                token = TOKENS_PER_MODULE * module + 2 * layer_index
                for direction, width, offset in (("down", width_in, 0), ("up", width_out, 1)):
                    group = groups.setdefault((direction, width), _Group(direction, width))
                    group.keys.append(f"{module}.{layer}.id_{direction}_basis")
                    group.members.append((module, layer_index))
                    group.tokens.append(token + offset)
        self.groups = nn.ModuleList(groups.values())

    def load(self, handle: Any, dtype: torch.dtype, device: torch.device) -> BasisBank:
        """Fill the group tensors from an open safetensors file, one basis at a time."""
        h, r = self.hyper_dim, self.rank
        for group in self._groups():
            group.bases = torch.empty(
                (len(group.keys), h, r * group.width), dtype=dtype, device=device
            )
            group.token_index = torch.tensor(group.tokens, device=device)
            for slot, key in zip(group.bases, group.keys, strict=True):
                slot.copy_(handle.get_tensor(key).view(h, -1))
        return self

    def mix(self, tokens: torch.Tensor) -> dict[tuple[int, int], dict[str, torch.Tensor]]:
        """LoRA matrices for resampler ``tokens`` (Q, H) in the bases' dtype and device.

        Returns {(module, layer): {"down": (r, in), "up": (out, r)}} on the CPU, each matrix
        contiguous with its own storage (safetensors refuses to save tensors sharing memory).
        """
        result: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        for group in self._groups():
            coefficients = tokens.index_select(0, group.token_index).unsqueeze(1)  # (G, 1, H)
            mixed = torch.bmm(coefficients, group.bases).squeeze(1).cpu()  # (G, width * r)
            # down: (in, r) -> (r, in); up: (r, out) -> (out, r); the copy gives each its storage
            shape = (
                (group.width, self.rank) if group.direction == "down" else (self.rank, group.width)
            )
            for member, row in zip(group.members, mixed, strict=True):
                result.setdefault(member, {})[group.direction] = row.view(shape).t().contiguous()
        return result

    def _groups(self) -> list[_Group]:
        return [group for group in self.groups if isinstance(group, _Group)]
