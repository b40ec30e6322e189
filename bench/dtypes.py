"""Is the automatic CPU dtype the fastest? predict_lora and CLIP encode in fp32, bf16 and fp16.

    .venv/bin/python bench/dtypes.py --models-dir /tmp/bench14/models [--repeats 5]

``--models-dir`` is the full-size random tree of bench/identity.py. CLIP is held in all three
dtypes at once and timed round by round in turn. The HyperLoRA network is timed the way it was
when its bases were copied per dtype (three copies needed 12.5 GB): each other dtype in turn with
the automatic one, compared with it in the same phase. Medians; the last column is each dtype's
time over the fastest one's (1.00 = fastest). "auto" is the rule of engine/cpu_dtype.py.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from hyperlora_ext.encoders.clip_encoder import load_clip_vision  # noqa: E402
from hyperlora_ext.engine import cpu_dtype  # noqa: E402
from hyperlora_ext.engine.model import load_hyperlora  # noqa: E402
from hyperlora_ext.models import ModelRoots  # noqa: E402

MODEL = "sdxl_hyper_id_lora_v1_fidelity"
NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def interleaved(fns: dict[torch.dtype, Callable[[], object]], repeats: int) -> dict:
    for fn in fns.values():  # warm-up
        fn()
    times: dict[torch.dtype, list[float]] = {dtype: [] for dtype in fns}
    for _ in range(repeats):
        for dtype, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[dtype].append(time.perf_counter() - start)
    return {dtype: statistics.median(values) for dtype, values in times.items()}


def clip_times(roots: ModelRoots, repeats: int) -> dict:
    pixels = torch.randn(1, 3, 224, 224)
    clips = {d: load_clip_vision(roots.clip_vit / "clip_vit_large_14", dtype=d) for d in NAMES}
    with torch.no_grad():
        return interleaved({d: lambda c=c: c.encode(pixels) for d, c in clips.items()}, repeats)


def predict_times(roots: ModelRoots, auto: torch.dtype, repeats: int) -> dict:
    """Each dtype against ``auto`` in its own phase; the result is scaled to ``auto``'s time."""
    ids = torch.nn.functional.normalize(torch.randn(1, 512), dim=-1)
    hidden = torch.randn(1, 257, 1024)
    folder = roots.hyper_lora / MODEL
    engines = {auto: load_hyperlora(folder, dtype=auto)}
    result = {}
    for other in [d for d in NAMES if d != auto]:
        engines[other] = load_hyperlora(folder, dtype=other)
        runs = {d: lambda e=e: e.predict_lora(ids, hidden) for d, e in engines.items()}
        phase = interleaved(runs, repeats)
        result.setdefault(auto, []).append(phase[auto])
        result[other] = phase[other] / phase[auto]  # relative to auto in the same phase
        del engines[other], phase, runs
        gc.collect()
    base = statistics.median(result[auto])
    return {d: base if d == auto else base * r for d, r in result.items()}


def table(title: str, times: dict, auto: torch.dtype) -> None:
    fastest = min(times.values())
    print(f"\n{title}\n\n| dtype | seconds | vs fastest |\n|---|---|---|")
    for dtype in NAMES:
        mark = " (auto)" if dtype == auto else ""
        print(f"| {NAMES[dtype]}{mark} | {times[dtype]:.3f} | {times[dtype] / fastest:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    roots = ModelRoots.from_models_dir(args.models_dir)
    auto = cpu_dtype.cpu_dtype()
    clip = clip_times(roots, args.repeats)
    gc.collect()
    predict = predict_times(roots, auto, args.repeats)
    print(describe())
    print(f"CPU features: {cpu_dtype.CpuFeatures.detect()}; rule: {cpu_dtype.cpu_choice()}")
    table("CLIP ViT-L/14 encode, 1 image", clip, auto)
    table("predict_lora, 1 photo (each dtype timed against auto in its own phase)", predict, auto)


if __name__ == "__main__":
    main()
