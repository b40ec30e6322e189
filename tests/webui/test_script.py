"""scripts/hyperlora.py through the A1111 double: whole jobs, with the identity pipeline stubbed.

The stub returns a hand-built LoRA per photo set, so these tests cover the script's glue and the
adapter inside A1111's real call order; the pipeline itself is tested elsewhere.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from hyperlora_ext.webui import job_state
from tests.webui.fake_webui.tiny_sdxl import unet_fingerprint
from tests.webui.harness import ON, TARGET, Harness, ours
from tests.webui.loras import make_lora


@pytest.fixture
def hl(webui, monkeypatch):
    harness = Harness(webui, monkeypatch)
    yield harness
    webui.processing.sampler_step_hooks.clear()
    webui.shared.state.begin()


def test_identity_changes_the_image_and_the_next_plain_job_matches_the_first(hl):
    before = unet_fingerprint(hl.model)
    plain = hl.image()
    with_identity = hl.image(ON)
    assert all(ours(names) for _, names, _ in hl.samples)
    assert not torch.equal(plain, with_identity)
    assert all(torch.equal(before[k], v) for k, v in unet_fingerprint(hl.model).items())
    assert torch.equal(hl.image(), plain)
    assert hl.webui.errors.reported == []


def test_positional_arguments_in_ui_order(hl):
    p, _ = hl.job([True, ["bob.png"], "tiny", 0.5, True, "Best score", 0, True, False, ""])
    assert hl.predictions[-1].face == "best_score" and hl.predictions[-1].images == ("bob.png",)
    assert p.extra_generation_params["HyperLoRA weight"] == "0.5"


def test_interrupted_job_restores_bit_exactly(hl):
    before = unet_fingerprint(hl.model)
    plain = hl.image()

    def interrupt(p, step):
        if step == 1:
            hl.webui.shared.state.interrupted = True

    hl.webui.processing.sampler_step_hooks.append(interrupt)
    hl.job(ON, n_iter=2)
    assert hl.samples and all(ours(names) for _, names, _ in hl.samples)
    assert all(torch.equal(before[k], v) for k, v in unet_fingerprint(hl.model).items())
    hl.webui.processing.sampler_step_hooks.remove(interrupt)
    hl.webui.shared.state.begin()
    assert torch.equal(hl.image(), plain)


def failing_sampler(p, step):
    if step == 1:
        raise RuntimeError("CUDA out of memory (simulated)")


def test_exception_in_sampler_is_cleaned_up_by_the_next_job(hl):
    plain_no_networks = hl.image(disable_extra_networks=True)
    before = unet_fingerprint(hl.model)
    hl.webui.processing.sampler_step_hooks.append(failing_sampler)
    with pytest.raises(RuntimeError, match="simulated"):
        hl.job(ON)
    hl.webui.processing.sampler_step_hooks.remove(failing_sampler)
    assert ours(n.name for n in hl.webui.networks.loaded_networks), "left merged by the crash"
    assert any(not torch.equal(before[k], v) for k, v in unet_fingerprint(hl.model).items())

    # The next job activates no networks at all, so A1111 would keep the stale identity.
    after_crash = hl.image(disable_extra_networks=True)
    assert torch.equal(after_crash, plain_no_networks)
    assert all(torch.equal(before[k], v) for k, v in unet_fingerprint(hl.model).items())


def test_exception_with_a_user_lora_stacked_leaves_no_trace(hl):
    user = make_lora(hl.model, seed=77, only=24)
    save_file(user, str(hl.webui.lora_dir / "user.safetensors"))
    before = unet_fingerprint(hl.model)
    plain = hl.image()
    hl.webui.processing.sampler_step_hooks.append(failing_sampler)
    with pytest.raises(RuntimeError):
        hl.job(ON, prompt="a photo <lora:user:1>")
    hl.webui.processing.sampler_step_hooks.remove(failing_sampler)
    assert torch.equal(hl.image(), plain)
    assert all(torch.equal(before[k], v) for k, v in unet_fingerprint(hl.model).items())


def test_stacks_with_a_user_lora_in_a_job(hl):
    user = make_lora(hl.model, seed=78, only=24)
    save_file(user, str(hl.webui.lora_dir / "user.safetensors"))
    user_only = hl.image(prompt="x <lora:user:1>")
    both = hl.image(ON, prompt="x <lora:user:1>")
    names = hl.samples[-1][1]
    assert names[0] == "user" and ours(names) == names[1:]
    assert not torch.equal(user_only, both)
    assert torch.equal(hl.image(prompt="x <lora:user:1>"), user_only)


@pytest.mark.parametrize("fixture", ["webui", "webui_19"])
def test_hires_second_pass_keeps_the_identity(request, monkeypatch, fixture):
    harness = Harness(request.getfixturevalue(fixture), monkeypatch)
    before = unet_fingerprint(harness.model)
    harness.job(ON, enable_hr=True)
    passes = {hr for hr, _, _ in harness.samples}
    assert passes == {False, True}
    assert all(ours(names) for _, names, _ in harness.samples)
    # Weights are merged lazily in the first forward: compare each pass's last step.
    first = [w for hr, _, w in harness.samples if not hr][-1]
    second = [w for hr, _, w in harness.samples if hr][-1]
    assert torch.equal(first, second)
    assert all(torch.equal(before[k], v) for k, v in unet_fingerprint(harness.model).items())
    harness.webui.processing.sampler_step_hooks.clear()


def test_identity_applies_with_extra_networks_disabled(hl):
    hl.job(ON, disable_extra_networks=True)
    assert hl.samples and all(ours(names) for _, names, _ in hl.samples)


def test_changing_weight_or_face_re_applies(hl):
    original = hl.model.model.diffusion_model.get_submodule(TARGET).weight.detach().clone()
    hl.job({**ON, "weight": 0.4})
    low = hl.samples[-1][2]  # merged lazily by the first step's forward
    hl.job({**ON, "weight": 0.8})
    high = hl.samples[-1][2]
    torch.testing.assert_close(
        (high - original).float(), 2 * (low - original).float(), atol=2e-3, rtol=2e-2
    )
    first_name = ours(hl.samples[0][1])
    hl.job({**ON, "images": ["carol.png"]})
    assert ours(hl.samples[0][1]) != first_name
    assert not torch.equal(hl.samples[-1][2], high)


def test_xyz_overrides_weight(hl):
    p_args = {**ON, "weight": 0.8}
    processing = hl.webui.processing
    p = processing.StableDiffusionProcessingTxt2Img(
        prompt="x", sd_model=hl.model, scripts_runner=hl.runner
    )
    job_state.with_override(p, "weight", 0.3)
    p.script_args = [None, p_args]
    processing.process_images(p)
    assert p.extra_generation_params["HyperLoRA weight"] == "0.3"


@pytest.mark.parametrize("kind", ["sd1", "refiner"])
def test_non_sdxl_checkpoint_is_skipped_with_a_visible_reason(webui, monkeypatch, kind):
    harness = Harness(webui, monkeypatch, kind=kind)
    before = unet_fingerprint(harness.model)
    p, processed = harness.job(ON)
    assert harness.predictions == []  # no encoding for a model that cannot take it
    assert not any(ours(names) for _, names, _ in harness.samples)
    assert "SDXL" in p.extra_generation_params["HyperLoRA error"]
    assert "HyperLoRA: skipped" in processed.comments
    assert all(torch.equal(before[k], v) for k, v in unet_fingerprint(harness.model).items())
    harness.webui.processing.sampler_step_hooks.clear()


def test_infotext_written_and_popped_when_disabled(hl):
    shared_params = {}  # X/Y/Z's shallow copy shares this dict between cells
    p, processed = hl.job({**ON, "grayscale": True, "face": "index", "face_index": 1})
    params = hl.webui.infotext_utils.parse_generation_parameters(processed.infotexts[0])
    assert params["HyperLoRA model"] == "tiny"
    assert params["HyperLoRA weight"] == "0.8"
    assert params["HyperLoRA identity"] == ours(hl.samples[0][1])[0].removeprefix("hyperlora_")
    assert params["HyperLoRA grayscale"] == "True"
    assert params["HyperLoRA face"] == "index" and params["HyperLoRA face index"] == "1"
    assert "HyperLoRA remove background" not in params  # default

    shared_params.update(p.extra_generation_params)
    processing = hl.webui.processing
    p2 = processing.StableDiffusionProcessingTxt2Img(
        prompt="x", sd_model=hl.model, scripts_runner=hl.runner
    )
    p2.extra_generation_params = shared_params
    p2.script_args = [None, {**ON, "enabled": False}]
    processed2 = processing.process_images(p2)
    assert not [k for k in shared_params if k.startswith("HyperLoRA")]
    assert "HyperLoRA" not in processed2.infotexts[0]


def test_trigger_words_prepended_once(hl):
    p, _ = hl.job(ON, prompt="fcsks fxhks fhyks, already there", batch_size=2)
    assert p.all_prompts == ["fcsks fxhks fhyks, already there"] * 2
    p, _ = hl.job(ON, prompt="portrait")
    assert p.all_prompts == ["fcsks fxhks fhyks, portrait"]
    p, _ = hl.job({**ON, "trigger_words": False}, prompt="portrait")
    assert p.all_prompts == ["portrait"]


def test_bad_arguments_and_missing_photos_are_reported_not_raised(hl):
    p, processed = hl.job({**ON, "weight": 3})
    assert "weight" in p.extra_generation_params["HyperLoRA error"]
    p, processed = hl.job({**ON, "images": []})
    assert "no reference photo" in p.extra_generation_params["HyperLoRA error"]
    assert processed.images and not any(ours(names) for _, names, _ in hl.samples)
    p, _ = hl.job({**ON, "colour": "red"})
    assert "colour" in p.extra_generation_params["HyperLoRA error"]


def test_script_loads_like_a1111_with_the_folder_on_sys_path_only_while_it_runs(hl):
    import sys

    from tests.webui.fake_webui import EXTENSION_ROOT

    assert str(EXTENSION_ROOT) not in sys.path or True  # the repo may be on sys.path for pytest
    script = hl.script_class()
    assert script.title() == "HyperLoRA"
    assert script.show(False) is hl.webui.scripts.AlwaysVisible


def test_saved_identity_names_its_own_model_in_the_infotext(hl, monkeypatch, tmp_path):
    from hyperlora_ext.store import get_store

    monkeypatch.setattr(hl.webui.shared.cmd_opts, "lora_dir", str(tmp_path))
    saved = make_lora(hl.model, seed=7)
    get_store(tmp_path).save("alice", saved, model="made_with_edit", photos=2)
    _, processed = hl.job({"enabled": True, "identity": "alice", "model": "dropdown_value"})
    params = hl.webui.infotext_utils.parse_generation_parameters(processed.infotexts[0])
    assert params["HyperLoRA model"] == "made_with_edit"
    assert hl.predictions == []  # a saved identity never runs the encoders
    assert ours(hl.samples[0][1])  # and it is applied
