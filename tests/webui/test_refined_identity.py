"""A refined identity in use: by name, as <lora:>, on the X/Y/Z identity axis, in the infotext;
mixing it is refused with the reason."""

from __future__ import annotations

import pytest
import torch

from hyperlora_ext.args import HyperLoRAArgs
from hyperlora_ext.errors import NoTokensError
from hyperlora_ext.webui import refine_host, refine_info, xyz
from hyperlora_ext.webui.host import identity_store
from hyperlora_ext.webui.refine_host import WebUIRefineSettings
from tests.refine.tiny import photos
from tests.webui.harness import Harness, by_label, load_xyz, resolve
from tests.webui.loras import make_lora

SMALL = WebUIRefineSettings(steps=2, resolution=32, jitters=0, learning_rate=1e-2)
REFINED = "HyperLoRA refined: 2 steps (alice-refined)"


@pytest.fixture
def hl(webui, monkeypatch):
    """A harness with ``alice`` saved and refined (2 steps) into ``alice-refined``."""
    harness = Harness(webui, monkeypatch)
    store = identity_store()
    lora = make_lora(harness.model, style="diffusers", rank=8, alpha=4.0, scale=0.2)
    store.save("alice", lora, model="tiny", photos=2)
    refine_host.refine_saved_identity(harness.model, store, "alice", photos(), SMALL)
    return harness


def saved(name):
    return {"enabled": True, "identity": name, "weight": 1.0}


def test_usable_by_name_and_the_infotext_says_refined(hl):
    _, refined = hl.job(saved("alice-refined"))
    _, source = hl.job(saved("alice"))
    text = refined.infotexts[0]
    assert "HyperLoRA saved identity: alice-refined" in text and REFINED in text
    assert "HyperLoRA refined" not in source.infotexts[0]
    assert not torch.equal(refined.images[0], source.images[0])
    assert not torch.equal(refined.images[0], hl.image())


def test_usable_as_a_lora_tag_with_the_note(hl):
    plain = hl.image(prompt="x")
    _, processed = hl.job(prompt="x <lora:alice-refined:1>")
    assert not torch.equal(processed.images[0], plain)
    assert REFINED in processed.infotexts[0]
    assert "HyperLoRA refined" not in hl.job(prompt="x <lora:alice:1>")[1].infotexts[0]


def test_identity_axis_offers_and_applies_it(hl):
    grid = load_xyz(hl.webui)
    try:
        xyz.register_axes(grid)
        axis = by_label(grid, "Identity")
        assert {"alice", "alice-refined"} <= set(axis.choices())
        p = hl.webui.processing.StableDiffusionProcessingTxt2Img(
            sd_model=hl.model, scripts_runner=hl.runner, prompt="portrait"
        )
        p.script_args = [None, saved("alice")]
        _, results = grid.run_axis(p, axis, dropdown=["alice", "alice-refined"])
    finally:
        hl.webui.scripts.scripts_data.clear()
    first, second = (r.infotexts[0] for r in results)
    assert "HyperLoRA refined" not in first and REFINED in second
    assert not torch.equal(results[0].images[0], results[1].images[0])


def test_a_mix_with_it_says_why_not(hl):
    args = HyperLoRAArgs.from_dict({"mix": "alice-refined:0.5, alice:0.5"})
    with pytest.raises(NoTokensError, match=r"refined by training.*Mix its source 'alice'"):
        resolve(args)


def test_the_note_ignores_what_is_not_a_refined_identity(hl):
    store = identity_store()
    assert refine_info.note(store, "alice") is None
    assert refine_info.note(store, "sub/folder lora") is None
    assert refine_info.note(store, "missing") is None
    assert refine_info.names_in(["a <lora:b:1> <lora:c> <lora:b:0.5>", None]) == ["b", "c"]
