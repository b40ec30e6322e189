"""Never silent: every HyperLoRA failure in a generation is visible (infotext, comments, API info,
a 422 in fail mode) and an image without the identity never carries its parameters.

Through the A1111 double's script runner (stubbed pipeline, tests/webui/test_script.py's Harness)
and its API (the real pipeline on tiny models, tests/webui/test_api.py). The autouse check in
conftest.py fails any test here where an exception escapes a script hook.
"""

from __future__ import annotations

import json
import shutil
import threading

import pytest
import torch
from PIL import Image

from hyperlora_ext import identity
from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.models import ModelRoots
from hyperlora_ext.webui import host, infotext, services
from tests.factories import tiny_modules, write_tiny_hyperlora
from tests.webui import fake_webui
from tests.webui.fake_webui.tiny_sdxl import unet_fingerprint
from tests.webui.harness import ON, Harness, ours
from tests.webui.loras import make_lora, unmatched, with_lora
from tests.webui.tiny_host import FACE, generation_app, point_webui_at, tiny_models

IDENTITY_PARAMS = (infotext.MODEL, infotext.WEIGHT, infotext.DIGEST)
FAIL = {"X-HyperLoRA-On-Error": "fail"}
WITHOUT_TRIGGER_WORDS = {**ON, "trigger_words": False}


@pytest.fixture
def hl(webui, monkeypatch):
    harness = Harness(webui, monkeypatch)
    yield harness
    webui.processing.sampler_step_hooks.clear()
    webui.shared.state.begin()


def assert_failed_visibly(p, processed, *fragments):
    """The error is in the parameters, the comments and every infotext; no identity is claimed."""
    params = p.extra_generation_params
    error = params[infotext.ERROR]
    for fragment in fragments:
        assert fragment in error, error
    assert not [key for key in IDENTITY_PARAMS if key in params]
    assert f"HyperLoRA: {error}" in processed.comments
    for text in processed.infotexts:
        assert "HyperLoRA error" in text and "HyperLoRA identity" not in text


# --------------------------------------------------------------- the script runner (stub)
def test_a_lora_matching_no_layer_is_an_error_and_the_unet_is_untouched(hl, monkeypatch):
    before = unet_fingerprint(hl.model)
    plain = hl.image()
    predict = hl.pipeline.predict
    monkeypatch.setattr(
        hl.pipeline, "predict", lambda *a, **k: with_lora(predict(*a, **k), unmatched)
    )
    p, processed = hl.job(ON)
    assert_failed_visibly(p, processed, "skipped", "in this checkpoint")
    assert p.all_prompts == ["a photo of a person"]  # known in process(): no trigger words
    assert not any(ours(names) for _, names, _ in hl.samples)
    assert torch.equal(processed.images[0], plain)
    assert all(torch.equal(before[k], v) for k, v in unet_fingerprint(hl.model).items())


def test_a_partial_match_keeps_the_identity_and_warns(hl, monkeypatch):
    predict = hl.pipeline.predict

    def half(result):
        extra = unmatched(make_lora(hl.model, seed=5, only=8))
        return with_lora(result, lambda lora: {**lora, **extra})

    monkeypatch.setattr(hl.pipeline, "predict", lambda *a, **k: half(predict(*a, **k)))
    p, _ = hl.job(ON)
    params = p.extra_generation_params
    assert "layers matched" in params[infotext.WARNING] and infotext.ERROR not in params
    assert all(key in params for key in IDENTITY_PARAMS)
    assert all(ours(names) for _, names, _ in hl.samples)


@pytest.mark.parametrize(
    "error",
    [
        Image.DecompressionBombError("Image size (64000000 pixels) exceeds limit"),
        OSError(36, "File name too long"),
        ValueError("invalid literal for int() with base 10: '²'"),
        HyperLoRAError("image 1: no face found"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_any_exception_while_encoding_is_visible_and_logged_once(hl, monkeypatch, error):
    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(hl.pipeline, "predict", failing)
    p, processed = hl.job(ON)
    assert processed.images, "the WebUI still makes the image, without the identity"
    assert_failed_visibly(p, processed, str(error).split(":")[0])
    assert not any(ours(names) for _, names, _ in hl.samples)
    logged = [text for text in hl.webui.errors.reported if "HyperLoRA error" in text]
    if isinstance(error, HyperLoRAError):
        assert logged == []  # our own, specific message: one console line, no traceback
    else:
        assert len(logged) == 1 and "Traceback" in logged[0]
        assert (
            f"encoding 1 photo(s) with the model 'tiny' failed: {type(error).__name__}"
            in (p.extra_generation_params[infotext.ERROR])
        )


@pytest.mark.parametrize("fixture", ["webui", "webui_19"])  # 1.9: applied in process_batch
@pytest.mark.parametrize("error", [HyperLoRAError("adapter refused"), RuntimeError("boom")])
def test_an_exception_while_applying_is_visible_and_leaves_no_trace(
    request, monkeypatch, fixture, error
):
    harness = Harness(request.getfixturevalue(fixture), monkeypatch)
    before = unet_fingerprint(harness.model)
    plain = harness.image()
    adapter = host.get_adapter()
    original = adapter.apply_all

    def failing(p, *args):
        original(p, *args)  # half done: our network is already in the list
        raise error

    monkeypatch.setattr(adapter, "apply_all", failing)
    p, processed = harness.job(WITHOUT_TRIGGER_WORDS)
    assert_failed_visibly(p, processed, str(error))
    assert not any(ours(names) for _, names, _ in harness.samples)
    assert torch.equal(processed.images[0], plain)
    assert all(torch.equal(before[k], v) for k, v in unet_fingerprint(harness.model).items())
    harness.webui.processing.sampler_step_hooks.clear()


def test_an_exception_while_restoring_is_visible_in_the_api_info(hl, monkeypatch):
    adapter = host.get_adapter()

    def failing(p=None):
        raise RuntimeError("restore failed")

    hl.job(ON)
    monkeypatch.setattr(adapter, "restore", failing)
    p, processed = hl.job(ON)  # fails in before_process (clean-up) and postprocess
    message = "restoring the checkpoint's weights failed: RuntimeError: restore failed"
    params = json.loads(processed.js())["extra_generation_params"]
    assert params[infotext.ERROR] == message  # reported once, though both hooks failed
    assert message in processed.infotexts[0]  # the clean-up failure is in the image's text too
    # The identity itself was applied (before the images were made): its parameters stay true.
    assert all(key in params for key in IDENTITY_PARAMS) and ours(hl.samples[-1][1])
    monkeypatch.undo()
    host.get_adapter().restore(p)


def test_an_escaping_hook_exception_is_caught_by_the_double(webui):
    """The autouse check relies on the double recording what the WebUI would swallow."""

    class Crashing(webui.scripts.Script):
        def title(self):
            return "crash"

        def show(self, is_img2img):
            return webui.scripts.AlwaysVisible

        def process(self, p, *args):
            raise KeyError("hidden")

    webui.load_model()
    runner = webui.runner(Crashing)
    p = webui.processing.StableDiffusionProcessingTxt2Img(scripts_runner=runner, script_args=[None])
    assert webui.processing.process_images(p).images  # the WebUI carries on
    assert [(hook, type(e)) for hook, e in fake_webui.escaped_hook_exceptions] == [
        ("process", KeyError)
    ]
    fake_webui.escaped_hook_exceptions.clear()  # expected here


# ------------------------------------------------------------ weight 0 / off: prompt as is
@pytest.mark.parametrize("args", [{**ON, "weight": 0}, {**ON, "enabled": False}])
def test_weight_zero_and_off_leave_the_prompt_and_parameters_alone(hl, args):
    p, _ = hl.job(args, prompt="portrait")
    assert p.all_prompts == ["portrait"]
    assert not [key for key in p.extra_generation_params if key.startswith("HyperLoRA")]
    assert hl.predictions == [] and not any(ours(names) for _, names, _ in hl.samples)


# ----------------------------------------------------------------- interrupt during encoding
class StageWatcher:
    """Records the progress text at each stage; presses a button at one of them."""

    def __init__(self, hl, press_at: str, button: str):
        self.hl, self.press_at, self.button, self.texts = hl, press_at, button, []
        self.stages = hl.stages
        hl.stages = self  # iterated by the stub pipeline between its progress calls

    def __iter__(self):
        state = self.hl.webui.shared.state
        for stage in self.stages:
            yield stage
            self.texts.append(state.textinfo)
            if stage == self.press_at:
                getattr(state, self.button)()  # the button's API: state.interrupt() / skip()


def test_interrupt_while_encoding_stops_before_the_next_stage(hl):
    watcher = StageWatcher(hl, press_at="detecting faces", button="interrupt")
    hl.webui.shared.state.textinfo = None
    p, processed = hl.job(ON)
    # Stopped at the next stage boundary: "encoding with CLIP" was never reached.
    assert watcher.texts == ["HyperLoRA: reading photos", "HyperLoRA: detecting faces"]
    assert processed.images == []  # the WebUI's batch loop ends: no image at all
    assert "interrupted while encoding" in p.extra_generation_params[infotext.ERROR]
    assert hl.webui.shared.state.textinfo is None  # the progress text is given back


def test_skip_while_encoding_makes_the_image_without_identity_and_says_so(hl):
    StageWatcher(hl, press_at="reading photos", button="skip")
    p, processed = hl.job(ON)
    assert len(processed.images) == 1
    assert_failed_visibly(p, processed, "Skip was pressed")
    assert not any(ours(names) for _, names, _ in hl.samples)


# ----------------------------------------------------------------- the API, real pipeline
@pytest.fixture
def api_host(webui, tmp_path, tmp_path_factory, monkeypatch):
    """The double pointed at a copy of the tiny models plus ``nomatch``: the tiny model with its
    module names renamed to names the checkpoint does not have."""
    models, _ = tiny_models(tmp_path_factory)
    copy = tmp_path / "models_copy"
    shutil.copytree(models, copy)
    renamed = {
        name.replace("_blocks_", "_nowhere_").replace("_block_", "_nowhere_"): info
        for name, info in tiny_modules().items()
    }
    roots = ModelRoots.from_models_dir(copy)
    write_tiny_hyperlora(roots.hyper_lora / "nomatch", modules=renamed)
    point_webui_at(copy, identity.IdentityPipeline(roots), monkeypatch)
    yield webui
    webui.shared.state.begin()


def post(client, args, headers=None):
    body = {"prompt": "x", "alwayson_scripts": {"HyperLoRA": {"args": [args]}}}
    return client.post("/sdapi/v1/txt2img", json=body, headers=headers or {})


def api_params(response) -> dict:
    assert response.status_code == 200, response.text
    return json.loads(response.json()["info"])["extra_generation_params"]


def test_a_model_matching_no_layer_fails_visibly_through_the_api(api_host):
    client = generation_app(api_host, [api_host.load_script()])
    args = {"enabled": True, "images": [FACE], "model": "nomatch"}
    params = api_params(post(client, args))
    assert "skipped" in params[infotext.ERROR]
    assert not [key for key in IDENTITY_PARAMS if key in params]
    api_host.shared.state.begin()
    response = post(client, args, FAIL)
    assert response.status_code == 422 and "skipped" in response.json()["detail"]


def test_a_crash_inside_the_encoders_fails_visibly_through_the_api(api_host, monkeypatch):
    from hyperlora_ext.encoders import features

    def huge_close_up(*args, **kwargs):
        raise Image.DecompressionBombError("Image size (190000000 pixels) exceeds limit")

    monkeypatch.setattr(features, "extract_identity_features", huge_close_up)
    client = generation_app(api_host, [api_host.load_script()])
    args = {"enabled": True, "images": [FACE], "model": "tiny"}
    params = api_params(post(client, args))
    assert "DecompressionBombError" in params[infotext.ERROR]
    assert "model 'tiny'" in params[infotext.ERROR]
    assert not [key for key in IDENTITY_PARAMS if key in params]
    api_host.shared.state.begin()
    response = post(client, args, FAIL)
    assert response.status_code == 422 and "DecompressionBombError" in response.json()["detail"]


def test_interrupt_while_encoding_skips_clip_with_the_real_pipeline(api_host, monkeypatch):
    pipeline = services.current_pipeline()
    analyzer = pipeline.models.face_analyzer()
    detect = analyzer.detect
    loaded = []

    def detect_then_interrupt(image):
        api_host.shared.state.interrupt()  # the user presses Interrupt while faces are found
        return detect(image)

    monkeypatch.setattr(analyzer, "detect", detect_then_interrupt)

    def load_clip(*args):  # the job's own loading, not the background preload's
        if threading.current_thread().name != "hyperlora-preload":
            loaded.append(1)

    monkeypatch.setattr(pipeline.models, "load_clip", load_clip)
    client = generation_app(api_host, [api_host.load_script()])
    response = post(client, {"enabled": True, "images": [FACE], "model": "tiny"}, FAIL)
    assert response.status_code == 200 and response.json()["images"] == []
    assert loaded == []  # stopped before the CLIP stage, not after the whole encoding


# --------------------------------------------------- limits of txt2img / img2img arguments
def test_generation_requests_have_the_routes_limits(webui):
    from hyperlora_ext.facts import MAX_IMAGE_BYTES

    client = generation_app(webui, [webui.load_script()])
    cases = {
        "17 images posted; at most 16 per request": [FACE] * 17,
        "image 1: the image is larger than 20 MiB; resize it": [
            "A" * (MAX_IMAGE_BYTES * 4 // 3 + 8)
        ],
        "expected a list of photos, got str": FACE,
    }
    for message, images in cases.items():
        args = {"enabled": True, "images": images, "model": "tiny"}
        params = api_params(post(client, args))
        assert message in params[infotext.ERROR] and "'images'" in params[infotext.ERROR]
        webui.shared.state.begin()
        response = post(client, args, FAIL)
        assert response.status_code == 422 and message in response.json()["detail"]
        webui.shared.state.begin()


# ------------------------------------------------------- "Save as LoRA" in the accordion
@pytest.fixture
def tiny_host(webui, tmp_path_factory, monkeypatch):
    point_webui_at(*tiny_models(tmp_path_factory), monkeypatch)
    return webui


def test_ui_save_goes_through_the_identity_store_with_the_api_rules(tiny_host, tmp_path):
    from hyperlora_ext.args import HyperLoRAArgs
    from hyperlora_ext.errors import ExportExistsError, InvalidNameError
    from hyperlora_ext.webui import ui_actions
    from hyperlora_ext.webui.host import identity_store
    from tests.encoders._photos import face_photo

    photo = tmp_path / "face.png"
    face_photo((320, 240), ((100, 40, 220, 200),)).save(photo)
    args = HyperLoRAArgs(enabled=True, images=(str(photo),), model="tiny", grayscale=True)
    message = ui_actions.default_services().save(args, "bob", False)
    assert "`bob.safetensors`" in message and "<lora:bob:0.8>" in message
    folder = tiny_host.lora_dir / "hyperlora"
    assert (folder / "bob.hyperlora.json").is_file()
    record = identity_store().record("bob")
    assert (record.model, record.photos, record.options["grayscale"]) == ("tiny", 1, True)
    assert record.digest == identity_store().load("bob").digest

    with pytest.raises(ExportExistsError, match="tick 'Overwrite' to replace it"):
        ui_actions.default_services().save(args, "bob", False)
    assert "Saved" in ui_actions.default_services().save(args.replace(grayscale=False), "bob", True)
    assert identity_store().record("bob").options["grayscale"] is False

    for name in ("bob/../x?", "../evil", "a/b", "x" * 101, ""):
        with pytest.raises(InvalidNameError):
            ui_actions.default_services().save(args, name, False)
    assert sorted(p.name for p in folder.iterdir()) == [
        "bob.hyperlora.json", "bob.hyperlora.tokens", "bob.json", "bob.preview.png",
        "bob.safetensors",
    ]  # fmt: skip


def test_the_overwrite_control_the_message_names_is_in_the_accordion(webui, monkeypatch):
    gr = pytest.importorskip("gradio")
    from hyperlora_ext.webui import ui

    monkeypatch.setattr(host, "pipeline", lambda: pytest.fail("ui() must not predict"))
    with gr.Blocks():
        panel = ui.build_ui(lambda item: f"hl_{item}")
    assert panel.extras["overwrite"].label == "Overwrite"
    assert panel.extras["overwrite"].value is False


@pytest.mark.parametrize(
    "field", [{"model": "m" * 300}, {"face": "index", "face_index": "²"}], ids=["model", "index"]
)
def test_bad_values_from_the_issue_fail_visibly_through_the_api(tiny_host, field):
    client = generation_app(tiny_host, [tiny_host.load_script()])
    args = {"enabled": True, "images": [FACE], "model": "tiny", **field}
    params = api_params(post(client, args))
    assert params[infotext.ERROR] and not [key for key in IDENTITY_PARAMS if key in params]
    tiny_host.shared.state.begin()
    response = post(client, args, FAIL)
    assert response.status_code == 422 and response.json()["detail"].startswith("HyperLoRA error")


def test_a_model_fitting_no_layer_is_named_not_one_of_its_layers(hl, monkeypatch):
    predict = hl.pipeline.predict
    monkeypatch.setattr(
        hl.pipeline, "predict", lambda *a, **k: with_lora(predict(*a, **k), unmatched)
    )
    p, _ = hl.job(ON)
    error = p.extra_generation_params[infotext.ERROR]
    layers = len({key.partition(".")[0] for key in make_lora(hl.model, seed=1)})
    assert error.startswith(
        f"skipped, none of the {layers} layers of HyperLoRA model 'tiny' fit this checkpoint"
    )
