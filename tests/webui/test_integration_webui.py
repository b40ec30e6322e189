"""Opt-in: HyperLoRA in a real running WebUI (A1111 or Forge, started with --api).

    SD_WEBUI_URL=http://127.0.0.1:7860 SD_WEBUI_FACE=face.png pytest tests/webui -m integration

The WebUI needs an SDXL base checkpoint loaded, this extension installed and its models present;
``tools/webui_smoke`` builds such WebUIs on a CPU (see its README). Images are compared with the
trigger words off, so that the LoRA itself, not the prompt, is what changes an image.

Optional: SD_WEBUI_STEPS / SD_WEBUI_SIZE (sampling cost), SD_WEBUI_NO_MATCH_MODEL (an installed
HyperLoRA model whose module names the checkpoint lacks; default ``smoke_no_match``, which
``tools/webui_smoke/make_models.py`` writes). The X/Y/Z tests also run against a server started
with ``--nowebui`` (``-k "script_info or grid"``); the first-run checklist test needs the UI.
"""

from __future__ import annotations

import base64
import io
import os
import threading
import time
from functools import cache
from typing import Any

import pytest
from PIL import Image, ImageDraw

from tests.webui.live_webui import ERROR, FACE, Response, call, face, same, skip_reason

pytestmark = pytest.mark.integration
NO_MATCH_MODEL = os.environ.get("SD_WEBUI_NO_MATCH_MODEL", "smoke_no_match")
PROMPT = "portrait photo of a person, studio light"
FAIL = {"X-HyperLoRA-On-Error": "fail"}
# Parameters that claim the identity was applied.
APPLIED_KEYS = ("HyperLoRA model", "HyperLoRA weight", "HyperLoRA identity")


@pytest.fixture(scope="module", autouse=True)
def _webui() -> None:
    reason = skip_reason()
    if reason:
        print(f"SKIP integration test: {reason}")
        pytest.skip(reason)


def generate(
    hyperlora: dict[str, Any] | None,
    *,
    fail: bool = False,
    prompt: str = PROMPT,
    **extra: Any,
) -> Response:
    payload = {
        "prompt": prompt,
        "negative_prompt": "blurry",
        "seed": 1234,
        "steps": int(os.environ.get("SD_WEBUI_STEPS", "8")),
        "width": int(os.environ.get("SD_WEBUI_SIZE", "512")),
        "height": int(os.environ.get("SD_WEBUI_SIZE", "512")),
        "sampler_name": "Euler",
        **extra,
    }
    if hyperlora is not None:
        payload["alwayson_scripts"] = {"HyperLoRA": {"args": [hyperlora]}}
    return call("/sdapi/v1/txt2img", payload, FAIL if fail else None)


def identity(**changes: Any) -> dict[str, Any]:
    """HyperLoRA args with the test face and the trigger words off."""
    return {"enabled": True, "images": [face()], "weight": 0.8, "trigger_words": False, **changes}


@pytest.fixture(scope="module")
def plain() -> Image.Image:
    return generate(None).image()


# ---------------------------------------------------------------------------------- outcomes


def assert_failed_visibly(response: Response, fail: bool, *mentions: str) -> None:
    """The request reports a HyperLoRA failure and claims no identity (the never-silent rule)."""
    if fail:
        assert response.status == 422, f"{response.status}: {response.body}"
        text = response.detail
        assert ERROR in text, text
    else:
        params = response.params
        assert ERROR in params, f"no {ERROR!r} in {params}"
        text = str(params[ERROR])
        claimed = [key for key in APPLIED_KEYS if key in params or f"{key}:" in response.infotext]
        assert not claimed, f"{claimed} written for an image without the identity: {params}"
    for mention in mentions:
        assert mention.lower() in text.lower(), f"{mention!r} not in {text!r}"


def assert_refused(response: Response, *mentions: str) -> None:
    """Refused by validation: a 4xx naming the problem, or a visible HyperLoRA error in info."""
    if response.status != 200:
        assert 400 <= response.status < 500, f"{response.status}: {response.body}"
        for mention in mentions:
            assert mention.lower() in response.detail.lower(), response.detail
        return
    assert_failed_visibly(response, False, *mentions)


def assert_never_silent(response: Response, fail: bool, plain: Image.Image) -> None:
    """Either the identity was applied (and says so) or the failure is visible."""
    if response.status == 200 and ERROR not in response.params:
        params = response.params
        missing = [key for key in APPLIED_KEYS if key not in params]
        assert not missing, f"no error and no identity ({missing} missing): {params}"
        assert not same(plain, response.image()), "claims the identity but the image is plain"
        return
    assert_failed_visibly(response, fail)


# ---------------------------------------------------------------------------------- happy path


def test_identity_changes_the_image_and_leaves_no_trace(plain):
    assert "hyperlora" in call("/sdapi/v1/scripts").body["txt2img"]
    first = generate(identity())
    params = first.params
    assert ERROR not in params, params[ERROR]
    assert all(key in params for key in APPLIED_KEYS), params
    assert first.info["prompt"] == PROMPT  # trigger words off: only the LoRA changed the image
    assert not same(plain, first.image())
    assert same(plain, generate(None).image()), "the UNet was not restored after the job"
    assert same(first.image(), generate(identity()).image()), "the same identity differs"


def test_weight_zero_leaves_the_prompt_and_the_image_untouched(plain):
    response = generate(identity(weight=0, trigger_words=True))
    assert ERROR not in response.params, response.params
    assert response.info["prompt"] == PROMPT
    assert response.info["all_prompts"] == [PROMPT]
    assert same(plain, response.image())


# ---------------------------------------------------------------------------------- failures


def _no_match_model() -> str:
    names = [m["name"] for m in call("/hyperlora/v1/models").body["hyperlora"]]
    if NO_MATCH_MODEL not in names:
        pytest.skip(f"no HyperLoRA model {NO_MATCH_MODEL!r} installed (have {names})")
    return NO_MATCH_MODEL


@pytest.mark.parametrize("fail", [False, True], ids=["info", "fail-header"])
def test_a_model_matching_no_layer_is_a_visible_error(plain, fail):
    model = _no_match_model()
    response = generate(identity(model=model), fail=fail)
    assert_failed_visibly(response, fail)
    if not fail:
        assert same(plain, response.image()), "a model that matched nothing changed the image"
    assert same(plain, generate(None).image())


@pytest.mark.parametrize(
    ("changes", "mention"),
    [
        ({"model": "m" * 300}, "model"),
        ({"face": "index", "face_index": "²"}, "face_index"),
    ],
    ids=["overlong-model-name", "superscript-face-index"],
)
@pytest.mark.parametrize("fail", [False, True], ids=["info", "fail-header"])
def test_bad_arguments_are_visible_errors(plain, changes, mention, fail):
    response = generate(identity(**changes), fail=fail)
    if response.status == 422 and ERROR not in response.detail:
        assert_refused(response, mention)  # refused by validation before the job
    else:
        assert_failed_visibly(response, fail, mention)
    assert same(plain, generate(None).image())


def _huge_close_up() -> str:
    """An 8000 x 8000 photo whose face fills the frame (the synthetic detector's bright oval)."""
    image = Image.new("RGB", (8000, 8000), (30, 30, 30))
    ImageDraw.Draw(image).ellipse((200, 100, 7800, 7900), fill=(230, 220, 210))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize("fail", [False, True], ids=["info", "fail-header"])
def test_a_huge_close_up_is_applied_or_a_visible_error(plain, fail):
    response = generate(identity(images=[_huge_close_up()]), fail=fail)
    assert_never_silent(response, fail, plain)
    assert same(plain, generate(None).image())


def test_seventeen_photos_are_refused(plain):
    response = generate(identity(images=[face()] * 17))
    assert_refused(response, "images")
    assert same(plain, generate(None).image())


def test_a_bare_string_for_images_is_refused(plain):
    response = generate(identity(images=face()))
    assert_refused(response, "images")
    assert same(plain, generate(None).image())


def _distinct_faces(count: int) -> list[str]:
    """The test face ``count`` times, each with one pixel changed: no identity cache hit."""
    base = Image.open(io.BytesIO(base64.b64decode(face()))).convert("RGB")
    photos = []
    for index in range(count):
        photo = base.copy()
        photo.putpixel((0, 0), (index, 255 - index, 7))
        buffer = io.BytesIO()
        photo.save(buffer, format="PNG")
        photos.append(base64.b64encode(buffer.getvalue()).decode())
    return photos


def _wait_for_stage(job: threading.Thread) -> str:
    """The first HyperLoRA stage shown in the WebUI's progress text while ``job`` runs."""
    while job.is_alive():
        text = call("/sdapi/v1/progress?skip_current_image=true").body.get("textinfo") or ""
        if text.startswith("HyperLoRA: "):
            return text
        time.sleep(0.02)
    pytest.fail("the job ended without showing a HyperLoRA stage in the progress text")


def test_interrupt_while_encoding_stops_the_encoding(plain):
    """The stage is in /sdapi/v1/progress; Interrupt is honoured at the next stage boundary."""
    result: list[Response] = []
    job = threading.Thread(
        target=lambda: result.append(generate(identity(images=_distinct_faces(16))))
    )
    job.start()
    stage = _wait_for_stage(job)
    if stage == "HyperLoRA: predicting the LoRA":  # the last stage: nothing left to stop
        job.join()
        pytest.skip("the progress text was first seen at the last stage; too late to interrupt")
    call("/sdapi/v1/interrupt", {})
    job.join()
    response = result[0]
    assert response.status == 200, response.body
    assert response.body["images"] == [], "interrupted: the WebUI makes no image"
    assert "interrupted while encoding" in str(response.params.get(ERROR)), (stage, response.params)
    assert not [key for key in APPLIED_KEYS if key in response.params], response.params
    assert same(plain, generate(None).image()), "the next job is plain and complete"


# ---------------------------------------------------------------------------------- first run


def test_the_accordion_checklist_agrees_with_the_models_route():
    """The real UI's first-run checklist uses the readiness of /hyperlora/v1/models."""
    models = call("/hyperlora/v1/models")
    assert models.status == 200, models.body
    config = call("/config")
    if config.status == 404:
        pytest.skip("no UI on this server (--nowebui)")
    checklists = [
        str(c.get("props", {}).get("value"))
        for c in config.body["components"]
        if str(c.get("props", {}).get("elem_id", "")).endswith("hyperlora_checklist")
    ]
    assert len(checklists) == 2, "one checklist in txt2img and one in img2img"
    needs = [text for text in checklists if "needs these models" in text]
    assert bool(needs) != bool(models.body["ready"]), (models.body, checklists)


# ---------------------------------------------------------------------------------- X/Y/Z


def _xyz_axes(is_img2img: bool) -> list[str]:
    scripts = call("/sdapi/v1/script-info").body
    for script in scripts:
        if script.get("name") == "x/y/z plot" and bool(script.get("is_img2img")) == is_img2img:
            return [str(c) for c in script["args"][0].get("choices") or []]
    pytest.fail(f"no X/Y/Z script in /sdapi/v1/script-info: {[s.get('name') for s in scripts]}")


@pytest.mark.parametrize("is_img2img", [False, True], ids=["txt2img", "img2img"])
def test_hyperlora_axes_are_listed_in_script_info(is_img2img):
    axes = _xyz_axes(is_img2img)
    ours = [a for a in axes if a.startswith("[HyperLoRA] ")]
    assert {"[HyperLoRA] Weight", "[HyperLoRA] Enabled"} <= set(ours), (len(axes), ours)


# After the three axes (type, values, dropdown values): legend, lone images, sub-grids, no fixed
# seeds, vary seeds x/y/z, margin, csv mode (A1111 1.10 and Forge).
XYZ_OPTIONS = [True, True, False, False, False, False, False, 0, False]


def test_a_weight_grid_through_the_api(plain):
    axes = _xyz_axes(False)
    weight_axis = axes.index("[HyperLoRA] Weight")
    nothing = axes.index("Nothing")
    response = generate(
        identity(trigger_words=True),
        script_name="x/y/z plot",
        script_args=[weight_axis, "0, 0.8", [], nothing, "", [], nothing, "", [], *XYZ_OPTIONS],
    )
    assert response.status == 200, response.body
    infotexts = response.info["infotexts"]
    # grid first, then the cells (include_lone_images)
    cells = {text: response.image(i) for i, text in enumerate(infotexts) if "Weight" in text}
    zero = [t for t in infotexts[1:] if "HyperLoRA weight" not in t]
    applied = [t for t in infotexts[1:] if "HyperLoRA weight: 0.8" in t]
    assert applied and zero, infotexts
    assert all(ERROR not in t for t in infotexts), infotexts
    assert all(t.startswith(PROMPT) for t in zero), zero  # weight 0: no trigger words
    assert cells is not None


# ---------------------------------------------------------------------------------- sliders


@cache
def mirrored_face() -> str:
    """Another photo (the test face mirrored): a second identity for a slider's other side."""
    image = Image.open(FACE).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def slider(strength: float = 0.8, **sides: Any) -> dict[str, Any]:
    return {
        "positive": sides.get("positive", {"images": [face()]}),
        "negative": sides.get("negative", {"images": [mirrored_face()]}),
        "strength": strength,
    }


@pytest.fixture(scope="module")
def identity_only() -> Image.Image:
    response = generate(identity())
    assert ERROR not in response.params, response.params
    return response.image()


def test_slider_changes_the_image_records_both_sides_and_leaves_no_trace(plain, identity_only):
    response = generate(identity(slider=slider(0.8)))
    params = response.params
    assert ERROR not in params, params[ERROR]
    assert all(key in params for key in APPLIED_KEYS), params
    assert params["HyperLoRA slider positive"] == "@images(1)", params
    assert params["HyperLoRA slider negative"] == "@images(1)", params
    assert params["HyperLoRA slider strength"] == "0.8", params
    assert len(str(params["HyperLoRA slider identities"]).split("/")) == 2, params
    assert "HyperLoRA slider strength: 0.8" in response.infotext
    assert not same(identity_only, response.image()), "the slider did not change the image"
    assert same(identity_only, generate(identity()).image()), "the slider stayed in the UNet"
    assert same(plain, generate(None).image()), "the UNet was not restored after the job"


def test_slider_strength_zero_is_the_identity_alone(identity_only):
    response = generate(identity(slider=slider(0)))
    assert ERROR not in response.params, response.params
    assert "HyperLoRA slider strength" not in response.params
    assert same(identity_only, response.image())


def test_slider_of_saved_identities_names_them(plain, identity_only):
    names = ("hyperlora_it_older", "hyperlora_it_younger")
    for name, photo in zip(names, (face(), mirrored_face()), strict=True):
        saved = call(
            "/hyperlora/v1/encode", {"images": [photo], "save_as": name, "overwrite": True}
        )
        assert saved.status == 200, saved.body
    try:
        response = generate(identity(slider=slider(-0.6, positive=names[0], negative=names[1])))
        params = response.params
        assert ERROR not in params, params[ERROR]
        assert params["HyperLoRA slider positive"] == names[0], params
        assert params["HyperLoRA slider negative"] == names[1], params
        assert params["HyperLoRA slider strength"] == "-0.6", params
        assert not same(identity_only, response.image())
        assert same(plain, generate(None).image())
    finally:
        for name in names:
            call(f"/hyperlora/v1/identities/{name}", method="DELETE")


@pytest.mark.parametrize("fail", [False, True], ids=["info", "fail-header"])
def test_slider_with_a_missing_identity_is_a_visible_error(plain, fail):
    missing = slider(0.5, positive="hyperlora_it_no_such_identity")
    response = generate(identity(slider=missing), fail=fail)
    assert_failed_visibly(response, fail, "hyperlora_it_no_such_identity")
    if not fail:
        assert same(plain, response.image()), "an image with an error carries an identity"
    assert same(plain, generate(None).image())


def test_a_bad_slider_strength_is_refused(plain):
    response = generate(identity(slider=slider(9)))
    assert_refused(response, "slider_strength")
    assert same(plain, generate(None).image())


def test_a_slider_strength_grid_through_the_api(identity_only):
    axes = _xyz_axes(False)
    assert "[HyperLoRA] Slider strength" in axes, axes
    strength_axis = axes.index("[HyperLoRA] Slider strength")
    nothing = axes.index("Nothing")
    response = generate(
        identity(slider=slider(0.5)),
        script_name="x/y/z plot",
        script_args=[strength_axis, "0, 0.8", [], nothing, "", [], nothing, "", [], *XYZ_OPTIONS],
    )
    assert response.status == 200, response.body
    infotexts = response.info["infotexts"]
    assert all(ERROR not in t for t in infotexts), infotexts
    cells = infotexts[1:]  # grid first, then the cells (include_lone_images)
    assert any("HyperLoRA slider strength: 0.8" in t for t in cells), cells
    off = [i + 1 for i, t in enumerate(cells) if "HyperLoRA slider" not in t]
    assert off, cells
    assert same(identity_only, response.image(off[0])), "strength 0 is not the identity alone"


# ---------------------------------------------------------------------------------- likeness

LIKENESS = "HyperLoRA likeness"


def _likeness(infotext: str) -> str | None:
    """The likeness entry of an infotext: "0.62", "no face", or None when absent."""
    for part in infotext.split("\n")[-1].split(", "):
        if part.startswith(f"{LIKENESS}: "):
            return part.removeprefix(f"{LIKENESS}: ")
    return None


def _is_score(value: str | None) -> bool:
    if value == "no face":
        return True
    try:
        return value is not None and -1.0 <= float(value) <= 1.0
    except ValueError:
        return False


def test_every_image_carries_its_likeness():
    response = generate(identity(), batch_size=2)
    assert ERROR not in response.params, response.params
    scores = [_likeness(text) for text in response.info["infotexts"]]
    assert len(scores) == 2 and all(_is_score(s) for s in scores), response.info["infotexts"]
    assert _is_score(response.params.get(LIKENESS)), response.params
    assert "likeness not scored" not in str(response.params.get("HyperLoRA warning", ""))


def test_likeness_can_be_turned_off_per_request():
    response = generate(identity(), override_settings={"hyperlora_likeness": False})
    assert ERROR not in response.params, response.params
    assert LIKENESS not in response.params and _likeness(response.infotext) is None
    assert "HyperLoRA weight" in response.params


def test_no_likeness_without_hyperlora():
    assert _likeness(generate(identity(enabled=False)).infotext) is None


def test_every_xyz_cell_carries_its_own_likeness():
    axes = _xyz_axes(False)
    weight_axis, nothing = axes.index("[HyperLoRA] Weight"), axes.index("Nothing")
    response = generate(
        identity(),
        script_name="x/y/z plot",
        script_args=[weight_axis, "0, 0.8", [], nothing, "", [], nothing, "", [], *XYZ_OPTIONS],
    )
    assert response.status == 200, response.body
    cells = response.info["infotexts"][1:]  # the grid first, then the cells
    applied = [t for t in cells if "HyperLoRA weight: 0.8" in t]
    off = [t for t in cells if "HyperLoRA weight" not in t]
    assert applied and off, cells
    assert all(_is_score(_likeness(t)) for t in applied), applied
    assert all(_likeness(t) is None for t in off), off


def test_the_likeness_route_scores_the_reference_photo_as_one():
    response = call("/hyperlora/v1/likeness", {"images": [face()], "reference_images": [face()]})
    assert response.status == 200, response.body
    [score] = response.body["images"]
    assert score["faces"] >= 1 and abs(score["likeness"] - 1.0) < 1e-4, score


def test_the_likeness_route_names_the_missing_field():
    response = call("/hyperlora/v1/likeness", {"images": [face()]})
    assert response.status == 422, response.body
    assert set(response.body) == {"error", "detail", "field"}, response.body
    assert response.body["field"] == "reference_images"
