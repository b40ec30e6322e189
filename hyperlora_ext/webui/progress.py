"""The WebUI's progress text and its Interrupt / Skip buttons while the identity is encoded.

Encoding runs inside ``process()``, before the WebUI's own progress reporting starts, and takes
tens of seconds on a CPU. The identity pipeline calls :func:`encoding_stage` between its stages:
it shows the stage in the progress text (``shared.state.textinfo``) and stops the encoding when
the user pressed Interrupt or Skip (``shared.state.interrupted`` / ``skipped``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hyperlora_ext.errors import EncodingStopped

PREFIX = "HyperLoRA: "


def _state() -> Any:
    try:
        from modules import shared
    except ImportError:
        return None
    return getattr(shared, "state", None)


def interrupted() -> bool:
    """True when the user pressed Interrupt (the job makes no more images)."""
    return bool(getattr(_state(), "interrupted", False))


def encoding_stage(stage: str) -> None:
    """The identity pipeline's progress callback: honour Interrupt/Skip, then show ``stage``."""
    state = _state()
    if state is None:
        return
    if getattr(state, "interrupted", False):
        raise EncodingStopped("interrupted while encoding the photos")
    if getattr(state, "skipped", False):
        raise EncodingStopped(
            "Skip was pressed while encoding the photos: this image is made without the identity"
        )
    state.textinfo = f"{PREFIX}{stage}"


@contextmanager
def encoding() -> Iterator[Callable[[str], None]]:
    """Yield the stage callback; afterwards the progress text is what it was before."""
    state = _state()
    previous = getattr(state, "textinfo", None)
    try:
        yield encoding_stage
    finally:
        if state is not None:
            state.textinfo = previous
