"""Keep a refine result as a new saved identity (``NAME-refined`` by default).

The refined identity is an ordinary identity LoRA (usable by name and as ``<lora:>``); its record
carries the source's model, photo count and likeness reference, and under ``options["refine"]``
the run: steps, learning rate, photos, base checkpoint hash and the loss curve. It has no tokens
file: its LoRA no longer comes from HyperLoRA's token space, so a mix that names it says so.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from hyperlora_ext.refine.trainer import RefineResult
from hyperlora_ext.store import IdentityRecord, IdentityStore

SUFFIX = "-refined"
REFINE_OPTION = "refine"


def refined_name(source: str) -> str:
    return f"{source}{SUFFIX}"


def refine_record(result: RefineResult) -> dict[str, Any]:
    """The run as stored in the identity's record (and returned by the API)."""
    record = json.loads(result.metadata["hyperlora_refine"])
    record["interrupted"] = result.interrupted
    record["seconds"] = round(result.seconds, 2)
    return record


def save_refined(
    store: IdentityStore,
    source: str,
    result: RefineResult,
    name: str | None = None,
    *,
    overwrite: bool = False,
    dtype: torch.dtype = torch.float16,
) -> IdentityRecord:
    """Save ``result`` beside identity ``source`` as ``name`` (default ``SOURCE-refined``).

    fp16 halves the file; the refine update (~1e-3 relative after 50 steps) is well above fp16's
    resolution, unlike bf16's.
    """
    base = store.record(source)
    lora = {
        key: value if key.endswith(".alpha") else value.to(dtype)
        for key, value in result.lora.items()
    }
    options = {**base.options, "refined_from": source, REFINE_OPTION: refine_record(result)}
    return store.save(
        name or refined_name(source), lora, model=base.model, photos=base.photos,
        options=options, overwrite=overwrite, reference_embedding=base.reference_embedding or None,
    )  # fmt: skip
