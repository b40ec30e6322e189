"""The one value of an identity, whoever made it (photos, a saved identity, a mix) and whoever
reads it (the patch, the infotext, the API response, the store)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True, kw_only=True, eq=False)
class Identity:
    """An identity LoRA and what is known of how it was made. Producers build it once; consumers
    read it unchanged (tensors are the holder's own: the pipeline hands out copies)."""

    lora: dict[str, torch.Tensor]
    digest: str  # lora_format.lora_digest of ``lora``
    model: str  # the HyperLoRA model that made it
    # The fused tokens before the per-token normalisation (Q, H) float32: what identities are
    # mixed by; None for a saved identity (read from the store only when mixing).
    tokens: torch.Tensor | None = None
    # (512,) float32: normalised mean ArcFace embedding of the photos (the likeness reference);
    # None when unknown (an identity saved before references were recorded).
    likeness_reference: Any = None
    photos: int = 0  # photos used
    reports: tuple[Any, ...] = ()  # encoders.features.PhotoReport, one per input photo
    preview: Any = None  # a face crop of the first used photo (PIL image), for a save
    name: str = ""  # the saved identity's name, when it is one
    seconds: float = 0.0  # how long making (or finding) it took
    cache_hit: bool = False
    peak_rss_mb: float | None = None  # None where the platform does not report it
    peak_vram_mb: float | None = None
    # The encoders' dtype ("fp32", "bf16", "fp16"): it changes the LoRA's last bits; "" when
    # unknown (a saved identity).
    dtype: str = ""
    # What the request asked for that had no effect or may not give what was asked (the studio's
    # notes, e.g. a model a mix ignored): shown beside the photos' warnings.
    notes: tuple[str, ...] = ()

    @property
    def warnings(self) -> list[str]:
        """One line per photo that was not used, and why; then the notes."""
        return [f"{r.label}: {r.reason}" for r in self.reports if not r.used] + list(self.notes)
