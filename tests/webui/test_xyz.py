"""X/Y/Z axes: registration, what each axis sets, and whole grids through the script."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

from hyperlora_ext.args import HyperLoRAArgs
from hyperlora_ext.webui import job_state, xyz
from tests.encoders._photos import face_photo
from tests.webui.harness import by_label, load_xyz
from tests.webui.tiny_host import TINY_WIDTHS, point_webui_at, tiny_models


@pytest.fixture
def host(webui, tmp_path_factory, monkeypatch):
    """The double with the tiny models and the session's warm pipeline (see test_api.py)."""
    point_webui_at(*tiny_models(tmp_path_factory), monkeypatch)
    return webui


@pytest.fixture
def session_pipeline(tmp_path_factory):
    return tiny_models(tmp_path_factory)[1]


AXES = ("Weight", "Model", "Identity", "Slider strength", "Enabled")
LABELS = [f"[HyperLoRA] {name}" for name in AXES]


@pytest.fixture
def grid(webui):
    module = load_xyz(webui)
    yield module
    webui.scripts.scripts_data.clear()


def labels(module):
    return [o.label for o in module.axis_options]


def test_axes_are_registered_once_when_the_script_is_there(grid):
    assert xyz.find_xyz_module() is grid
    assert xyz.register_axes(list_models=lambda: ["a"], list_identities=lambda: ["alice"])
    assert xyz.register_axes(list_models=lambda: ["a"], list_identities=lambda: ["alice"])
    assert labels(grid) == ["Nothing", "Seed", *LABELS]
    assert by_label(grid, "Identity").choices() == ["alice"]
    assert by_label(grid, "Enabled").choices() == ["True", "False"]
    assert by_label(grid, "Weight").choices is None and by_label(grid, "Weight").type is float


def test_found_by_module_name_too(webui, grid):
    entry = webui.scripts.scripts_data[-1]
    webui.scripts.scripts_data[-1] = entry._replace(path="/elsewhere/renamed.py")
    assert xyz.find_xyz_module() is grid


def test_without_the_xyz_script_nothing_breaks(webui):
    assert xyz.find_xyz_module() is None
    assert xyz.register_axes() is False


def test_without_the_webui_nothing_breaks(monkeypatch):
    monkeypatch.setitem(sys.modules, "modules", None)
    assert xyz.find_xyz_module() is None


def test_apply_sets_the_fields_on_the_cell_only(grid):
    xyz.register_axes(grid, list_models=lambda: ["fidelity"], list_identities=lambda: ["bob"])
    p = SimpleNamespace()
    cell = SimpleNamespace(**vars(p))
    by_label(grid, "Weight").apply(cell, 0.25, [0.25])
    by_label(grid, "Model").apply(cell, "fidelity", ["fidelity"])
    by_label(grid, "Identity").apply(cell, "bob", ["bob"])
    by_label(grid, "Enabled").apply(cell, "False", ["False"])
    by_label(grid, "Slider strength").apply(cell, "-0.5", ["-0.5"])
    expected = {
        "weight": 0.25, "model": "fidelity", "identity": "bob", "enabled": False,
        "slider_strength": -0.5,
    }  # fmt: skip
    assert job_state.peek(cell).overrides == expected
    assert job_state.peek(p) is None
    shared = job_state.JobState(overrides={"weight": 0.5})
    first, second = (SimpleNamespace(**{job_state.ATTRIBUTE: shared}) for _ in range(2))
    by_label(grid, "Enabled").apply(first, "True", [])
    assert shared.overrides == {"weight": 0.5} and job_state.peek(second) is shared
    assert job_state.peek(first).overrides == {"weight": 0.5, "enabled": True}


def cell_with(**overrides):
    return SimpleNamespace(**{job_state.ATTRIBUTE: job_state.JobState(overrides=overrides)})


def test_merge_overrides():
    args = HyperLoRAArgs(enabled=True, model="fidelity", weight=0.8)
    assert xyz.merge_overrides(args, SimpleNamespace()) is args
    merged = xyz.merge_overrides(args, cell_with(weight="0.3"))
    assert merged == args.replace(weight=0.3)
    with pytest.raises(Exception, match="'weight'"):
        xyz.merge_overrides(args, cell_with(weight=7.0))
    strength = cell_with(slider_strength=0.5)
    with pytest.raises(Exception, match=r"'slider_strength'.*needs a slider"):
        xyz.merge_overrides(args, strength)  # a grid of identical images otherwise
    with_slider = args.replace(slider_positive="a", slider_negative="b")
    assert xyz.merge_overrides(with_slider, strength).slider_strength == 0.5


def test_confirm_rejects_bad_values_before_the_grid_runs(grid):
    xyz.register_axes(grid, list_models=lambda: ["fidelity"], list_identities=lambda: [])
    by_label(grid, "Weight").confirm(None, [-1.5, 0, 1.5])
    with pytest.raises(ValueError, match="weight"):
        by_label(grid, "Weight").confirm(None, [0.5, 2.0])
    with pytest.raises(ValueError, match="'edit' not found; available: fidelity"):
        by_label(grid, "Model").confirm(None, ["fidelity", "edit"])
    with pytest.raises(ValueError, match="available: none"):
        by_label(grid, "Identity").confirm(None, ["alice"])
    with pytest.raises(ValueError, match="enabled"):
        by_label(grid, "Enabled").confirm(None, ["maybe"])
    by_label(grid, "Slider strength").confirm(None, [-3, 0, 3])
    with pytest.raises(ValueError, match="slider_strength"):
        by_label(grid, "Slider strength").confirm(None, [0.5, 4])


def test_default_choices_come_from_the_webui(host, grid):
    from hyperlora_ext.store import get_store

    lora = {
        "lora_unet_x.lora_down.weight": torch.ones(2, 4),
        "lora_unet_x.lora_up.weight": torch.ones(4, 2),
        "lora_unet_x.alpha": torch.tensor(2.0),
    }
    get_store(host.lora_dir).save("carol", lora, model="tiny", photos=1)
    xyz.register_axes(grid)
    assert by_label(grid, "Model").choices() == ["tiny"]
    assert by_label(grid, "Identity").choices() == ["carol"]


# ------------------------------------------------------------------ whole grids, real pipeline
@pytest.fixture
def job(host, grid, tmp_path, session_pipeline, monkeypatch):
    """A txt2img job with HyperLoRA on (one photo), and a counter of real encodes."""
    model = host.load_model("sdxl", **TINY_WIDTHS)
    runner = host.runner(host.load_script())
    xyz.register_axes(grid)
    photo = tmp_path / "grid_face.png"
    face_photo((300, 260), ((90, 50, 230, 230),)).save(photo)  # a photo no other test encodes
    encodes = []
    compute = session_pipeline._compute

    def counting(*args, **kwargs):
        encodes.append(1)
        return compute(*args, **kwargs)

    monkeypatch.setattr(session_pipeline, "_compute", counting)
    p = host.processing.StableDiffusionProcessingTxt2Img(
        sd_model=model, scripts_runner=runner, prompt="portrait", steps=2
    )
    p.script_args = [None, {"enabled": True, "images": [str(photo)], "model": "tiny"}]
    yield SimpleNamespace(p=p, encodes=encodes, model=model)
    host.shared.state.begin()


def test_weight_axis_encodes_once_and_each_cell_states_its_weight(job, grid):
    values, results = grid.run_axis(job.p, by_label(grid, "Weight"), "0.2, 0.6, 1.0")
    assert values == [0.2, 0.6, 1.0]
    assert len(job.encodes) == 1
    infotexts = [r.infotexts[0] for r in results]
    for weight, text in zip(("0.2", "0.6", "1"), infotexts, strict=True):
        assert f"HyperLoRA weight: {weight}" in text and "HyperLoRA error" not in text
    digests = {text.split("HyperLoRA identity: ")[1].split(",")[0] for text in infotexts}
    assert len(digests) == 1
    images = [r.images[0] for r in results]
    assert not torch.equal(images[0], images[2])


def test_enabled_axis_turns_it_off_per_cell(job, grid):
    _, results = grid.run_axis(job.p, by_label(grid, "Enabled"), dropdown=["True", "False"])
    on, off = (r.infotexts[0] for r in results)
    assert "HyperLoRA weight" in on and "HyperLoRA" not in off
    assert len(job.encodes) <= 1


def test_identity_axis_uses_saved_identities_without_encoding(job, grid, host):
    from hyperlora_ext.store import get_store

    lora = job.p.script_args[1]
    result = host.processing.process_images(job.p)  # encodes the photo (unless cached)
    assert "HyperLoRA identity" in result.infotexts[0]
    encoded = len(job.encodes)
    from tests.webui.harness import resolve

    predicted = resolve(HyperLoRAArgs.from_dict(lora))
    store = get_store(host.lora_dir)
    store.save("first", predicted.lora, model="tiny", photos=1)
    store.save("second", {k: -v for k, v in predicted.lora.items()}, model="tiny", photos=1)
    _, results = grid.run_axis(job.p, by_label(grid, "Identity"), dropdown=["first", "second"])
    assert len(job.encodes) == encoded <= 1
    texts = [r.infotexts[0] for r in results]
    assert "HyperLoRA saved identity: first" in texts[0]
    assert "HyperLoRA saved identity: second" in texts[1]
    assert not torch.equal(results[0].images[0], results[1].images[0])


def test_model_axis_checks_names_and_sets_the_model(job, grid):
    with pytest.raises(ValueError, match="not found"):
        grid.run_axis(job.p, by_label(grid, "Model"), dropdown=["tiny", "missing"])
    _, results = grid.run_axis(job.p, by_label(grid, "Model"), dropdown=["tiny"])
    assert "HyperLoRA model: tiny" in results[0].infotexts[0]


def test_slider_strength_axis_encodes_once_and_each_cell_states_its_strength(job, grid, host):
    from hyperlora_ext.store import get_store
    from tests.webui.harness import resolve

    identity_only = host.processing.process_images(job.p).images[0]
    predicted = resolve(HyperLoRAArgs.from_dict(job.p.script_args[1]))
    store = get_store(host.lora_dir)
    store.save("older", {k: v * 3 for k, v in predicted.lora.items()}, model="tiny", photos=1)
    store.save("younger", {k: -v for k, v in predicted.lora.items()}, model="tiny", photos=1)
    job.p.script_args = [
        None,
        {**job.p.script_args[1], "slider": {"positive": "older", "negative": "younger"}},
    ]
    encoded = len(job.encodes)
    values, results = grid.run_axis(job.p, by_label(grid, "Slider strength"), "-1, 0, 1")
    assert values == [-1.0, 0.0, 1.0] and len(job.encodes) == encoded <= 1
    texts = [r.infotexts[0] for r in results]
    assert (
        "HyperLoRA slider strength: -1" in texts[0] and "HyperLoRA slider strength: 1" in texts[2]
    )
    assert "HyperLoRA slider" not in texts[1]  # strength 0: no slider
    assert "HyperLoRA slider positive: older" in texts[2] and "HyperLoRA error" not in texts[2]
    images = [r.images[0] for r in results]
    assert torch.equal(images[1], identity_only)
    assert not torch.equal(images[0], images[2]) and not torch.equal(images[2], identity_only)
