"""The accordion in a real browser: gradio Blocks (3.41 or 4.x) served locally, headless Chromium.

Needs node, Debian's chromium and playwright-core (see README "Tests"); skipped otherwise:
    apt-get install -y chromium nodejs npm
    npm install --prefix test-artifacts/node playwright-core
The screenshots are saved as test-artifacts/accordion.png and test-artifacts/saved-identities.png;
with HYPERLORA_UPDATE_SCREENSHOTS=1 also as docs/images/*.png, the ones the README and docs show
(a plain test run never rewrites tracked files).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
from PIL import Image

from hyperlora_ext.args import HyperLoRAArgs
from hyperlora_ext.facts import HYPERLORA_MODELS
from hyperlora_ext.store import IdentityStore
from hyperlora_ext.webui.ui import build_ui
from hyperlora_ext.webui.ui_actions import Services
from tests.factories import save_identity
from tests.webui.browser_tools import ARTIFACTS, REPO, missing, run_script

DOC_IMAGES = REPO / "docs" / "images"
SCREENSHOTS = ("accordion.png", "saved-identities.png")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accordion_in_headless_chromium(tmp_path):
    reason = missing()
    if reason:
        print(f"SKIP browser test: {reason}")
        pytest.skip(reason)
    gr = pytest.importorskip("gradio")
    previews: list[HyperLoRAArgs] = []

    def preview(args: HyperLoRAArgs):
        from hyperlora_ext.webui import ui

        previews.append(args)
        image = Image.open(args.images[0]).convert("RGB").resize((128, 128))
        return [(image, "1")], ui.ui_hints.with_weight_note("1 photo encoded in 0.1 s", args.weight)

    store = _store(tmp_path)
    services = Services(lambda: list(HYPERLORA_MODELS), store.names, preview,
                        lambda a, n, o: "saved", identity_store=lambda: store)  # fmt: skip
    with gr.Blocks() as demo:
        panel = build_ui(lambda item: f"hl_{item}", services)
    photo = tmp_path / "face.png"
    _portrait((200, 150, 120)).save(photo)
    ARTIFACTS.mkdir(exist_ok=True)
    shots = [ARTIFACTS / name for name in SCREENSHOTS]
    port = _free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    try:
        result = run_script("browser_accordion.js", f"http://127.0.0.1:{port}/", str(photo),
                            *map(str, shots), timeout=120)  # fmt: skip
    finally:
        demo.close()
    assert result["status"].startswith("1 photo encoded")
    assert float(result["weight"]) == pytest.approx(1.2)
    assert "weight 1.2 is far above it" in result["weightStatus"]
    assert result["faceIndexVisible"] is False and result["faceIndexShown"] is True
    assert previews and previews[0].model == HYPERLORA_MODELS[0] and len(previews[0].images) == 1
    assert result["cards"] == 3 and "**" not in result["info"]
    assert "alice · model sdxl_hyper_id_lora_v1_fidelity · 4 photos" in result["info"]
    assert all(10_000 < shot.stat().st_size < 300_000 for shot in shots)
    assert len(panel.inputs) == len(HyperLoRAArgs.field_names())
    if os.environ.get("HYPERLORA_UPDATE_SCREENSHOTS") == "1":
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        for shot in shots:
            shutil.copyfile(shot, DOC_IMAGES / shot.name)


def _portrait(skin: tuple[int, int, int]) -> Image.Image:
    """A drawn head and shoulders (no real person's photo in the repository)."""
    from PIL import ImageDraw

    image = Image.new("RGB", (256, 256), (90, 110, 140))
    draw = ImageDraw.Draw(image)
    draw.ellipse((48, 190, 208, 330), fill=(40, 50, 70))  # shoulders
    draw.ellipse((78, 50, 178, 180), fill=skin)  # face
    draw.ellipse((72, 36, 184, 100), fill=(60, 40, 30))  # hair
    for x in (108, 148):
        draw.ellipse((x - 7, 108, x + 7, 118), fill=(30, 30, 30))  # eyes
    draw.arc((108, 135, 148, 160), 20, 160, fill=(120, 50, 50), width=3)  # mouth
    return image


def _store(tmp_path: Path) -> IdentityStore:
    """Three saved identities with drawn previews, as the gallery shows them."""
    store = IdentityStore(tmp_path / "Lora")
    people = (
        ("alice", (225, 180, 150), 4),
        ("bob", (170, 120, 90), 2),
        ("chen", (240, 200, 170), 1),
    )
    for seed, (name, skin, photos) in enumerate(people):
        save_identity(store, name, seed=seed, photos=photos, model=HYPERLORA_MODELS[0],
                      preview=_portrait(skin).resize((512, 512)),
                      reference_embedding=[1.0] + [0.0] * 511)  # fmt: skip
    return store
