"""First run: what the accordion shows while models are missing, and its "Download" button.

:func:`checklist` lists each model HyperLoRA needs with its exact folder (from the registry in
``hyperlora_ext.models``); :func:`render` turns it into Markdown. :func:`download_missing` fetches
what is missing with ``hyperlora_ext.download`` and reports file-level progress to a callback
(the accordion passes gradio's progress bar). Nothing here imports gradio or the WebUI.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.facts import CLIP_FILES, DEFAULT_CLIP, HYPERLORA_FILES, HYPERLORA_MODELS
from hyperlora_ext.models import (
    ModelRoots,
    inspect_antelopev2,
    inspect_clip,
    inspect_hyperlora,
)

Progress = Callable[[int, int], None]  # (files done, files in total)
_download_lock = threading.Lock()  # one download at a time, however many tabs ask


@dataclass(frozen=True)
class Item:
    """One line of the checklist."""

    part: str  # download.PARTS name: "hyperlora" | "clip" | "antelopev2"
    label: str
    folder: Path  # where it is, or where it goes
    present: bool
    missing: tuple[str, ...] = ()  # file names to add to ``folder``
    model: str = ""  # the HyperLoRA model name (part "hyperlora" only)


def checklist(roots: ModelRoots) -> list[Item]:
    """The released HyperLoRA models (and any other model folder found, e.g. a renamed one), the
    CLIP ViT-L/14 encoder and antelopev2, in that order."""
    found = {status.name: status for status in inspect_hyperlora(roots)}
    items = []
    for name in [*HYPERLORA_MODELS, *sorted(set(found) - set(HYPERLORA_MODELS))]:
        status = found.get(name)
        missing = status.missing if status else tuple(s.name for s in HYPERLORA_FILES)
        folder = status.path if status else roots.hyper_lora / name
        present = status is not None and status.complete
        items.append(Item("hyperlora", f"HyperLoRA model {name}", folder, present, missing, name))
    clips = [status for status in inspect_clip(roots) if status.complete]
    items.append(
        Item(
            "clip",
            "CLIP ViT-L/14 image encoder",
            clips[0].path if clips else roots.clip_vit / DEFAULT_CLIP,
            bool(clips),
            () if clips else tuple(spec.name for spec in CLIP_FILES),
        )
    )
    faces = inspect_antelopev2(roots)
    items.append(
        Item("antelopev2", "InsightFace antelopev2", faces.path, faces.complete, faces.missing)
    )
    return items


def ready(roots: ModelRoots) -> bool:
    """True when HyperLoRA can run (any complete model, whatever its folder is called, the CLIP
    encoder and antelopev2): the same answer as ``/hyperlora/v1/models`` and the doctor."""
    from hyperlora_ext.doctor import models_ready

    return models_ready(roots)


def render(items: Sequence[Item], roots: ModelRoots) -> str:
    """The checklist as Markdown: a line per model with its folder, then how to fix it."""
    from hyperlora_ext.doctor import ERROR, model_checks

    if ready(roots):
        return "All HyperLoRA models are installed."
    lines = ["**HyperLoRA needs these models before it can run:**", ""]
    for item in items:
        mark = "✅" if item.present else "❌"
        where = f"`{item.folder}`"
        detail = "" if item.present else f" — missing {', '.join(item.missing)}"
        lines.append(f"- {mark} {item.label}: {where}{detail}")
    if all(item.present for item in items):  # every file is there, yet something is wrong
        problems = [c for c in model_checks(roots) if c.status == ERROR]
        lines += [f"- ❌ {c.name}: {c.message}" for c in problems]
    lines += [
        "",
        "Press **Download** to fetch what is missing from the Hugging Face Hub (several GB), "
        f"or run `{roots.download_hint()}` in the WebUI's Python environment, or copy the files "
        "into the folders above; then press **Check again**. One HyperLoRA model is enough.",
    ]
    return "\n".join(lines)


def download_missing(
    roots: ModelRoots,
    progress: Progress | None = None,
    *,
    downloader: Callable[..., str] | None = None,
    remote_sizes: Callable[[str], Mapping[str, int]] | None = None,
    size_floors: Mapping[str, int] | None = None,
    log: Callable[[str], None] = print,
) -> str:
    """Fetch every missing item of the checklist; returns a one-line result for the user.

    ``downloader``/``remote_sizes``/``size_floors`` default to the hub and the real file sizes
    (see ``hyperlora_ext.download.download``); tests pass local stand-ins.
    """
    from hyperlora_ext import download

    missing = [item for item in checklist(roots) if not item.present]
    if not missing:
        return "Nothing to download: all models are installed."
    if not _download_lock.acquire(blocking=False):
        return "A download is already running; wait for it to finish."
    try:
        plan: dict[str, Any] = {
            "parts": sorted({item.part for item in missing}),
            "models": [item.model for item in missing if item.part == "hyperlora"],
        }
        if size_floors is not None:
            plan["size_floors"] = size_floors
        items = download.plan_downloads(roots, **plan)
        outcomes = download.download(
            items, downloader=downloader, remote_sizes=remote_sizes, log=log, progress=progress
        )
    except HyperLoRAError as error:
        return f"Download failed: {error}"
    finally:
        _download_lock.release()
    installed = sum(outcome.action == "installed" for outcome in outcomes)
    left = [item.label for item in checklist(roots) if not item.present]
    if left:
        return f"Downloaded {installed} file(s), but still missing: {', '.join(left)}."
    return f"Downloaded {installed} file(s): HyperLoRA is ready."
