"""The accordion's saved-identities gallery: cards, select, use, rename, delete, download
(gradio 3.41 and 4.x), through the one store the API uses."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from hyperlora_ext.store import RECORD_SUFFIX, IdentityStore
from hyperlora_ext.webui import ui, ui_actions, ui_identities
from tests.factories import save_identity
from tests.webui.harness import handlers

gr = pytest.importorskip("gradio")


@pytest.fixture
def store(tmp_path):
    store = IdentityStore(tmp_path / "Lora")
    save_identity(store, "alice", seed=0, preview=Image.new("RGB", (512, 512), (250, 0, 0)),
                  reference_embedding=[1.0] + [0.0] * 511)  # fmt: skip
    save_identity(store, "bob", seed=1, photos=1)
    return store


def _panel(store):
    services = ui_actions.Services(lambda: ["m"], store.names, lambda a: ([], ""), None,
                           identity_store=lambda: store)  # fmt: skip
    with gr.Blocks() as demo:
        panel = ui.build_ui(lambda item: f"hl_{item}", services)
    return demo, panel


def _click(demo, component):
    """The handler a click on ``component`` runs (the one wired there)."""
    (fn, _), *rest = handlers(demo, component)
    assert not rest
    return fn


def _value(update):
    return update["value"] if isinstance(update, dict) else update.value


def _visible(update):
    return update["visible"] if isinstance(update, dict) else update.visible


def _choices(update):
    choices = update["choices"] if isinstance(update, dict) else update.choices
    return [c[1] if isinstance(c, tuple | list) else c for c in choices]


def test_cards_show_each_identity_with_its_preview_and_name(store):
    cards = ui_identities.cards(store)
    assert [name for _, name in cards] == ["alice", "bob"]
    alice, bob = (image for image, _ in cards)
    assert alice.size == (128, 128) and alice.getpixel((5, 5)) == (250, 0, 0)
    assert bob.getpixel((5, 5)) == ui_identities.NO_PREVIEW  # saved without a preview


def test_selecting_a_card_describes_the_identity(store):
    demo, panel = _panel(store)
    ((select, _),) = handlers(demo, panel.extras["identity_gallery"])
    name, info = select(SimpleNamespace(index=0))
    assert name == "alice"
    assert "**alice** · model fidelity · 3 photos · likeness reference: yes" in info
    assert "created 20" in info and "<lora:alice:0.8>" in info
    assert "1 photo · likeness reference: no" in select(SimpleNamespace(index=1))[1]
    assert select(SimpleNamespace(index=7)) == ("", "That identity is gone: press Refresh.")


def test_use_puts_the_identity_into_saved_identity(store):
    demo, panel = _panel(store)
    use = _click(demo, panel.extras["identity_use"])
    update, message = use("bob")
    assert _value(update) == "bob" and "'Saved identity' is now 'bob'" in message
    assert use("")[1] == ui_identities.PICK_FIRST


def test_rename_moves_the_files_and_every_list_follows(store):
    demo, panel = _panel(store)
    rename = _click(demo, panel.extras["identity_rename"])
    cards, chosen, message, identity, positive, negative = rename(
        "alice", " carol ", "alice", "bob", ""
    )
    assert chosen == "carol" and message.startswith("Renamed 'alice' to 'carol'.")
    assert [name for _, name in cards] == ["bob", "carol"]
    assert store.names() == ["bob", "carol"] and (store.folder / f"carol{RECORD_SUFFIX}").is_file()
    assert _value(identity) == "carol" and _value(positive) == "bob" and _value(negative) == ""
    assert _choices(identity) == ["", "bob", "carol"]


def test_a_refused_rename_says_why_and_changes_nothing(store):
    demo, panel = _panel(store)
    rename = _click(demo, panel.extras["identity_rename"])
    _, chosen, message, *_ = rename("alice", "bob", "", "", "")
    assert chosen == "alice" and "'bob' exists" in message and message.startswith("**")
    assert "not usable" in rename("alice", "a/b", "", "", "")[2]
    assert rename("", "x", "", "", "")[2] == ui_identities.PICK_FIRST
    assert store.names() == ["alice", "bob"]


def test_delete_needs_confirmation_and_clears_the_lists(store):
    demo, panel = _panel(store)
    delete = _click(demo, panel.extras["identity_delete"])
    _, chosen, message, *_ = delete("bob", False, "bob", "", "")
    assert chosen == "bob" and "Tick 'Confirm delete'" in message and store.exists("bob")
    cards, chosen, message, identity, *_ = delete("bob", True, "bob", "", "")
    assert (chosen, message) == ("", "Deleted 'bob' (3 files).")  # LoRA, card, record
    assert not store.exists("bob") and [name for _, name in cards] == ["alice"]
    assert _value(identity) == "" and _choices(identity) == ["", "alice"]


def test_download_offers_a_copy_of_the_lora_file(store):
    demo, panel = _panel(store)
    download = _click(demo, panel.extras["identity_download"])
    update, message = download("alice")
    path = _value(update)
    assert (
        _visible(update) is True
        and Path(path).name == "alice.safetensors"
        and "**alice** · model fidelity" in message
        and "ready below" in message
    )
    assert Path(path).read_bytes() == store.lora_path("alice").read_bytes()
    assert Path(path).parent != store.folder  # a copy: gradio serves its temp folder
    hidden, message = download("")
    assert _visible(hidden) is False and message == ui_identities.PICK_FIRST
    store.delete("alice")
    hidden, message = download("alice")
    assert _visible(hidden) is False and _value(hidden) is None
    assert "no saved identity named 'alice'" in message


def test_refresh_reads_the_store_again_and_drops_a_vanished_selection(store):
    demo, panel = _panel(store)
    refreshers = handlers(demo, panel.extras["identity_refresh"])
    refresh = refreshers[0][0]
    store.delete("alice")
    cards, chosen, _, identity, *_ = refresh("alice", "alice", "", "")
    assert chosen == "" and [name for _, name in cards] == ["bob"] and _value(identity) == ""
    # the panel's own Refresh button refreshes the gallery too
    targets = [fn for fn, f in handlers(demo, panel.extras["refresh"]) if len(f.outputs) == 6]
    assert targets


def test_a_broken_store_never_breaks_the_section(tmp_path):
    def broken():
        raise OSError("the disk is gone")

    services = ui_actions.Services(
        lambda: ["m"], lambda: [], lambda a: ([], ""), None, identity_store=broken
    )
    with gr.Blocks() as demo:
        panel = ui.build_ui(lambda item: f"hl_{item}", services)
    rename = _click(demo, panel.extras["identity_rename"])
    cards, chosen, message, *_ = rename("alice", "carol", "", "", "")
    assert cards == [] and chosen == "alice" and "OSError: the disk is gone" in message


def test_the_webui_accordion_has_the_gallery_of_its_lora_folder(webui, monkeypatch):
    from modules import shared

    from hyperlora_ext.store import get_store
    from tests.webui.harness import build_panel

    save_identity(get_store(shared.cmd_opts.lora_dir), "dana")
    demo, _ = build_panel(webui, monkeypatch)
    gallery = next(c for c in demo.blocks.values() if str(c.elem_id).endswith("identity_gallery"))
    ((select, _),) = handlers(demo, gallery)
    assert select(SimpleNamespace(index=0))[0] == "dana"


def test_the_section_says_how_to_get_a_first_identity(tmp_path):
    empty = IdentityStore(tmp_path / "Empty")
    assert "No saved identities yet" in ui_identities.intro(empty.names())
    assert "Save as LoRA" in ui_identities.intro([])
    assert ui_identities.intro(["alice"]).startswith("Click an identity")
