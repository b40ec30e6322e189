"""Opt-in: HyperLoRA in a real running WebUI (A1111 or Forge, started with --api).

    SD_WEBUI_URL=http://127.0.0.1:7860 SD_WEBUI_FACE=face.jpg pytest tests/webui -m integration

The WebUI needs an SDXL base checkpoint loaded, this extension installed and its models present.
It posts txt2img with and without HyperLoRA (``alwayson_scripts``) and checks that the identity
changes the image and that the next plain image is pixel-identical to the first one.
"""

from __future__ import annotations

import base64
import io
import json
import os
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageChops

pytestmark = pytest.mark.integration
URL = os.environ.get("SD_WEBUI_URL", "").rstrip("/")
FACE = os.environ.get("SD_WEBUI_FACE", "")


def _skip_reason() -> str | None:
    if not URL:
        return "SD_WEBUI_URL is not set (point it at a WebUI started with --api)"
    if not FACE or not Path(FACE).is_file():
        return "SD_WEBUI_FACE is not set to a photo of a face"
    return None


def call(path: str, payload: dict | None = None) -> dict:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(
        URL + path, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=900) as response:
        return json.loads(response.read())


def txt2img(hyperlora: dict | None) -> tuple[Image.Image, dict]:
    payload = {
        "prompt": "portrait photo of a person, studio light",
        "negative_prompt": "blurry",
        "seed": 1234,
        "steps": int(os.environ.get("SD_WEBUI_STEPS", "8")),
        "width": int(os.environ.get("SD_WEBUI_SIZE", "512")),
        "height": int(os.environ.get("SD_WEBUI_SIZE", "512")),
        "sampler_name": "Euler",
    }
    if hyperlora is not None:
        payload["alwayson_scripts"] = {"HyperLoRA": {"args": [hyperlora]}}
    result = call("/sdapi/v1/txt2img", payload)
    image = Image.open(io.BytesIO(base64.b64decode(result["images"][0]))).convert("RGB")
    return image, json.loads(result["info"])


def test_identity_changes_the_image_and_leaves_no_trace():
    reason = _skip_reason()
    if reason:
        print(f"SKIP integration test: {reason}")
        pytest.skip(reason)
    assert "hyperlora" in call("/sdapi/v1/scripts")["txt2img"]
    face = base64.b64encode(Path(FACE).read_bytes()).decode()

    plain, _ = txt2img(None)
    identity, info = txt2img({"enabled": True, "images": [face], "weight": 0.8})
    params = info.get("extra_generation_params", {})
    assert "HyperLoRA error" not in params, params["HyperLoRA error"]
    assert params.get("HyperLoRA identity")
    assert ImageChops.difference(plain, identity).getbbox() is not None
    again, _ = txt2img(None)
    assert ImageChops.difference(plain, again).getbbox() is None
