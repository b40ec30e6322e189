"""Talking to a real running WebUI (a helper module for the opt-in integration tests, not a test
module): its address and the test face from the environment, JSON calls, and image comparison."""

from __future__ import annotations

import base64
import io
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops

URL = os.environ.get("SD_WEBUI_URL", "").rstrip("/")
FACE = os.environ.get("SD_WEBUI_FACE", "")
ERROR = "HyperLoRA error"


def skip_reason() -> str | None:
    """Why the integration tests cannot run here, or None."""
    if not URL:
        return "SD_WEBUI_URL is not set (point it at a WebUI started with --api)"
    if not FACE or not Path(FACE).is_file():
        return "SD_WEBUI_FACE is not set to a photo of a face"
    return None


@dataclass
class Response:
    status: int
    body: Any

    @property
    def info(self) -> dict[str, Any]:
        assert self.status == 200, f"{self.status}: {self.body}"
        return json.loads(self.body["info"])

    @property
    def params(self) -> dict[str, Any]:
        return self.info.get("extra_generation_params") or {}

    @property
    def infotext(self) -> str:
        return (self.info.get("infotexts") or [""])[0]

    def image(self, index: int = 0) -> Image.Image:
        data = base64.b64decode(self.body["images"][index])
        return Image.open(io.BytesIO(data)).convert("RGB")

    @property
    def detail(self) -> str:
        return str(self.body.get("detail", self.body)) if isinstance(self.body, dict) else ""


def call(
    path: str,
    payload: Any = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
) -> Response:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(
        URL + path,
        data=data,
        headers={"Content-Type": "application/json", **(headers or {})},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=900) as response:
            return Response(response.status, json.loads(response.read()))
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        return Response(error.code, body)


@cache
def face() -> str:
    return base64.b64encode(Path(FACE).read_bytes()).decode()


def same(a: Image.Image, b: Image.Image) -> bool:
    return ImageChops.difference(a, b).getbbox() is None
