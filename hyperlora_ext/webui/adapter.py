"""The interface every host adapter (A1111, Forge) implements, and its report type."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

# Every adapter names its patch "<prefix><digest>" so a new face (new tensors) re-applies and our
# entries can be found again after a crashed job.
NAME_PREFIX = "hyperlora_"
SDXL_BASE_CHANNELS = 320  # model_channels of the SDXL base UNet (the refiner has 384)


@dataclass(frozen=True)
class ApplyReport:
    """How many of the LoRA's layers were patched into the live UNet.

    ``expected`` counts the layers in the LoRA (560 for a full SDXL identity); ``skipped`` counts
    those left out (no such layer, or its live shape differs); ``reasons`` says why, one line per
    skipped layer, or one line for a model the identity cannot apply to at all.
    """

    matched: int
    expected: int
    skipped: int = 0
    reasons: tuple[str, ...] = ()

    def summary(self) -> str:
        return f"{self.matched}/{self.expected} layers"


# What a patch is in its job, and the prefix its name gets (names are unique within a job).
IDENTITY, SLIDER_POSITIVE, SLIDER_NEGATIVE = "identity", "slider_positive", "slider_negative"
ROLE_PREFIXES = {IDENTITY: "", SLIDER_POSITIVE: "slider+", SLIDER_NEGATIVE: "slider-"}


@dataclass(frozen=True)
class Patch:
    """One LoRA to patch in: the identity, or one side of a slider (negative ``weight``)."""

    lora: Mapping[str, torch.Tensor]
    weight: float
    name: str  # unique within a job: the digest, with the role's prefix (ROLE_PREFIXES)
    role: str = IDENTITY
    digest: str = ""  # the LoRA's digest (the infotext names it)
    model: str = ""  # the HyperLoRA model that made it (messages name it)

    @classmethod
    def of(
        cls,
        lora: Mapping[str, torch.Tensor],
        digest: str,
        weight: float,
        role: str,
        model: str = "",
    ) -> Patch:
        return cls(lora, weight, ROLE_PREFIXES[role] + digest, role, digest, model)


class HostAdapter(Protocol):
    """Patches identity LoRAs into the host WebUI's UNet for one job and takes them out again."""

    def apply_all(self, p: Any, patches: Sequence[Patch]) -> list[ApplyReport]:
        """Make every LoRA of ``patches`` active at its weight, at once; one report each.

        Replaces whatever HyperLoRA patched before. Idempotent: calling it again with the same
        patches (hires fix, every batch) changes nothing.
        """
        ...

    def check(self, p: Any, lora: Mapping[str, torch.Tensor], name: str) -> ApplyReport:
        """What :meth:`apply` would patch into this job's UNet, without patching anything."""
        ...

    def restore(self, p: Any) -> None:
        """Take the identity out; afterwards the UNet weights equal the pre-job weights."""
        ...


def unsupported_reason(sd_model: Any) -> str | None:
    """Why HyperLoRA cannot patch this checkpoint, or None for an SDXL base model."""
    if sd_model is None:
        return "no checkpoint is loaded"
    if getattr(sd_model, "is_sd3", False):
        return "the checkpoint is SD3; HyperLoRA needs an SDXL base checkpoint"
    if not getattr(sd_model, "is_sdxl", False):
        family = "SD1.x" if getattr(sd_model, "is_sd1", False) else None
        family = family or ("SD2.x" if getattr(sd_model, "is_sd2", False) else "not SDXL")
        return f"the checkpoint is {family}; HyperLoRA needs an SDXL base checkpoint"
    if getattr(sd_model, "is_ssd", False):
        return "the checkpoint is SSD-1B (a pruned SDXL); HyperLoRA needs the full SDXL UNet"
    if _is_refiner(sd_model):
        return "the checkpoint is the SDXL refiner; HyperLoRA needs an SDXL base checkpoint"
    return None


def _is_refiner(sd_model: Any) -> bool:
    if "refiner" in type(sd_model).__name__.lower():
        return True
    unet = getattr(getattr(sd_model, "model", None), "diffusion_model", None)
    channels = getattr(unet, "model_channels", SDXL_BASE_CHANNELS)
    return channels != SDXL_BASE_CHANNELS
