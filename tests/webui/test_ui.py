"""The accordion built in a gradio Blocks of the WebUI's pinned version: order, defaults, paste."""

from __future__ import annotations

import json

import pytest

from hyperlora_ext.args import HyperLoRAArgs
from hyperlora_ext.webui import host
from tests.webui.harness import build

gr = pytest.importorskip("gradio")


def test_ui_returns_the_argument_components_in_field_order_with_valid_defaults(webui, monkeypatch):
    _, inputs = build(webui, monkeypatch)
    assert len(inputs) == len(HyperLoRAArgs.field_names())
    values = [c.value for c in inputs]
    json.dumps(values)  # /sdapi/v1/script-info serialises the defaults
    parsed = HyperLoRAArgs.from_positional(values)
    assert parsed == HyperLoRAArgs(model=parsed.model)
    assert inputs[0].value is False  # closed and off by default
    assert (inputs[3].minimum, inputs[3].maximum, inputs[3].step) == (-1.5, 1.5, 0.01)


def test_ui_is_side_effect_free(webui, monkeypatch, tmp_path):
    before = sorted(p for p in tmp_path.rglob("*"))
    for _ in range(3):  # per tab, and twice more for the API defaults
        build(webui, monkeypatch)
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert webui.networks.loaded_networks == []


def test_paste_restores_the_controls(webui, monkeypatch):
    from tests.webui.harness import Harness

    harness = Harness(webui, monkeypatch)
    wanted = HyperLoRAArgs(
        enabled=True, images=("alice.png",), model="tiny", weight=-0.35, trigger_words=False,
        face="best_score", face_index=2, remove_background=False, grayscale=True,
    )  # fmt: skip
    _, processed = harness.job(wanted.to_dict())
    webui.processing.sampler_step_hooks.clear()
    script, inputs = build(webui, monkeypatch)
    parse, paste = webui.infotext_utils.parse_generation_parameters, webui.infotext_utils.paste
    params = parse(processed.infotexts[0])
    assert set(script.paste_field_names) >= {"HyperLoRA model", "HyperLoRA weight"}

    new_values = paste(script.infotext_fields, params)
    by_component = dict(zip([id(c) for c, _ in script.infotext_fields], new_values, strict=True))
    no_change = webui.infotext_utils.NoChange
    values = [by_component.get(id(c), no_change) for c in inputs]
    values = [c.value if v is no_change else v for c, v in zip(inputs, values, strict=True)]
    restored = HyperLoRAArgs.from_positional(values)
    assert restored == wanted.replace(images=(), dtype="fp32")  # photos cannot be restored


def test_pasting_an_infotext_without_hyperlora_turns_it_off_and_leaves_the_rest(webui, monkeypatch):
    script, _ = build(webui, monkeypatch)
    params = webui.infotext_utils.parse_generation_parameters(
        "a cat\nSteps: 20, Seed: 1, Size: 8x8"
    )
    new_values = webui.infotext_utils.paste(script.infotext_fields, params)
    fields = [c for c, _ in script.infotext_fields]
    assert new_values[0] is False and fields[0].elem_id.endswith("enable-checkbox")
    assert all(v is webui.infotext_utils.NoChange for v in new_values[1:])


def test_turning_hyperlora_on_preloads_the_chosen_model(webui, monkeypatch, capsys):
    from tests.webui.harness import build_panel, handler

    def enable_handler():
        demo, script = build_panel(webui, monkeypatch)
        wanted = script.elem_id("enable") + "-checkbox"
        return handler(demo, next(c for c in demo.blocks.values() if c.elem_id == wanted))[0]

    calls = []
    monkeypatch.setattr(host, "preload", calls.append)
    preload = enable_handler()
    preload(False, "tiny")
    assert calls == []
    preload(True, "tiny")
    assert calls == ["tiny"]

    def broken(model):
        raise RuntimeError("no memory left")

    monkeypatch.setattr(host, "preload", broken)
    enable_handler()(True, "tiny")  # a UI event never fails; the console shows why
    assert "no memory left" in capsys.readouterr().err
