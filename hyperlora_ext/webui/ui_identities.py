"""The accordion's "Saved identities" section: a small gallery of the saved identities (preview
and name; model, photos, likeness reference and date of the one selected) with the actions use,
rename, delete and download the LoRA file.

It goes through the one identity store and the same functions as the HTTP API
(:mod:`.api_identities`), so a rename here is the rename of ``POST /identities/NAME/rename``.
Every action's failure is shown in the section's own line, never raised into gradio.
"""

from __future__ import annotations

import shutil
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.facts import ERROR_LABEL
from hyperlora_ext.webui import api_identities
from hyperlora_ext.wording import counted

THUMBNAIL = 128  # pixels: the gallery shows many small cards
NO_PREVIEW = (200, 200, 200)  # the card of an identity saved without a preview
PICK_FIRST = "Pick an identity in the gallery first."
_downloads: list[Path] = []  # one folder per process for the LoRA files offered for download


def cards(store: Any) -> list[tuple[Image.Image, str]]:
    """One (thumbnail, name) per saved identity, in the store's order."""
    return [(_thumbnail(store, name), name) for name in store.names()]


def _thumbnail(store: Any, name: str) -> Image.Image:
    path = store.preview_path(name)
    try:
        if path is not None:
            with Image.open(path) as image:
                image = image.convert("RGB")
                image.thumbnail((THUMBNAIL, THUMBNAIL))
                return image
    except OSError:
        pass  # a damaged preview: the plain card
    return Image.new("RGB", (THUMBNAIL, THUMBNAIL), NO_PREVIEW)


def describe(store: Any, name: str) -> str:
    """One line about a saved identity: name, model, photos, likeness reference, created."""
    record = store.record(name)
    reference = "yes" if record.reference_embedding else "no"
    created = record.created.replace("T", " ").removesuffix("+00:00") or "unknown"
    return (
        f"**{name}** · model {record.model or 'unknown'} · {counted(record.photos, 'photo')} · "
        f"likeness reference: {reference} · created {created} UTC · use as `{record.prompt_tag}`"
    )


def selected(store: Any, index: int) -> tuple[str, str]:
    """The name and description of the ``index``-th card ("" and a message if it is gone)."""
    names = store.names()
    if not 0 <= index < len(names):
        return "", "That identity is gone: press Refresh."
    return names[index], describe(store, names[index])


def rename(store: Any, old: str, new: str) -> tuple[str, str]:
    """Rename ``old`` to ``new``: (the selected name afterwards, the message)."""
    if not old:
        return old, PICK_FIRST
    result = api_identities.rename(store, old, (new or "").strip())
    name = result["identity"]["name"]
    return name, f"Renamed {old!r} to {name!r}. " + describe(store, name)


def delete(store: Any, name: str, confirmed: bool) -> tuple[str, str]:
    """Delete ``name`` once ``confirmed``: (the selected name afterwards, the message)."""
    if not name:
        return name, PICK_FIRST
    if not confirmed:
        return name, f"Tick 'Confirm delete' to delete {name!r} (its LoRA file, card and record)."
    removed = store.delete(name)
    return "", f"Deleted {name!r} ({counted(len(removed), 'file')})."


def lora_download(store: Any, name: str) -> str:
    """A copy of the identity's LoRA file, in a temporary folder gradio may serve."""
    source = store.lora_path(name)
    if not source.is_file():
        store.record(name)  # IdentityNotFoundError naming the saved ones
    if not _downloads:
        _downloads.append(Path(tempfile.mkdtemp(prefix="hyperlora-downloads-")))
    target = _downloads[0] / source.name
    shutil.copyfile(source, target)
    return str(target)


def build(
    gr: Any,
    elem_id: Callable[[str], str],
    store: Callable[[], Any],
    lists: Sequence[Any],
) -> dict[str, Any]:
    """The section (a closed accordion) and its wiring; ``lists`` are the identity dropdowns
    (the first is "Saved identity", which "Use" sets)."""
    with gr.Accordion("Saved identities", open=False, elem_id=elem_id("identities")):
        gallery = gr.Gallery(
            value=lambda: _safe_cards(store), label="Saved identities", show_label=False,
            columns=4, height=190, allow_preview=False, elem_id=elem_id("identity_gallery"),
        )  # fmt: skip
        info = gr.Markdown(lambda: intro(_safe_names(store)), elem_id=elem_id("identity_info"))
        with gr.Row():
            name = gr.Textbox(
                label="Selected",
                interactive=False,
                max_lines=1,
                elem_id=elem_id("identity_selected"),
            )
            new_name = gr.Textbox(
                label="New name",
                placeholder="for Rename",
                max_lines=1,
                elem_id=elem_id("identity_new_name"),
            )
            confirm = gr.Checkbox(
                label="Confirm delete", value=False, elem_id=elem_id("identity_confirm")
            )
        with gr.Row():
            buttons = {
                action: gr.Button(action.capitalize(), elem_id=elem_id(f"identity_{action}"))
                for action in ("use", "rename", "delete", "download", "refresh")
            }
        download = gr.File(
            label="LoRA file", interactive=False, visible=False, elem_id=elem_id("identity_file")
        )  # shown once there is a file
    parts = {"identity_gallery": gallery, "identity_info": info, "identity_selected": name,
             "identity_new_name": new_name, "identity_confirm": confirm, "identity_file": download,
             **{f"identity_{action}": button for action, button in buttons.items()}}  # fmt: skip
    _wire(gr, store, parts, list(lists))
    wire_refresh(gr, store, parts, lists, parts["identity_refresh"])
    return parts


def wire_refresh(
    gr: Any, store: Callable[[], Any], parts: dict[str, Any], lists: Sequence[Any], button: Any
) -> None:
    """A click on ``button`` (also the panel's Refresh) reads the saved identities again."""
    name = parts["identity_selected"]

    def on_refresh(old: str, *values: str) -> tuple[Any, ...]:
        return _after(gr, store, lambda: (old if old in store().names() else "", ""), old, values)

    outputs = [parts["identity_gallery"], name, parts["identity_info"], *lists]
    button.click(on_refresh, inputs=[name, *lists], outputs=outputs)


def _after(
    gr: Any, store: Callable[[], Any], change: Callable[[], tuple[str, str]], old: str,
    values: Sequence[str],
) -> tuple[Any, ...]:  # fmt: skip
    """Run a change, then show the new list everywhere (a renamed choice follows along)."""
    chosen, message = _guarded(change, (old, ""))
    names = ["", *_safe_names(store)]
    follow = [chosen if value == old and old else value for value in values]
    updates = [gr.update(choices=names, value=v if v in names else "") for v in follow]
    return (_safe_cards(store), chosen, message, *updates)


def _wire(gr: Any, store: Callable[[], Any], parts: dict[str, Any], lists: list[Any]) -> None:
    gallery, info, name = (
        parts["identity_gallery"],
        parts["identity_info"],
        parts["identity_selected"],
    )

    def on_select(evt: Any) -> tuple[str, str]:
        return _guarded(lambda: selected(store(), evt.index), ("", ""))

    on_select.__annotations__["evt"] = gr.SelectData  # how gradio knows to pass the event

    def on_rename(old: str, new: str, *values: str) -> tuple[Any, ...]:
        return _after(gr, store, lambda: rename(store(), old, new), old, values)

    def on_delete(old: str, confirmed: bool, *values: str) -> tuple[Any, ...]:
        return _after(gr, store, lambda: delete(store(), old, confirmed), old, values)

    def on_use(chosen: str) -> tuple[Any, str]:
        if not chosen:
            return gr.update(), PICK_FIRST
        return gr.update(choices=["", *_safe_names(store)], value=chosen), (
            f"'Saved identity' is now {chosen!r}: generate to use it (photos are not re-encoded)."
        )

    def on_download(chosen: str) -> tuple[Any, str]:
        if not chosen:
            return gr.update(value=None, visible=False), PICK_FIRST
        return _guarded(
            lambda: (
                gr.update(value=lora_download(store(), chosen), visible=True),
                f"{describe(store(), chosen)} · the LoRA file is ready below.",
            ),
            (gr.update(value=None, visible=False), ""),
        )

    changed = [gallery, name, info, *lists]
    gallery.select(on_select, outputs=[name, info])
    parts["identity_rename"].click(
        on_rename, inputs=[name, parts["identity_new_name"], *lists], outputs=changed
    )
    parts["identity_delete"].click(
        on_delete, inputs=[name, parts["identity_confirm"], *lists], outputs=changed
    )
    parts["identity_use"].click(on_use, inputs=[name], outputs=[lists[0], info])
    parts["identity_download"].click(
        on_download, inputs=[name], outputs=[parts["identity_file"], info]
    )


def _guarded(action: Callable[[], tuple[Any, str]], fallback: tuple[Any, str]) -> tuple[Any, str]:
    """``action()``; on failure ``fallback`` with the message (our errors as they are, others
    with their type; the console gets the traceback of those)."""
    try:
        return action()
    except HyperLoRAError as error:
        return fallback[0], f"**{error}**"
    except Exception as error:  # a button's edge: show every failure in the section's line
        traceback.print_exc()
        return fallback[0], f"**{ERROR_LABEL}: {type(error).__name__}: {error}**"


def intro(names: Sequence[str]) -> str:
    """The section's first line: what to do, or how to get a first identity."""
    if names:
        return "Click an identity to see it and act on it."
    return (
        "No saved identities yet: encode photos above and press **Save as LoRA** (or send "
        "`save_as` to `/hyperlora/v1/encode`); they appear here and as `<lora:NAME:0.8>`."
    )


def _safe_cards(store: Callable[[], Any]) -> list[tuple[Image.Image, str]]:
    try:
        return cards(store())
    except Exception:  # a listing must never break the page; the console says why
        traceback.print_exc()
        return []


def _safe_names(store: Callable[[], Any]) -> list[str]:
    try:
        return list(store().names())
    except Exception:
        traceback.print_exc()
        return []
