"""The accordion in a real browser: gradio 3.41 Blocks served locally, headless Chromium.

Needs node, Debian's chromium and playwright-core (see README "Tests"); skipped otherwise:
    apt-get install -y chromium nodejs npm
    npm install --prefix test-artifacts/node playwright-core
The screenshot is saved as test-artifacts/hyperlora_accordion.png.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from hyperlora_ext.args import HyperLoRAArgs
from hyperlora_ext.webui.ui import Services, build_ui

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
NODE_MODULES = Path(os.environ.get("PLAYWRIGHT_NODE_MODULES", ARTIFACTS / "node" / "node_modules"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (apt-get install -y nodejs npm)"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set CHROMIUM)"
    if not (NODE_MODULES / "playwright-core").is_dir():
        return (
            f"playwright-core not in {NODE_MODULES} "
            "(npm install --prefix test-artifacts/node playwright-core)"
        )
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accordion_in_headless_chromium(tmp_path):
    reason = _missing()
    if reason:
        print(f"SKIP browser test: {reason}")
        pytest.skip(reason)
    gr = pytest.importorskip("gradio")
    previews: list[HyperLoRAArgs] = []

    def preview(args: HyperLoRAArgs):
        previews.append(args)
        image = Image.open(args.images[0]).convert("RGB").resize((128, 128))
        return [(image, "photo 1: 1 face")], "1 photo(s) encoded in 0.1 s"

    services = Services(lambda: ["fidelity", "edit"], lambda: [], preview, lambda a, n, o: "saved")
    with gr.Blocks() as demo:
        panel = build_ui(lambda item: f"hl_{item}", services)
    photo = tmp_path / "face.png"
    Image.new("RGB", (96, 96), (200, 150, 120)).save(photo)
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "hyperlora_accordion.png"
    port = _free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    try:
        run = subprocess.run(
            ["node", str(Path(__file__).with_name("browser_accordion.js")),
             f"http://127.0.0.1:{port}/", str(photo), str(screenshot)],
            env={**os.environ, "NODE_PATH": str(NODE_MODULES), "CHROMIUM": CHROMIUM},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        demo.close()
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert "encoded" in result["status"]
    assert float(result["weight"]) == pytest.approx(1.2)
    assert previews and previews[-1].model == "fidelity" and len(previews[-1].images) == 1
    assert screenshot.stat().st_size > 10_000
    assert len(panel.inputs) == len(HyperLoRAArgs.field_names())
