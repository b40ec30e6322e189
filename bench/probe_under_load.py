"""Does the CPU dtype probe record a wrong choice when other programs load the CPU?

    .venv/bin/python bench/probe_under_load.py [--runs 6] [--busy 2]

Runs the first-start path of the CPU dtype choice (``load_or_probe`` with an empty cache folder:
two probes, recorded only when both choose the same dtype) ``--runs`` times on a quiet machine,
then again while ``--busy`` other processes keep matmuls running (one thread each). Prints, per
condition, how often a choice was recorded and which dtypes were recorded or used. The quiet
runs' choice is the reference: a recorded choice that differs from it is a wrong recording, which
would stay until the cache file is deleted.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from hyperlora_ext.engine import cpu_dtype  # noqa: E402

BUSY = "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True: a @ a\n"


def first_starts(runs: int) -> list[tuple[str, bool]]:
    """(choice used, whether it was recorded) of ``runs`` first starts."""
    results = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / cpu_dtype.CACHE_NAME
            choice = cpu_dtype.load_or_probe(path, cpu_dtype.probe)
            name = str(choice.dtype).removeprefix("torch.")
            results.append(
                (name + (" + fp16 mixing" if choice.fp16_mixing else ""), path.is_file())
            )
    return results


def summary(label: str, results: list[tuple[str, bool]], reference: str) -> str:
    recorded = collections.Counter(d for d, kept in results if kept)
    used = collections.Counter(d for d, _ in results)
    wrong = sum(n for d, n in recorded.items() if d != reference)
    show = lambda c: ", ".join(f"{d} x{n}" for d, n in c.items()) or "none"  # noqa: E731
    return f"| {label} | {len(results)} | {show(recorded)} | {wrong} | {show(used)} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--busy", type=int, default=2, help="busy processes for the loaded runs")
    args = parser.parse_args()
    quiet = first_starts(args.runs)
    reference = collections.Counter(d for d, _ in quiet).most_common(1)[0][0]
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.busy)]
    try:
        loaded = first_starts(args.runs)
    finally:
        for process in busy:
            process.kill()
    print(describe())
    print(f"\nreference (most used on the quiet machine): {reference}\n")
    print("| condition | first starts | recorded | wrong recordings | used |")
    print("|---|---|---|---|---|")
    print(summary("quiet", quiet, reference))
    print(summary(f"{args.busy} busy processes", loaded, reference))


if __name__ == "__main__":
    main()
