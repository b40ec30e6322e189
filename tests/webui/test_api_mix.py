"""Issue 21 through the routes, on the real tiny pipeline: the dtype in /encode, a mix's limits and
its parts named in errors, settings a mix ignores, and /likeness against a LoRA placed by hand."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from hyperlora_ext.facts import DTYPES, MAX_IMAGES, MAX_MIX_PARTS, MAX_TOTAL_IMAGES
from tests.webui.tiny_host import FACE, NO_FACE, OTHER_FACE, expect_error

URL = "/hyperlora/v1/encode"


def encode(client, **request):
    response = client.post(URL, json=request)
    assert response.status_code == 200, response.text
    return response.json()


def test_encode_says_the_dtype_and_warns_when_an_earlier_one_differs(client):
    body = encode(client, images=[FACE])
    assert body["dtype"] in DTYPES and body["warnings"] == []
    assert encode(client, images=[FACE], dtype=body["dtype"])["warnings"] == []
    other = next(dtype for dtype in DTYPES if dtype != body["dtype"])
    again = encode(client, images=[FACE], dtype=other)
    assert again["digest"] == body["digest"]  # made as this machine makes it, and said so:
    assert [w for w in again["warnings"] if f"made in {other}" in w and body["dtype"] in w]
    response = client.post(URL, json={"images": [FACE], "dtype": "fp64"})
    assert expect_error(response, 422, "ArgumentError", "fp32, bf16, fp16")["field"] == "dtype"


def test_a_photo_without_a_face_in_a_mix_part_names_the_part(client):
    encode(client, images=[FACE], save_as="alice")
    mix = [{"identity": "alice"}, {"images": [NO_FACE]}]
    body = expect_error(client.post(URL, json={"mix": mix}), 422, "NoFaceError", "mix part 2")
    assert body["field"] == "mix.2.images"
    mix = [{"identity": "alice"}, {"images": [OTHER_FACE, NO_FACE]}]  # one face: a warning
    body = encode(client, mix=mix)
    assert [p["label"] for p in body["photos"]] == ["mix part 2, image 1", "mix part 2, image 2"]
    assert [w for w in body["warnings"] if w.startswith("mix part 2, image 2: ")]
    # the generation's own photos (@photos) are the request's 'images'
    response = client.post(URL, json={"mix": "alice:1, @photos:1", "images": [NO_FACE]})
    assert expect_error(response, 422, "NoFaceError")["field"] == "images"


def test_a_mix_is_bounded_in_parts_and_photos(client):
    parts = [{"identity": f"id{n}"} for n in range(MAX_MIX_PARTS + 1)]
    response = client.post(URL, json={"mix": parts})
    assert (
        expect_error(response, 422, "ArgumentError", f"at most {MAX_MIX_PARTS}")["field"] == "mix"
    )
    photos = [{"images": [FACE] * MAX_IMAGES}] * (MAX_TOTAL_IMAGES // MAX_IMAGES + 1)
    response = client.post(URL, json={"mix": photos})
    body = expect_error(response, 422, "ArgumentError", f"at most {MAX_TOTAL_IMAGES}")
    assert body["field"] == f"mix.{len(photos)}.images"


def test_mix_text_errors_name_the_field(client):
    response = client.post(URL, json={"mix": "alice:0.5, :0.5"})
    assert expect_error(response, 422, "ArgumentError", "names no identity")["field"] == "mix"
    response = client.post(URL, json={"mix": [{"identity": "alice", "wieght": 1}]})
    body = expect_error(response, 422, "ArgumentError", "photo_weights, weight")
    assert body["field"] == "mix.1.wieght"


def test_a_model_a_mix_ignores_is_a_warning(client):
    encode(client, images=[FACE], save_as="alice")
    encode(client, images=[OTHER_FACE], save_as="bob")
    plain = encode(client, mix="alice:1, bob:1")
    assert plain["warnings"] == []
    named = encode(client, mix="alice:1, bob:1", model="other_model")
    assert named["digest"] == plain["digest"] and named["model"] == plain["model"]
    assert [w for w in named["warnings"] if "model 'other_model' is ignored" in w]


def test_a_shape_error_in_a_mix_names_the_identity(client, host):
    from hyperlora_ext.webui.host import identity_store

    encode(client, images=[FACE], save_as="alice")
    store = identity_store()
    lora = store.load("alice").lora
    store.save("odd", lora, model="tiny", photos=1, tokens=torch.zeros(3, 5))
    body = client.post(URL, json={"mix": "alice:1, odd:1"})
    assert body.status_code == 422, body.text
    assert "odd" in body.json()["detail"] and body.json()["field"] == "mix"


def test_likeness_against_a_lora_placed_by_hand_says_so(client, host):
    folder = host.lora_dir / "hyperlora"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_x.lora_up.weight": torch.zeros(2, 1)}, str(folder / "hand.safetensors"))
    response = client.post("/hyperlora/v1/likeness", json={"images": [FACE], "identity": "hand"})
    body = expect_error(response, 422, "NoReferenceError", "not made by HyperLoRA")
    assert body["field"] == "identity" and "saved before" not in body["detail"]
