"""POST /hyperlora/v1/refine and /refine/kit on the A1111 double with the tiny SDXL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hyperlora_ext.webui import refine_host
from tests.webui.fake_webui.tiny_sdxl import unet_fingerprint
from tests.webui.loras import make_lora
from tests.webui.tiny_host import FACE, NO_FACE, OTHER_FACE, expect_error

FAST = {"steps": 2, "resolution": 64, "learning_rate": 1e-3}


@pytest.fixture
def alice(host):
    """The loaded tiny checkpoint with a saved identity ``alice`` that fits its UNet."""
    from hyperlora_ext.webui.host import identity_store

    model = host.load_model()
    lora = make_lora(model, style="diffusers", rank=8, alpha=4.0, scale=0.2)
    identity_store().save("alice", lora, model="tiny", photos=2)
    return model


def plain_image(model):
    from modules import processing

    p = processing.StableDiffusionProcessingTxt2Img(prompt="a cat", seed=7, sd_model=model)
    return np.asarray(processing.process_images(p).images[0])


def body(**fields):
    return {"identity": "alice", "images": [FACE, OTHER_FACE], **FAST, **fields}


def test_refine_saves_name_refined_and_gives_the_unet_back(client, alice, host):
    from hyperlora_ext.webui.host import identity_store

    weights, image = unet_fingerprint(alice), plain_image(alice)
    response = client.post("/hyperlora/v1/refine", json=body(photo_weights=[1, 0.5]))
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["name"] == "alice-refined" and data["steps"] == 2 and not data["interrupted"]
    assert len(data["loss"]) == 2 and all(loss > 0 for loss in data["loss"])
    assert data["prompt_tag"] == "<lora:alice-refined:1>"
    assert data["likeness_before"] is None and data["likeness_note"].startswith("not scored")
    run = identity_store().record("alice-refined").options["refine"]
    assert run["steps"] == 2 and run["loss_curve"] == data["loss"] and run["resolution"] == 64
    after = unet_fingerprint(alice)
    assert all(torch.equal(after[k], weights[k]) for k in weights)
    assert np.array_equal(plain_image(alice), image)
    assert host.shared.state.ended == 1 and host.shared.state.job == ""


def test_the_refined_lora_differs_from_the_start(client, alice, host):
    from hyperlora_ext.webui.host import identity_store

    client.post("/hyperlora/v1/refine", json=body(save_name="alice v2"))
    store = identity_store()
    start, refined = store.load("alice").lora, store.load("alice v2").lora
    assert set(start) == set(refined)
    changed = [k for k in start if not torch.equal(start[k].half(), refined[k].half())]
    assert changed and all(not k.endswith(".alpha") for k in changed)


@pytest.mark.parametrize(
    ("fields", "status", "field", "fragment"),
    [
        ({"identity": None}, 422, "identity", "'identity' is required"),
        ({"identity": "bob"}, 404, "identity", "no saved identity named 'bob'"),
        ({"identity": "../x"}, 400, "identity", ""),
        ({"images": []}, 422, "images", "non-empty list"),
        ({"steps": 0}, 422, "steps", "'steps' must be a whole number from 1 to 1000"),
        ({"steps": 2.5}, 422, "steps", "whole number"),
        ({"resolution": 100}, 422, "resolution", "multiple of 8"),
        ({"resolution": 4096}, 422, "resolution", "from 64 to 2048"),
        ({"learning_rate": 0}, 422, "learning_rate", "above 0"),
        ({"learning_rate": "fast"}, 422, "learning_rate", "'fast'"),
        ({"photo_weights": [1]}, 422, "photo_weights", "2 number(s) above 0"),
        ({"face": "middle"}, 422, "face", "must be one of"),
        ({"overwrite": "yes"}, 422, "overwrite", "true or false"),
        ({"save_name": "a/b"}, 400, "save_name", ""),
        ({"steps_count": 3}, 422, "steps_count", "unknown field"),
        ({"images": [FACE, NO_FACE]}, 422, "images", "image 2"),
    ],
)
def test_bad_requests_say_which_field(client, alice, host, fields, status, field, fragment):
    weights = unet_fingerprint(alice)
    response = client.post("/hyperlora/v1/refine", json=body(**fields))
    error = expect_error(response, status, response.json()["error"], fragment)
    assert error["field"] == field
    assert host.shared.state.ended == 0  # refused before any training started
    after = unet_fingerprint(alice)
    assert all(torch.equal(after[k], weights[k]) for k in weights)


def test_an_existing_target_is_409_unless_overwrite(client, alice):
    assert client.post("/hyperlora/v1/refine", json=body()).status_code == 200
    error = expect_error(
        client.post("/hyperlora/v1/refine", json=body()), 409, "ApiError", "'alice-refined' exists"
    )
    assert error["field"] == "save_name"
    again = client.post("/hyperlora/v1/refine", json=body(overwrite=True, steps=1))
    assert again.status_code == 200 and again.json()["steps"] == 1


def test_a_refine_while_another_runs_is_409(client, alice):
    refine_host._running.acquire()
    try:
        response = client.post("/hyperlora/v1/refine", json=body())
    finally:
        refine_host._running.release()
    expect_error(response, 409, "ApiError", "a refine is already running")


def test_no_checkpoint_loaded_is_a_clear_error(client, alice, host):
    host.shared.sd_model = None
    expect_error(
        client.post("/hyperlora/v1/refine", json=body()), 422, "HyperLoRAError", "no checkpoint"
    )


def test_interrupt_saves_nothing(client, alice, host, monkeypatch):
    from hyperlora_ext.webui.host import identity_store

    original = refine_host.Trainer.run

    def run(self, progress, should_stop):
        def press_interrupt(done, total, loss):
            progress(done, total, loss)
            host.shared.state.interrupt()

        return original(self, press_interrupt, should_stop)

    monkeypatch.setattr(refine_host.Trainer, "run", run)
    data = client.post("/hyperlora/v1/refine", json=body(steps=5)).json()
    assert data["interrupted"] and data["steps"] == 1 and data["name"] is None
    assert data["prompt_tag"] is None and not identity_store().exists("alice-refined")


def test_kit_is_written_inside_the_outputs_folder(client, alice, host):
    from modules import paths

    response = client.post("/hyperlora/v1/refine/kit", json=body(kit_name="alice kit"))
    assert response.status_code == 200, response.text
    data = response.json()
    folder = paths.data_path + "/outputs/hyperlora-kits/alice kit"
    assert data["folder"] == str(Path(folder).resolve())
    lora = load_file(f"{folder}/alice kit.safetensors")
    assert len(lora) == 560 * 3 and all(k.startswith("lora_unet_") for k in lora)
    assert data["images"] == 2 * 3 and "--network_weights" in data["command"]
    again = client.post("/hyperlora/v1/refine/kit", json=body(kit_name="alice kit"))
    assert expect_error(again, 409, "ApiError", "exists")["field"] == "kit_name"
    bad = client.post("/hyperlora/v1/refine/kit", json=body(kit_name="../up"))
    assert expect_error(bad, 400, "InvalidNameError")["field"] == "kit_name"


def test_routes_are_in_the_openapi_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    schema = paths["/hyperlora/v1/refine"]["post"]["requestBody"]["content"]["application/json"]
    assert {"identity", "images", "steps", "learning_rate", "resolution", "save_name"} <= set(
        schema["schema"]["properties"]
    )
    assert "/hyperlora/v1/refine/kit" in paths


def test_likeness_is_scored_on_request(client, alice, monkeypatch):
    from hyperlora_ext.webui import refine_likeness
    from hyperlora_ext.webui.host import identity_store
    from tests.encoders._photos import face_photo

    reference = identity_store().record("alice")  # saved without a reference: say so
    assert not reference.reference_embedding
    data = client.post("/hyperlora/v1/refine", json=body(score_likeness=True)).json()
    assert data["likeness_before"] is None and "has no likeness reference" in data["likeness_note"]

    made = []

    def generate(sd_model, name):  # the double's images are tensors; score real photos instead
        made.append(name)
        boxes = {"alice": (100, 40, 220, 200)}.get(name, (60, 30, 200, 220))
        return face_photo((320, 240), (boxes,))

    monkeypatch.setattr(refine_likeness, "generate", generate)
    store = identity_store()
    embedding = tuple(float(v) for v in torch.linspace(-1, 1, 512))
    store.save("bob", store.load("alice").lora, model="tiny", photos=2,
               reference_embedding=embedding)  # fmt: skip
    data = client.post("/hyperlora/v1/refine", json=body(identity="bob", score_likeness=True))
    data = data.json()
    assert made == ["bob", "bob-refined"]
    from hyperlora_ext.webui.host import pipeline

    images = [generate(None, "bob"), generate(None, "bob-refined")]
    expected = [round(s.score, 4) for s in pipeline().likeness(images, embedding)]
    assert [data["likeness_before"], data["likeness_after"]] == expected
    assert data["likeness_note"].startswith("seed ")


def test_the_fixed_seed_image_uses_the_identity_as_a_lora_tag(alice, host):
    from hyperlora_ext.webui import refine_likeness

    first = refine_likeness.generate(alice, "alice")
    assert torch.equal(first, refine_likeness.generate(alice, "alice"))  # fixed seed
    assert not torch.equal(first, refine_likeness.generate(alice, "nobody"))
