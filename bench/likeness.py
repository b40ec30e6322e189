"""Cost of the likeness score per generated image (1024x1024 by default), on this machine's CPU.

Two parts, each printed as a table naming the machine:

1. **Our overhead**, through the real code path (``likeness.score_image``: decode, detection at
   up to 4 sizes, 106 landmarks, the reference crop, re-detection on the crop, ArcFace), with the
   synthetic antelopev2 pack of tests/ whose networks cost next to nothing. This is what HyperLoRA
   adds around the networks, for an image with a face and one without.
2. **Network inference at the real sizes**: random-weight ONNX graphs with the real inputs and a
   compute like the real networks (onnxruntime CPU, the provider the WebUI uses without CUDA):
   the detector at 640x640 (~13 GMAC, i.e. SCRFD-10G's 10 GMAC at 640x480 scaled by area), the
   106-landmark net at 192x192 (~0.2 GMAC), and an iResNet-100 at 112x112 (glintr100's layout,
   ~12 GMAC). One image with a face runs the detector twice (image, then the ArcFace crop), the
   landmarks once and ArcFace once. They are stand-ins of the right size, not the real networks.

    .venv/bin/python bench/likeness.py [--size 1024] [--repeat 5] [--no-proxy] [--models DIR]

``--models`` times part 1 with a real antelopev2 pack instead (then it is the whole cost).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hyperlora_ext.encoders.faces import FaceAnalyzer
from hyperlora_ext.likeness import reference_from_photos, score_image

CPU = ["CPUExecutionProvider"]


def machine() -> str:
    import onnxruntime
    import torch

    model = "unknown CPU"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        model = platform.processor() or model
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return (
        f"{model} ({os.cpu_count()} cores; {' '.join(simd) or 'no AVX2'}), "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"Python {platform.python_version()}"
    )


def generated(side: int, face: bool) -> Image.Image:
    """A stand-in for a generated image: dark, with a light face ellipse in the middle."""
    image = Image.new("RGB", (side, side), (30, 30, 30))
    if face:
        box = (side * 0.3, side * 0.2, side * 0.7, side * 0.75)
        ImageDraw.Draw(image).ellipse(box, fill=(230, 220, 210))
    return image


def timed(fn, repeat: int) -> tuple[float, float, float]:
    """(best wall ms, median wall ms, median CPU ms of this process, all its threads)."""
    fn()  # warm-up
    walls, cpus = [], []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return min(walls) * 1000, statistics.median(walls) * 1000, statistics.median(cpus) * 1000


def overhead(side: int, repeat: int, root: str | None) -> list[tuple[str, float, float, float]]:
    if root is None:
        from tests import fake_antelopev2

        root = tempfile.mkdtemp()
        fake_antelopev2.build(Path(root) / "models" / "antelopev2")
    analyzer = FaceAnalyzer(root, providers=CPU)
    reference = reference_from_photos([generated(side, True)], analyzer)
    rows = []
    for face in (True, False):
        image = generated(side, face)
        times = timed(lambda i=image: score_image(i, reference, analyzer, "bench"), repeat)
        rows.append((f"{side}x{side}, {'one face' if face else 'no face'}", *times))
    return rows


# ------------------------------------------------------------------ real-size compute stand-ins
def _conv(g, x: str, cin: int, cout: int, stride: int, rng) -> str:
    from onnx import helper as oh
    from onnx import numpy_helper as onh

    g["n"] += 1
    w = f"w{g['n']}"
    scale = np.sqrt(2.0 / (9 * cin))
    g["inits"].append(
        onh.from_array((rng.standard_normal((cout, cin, 3, 3)) * scale).astype(np.float32), w)
    )
    out = f"c{g['n']}"
    g["nodes"].append(
        oh.make_node(
            "Conv", [x, w], [out], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride] * 2
        )
    )
    relu = f"r{g['n']}"
    g["nodes"].append(oh.make_node("Relu", [out], [relu]))
    return relu


def _model(layers: list[tuple[int, int]], side: int, path: Path, seed: int) -> int:
    """A conv stack of (out channels, stride) layers; returns its multiply-accumulates."""
    import onnx
    from onnx import TensorProto
    from onnx import helper as oh

    rng = np.random.default_rng(seed)
    g = {"nodes": [], "inits": [], "n": 0}
    x, cin, hw, macs = "input", 3, side, 0
    for cout, stride in layers:
        hw //= stride
        macs += hw * hw * cout * cin * 9
        x = _conv(g, x, cin, cout, stride, rng)
        cin = cout
    g["nodes"].append(oh.make_node("GlobalAveragePool", [x], ["output"]))
    graph = oh.make_graph(
        g["nodes"], path.stem,
        [oh.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, side, side])],
        [oh.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        g["inits"],
    )  # fmt: skip
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return macs


def stand_ins(folder: Path) -> dict[str, tuple[Path, int, int, int]]:
    """name -> (file, input side, MACs, runs per scored image)."""
    # detector: strided stem, then 3x3 convs at 1/4 resolution (~13 GMAC at 640x640)
    detector = [(32, 2), (64, 2)] + [(64, 1)] * 13
    # landmarks: a small strided stack at 192x192 (~0.2 GMAC)
    landmarks = [(16, 2), (32, 2), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2)]
    # iResNet-100: stem 64 at 112, then [3, 13, 30, 3] blocks of two convs, 64/128/256/512 wide
    resnet = [(64, 1)]
    for width, blocks in ((64, 3), (128, 13), (256, 30), (512, 3)):
        resnet += [(width, 2), (width, 1)] + [(width, 1), (width, 1)] * (blocks - 1)
    specs = {"detector 640": (detector, 640, 2), "landmarks 192": (landmarks, 192, 1),
             "arcface 112": (resnet, 112, 1)}  # fmt: skip
    out = {}
    for seed, (name, (layers, side, runs)) in enumerate(specs.items()):
        path = folder / f"{name.split()[0]}.onnx"
        out[name] = (path, side, _model(layers, side, path, seed), runs)
    return out


def proxy(repeat: int) -> list[tuple[str, float, float, float, float, int]]:
    import onnxruntime

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, (path, side, macs, runs) in stand_ins(Path(folder)).items():
            session = onnxruntime.InferenceSession(str(path), providers=CPU)
            feed = {"input": np.random.default_rng(0).random((1, 3, side, side), np.float32)}
            times = timed(lambda s=session, f=feed: s.run(None, f), repeat)
            rows.append((name, macs / 1e9, *times, runs))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="side of the generated image")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-proxy", action="store_true", help="skip the real-size stand-ins")
    parser.add_argument(
        "--models", help="insightface root with a real models/antelopev2 (default: synthetic)"
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    pack = "real face models" if args.models else "synthetic face models"
    print(f"\n### score_image ({pack}), {args.repeat} runs after a warm-up\n")
    print("| image | best ms | median ms | CPU ms (median) |\n|---|---:|---:|---:|")
    rows = overhead(args.size, args.repeat, args.models)
    for label, best, median, cpu in rows:
        print(f"| {label} | {best:.1f} | {median:.1f} | {cpu:.1f} |")
    if args.no_proxy:
        return
    print(
        f"\n### Networks at the real sizes (random weights), {args.repeat} runs after a warm-up\n"
    )
    print("| network | GMAC | best ms | median ms | CPU ms (median) | runs per image |")
    print("|---|---:|---:|---:|---:|---:|")
    total = rows[0][1]
    for name, gmac, best, median, cpu, runs in proxy(args.repeat):
        print(f"| {name} | {gmac:.2f} | {best:.1f} | {median:.1f} | {cpu:.1f} | {runs} |")
        total += best * runs
    side = f"{args.size}x{args.size}"
    print(f"\nEstimated wall time for one {side} image with a face: {total:.0f} ms")
    print("(best overhead + best network times x runs)")


if __name__ == "__main__":
    main()
