"""Opt-in: what a new user sees of the accordion in a real WebUI's txt2img tab, in Chromium.

    SD_WEBUI_URL=http://127.0.0.1:7860 SD_WEBUI_FACE=face.png pytest tests/webui -m integration

Needs a WebUI with its UI (not ``--nowebui``: there is no page, and the tests skip) and the
browser tools of tests/webui/test_ui_browser.py (node, Chromium, playwright-core). The page is
checked against the server's own routes: the models and saved identities it lists, its CLIP
options, whether ADetailer is installed. The test saves one identity (``browser_test_person``,
from the face photo) so that the gallery has a card to click, and deletes it afterwards.
Screenshots: test-artifacts/webui-txt2img-<webui>.png (the tab, accordion closed),
webui-accordion-<webui>.png and webui-identities-<webui>.png (<webui> is SD_WEBUI_WEBUI, as
tools/webui_smoke sets it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from hyperlora_ext import advice
from hyperlora_ext.facts import HYPERLORA_MODELS
from tests.webui.browser_tools import ARTIFACTS, missing, run_script
from tests.webui.live_webui import FACE, URL, call, face

pytestmark = pytest.mark.integration
WEBUI = os.environ.get("SD_WEBUI_WEBUI", "webui")
PREFIX = "script_txt2img_hyperlora_"  # the WebUI's Script.elem_id for the txt2img tab
ACCORDION = PREFIX + "enable"  # the InputAccordion, whose open state is "enabled"
FIDELITY = HYPERLORA_MODELS[0]
PERSON = "browser_test_person"  # saved for the test (a card in the gallery), deleted after it
SHOTS = tuple(
    ARTIFACTS / f"webui-{part}-{WEBUI}.png" for part in ("txt2img", "accordion", "identities")
)


def _skip_reason() -> str | None:
    if not URL:
        return "SD_WEBUI_URL is not set (point it at a WebUI started with --api)"
    if not FACE or not Path(FACE).is_file():
        return "SD_WEBUI_FACE is not set to a photo of a face"
    if call("/config").status == 404:
        return "no UI on this server (--nowebui): no page to open"
    return missing()


@pytest.fixture(scope="module")
def seen() -> Iterator[dict[str, Any]]:
    """What the browser saw, after opening the accordion and trying its controls."""
    reason = _skip_reason()
    if reason:
        print(f"SKIP browser integration test: {reason}")
        pytest.skip(reason)
    ARTIFACTS.mkdir(exist_ok=True)
    for shot in SHOTS:
        shot.unlink(missing_ok=True)
    saved = call("/hyperlora/v1/encode", {"images": [face()], "save_as": PERSON, "overwrite": True})
    assert saved.status == 200, saved.body
    try:
        yield run_script(
            "browser_webui.js", URL + "/", PREFIX, ACCORDION, FACE, *map(str, SHOTS), timeout=900
        )
    finally:
        call(f"/hyperlora/v1/identities/{PERSON}", method="DELETE")


def test_opening_the_accordion_enables_it_and_shows_no_checklist_when_ready(seen):
    models = call("/hyperlora/v1/models").body
    assert seen["enabledByOpening"] is True
    assert seen["setupVisible"] is not models["ready"], (models["problems"], seen["accordionText"])


def test_the_model_dropdown_lists_the_installed_models_with_fidelity_chosen(seen):
    installed = [m["name"] for m in call("/hyperlora/v1/models").body["hyperlora"] if m["complete"]]
    assert installed, "the smoke WebUI has HyperLoRA models"
    # gradio 4 (Forge) shows "name (what it is for)"; gradio 3.41 (A1111) the bare name.
    assert sorted(o.split(" (")[0] for o in seen["modelOptions"]) == sorted(installed)
    assert seen["model"].split(" (")[0] == (FIDELITY if FIDELITY in installed else installed[0])
    assert "fidelity: closest likeness" in seen["modelText"]


def test_the_weight_starts_at_the_default_with_the_authors_advice(seen):
    assert float(seen["weight"]) == pytest.approx(0.8)
    assert advice.weight_hint() in seen["weightText"]


def test_a_preview_warns_about_clip_skip_only_when_it_is_true(seen):
    options = call("/sdapi/v1/options").body
    host = cast(advice.Host, "forge" if WEBUI == "forge" else "a1111")
    expected = advice.clip_layer_warning(
        host, int(options.get("CLIP_stop_at_last_layers", 1)), bool(options.get("sdxl_clip_l_skip"))
    )
    status = seen["status"]
    assert status.startswith("1 photo encoded"), status
    if expected:
        assert expected in status
    else:
        assert "clip skip" not in seen["accordionText"].lower(), seen["accordionText"]


def test_face_index_shows_only_for_the_index_choice(seen):
    assert seen["faceIndexVisible"] is False
    assert seen["faceIndexShown"] is True


def test_saved_identities_show_as_cards_and_a_click_describes_one(seen):
    names = [i["name"] for i in call("/hyperlora/v1/identities").body["identities"]]
    assert PERSON in names
    assert seen["cards"] == len(names), (names, seen["identityInfo"])
    info = seen["identityInfo"]  # after a click on the first card
    assert "**" not in info  # Markdown rendered, not raw
    assert any(f"{name} · model" in info for name in names), info
    assert "likeness reference" in info


def test_the_adetailer_row_shows_when_adetailer_is_installed(seen):
    installed = "adetailer" in call("/sdapi/v1/scripts").body["txt2img"]
    assert seen["adetailerVisible"] is installed
    if installed:
        assert "ADetailer" in seen["adetailerNote"]
        assert seen["adFixVisible"] or seen["adUndoVisible"]


def test_the_screenshots_are_saved(seen):
    for shot in SHOTS:
        assert 10_000 < shot.stat().st_size < 2_000_000, shot
