"""The one services object of the WebUI layer, and the process-wide pipeline it hands out.

:func:`hyperlora_ext.webui.host.services` builds it from the running WebUI; tests and other hosts
build their own. The script, the accordion and the HTTP routes all reach the pipeline, the saved
identities, the model folders and the settings through it. :func:`release` (``on_script_unloaded``)
frees the pipeline, so a Reload UI does not keep a second copy of the encoders.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from hyperlora_ext.identity import IdentityPipeline


@dataclass(frozen=True)
class Services:
    """What HyperLoRA's WebUI parts need from the host."""

    roots: Callable[[], Any]  # -> models.ModelRoots
    pipeline: Callable[[], IdentityPipeline]
    store: Callable[[], Any]  # -> identities.IdentityStore
    settings: Callable[[], Any] = lambda: None  # -> webui.settings.Settings
    lock: Any = field(default_factory=nullcontext)  # one GPU job at a time (the WebUI's queue)
    version: str = ""
    preload: Callable[[], None] = lambda: None  # start loading the encoders in the background
    # Faces for /detect; None: the pipeline's own (one copy of the ONNX sessions).
    face_analyzer: Callable[[], Any] | None = None

    def default_model(self) -> str:
        """The model used when none is chosen: fidelity when installed."""
        from hyperlora_ext.models import default_hyperlora

        return default_hyperlora(self.roots())

    def analyzer(self) -> Any:
        """The face analyzer for /detect (by default the pipeline's own)."""
        if self.face_analyzer is not None:
            return self.face_analyzer()
        return self.pipeline().models.face_analyzer()


# ------------------------------------------------------- the process-wide pipeline
_pipeline: IdentityPipeline | None = None
_pipeline_key: Hashable | None = None
_pipeline_lock = threading.Lock()


def shared_pipeline(key: Hashable, build: Callable[[], IdentityPipeline]) -> IdentityPipeline:
    """The process-wide pipeline for the settings ``key``; ``build`` makes a new one (unloading
    the old one) when there is none or it was built for other settings."""
    global _pipeline, _pipeline_key
    with _pipeline_lock:
        if _pipeline is not None and _pipeline_key == key:
            return _pipeline
        if _pipeline is not None:
            _pipeline.unload()
        _pipeline, _pipeline_key = build(), key
        return _pipeline


def current_pipeline() -> IdentityPipeline | None:
    """The process-wide pipeline, or None before the first one is made (or after release)."""
    return _pipeline


def release() -> None:
    """``on_script_unloaded``: unload the pipeline's encoders and forget it."""
    global _pipeline, _pipeline_key
    with _pipeline_lock:
        if _pipeline is not None:
            _pipeline.unload()
        _pipeline = _pipeline_key = None
