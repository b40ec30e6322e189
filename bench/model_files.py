"""What watching the model files costs, and what a private in-memory copy of the bases would cost.

    .venv/bin/python bench/model_files.py --models-dir /tmp/bench14/models

``--models-dir`` is the full-size random tree of bench/identity.py. Times the fingerprint of the
HyperLoRA model folder and of the CLIP folder (taken three times per new identity and once per
request, see identity.py), and the truncation check of the models listing. Then loads the model
twice, each in a fresh subprocess: with the bases memory-mapped (the CPU default; a file cut in
place while mapped can kill the process, which the fingerprints guard against) and copied into
memory (``map_bases=False``, immune to changes of the file): load seconds and resident memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from hyperlora_ext.model_files import folder_fingerprint, truncation  # noqa: E402
from hyperlora_ext.models import ModelRoots  # noqa: E402

MODEL = "sdxl_hyper_id_lora_v1_fidelity"
LOAD = """
import json, sys, time
from hyperlora_ext.engine.model import load_hyperlora
from hyperlora_ext.memory import peak_rss_mb
start = time.perf_counter()
model = load_hyperlora(sys.argv[1], map_bases=sys.argv[2] == "mapped")
seconds = time.perf_counter() - start
import torch
lora = model.predict_lora(torch.nn.functional.normalize(torch.randn(1, 512), dim=-1),
                          torch.randn(1, 257, 1024))
print(json.dumps({"load": seconds, "peak_rss_mb": peak_rss_mb(), "dtype": str(model.dtype)}))
"""


def milliseconds(run, repeats: int = 20) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def load(folder: Path, layout: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", LOAD, str(folder), layout],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, required=True)
    args = parser.parse_args()
    roots = ModelRoots.from_models_dir(args.models_dir)
    folder, clip = roots.hyper_lora / MODEL, roots.clip_vit / "clip_vit_large_14"
    files = sorted(folder.glob("*.safetensors"))
    print(describe())
    print("\n| check | ms (median of 20) |\n|---|---|")
    for name, path in (("HyperLoRA", folder), ("CLIP", clip)):
        seconds = milliseconds(lambda path=path: folder_fingerprint(path))
        print(f"| fingerprint, {name} folder | {seconds:.2f} |")
    listing = milliseconds(lambda: [truncation(path) for path in files])
    print(f"| truncation check, 3 model files | {listing:.2f} |")
    print("\n| bases | load s | peak RSS MB (load + one predict_lora) | dtype |\n|---|---|---|---|")
    for layout in ("mapped", "in memory"):
        row = load(folder, "mapped" if layout == "mapped" else "copied")
        print(f"| {layout} | {row['load']:.2f} | {row['peak_rss_mb']:.0f} | {row['dtype']} |")


if __name__ == "__main__":
    main()
