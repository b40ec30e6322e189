"""The HyperLoRA accordion (gradio 3.41 for A1111/reForge, 4.x for Forge).

``build_ui`` only creates components and wires events: no model loads, no file writes, so it is
safe to run the several times the WebUI calls ``ui()`` (per tab, and twice for the API defaults).
The returned ``inputs`` are in :class:`HyperLoRAArgs` field order: that order is the positional
API. The preview, refresh and save actions call the identity pipeline only when the user acts.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hyperlora_ext import advice
from hyperlora_ext.args import HyperLoRAArgs
from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.facts import ERROR_LABEL, FACE_LABELS, PHOTOS, SLIDER_RANGE, WEIGHT_RANGE
from hyperlora_ext.identity_value import Identity
from hyperlora_ext.webui import (
    adetailer,
    infotext,
    ui_adetailer,
    ui_hints,
    ui_identities,
    ui_refine,
)
from hyperlora_ext.wording import counted

# The status line of each tab's accordion (the last one built), for wire_likeness_status.
_status_boxes: dict[str, Any] = {}

PHOTO_NOTE = (
    "Photos are not stored in the image's parameters: pasting them back restores the settings, "
    "upload the photos again (or pick a saved identity)."
)


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


@dataclass
class Panel:
    inputs: list[Any]  # HyperLoRAArgs field order
    infotext_fields: list[tuple[Any, Any]] = field(default_factory=list)
    paste_field_names: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)  # non-input components, by name


def build_ui(elem_id: Callable[[str], str], services: Services | None = None) -> Panel:
    import gradio as gr

    services = services or default_services()
    models = _safe_list(services.list_models)
    defaults = HyperLoRAArgs(trigger_words=services.trigger_words_default())
    with _enable_accordion(gr, elem_id) as enabled:
        setup = _setup_panel(gr, elem_id, services)
        gr.Markdown(PHOTO_NOTE)
        with gr.Row():
            images = gr.File(
                label="Reference photos", file_count="multiple", file_types=["image"],
                elem_id=elem_id("images"),
            )  # fmt: skip
            gallery = gr.Gallery(
                label="Faces used", columns=4, height=220, elem_id=elem_id("gallery")
            )
        with gr.Row():
            model = gr.Dropdown(
                label="Model", choices=ui_hints.model_choices(gr, models),
                value=models[0] if models else "", info=ui_hints.MODEL_INFO,
                elem_id=elem_id("model"),
            )  # fmt: skip
            refresh = gr.Button("Refresh", elem_id=elem_id("refresh"), scale=0, min_width=80)
            weight = gr.Slider(
                minimum=WEIGHT_RANGE[0], maximum=WEIGHT_RANGE[1], step=0.01,
                value=defaults.weight, label="Weight", info=advice.weight_hint(),
                elem_id=elem_id("weight"),
            )  # fmt: skip
        with gr.Row():
            face = gr.Radio(
                label="Face", choices=list(FACE_LABELS.values()),
                value=FACE_LABELS[defaults.face], elem_id=elem_id("face"),
            )  # fmt: skip
            face_index = gr.Number(
                label="Face index", value=defaults.face_index, precision=0,
                info=ui_hints.FACE_INDEX, visible=defaults.face == "index",
                elem_id=elem_id("face_index"),
            )  # fmt: skip
        with gr.Row():
            trigger_words = gr.Checkbox(
                label="Add trigger words", value=defaults.trigger_words,
                elem_id=elem_id("trigger_words"),
            )  # fmt: skip
            # Its default is a HyperLoRA setting: keep ui-config.json from pinning the first one.
            trigger_words.do_not_save_to_config = True
            remove_background = gr.Checkbox(
                label="Remove background", value=defaults.remove_background,
                elem_id=elem_id("remove_background"),
            )  # fmt: skip
            grayscale = gr.Checkbox(
                label="Grayscale", value=defaults.grayscale, elem_id=elem_id("grayscale")
            )
        identity = gr.Dropdown(
            label="Saved identity (used instead of photos)",
            choices=["", *_safe_list(services.list_identities)], value="",
            elem_id=elem_id("identity"),
        )  # fmt: skip
        advanced, refine = _advanced(gr, elem_id, services, defaults)
        saved, lists = {}, [identity, *advanced[2:4]]  # "Saved identity", the slider's sides
        if services.identity_store is not None:
            saved = ui_identities.build(gr, elem_id, services.identity_store, lists)
        ui_adetailer.build(gr, elem_id)
        status = gr.Markdown("", elem_id=elem_id("status"))
        _status_boxes["img2img" if "img2img" in elem_id("status") else "txt2img"] = status
        with gr.Row():
            save_name = gr.Textbox(
                label="Save as LoRA", placeholder="name", elem_id=elem_id("save_name")
            )
            overwrite = gr.Checkbox(label="Overwrite", value=False, elem_id=elem_id("overwrite"))
            save = gr.Button("Save as LoRA", elem_id=elem_id("save"), scale=0, min_width=120)

    inputs = [
        enabled, images, model, weight, trigger_words, face, face_index, remove_background,
        grayscale, identity, *advanced,
        gr.Textbox(value="", visible=False),  # the dtype: set only by pasting an infotext
    ]  # fmt: skip
    by_field = dict(zip(HyperLoRAArgs.field_names(), inputs, strict=True))
    _wire(gr, services, inputs, by_field, gallery, status, save, [save_name, overwrite])
    _wire_setup(gr, services, setup, refresh, by_field, status)
    if services.identity_store is not None:  # the panel's Refresh also re-reads the gallery
        ui_identities.wire_refresh(gr, services.identity_store, saved, lists, refresh)
    ui_refine.wire(gr, refine, inputs, failure_text)
    return Panel(
        inputs=inputs,
        infotext_fields=[(by_field[f], key) for f, key in infotext.paste_rules()],
        paste_field_names=infotext.paste_field_names(),
        extras={
            "gallery": gallery, "status": status, "refresh": refresh, "save": save,
            "overwrite": overwrite, **setup, **saved,
        },
    )  # fmt: skip


def _advanced(
    gr: Any, elem_id: Callable[[str], str], services: Services, defaults: HyperLoRAArgs
) -> tuple[list[Any], ui_refine.RefinePanel]:
    """The collapsed "Advanced" section: photo weights, mix, slider (HyperLoRAArgs order), and
    the Refine control."""
    identities = ["", *_safe_list(services.list_identities)]
    with gr.Accordion("Advanced", open=False, elem_id=elem_id("advanced")):
        # value="": gradio 4's default is None, and pasting converts to the value's type.
        photo_weights = gr.Textbox(
            value="", label="Photo weights",
            placeholder="1, 1, 0.5 (one per photo, in order; empty: all 1)",
            info=ui_hints.PHOTO_WEIGHTS, elem_id=elem_id("photo_weights"),
        )  # fmt: skip
        mix = gr.Textbox(
            value="", label="Mix identities", placeholder=f"alice:0.7, {PHOTOS}:0.3",
            info=ui_hints.MIX, elem_id=elem_id("mix"),
        )  # fmt: skip
        with gr.Row():
            slider_positive = gr.Dropdown(
                label="Slider: positive identity", choices=identities, value="",
                info=ui_hints.SLIDER_SIDE, elem_id=elem_id("slider_positive"),
            )  # fmt: skip
            slider_negative = gr.Dropdown(
                label="Slider: negative identity", choices=identities, value="",
                info=ui_hints.SLIDER_SIDE, elem_id=elem_id("slider_negative"),
            )  # fmt: skip
            slider_strength = gr.Slider(
                minimum=SLIDER_RANGE[0], maximum=SLIDER_RANGE[1], step=0.05,
                value=defaults.slider_strength, label="Slider strength",
                info=ui_hints.SLIDER_STRENGTH, elem_id=elem_id("slider_strength"),
            )  # fmt: skip
        refine = ui_refine.build(gr, elem_id)
    return [photo_weights, mix, slider_positive, slider_negative, slider_strength], refine


def _setup_panel(gr: Any, elem_id: Callable[[str], str], services: Services) -> dict[str, Any]:
    """The first-run checklist with its buttons, shown while models are missing."""
    is_ready, text = _safe_setup(services)
    # A Group: ui-config.json does not record its visibility (it would pin the first run's).
    with gr.Group(visible=not is_ready, elem_id=elem_id("setup")) as group:
        checklist = gr.Markdown(text, elem_id=elem_id("checklist"))
        with gr.Row():
            download = gr.Button("Download", variant="primary", elem_id=elem_id("download"))
            check = gr.Button("Check again", elem_id=elem_id("check"))
    return {"setup": group, "checklist": checklist, "download": download, "check": check}


def _wire_setup(gr, services, setup, refresh, by_field, status) -> None:
    model = by_field["model"]
    lists = [by_field[name] for name in ("identity", "slider_positive", "slider_negative")]

    def check_again(current: str = "") -> tuple[Any, ...]:
        """Re-read the folders: checklist, its visibility, and the model and identity lists."""
        is_ready, text = _safe_setup(services)
        models = _safe_list(services.list_models)
        chosen = current if current in models else (models[0] if models else "")
        identities = ["", *_safe_list(services.list_identities)]
        return (
            gr.update(visible=not is_ready),
            text,
            gr.update(choices=ui_hints.model_choices(gr, models), value=chosen),
            *[gr.update(choices=identities) for _ in lists],
        )

    def run(current: str, progress: Any) -> tuple[Any, ...]:
        message = download_models(services, progress)
        return (*check_again(current), message)

    def download_with_progress(current: str, progress=gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        return run(current, progress)

    def download_plain(current: str) -> tuple[Any, ...]:
        return run(current, None)

    panel = [setup["setup"], setup["checklist"], model, *lists]
    setup["check"].click(check_again, inputs=[model], outputs=panel)
    refresh.click(check_again, inputs=[model], outputs=panel)
    # gr.Progress needs the queue (the WebUI's default); --no-gradio-queue gets no bar.
    handler = download_with_progress if _queue_enabled() else download_plain
    setup["download"].click(handler, inputs=[model], outputs=[*panel, status])


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


def _safe_setup(services: Services) -> tuple[bool, str]:
    try:
        return services.setup()
    except Exception as error:  # checking folders must never break building the UI
        return False, f"Could not check the HyperLoRA models: {error}"


def _queue_enabled() -> bool:
    try:
        from modules import shared
    except ImportError:
        return True
    return not getattr(shared.cmd_opts, "no_gradio_queue", False)


@contextmanager
def _enable_accordion(gr: Any, elem_id: Callable[[str], str]) -> Iterator[Any]:
    """A1111/Forge's InputAccordion (its open state is the enable flag) or, outside the WebUI,
    an accordion holding an "Enable" checkbox. Yields the enable component."""
    try:
        from modules.ui_components import InputAccordion
    except ImportError:
        with gr.Accordion("HyperLoRA", open=False, elem_id=elem_id("accordion")):
            yield gr.Checkbox(False, label="Enable", elem_id=elem_id("enable"))
        return
    with InputAccordion(False, label="HyperLoRA", elem_id=elem_id("enable")) as accordion:
        yield accordion


def _wire(gr, services, inputs, by_field, gallery, status, save, save_controls) -> None:
    def preview(*values: Any) -> tuple[Any, str]:
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

    def save_lora(name: str, overwrite: bool, *values: Any) -> str:
        try:
            return services.save(HyperLoRAArgs.from_positional(list(values)), name, overwrite)
        except Exception as error:
            return failure_text(error)

    def preload(enabled: bool, model: str) -> None:
        if enabled:
            try:
                services.preload(model)
            except Exception:  # the next job reports what is wrong; the console has the trace
                traceback.print_exc()

    by_field["enabled"].change(preload, inputs=[by_field["enabled"], by_field["model"]])
    ui_hints.wire(gr, by_field, status)
    for name in ("images", "model", "face", "face_index", "remove_background", "grayscale"):
        by_field[name].change(preview, inputs=inputs, outputs=[gallery, status])
    save.click(save_lora, inputs=[*save_controls, *inputs], outputs=[status])


def wire_likeness_status(component: Any, **kwargs: Any) -> None:
    """``on_after_component``: when a tab's generation info box is made (after the accordion),
    show the likeness of each new generation in that tab's status line."""
    elem_id = kwargs.get("elem_id") or getattr(component, "elem_id", None) or ""
    tab = elem_id.removeprefix("generation_info_")
    status = _status_boxes.get(tab)
    if not elem_id.startswith("generation_info_") or status is None:
        return
    component.change(likeness_status, inputs=[component], outputs=[status])


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


def _safe_list(lister: Callable[[], list[str]]) -> list[str]:
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
    warnings = [w for w in [ui_hints.clip_warning(shared.opts)] if w]
    ad_problem = adetailer.read().problem()
    if ad_problem is not None:
        warnings.append(ad_problem)
    return warnings
