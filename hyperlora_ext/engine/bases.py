"""The LoRA bases of ``hyper_lora_modules.safetensors`` and their mixing.

The math is in docs/reference-pipeline.md.

Each of the M x 4 attention linears has a down basis (H, in, r) and an up basis (H, r, out); a
LoRA matrix is a linear combination of its H basis matrices with coefficients taken from one
resampler token. The bases are kept in one of two ways:

* **mapped** (CPU): each basis stays the file's own tensor, memory-mapped by safetensors: no
  copy, no conversion, nothing allocated. Loading 3 GB costs nothing up front and the bases are
  the operating system's file cache, which it can reclaim. When the file's dtype is not the
  model's, each basis is converted into a small float32 staging buffer just before its GEMV (the
  mixing is then float32: as exact as the reference's float32, better than its bf16 / fp16), or,
  for a bf16 model on a CPU with fast fp16 GEMVs (AMX Xeons, see cpu_dtype.py), mixed straight
  in fp16 (still more precise than bf16).
  The file must not change while it is mapped: the pipeline compares the folder's fingerprint
  before every new identity and loads a changed model again (Windows refuses to replace a mapped
  file; on Linux a file overwritten in place during a mixing could fault);
* **stacked** (GPU): bases of the same direction and width are copied into one (G, H, width * r)
  tensor per group in the model's dtype, so that mixing a whole group is one ``bmm``.

Only the small mixed matrices are transposed into kohya's orientation.
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
    """All bases of one direction ("down" / "up") and one width; its tensors are buffers:
    ``bases`` (G, H, width * r) when stacked, else one ``basis{i}`` (H, width * r) per member,
    in the file's layout (H, in, r) / (H, r, out)."""

    bases: torch.Tensor
    token_index: torch.Tensor  # (G,): the resampler token driving each member

    def __init__(self, direction: str, width: int) -> None:
        super().__init__()
        self.direction, self.width = direction, width
        self.keys: list[str] = []  # file keys, in member order
        self.members: list[tuple[int, int]] = []  # (module, layer) indices
        self.tokens: list[int] = []  # resampler token driving each member
        self.stacked = True
        self.register_buffer("bases", torch.empty(0), False)  # filled by BasisBank.load
        self.register_buffer("token_index", torch.empty(0, dtype=torch.long), False)

    def basis(self, index: int) -> torch.Tensor:
        """Member ``index``'s basis (H, width * r)."""
        return self.bases[index] if self.stacked else getattr(self, f"basis{index}")


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

    def load(
        self, handle: Any, dtype: torch.dtype, device: torch.device, *, mapped: bool
    ) -> BasisBank:
        """Take the bases from an open safetensors file: ``mapped`` keeps the file's tensors
        (CPU only), else they are stacked into group tensors of ``dtype`` on ``device``."""
        h, r = self.hyper_dim, self.rank
        for group in self._groups():
            group.token_index = torch.tensor(group.tokens, device=device)
            group.stacked = not mapped
            if mapped:
                for index, key in enumerate(group.keys):
                    group.register_buffer(f"basis{index}", handle.get_tensor(key).view(h, -1))
                continue
            group.bases = torch.empty(
                (len(group.keys), h, r * group.width), dtype=dtype, device=device
            )
            for slot, key in zip(group.bases, group.keys, strict=True):
                slot.copy_(handle.get_tensor(key).view(h, -1))
        return self

    def mix(
        self, tokens: torch.Tensor, dtype: torch.dtype, fp16_mixing: bool = False
    ) -> dict[tuple[int, int], dict[str, torch.Tensor]]:
        """LoRA matrices in ``dtype`` for resampler ``tokens`` (Q, H float32); ``fp16_mixing``
        mixes mapped fp16 bases in fp16 rather than float32.

        Returns {(module, layer): {"down": (r, in), "up": (out, r)}} on the CPU, each matrix
        contiguous with its own storage (safetensors refuses to save tensors sharing memory).
        """
        result: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        direct = {dtype, torch.float32} | ({torch.float16} if fp16_mixing else set())
        staging = _Staging(direct)
        for group in self._groups():
            coefficients = tokens.index_select(0, group.token_index.to(tokens.device))  # (G, H)
            if group.stacked:
                bases = group.bases
                mixed = torch.bmm(coefficients.to(bases.dtype).unsqueeze(1), bases).squeeze(1)
            else:
                mixed = torch.stack(
                    [staging.gemv(c, group.basis(i)) for i, c in enumerate(coefficients)]
                )
            mixed = mixed.to("cpu", dtype)  # (G, width * r)
            # down: (in, r) -> (r, in); up: (r, out) -> (out, r); the copy gives each its storage
            shape = (
                (group.width, self.rank) if group.direction == "down" else (self.rank, group.width)
            )
            for member, row in zip(group.members, mixed, strict=True):
                result.setdefault(member, {})[group.direction] = row.view(shape).t().contiguous()
        return result

    def mapped_nbytes(self) -> int:
        """Bytes of the bases that are the file's memory-mapped tensors (0 when stacked)."""
        groups = [g for g in self._groups() if not g.stacked]
        return sum(b.nbytes for g in groups for b in map(g.basis, range(len(g.members))))

    def _groups(self) -> list[_Group]:
        return [group for group in self.groups if isinstance(group, _Group)]


class _Staging:
    """GEMVs of mapped bases: in the file's dtype when it is one of ``direct`` (the model's,
    float32, or fp16 where cpu_dtype says so), else in float32 through one reused buffer
    (converting a whole basis into fresh memory would cost more than the GEMV; half-to-half
    conversions are slow kernels on CPUs)."""

    def __init__(self, direct: set[torch.dtype]) -> None:
        self.direct = direct
        self.buffer = torch.empty(0)

    def gemv(self, coefficients: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """``coefficients`` (H,) float32 times ``basis`` (H, N): (N,)."""
        if basis.dtype in self.direct:
            return coefficients.to(basis.dtype) @ basis
        if self.buffer.numel() < basis.numel() or self.buffer.device != basis.device:
            self.buffer = torch.empty(basis.numel(), dtype=torch.float32, device=basis.device)
        staged = self.buffer[: basis.numel()].view(basis.shape)
        return coefficients.to(basis.device, torch.float32) @ staged.copy_(basis)
