"""The accordion's Refine control: built in Advanced with hints, its buttons on the A1111 double."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hyperlora_ext.facts import ERROR_LABEL
from hyperlora_ext.webui import host as host_module
from hyperlora_ext.webui import ui_refine
from hyperlora_ext.webui.ui_actions import failure_text
from tests.encoders._photos import face_photo
from tests.webui.fake_webui.tiny_sdxl import unet_fingerprint
from tests.webui.harness import build_panel, handler
from tests.webui.loras import make_lora

FAST = [2, 1e-3, 64, ""]  # steps, learning rate, resolution, save name


@pytest.fixture
def panel(host, monkeypatch, tmp_path):
    """(gradio demo, script, loaded tiny model, two photo files); ``alice`` is saved."""
    from hyperlora_ext.webui.host import identity_store

    model = host.load_model()
    lora = make_lora(model, style="diffusers", rank=8, alpha=4.0, scale=0.2)
    identity_store().save("alice", lora, model="tiny", photos=2)
    pipeline = host_module.pipeline
    demo, script = build_panel(host, monkeypatch)
    monkeypatch.setattr(host_module, "pipeline", pipeline)  # the buttons may use it
    files = []
    for i, box in enumerate(((100, 40, 220, 200), (60, 30, 200, 220))):
        path = tmp_path / f"photo{i}.png"
        face_photo((320, 240), (box,)).save(path)
        files.append(str(path))
    return demo, script, model, files


def component(demo, script, name):
    wanted = script.elem_id(name)
    return next(c for c in demo.blocks.values() if getattr(c, "elem_id", None) == wanted)


def args(files, identity="alice"):
    """Accordion values in HyperLoRAArgs order (enabled .. identity; the rest default)."""
    return [True, files, "", 0.8, True, "largest", 0, True, False, identity]


def test_the_control_sits_in_advanced_with_a_hint_for_each_setting(panel):
    demo, script, _, _ = panel
    names = ("refine_steps", "refine_lr", "refine_resolution", "refine_save_name", "refine_score")
    for name in names:
        assert len(component(demo, script, name).info) > 20
    assert component(demo, script, "refine_steps").value == 50
    assert component(demo, script, "refine_lr").value == 1e-4
    assert component(demo, script, "refine_resolution").value == 768


def test_refine_button_saves_shows_the_loss_and_gives_the_unet_back(panel, host):
    from modules import call_queue

    from hyperlora_ext.webui.host import identity_store

    demo, script, model, files = panel
    before = unet_fingerprint(model)
    click = handler(demo, component(demo, script, "refine_run"))[0]
    status, plot = click(False, *FAST, *args(files))
    assert status.startswith("Saved `alice-refined` (2 steps in "), status
    assert "<lora:alice-refined:1>" in status and "not scored" in status
    assert plot["visible"] is True and plot["value"].size == ui_refine.PLOT_SIZE
    assert identity_store().record("alice-refined").options["refine"]["steps"] == 2
    after = unet_fingerprint(model)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert call_queue.queue_lock.acquire(blocking=False), "the queue lock was left held"
    call_queue.queue_lock.release()
    assert host.shared.state.ended == 1


@pytest.mark.parametrize(
    ("settings", "identity", "photos", "message"),
    [
        (FAST, "", True, "choose the identity to refine under 'Saved identity'"),
        (FAST, "alice", False, "refining needs the identity's photos"),
        ([2, 0.5, 64, ""], "alice", True, "Learning rate must be above 0 and at most 0.01"),
        ([2, 1e-3, 100, ""], "alice", True, "Resolution must be a multiple of 8"),
        ([0, 1e-3, 64, ""], "alice", True, "Steps must be a whole number of at least 1"),
        ([2, 1e-3, 64, "a/b"], "alice", True, "a/b"),
        (FAST, "bob", True, "bob"),
    ],
)
def test_refine_failures_go_to_the_status_line(panel, host, settings, identity, photos, message):
    files = panel[3]
    status, plot = ui_refine.refine_click(
        failure_text, False, *settings, *args(files if photos else None, identity)
    )
    assert message in status and status.startswith("**") and plot is None
    assert host.shared.state.ended == 0  # nothing started


def test_an_unexpected_failure_is_named_not_raised(panel, monkeypatch):
    files = panel[3]

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: device-side assert")

    monkeypatch.setattr(ui_refine.WebUIRefineSettings, "__init__", broken)
    status, _ = ui_refine.refine_click(failure_text, False, *FAST, *args(files))
    assert status == f"**{ERROR_LABEL}: RuntimeError: CUDA error: device-side assert**"


def test_kit_button_writes_into_the_outputs_folder(panel):
    from modules import paths

    demo, script, _, files = panel
    click = handler(demo, component(demo, script, "refine_kit"))[0]
    status = click(2, 1e-4, 64, "alice kit", *args(files))
    folder = f"{paths.data_path}/outputs/hyperlora-kits/alice kit"
    assert status.startswith("Training kit written to `") and "alice kit" in status
    assert Path(folder, "train.sh").is_file() and Path(folder, "alice kit.safetensors").is_file()


def test_loss_plot_draws_the_curve_from_high_to_low():
    image = ui_refine.loss_plot([0.9, 0.5, 0.2, 0.1], size=(200, 100))
    pixels = np.asarray(image)
    blue = (pixels[..., 2] > 150) & (pixels[..., 0] < 100)
    ys, xs = np.nonzero(blue)
    assert xs.min() < 20 and xs.max() > 180  # the whole width: first to last step
    left, right = ys[xs < 30].mean(), ys[xs > 170].mean()
    assert left < right  # higher loss is drawn higher up
    assert ui_refine.loss_plot([]) is None
    assert ui_refine.loss_plot([0.3]) is not None


def test_likeness_before_and_after_in_the_status(panel, monkeypatch):
    from hyperlora_ext.webui import refine_likeness

    files = panel[3]
    pair = refine_likeness.LikenessPair(0.41, 0.57, "seed 1")
    seen = []

    def after_refine(services, sd_model, source, saved, wanted):
        seen.append((source, saved, wanted))
        return pair

    monkeypatch.setattr(refine_likeness, "after_refine", after_refine)
    status, _ = ui_refine.refine_click(failure_text, True, *FAST, *args(files))
    assert seen == [("alice", "alice-refined", True)]
    assert "Likeness 0.410 before, 0.570 after (seed 1)." in status
