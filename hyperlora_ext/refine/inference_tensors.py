"""Train around a model whose weights are inference tensors, then hand back the very same tensors.

Forge 2 loads checkpoints under ``torch.inference_mode()``, so every UNet parameter is an inference
tensor: autograd cannot save one for backward, and it has no version counter. Backpropagation to
the earlier LoRA layers runs through every later layer (convolutions, norms, linears), so all of
them need autograd-usable weights. For the duration of the block each inference tensor is replaced
in its module by a normal copy (made outside inference mode, ``requires_grad`` off); afterwards
the original objects go back in place, so the weights are the originals themselves (same storage,
nothing copied back) and anything holding them (Forge's LoRA backups) still holds the module's
own tensors. The cost is a second copy of those weights while training.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

# (module, "_parameters" or "_buffers", attribute name, the original tensor)
_Slot = tuple[nn.Module, str, str, torch.Tensor]


def _copy(tensor: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode(False), torch.no_grad():
        copy = tensor.clone()
    if isinstance(tensor, nn.Parameter):
        return nn.Parameter(copy, requires_grad=False)
    return copy


def _inference_slots(model: nn.Module) -> list[_Slot]:
    slots = []
    for module in model.modules():
        for table in ("_parameters", "_buffers"):
            for name, tensor in getattr(module, table).items():
                if tensor is not None and tensor.is_inference():
                    slots.append((module, table, name, tensor))
    return slots


def inference_bytes(model: nn.Module) -> int:
    """The memory the copies of ``model``'s inference tensors take (each tensor once)."""
    tensors = {id(slot[3]): slot[3] for slot in _inference_slots(model)}
    return sum(t.numel() * t.element_size() for t in tensors.values())


@contextmanager
def autograd_usable(model: nn.Module) -> Iterator[int]:
    """Swap ``model``'s inference-tensor parameters and buffers for normal copies in the block;
    yields how many tensors were swapped (0: nothing to do, nothing copied)."""
    slots = _inference_slots(model)
    copies: dict[int, torch.Tensor] = {}  # one copy per original: shared weights stay shared
    try:
        for module, table, name, original in slots:
            if id(original) not in copies:
                copies[id(original)] = _copy(original)
            getattr(module, table)[name] = copies[id(original)]
        yield len(copies)
    finally:
        for module, table, name, original in slots:
            getattr(module, table)[name] = original
        copies.clear()
