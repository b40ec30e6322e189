"""Benchmark HyperLoRAModel.predict_lora on a full-size random model against a naive baseline.

The model has the released layout and sizes (140 SDXL attention modules, 1120 query tokens, D = E =
1024, H = 128, r = 8, T = 16; about 1.5 B basis parameters, 3.1 GB in fp16). It is written once to
a folder (``--folder``, reused when present) and loaded through the real loader. Each dtype runs
and bases layout ("mapped": the CPU default, bases left in the file's memory map; "stacked": copied
into group tensors of the dtype, as on a GPU) runs in its own subprocess, so peak RSS is per
configuration:

1. engine: load time, peak RSS after load + predictions, predict_lora time (best of ``--repeats``)
   with its resampler / mixing split;
2. then the engine is freed and the naive baseline is built from the same files in the same dtype:
   the reference math as written (separate q/k/v projections, no precomputation, latents repeated
   per image) followed by one einsum per basis (560 + 560), transpose and ``.contiguous()``.

The table reports time, speed-up, bytes of bases read per prediction, the machine's memcpy
bandwidth and the resulting floor (bytes / bandwidth) for the mixing, and peak RSS.

    .venv/bin/python bench/predict.py --folder /tmp/hyperlora_full --repeats 3

Peak RSS counts the pages of the memory-mapped file that were read (clean file cache, which the
OS can drop), so "mapped" and "stacked" are compared by their allocated memory, not by RSS alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hyperlora_ext.lora_format import sdxl_attention_modules  # noqa: E402
from hyperlora_ext.memory import peak_rss_mb  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SIZES = dict(
    embedding_dim=1024, dim=1024, num_id_tokens=16, rank=8, hyper_dim=128, depth=4, heads=12
)
LAYERS = ("to_q", "to_k", "to_v", "to_out")


DEVICE = torch.device("cpu")  # set by --device


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def peak_rss_gb() -> float:
    return (peak_rss_mb() or 0.0) * 2**20 / 1e9


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up (oneDNN primitive creation)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def copy_bandwidth() -> float:
    """Bytes moved per second (read + write) by a 1 GiB memcpy on DEVICE: the streaming rate."""
    src = torch.ones(2**30, dtype=torch.uint8, device=DEVICE)
    dst = torch.empty_like(src).fill_(0)
    return 2 * src.numel() / best_time(lambda: dst.copy_(src), 3)


# ---------------------------------------------------------------- model folder


def write_full_model(folder: Path) -> None:
    """Random full-size model in the released layout (written per file to bound memory)."""
    from safetensors.torch import save_file

    from tests.factories import tiny_hyperlora_tensors  # full sizes, despite the name

    modules = sdxl_attention_modules("diffusers")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hyper_lora_modules.json").write_text(json.dumps(modules, indent=1))
    state = tiny_hyperlora_tensors(modules, dtype=torch.float16, **SIZES)
    for name in list(state):
        save_file(state.pop(name), str(folder / name))


# ---------------------------------------------------------------- naive baseline (reference math)


class NaiveReference:
    """The reference pipeline as written: no fusion, no precomputation, one einsum per basis."""

    def __init__(self, folder: Path, dtype: torch.dtype):
        from safetensors.torch import load_file

        def load(name: str) -> dict[str, torch.Tensor]:
            state = load_file(str(folder / name))
            return {k: state.pop(k).to(DEVICE, dtype) for k in list(state)}

        self.modules = list(json.loads((folder / "hyper_lora_modules.json").read_text()))
        self.res = load("resampler.safetensors")
        self.proj = load("id_projector.safetensors")
        self.bases = load("hyper_lora_modules.safetensors")
        self.heads = self.res["layers.0.attn1.to_q.weight"].shape[0] // 64

    def _attention(self, prefix: str, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        r, n = self.res, a.shape[0]
        q, k, v = (
            F.linear(t, r[f"{prefix}.{p}.weight"]).view(n, -1, self.heads, 64).transpose(1, 2)
            for t, p in ((a, "to_q"), (c, "to_k"), (c, "to_v"))
        )
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, a.shape[1], -1)
        return F.linear(out, r[f"{prefix}.to_out.0.weight"])

    def _ln(self, t: torch.Tensor, prefix: str) -> torch.Tensor:
        w, b = self.res[f"{prefix}.weight"], self.res[f"{prefix}.bias"]
        return F.layer_norm(t, (t.shape[-1],), w, b, 1e-5)

    def tokens(self, ids: torch.Tensor, clip: torch.Tensor) -> torch.Tensor:
        r, p = self.res, self.proj
        n, e = ids.shape[0], p["2.weight"].shape[0]
        x = F.linear(ids, p["0.weight"], p["0.bias"]).view(n, -1, e)
        x = F.linear(
            F.layer_norm(x, (e,), p["2.weight"], p["2.bias"], 1e-5),
            r["proj_in.weight"],
            r["proj_in.bias"],
        )
        y = F.linear(clip, r["proj_in_2.weight"], r["proj_in_2.bias"])
        lat = r["latents"].repeat(n, 1, 1)
        layer = 0
        while f"layers.{layer}.norm_ff.weight" in r:
            pre = f"layers.{layer}."
            h = self._ln(lat, pre + "norm_attn1")
            lat = lat + self._attention(pre + "attn1", h, h)
            lat = lat + self._attention(
                pre + "attn2",
                self._ln(lat, pre + "norm_attn2_l"),
                self._ln(x, pre + "norm_attn2_x"),
            )
            lat = lat + self._attention(
                pre + "attn3",
                self._ln(lat, pre + "norm_attn3_l"),
                self._ln(y, pre + "norm_attn3_y"),
            )
            hid = F.gelu(
                F.linear(
                    self._ln(lat, pre + "norm_ff"),
                    r[pre + "ff.net.0.proj.weight"],
                    r[pre + "ff.net.0.proj.bias"],
                )
            )
            lat = lat + F.linear(hid, r[pre + "ff.net.2.weight"], r[pre + "ff.net.2.bias"])
            layer += 1
        out = F.linear(lat, r["proj_out.weight"], r["proj_out.bias"]).mean(0, keepdim=True)
        return out / torch.sqrt(out.square().sum(-1, keepdim=True) + 1e-8)

    def mix(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        lora = {}
        for m, name in enumerate(self.modules):
            t = tokens[:, 8 * m : 8 * m + 8]
            for j, layer in enumerate(LAYERS):
                part = "to_out_0" if layer == "to_out" else layer
                down = torch.einsum(
                    "bi,ijk->bjk", t[:, 2 * j], self.bases[f"{m}.{layer}.id_down_basis"]
                )
                up = torch.einsum(
                    "bi,ijk->bjk", t[:, 2 * j + 1], self.bases[f"{m}.{layer}.id_up_basis"]
                )
                lora[f"{name}_{part}.alpha"] = torch.tensor(8 * 0.5)
                lora[f"{name}_{part}.lora_down.weight"] = down[0].T.contiguous()
                lora[f"{name}_{part}.lora_up.weight"] = up[0].T.contiguous()
        return lora

    @torch.no_grad()
    def predict(self, ids: torch.Tensor, clip: torch.Tensor) -> dict[str, torch.Tensor]:
        dtype = self.res["latents"].dtype
        return self.mix(self.tokens(ids.to(dtype), clip.to(dtype)))


# ---------------------------------------------------------------- one configuration (subprocess)


def measure_engine(folder: Path, dtype: torch.dtype, mapped: bool, ids, clip, repeats: int):
    from hyperlora_ext.engine.model import load_hyperlora

    start = time.perf_counter()
    model = load_hyperlora(folder, device=DEVICE, dtype=dtype, map_bases=mapped)
    stats = dict(load_s=time.perf_counter() - start, load_rss_gb=peak_rss_gb())
    stats["predict_s"] = best_time(lambda: model.predict_lora(ids, clip), repeats)
    with torch.no_grad():
        x, y = model.id_projector(ids.to(dtype)), clip.to(dtype)
        stats["resampler_s"] = best_time(lambda: model.resampler(x, y), repeats)
    tokens = model.predict_tokens(ids, clip)
    stats["mix_s"] = best_time(lambda: model.lora_from_tokens(tokens), repeats)
    groups = model.bank.groups
    stats["bases_bytes"] = sum(g.basis(i).nbytes for g in groups for i in range(len(g.members)))
    stats["allocated_gb"] = (model.nbytes() - model.mapped_nbytes()) / 1e9
    output = model.predict_lora(ids, clip)
    stats["engine_rss_gb"] = peak_rss_gb()
    return stats, output


def measure_naive(folder: Path, dtype: torch.dtype, ids, clip, repeats: int):
    naive = NaiveReference(folder, dtype)
    stats = {"naive_s": best_time(lambda: naive.predict(ids, clip), repeats)}
    with torch.no_grad():
        x, y = ids.to(dtype), clip.to(dtype)
        stats["naive_resampler_s"] = best_time(lambda: naive.tokens(x, y), repeats)
        tokens = naive.tokens(x, y)
        stats["naive_mix_s"] = best_time(lambda: naive.mix(tokens), repeats)
    return stats, naive.predict(ids, clip)


def run_child(folder: Path, config: str, repeats: int, images: int) -> dict:
    """Engine first (its peak RSS is recorded before the baseline exists), then the baseline."""
    dtype_name, layout = config.split(":")
    dtype = DTYPES[dtype_name]
    gen = torch.Generator().manual_seed(0)
    ids = F.normalize(torch.randn(images, 512, generator=gen), dim=-1).to(DEVICE)
    clip = torch.randn(images, 257, 1024, generator=gen).to(DEVICE)
    engine, engine_out = measure_engine(folder, dtype, layout == "mapped", ids, clip, repeats)
    naive, naive_out = measure_naive(folder, dtype, ids, clip, repeats)
    keys = [k for k in naive_out if not k.endswith("alpha")]
    scale = max(naive_out[k].float().abs().max().item() for k in keys)
    diff = max(
        (engine_out[k].float() - naive_out[k].cpu().float()).abs().max().item() for k in keys
    )
    return dict(dtype=dtype_name, layout=layout, rel_diff=diff / scale, **engine, **naive)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, help="model folder (written when absent)")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32,bf16,fp16")
    parser.add_argument("--layouts", default="mapped,stacked", help="mapped (CPU only), stacked")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--images", type=int, default=1, help="reference photos per prediction")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.child:
        print(json.dumps(run_child(args.folder, args.child, args.repeats, args.images)))
        return

    folder = args.folder or Path(tempfile.gettempdir()) / "hyperlora_bench_full"
    if not (folder / "hyper_lora_modules.safetensors").is_file():
        start = time.perf_counter()
        write_full_model(folder)
        print(f"wrote {folder} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    bandwidth = copy_bandwidth()
    rows = []
    configs = [
        f"{d}:{layout}" for d in args.dtypes.split(",") for layout in args.layouts.split(",")
    ]
    for name in configs:
        command = [
            sys.executable,
            __file__,
            "--folder",
            str(folder),
            "--child",
            name,
            "--repeats",
            str(args.repeats),
            "--device",
            args.device,
            "--images",
            str(args.images),
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print(f"done {name}", file=sys.stderr)

    print(
        f"device {torch.cuda.get_device_name() if DEVICE.type == 'cuda' else 'cpu'}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, {args.images} image(s), best of {args.repeats}; "
        f"memcpy {bandwidth / 1e9:.1f} GB/s (read + write)"
    )
    print()
    print(
        "| dtype | bases | predict_lora s (resampler + mix) | naive s (resampler + mix) "
        "| speed-up | bases read GB | mix floor s | load s | allocated GB | peak RSS GB (engine) "
        "| max rel. diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dtype']} | {r['layout']} "
            f"| {r['predict_s']:.2f} ({r['resampler_s']:.2f} + {r['mix_s']:.2f}) "
            f"| {r['naive_s']:.2f} ({r['naive_resampler_s']:.2f} + {r['naive_mix_s']:.2f}) "
            f"| {r['naive_s'] / r['predict_s']:.2f}x | {r['bases_bytes'] / 1e9:.2f} "
            f"| {r['bases_bytes'] / bandwidth:.2f} | {r['load_s']:.1f} "
            f"| {r['allocated_gb']:.2f} | {r['engine_rss_gb']:.1f} | {r['rel_diff']:.1e} |"
        )


if __name__ == "__main__":
    main()
