"""Time the face pipeline per photo on CPU: detection + landmarks, crops, embedding, CLIP pixels.

Uses the fake antelopev2 pack from tests/ (tiny models), so it mostly measures our own overhead
(decoding, insightface's pre/post-processing, Pillow crops and blur), not real network inference.
Pass ``--models <insightface root>`` to time a real antelopev2 pack instead.

    .venv/bin/python bench/faces.py [--models DIR] [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hyperlora_ext.encoders.clip_processor import clip_pixel_values
from hyperlora_ext.encoders.faces import FaceAnalyzer, choose_face
from hyperlora_ext.encoders.features import extract_identity_features
from hyperlora_ext.encoders.images import load_image
from hyperlora_ext.encoders.preprocess import id_crops


def photo(w: int, h: int) -> bytes:
    """A JPEG with a light ellipse (the fake detector's face) on a dark background."""
    image = Image.new("RGB", (w, h), (30, 30, 30))
    ImageDraw.Draw(image).ellipse((w * 0.33, h * 0.2, w * 0.67, h * 0.8), fill=(230, 220, 210))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def best_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1000, statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="insightface root with models/antelopev2 (default: fake)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.models:
        root = args.models
    else:
        from tests import fake_antelopev2

        root = tempfile.mkdtemp()
        fake_antelopev2.build(Path(root) / "models" / "antelopev2")
    analyzer = FaceAnalyzer(root, providers=["CPUExecutionProvider"])
    t = time.perf_counter()
    analyzer.detect(Image.new("RGB", (64, 64)))
    print(f"model load + first call: {(time.perf_counter() - t) * 1000:.0f} ms ({root})")

    rows = []
    for w, h in ((640, 480), (1600, 1200), (4000, 3000)):
        data = photo(w, h)
        image = load_image(data, "bench")
        face = analyzer.detect(image)[choose_face(analyzer.detect(image))]
        clip_face, arc = id_crops(image, face.landmarks_106)
        steps = {
            "decode": lambda d=data: load_image(d, "bench"),
            "detect+landmarks": lambda i=image: analyzer.detect(i),
            "crops (bg removal)": lambda i=image, f=face: id_crops(i, f.landmarks_106),
            "embedding": lambda a=arc: analyzer.embedding(a),
            "clip pixels": lambda c=clip_face: clip_pixel_values(c),
            "whole photo": lambda d=data: extract_identity_features([d], analyzer),
        }
        for name, fn in steps.items():
            rows.append((f"{w}x{h}", name, *best_ms(fn, args.repeat)))

    print(f"\n| photo | step | best ms | median ms |  (repeat={args.repeat}, CPU)")
    print("|---|---|---:|---:|")
    for size, name, best, median in rows:
        print(f"| {size} | {name} | {best:.1f} | {median:.1f} |")


if __name__ == "__main__":
    main()
