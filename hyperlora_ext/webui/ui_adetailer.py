"""The accordion's ADetailer row: while ADetailer's face pass would run without the identity, a
one-click fix that adds ``hyperlora`` to ADetailer's script list (a saved change of the WebUI's
settings, visible in Settings > ADetailer) and a button that takes it out again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hyperlora_ext.webui import adetailer

FIX_LABEL = "Add HyperLoRA to ADetailer's scripts"
UNDO_LABEL = "Take HyperLoRA out of ADetailer's scripts"


def text(setup: adetailer.Setup) -> str:
    problem = setup.problem()
    if problem is not None:
        return f"⚠ {problem}."
    if setup.installed and setup.listed:
        where = f"'{adetailer.OUR_STEM}' is in {adetailer.SETTING_LABEL}"
        return f"ADetailer's face pass keeps the identity ({where})."
    return ""


def build(gr: Any, elem_id: Callable[[str], str]) -> dict[str, Any]:
    """The row (hidden without ADetailer) and its two buttons, wired."""
    setup = _safe_read()
    with gr.Group(visible=setup.installed, elem_id=elem_id("adetailer")) as group:
        note = gr.Markdown(text(setup), elem_id=elem_id("adetailer_note"))
        with gr.Row():
            fix = gr.Button(FIX_LABEL, visible=not setup.keeps_identity, elem_id=elem_id("ad_fix"))
            undo = gr.Button(UNDO_LABEL, visible=setup.listed, elem_id=elem_id("ad_undo"))
    fix.click(fn=lambda: _updates(gr, listed=True), inputs=[], outputs=[note, fix, undo])
    undo.click(fn=lambda: _updates(gr, listed=False), inputs=[], outputs=[note, fix, undo])
    return {"group": group, "note": note, "fix": fix, "undo": undo}


def _updates(gr: Any, *, listed: bool) -> tuple[Any, Any, Any]:
    try:
        setup = adetailer.set_listed(listed)
        message = text(setup)
    except Exception as error:  # a click must say what went wrong, not hang the button
        setup = _safe_read()
        message = f"Could not change ADetailer's settings: {type(error).__name__}: {error}"
    return (
        gr.update(value=message),
        gr.update(visible=not setup.keeps_identity),
        gr.update(visible=setup.listed),
    )


def _safe_read() -> adetailer.Setup:
    try:
        return adetailer.read()
    except Exception:  # the accordion must build even if the settings cannot be read
        return adetailer.Setup(installed=False)
