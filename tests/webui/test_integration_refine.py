"""Opt-in: refining a saved identity in a real running WebUI (A1111 or Forge, --api or --nowebui).

    SD_WEBUI_URL=http://127.0.0.1:7860 SD_WEBUI_FACE=face.png pytest tests/webui -m integration

The test face is saved as an identity through ``/hyperlora/v1/encode``, refined for 3 steps at the
smallest resolution ``/hyperlora/v1/refine`` accepts (64 px; the smoke WebUIs run a random SDXL
on a CPU), then used by name and as ``<lora:>``. Both identities are deleted afterwards. A plain
fixed-seed image before and after the refine must be pixel-identical (the UNet came back
bit-exactly). SD_WEBUI_STEPS / SD_WEBUI_SIZE set the sampling cost of the generations.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.webui.live_webui import ERROR, Response, call, face, same, skip_reason

pytestmark = pytest.mark.integration
PROMPT = "portrait photo of a person, studio light"
STEPS = 3
# The smallest crop side the route accepts, a learning rate that moves the LoRA in 3 steps.
SMALL = {"steps": STEPS, "resolution": 64, "learning_rate": 1e-3, "seed": 1}
NAME = f"hyperlora_it_refine_{uuid.uuid4().hex[:8]}"
REFINED = f"{NAME}-refined"
KIT = "hyperlora_it_refine_kit"  # one fixed folder, overwritten by each run


@pytest.fixture(scope="module", autouse=True)
def _webui() -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)


def generate(prompt: str = PROMPT, hyperlora: dict[str, Any] | None = None) -> Response:
    size = int(os.environ.get("SD_WEBUI_SIZE", "512"))
    payload: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": "blurry",
        "seed": 1234,
        "steps": int(os.environ.get("SD_WEBUI_STEPS", "8")),
        "width": size,
        "height": size,
        "sampler_name": "Euler",
    }
    if hyperlora is not None:
        payload["alwayson_scripts"] = {"HyperLoRA": {"args": [hyperlora]}}
    response = call("/sdapi/v1/txt2img", payload)
    assert response.status == 200, f"{response.status}: {response.body}"
    return response


def plain() -> Image.Image:
    return generate(hyperlora={"enabled": False}).image()


def refine_body(**changes: Any) -> dict[str, Any]:
    return {"identity": NAME, "images": [face()], **SMALL, **changes}


@dataclass
class Refined:
    before: Image.Image  # a plain image before the refine
    response: Response  # the refine's answer
    after: Image.Image  # the same plain image after it

    @property
    def name(self) -> str:
        """The refined identity's name; the cases using it fail here when the refine did."""
        assert self.response.status == 200, f"{self.response.status}: {self.response.body}"
        return str(self.response.body["name"])


@pytest.fixture(scope="module")
def saved() -> Iterator[str]:
    """The test face saved as identity NAME; NAME and NAME-refined deleted afterwards."""
    try:
        response = call("/hyperlora/v1/encode", {"images": [face()], "save_as": NAME})
        assert response.status == 200, f"{response.status}: {response.body}"
        yield NAME
    finally:
        for name in (NAME, REFINED):
            call(f"/hyperlora/v1/identities/{name}", method="DELETE")
        call("/sdapi/v1/refresh-loras", {})


@pytest.fixture(scope="module")
def refined(saved: str) -> Refined:
    before = plain()
    response = call("/hyperlora/v1/refine", refine_body())
    after = plain()
    call("/sdapi/v1/refresh-loras", {})  # the Lora extension lists the new file
    return Refined(before, response, after)


# ---------------------------------------------------------------------------------- refine


def test_refine_saves_the_refined_identity_and_leaves_the_unet_untouched(refined):
    body = refined.response.body
    assert refined.response.status == 200, body
    assert body["name"] == REFINED, body
    assert body["steps"] == STEPS and not body["interrupted"], body
    assert len(body["loss"]) == STEPS, body
    assert all(isinstance(x, float) and math.isfinite(x) for x in body["loss"]), body["loss"]
    assert body["prompt_tag"] == f"<lora:{REFINED}:1>", body
    assert body["micro_batch"] >= 1, body
    assert same(refined.before, refined.after), "a plain image changed: the UNet was not restored"
    listed = call("/hyperlora/v1/identities")
    assert listed.status == 200 and REFINED in str(listed.body), listed.body


def test_the_refined_identity_is_used_by_name(refined):
    name = refined.name
    hyperlora = {"enabled": True, "identity": name, "weight": 1.0, "trigger_words": False}
    response = generate(hyperlora=hyperlora)
    assert ERROR not in response.params, response.params[ERROR]
    assert f"HyperLoRA refined: {STEPS} steps ({name})" in response.infotext, response.infotext
    assert not same(refined.after, response.image()), "the refined identity did not change it"
    assert same(refined.after, plain()), "the identity stayed in the UNet"


def test_the_refined_identity_is_used_as_a_lora_tag(refined):
    name = refined.name
    response = generate(f"{PROMPT} <lora:{name}:1>", {"enabled": False})
    assert ERROR not in response.params, response.params[ERROR]
    assert f"HyperLoRA refined: {STEPS} steps ({name})" in response.infotext, response.infotext
    assert not same(refined.after, response.image()), "the <lora:> tag did not change the image"


# ---------------------------------------------------------------------------------- refusals


def test_a_second_refine_to_the_same_name_is_refused(refined):
    name = refined.name
    response = call("/hyperlora/v1/refine", refine_body())
    assert response.status == 409, response.body
    assert response.body["field"] == "save_name" and name in response.detail, response.body


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"resolution": 100}, "resolution"),
        ({"resolution": 32}, "resolution"),
        ({"learning_rate": 0.5}, "learning_rate"),
        ({"face": "biggest"}, "face"),
        ({"photo_weights": [1, 2]}, "photo_weights"),
        ({"stepz": 3}, "stepz"),
        ({"images": []}, "images"),
    ],
)
def test_bad_fields_are_422_naming_the_field(saved, changes, field):
    response = call("/hyperlora/v1/refine", refine_body(**changes, save_name=f"{NAME}-bad"))
    assert response.status == 422, response.body
    assert response.body["field"] == field and field in response.detail, response.body
    assert call(f"/hyperlora/v1/identities/{NAME}-bad").status == 404, "a refused refine saved"


def test_a_save_name_outside_the_store_is_400(saved):
    response = call("/hyperlora/v1/refine", refine_body(save_name="../escape"))
    assert response.status == 400, response.body
    assert response.body["field"] == "save_name", response.body


def test_an_unknown_identity_is_404(saved):
    response = call("/hyperlora/v1/refine", refine_body(identity=f"{NAME}_missing"))
    assert response.status == 404, response.body
    assert response.body["field"] == "identity", response.body


# ---------------------------------------------------------------------------------- kit


def test_the_training_kit_is_written(saved):
    body = refine_body(kit_name=KIT, overwrite=True, base_checkpoint="sdxl.safetensors")
    response = call("/hyperlora/v1/refine/kit", body)
    assert response.status == 200, response.body
    kit = response.body
    folder = Path(kit["folder"])
    assert folder.parts[-2:] == ("hyperlora-kits", KIT), kit
    assert kit["lora"] == f"{KIT}.safetensors" and kit["dataset"] == "dataset.toml", kit
    assert kit["images"] >= 1, kit
    command = kit["command"]
    assert command[command.index("--network_weights") + 1].endswith(kit["lora"]), command
    assert command[command.index("--max_train_steps") + 1] == str(STEPS), command
    if not folder.is_dir():
        pytest.skip(f"{folder} is on the WebUI's machine, not here: train.sh not checked")
    try:
        written = {p.name for p in folder.iterdir()}
        assert {kit["lora"], "dataset.toml", "train.sh", "train.bat"} <= written, written
        assert "--network_weights" in (folder / "train.sh").read_text("utf-8")
    finally:
        shutil.rmtree(folder)
