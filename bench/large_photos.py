"""Huge JPEGs: decoding at a DCT scale (draft mode down to DRAFT_FLOOR) vs in full, then resized.

    .venv/bin/python bench/large_photos.py [--side 8000] [--photos 4]

Times what the identity pipeline does with each photo of a request: ``load_image(..., WORK_SIDE)``
twice (the cache digest, then the face analysis) and the whole ``IdentityPipeline.predict`` on the
tests' tiny models and synthetic antelopev2 pack (so the face detector's own cost is not the real
pack's). "before" sets DRAFT_FLOOR to 1.0, which is what earlier versions asked the decoder for
(a DCT scale only when its result still reaches WORK_SIDE: never for 4097-8191 px). Medians of 3.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from hyperlora_ext.encoders import images  # noqa: E402
from hyperlora_ext.identity import IdentityOptions, IdentityPipeline  # noqa: E402
from hyperlora_ext.memory import peak_rss_mb  # noqa: E402
from hyperlora_ext.models import ModelRoots  # noqa: E402
from tests import fake_antelopev2  # noqa: E402
from tests.encoders._photos import face_photo  # noqa: E402
from tests.factories import write_tiny_clip, write_tiny_hyperlora  # noqa: E402


def jpegs(side: int, count: int) -> list[bytes]:
    result = []
    for index in range(count):
        left = side // 3 + index * side // 50
        photo = face_photo((side, side), ((left, side // 4, left + side // 4, side // 2),))
        buffer = io.BytesIO()
        photo.save(buffer, "JPEG", quality=92)
        result.append(buffer.getvalue())
    return result


def median_seconds(run, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--photos", type=int, default=4)
    args = parser.parse_args()
    photos = jpegs(args.side, args.photos)
    with tempfile.TemporaryDirectory() as folder:
        roots = ModelRoots.from_models_dir(folder)
        write_tiny_hyperlora(roots.hyper_lora / "tiny")
        write_tiny_clip(roots.clip_vit / "clip-vit-large-patch14")
        fake_antelopev2.build(roots.antelopev2)
        pipeline = IdentityPipeline(roots, cache_entries=0)
        pipeline.predict([face_photo()], IdentityOptions("tiny"))  # imports and loading
        rows, now = [], images.DRAFT_FLOOR
        for name, floor in (("before (floor 1.0)", 1.0), (f"now (floor {now})", now)):
            images.DRAFT_FLOOR = floor
            side = max(images.load_image(photos[0], "x", images.WORK_SIDE).size)

            def decode() -> None:
                for data in photos:
                    images.load_image(data, "x", images.WORK_SIDE)

            decoding = 2 * median_seconds(decode)
            request = median_seconds(lambda: pipeline.predict(photos, IdentityOptions("tiny")))
            rows.append((name, side, decoding, request))
    print(describe())
    print(f"\n{args.photos} JPEGs of {args.side}x{args.side} (quality 92), one request\n")
    print("| decoding | decoded side px | 2 decodes per photo, s | predict (tiny models), s |")
    print("|---|---|---|---|")
    for name, side, decoding, request in rows:
        print(f"| {name} | {side} | {decoding:.2f} | {request:.2f} |")
    print(f"\npeak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
