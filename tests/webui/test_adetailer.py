"""HyperLoRA under ADetailer's face pass (issue 22), through the A1111 double's ADetailer replay.

``tests/webui/fake_webui/adetailer.py`` replays ADetailer v25.3.0's calls: on the main job
``postprocess(copy(p), dummy)`` at batch index 0, one inner img2img job per face box with the
filtered script list, then ``before_process``/``process(copy(p))`` at the last batch index. The
identity pipeline is stubbed (``tests/webui/harness.py``). Tests marked ``xfail(strict=True)`` state
what issue 22 asks for and today's code does not do; each turns into a failure (XPASS) once fixed.
"""

from __future__ import annotations

import importlib
import sys
import types
from importlib.machinery import ModuleSpec

import pytest
import torch

from hyperlora_ext.webui import infotext
from tests.webui.fake_webui import EXTENSION_ROOT
from tests.webui.fake_webui.tiny_sdxl import unet_fingerprint
from tests.webui.harness import ON, Harness, ours
from tests.webui.loras import make_lora, unmatched, with_lora

HYPERLORA_FILE = str(EXTENSION_ROOT / "scripts" / "hyperlora.py")


class ADetailerHarness(Harness):
    """The harness with ADetailer installed beside HyperLoRA."""

    def __init__(self, webui, monkeypatch):
        super().__init__(webui, monkeypatch)
        # Imported after install(): the replay binds the double's fresh ``modules``.
        self.ad_module = importlib.reload(importlib.import_module(adetailer_module()))
        files = {
            HYPERLORA_FILE: self.script_class,
            self.ad_module.FILENAME: self.ad_module.ADetailer,
        }
        self.ad_module.register_settings()
        self.runner = self.ad_module.runner(files)
        self.adetailer = self.runner.scripts[1]
        self.list_hyperlora(False)
        self.inner_samples: list[list[str]] = []  # our networks at each step of a face pass
        self.main_samples: list[list[str]] = []  # ... and at each step of the main job
        self.inner_networks: list[list[str]] = []  # every network at each face-pass step
        webui.processing.sampler_step_hooks.append(self._record_inner)

    def list_hyperlora(self, listed: bool) -> None:
        """ADetailer's setting "Script names to apply to ADetailer" (ad_script_names)."""
        names = self.ad_module.SCRIPT_DEFAULT + (",hyperlora" if listed else "")
        self.webui.shared.opts.data["ad_script_names"] = names

    def job(self, args=None, **kwargs):
        """A job with HyperLoRA's args in its slot and ADetailer's (``ADetailer.args()``) in
        its own, as the WebUI's flat script-args list holds them."""
        ours = args if isinstance(args, dict) else {"enabled": False}
        padding = [None] * (self.adetailer.args_from - 2)
        return super().job([ours, *padding, *self.adetailer.args()], **kwargs)

    def _record_inner(self, p, step):
        if getattr(p, "_ad_inner", False):
            self.inner_networks.append([n.name for n in self.webui.networks.loaded_networks])
        names = ours(n.name for n in self.webui.networks.loaded_networks)
        (self.inner_samples if getattr(p, "_ad_inner", False) else self.main_samples).append(names)


def adetailer_module() -> str:
    return "tests.webui.fake_webui.adetailer"


@pytest.fixture
def ad(webui, monkeypatch):
    harness = ADetailerHarness(webui, monkeypatch)
    yield harness
    webui.processing.sampler_step_hooks.clear()
    webui.shared.state.begin()


# ---------------------------------------------------------------------------------- the replay


class Recorder:
    """An always-on script; the test adds hooks that log which job each saw."""

    def title(self):
        return "Recorder"

    def show(self, is_img2img):
        from modules import scripts

        return scripts.AlwaysVisible


def test_the_replay_calls_the_scripts_in_adetailers_order(ad):
    from modules import scripts

    main: list = []
    calls: list[tuple[str, str, int | None]] = []

    def log(method):
        def hook(self, p, *args, **kwargs):
            kind = "inner" if getattr(p, "_ad_inner", False) else "main"
            if kind == "main" and main and p is not main[0]:
                kind = "copy"
            if kind == "main" and not main:
                main.append(p)
            calls.append((method, kind, getattr(p, "batch_index", None)))

        return hook

    methods = ("before_process", "process", "postprocess")
    recorder = type("Rec", (Recorder, scripts.Script), {m: log(m) for m in methods})
    files = {"x/scripts/recorder.py": recorder, ad.ad_module.FILENAME: ad.ad_module.ADetailer}
    ad.runner = ad.ad_module.runner(files)
    ad.webui.shared.opts.data["ad_script_names"] = "recorder"
    ad.runner.scripts[1].boxes = ((0, 0, 8, 8), (8, 8, 16, 16))
    ad.job(batch_size=2)
    inner = [("before_process", "inner", None), ("process", "inner", None)]
    inner += [("postprocess", "inner", 0)]
    assert calls == [
        ("before_process", "main", None),
        ("process", "main", None),
        ("postprocess", "copy", 0),  # image 0: the dummy postprocess ...
        *inner,  # ... then one inner job per box
        *inner,
        *inner,  # image 1: no postprocess, the two boxes ...
        *inner,
        ("before_process", "copy", 1),  # ... then before_process/process at the last index
        ("process", "copy", 1),
        ("postprocess", "main", 1),
    ]


# ---------------------------------------------------------------------------------- identity


def test_face_pass_keeps_the_identity_when_hyperlora_is_listed(ad):
    ad.list_hyperlora(True)
    ad.job(ON)
    assert ad.inner_samples and all(ad.inner_samples), ad.inner_samples


def test_by_default_the_face_pass_lacks_the_identity_and_the_image_says_so(ad):
    p, _ = ad.job(ON)
    assert ad.inner_samples and not any(ad.inner_samples), ad.inner_samples
    warning = str(p.extra_generation_params.get(infotext.WARNING, ""))
    assert "ADetailer" in warning and "'hyperlora'" in warning, p.extra_generation_params


def test_one_click_fix_keeps_the_identity_and_is_a_saved_reversible_setting(ad):
    import json
    from pathlib import Path

    from hyperlora_ext.webui import adetailer

    setup = adetailer.set_listed(True)  # what the accordion's button does
    assert setup.keeps_identity and setup.listed
    saved = json.loads(Path(ad.webui.shared.config_filename).read_text(encoding="utf8"))
    assert saved["ad_script_names"] == ad.ad_module.SCRIPT_DEFAULT + ",hyperlora"
    p, _ = ad.job(ON)
    assert ad.inner_samples and all(ad.inner_samples), ad.inner_samples
    assert "ADetailer" not in str(p.extra_generation_params.get(infotext.WARNING))
    assert not adetailer.set_listed(False).listed  # the other button: back as it was
    assert ad.webui.shared.opts.ad_script_names == ad.ad_module.SCRIPT_DEFAULT


def test_the_accordion_offers_the_fix_and_the_undo(ad, monkeypatch):
    from tests.webui.harness import build_panel, handler

    demo, _ = build_panel(ad.webui, monkeypatch)
    fix = next(
        b
        for b in demo.blocks.values()
        if getattr(b, "value", None) == "Add HyperLoRA to ADetailer's scripts"
    )
    click, _ = handler(demo, fix)
    note, fix_button, undo_button = click()
    assert "keeps the identity" in note["value"], note
    assert fix_button["visible"] is False and undo_button["visible"] is True
    assert "hyperlora" in ad.webui.shared.opts.ad_script_names


def test_unet_is_restored_bit_exactly_after_a_job_with_a_face_pass(ad):
    ad.list_hyperlora(True)
    before = unet_fingerprint(ad.model)
    ad.job(ON)
    after = unet_fingerprint(ad.model)
    assert all(torch.equal(before[k], v) for k, v in after.items())


def test_a_face_pass_without_the_identity_is_a_warning(ad):
    p, _ = ad.job(ON)
    warning = str(p.extra_generation_params.get(infotext.WARNING, ""))
    assert "ADetailer" in warning, p.extra_generation_params


def test_apply_time_warnings_survive_the_face_pass(ad, monkeypatch):
    """A LoRA that only partly matches the checkpoint: "only N of M layers matched", recorded
    while applying; the image keeps it after ADetailer's face pass."""
    predict = ad.pipeline.predict

    def partial(*args, **kwargs):
        extra = unmatched(make_lora(ad.model, seed=5, only=8))
        return with_lora(predict(*args, **kwargs), lambda lora: {**lora, **extra})

    monkeypatch.setattr(ad.pipeline, "predict", partial)
    ad.list_hyperlora(True)
    ad.adetailer.enabled = False  # what the main job records
    p, _ = ad.job(ON)
    assert "layers matched" in str(p.extra_generation_params.get(infotext.WARNING))
    ad.adetailer.enabled = True
    p, _ = ad.job(ON)
    warning = str(p.extra_generation_params.get(infotext.WARNING))
    assert "layers matched" in warning, p.extra_generation_params


def test_one_prediction_for_a_job_with_a_face_pass(ad):
    ad.list_hyperlora(True)
    ad.job(ON)
    assert len(ad.predictions) == 1, ad.predictions


def test_trigger_words_reach_a_custom_face_prompt(ad):
    ad.list_hyperlora(True)
    ad.adetailer.ad_prompt = "a detailed face"
    ad.job(ON)
    prompts = [p2.all_prompts[0] for p2 in ad.adetailer.inner_jobs]
    assert prompts and all(p.startswith("fcsks fxhks fhyks, ") for p in prompts), prompts


# ---------------------------------------------------------------------------------- API rules


def test_api_input_rules_hold_in_the_face_pass(ad, tmp_path):
    ad.list_hyperlora(True)
    photo = tmp_path / "server_side.png"
    photo.write_bytes(b"not read")
    p, _ = ad.job({**ON, "images": [str(photo)]}, is_api=True)
    assert infotext.ERROR in p.extra_generation_params, p.extra_generation_params
    assert not any(ad.inner_samples), "a server path refused by the API was applied"


def test_status_reports_the_adetailer_state(ad, tmp_path_factory, monkeypatch):
    from tests.webui.tiny_host import make_client, point_webui_at, tiny_models

    monkeypatch.undo()  # the harness's stub pipeline: the status reads the real one's cache
    point_webui_at(*tiny_models(tmp_path_factory), monkeypatch)
    client = make_client()
    state = client.get("/hyperlora/v1/status").json()["adetailer"]
    assert state["installed"] and not state["listed"] and not state["keeps_identity"], state
    assert "'hyperlora'" in state["problem"], state
    assert state["fix"] == {"ad_script_names": ad.ad_module.SCRIPT_DEFAULT + ",hyperlora"}
    ad.webui.shared.opts.set("ad_script_names", state["fix"]["ad_script_names"])  # the API fix
    state = client.get("/hyperlora/v1/status").json()["adetailer"]
    assert state["listed"] and state["keeps_identity"] and state["fix"] is None, state
    assert state["notes"] == []  # A1111
    monkeypatch.setitem(sys.modules, "modules_forge", types.ModuleType("modules_forge"))
    monkeypatch.setattr(sys.modules["modules_forge"], "__spec__", ModuleSpec("modules_forge", None))
    [note] = client.get("/hyperlora/v1/status").json()["adetailer"]["notes"]
    assert "ControlNet" in note and "Forge" in note, note


def test_status_without_adetailer(host, client):
    state = client.get("/hyperlora/v1/status").json()["adetailer"]
    assert state["installed"] is False and state["keeps_identity"] is True, state


# ---------------------------------------------------------------------------------- the main job
def test_later_batches_keep_the_identity_after_adetailers_reentry(ad):
    """ADetailer re-enters before_process/process(copy(p)) at the last image of each batch; the
    next batch of the same job is still sampled with the identity, and the UNet comes back."""
    ad.list_hyperlora(True)
    before = unet_fingerprint(ad.model)
    ad.job(ON, n_iter=2, batch_size=2)
    assert len(ad.predictions) == 1
    assert len(ad.main_samples) == 2 * 3 and all(ad.main_samples), ad.main_samples
    assert len(ad.inner_samples) == 4 * 3 and all(ad.inner_samples)  # 4 images x 3 steps
    after = unet_fingerprint(ad.model)
    assert all(torch.equal(before[k], v) for k, v in after.items())


def test_the_warning_is_written_once_in_every_infotext(ad):
    _, processed = ad.job(ON, n_iter=2, batch_size=2)
    assert len(processed.infotexts) == 4
    for text in processed.infotexts:
        assert text.count("ADetailer's face pass runs without the identity") == 1, text


def test_a_refused_api_job_keeps_its_error_after_adetailers_reentry(ad, tmp_path):
    """The error recorded in process() is not erased by ADetailer's process(copy(p))."""
    photo = tmp_path / "server_side.png"
    photo.write_bytes(b"not read")
    p, processed = ad.job({**ON, "images": [str(photo)]}, is_api=True, batch_size=2)
    assert infotext.ERROR in p.extra_generation_params
    assert all(infotext.ERROR in text for text in processed.infotexts), processed.infotexts


# ---------------------------------------------------------------------- ADetailer's checkpoint
def _checkpoint(ad, kind):
    from tests.webui.fake_webui.tiny_sdxl import TinySDXL

    model = TinySDXL(kind, seed=7)
    ad.webui.networks.assign_network_names_to_compvis_modules(model)
    ad.webui.shared.checkpoints[f"other_{kind}.safetensors"] = model
    ad.adetailer.checkpoint = f"other_{kind}.safetensors"
    return model


def test_a_separate_sdxl_checkpoint_for_the_face_gets_the_identity_and_both_come_back(ad):
    ad.list_hyperlora(True)
    other = _checkpoint(ad, "sdxl")
    main_before, other_before = unet_fingerprint(ad.model), unet_fingerprint(other)
    p, _ = ad.job(ON)
    assert ad.inner_samples and all(ad.inner_samples), ad.inner_samples
    assert ad.webui.shared.sd_model is ad.model  # ADetailer's override is undone
    for before, model in ((main_before, ad.model), (other_before, other)):
        after = unet_fingerprint(model)
        assert all(torch.equal(before[k], v) for k, v in after.items())
    assert infotext.ERROR not in p.extra_generation_params


def test_a_non_sdxl_face_checkpoint_is_a_warning_not_a_crash(ad):
    ad.list_hyperlora(True)
    _checkpoint(ad, "sd1")
    before = unet_fingerprint(ad.model)
    p, _ = ad.job(ON)
    assert ad.inner_samples and not any(ad.inner_samples), ad.inner_samples
    warning = str(p.extra_generation_params.get(infotext.WARNING))
    assert "face pass ran without the identity" in warning, p.extra_generation_params
    assert infotext.ERROR not in p.extra_generation_params
    after = unet_fingerprint(ad.model)
    assert all(torch.equal(before[k], v) for k, v in after.items())


# ---------------------------------------------------------------------- Forge's ControlNet option
def test_forge_adetailer_controlnet_model_is_reported(ad):
    """On Forge an ADetailer ControlNet model leaves the face pass with ControlNet alone."""
    from hyperlora_ext.webui import adetailer
    from tests.webui.fake_webui import forge_backend

    ad.list_hyperlora(True)
    ad.adetailer.controlnet_model = "diffusers_xl_canny_mid [112a778d]"
    p = ad.webui.processing.StableDiffusionProcessingTxt2Img(
        sd_model=forge_backend.FakeForgeSDXL(forge_backend.TinySDXLUNet()),
        scripts_runner=ad.runner,
        prompt="x",
    )
    padding = [None] * (ad.adetailer.args_from - 1)
    p.script_args = [None, *padding, *ad.adetailer.args()]
    problem = adetailer.face_pass_problem(p)
    assert problem is not None and "ControlNet alone" in problem and "None" in problem
    ad.adetailer.controlnet_model = "None"
    p.script_args = [None, *padding, *ad.adetailer.args()]
    assert adetailer.face_pass_problem(p) is None
    p.sd_model = ad.model  # A1111: the ControlNet option keeps the other scripts
    ad.adetailer.controlnet_model = "diffusers_xl_canny_mid [112a778d]"
    p.script_args = [None, *padding, *ad.adetailer.args()]
    assert adetailer.face_pass_problem(p) is None


# ---------------------------------------------------------------------------------- two people
def _save_identities(ad, *names):
    from hyperlora_ext.webui import host

    store = host.services().store()
    for seed, name in enumerate(names, start=40):
        store.save(name, make_lora(ad.model, seed=seed), model="tiny", photos=1)


@pytest.mark.parametrize("accordion", [False, True], ids=["accordion_off", "accordion_on"])
def test_two_saved_identities_on_two_face_boxes(ad, accordion):
    """ADetailer's per-face prompts ([SEP], one part a box) with saved identities as LoRAs: each
    box is repainted with its own identity, and its prompt gets the trigger words."""
    _save_identities(ad, "alice", "bob")
    ad.list_hyperlora(True)
    ad.adetailer.boxes = ((0, 0, 8, 8), (8, 8, 16, 16))
    ad.adetailer.ad_prompt = "a woman <lora:alice:0.85> [SEP] a man <lora:bob:0.85>"
    p, _ = ad.job(ON if accordion else None)
    first, second = ad.adetailer.inner_jobs
    assert [n for n in ad.inner_networks[0] if not n.startswith("hyperlora_")] == ["alice"]
    assert [n for n in ad.inner_networks[-1] if not n.startswith("hyperlora_")] == ["bob"]
    for job in (first, second):
        assert job.all_prompts[0].startswith("fcsks fxhks fhyks, "), job.all_prompts
    assert all(bool(names) == accordion for names in ad.inner_samples), ad.inner_samples
    assert infotext.ERROR not in p.extra_generation_params


def test_a_lora_that_is_no_saved_identity_gets_no_trigger_words(ad):
    from safetensors.torch import save_file

    save_file(make_lora(ad.model, seed=3, only=8), str(ad.webui.lora_dir / "style.safetensors"))
    ad.list_hyperlora(True)
    ad.adetailer.ad_prompt = "a face <lora:style:0.5>"
    ad.job(None)
    [face] = ad.adetailer.inner_jobs
    assert face.all_prompts == ["a face <lora:style:0.5>"], face.all_prompts


def test_bad_arguments_are_reported_once_not_again_by_the_face_pass(ad):
    ad.list_hyperlora(True)
    p, _ = ad.job({**ON, "weight": "heavy"})
    error = p.extra_generation_params[infotext.ERROR]
    assert "weight" in error and "face pass" not in error, error
    assert not any(ad.inner_samples)


def test_the_accordion_has_no_adetailer_row_without_adetailer(webui, monkeypatch):
    from tests.webui.harness import build_panel

    demo, _ = build_panel(webui, monkeypatch)
    labels = [getattr(b, "value", None) for b in demo.blocks.values()]
    rows = [b for b in demo.blocks.values() if str(getattr(b, "elem_id", "")).endswith("adetailer")]
    assert rows and all(row.visible is False for row in rows)
    assert "Add HyperLoRA to ADetailer's scripts" in labels  # built, hidden: no layout change
