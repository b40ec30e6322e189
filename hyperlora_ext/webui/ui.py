"""The HyperLoRA accordion (gradio 3.41 for A1111/reForge, 4.x for Forge).

``build_ui`` only creates components and wires events: no model loads, no file writes, so it is
safe to run the several times the WebUI calls ``ui()`` (per tab, and twice for the API defaults).
The returned ``inputs`` are in :class:`HyperLoRAArgs` field order: that order is the positional
API. The preview, refresh and save actions (:mod:`.ui_actions`) call the identity pipeline only
when the user acts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hyperlora_ext import advice
from hyperlora_ext.args import HyperLoRAArgs
from hyperlora_ext.facts import FACE_LABELS, PHOTOS, SLIDER_RANGE, WEIGHT_RANGE
from hyperlora_ext.webui import (
    infotext,
    ui_actions,
    ui_adetailer,
    ui_hints,
    ui_identities,
    ui_refine,
)
from hyperlora_ext.webui.ui_actions import Services

# The status line of each tab's accordion (the last one built), for wire_likeness_status.
_status_boxes: dict[str, Any] = {}

PHOTO_NOTE = (
    "Photos are not stored in the image's parameters: pasting them back restores the settings, "
    "upload the photos again (or pick a saved identity)."
)


@dataclass
class Panel:
    inputs: list[Any]  # HyperLoRAArgs field order
    infotext_fields: list[tuple[Any, Any]] = field(default_factory=list)
    paste_field_names: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)  # non-input components, by name


def build_ui(elem_id: Callable[[str], str], services: Services | None = None) -> Panel:
    import gradio as gr

    services = services or ui_actions.default_services()
    models = ui_actions.safe_list(services.list_models)
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
            choices=["", *ui_actions.safe_list(services.list_identities)], value="",
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
    ui_refine.wire(gr, refine, inputs, ui_actions.failure_text)
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
    identities = ["", *ui_actions.safe_list(services.list_identities)]
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
    is_ready, text = ui_actions.safe_setup(services)
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
        return ui_actions.check_again(gr, services, current, len(lists))

    def run(current: str, progress: Any) -> tuple[Any, ...]:
        message = ui_actions.download_models(services, progress)
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
        return ui_actions.on_preview(services, values)

    def save_lora(name: str, overwrite: bool, *values: Any) -> str:
        return ui_actions.on_save(services, name, overwrite, values)

    def preload(enabled: bool, model: str) -> None:
        ui_actions.on_enable(services, enabled, model)

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
    component.change(ui_actions.likeness_status, inputs=[component], outputs=[status])
