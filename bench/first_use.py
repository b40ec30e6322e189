"""First identity in a fresh process: imports, model loading and one photo, against a baseline.

Each run is a new Python process that imports the pipeline, builds it and predicts one photo
(what the first generation with HyperLoRA costs after a WebUI start). The baseline is another
checkout of this project (``--base``, e.g. ``git worktree add /tmp/base d813535``), run on the
same models in the same way. Runs alternate between the two so that load from elsewhere hits
both alike; the table gives medians.

    .venv/bin/python bench/first_use.py --models-dir /tmp/bench14/models --base /tmp/base-14

``--models-dir`` is a tree written by bench/identity.py (full-size random weights). "new, first
run on this machine" also measures the CPU dtype (a fresh cache folder each time); "new" reads
the recorded dtype, as every later start does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402

CHILD = """
import time
start = time.perf_counter()
import sys, json
from pathlib import Path
from hyperlora_ext.identity import IdentityOptions, IdentityPipeline
from hyperlora_ext.models import ModelRoots
imported = time.perf_counter()
pipeline = IdentityPipeline(ModelRoots.from_models_dir(Path(sys.argv[1])), device="cpu")
result = pipeline.predict([sys.argv[2]], IdentityOptions("sdxl_hyper_id_lora_v1_fidelity"))
done = time.perf_counter()
assert result.photos == 1 and not result.cache_hit
print(json.dumps({"imports": imported - start, "first identity": done - start,
                  "dtype": str(pipeline.models.engine.dtype)}))
"""


def run(root: Path, models: Path, photo: Path, cache_dir: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root), HYPERLORA_CACHE_DIR=cache_dir)
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(models), str(photo)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--base", type=Path, required=True, help="checkout of the old code")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from tests.encoders._photos import face_photo

    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "face.png"
        face_photo().save(photo)
        cached = str(Path(tmp) / "cache")
        run(ROOT, args.models_dir, photo, cached)  # records the dtype; warms the page cache
        rows: dict[str, list[dict]] = {"baseline": [], "new": [], "new, first run": []}
        for repeat in range(args.repeats):
            order = ["baseline", "new", "new, first run"]
            for label in order if repeat % 2 == 0 else order[::-1]:
                fresh = tempfile.mkdtemp(dir=tmp)
                root = args.base if label == "baseline" else ROOT
                cache = fresh if label == "new, first run" else cached
                rows[label].append(run(root, args.models_dir, photo, cache))
    print(describe())
    base = statistics.median(r["first identity"] for r in rows["baseline"])
    print(f"\nmedians of {args.repeats} runs each, alternating\n")
    print("| code | dtype | imports s | first identity s (range) | vs baseline |")
    print("|---|---|---|---|---|")
    for label, runs in rows.items():
        times = [r["first identity"] for r in runs]
        first, imports = statistics.median(times), statistics.median(r["imports"] for r in runs)
        spread = f"{min(times):.2f}–{max(times):.2f}"
        print(
            f"| {label} | {runs[0]['dtype']} | {imports:.2f} | {first:.2f} ({spread}) "
            f"| {first / base:.2f} |"
        )


if __name__ == "__main__":
    main()
