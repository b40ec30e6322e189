"""Peak memory of one request with 16 photos of 8000 x 8000 pixels (the worst case allowed).

Each scenario runs in a fresh subprocess, because peak RSS only ever grows: the subprocess builds
tiny models (the models are not what is measured), encodes the photos, records its RSS, runs the
scenario and prints its peak RSS. The photos are close-ups (the face fills the frame), the case
whose crops once asked Pillow for 190 MP each.

* ``decode-all``: the baseline. Every photo decoded at full size and held, as the pipeline and the
  routes did before they decoded photos one at a time, reduced to 4096 px.
* ``predict``: ``IdentityPipeline.predict`` on the 16 photos (what /encode and generation run).
* ``detect``: the /detect route's work (``_detect``: decode, detect, crops) on the 16 photos.

    .venv/bin/python bench/memory.py --format jpeg
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCENARIOS = ("decode-all", "predict", "detect")


def photo_bytes(side: int, fmt: str) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (side, side), (30, 30, 30))
    margin = side // 40
    ImageDraw.Draw(image).ellipse((margin, margin, side - margin, side - margin), (230, 220, 210))
    buffer = io.BytesIO()
    image.save(buffer, fmt.upper(), **({"quality": 90} if fmt == "jpeg" else {"compress_level": 1}))
    return buffer.getvalue()


def run_scenario(name: str, count: int, side: int, fmt: str) -> dict:
    from hyperlora_ext.encoders.images import load_image
    from hyperlora_ext.identity import IdentityOptions, IdentityPipeline
    from hyperlora_ext.memory import peak_rss_mb
    from hyperlora_ext.models import ModelRoots
    from hyperlora_ext.webui import api
    from tests import fake_antelopev2
    from tests.factories import write_tiny_clip, write_tiny_hyperlora

    roots = ModelRoots.from_models_dir(Path(tempfile.mkdtemp()) / "models")
    write_tiny_hyperlora(roots.hyper_lora / "tiny")
    write_tiny_clip(roots.clip_vit / "clip_vit_large_14")
    fake_antelopev2.build(roots.antelopev2)
    pipeline = IdentityPipeline(roots)
    photo = photo_bytes(side, fmt)
    photos = [photo] * count
    pipeline.predict([photo_bytes(64, "png")], IdentityOptions("tiny"))  # load every model
    before = peak_rss_mb()
    start = time.perf_counter()
    if name == "decode-all":
        held = [load_image(p, f"image {i + 1}") for i, p in enumerate(photos)]
        assert len(held) == count
    elif name == "predict":
        assert pipeline.predict(photos, IdentityOptions("tiny")).photos == count
    else:
        from hyperlora_ext.webui.services import Services

        backend = Services(roots=lambda: roots, pipeline=lambda: pipeline, store=lambda: None)
        limits = api.Limits(max_image_bytes=len(photo) + 1)
        request = {"images": [__import__("base64").b64encode(photo).decode()] * count}
        found = api._detect(backend, limits, request)["images"]
        assert all(len(entry["faces"]) == 1 for entry in found)
    return {
        "scenario": name,
        "before_mb": before,
        "peak_mb": peak_rss_mb(),
        "seconds": time.perf_counter() - start,
        "photo_mb": len(photo) / 2**20,
    }


def machine() -> str:
    """CPU model (from /proc/cpuinfo where there is one), cores, torch and Pillow versions."""
    import os
    import platform

    import PIL
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, Pillow {PIL.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--format", choices=("jpeg", "png"), default="jpeg")
    parser.add_argument("--scenario", choices=SCENARIOS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(run_scenario(args.scenario, args.count, args.side, args.format)))
        return
    rows = []
    for name in SCENARIOS:
        command = [sys.executable, __file__, "--scenario", name, "--count", str(args.count)]
        command += ["--side", str(args.side), "--format", args.format]
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = rows[0]["peak_mb"] - rows[0]["before_mb"]
    print(machine())
    print(f"{args.count} photos of {args.side}x{args.side} {args.format.upper()} "
          f"({rows[0]['photo_mb']:.1f} MB each)\n")  # fmt: skip
    print("| scenario | RSS before MB | peak RSS MB | added MB | added vs decode-all | s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        added = row["peak_mb"] - row["before_mb"]
        print(
            f"| {row['scenario']} | {row['before_mb']:.0f} | {row['peak_mb']:.0f} | {added:.0f} "
            f"| {added / base:.2f} | {row['seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
