"""Apply and restore an identity LoRA on an SDXL-shaped UNet: HyperLoRA's in-memory path vs a file.

The UNet holds the 560 SDXL attention Linears at their real widths (640/1280, text context 2048)
in fp16, inside the A1111 test double (tests/webui/fake_webui: a faithful copy of the builtin
Lora extension's load, lazy merge and backup logic). Both paths merge through A1111's own
``network_apply_weights``; they differ in how the network gets there and how it is taken out:

- HyperLoRA: ``A1111Adapter.apply`` (build the Network in memory) + merge; ``restore`` (copy the
  backups back under no_grad).
- File: save the same LoRA as .safetensors, ``networks.load_networks([name])`` (read + build) +
  merge; restore the WebUI's way: ``load_networks([])`` and the next forward restores each layer.

Usage: .venv/bin/python bench/apply.py [--rank 8] [--repeat 3] [--scale 1.0]
(--scale 0.25 shrinks every width for a quick run on a small machine.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hyperlora_ext.lora_format import lora_digest  # noqa: E402
from hyperlora_ext.webui.a1111 import A1111Adapter, target_layer_names  # noqa: E402
from tests.webui import fake_webui  # noqa: E402
from tests.webui.loras import make_lora  # noqa: E402


class Job:
    def __init__(self, sd_model):
        self.sd_model = sd_model


def merge_all(networks, layers) -> None:
    """What the first sampling step's forwards do: each target layer merges lazily."""
    with torch.no_grad():
        for layer in layers:
            networks.network_apply_weights(layer)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="width scale (1.0 = real SDXL)")
    opts = parser.parse_args()
    torch.set_grad_enabled(True)  # hooks outside sampling run with grad enabled

    with tempfile.TemporaryDirectory() as tmp:
        webui = fake_webui.install(Path(tmp))
        try:
            widths = {k: max(8, int(v * opts.scale)) for k, v in (("w640", 640), ("w1280", 1280))}
            model = webui.load_model(ctx=max(8, int(2048 * opts.scale)), **widths)
            mapping = model.network_layer_mapping
            layers = [mapping[name] for name in target_layer_names()]
            lora = make_lora(model, rank=opts.rank, alpha=opts.rank / 2)
            digest = lora_digest(lora)
            from safetensors.torch import save_file

            save_file(lora, str(webui.lora_dir / "identity_file.safetensors"))
            networks, adapter = webui.networks, A1111Adapter()
            pristine = {
                n: m.weight.detach().clone()
                for n, m in zip(target_layer_names(), layers, strict=True)
            }
            rows = {key: [] for key in ("mem_apply", "mem_restore", "file_apply", "file_restore")}

            for i in range(opts.repeat):
                adapter._built = None  # a new identity each round: the Network is rebuilt

                def apply_in_memory() -> None:
                    adapter.apply(Job(model), lora, 0.8, digest)
                    merge_all(networks, layers)

                rows["mem_apply"].append(timed(apply_in_memory))
                rows["mem_restore"].append(timed(lambda: adapter.restore(Job(model))))
                check(layers, pristine, "in-memory restore")

                networks.networks_in_memory.clear()  # a file LoRA not cached yet
                rows["file_apply"].append(
                    timed(lambda: (networks.load_networks(["identity_file"], [0.8], [0.8], [None]),
                                   merge_all(networks, layers)))
                )  # fmt: skip
                rows["file_restore"].append(
                    timed(lambda: (networks.load_networks([]), merge_all(networks, layers)))
                )
                check(layers, pristine, "file restore")
                print(f"round {i + 1}/{opts.repeat} done", file=sys.stderr)
        finally:
            fake_webui.uninstall()

    params = sum(m.weight.numel() for m in layers)
    print(
        f"\n{len(layers)} attention Linears, {params / 1e6:.0f}M fp16 weights, rank {opts.rank}, "
        f"{torch.get_num_threads()} CPU threads, median of {opts.repeat}\n"
    )
    print("| step    | HyperLoRA in-memory (ms) | WebUI file LoRA (ms) | file / in-memory |")
    print("|---------|--------------------------|----------------------|------------------|")
    for step in ("apply", "restore"):
        mem = statistics.median(rows[f"mem_{step}"]) * 1000
        file = statistics.median(rows[f"file_{step}"]) * 1000
        print(f"| {step:7} | {mem:24.1f} | {file:20.1f} | {file / mem:16.2f} |")


def check(layers, pristine, what: str) -> None:
    for (name, want), layer in zip(pristine.items(), layers, strict=True):
        if not torch.equal(layer.weight, want):
            raise SystemExit(f"{what} is not bit-exact at {name}")


if __name__ == "__main__":
    main()
