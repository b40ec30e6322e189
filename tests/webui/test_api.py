"""The /hyperlora/v1 routes and API error surfacing, through a real FastAPI app and TestClient.

The identity pipeline is real, on tiny random models (tests/factories.py) and the fake antelopev2
pack, built once per session; the WebUI is the double in tests/webui/fake_webui.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import replace
from types import SimpleNamespace
from typing import ClassVar

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import load

from hyperlora_ext import identity
from hyperlora_ext.encoders.faces import FaceAnalyzer
from hyperlora_ext.facts import ERROR_LABEL
from hyperlora_ext.lora_format import lora_digest
from hyperlora_ext.models import ModelRoots
from hyperlora_ext.webui import api, fail_mode, services
from hyperlora_ext.webui import api_models as m
from hyperlora_ext.webui import host as host_module
from hyperlora_ext.webui.services import Services
from hyperlora_ext.webui.settings import API_ON_ERROR
from tests import fake_antelopev2
from tests.encoders._photos import face_photo
from tests.webui.tiny_host import (
    FACE,
    NO_FACE,
    OTHER_FACE,
    expect_error,
    generation_app,
    make_client,
    png_b64,
    tiny_models,
)


# ------------------------------------------------------------------------- status, models
def test_status_and_models_when_installed(client, host):
    status = client.get("/hyperlora/v1/status").json()
    assert status["ready"] is True and status["device"] == "cpu"
    assert status["identities"] == 0 and set(status["cache"]) == {
        "entries",
        "bytes",
        "hits",
        "misses",
    }
    models = client.get("/hyperlora/v1/models").json()
    assert models["ready"] is True and models["problems"] == []
    assert [(m["name"], m["complete"]) for m in models["hyperlora"]] == [("tiny", True)]
    assert models["clip"][0]["complete"] and models["antelopev2"]["complete"]


def test_models_says_what_is_missing(host, tmp_path, monkeypatch):
    import modules.paths

    empty = tmp_path / "empty_models"
    (empty / "hyper_lora" / "hyper_lora" / "half").mkdir(parents=True)
    monkeypatch.setattr(modules.paths, "models_path", str(empty))
    client = make_client()
    models = client.get("/hyperlora/v1/models").json()
    assert models["ready"] is False
    half = models["hyperlora"][0]
    assert half["name"] == "half" and not half["complete"]
    assert "resampler.safetensors" in half["missing"]
    assert not models["antelopev2"]["complete"]
    assert any("download" in p["fix"] for p in models["problems"])
    assert client.get("/hyperlora/v1/status").json()["ready"] is False


# -------------------------------------------------------------------------------- detect
def test_detect_returns_boxes_scores_and_crops(client):
    response = client.post("/hyperlora/v1/detect", json={"images": [FACE, NO_FACE]})
    assert response.status_code == 200, response.text
    first, second = response.json()["images"]
    assert (first["width"], first["height"]) == (320, 240)
    (face,) = first["faces"]
    x1, y1, x2, y2 = face["box"]
    assert 80 < x1 < x2 < 240 and 20 < y1 < y2 < 220 and 0.5 < face["score"] <= 1
    crop = Image.open(io.BytesIO(base64.b64decode(face["crop"])))
    assert max(crop.size) <= 256 and crop.format == "PNG"
    assert first["largest"] == first["best_score"] == 0
    assert second == {"width": 64, "height": 64, "faces": [], "largest": None, "best_score": None}


def test_detect_orders_faces_as_face_index_counts(host, tmp_path):
    split_root = tmp_path / "split"
    fake_antelopev2.build(split_root / "models" / "antelopev2", split=True)
    backend = replace(
        host_module.services(),
        face_analyzer=lambda: FaceAnalyzer(split_root, providers=["CPUExecutionProvider"]),
    )
    client = make_client(backend)
    wide = png_b64(face_photo((640, 320), ((40, 60, 200, 260), (420, 40, 620, 300))))
    body = client.post("/hyperlora/v1/detect", json={"images": [wide], "crops": False}).json()
    (image,) = body["images"]
    left, right = image["faces"]
    assert [left["index"], right["index"]] == [0, 1] and left["box"][0] < right["box"][0]
    assert "crop" not in left
    assert image["best_score"] == 1 and right["score"] > left["score"]  # the fake: 0.95 / 0.99
    assert image["largest"] == 1


# ---------------------------------------------------------------- input errors (any POST)
@pytest.mark.parametrize("route", ["detect", "encode"])
def test_malformed_requests(client, route, tmp_path):
    url = f"/hyperlora/v1/{route}"
    expect_error(client.post(url, content=b"{not json"), 400, "ApiError", "not valid JSON")
    expect_error(client.post(url, json=[FACE]), 422, "ApiError", "JSON object")
    expect_error(client.post(url, json={}), 422, "ApiError", "'images'")
    expect_error(client.post(url, json={"images": FACE}), 422, "ApiError", "'images'")
    expect_error(client.post(url, json={"images": []}), 422, "ApiError", "non-empty")
    body = expect_error(client.post(url, json={"images": [FACE], "colour": 1}), 422, "ApiError")
    assert body["field"] == "colour" and "unknown field" in body["detail"]


GARBAGE = [
    ("!!!not base64!!!", "not valid base64"),
    ("data:image/png;base64,@@@@", "not valid base64"),
    ("http://example.com/a.png", "not accepted"),
    ("/etc/passwd", "paths and URLs are not accepted"),
    ("/tmp/abc", "paths and URLs are not accepted"),  # valid base64 that decodes to no image
    ("C:\\Users\\me\\face.jpg", "paths and URLs are not accepted"),
    ("", "empty string"),
    (123, "expected a base64 string"),
    ({"path": "/etc/passwd"}, "expected a base64 string"),
]


@pytest.mark.parametrize(("payload", "message"), GARBAGE)
@pytest.mark.parametrize("route", ["detect", "encode"])
def test_base64_garbage_is_a_400_naming_the_image(client, route, payload, message):
    response = client.post(f"/hyperlora/v1/{route}", json={"images": [FACE, payload]})
    expect_error(response, 400, "ImageError", "image 2", message)


def test_an_undecodable_photo_is_skipped_by_encode_and_refused_by_detect(client):
    payload = base64.b64encode(b"just some bytes, no image").decode()
    body = client.post("/hyperlora/v1/encode", json={"images": [FACE, payload]}).json()
    assert body["photos_used"] == 1 and body["photos"][1]["used"] is False
    assert body["warnings"] == [f"image 2: {body['photos'][1]['reason']}"]
    assert "not a recognised image format" in body["warnings"][0]
    response = client.post("/hyperlora/v1/detect", json={"images": [FACE, payload]})
    body = expect_error(response, 400, "ImageError", "image 2", "not a recognised image format")
    assert body["field"] == "images"


def test_a_server_file_path_is_never_read(client, tmp_path):
    on_server = tmp_path / "server_photo.png"
    face_photo().save(on_server)
    for route in ("detect", "encode"):
        response = client.post(f"/hyperlora/v1/{route}", json={"images": [str(on_server)]})
        expect_error(response, 400, "ImageError", "image 1")


def test_size_limits(host):
    limits = api.Limits(max_body_bytes=200_000, max_images=2, max_image_bytes=10_000)
    client = make_client(limits=limits)
    big = base64.b64encode(b"\x89PNG" + b"\x00" * 20_000).decode()
    response = client.post("/hyperlora/v1/detect", json={"images": [FACE, big]})
    expect_error(response, 413, "ImageTooLargeError", "image 2", "larger than")
    response = client.post("/hyperlora/v1/encode", json={"images": [FACE] * 3})
    expect_error(response, 422, "ApiError", "3 images", "at most 2")
    huge = {"images": ["A" * 300_000]}
    expect_error(client.post("/hyperlora/v1/detect", json=huge), 413, "ApiError", "larger than")
    # A body without Content-Length (chunked) is measured as it streams in.
    chunks = (json.dumps(huge)[i : i + 50_000].encode() for i in range(0, 300_100, 50_000))
    response = client.post("/hyperlora/v1/detect", content=chunks)
    expect_error(response, 413, "ApiError", "larger than")


def test_detect_crop_size_is_checked(client):
    for bad in (0, 8, 5000, "big", True):
        response = client.post("/hyperlora/v1/detect", json={"images": [FACE], "crop_size": bad})
        assert expect_error(response, 422, "ApiError", "crop_size")["field"] == "crop_size"


# -------------------------------------------------------------------------------- encode
def test_encode_returns_the_digest_and_reuses_the_cache(client):
    first = client.post("/hyperlora/v1/encode", json={"images": [OTHER_FACE], "model": "tiny"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert len(body["digest"]) == 12 and body["model"] == "tiny" and body["photos_used"] == 1
    assert body["photos"][0]["used"] and body["photos"][0]["faces_found"] == 1
    assert body["saved"] is None and body["lora"] is None
    again = client.post("/hyperlora/v1/encode", json={"images": [OTHER_FACE]}).json()
    assert again["cache_hit"] is True and again["digest"] == body["digest"]  # default model: tiny
    grey = client.post("/hyperlora/v1/encode", json={"images": [OTHER_FACE], "grayscale": True})
    assert grey.json()["digest"] != body["digest"]


def test_encode_saves_and_returns_the_lora_file(client, host):
    request = {"images": [FACE, NO_FACE], "save_as": "alice", "return_lora": True}
    body = client.post("/hyperlora/v1/encode", json=request).json()
    assert body["photos_used"] == 1 and body["photos"][1]["used"] is False
    assert body["warnings"] and "image 2" in body["warnings"][0]
    saved = body["saved"]
    assert saved["name"] == "alice" and saved["photos"] == 1 and saved["model"] == "tiny"
    assert saved["prompt_tag"] == "<lora:alice:0.8>"
    assert saved["options"]["face_choice"] == "largest"
    folder = host.lora_dir / "hyperlora"
    assert (folder / "alice.safetensors").is_file() and (folder / "alice.preview.png").is_file()
    lora = load(base64.b64decode(body["lora"]))
    assert body["lora_filename"] == "alice.safetensors"
    assert lora_digest(lora) == saved["digest"]
    response = client.post("/hyperlora/v1/encode", json={"images": [FACE], "save_as": "alice"})
    expect_error(response, 409, "ApiError", "exists", "overwrite")
    request = {"images": [OTHER_FACE], "save_as": "alice", "overwrite": True}
    assert client.post("/hyperlora/v1/encode", json=request).json()["saved"]["photos"] == 1


def test_encode_errors(client, host):
    url = "/hyperlora/v1/encode"
    expect_error(client.post(url, json={"images": [NO_FACE]}), 422, "NoFaceError", "image 1")
    response = client.post(url, json={"images": [FACE], "model": "huge"})
    expect_error(response, 404, "ModelNotFoundError", "'huge'", "tiny")
    response = client.post(url, json={"images": [FACE], "model": "../tiny"})
    expect_error(response, 400, "InvalidNameError")
    body = expect_error(
        client.post(url, json={"images": [FACE], "face": "sideways"}), 422, "ArgumentError"
    )
    assert body["field"] == "face"
    body = expect_error(
        client.post(url, json={"images": [FACE], "face_index": -1}), 422, "ArgumentError"
    )
    assert body["field"] == "face_index"
    body = expect_error(
        client.post(url, json={"images": [FACE], "overwrite": "yes"}), 422, "ApiError"
    )
    assert body["field"] == "overwrite"
    for name in ("../evil", "a/b", "..", "", "x" * 101, 5):
        response = client.post(url, json={"images": [FACE], "save_as": name})
        expect_error(response, 400, "InvalidNameError")
    assert not any(host.lora_dir.parent.rglob("*.safetensors"))


# ---------------------------------------------------------------------------- identities
def test_list_get_and_delete_identities(client, host):
    assert client.get("/hyperlora/v1/identities").json() == {"identities": []}
    client.post("/hyperlora/v1/encode", json={"images": [FACE], "save_as": "bob"})
    client.post("/hyperlora/v1/encode", json={"images": [OTHER_FACE], "save_as": "Alice"})
    listed = client.get("/hyperlora/v1/identities").json()["identities"]
    assert [i["name"] for i in listed] == ["Alice", "bob"]
    one = client.get("/hyperlora/v1/identities/bob").json()
    assert one["name"] == "bob" and "preview" not in one
    with_preview = client.get("/hyperlora/v1/identities/bob", params={"preview": True}).json()
    assert Image.open(io.BytesIO(base64.b64decode(with_preview["preview"]))).size == (512, 512)
    deleted = client.delete("/hyperlora/v1/identities/bob").json()
    assert deleted["deleted"] == "bob" and "bob.safetensors" in deleted["files"]
    assert not (host.lora_dir / "hyperlora" / "bob.safetensors").exists()
    expect_error(
        client.delete("/hyperlora/v1/identities/bob"), 404, "IdentityNotFoundError", "Alice"
    )
    expect_error(client.get("/hyperlora/v1/identities/bob"), 404, "IdentityNotFoundError")
    assert client.get("/hyperlora/v1/status").json()["identities"] == 1


@pytest.mark.parametrize(
    "name",
    ["..%2F..%2Fsecret", "a%2Fb", "%2E%2E", "%2Fetc%2Fpasswd", "a%5Cb", "x%00y", "semi%3Bcolon"],
)
def test_identity_names_cannot_escape(client, host, name):
    secret = host.lora_dir.parent / "secret.safetensors"
    secret.write_bytes(b"keep me")
    for method in (client.get, client.delete):
        response = method(f"/hyperlora/v1/identities/{name}")
        expect_error(response, 400, "InvalidNameError")
    assert secret.read_bytes() == b"keep me"


def test_registering_twice_adds_the_routes_once(host):
    app = FastAPI()
    api.register_routes(app)
    api.register_routes(app)
    routes = [(r.path, *r.methods) for r in app.router.routes if r.path.startswith(api.PREFIX)]
    assert len(routes) == len(set(routes)) == 11  # 9 + POST /refine, /refine/kit


# ------------------------------------------------- generation requests (alwayson_scripts)
def info(response) -> dict:
    assert response.status_code == 200, response.text
    return json.loads(response.json()["info"])["extra_generation_params"]


@pytest.fixture
def generate(host):
    clients = {}

    def post(body, headers=None, fail_mode=True):
        if fail_mode not in clients:
            clients[fail_mode] = generation_app(host, [host.load_script()], fail_mode=fail_mode)
        return clients[fail_mode].post("/sdapi/v1/txt2img", json=body, headers=headers or {})

    yield post
    host.shared.state.begin()


def test_named_and_positional_args_through_the_api(generate, client):
    named = {"enabled": True, "images": [FACE], "model": "tiny", "weight": 0.5}
    params = info(generate({"prompt": "x", "alwayson_scripts": {"HyperLoRA": {"args": [named]}}}))
    digest = client.post("/hyperlora/v1/encode", json={"images": [FACE]}).json()["digest"]
    assert params["HyperLoRA identity"] == digest and params["HyperLoRA weight"] == "0.5"
    assert "HyperLoRA error" not in params
    positional = [True, [FACE], "tiny", 0.7]
    params = info(generate({"alwayson_scripts": {"hyperlora": {"args": positional}}}))
    assert params["HyperLoRA identity"] == digest and params["HyperLoRA weight"] == "0.7"


def test_failures_are_visible_in_info_by_default(generate):
    args = [{"enabled": True, "images": [NO_FACE], "model": "tiny"}]
    response = generate({"alwayson_scripts": {"HyperLoRA": {"args": args}}})
    params = info(response)
    assert "image 1" in params["HyperLoRA error"]
    assert response.json()["images"]  # the image was still made, without the identity
    bad = [{"enabled": True, "weight": 9}]
    error = info(generate({"alwayson_scripts": {"HyperLoRA": {"args": bad}}}))["HyperLoRA error"]
    assert "'weight'" in error


def test_unknown_alwayson_script_is_the_webuis_422(generate):
    response = generate({"alwayson_scripts": {"HyperLoRRA": {"args": []}}})
    assert response.status_code == 422 and "not found" in response.json()["detail"]


class FailingScript:
    """A minimal AlwaysOn script that reports ``message`` (if set) the documented way."""

    message = "no face found in image 2"
    calls: ClassVar[list[bool]] = []

    @classmethod
    def build(cls, scripts):
        outer = cls

        class Reporter(scripts.Script):
            def title(self):
                return "HyperLoRA"

            def show(self, is_img2img):
                return scripts.AlwaysVisible

            def process(self, p, *args):
                if outer.message:
                    p.extra_generation_params[ERROR_LABEL] = outer.message
                    outer.calls.append(fail_mode.fail_api_request(p, outer.message))

        return Reporter


@pytest.fixture
def failing(host):
    FailingScript.calls = []
    FailingScript.message = "no face found in image 2"
    yield lambda fail_mode=True: generation_app(
        host, [FailingScript.build(host.scripts)], fail_mode=fail_mode
    )
    host.shared.state.begin()


def test_fail_header_turns_an_error_into_a_422(failing):
    client = failing()
    response = client.post("/sdapi/v1/txt2img", json={}, headers={"X-HyperLoRA-On-Error": "fail"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "HyperLoRAError"
    assert body["detail"] == "HyperLoRA error: no face found in image 2"
    assert FailingScript.calls == [True]


def test_without_the_header_the_request_succeeds_with_the_error_in_info(failing):
    client = failing()
    params = info(client.post("/sdapi/v1/txt2img", json={}))
    assert params["HyperLoRA error"] == "no face found in image 2"
    assert FailingScript.calls == [False]


def test_the_setting_makes_fail_the_default_and_the_header_overrides_it(failing, host):
    host.shared.opts.data[API_ON_ERROR] = "fail"
    try:
        client = failing()
        assert client.post("/sdapi/v1/txt2img", json={}).status_code == 422
        host.shared.state.begin()
        response = client.post(
            "/sdapi/v1/txt2img", json={}, headers={"X-HyperLoRA-On-Error": "info"}
        )
        assert response.status_code == 200
    finally:
        host.shared.opts.data.pop(API_ON_ERROR)


def test_fail_mode_without_an_error_returns_the_normal_response(failing):
    FailingScript.message = ""
    client = failing()
    response = client.post("/sdapi/v1/txt2img", json={}, headers={"X-HyperLoRA-On-Error": "fail"})
    assert response.status_code == 200 and len(response.json()["images"]) == 1


def test_without_the_route_wrapper_the_job_still_stops_before_sampling(failing):
    client = failing(fail_mode=False)
    response = client.post("/sdapi/v1/txt2img", json={}, headers={"X-HyperLoRA-On-Error": "fail"})
    # The header alone cannot reach the script here; the setting can: no images, error in info.
    assert response.status_code == 200 and FailingScript.calls == [False]
    import modules.shared

    modules.shared.opts.data[API_ON_ERROR] = "fail"
    try:
        response = client.post("/sdapi/v1/txt2img", json={})
    finally:
        modules.shared.opts.data.pop(API_ON_ERROR)
    assert response.status_code == 200 and response.json()["images"] == []
    assert info(response)["HyperLoRA error"] == "no face found in image 2"


def test_fail_api_request_ignores_ui_jobs(host):
    class P:
        is_api = False

    assert fail_mode.fail_api_request(P(), "boom") is False
    assert host.shared.state.interrupted is False


def test_install_fail_mode_wraps_only_the_generation_routes_once(host):
    from tests.webui.fake_webui.api_app import create_app

    app = create_app(host.scripts.ScriptRunner([]), None)
    assert fail_mode.install_fail_mode(app) == 1
    assert fail_mode.install_fail_mode(app) == 1
    txt2img = next(r for r in app.router.routes if r.path == "/sdapi/v1/txt2img")
    assert txt2img.app._hyperlora_fail_mode and not hasattr(txt2img.app, "__wrapped__")


# ------------------------------------------------------------------------ published schemas
def _schema(operation: dict, status: str = "200") -> str:
    return operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]


def test_openapi_lists_the_request_and_response_models(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for route, model, fields in (
        ("detect", "DetectRequest", m.field_names(m.DetectRequest)),
        ("encode", "EncodeRequest", api.ENCODE_FIELDS),
    ):
        operation = paths[f"/hyperlora/v1/{route}"]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body["title"] == model and list(body["properties"]) == list(fields)
        assert body.get("required", []) == (["images"] if route == "detect" else [])
        assert _schema(operation).endswith("Response")
        assert _schema(operation, "422").endswith("/ErrorBody")
    assert set(paths["/hyperlora/v1/encode"]["post"]["requestBody"]["content"]) == {
        "application/json"
    }
    identity = paths["/hyperlora/v1/identities/{name}"]
    assert _schema(identity["get"]).endswith("/IdentityWithPreview")
    assert [p["name"] for p in identity["get"]["parameters"]] == ["name", "preview", "lora"]
    assert _schema(identity["delete"]).endswith("/DeleteResponse")
    assert _schema(paths["/hyperlora/v1/status"]["get"]).endswith("/StatusResponse")
    assert {"EncodeResponse", "ModelsResponse", "IdentityList", "ErrorBody"} <= set(
        spec["components"]["schemas"]
    )


def test_responses_match_their_published_models(client, host):
    def parsed(model, response):
        assert response.status_code == 200, response.text
        body = response.json()
        instance = model(**body)
        dumped = instance.model_dump() if hasattr(instance, "model_dump") else instance.dict()
        assert set(body) <= set(dumped)
        return body

    parsed(m.StatusResponse, client.get("/hyperlora/v1/status"))
    parsed(m.ModelsResponse, client.get("/hyperlora/v1/models"))
    parsed(m.DetectResponse, client.post("/hyperlora/v1/detect", json={"images": [FACE]}))
    request = {"images": [FACE, NO_FACE], "save_as": "carol", "return_lora": True}
    parsed(m.EncodeResponse, client.post("/hyperlora/v1/encode", json=request))
    parsed(m.IdentityList, client.get("/hyperlora/v1/identities"))
    parsed(m.IdentityWithPreview, client.get("/hyperlora/v1/identities/carol?preview=true"))
    parsed(m.DeleteResponse, client.delete("/hyperlora/v1/identities/carol"))
    error = client.post("/hyperlora/v1/encode", json={"images": []})
    assert m.ErrorBody(**error.json()).field == "images"


# ------------------------------------------------------------------ preload on first use
def _counting_backend(calls: list, fail: bool = False) -> Services:
    def preload() -> None:
        calls.append(1)
        if fail:
            raise RuntimeError("disk on fire")

    return Services(
        roots=lambda: None, pipeline=lambda: None, store=lambda: SimpleNamespace(list=list),
        face_analyzer=lambda: None, preload=preload,
    )  # fmt: skip


def test_the_first_api_request_starts_the_preload_once(capsys):
    calls: list = []
    client = make_client(_counting_backend(calls, fail=True))
    assert client.get("/hyperlora/v1/identities").json() == {"identities": []}  # answered
    client.get("/hyperlora/v1/identities")
    assert calls == [1]
    assert "disk on fire" in capsys.readouterr().err  # in the console, never lost


def test_a_generation_request_naming_hyperlora_starts_the_preload():
    calls: list = []
    app = FastAPI()

    @app.post("/sdapi/v1/txt2img")
    async def txt2img(payload: dict) -> dict:
        return {"images": []}

    api.register_routes(app, _counting_backend(calls))
    client = TestClient(app)
    client.post("/sdapi/v1/txt2img", json={"prompt": "a cat"})
    assert calls == []
    body = {"prompt": "x", "alwayson_scripts": {"HyperLoRA": {"args": [{"enabled": True}]}}}
    assert client.post("/sdapi/v1/txt2img", json=body).status_code == 200
    assert calls == [1]


def test_the_webui_preload_loads_the_encoders_in_the_background(host, tmp_path_factory):
    from hyperlora_ext.webui import host as webui_host

    models, _ = tiny_models(tmp_path_factory)
    fresh = identity.IdentityPipeline(ModelRoots.from_models_dir(models))
    services._pipeline, services._pipeline_key = fresh, webui_host.pipeline_config()
    webui_host.preload("not installed")  # falls back to the installed model
    fresh._preloading.join(timeout=120)
    models = fresh.models
    assert models.engine is not None and models.clip is not None and models.faces.loaded
