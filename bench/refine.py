"""Refine training speed and memory: seconds per step, peak RAM / VRAM, per micro-batch and size.

The model is the WebUI double's SDXL-shaped UNet (tests/webui/fake_webui/tiny_sdxl.py): all 70
transformer blocks with their 560 attention Linears and the full 560-pair rank-8 identity LoRA,
but no ResNet/conv layers, so a step costs far less than on a real SDXL UNet. ``--widths tiny``
(8/16, context 12) is the CPU smoke size; ``--widths sdxl`` gives the attention Linears SDXL's
real sizes (640/1280, context 2048: the 11.6 M trainable parameters of the real identity), the
size for a GPU run. Each row runs in a fresh subprocess (peak RSS only grows). Latents are 1/8 of
``--resolution``, like SDXL's VAE. ``--inference-tensors`` builds the model under inference mode, as
Forge 2 loads checkpoints: training then runs on a copy of those weights (the cost it measures).

    .venv/bin/python bench/refine.py                                  # CPU, tiny widths
    .venv/bin/python bench/refine.py --device cuda --dtype fp16 --widths sdxl --resolution 768
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WIDTHS = {"tiny": (8, 16, 12), "sdxl": (640, 1280, 2048)}
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def run_row(args: argparse.Namespace, micro: int, checkpointing: bool) -> dict:
    import torch
    from PIL import Image

    from hyperlora_ext.memory import peak_rss_mb
    from hyperlora_ext.refine.crops import FacePhoto, make_crops
    from hyperlora_ext.refine.host import RefineModel
    from hyperlora_ext.refine.trainer import RefineSettings, Trainer, encode_crops
    from tests.webui.fake_webui.tiny_sdxl import TinySDXL
    from tests.webui.loras import make_lora

    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, DTYPES[args.dtype])
    w640, w1280, ctx = WIDTHS[args.widths]
    with torch.inference_mode(args.inference_tensors):
        sd_model = TinySDXL(w640=w640, w1280=w1280, ctx=ctx)
        unet = sd_model.model.diffusion_model.to(device, dtype)
    lora = make_lora(sd_model, style="diffusers", rank=8, alpha=4.0, scale=0.02)
    model = RefineModel(
        unet=unet, denoise=sd_model.apply_model, encode_images=sd_model.encode_first_stage,
        encode_prompts=lambda p: {"crossattn": sd_model.get_learned_conditioning(p)},
        alphas_cumprod=sd_model.alphas_cumprod, prediction="eps", device=device, dtype=dtype,
    )  # fmt: skip
    photo = FacePhoto(Image.new("RGB", (1024, 1024), (128, 100, 90)), (384, 320, 640, 640))
    crops = make_crops(photo, args.resolution, jitters=3)
    data = encode_crops(model, crops, "fcsks fxhks fhyks, a photo of a person")
    settings = RefineSettings(steps=args.steps + 1, micro_batch=micro,
                              gradient_checkpointing=checkpointing)  # fmt: skip
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times: list[float] = []

    def progress(done: int, total: int, loss: float) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())

    start = time.perf_counter()
    result = Trainer(model, lora, data, settings).run(progress)
    steps = [b - a for a, b in zip([start, *times], times, strict=False)][1:]  # skip warm-up
    vram = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return {
        "resolution": args.resolution, "micro_batch": result.micro_batch,
        "checkpointing": checkpointing, "s_per_step": sum(steps) / len(steps),
        "peak_rss_mb": peak_rss_mb(), "peak_vram_mb": vram, "final_loss": result.losses[-1],
    }  # fmt: skip


def machine(device: str) -> str:
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    text = f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    if device.startswith("cuda"):
        text += f", {torch.cuda.get_device_name(torch.device(device))}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    parser.add_argument("--widths", choices=tuple(WIDTHS), default="tiny")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up)")
    parser.add_argument("--micro-batches", default="4,1", help="comma-separated")
    parser.add_argument("--threads", type=int, default=1)
    forge = "weights loaded as inference tensors, as Forge 2 loads them"
    parser.add_argument("--inference-tensors", action="store_true", help=forge)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        micro, checkpointing = args.row.split(":")
        print(json.dumps(run_row(args, int(micro), checkpointing == "1")))
        return
    print(f"machine: {machine(args.device)}; {args.threads} threads")
    weights = "inference tensors (Forge 2)" if args.inference_tensors else "normal tensors"
    print(f"model: SDXL-shaped attention-only UNet, widths {args.widths}, {args.dtype}, "
          f"{args.device}, {weights}; effective batch 4, {args.steps} timed steps")  # fmt: skip
    header = ("resolution", "micro-batch", "checkpointing", "s/step", "peak RAM MB",
              "peak VRAM MB", "last loss")  # fmt: skip
    print(" | ".join(header), flush=True)
    for micro in (int(m) for m in args.micro_batches.split(",")):
        for checkpointing in (False, True):
            command = [sys.executable, __file__, *sys.argv[1:], "--row",
                       f"{micro}:{int(checkpointing)}"]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
            print_row(json.loads(done.stdout.strip().splitlines()[-1]))


def print_row(r: dict) -> None:
    vram = "-" if r["peak_vram_mb"] is None else f"{r['peak_vram_mb']:.0f}"
    cells = (
        f"{r['resolution']:>10}", f"{r['micro_batch']:>11}", f"{r['checkpointing']!s:>13}",
        f"{r['s_per_step']:6.3f}", f"{r['peak_rss_mb']:11.0f}", f"{vram:>12}",
        f"{r['final_loss']:.4f}",
    )  # fmt: skip
    print(" | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
