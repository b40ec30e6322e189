"""First run: the accordion's checklist of missing models, its Download button, and the hints file.

Downloads go to a local fake of the hub (tests/test_download.py): nothing reaches the network.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hyperlora_ext.facts import CLIP_FILES, HYPERLORA_FILES, HYPERLORA_MODELS
from hyperlora_ext.models import ModelRoots, list_hyperlora_models
from hyperlora_ext.webui import first_run, host, ui, ui_actions
from hyperlora_ext.webui.services import Services
from tests.fake_hub import FakeHub
from tests.model_files import make_antelopev2, write_model_files
from tests.webui.harness import build_panel, handler

gr = pytest.importorskip("gradio")
HINTS = Path(__file__).resolve().parents[2] / "javascript" / "hyperlora.js"


@pytest.fixture
def hub(tmp_path) -> FakeHub:
    return FakeHub(tmp_path / "hub").add_defaults()


def install_all(roots: ModelRoots, models=HYPERLORA_MODELS) -> None:
    for name in models:
        write_model_files(roots.hyper_lora / name, HYPERLORA_FILES)
    write_model_files(roots.clip_vit / "clip_vit_large_14", CLIP_FILES)
    make_antelopev2(roots)


def fake_download(roots: ModelRoots, hub: FakeHub):
    """The accordion's download service, wired to the fake hub."""

    def download(progress, log):
        return first_run.download_missing(
            roots, progress, downloader=hub.download, remote_sizes=hub.sizes, size_floors={},
            log=log,
        )  # fmt: skip

    return download


# ---------------------------------------------------------------------- checklist
def test_empty_tree_lists_every_model_missing_with_its_exact_folder(tmp_path):
    roots = ModelRoots.from_models_dir(tmp_path / "models")
    items = first_run.checklist(roots)
    assert [item.part for item in items] == ["hyperlora", "hyperlora", "clip", "antelopev2"]
    assert not any(item.present for item in items) and not first_run.ready(roots)
    folders = {item.label: item.folder for item in items}
    for name in HYPERLORA_MODELS:
        assert folders[f"HyperLoRA model {name}"] == roots.hyper_lora / name
    assert folders["CLIP ViT-L/14 image encoder"] == roots.clip_vit / "clip_vit_large_14"
    assert folders["InsightFace antelopev2"] == roots.antelopev2
    text = first_run.render(items, roots)
    for item in items:
        assert f"`{item.folder}`" in text
        assert all(name in text for name in item.missing)
    assert roots.download_hint() in text and "Download" in text


def test_complete_tree_is_ready_and_one_model_is_enough(tmp_path):
    roots = ModelRoots.from_models_dir(tmp_path / "models")
    install_all(roots, models=HYPERLORA_MODELS[:1])
    items = first_run.checklist(roots)
    assert first_run.ready(roots)
    assert [item.present for item in items] == [True, False, True, True]
    assert "❌" not in first_run.render(items, roots)


def test_a_half_installed_model_names_its_missing_files(tmp_path):
    roots = ModelRoots.from_models_dir(tmp_path / "models")
    install_all(roots)
    (roots.hyper_lora / HYPERLORA_MODELS[0] / "resampler.safetensors").unlink()
    (roots.antelopev2 / "glintr100.onnx").unlink()
    items = {item.label: item for item in first_run.checklist(roots)}
    assert items[f"HyperLoRA model {HYPERLORA_MODELS[0]}"].missing == ("resampler.safetensors",)
    assert items["InsightFace antelopev2"].missing == ("glintr100.onnx",)
    assert not first_run.ready(roots)


# ----------------------------------------------------------------------- download
def test_download_fetches_only_what_is_missing_and_reports_progress(tmp_path, hub):
    roots = ModelRoots.from_models_dir(tmp_path / "models")
    install_all(roots, models=HYPERLORA_MODELS[:1])
    (roots.antelopev2 / "glintr100.onnx").unlink()
    steps: list[tuple[int, int]] = []
    message = fake_download(roots, hub)(lambda done, total: steps.append((done, total)), print)
    fetched = {call.split(":", 1)[1].rsplit("/", 1)[-1] for call in hub.calls}
    assert fetched == {*(spec.name for spec in HYPERLORA_FILES), "glintr100.onnx"}
    assert all(f"{HYPERLORA_MODELS[0]}/" not in call for call in hub.calls)
    assert steps and steps[-1][0] == steps[-1][1] and "ready" in message
    assert list_hyperlora_models(roots) == list(HYPERLORA_MODELS)  # fidelity first
    assert first_run.ready(roots)


def test_download_failure_is_a_message_not_an_exception(tmp_path, hub):
    roots = ModelRoots.from_models_dir(tmp_path / "models")
    hub.fail.add("config.json")
    message = fake_download(roots, hub)(None, lambda line: None)
    assert message.startswith("Download failed") and "config.json" in message
    assert not first_run.ready(roots)


def test_nothing_to_download_when_complete(tmp_path, hub):
    roots = ModelRoots.from_models_dir(tmp_path / "models")
    install_all(roots)
    assert "Nothing to download" in fake_download(roots, hub)(None, print)
    assert hub.calls == []


# ----------------------------------------------------------------------- accordion
class RecordingProgress:
    def __init__(self) -> None:
        self.calls: list[tuple[object, str]] = []

    def __call__(self, progress, desc=None, **kwargs):
        self.calls.append((progress, desc))


def output_ids(demo, function) -> list[int]:
    if isinstance(demo.fns, dict):  # gradio 4.x: the BlockFunction holds its output components
        return [output._id for output in function.outputs]
    return demo.dependencies[demo.fns.index(function)]["outputs"]


def panel_extras(demo, script):
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    return lambda item: by_id[script.elem_id(item)]


def test_accordion_shows_the_checklist_until_models_are_there(webui, monkeypatch, hub):
    demo, script = build_panel(webui, monkeypatch)
    block = panel_extras(demo, script)
    roots = host.model_roots()
    assert block("setup").visible is True  # the WebUI's models folder is empty
    assert str(roots.hyper_lora / HYPERLORA_MODELS[0]) in block("checklist").value

    install_all(roots)
    check, _ = handler(demo, block("check"))
    visibility, text, model, *identity_lists = check("")
    assert len(identity_lists) == 3  # saved identity, slider positive, slider negative
    assert visibility["visible"] is False and "installed" in text
    assert model["value"] == HYPERLORA_MODELS[0]  # fidelity, the authors' default
    refresh, _ = handler(demo, block("refresh"))
    assert refresh("")[0]["visible"] is False  # the model list's refresh updates it too

    demo, script = build_panel(webui, monkeypatch)
    assert panel_extras(demo, script)("setup").visible is False


def test_download_button_runs_the_download_with_progress(webui, monkeypatch, hub):
    monkeypatch.setattr(ui_actions, "_download", fake_download(host.model_roots(), hub))
    demo, script = build_panel(webui, monkeypatch)
    block = panel_extras(demo, script)
    download, function = handler(demo, block("download"))
    status = block("status")
    assert output_ids(demo, function)[-1] == status._id  # the result lands in the status line
    progress = RecordingProgress()
    visibility, _, model, *_, message = download("", progress=progress)
    assert "ready" in message and visibility["visible"] is False
    assert model["choices"] and model["value"] in HYPERLORA_MODELS
    steps = [p for p, _ in progress.calls if p[0]]
    assert steps[-1][0] == steps[-1][1] == len(hub.calls)  # every file counted
    assert any("clip_vit_large_14" in str(desc) for _, desc in progress.calls)


def test_trigger_words_default_comes_from_settings_and_is_not_pinned(webui, monkeypatch):
    webui.shared.opts.data["hyperlora_trigger_words"] = False
    demo, script = build_panel(webui, monkeypatch)
    checkbox = panel_extras(demo, script)("trigger_words")
    assert checkbox.value is False and checkbox.do_not_save_to_config is True


# --------------------------------------------------------------------------- hints
def js_hints() -> dict[str, str]:
    source = HINTS.read_text(encoding="utf-8")
    body = re.search(r"const hyperloraHints = \{(.*?)\n\s*\};", source, re.S)
    assert body, "hyperlora.js must define const hyperloraHints = {...};"
    return dict(re.findall(r'^\s*"(\w+)":\s*"((?:[^"\\]|\\.)+)",?\s*$', body.group(1), re.M))


def interactive_items(demo, prefix: str) -> set[str]:
    display_only = (gr.Markdown, gr.HTML, gr.Row, gr.Column, gr.Group)
    items = set()
    for block in demo.blocks.values():
        elem_id = getattr(block, "elem_id", None) or ""
        if elem_id.startswith(prefix) and not isinstance(block, display_only):
            items.add(elem_id[len(prefix) :].removesuffix("-checkbox"))
    return items


def test_every_control_of_the_accordion_has_a_hint(webui, monkeypatch):
    demo, script = build_panel(webui, monkeypatch)
    prefix = script.elem_id("")
    assert prefix == "script_txt2img_hyperlora_"  # the id shape hyperlora.js matches
    items = interactive_items(demo, prefix)
    assert {"enable", "images", "weight", "download", "save"} <= items
    hints = js_hints()
    assert items - hints.keys() == set()
    assert all(len(text) > 20 for text in hints.values())
    assert "script_(?:txt2img|img2img)_hyperlora_" in HINTS.read_text(encoding="utf-8")


def test_the_standalone_accordion_has_hints_too():
    with gr.Blocks() as demo:
        ui.build_ui(lambda item: f"script_txt2img_hyperlora_{item}", ui_services())
    items = interactive_items(demo, "script_txt2img_hyperlora_")
    assert {"accordion", "enable"} <= items and items <= js_hints().keys()


def ui_services() -> ui_actions.Services:
    return ui_actions.Services(
        lambda: [], lambda: [], lambda args: ([], ""), lambda args, name, overwrite: ""
    )


def test_any_complete_model_folder_counts_like_the_models_route(webui, monkeypatch):
    """A user who renamed the model folder has a working HyperLoRA: no checklist, no download."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from hyperlora_ext.webui import api

    roots = host.model_roots()
    install_all(roots, models=())
    write_model_files(roots.hyper_lora / "my_renamed_fidelity", HYPERLORA_FILES)
    app = FastAPI()
    services = Services(roots=lambda: roots, pipeline=None, store=None)  # type: ignore[arg-type]
    api.register_routes(app, services)
    assert TestClient(app).get("/hyperlora/v1/models").json()["ready"] is True
    assert first_run.ready(roots)
    items = {item.label: item for item in first_run.checklist(roots)}
    assert items["HyperLoRA model my_renamed_fidelity"].present
    demo, script = build_panel(webui, monkeypatch)
    block = panel_extras(demo, script)
    assert block("setup").visible is False
    assert "needs these models" not in block("checklist").value

    (roots.antelopev2 / "glintr100.onnx").unlink()  # and both say "not ready" together
    assert TestClient(app).get("/hyperlora/v1/models").json()["ready"] is False
    assert not first_run.ready(roots)
