"""Opt-in: the official HyperLoRA workflows in a real running WebUI (A1111 or Forge, --api).

    SD_WEBUI_URL=http://127.0.0.1:7860 SD_WEBUI_FACE=face.png pytest tests/webui -m integration

Each case sends a request body of ``docs/workflows/*.json`` (the bodies the README shows) with
the placeholders replaced: ``<PHOTO>``/``<KPS>`` by SD_WEBUI_FACE; ``<POSE>``, ``<SLIDER0>`` and
``<SLIDER1>`` by ``pose.png``, ``slider0.png`` and ``slider1.png`` of SD_WEBUI_PHOTOS (default:
the face's folder; ``tools/webui_smoke/make_addon_models.py`` writes them); the detector and
ControlNet names by the smoke models' names; and (only to keep a CPU run short) the steps, sizes
and the face pass's steps and size by SD_WEBUI_STEPS / SD_WEBUI_SIZE. Cases needing ADetailer or a
ControlNet model skip with the reason when the WebUI lacks them.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import threading
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.webui.live_webui import (
    ERROR,
    Response,
    call,
    face,
    same,
)

pytestmark = pytest.mark.integration
URL = os.environ.get("SD_WEBUI_URL", "").rstrip("/")
FACE = os.environ.get("SD_WEBUI_FACE", "")
PHOTOS = Path(os.environ.get("SD_WEBUI_PHOTOS") or Path(FACE).parent)
WORKFLOWS = Path(__file__).resolve().parents[2] / "docs" / "workflows"
# Real model names in the bodies -> the smoke WebUI's random models.
MODEL_NAMES = {
    "face_yolov8m.pt": os.environ.get("SD_WEBUI_FACE_DETECTOR", "face_smoke.pt"),
    "thibaud_xl_openpose": os.environ.get("SD_WEBUI_OPENPOSE", "smoke_openpose_sdxl"),
}
# Forge's built-in ControlNet names two preprocessors differently (the README says so too).
FORGE_MODULES = {"none": "None", "instant_id_face_embedding": "InsightFace (InstantID)"}
TWO_FACES_DETECTOR = os.environ.get("SD_WEBUI_TWO_FACES_DETECTOR", "faces2_smoke.pt")
APPLIED = ("HyperLoRA model", "HyperLoRA weight", "HyperLoRA identity")
# ADetailer's default "Script names to apply to ADetailer" (adetailer/args.py, v25.3.0).
AD_DEFAULT_SCRIPTS = (
    "dynamic_prompting,dynamic_thresholding,lora_block_weight,negpip,wildcard_recursive,wildcards"
)


@pytest.fixture(scope="module", autouse=True)
def _webui() -> None:
    if not URL:
        pytest.skip("SD_WEBUI_URL is not set (point it at a WebUI started with --api)")
    if not FACE or not Path(FACE).is_file():
        pytest.skip("SD_WEBUI_FACE is not set to a photo of a face")


# ---------------------------------------------------------------------------------- bodies


def photo(name: str) -> str:
    path = PHOTOS / name
    if not path.is_file():
        pytest.skip(f"{path} is missing (tools/webui_smoke/make_addon_models.py writes it)")
    return base64.b64encode(path.read_bytes()).decode()


def workflow(name: str, names: dict[str, str] | None = None) -> dict[str, Any]:
    """docs/workflows/NAME.json with its placeholders and model names (and ``names``) replaced."""
    body = json.loads((WORKFLOWS / f"{name}.json").read_text())
    replacements = {**MODEL_NAMES, **(names or {})}
    images = {"<PHOTO>": face, "<KPS>": face, "<POSE>": lambda: photo("pose.png")}
    images |= {f"<SLIDER{i}>": (lambda i=i: photo(f"slider{i}.png")) for i in (0, 1)}
    body = _replace(body, images, replacements)
    if is_forge():
        for unit in body.get("alwayson_scripts", {}).get("ControlNet", {}).get("args", []):
            unit["module"] = FORGE_MODULES.get(unit["module"], unit["module"])
    return shrink(body)


@cache
def is_forge() -> bool:
    return any(key.startswith("forge_") for key in call("/sdapi/v1/options").body)


def _replace(value: Any, images: dict[str, Any], names: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _replace(v, images, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, images, names) for v in value]
    if isinstance(value, str):
        if value in images:
            return images[value]()
        for old, new in names.items():
            value = value.replace(old, new)
    return value


def shrink(body: dict[str, Any]) -> dict[str, Any]:
    """Steps and sizes cut to SD_WEBUI_STEPS / SD_WEBUI_SIZE (a CPU smoke run)."""
    steps = int(os.environ.get("SD_WEBUI_STEPS", "8"))
    size = int(os.environ.get("SD_WEBUI_SIZE", "512"))
    body = {**body, "steps": steps, "width": size, "height": size}
    for tab in ad_tabs(body):
        tab.update(ad_steps=steps, ad_inpaint_width=size, ad_inpaint_height=size)
    return body


def ad_tabs(body: dict[str, Any]) -> list[dict[str, Any]]:
    scripts = body.get("alwayson_scripts", {})
    return [a for a in scripts.get("ADetailer", {}).get("args", []) if isinstance(a, dict)]


def without(body: dict[str, Any], script: str) -> dict[str, Any]:
    body = copy.deepcopy(body)
    del body["alwayson_scripts"][script]
    return body


def send(body: dict[str, Any]) -> Response:
    response = call("/sdapi/v1/txt2img", body)
    assert response.status == 200, f"{response.status}: {response.body}"
    return response


def assert_identity(response: Response) -> None:
    params = response.params
    assert ERROR not in params, params[ERROR]
    missing = [key for key in APPLIED if key not in params]
    assert not missing, f"{missing} missing from {params}"
    assert "HyperLoRA model:" in response.infotext, response.infotext


@pytest.fixture(scope="module")
def baseline() -> Iterator[Any]:
    """The T2I body without HyperLoRA: the image every later plain request must give again."""
    body = without(workflow("t2i"), "HyperLoRA")
    yield body, send(body).image()


@pytest.fixture
def restored(baseline) -> Iterator[None]:
    """After the test, a plain image equals the baseline: the UNet came back bit-exactly."""
    yield
    body, image = baseline
    assert same(image, send(body).image()), "a plain image changed: the UNet was not restored"


def requires(script: str) -> None:
    if script.lower() not in [s.lower() for s in call("/sdapi/v1/scripts").body["txt2img"]]:
        pytest.skip(f"the WebUI has no {script} script")


def requires_adetailer_model(name: str) -> None:
    requires("ADetailer")
    models = call("/adetailer/v1/ad_model").body.get("ad_model", [])
    if name not in models:
        pytest.skip(f"ADetailer has no {name!r} ({models}); run setup_<webui>.sh")


def requires_controlnet(body: dict[str, Any]) -> None:
    """Skip unless the WebUI's ControlNet has every unit's model and preprocessor, and the
    preprocessors run here; then name each model as the WebUI lists it (Forge: with its hash)."""
    requires("ControlNet")
    listed = call("/controlnet/model_list").body.get("model_list", [])
    known = call("/controlnet/module_list").body.get("module_list", [])
    for unit in body["alwayson_scripts"]["ControlNet"]["args"]:
        model = unit["model"]
        names = [m for m in listed if m == model or m.startswith(model + " [")]
        if not names:
            pytest.skip(f"no ControlNet model {model!r} fits this WebUI's checkpoint ({listed})")
        unit["model"] = names[0]
        if unit["module"] not in known:
            pytest.skip(f"the WebUI's ControlNet has no preprocessor {unit['module']!r}")
        if unit["module"].lower() != "none":
            probe = {"controlnet_module": unit["module"], "controlnet_input_images": [face()]}
            detected = call("/controlnet/detect", probe)
            if detected.status != 200:
                why = str(detected.body)[:300]
                pytest.skip(f"the preprocessor {unit['module']!r} fails here: {why}")


# ---------------------------------------------------------------------------------- T2I


def test_t2i(baseline, restored):
    response = send(workflow("t2i"))
    assert_identity(response)
    assert not same(baseline[1], response.image()), "the identity did not change the image"


def test_concept_slider(restored):
    body = workflow("t2i_slider")
    response = send(body)
    assert_identity(response)
    params = response.params
    assert params["HyperLoRA slider strength"] == "0.7", params
    assert params["HyperLoRA slider positive"] == "@images(1)", params
    hyperlora = body["alwayson_scripts"]["HyperLoRA"]["args"][0]
    no_slider = {k: v for k, v in hyperlora.items() if k != "slider"}
    plain_identity = copy.deepcopy(body)
    plain_identity["alwayson_scripts"]["HyperLoRA"]["args"] = [no_slider]
    assert not same(send(plain_identity).image(), response.image()), "the slider did nothing"


# ---------------------------------------------------------------------------------- ADetailer


def ad_body(scripts: str | None = None) -> dict[str, Any]:
    body = workflow("t2i_adetailer")
    if scripts is not None:
        body["override_settings"] = {"ad_script_names": scripts}
        body["override_settings_restore_afterwards"] = True
    return body


def test_adetailer_face_pass_runs_with_the_identity_on_the_main_pass(restored):
    requires_adetailer_model(MODEL_NAMES["face_yolov8m.pt"])
    body = ad_body()
    response = send(body)
    assert_identity(response)
    assert "ADetailer model" in response.params, response.params
    assert not same(send(without(body, "ADetailer")).image(), response.image()), (
        "the face pass did not change the image (no face box?)"
    )


def test_adetailer_face_pass_uses_the_identity_when_hyperlora_is_listed(restored):
    """With `hyperlora` in ADetailer's script list the face pass is repainted with the identity:
    its image differs from the same job whose face pass runs without HyperLoRA."""
    requires_adetailer_model(MODEL_NAMES["face_yolov8m.pt"])
    listed = send(ad_body(AD_DEFAULT_SCRIPTS + ",hyperlora"))
    assert_identity(listed)
    unlisted = send(ad_body(AD_DEFAULT_SCRIPTS))
    assert not same(listed.image(), unlisted.image()), "the face pass ignores the script list"


def test_the_status_fix_makes_the_face_pass_keep_the_identity(restored):
    """/hyperlora/v1/status reports ADetailer's default list and the options body that fixes it
    (what the accordion's button sets); with it the face pass equals the listed one."""
    requires_adetailer_model(MODEL_NAMES["face_yolov8m.pt"])
    # /sdapi/v1/options lists only options that were set; ADetailer's default otherwise
    saved = call("/sdapi/v1/options").body.get("ad_script_names", AD_DEFAULT_SCRIPTS)
    try:
        assert call("/sdapi/v1/options", {"ad_script_names": AD_DEFAULT_SCRIPTS}).status == 200
        state = call("/hyperlora/v1/status").body["adetailer"]
        assert state["installed"] and not state["keeps_identity"], state
        assert call("/sdapi/v1/options", state["fix"]).status == 200
        assert call("/hyperlora/v1/status").body["adetailer"]["keeps_identity"]
        fixed = send(ad_body())
        listed = send(ad_body(AD_DEFAULT_SCRIPTS + ",hyperlora"))
        assert same(fixed.image(), listed.image()), "the fixed face pass lost the identity"
        assert "ADetailer" not in str(fixed.params.get("HyperLoRA warning", "")), fixed.params
    finally:
        call("/sdapi/v1/options", {"ad_script_names": saved})


def test_adetailer_face_pass_without_the_identity_is_reported(restored):
    requires_adetailer_model(MODEL_NAMES["face_yolov8m.pt"])
    response = send(ad_body(AD_DEFAULT_SCRIPTS))
    text = json.dumps(response.params)
    assert "HyperLoRA warning" in text and "ADetailer" in text, response.params


def test_two_identities_on_two_faces(restored):
    """Saved identities as LoRAs in ADetailer's per-face prompts ([SEP], left to right)."""
    requires_adetailer_model(TWO_FACES_DETECTOR)
    names = {"alice": "hyperlora_it_alice", "bob": "hyperlora_it_bob"}
    for (_, name), picture in zip(names.items(), ("slider0.png", "slider1.png"), strict=True):
        saved = call(
            "/hyperlora/v1/encode", {"images": [photo(picture)], "save_as": name, "overwrite": True}
        )
        assert saved.status == 200, saved.body
    call("/sdapi/v1/refresh-loras", {})
    try:
        loras = {f"<lora:{k}:": f"<lora:{v}:" for k, v in names.items()}
        swap = {"<lora:alice:": f"<lora:{names['bob']}:", "<lora:bob:": f"<lora:{names['alice']}:"}
        detector = {"face_yolov8m.pt": TWO_FACES_DETECTOR}
        body = workflow("two_identities", {**detector, **loras})
        swapped = workflow("two_identities", {**detector, **swap})
        response = send(body)
        prompt = str(response.params.get("ADetailer prompt", ""))
        assert names["alice"] in prompt and names["bob"] in prompt, response.params
        assert not same(response.image(), send(swapped).image()), "the two faces are the same"
        bare = copy.deepcopy(body)
        for tab in ad_tabs(bare):
            tab["ad_prompt"] = "portrait photo of a person [SEP] portrait photo of a person"
        assert not same(response.image(), send(bare).image()), "the identities did nothing"
    finally:
        for name in names.values():
            call(f"/hyperlora/v1/identities/{name}", method="DELETE")
        call("/sdapi/v1/refresh-loras", {})


# ---------------------------------------------------------------------------------- ControlNet


CONTROLNET_WORKFLOWS = ("t2i_controlnet", "t2i_instantid")


def test_controlnet_openpose_unit(restored):
    body = workflow("t2i_controlnet")
    requires_controlnet(body)
    response = send(body)
    assert_identity(response)
    assert "ControlNet 0" in response.params, response.params
    assert not same(send(without(body, "ControlNet")).image(), response.image()), (
        "the ControlNet unit did nothing"
    )


@pytest.mark.parametrize("name", CONTROLNET_WORKFLOWS)
def test_controlnet_units_with_hires_fix_and_a_batch(name, restored):
    """A ControlNet workflow with a hires pass and two images: both images have the identity
    and the units' effect, and the UNet comes back bit-exactly afterwards (``restored``)."""
    body = controlnet_body(name)
    size = body["width"]
    body |= {"batch_size": 2, "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent"}
    body |= {"hr_second_pass_steps": body["steps"], "denoising_strength": 0.5}
    if is_forge():  # Forge 2's API fails hires fix with a TypeError without it (its default: None)
        body["hr_additional_modules"] = ["Use same choices"]
    response = send(body)
    assert_identity(response)
    assert "Hires upscale" in response.infotext, response.infotext
    plain = send(without(body, "ControlNet"))
    for index in (0, 1):
        text = response.info["infotexts"][index]
        assert "HyperLoRA model:" in text and "ControlNet 0" in text, text
        assert response.image(index).size == (size * 3 // 2, size * 3 // 2)
        assert not same(plain.image(index), response.image(index)), (
            f"the ControlNet units did nothing to image {index}"
        )


def test_instantid_units(restored):
    """InstantID's face-embedding unit (IP-Adapter, weight 0 as in the authors' workflow) and
    its keypoints ControlNet, which must act: the image changes with the keypoints unit's weight.
    (Comparing with no ControlNet at all is not enough: when the IP-Adapter's hook fails, the
    WebUI logs the error, neither unit runs, and the half-hooked UNet still changes the image.)"""
    body = workflow("t2i_instantid")
    requires_controlnet(body)
    response = send(body)
    assert_identity(response)
    assert "ControlNet 1" in response.params, response.params
    no_keypoints = copy.deepcopy(body)
    no_keypoints["alwayson_scripts"]["ControlNet"]["args"][1]["weight"] = 0
    assert not same(send(no_keypoints).image(), response.image()), (
        "the keypoints unit did nothing (see the WebUI's log for a ControlNet error)"
    )


def passthrough_body(controlnet_model: str, scripts: str) -> dict[str, Any]:
    """The ControlNet workflow with the FaceDetailer workflow's face pass, whose ADetailer
    ControlNet model is ``controlnet_model`` and whose script list is ``scripts``."""
    body = workflow("t2i_controlnet")
    tab = {**ad_tabs(workflow("t2i_adetailer"))[0], "ad_controlnet_model": controlnet_model}
    body["alwayson_scripts"]["ADetailer"] = {"args": [True, False, tab]}
    body["override_settings"] = {"ad_script_names": scripts}
    body["override_settings_restore_afterwards"] = True
    return body


def test_adetailer_passthrough_runs_the_controlnet_unit_and_the_identity_in_the_face_pass(
    restored,
):
    """ADetailer's ControlNet model "Passthrough" keeps the ControlNet script and the main job's
    units in the face pass; with `hyperlora` listed the identity is applied there too."""
    requires_adetailer_model(MODEL_NAMES["face_yolov8m.pt"])
    listed = AD_DEFAULT_SCRIPTS + ",hyperlora"
    body = passthrough_body("Passthrough", listed)
    requires_controlnet(body)
    units = body["alwayson_scripts"]["ControlNet"]

    def variant(controlnet_model: str, scripts: str) -> dict[str, Any]:
        other = passthrough_body(controlnet_model, scripts)
        other["alwayson_scripts"]["ControlNet"] = copy.deepcopy(units)
        return other

    response = send(body)
    assert_identity(response)
    assert "ControlNet 0" in response.params and "ADetailer model" in response.params, (
        response.params
    )
    without_units = send(variant("None", listed)).image()
    assert not same(response.image(), without_units), "the face pass ignored the ControlNet unit"
    unlisted = send(variant("Passthrough", AD_DEFAULT_SCRIPTS)).image()
    assert not same(response.image(), unlisted), "the face pass beside ControlNet lost the identity"


def controlnet_body(name: str) -> dict[str, Any]:
    body = workflow(name)
    requires_controlnet(body)
    return body


@pytest.mark.parametrize("name", CONTROLNET_WORKFLOWS)
def test_a_failed_job_with_units_leaves_no_hook_behind(name, restored):
    """HyperLoRA fails after ControlNet hooked the UNet (422 with the fail header); the same good
    job before and after gives the same image: no ControlNet hook or identity left over."""
    body = controlnet_body(name)
    before = send(body).image()
    broken = copy.deepcopy(body)
    broken["alwayson_scripts"]["HyperLoRA"]["args"][0]["model"] = "no_such_hyperlora_model"
    failed = call("/sdapi/v1/txt2img", broken, {"X-HyperLoRA-On-Error": "fail"})
    assert failed.status == 422, f"{failed.status}: {failed.body}"
    assert "no_such_hyperlora_model" in failed.detail, failed.body
    assert same(before, send(body).image()), "the failed job changed the next identical job"


@pytest.mark.parametrize("name", CONTROLNET_WORKFLOWS)
def test_an_interrupted_job_with_units_leaves_no_hook_behind(name, restored):
    """Interrupt while sampling a ControlNet + HyperLoRA job; the same good job afterwards gives
    the image it gave before."""
    body = controlnet_body(name)
    before = send(body).image()
    long = {**body, "steps": 40}
    result: list[Response] = []
    job = threading.Thread(target=lambda: result.append(call("/sdapi/v1/txt2img", long)))
    job.start()
    sampling = _wait_for_sampling(job)
    call("/sdapi/v1/interrupt", {})
    job.join()
    assert result[0].status == 200, result[0].body
    if not sampling:
        pytest.skip("the job ended before its sampling could be interrupted")
    assert same(before, send(body).image()), "the interrupted job changed the next identical job"


def _wait_for_sampling(job: threading.Thread) -> bool:
    """True once the WebUI reports a sampling step of ``job``; False if it ended first."""
    while job.is_alive():
        state = call("/sdapi/v1/progress?skip_current_image=true").body.get("state") or {}
        if state.get("sampling_step", 0) > 0:
            return True
        time.sleep(0.02)
    return False
