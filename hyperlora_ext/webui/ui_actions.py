"""What the accordion's controls do: the services seam, preview, save, preload, the first-run
check and download, and the status line. :mod:`.ui` lays the components out and wires their
events to these; nothing here creates a component.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hyperlora_ext.args import HyperLoRAArgs
from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.facts import ERROR_LABEL
from hyperlora_ext.identity_value import Identity
from hyperlora_ext.webui import ui_hints
from hyperlora_ext.wording import counted

DOWNLOAD_DESC = "Downloading HyperLoRA models"
Progress = Callable[[int, int], None]  # (files done, files in total)
Log = Callable[[str], None]


@dataclass
class Services:
    """What the accordion's buttons do; tests and other hosts may substitute their own."""

    list_models: Callable[[], list[str]]
    list_identities: Callable[[], list[str]]
    preview: Callable[[HyperLoRAArgs], tuple[list[tuple[Any, str]], str]]
    save: Callable[[HyperLoRAArgs, str, bool], str]  # (arguments, name, overwrite) -> status
    # First run: (models ready?, Markdown checklist) and the download of what is missing.
    setup: Callable[[], tuple[bool, str]] = lambda: (True, "")
    download: Callable[[Progress | None, Log], str] = lambda progress, log: ""
    trigger_words_default: Callable[[], bool] = lambda: HyperLoRAArgs().trigger_words
    # Turning HyperLoRA on starts loading the encoders for this model in the background.
    preload: Callable[[str], None] = lambda model: None
    identity_store: Callable[[], Any] | None = None  # the saved identities' gallery; None: none


# ------------------------------------------------------------------ event handlers
def on_preview(services: Services, values: Sequence[Any]) -> tuple[Any, str]:
    """The "Faces used" gallery and status line for the accordion's current values."""
    try:
        args = HyperLoRAArgs.from_positional(list(values))
    except HyperLoRAError as error:
        return [], f"**{error}**"
    if not args.images and not args.identity:
        return [], ""
    try:
        return services.preview(args)
    except Exception as error:  # a button's edge: show every failure in the status line
        return [], failure_text(error)


def on_save(services: Services, name: str, overwrite: bool, values: Sequence[Any]) -> str:
    try:
        return services.save(HyperLoRAArgs.from_positional(list(values)), name, overwrite)
    except Exception as error:
        return failure_text(error)


def on_enable(services: Services, enabled: bool, model: str) -> None:
    if enabled:
        try:
            services.preload(model)
        except Exception:  # the next job reports what is wrong; the console has the trace
            traceback.print_exc()


def check_again(gr: Any, services: Services, current: str, lists: int) -> tuple[Any, ...]:
    """Re-read the folders: checklist, its visibility, and the model and ``lists`` identity
    lists."""
    is_ready, text = safe_setup(services)
    models = safe_list(services.list_models)
    chosen = current if current in models else (models[0] if models else "")
    identities = ["", *safe_list(services.list_identities)]
    return (
        gr.update(visible=not is_ready),
        text,
        gr.update(choices=ui_hints.model_choices(gr, models), value=chosen),
        *[gr.update(choices=identities) for _ in range(lists)],
    )


def download_models(services: Services, progress: Any = None) -> str:
    """Run the download service, reporting each file and step to ``progress`` (a gr.Progress)."""
    done = [0, None]  # files done, files in total (unknown until the first file is handled)

    def show(text: str) -> None:
        if progress is not None:
            progress(tuple(done), desc=text)

    def step(count: int, total: int) -> None:
        done[:] = [count, total]
        show(DOWNLOAD_DESC)

    def log(line: str) -> None:
        print(f"HyperLoRA: {line.strip()}")  # the console shows the same as the CLI
        show(f"{DOWNLOAD_DESC}: {line.strip()}")

    show(DOWNLOAD_DESC)
    try:
        return services.download(step, log)
    except (HyperLoRAError, OSError) as error:  # e.g. no permission to write the folder
        return f"**Download failed: {error}**"


def safe_setup(services: Services) -> tuple[bool, str]:
    try:
        return services.setup()
    except Exception as error:  # checking folders must never break building the UI
        return False, f"Could not check the HyperLoRA models: {error}"


def likeness_status(generation_info: str) -> Any:
    """The status line for a generation's info JSON; no change when nothing was scored."""
    import gradio as gr

    from hyperlora_ext.webui.likeness import KEY

    try:
        texts = json.loads(generation_info or "{}").get("infotexts") or []
    except (ValueError, AttributeError):
        return gr.update()
    found = [re.search(rf"{KEY}: ([^,\n]+)", str(text)) for text in texts]
    scores = [match.group(1) for match in found if match]
    return f"Likeness: {', '.join(scores)}" if scores else gr.update()


def failure_text(error: Exception) -> str:
    """The status line for a failed action; unexpected errors also go to the console."""
    if isinstance(error, HyperLoRAError):
        return f"**{error}**"
    traceback.print_exc()
    return f"**{ERROR_LABEL}: {type(error).__name__}: {error}**"


def safe_list(lister: Callable[[], list[str]]) -> list[str]:
    try:
        return list(lister())
    except Exception:  # a listing must never break building the UI
        return []


# ------------------------------------------------------------------ default services
def default_services() -> Services:
    from hyperlora_ext.webui import settings
    from hyperlora_ext.webui.host import identity_store, list_models, preload

    return Services(
        list_models,
        _list_identities,
        _preview,
        _save,
        setup=_setup,
        download=_download,
        trigger_words_default=lambda: settings.current().trigger_words,
        preload=preload,
        identity_store=identity_store,
    )


def _setup() -> tuple[bool, str]:
    from hyperlora_ext.webui import first_run
    from hyperlora_ext.webui.host import model_roots

    roots = model_roots()
    items = first_run.checklist(roots)
    return first_run.ready(roots), first_run.render(items, roots)


def _download(progress: Progress | None, log: Log) -> str:
    from hyperlora_ext.webui import first_run
    from hyperlora_ext.webui.host import model_roots

    return first_run.download_missing(model_roots(), progress, log=log)


def _list_identities() -> list[str]:
    from hyperlora_ext.webui.host import identity_store

    return identity_store().names()


def _preview(args: HyperLoRAArgs) -> tuple[list[tuple[Any, str]], str]:
    from hyperlora_ext.webui import host, studio

    identity = studio.resolve(args.replace(mix=(), identity=""), studio.Context(host.services()))
    gallery = [
        (r.preview or r.thumbnail, _caption(number, r))
        for number, r in enumerate(identity.reports, 1)
        if (r.preview or r.thumbnail) is not None
    ]
    return gallery, status_line(identity, args.weight)


def _save(args: HyperLoRAArgs, name: str, overwrite: bool = False) -> str:
    """Save through the studio, with the API's name rules: a name is refused, never rewritten,
    and an existing identity is replaced only with "Overwrite" ticked."""
    from hyperlora_ext.webui import host, studio

    services = host.services()
    studio.check_new_name(name, services.store(), overwrite)  # before the encoding
    identity = studio.resolve(args, studio.Context(services))
    record = studio.save(name, identity, args, services.store(), overwrite=overwrite)
    return (
        f"Saved `{record.name}.safetensors`: pick it under 'Saved identity', or use it as "
        f"`<lora:{record.name}:{args.weight:g}>` (Lora tab, refresh)."
    )


def _caption(number: int, report: Any) -> str:
    """Short enough for a thumbnail (the status line has the details): "1", "2: skipped"."""
    if not report.used:
        return f"{number}: skipped"
    faces = "" if report.faces_found == 1 else f": {counted(report.faces_found, 'face')}"
    return f"{number}{faces}"


def status_line(identity: Identity, weight: float | None = None) -> str:
    parts = [f"{counted(identity.photos, 'photo')} encoded in {identity.seconds:.1f} s"]
    if identity.cache_hit:
        parts[0] += " (cached)"
    parts += identity.warnings
    parts += [
        f"{r.label}: {counted(r.faces_found, 'face')} found, one used (see 'Face')"
        for r in identity.reports
        if r.used and r.faces_found > 1
    ]
    parts += host_warnings()
    return ui_hints.with_weight_note(" · ".join(parts), weight)


def host_warnings() -> list[str]:
    """Settings of the WebUI that work against HyperLoRA."""
    try:
        from modules import shared
    except ImportError:
        return []
    # ADetailer's script list is not repeated here: the accordion's ADetailer row says it.
    return [w for w in [ui_hints.clip_warning(shared.opts)] if w]
