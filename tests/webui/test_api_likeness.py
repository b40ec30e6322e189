"""POST /hyperlora/v1/likeness through a real FastAPI app, the real pipeline on the tiny models."""

from __future__ import annotations

import pytest

from tests.encoders._photos import face_photo
from tests.webui.harness import resolve
from tests.webui.tiny_host import FACE, NO_FACE, expect_error, make_client, png_b64

URL = "/hyperlora/v1/likeness"
OTHER_FACE = png_b64(face_photo((320, 240), ((100, 20, 180, 220),)))  # narrower, taller


@pytest.fixture
def client(host):
    return make_client()


def post(client, **body):
    return client.post(URL, json=body)


def test_scores_each_image_against_reference_photos(client):
    response = post(client, images=[FACE, OTHER_FACE, NO_FACE], reference_images=[FACE])
    assert response.status_code == 200, response.text
    same, other, blank = response.json()["images"]
    assert same["image"] == "image 1" and same["faces"] == 1
    assert same["likeness"] == pytest.approx(1.0, abs=1e-6)
    assert other["faces"] == 1 and other["likeness"] < 0.9
    assert blank == {"image": "image 3", "faces": 0, "likeness": None}


def test_scores_against_a_saved_identity(client, host):
    from hyperlora_ext.args import HyperLoRAArgs
    from hyperlora_ext.store import get_store

    result = resolve(HyperLoRAArgs.from_dict({"images": [FACE], "model": "tiny"}))
    store = get_store(host.lora_dir)
    store.save(
        "alice", result.lora, model="tiny", photos=1, reference_embedding=result.likeness_reference
    )
    by_name = post(client, images=[FACE, OTHER_FACE], identity="alice").json()["images"]
    by_photo = post(client, images=[FACE, OTHER_FACE], reference_images=[FACE]).json()["images"]
    assert [s["likeness"] for s in by_name] == pytest.approx([s["likeness"] for s in by_photo])

    store.save("old", result.lora, model="tiny", photos=1)  # saved before references existed
    expect_error(
        post(client, images=[FACE], identity="old"),
        422,
        "NoReferenceError",
        "no likeness reference",
    )


@pytest.mark.parametrize(
    ("body", "status", "kind", "field", "fragment"),
    [
        ({"images": [FACE]}, 422, "ApiError", "reference_images", "either"),
        ({"images": [FACE], "identity": "a", "reference_images": [FACE]}, 422, "ApiError",
         "identity", "not both"),
        ({"images": [FACE], "identity": "nobody"}, 404, "IdentityNotFoundError", "identity",
         "nobody"),
        ({"images": [FACE], "identity": "../x"}, 400, "InvalidNameError", "identity", ""),
        ({"images": [FACE], "identity": 3}, 422, "ApiError", "identity", "name"),
        ({"images": [FACE], "reference_images": []}, 422, "ApiError", "reference_images", ""),
        ({"images": [FACE], "reference_images": [NO_FACE]}, 422, "NoFaceError",
         "reference_images", "reference image 1"),
        ({"images": [FACE], "reference_images": ["/etc/passwd"]}, 400, "ImageError",
         "reference_images", "reference image 1"),
        ({"images": [], "reference_images": [FACE]}, 422, "ApiError", "images", ""),
        ({"images": ["bm90IGFuIGltYWdl"], "reference_images": [FACE]}, 400, "ImageError",
         "images", "image 1"),
        ({"images": [FACE], "reference_images": [FACE], "weight": 1}, 422, "ApiError", "weight",
         "unknown field"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field(client, body, status, kind, field, fragment):
    error = expect_error(client.post(URL, json=body), status, kind, fragment)
    assert error["field"] == field
