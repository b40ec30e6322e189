"""Advice on generation settings, against what the HyperLoRA authors trained and recommend.

Pure functions of plain values (no WebUI import): the WebUI layer reads the options and shows what
these return. Each returns "" when there is nothing to say, so a warning appears only when true.

CLIP layer. The models were trained with CLIP's penultimate layer ("stop_at_clip_layer -2"). For
SDXL both WebUIs already use it by default, so "Clip skip" 1 is fine there:

- A1111 1.10 (``modules/sd_hijack_clip.py``, ``FrozenCLIPEmbedderForSDXLWithCustomWords``): CLIP-L
  uses the hidden layer of the SDXL config (``layer_idx: 11``, the penultimate) and OpenCLIP-G its
  penultimate layer, whatever Clip skip says, unless the "Clip skip SDXL" option
  (``sdxl_clip_l_skip``) is on; then CLIP-L uses ``hidden_states[-Clip skip]``, which is the
  penultimate layer only for Clip skip 2.
- Forge 2 (``backend/text_processing/classic_engine.py``): the layer is ``-max(clip_skip, 2)`` for
  both SDXL encoders (``minimal_clip_skip=2`` in ``backend/diffusion_engine/sdxl.py``), so only a
  Clip skip above 2 leaves the penultimate layer; ``sdxl_clip_l_skip`` is not read.
"""

from __future__ import annotations

from typing import Literal

from hyperlora_ext.facts import TYPICAL_WEIGHTS, WEIGHT_ADVICE_RANGE, WORKFLOW_WEIGHTS

Host = Literal["a1111", "forge"]

TRAINED_CLIP_SKIP = 2  # the penultimate layer, as in training


def sdxl_clip_skip(host: Host, clip_skip: int, sdxl_clip_l_skip: bool = False) -> int:
    """Which layer from the end (1 = last, 2 = penultimate) SDXL's CLIP-L uses on ``host``."""
    if host == "forge":
        return max(clip_skip, TRAINED_CLIP_SKIP)
    if host == "a1111":
        return clip_skip if sdxl_clip_l_skip else TRAINED_CLIP_SKIP
    raise ValueError(f"unknown WebUI {host!r}: expected 'a1111' or 'forge'")


def clip_layer_warning(host: Host, clip_skip: int, sdxl_clip_l_skip: bool = False) -> str:
    """A warning when SDXL's text encoder does not use CLIP's penultimate layer, else ""."""
    used = sdxl_clip_skip(host, clip_skip, sdxl_clip_l_skip)
    if used == TRAINED_CLIP_SKIP:
        return ""
    trained = "HyperLoRA was trained with CLIP's penultimate layer (Clip skip 2)"
    if host == "forge":
        return (
            f"Clip skip is {clip_skip}, so SDXL's text encoders use {_layer_name(used)}; "
            f"{trained}: set 'Clip skip' at the top of the page to 1 or 2 (the same for SDXL)"
        )
    return (
        f"Clip skip is {clip_skip} with 'Clip skip SDXL' on, so SDXL's CLIP-L uses "
        f"{_layer_name(used)}; {trained}: in Settings > Stable Diffusion set 'Clip skip' to 2, "
        f"or turn 'Clip skip SDXL' off"
    )


def _layer_name(from_end: int) -> str:
    return "its last layer" if from_end == 1 else f"layer {from_end} from the end"


def weight_warning(weight: float) -> str:
    """A note when ``weight`` is far outside what the authors recommend, else "".

    Weight 0 is "off" (nothing is applied), so it gets no note.
    """
    low, high = WEIGHT_ADVICE_RANGE
    if weight == 0 or low <= weight <= high:
        return ""
    if weight < 0:
        where = "negative: it pushes the face away from the person"
    elif weight < low:
        where = "far below it: the likeness will be weak"
    else:
        where = "far above it"
    return f"weight {weight:g} is {where}. {weight_hint()}"


def weight_hint() -> str:
    """The authors' advice on the weight, in one sentence (for the accordion's hint)."""
    return (
        f"The HyperLoRA authors recommend {_span(TYPICAL_WEIGHTS)} (higher with long prompts, "
        f"lower for more editability); their workflows use {_span(WORKFLOW_WEIGHTS)}"
    )


def _span(bounds: tuple[float, float]) -> str:
    return f"{bounds[0]:g}–{bounds[1]:g}"
