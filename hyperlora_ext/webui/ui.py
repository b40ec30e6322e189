"""The HyperLoRA accordion (gradio 3.41 for A1111/reForge, 4.x for Forge).

``build_ui`` only creates components and wires events: no model loads, no file writes, so it is
safe to run the several times the WebUI calls ``ui()`` (per tab, and twice for the API defaults).
The returned ``inputs`` are in :class:`HyperLoRAArgs` field order: that order is the positional
API. The preview, refresh and save actions call the identity pipeline only when the user acts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperlora_ext.args import FACE_LABELS, HyperLoRAArgs
from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.webui import infotext

PHOTO_NOTE = (
    "Photos are not stored in the image's parameters: pasting them back restores the settings, "
    "upload the photos again (or pick a saved identity)."
)


@dataclass
class Services:
    """What the accordion's buttons do; tests and other hosts may substitute their own."""

    list_models: Callable[[], list[str]]
    list_identities: Callable[[], list[str]]
    preview: Callable[[HyperLoRAArgs], tuple[list[tuple[Any, str]], str]]
    save: Callable[[HyperLoRAArgs, str], str]


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
    defaults = HyperLoRAArgs()
    with _enable_accordion(gr, elem_id) as enabled:
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
                label="Model", choices=models, value=models[0] if models else "",
                elem_id=elem_id("model"),
            )  # fmt: skip
            refresh = gr.Button("Refresh", elem_id=elem_id("refresh"), scale=0, min_width=80)
            weight = gr.Slider(
                minimum=-1.5, maximum=1.5, step=0.01, value=defaults.weight, label="Weight",
                elem_id=elem_id("weight"),
            )  # fmt: skip
        with gr.Row():
            face = gr.Radio(
                label="Face", choices=list(FACE_LABELS.values()),
                value=FACE_LABELS[defaults.face], elem_id=elem_id("face"),
            )  # fmt: skip
            face_index = gr.Number(
                label="Face index", value=defaults.face_index, precision=0,
                elem_id=elem_id("face_index"),
            )  # fmt: skip
        with gr.Row():
            trigger_words = gr.Checkbox(
                label="Add trigger words", value=defaults.trigger_words,
                elem_id=elem_id("trigger_words"),
            )  # fmt: skip
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
        status = gr.Markdown("", elem_id=elem_id("status"))
        with gr.Row():
            save_name = gr.Textbox(
                label="Save as LoRA", placeholder="name", elem_id=elem_id("save_name")
            )
            save = gr.Button("Save as LoRA", elem_id=elem_id("save"), scale=0, min_width=120)

    inputs = [
        enabled, images, model, weight, trigger_words, face, face_index, remove_background,
        grayscale, identity,
    ]  # fmt: skip
    by_field = dict(zip(HyperLoRAArgs.field_names(), inputs, strict=True))
    _wire(gr, services, inputs, by_field, gallery, status, refresh, save, save_name)
    return Panel(
        inputs=inputs,
        infotext_fields=[(by_field[f], key) for f, key in infotext.paste_rules()],
        paste_field_names=infotext.paste_field_names(),
        extras={"gallery": gallery, "status": status, "refresh": refresh, "save": save},
    )


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


def _wire(gr, services, inputs, by_field, gallery, status, refresh, save, save_name) -> None:
    def preview(*values: Any) -> tuple[Any, str]:
        try:
            args = HyperLoRAArgs.from_positional(list(values))
        except HyperLoRAError as error:
            return [], f"**{error}**"
        if not args.images and not args.identity:
            return [], ""
        try:
            return services.preview(args)
        except HyperLoRAError as error:
            return [], f"**{error}**"

    def refresh_lists() -> tuple[Any, Any]:
        return (
            gr.update(choices=_safe_list(services.list_models)),
            gr.update(choices=["", *_safe_list(services.list_identities)]),
        )

    def save_lora(name: str, *values: Any) -> str:
        try:
            return services.save(HyperLoRAArgs.from_positional(list(values)), name)
        except HyperLoRAError as error:
            return f"**{error}**"

    for name in ("images", "model", "face", "face_index", "remove_background", "grayscale"):
        by_field[name].change(preview, inputs=inputs, outputs=[gallery, status])
    refresh.click(refresh_lists, inputs=[], outputs=[by_field["model"], by_field["identity"]])
    save.click(save_lora, inputs=[save_name, *inputs], outputs=[status])


def _safe_list(lister: Callable[[], list[str]]) -> list[str]:
    try:
        return list(lister())
    except Exception:  # a listing must never break building the UI
        return []


# ------------------------------------------------------------------ default services
def default_services() -> Services:
    from hyperlora_ext.webui.host import list_models

    return Services(list_models, _list_identities, _preview, _save)


def _list_identities() -> list[str]:
    folder = _lora_folder() / "hyperlora"
    return sorted(p.stem for p in folder.glob("*.safetensors")) if folder.is_dir() else []


def _preview(args: HyperLoRAArgs) -> tuple[list[tuple[Any, str]], str]:
    from hyperlora_ext.webui.host import predict

    result = predict(args)
    gallery = [
        (r.preview or r.thumbnail, _caption(r))
        for r in result.reports
        if (r.preview or r.thumbnail) is not None
    ]
    return gallery, status_line(result)


def _save(args: HyperLoRAArgs, name: str) -> str:
    from hyperlora_ext.export import export_lora
    from hyperlora_ext.webui.host import predict

    result = predict(args)
    preview = next((r.preview for r in result.reports if r.preview is not None), None)
    path = export_lora(
        result.lora, _lora_folder() / "hyperlora", name, model=result.model,
        photos=result.photos_used, preview=preview,
    )  # fmt: skip
    return (
        f"Saved `{path.name}`: use it as `<lora:{path.stem}:{args.weight:g}>` (Lora tab, refresh)."
    )


def _caption(report: Any) -> str:
    faces = f"{report.faces_found} face{'s' if report.faces_found != 1 else ''}"
    used = "" if report.used else f" (skipped: {report.reason})"
    return f"{report.label}: {faces}{used}"


def status_line(result: Any) -> str:
    parts = [f"{result.photos_used} photo(s) encoded in {result.seconds:.1f} s"]
    if result.cache_hit:
        parts[0] += " (cached)"
    parts += list(getattr(result, "warnings", []))
    parts += host_warnings()
    return " · ".join(parts)


def host_warnings() -> list[str]:
    """Settings of the WebUI that work against HyperLoRA."""
    try:
        from modules import shared
    except ImportError:
        return []
    warnings = []
    clip_skip = getattr(shared.opts, "CLIP_stop_at_last_layers", 1)
    if clip_skip < 2:
        warnings.append(f"CLIP skip is {clip_skip}; 2 is recommended")
    ad_scripts = getattr(shared.opts, "ad_script_names", None)  # set when ADetailer is installed
    if ad_scripts is not None and "hyperlora" not in str(ad_scripts):
        warnings.append(
            "ADetailer's face pass runs without the identity: add 'hyperlora' to Settings > "
            "ADetailer > 'Script names to apply to ADetailer'"
        )
    return warnings


def _lora_folder() -> Path:
    from modules import shared

    return Path(shared.cmd_opts.lora_dir)
