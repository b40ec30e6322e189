"""X/Y/Z axes on an API-only server (``--nowebui``) and with the UI, through the double's API.

An API-only server builds the UI (and so the X/Y/Z script's axis list) while the API is created,
before the ``on_before_ui`` callbacks run; the axes must already be there, and be listed by
``/sdapi/v1/script-info`` so an API client can build a HyperLoRA grid.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from hyperlora_ext.identity_value import Identity
from hyperlora_ext.lora_format import lora_digest
from hyperlora_ext.webui import host
from tests.webui.fake_webui import EXTENSION_ROOT
from tests.webui.fake_webui.api_app import start
from tests.webui.loras import make_lora

pytest.importorskip("gradio")

XYZ = Path(__file__).parent / "fake_webui" / "xyz_grid.py"
HYPERLORA = EXTENSION_ROOT / "scripts" / "hyperlora.py"
AXES = ("Weight", "Model", "Identity", "Slider strength", "Enabled")
LABELS = [f"[HyperLoRA] {name}" for name in AXES]
LATE_EXTENSION = """
import os
from modules import script_callbacks, scripts


def register():
    for data in scripts.scripts_data:
        if os.path.basename(data.path) == "xyz_grid.py":
            data.module.axis_options.append(
                data.module.AxisOption("[Late] Axis", str, lambda p, x, xs: None)
            )


script_callbacks.on_before_ui(register)
"""


def x_types(client) -> list[str]:
    info = client.get("/sdapi/v1/script-info").json()
    xyz = next(entry for entry in info if entry["name"] == "x/y/z plot")
    return next(arg for arg in xyz["args"] if arg["label"] == "X type")["choices"]


@pytest.fixture
def server(webui, tmp_path, monkeypatch):
    model = webui.load_model()
    lora = make_lora(model)
    made = Identity(lora=lora, digest=lora_digest(lora), model="tiny", photos=1)
    stub = SimpleNamespace(predict=lambda *a, **k: made)  # the pipeline: one identity for all
    monkeypatch.setattr(host, "pipeline", lambda: stub)
    late = tmp_path / "late" / "scripts" / "late.py"
    late.parent.mkdir(parents=True)
    late.write_text(LATE_EXTENSION)

    def run(nowebui: bool):
        app, _ = start([XYZ, HYPERLORA, late], model, nowebui=nowebui)
        return TestClient(app)

    yield run
    webui.shared.state.begin()


@pytest.mark.parametrize("nowebui", [True, False])
def test_the_axes_are_listed_by_script_info(server, nowebui):
    choices = x_types(server(nowebui))
    assert [label for label in choices if label.startswith("[HyperLoRA]")] == LABELS
    # The double's order is the real one: an axis added only in on_before_ui is missing there.
    assert ("[Late] Axis" in choices) is (not nowebui)


def test_an_api_client_runs_a_weight_grid_on_an_api_only_server(server):
    client = server(True)
    weight_axis = x_types(client).index("[HyperLoRA] Weight")
    request = {
        "prompt": "portrait",
        "script_name": "X/Y/Z plot",
        "script_args": [weight_axis, "0.3, 0.6", None],
        "alwayson_scripts": {
            "HyperLoRA": {"args": [{"enabled": True, "images": ["cGhvdG8="], "model": "m"}]}
        },
    }
    response = client.post("/sdapi/v1/txt2img", json=request)
    assert response.status_code == 200, response.text
    infotexts = json.loads(response.json()["info"])["infotexts"]
    assert len(infotexts) == 2
    assert "HyperLoRA weight: 0.3" in infotexts[0] and "HyperLoRA weight: 0.6" in infotexts[1]
    assert all("HyperLoRA error" not in text for text in infotexts)
