"""The accordion explains itself: hints, Face index only when used, model descriptions, true
warnings, short captions and counted nouns (gradio 3.41 and 4.x)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hyperlora_ext import advice
from hyperlora_ext.facts import HYPERLORA_MODELS
from hyperlora_ext.identity_value import Identity
from hyperlora_ext.webui import host, ui, ui_actions, ui_hints
from tests.webui.harness import handlers

gr = pytest.importorskip("gradio")
FIDELITY, EDIT = HYPERLORA_MODELS
GRADIO_4 = int(gr.__version__.split(".")[0]) >= 4


def _panel():
    services = ui_actions.Services(lambda: [FIDELITY, EDIT], lambda: [], lambda a: ([], ""), None)
    with gr.Blocks() as demo:
        panel = ui.build_ui(lambda item: f"hl_{item}", services)
    by_id = {c.elem_id: c for c in demo.blocks.values() if getattr(c, "elem_id", None)}
    return demo, panel, by_id


def _run_handler(demo, component, output):
    """The handler of ``component`` whose outputs are exactly ``[output]``."""
    for fn, function in handlers(demo, component):
        if [o._id for o in function.outputs] == [output._id]:
            return fn
    raise AssertionError(f"no handler of {component.elem_id} updates {output.elem_id}")


def _visible(update):
    return update["visible"] if isinstance(update, dict) else update.visible


def test_face_index_shows_only_with_the_face_choice_index():
    demo, _, by_id = _panel()
    face, face_index = by_id["hl_face"], by_id["hl_face_index"]
    assert face_index.visible is False  # default face choice: Largest
    toggle = _run_handler(demo, face, face_index)
    assert _visible(toggle("Index")) is True
    assert _visible(toggle("Largest")) is False
    assert _visible(toggle("Best score")) is False


def test_every_control_says_what_it_does():
    _, _, by_id = _panel()
    assert by_id["hl_weight"].info == advice.weight_hint()
    assert "0.75–0.85" in by_id["hl_weight"].info
    for name in ("face_index", "photo_weights", "mix", "slider_positive", "slider_negative",
                 "slider_strength", "model"):  # fmt: skip
        info = by_id[f"hl_{name}"].info
        assert info and len(info) < 200 and "\n" not in info, name


def test_the_model_list_says_which_model_is_which_and_keeps_folder_names():
    _, _, by_id = _panel()
    model = by_id["hl_model"]
    assert model.value == FIDELITY  # the value infotexts and the API use
    assert "fidelity: closest likeness" in model.info and "edit: follows the prompt" in model.info
    if GRADIO_4:  # its dropdown shows a label per value
        labels = dict((value, label) for label, value in model.choices)
        assert list(labels) == [FIDELITY, EDIT]
        assert labels[FIDELITY] == f"{FIDELITY} (closest likeness; the authors' default)"
        assert labels[EDIT].startswith(f"{EDIT} (more editability")
    else:  # gradio 3.41's dropdown takes plain values only
        assert model.choices == [FIDELITY, EDIT]


def test_moving_the_weight_notes_a_weight_far_outside_the_advice_and_clears_it():
    demo, panel, by_id = _panel()
    status = panel.extras["status"]
    note = _run_handler(demo, by_id["hl_weight"], status)
    far = note("1 photo encoded in 0.2 s", 1.4)
    assert far.startswith("1 photo encoded in 0.2 s · weight 1.4 is far above it")
    assert note(far, 0.8) == "1 photo encoded in 0.2 s"
    assert "likeness will be weak" in note(far, 0.2) and note(far, 0.2).count("weight ") == 1
    assert note("", 0.85) == ""


def _report(label, faces, used=True, reason=None):
    return SimpleNamespace(label=label, faces_found=faces, used=used, reason=reason)


def test_status_line_counts_photos_in_words_and_gives_the_details():
    one = Identity(lora={}, digest="d", model="m", photos=1, seconds=0.25,
                   reports=(_report("image 1 (alice.jpg)", 1),))  # fmt: skip
    assert ui_actions.status_line(one) == "1 photo encoded in 0.2 s"
    reports = (
        _report("image 1 (a.jpg)", 1),
        _report("image 2 (b.jpg)", 3),
        _report("image 3 (c.jpg)", 0, used=False, reason="no face found"),
    )
    two = Identity(lora={}, digest="d", model="m", photos=2, seconds=1.0, reports=reports)
    line = ui_actions.status_line(two, weight=-0.5)
    assert line.startswith("2 photos encoded in 1.0 s · image 3 (c.jpg): no face found")
    assert "image 2 (b.jpg): 3 faces found, one used (see 'Face')" in line
    assert "weight -0.5 is negative" in line and "photo(s)" not in line
    captions = [ui_actions._caption(i, r) for i, r in enumerate(reports, 1)]
    assert captions == ["1", "2: 3 faces", "3: skipped"]  # the real UI cuts long captions


@pytest.mark.parametrize(
    ("where", "clip_skip", "sdxl_clip_l_skip", "warned"),
    [
        ("a1111", 1, False, False),  # the default: SDXL already uses the penultimate layer
        ("a1111", 3, False, False),  # A1111 ignores Clip skip for SDXL unless the option is on
        ("a1111", 1, True, True),
        ("a1111", 2, True, False),
        ("forge", 1, False, False),
        ("forge", 3, False, True),
    ],
)
def test_the_clip_warning_appears_only_when_true(
    webui, monkeypatch, where, clip_skip, sdxl_clip_l_skip, warned
):
    from modules import shared

    monkeypatch.setattr(host, "detect_host", lambda p=None: where)
    shared.opts.CLIP_stop_at_last_layers = clip_skip
    shared.opts.sdxl_clip_l_skip = sdxl_clip_l_skip
    warnings = [w for w in ui_actions.host_warnings() if "Clip skip" in w or "CLIP" in w]
    assert bool(warnings) is warned, warnings
    if warned:
        assert warnings == [advice.clip_layer_warning(where, clip_skip, sdxl_clip_l_skip)]


def test_the_default_a1111_options_give_no_clip_warning(webui):
    # The old accordion said "CLIP skip is 1; 2 is recommended" here, which changes nothing.
    assert not any("clip" in w.lower() for w in ui_actions.host_warnings())
    assert ui_hints.clip_warning(SimpleNamespace()) == ""  # options missing: their defaults
