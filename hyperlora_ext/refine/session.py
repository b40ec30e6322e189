"""Train on a frozen UNet and give it back exactly as it was, whatever happens.

While training: every UNet parameter has ``requires_grad=False``, the LoRA's forward hooks sit on
the target Linears, the model's own checkpoint flags are off and (optionally) each transformer
block's forward is wrapped in non-reentrant activation checkpointing. sgm's SDXL config sets
``use_checkpoint``; its checkpoint functions differentiate only the block's own (frozen)
parameters and inputs, so they would fail on, or silently drop, the LoRA's gradients. On leaving
(success, interrupt, error, out-of-memory) all of it is undone. No
weight is ever written; the tensors' version counters prove it, and a change raises. Weights that
are inference tensors (Forge 2) are trained around through normal copies and the original tensors
are put back (``inference_tensors``). Forge's transformer blocks add residuals in place into
tensors autograd saved (a LayerNorm's input, the block's input); while training each LayerNorm
and each checkpointed block works on a copy of its input.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.refine.inference_tensors import autograd_usable
from hyperlora_ext.refine.lora_path import TrainableLoRA

CHECKPOINT_FLAGS = ("checkpoint", "use_checkpoint")  # sgm/ldm blocks' own checkpointing switches


class UNetChangedError(HyperLoRAError):
    """A UNet tensor was modified during training (something outside refine wrote to it)."""


def transformer_blocks(unet: nn.Module) -> list[nn.Module]:
    """The SDXL transformer blocks (modules with ``attn1`` and ``attn2``): the checkpoint unit."""
    return [m for m in unet.modules() if hasattr(m, "attn1") and hasattr(m, "attn2")]


def _copies(values: tuple) -> tuple:
    return tuple(v.clone() if isinstance(v, torch.Tensor) else v for v in values)


def _on_copies(forward: Any, *args: Any, **kwargs: Any) -> Any:
    """Forge's blocks add residuals into their input in place: the block gets a copy, so the
    checkpoint's recomputation in backward sees the input as it was."""
    return forward(*_copies(args), **kwargs)


def _checkpointed(forward: Any, *args: Any, **kwargs: Any) -> Any:
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return checkpoint(partial(_on_copies, forward), *args, use_reentrant=False, **kwargs)


def _own_norm_input(module: nn.Module, args: tuple) -> tuple | None:
    """A LayerNorm saves its input for backward, and Forge's blocks then add the residual into
    that very tensor in place (``x += attn(norm(x))``): the norm reads a copy instead."""
    return _copies(args) if torch.is_grad_enabled() else None


def _attach_norm_copies(unet: nn.Module) -> list[Any]:
    return [
        module.register_forward_pre_hook(_own_norm_input)
        for module in unet.modules()
        if isinstance(module, nn.LayerNorm)
    ]


def _versions(unet: nn.Module) -> dict[str, int]:
    tensors = [*unet.named_parameters(), *unet.named_buffers()]
    return {name: tensor._version for name, tensor in tensors}


@contextmanager
def training_session(
    unet: nn.Module,
    lora: TrainableLoRA,
    layers: Mapping[str, nn.Linear],
    *,
    gradient_checkpointing: bool = True,
) -> Iterator[None]:
    """Attach ``lora`` to ``layers`` of the frozen ``unet`` for the duration of the block."""
    with (
        autograd_usable(unet),
        _attached(unet, lora, layers, gradient_checkpointing=gradient_checkpointing),
    ):
        yield


@contextmanager
def _attached(
    unet: nn.Module,
    lora: TrainableLoRA,
    layers: Mapping[str, nn.Linear],
    *,
    gradient_checkpointing: bool,
) -> Iterator[None]:
    flags = [(p, p.requires_grad) for p in unet.parameters()]
    versions = _versions(unet)
    handles: list[Any] = []
    wrapped: list[tuple[nn.Module, Any]] = []  # (block, its own instance-level forward or None)
    switched: list[tuple[nn.Module, str]] = []  # model checkpoint flags turned off
    try:
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        for module in unet.modules():
            for flag in CHECKPOINT_FLAGS:
                if module.__dict__.get(flag) is True:
                    switched.append((module, flag))
                    setattr(module, flag, False)
        handles = lora.attach(layers) + _attach_norm_copies(unet)
        if gradient_checkpointing:
            for block in transformer_blocks(unet):
                wrapped.append((block, block.__dict__.get("forward")))
                block.forward = partial(_checkpointed, block.forward)
        yield
    finally:
        for handle in handles:
            handle.remove()
        for block, own in reversed(wrapped):
            if own is None:
                del block.forward
            else:
                block.forward = own
        for module, flag in switched:
            setattr(module, flag, True)
        for parameter, required in flags:
            parameter.requires_grad_(required)
        _check_unchanged(unet, versions)


def _check_unchanged(unet: nn.Module, versions: dict[str, int]) -> None:
    now = _versions(unet)
    changed = [name for name, version in versions.items() if now.get(name) != version]
    if changed:
        raise UNetChangedError(
            f"{len(changed)} UNet tensor(s) were modified during refining (first: {changed[0]}) "
            "by something else in the WebUI; reload the checkpoint before generating"
        )
