"""Devices users type (``--hyperlora-device``, the CLI's ``--device``) as torch devices."""

from __future__ import annotations

import torch

from .errors import HyperLoRAError


def parse_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device; HyperLoRAError for text torch does not understand."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise HyperLoRAError(f"unknown device {device!r}: use cpu, cuda, cuda:N or mps") from None


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device this torch build can use (for devices users type)."""
    parsed = parse_device(device)
    usable = {
        "cpu": lambda: True,
        "cuda": torch.cuda.is_available,
        "mps": lambda: torch.backends.mps.is_available(),
    }
    if parsed.type not in usable:
        raise HyperLoRAError(f"device {device!r} is not supported: use cpu, cuda, cuda:N or mps")
    if not usable[parsed.type]():
        raise HyperLoRAError(
            f"device {device!r} is not available: this torch ({torch.__version__}) has no "
            f"{parsed.type.upper()} support or sees no such GPU. Use the device cpu instead."
        )
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise HyperLoRAError(
            f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) are visible"
        )
    return parsed
