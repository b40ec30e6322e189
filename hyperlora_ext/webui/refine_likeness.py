"""Likeness before and after refining: one fixed-seed image with each identity, scored.

Both images come from the loaded checkpoint with the same prompt, seed and size, the identity as
``<lora:NAME:1>`` (the Lora extension reads the new file on first use), made while holding the
WebUI's queue lock; each is scored against the source identity's likeness reference. Opt-in:
it costs two generations.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.facts import TRIGGER_WORDS
from hyperlora_ext.webui.services import Services

SEED = 20250101
PROMPT = "{tag} " + TRIGGER_WORDS + ", a photo of a person, portrait, looking at the camera"
STEPS = 20
SAMPLER = "Euler a"  # in both WebUIs
SIZE = 1024  # SDXL's native size
NOT_ASKED = (
    "not scored (ask for it with score_likeness / the 'Score likeness' box: two fixed-seed "
    "images, one with each identity)"
)


@dataclass(frozen=True)
class LikenessPair:
    before: float | None
    after: float | None
    note: str  # why a side is missing, or how it was measured

    def response(self) -> dict[str, Any]:
        return {"likeness_before": self.before, "likeness_after": self.after,
                "likeness_note": self.note}  # fmt: skip


def generate(sd_model: Any, name: str) -> Any:
    """One fixed-seed txt2img image with ``<lora:NAME:1>`` (no scripts, nothing saved)."""
    from modules import processing

    p = processing.StableDiffusionProcessingTxt2Img(
        sd_model=sd_model, prompt=PROMPT.format(tag=f"<lora:{name}:1>"), negative_prompt="",
        seed=SEED, steps=STEPS, width=SIZE, height=SIZE,
    )  # fmt: skip
    p.do_not_save_samples = p.do_not_save_grid = True
    p.sampler_name = SAMPLER  # explicit, as an API request would give it
    processed = processing.process_images(p)
    if not processed.images:
        raise HyperLoRAError(f"the fixed-seed image with {name!r} was not made (interrupted?)")
    return processed.images[0]


def score_pair(services: Services, sd_model: Any, source: str, refined: str) -> LikenessPair:
    """The likeness of the fixed-seed image with ``source`` and with ``refined``."""
    store, pipeline = services.store(), services.pipeline()
    reference = store.likeness_reference(source)  # NoReferenceError says why there is none
    with services.lock:
        images = [generate(sd_model, source), generate(sd_model, refined)]
    before, after = pipeline.likeness(images, reference, ["before", "after"])
    missing = [side for side, s in (("before", before), ("after", after)) if s.score is None]
    note = f"seed {SEED}, {STEPS} steps, {SIZE}x{SIZE}, scored against {source!r}'s reference"
    if missing:
        note += f"; no face in the {' and '.join(missing)} image"
    return LikenessPair(_round(before.score), _round(after.score), note)


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def after_refine(
    services: Services, sd_model: Any, source: str, saved: str | None, wanted: bool
) -> LikenessPair:
    """The pair when ``wanted`` and something was saved; otherwise, or on failure, why not (the
    refined identity is saved either way, so a scoring failure never fails the refine)."""
    if not wanted:
        return LikenessPair(None, None, NOT_ASKED)
    if saved is None:
        return LikenessPair(None, None, "not scored: the refine was interrupted, nothing saved")
    try:
        return score_pair(services, sd_model, source, saved)
    except HyperLoRAError as error:
        return LikenessPair(None, None, f"not scored: {error}")
    except Exception as error:  # a bug: in the console, and said in the answer
        traceback.print_exc()
        return LikenessPair(
            None, None, f"not scored: internal error {type(error).__name__}: {error}"
        )
