"""What the accordion says about its controls: one-line hints, which control shows when, the
model list with what each model is for, and the advice notes of its status line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hyperlora_ext import advice
from hyperlora_ext.facts import FACE_LABELS, PHOTOS

MODEL_INFO = (
    "fidelity: closest likeness (the authors' default); edit: follows the prompt more freely"
)
FACE_INDEX = "Which face of a group photo: 0 is the leftmost, 1 the next to the right, ..."
PHOTO_WEIGHTS = (
    "Trust some photos more: one number per photo, in upload order; 0 leaves a photo out. "
    "Leave empty when all photos are equally good"
)
MIX = (
    f"Blend saved identities (and {PHOTOS}, this panel's photos): name:weight, ... e.g. to give "
    "a face some of another's features. Replaces the photos and 'Saved identity'"
)
SLIDER_SIDE = (
    "Slider: an identity direction from the negative to the positive side, added on top of "
    "the identity (e.g. older vs younger photos of one person). Leave empty for no slider"
)
SLIDER_STRENGTH = "How far along the slider: 0 is off, negative goes towards the negative side"


def model_choices(gr: Any, models: list[str]) -> list[Any]:
    """The model dropdown's choices: gradio 4 shows what each model is for while the value
    stays the folder name (pasted infotexts and the API use it); gradio 3.41's dropdown takes
    plain names only, so there the hint above the list says it."""
    if int(gr.__version__.split(".")[0]) < 4:
        return list(models)
    from hyperlora_ext.models import describe_hyperlora

    return [(describe_hyperlora(name), name) for name in models]


def clip_warning(opts: Any) -> str:
    """The CLIP-layer warning for the WebUI's options (""; also outside a known WebUI)."""
    from hyperlora_ext.errors import HyperLoRAError
    from hyperlora_ext.webui.host import detect_host

    try:
        host: Any = detect_host()
    except HyperLoRAError:
        return ""  # no Lora system: the job says so
    clip_skip = getattr(opts, "CLIP_stop_at_last_layers", 1)
    sdxl_clip_l_skip = getattr(opts, "sdxl_clip_l_skip", False)
    return advice.clip_layer_warning(host, int(clip_skip), bool(sdxl_clip_l_skip))


def with_weight_note(status: str, weight: float | None) -> str:
    """``status`` with its weight note (if any) replaced by the one for ``weight``."""
    parts = [p for p in (status or "").split(" · ") if p and not p.endswith(advice.weight_hint())]
    note = advice.weight_warning(weight) if weight is not None else ""
    return " · ".join([*parts, note] if note else parts)


def wire(gr: Any, by_field: Mapping[str, Any], status: Any) -> None:
    """Face index shows only with the face choice "Index"; moving the weight updates its note."""

    def face_index_visible(face: str) -> Any:
        return gr.update(visible=face in (FACE_LABELS["index"], "index"))

    by_field["face"].change(
        face_index_visible, inputs=[by_field["face"]], outputs=[by_field["face_index"]]
    )
    by_field["weight"].change(
        with_weight_note, inputs=[status, by_field["weight"]], outputs=[status]
    )
