"""Identity pipeline cost: first call (loads everything) vs warm call vs cached call, on CPU.

Full-size random weights in the released layouts: HyperLoRA (140 SDXL modules, fp16 on disk,
about 3 GB), CLIP ViT-L/14 (random, transformers layout) and the synthetic antelopev2 pack of the
tests (tiny, so face analysis is not representative of the real 400 MB pack). Prints a table.

    .venv/bin/python bench/identity.py [--models-dir DIR] [--dtype bf16|fp32]

The model tree is written to a temporary folder unless --models-dir points at one built before.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from hyperlora_ext.encoders.clip_encoder import VIT_L14  # noqa: E402
from hyperlora_ext.identity import IdentityOptions, IdentityPipeline  # noqa: E402
from hyperlora_ext.memory import peak_rss_mb  # noqa: E402
from hyperlora_ext.models import ModelRoots  # noqa: E402

MODEL = "sdxl_hyper_id_lora_v1_fidelity"


def build_tree(roots: ModelRoots) -> None:
    """Write whatever part of the full-size model tree is missing."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from tests import fake_antelopev2

    predict = _load_bench_module("predict")
    if not (roots.hyper_lora / MODEL / "resampler.safetensors").exists():
        print("writing the full-size HyperLoRA model ...", flush=True)
        predict.write_full_model(roots.hyper_lora / MODEL)
    clip_dir = roots.clip_vit / "clip_vit_large_14"
    if not (clip_dir / "model.safetensors").exists():
        print("writing a random CLIP ViT-L/14 ...", flush=True)
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_L14))
        model.save_pretrained(clip_dir, safe_serialization=True)
        del model
    if not roots.antelopev2.exists():
        fake_antelopev2.build(roots.antelopev2)


def _load_bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def photo(shift: int):
    from tests.encoders._photos import face_photo

    return face_photo(faces=((210 + shift, 90, 430 + shift, 390),))


def timed(pipeline: IdentityPipeline, photos, options) -> tuple[float, bool]:
    start = time.perf_counter()
    result = pipeline.predict(photos, options)
    return time.perf_counter() - start, result.cache_hit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path)
    parser.add_argument("--dtype", choices=("bf16", "fp32", "fp16"), default=None)
    parser.add_argument("--repeats", type=int, default=5, help="rounds of warm call vs parts")
    args = parser.parse_args()
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16, None: None}
    dtype = dtype[args.dtype]
    with tempfile.TemporaryDirectory() as tmp:
        roots = ModelRoots.from_models_dir(args.models_dir or Path(tmp) / "models")
        build_tree(roots)
        rss_before = peak_rss_mb()
        pipeline = IdentityPipeline(roots, device="cpu", dtype=dtype)
        options = IdentityOptions(MODEL)
        rows = [
            ("first call (loads models, 1 photo)", *timed(pipeline, [photo(0)], options)),
            ("warm call, new photo", *timed(pipeline, [photo(40)], options)),
            ("warm call, 3 new photos", *timed(pipeline, [photo(s) for s in (5, 15, 25)], options)),
            ("cached call (same photo again)", *timed(pipeline, [photo(40)], options)),
            ("cached call, grid cell (other seed)", *timed(pipeline, [photo(40)], options)),
        ]
        warm = rows[1][1]
        engine_dtype = pipeline.models.engine.dtype
        print(f"\nengine dtype: {engine_dtype}, torch threads: {torch.get_num_threads()}")
        print("| step | seconds | vs warm call | cache hit |\n|---|---|---|---|")
        for label, seconds, hit in rows:
            print(f"| {label} | {seconds:.3f} | {seconds / warm:.4f} | {hit} |")
        print(f"\npeak RSS before the pipeline: {rss_before:.0f} MB (includes writing the tree)")
        print(f"peak RSS after: {peak_rss_mb():.0f} MB")
        warm_vs_parts(pipeline, options, args.repeats)
        held_between_jobs(pipeline)
    print(describe())


def rss_mb() -> dict[str, float]:
    """Resident memory now, anonymous (the process's own) and file-backed (mapped files)
    (Linux only; this is a benchmark)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            lines = [line.split() for line in status if line.startswith(("RssAnon", "RssFile"))]
    except OSError:
        return {}
    return {fields[0].rstrip(":"): int(fields[1]) / 1024 for fields in lines}


def held_between_jobs(pipeline: IdentityPipeline) -> None:
    """What the encoders hold between jobs: their tensors, and the RSS that unloading frees."""
    models = pipeline.models
    mapped = models.engine.mapped_nbytes() / 2**20
    allocated = models.engine.nbytes() / 2**20 - mapped
    clip = sum(t.numel() * t.element_size() for t in models.clip.model.state_dict().values())
    before = rss_mb()
    pipeline.unload()
    gc.collect()
    after = rss_mb()
    print("\n| held between jobs | MB |\n|---|---|")
    print(f"| HyperLoRA tensors allocated ({models.working_dtype()}) | {allocated:.0f} |")
    print(f"| HyperLoRA bases mapped from the file (file cache) | {mapped:.0f} |")
    print(f"| CLIP vision tower tensors | {clip / 2**20:.0f} |")
    for kind in ("RssAnon", "RssFile"):
        if kind in before and kind in after:
            print(f"| {kind} with the encoders loaded | {before[kind]:.0f} |")
            print(f"| {kind} after unloading them | {after[kind]:.0f} |")


def warm_vs_parts(pipeline: IdentityPipeline, options, repeats: int) -> None:
    """A warm 1-photo identity against its two big parts (CLIP encode + predict_lora) timed
    alone on the same photo, interleaved round by round; medians."""
    from hyperlora_ext.encoders.features import extract_identity_features

    rows: dict[str, list[float]] = {"warm identity": [], "CLIP encode": [], "predict_lora": []}
    engine, clip = pipeline.models.engine, pipeline.models.clip
    for round_ in range(repeats):
        image = photo(100 + 7 * round_)  # a new photo every round: never a cache hit
        seconds, hit = timed(pipeline, [image], options)
        assert not hit
        rows["warm identity"].append(seconds)
        features = extract_identity_features([image], pipeline.models.face_analyzer())
        with torch.no_grad():
            start = time.perf_counter()
            hidden = clip.encode(features.pixel_values)
            rows["CLIP encode"].append(time.perf_counter() - start)
            start = time.perf_counter()
            engine.predict_lora(features.id_embeds, hidden)
            rows["predict_lora"].append(time.perf_counter() - start)
    medians = {label: statistics.median(values) for label, values in rows.items()}
    parts = medians["CLIP encode"] + medians["predict_lora"]
    print(f"\nwarm 1-photo identity vs its parts, {engine.dtype}, medians of {repeats} rounds\n")
    print("| step | seconds | vs parts |\n|---|---|---|")
    for label, value in medians.items():
        print(f"| {label} | {value:.3f} | {value / parts:.2f} |")


if __name__ == "__main__":
    main()
