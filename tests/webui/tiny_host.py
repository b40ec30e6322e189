"""The tiny host of the WebUI tests (a helper module, not a test module): the tiny models and a
warm pipeline over them, built once per session; base64 photos; the API client and its error
shape; a generation app with the script."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from hyperlora_ext import identity
from hyperlora_ext.models import ModelRoots
from hyperlora_ext.webui import api
from tests import fake_antelopev2
from tests.encoders._photos import face_photo
from tests.factories import write_tiny_clip, write_tiny_hyperlora

TINY_WIDTHS = {"w640": 20, "w1280": 40, "ctx": 64}  # the widths of write_tiny_hyperlora's layers


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


FACE = png_b64(face_photo((320, 240), ((100, 40, 220, 200),)))
OTHER_FACE = png_b64(face_photo((320, 240), ((60, 30, 200, 220),)))
NO_FACE = png_b64(Image.new("RGB", (64, 64), (20, 20, 20)))


# Built once per test session and shared with test_xyz.py.
_SESSION: dict = {}


def tiny_models(factory) -> tuple:
    """(models folder with the tiny models, a warm IdentityPipeline over it), built once."""
    if not _SESSION:
        models = factory.mktemp("models")
        roots = ModelRoots.from_models_dir(models)
        write_tiny_hyperlora(roots.hyper_lora / "tiny")
        write_tiny_clip(roots.clip_vit / "clip_vit_large_14")
        fake_antelopev2.build(roots.antelopev2)
        _SESSION.update(models=models, pipeline=identity.IdentityPipeline(roots))
    return _SESSION["models"], _SESSION["pipeline"]


def point_webui_at(models: Path, pipeline, monkeypatch) -> None:
    """The double's models folder -> the tiny models; the process-wide pipeline -> the warm one."""
    import modules.paths

    from hyperlora_ext.webui import host, services

    monkeypatch.setattr(modules.paths, "models_path", str(models))
    monkeypatch.setattr(services, "_pipeline", pipeline)
    monkeypatch.setattr(services, "_pipeline_key", host.pipeline_config())


def make_client(backend=None, limits=None) -> TestClient:
    app = FastAPI()
    api.register_routes(app, backend, limits)
    return TestClient(app)


def expect_error(response, status, kind, *fragments):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "field"}, body  # the one stable shape
    assert body["error"] == kind
    for fragment in fragments:
        assert fragment in body["detail"], body["detail"]
    return body


def generation_app(host, script_classes, *, fail_mode=True):
    from tests.webui.fake_webui.api_app import create_app

    model = host.load_model("sdxl", **TINY_WIDTHS)
    runner = host.scripts.ScriptRunner(script_classes)
    defaults = {"hyperlora": [False, None, "", 0.8, True, "largest", 0, True, False, ""]}
    app = create_app(runner, model, defaults)
    if fail_mode:
        api.register_routes(app)
    return TestClient(app)
