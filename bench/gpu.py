"""GPU check: the CUDA tests, then the GPU rows of the benchmarks, as one table.

    .venv/bin/python bench/gpu.py [--models-dir DIR] [--repeats 5] [--skip-tests]

Rows: predict_lora and CLIP ViT-L/14 encode in fp16 and bf16 (median of --repeats, after a
warm-up, synchronised); the identity pipeline on the GPU (first call with loading, warm call with
a new photo, cached call); the VRAM HyperLoRA holds between jobs (allocated and reserved by torch
after a job, default settings: encoders back on the CPU); applying and restoring a rank-8 LoRA on
the 560 SDXL attention Linears in fp16 (merge ``W += up @ down * scale``, restore from a backup).
``--models-dir`` is the full-size random tree of bench/identity.py (written there if missing, about
4 GB). Without CUDA it says so and exits with 0. Not part of CI.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "sdxl_hyper_id_lora_v1_fidelity"
Row = tuple[str, str, str]  # (what, value, note)


def synced(fn: Callable[[], object]) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def median_time(fn: Callable[[], object], repeats: int) -> float:
    synced(fn)  # warm-up: kernel selection, caches
    return statistics.median(synced(fn) for _ in range(repeats))


def cuda_tests() -> list[Row]:
    command = [sys.executable, "-m", "pytest", "tests", "-q", "-k", "cuda or gpu", "-rs"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    summary = (result.stdout.strip().splitlines() or ["no output"])[-1]
    return [("CUDA tests (pytest -k 'cuda or gpu')", "passed" if result.returncode == 0 else
             "FAILED", summary)]  # fmt: skip


def model_rows(roots, repeats: int) -> list[Row]:
    from hyperlora_ext.encoders.clip_encoder import load_clip_vision
    from hyperlora_ext.engine.model import load_hyperlora

    rows: list[Row] = []
    ids = torch.nn.functional.normalize(torch.randn(1, 512), dim=-1)
    pixels = torch.randn(1, 3, 224, 224)
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        engine = load_hyperlora(roots.hyper_lora / MODEL, device="cuda", dtype=dtype)
        clip = load_clip_vision(roots.clip_vit / "clip_vit_large_14", device="cuda", dtype=dtype)
        hidden = clip.encode(pixels)
        seconds = median_time(lambda e=engine, h=hidden: e.predict_lora(ids, h), repeats)
        rows.append((f"predict_lora, 1 photo, {name}", f"{seconds * 1e3:.1f} ms", ""))
        seconds = median_time(lambda c=clip: c.encode(pixels), repeats)
        rows.append((f"CLIP ViT-L/14 encode, 1 image, {name}", f"{seconds * 1e3:.1f} ms", ""))
        del engine, clip, hidden
        torch.cuda.empty_cache()
    return rows


def pipeline_rows(roots) -> list[Row]:
    from bench.identity import photo
    from hyperlora_ext.identity import IdentityOptions, IdentityPipeline

    pipeline = IdentityPipeline(roots, device="cuda")
    options = IdentityOptions(MODEL)
    rows: list[Row] = []
    for label, image in (("first (loads)", photo(0)), ("warm, new photo", photo(40)),
                         ("cached", photo(40))):  # fmt: skip
        start = time.perf_counter()
        result = pipeline.predict([image], options)
        seconds = time.perf_counter() - start
        rows.append(
            (f"identity on the GPU, {label}", f"{seconds:.3f} s", f"hit={result.cache_hit}")
        )
    torch.cuda.synchronize()
    allocated = torch.cuda.memory_allocated() / 2**20
    reserved = torch.cuda.memory_reserved() / 2**20
    rows.append(("VRAM held between jobs (default settings)", f"{allocated:.0f} MB allocated",
                 f"{reserved:.0f} MB reserved by torch's cache"))  # fmt: skip
    pipeline.unload()
    return rows


def apply_rows(repeats: int) -> list[Row]:
    from hyperlora_ext.lora_format import sdxl_attention_modules

    torch.manual_seed(0)
    weights, deltas = [], []
    for spec in sdxl_attention_modules().values():
        width, kv_in = spec["hidden_size"], spec["cross_attention_dim"] or spec["hidden_size"]
        for width_in in (width, kv_in, kv_in, width):
            weight = torch.randn(width, width_in, device="cuda", dtype=torch.float16)
            up = torch.randn(width, 8, device="cuda", dtype=torch.float16)
            down = torch.randn(8, width_in, device="cuda", dtype=torch.float16)
            weights.append(weight)
            deltas.append((up, down))
    backups = [w.clone() for w in weights]

    def apply() -> None:
        for weight, (up, down) in zip(weights, deltas, strict=True):
            weight.add_(up @ down, alpha=0.4)

    def restore() -> None:
        for weight, backup in zip(weights, backups, strict=True):
            weight.copy_(backup)

    apply_s = median_time(apply, repeats)
    restore_s = median_time(restore, repeats)
    note = f"{len(weights)} fp16 Linears, rank 8"
    return [("apply (merge)", f"{apply_s * 1e3:.1f} ms", note),
            ("restore (from backup)", f"{restore_s * 1e3:.1f} ms", note)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-tests", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"No CUDA device (torch {torch.__version__}): nothing to measure on a GPU here.")
        return
    from bench.identity import build_tree
    from hyperlora_ext.models import ModelRoots

    rows: list[Row] = [] if args.skip_tests else cuda_tests()
    with tempfile.TemporaryDirectory() as tmp:
        roots = ModelRoots.from_models_dir(args.models_dir or Path(tmp) / "models")
        build_tree(roots)
        rows += model_rows(roots, args.repeats)
        rows += pipeline_rows(roots)
    rows += apply_rows(args.repeats)
    print(
        f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}\n"
    )
    print("| what | value | note |\n|---|---|---|")
    for what, value, note in rows:
        print(f"| {what} | {value} | {note} |")


if __name__ == "__main__":
    main()
