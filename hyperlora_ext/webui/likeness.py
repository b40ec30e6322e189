"""The likeness score of every generated image, written beside its HyperLoRA parameters.

Called from the script's ``postprocess_image_after_composite`` hook: the last one before A1111 and
Forge write an image's infotext, after hires fix, ADetailer's face pass (a ``postprocess_image``
hook) and the inpainting composite, so the final image is scored. Each image's infotext gets
``HyperLoRA likeness: 0.62`` (or ``no face``); X/Y/Z cells are separate jobs, so each cell shows
its own. A failure to score never costs the image: it becomes a ``HyperLoRA warning`` and a
console line.
"""

from __future__ import annotations

import traceback
from typing import Any

from hyperlora_ext.webui import adetailer, infotext, job_state, settings

KEY = "HyperLoRA likeness"


def reset(p: Any) -> None:
    """``process()``: a new job, no scores yet."""
    state = job_state.of(p)
    state.likeness, state.base_warning = [], job_state.UNSET


def score(p: Any, image: Any) -> None:
    """Score ``image`` against the job's identity and write the result for its infotext."""
    if adetailer.is_inner(p):
        return  # a face box of ADetailer: the main job scores the final image
    params = p.extra_generation_params
    params.pop(KEY, None)
    state = job_state.peek(p)
    identity = state.identity if state is not None else None
    if state is None or identity is None or not settings.current().likeness:
        return
    if identity.likeness_reference is None:
        _warn(p, "likeness not scored: " + _no_reference(identity))
        return
    try:
        from hyperlora_ext.webui import host

        label = f"image {len(state.likeness) + 1}"
        [result] = host.pipeline().likeness([image], identity.likeness_reference, labels=[label])
    except Exception as error:  # the image stays; the failure is said, not swallowed
        _warn(p, f"likeness not scored: {type(error).__name__}: {error}")
        print(f"HyperLoRA warning: scoring the likeness failed\n{traceback.format_exc()}")
        return
    params[KEY] = result.text
    _warn(p, None)
    state.likeness = [*state.likeness, result]


def summary(p: Any) -> str:
    """``likeness 0.62, no face`` for the job's images, or "" when none was scored."""
    state = job_state.peek(p)
    scores = state.likeness if state is not None else []
    return f"likeness {', '.join(s.text for s in scores)}" if scores else ""


def _no_reference(identity: Any) -> str:
    if identity.name:
        return (
            f"the saved identity {identity.name!r} was saved without a likeness reference (before "
            "this version); save it again from its photos to score images against it"
        )
    return "this identity has no likeness reference"


def _warn(p: Any, note: str | None) -> None:
    """The job's own warning plus this image's likeness note (one image's note never sticks to
    the next image of the batch)."""
    params = p.extra_generation_params
    state = job_state.of(p)
    if state.base_warning is job_state.UNSET:
        state.base_warning = params.get(infotext.WARNING)
    base = state.base_warning
    parts = [str(text) for text in (base, note) if text]
    if parts:
        params[infotext.WARNING] = "; ".join(parts)
    else:
        params.pop(infotext.WARNING, None)
    if note:
        p.comment(f"HyperLoRA: {note}")
