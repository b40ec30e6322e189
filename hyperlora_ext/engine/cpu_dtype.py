"""The CPU dtype of the encoders, chosen by measuring this machine once.

Whether bf16 or fp16 beats fp32 on a CPU depends on more than its feature flags: with AMX, bf16
matmuls run several times faster than fp32; with AVX512-BF16 alone they can run at half the fp32
rate; fp16 is fast only on some CPUs. So the first time, a short probe (tens of milliseconds per
dtype) times kernels shaped like CLIP's and the resampler's matmuls and the basis mixing, and the
winner is kept per machine (CPU model and flags, torch version) in a small JSON file, by default
in the user's cache folder (``HYPERLORA_CACHE_DIR`` overrides it). fp32 is kept unless a half
dtype is clearly faster: it is the most accurate. Any damage to the file means probing again.

The same probe decides how a bf16 model mixes the memory-mapped fp16 bases (bases.py): with GEMVs
straight over fp16 (fast on CPUs with fp16 arithmetic) or through a float32 buffer (fast
everywhere else).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from ..files import parse_json, write_atomically

CANDIDATES = (torch.float32, torch.bfloat16, torch.float16)
HALF_MUST_BE_FASTER = 0.9  # a half dtype replaces fp32 only when it takes < 90 % of fp32's time
# Share of the wall time its threads got the CPU while probing, below which other programs were
# competing: quiet 0.80-0.88, one busy process 0.53-0.68, two 0.41-0.45 (2-vCPU Xeon, 2 threads).
QUIET_CPU_SHARE = 0.7
MIN_SHARE_SECONDS = 0.02  # a shorter measurement (a test's stand-in) says nothing about load
CACHE_NAME = "cpu_dtype.json"
CACHE_VERSION = 3  # 2: the mixing as it runs on mapped fp16 bases; 3: and how bf16 mixes them
MAX_CACHE_BYTES = 64 * 1024
MAX_ENTRIES = 32
_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
_BY_NAME = {name: dtype for dtype, name in _NAMES.items()}

# (rows, in, out) of a linear and how many calls of that size a 1-photo identity makes (roughly):
# CLIP ViT-L/14 (23 layers x 12 of 257x1024x1024), the resampler (1120 latents), then the mixing:
# a GEMV over every basis as the CPU runs it on the file's bases (fp16 in the released models,
# memory-mapped, see bases.py): 1.5 G values read as 1135 of the probe's 128 x 10240 GEMVs.
_GEMMS = ((257, 1024, 1024, 276), (1120, 1024, 768, 90))
_MIX = (128, 10240, 1135)


@dataclass(frozen=True)
class Estimate:
    """One probe: estimated seconds of one identity per dtype, and whether mixing fp16 bases
    with fp16 GEMVs beat mixing them through float32 (bf16's estimate uses the faster)."""

    seconds: Mapping[torch.dtype, float]
    fp16_mixing_faster: bool = False


@dataclass(frozen=True)
class Choice:
    """What this machine runs: the dtype, and whether a bf16 model mixes fp16 bases in fp16."""

    dtype: torch.dtype
    fp16_mixing: bool = False


Measure = Callable[[], Estimate]
_lock = threading.Lock()
_log = logging.getLogger(__name__)
_chosen: Choice | None = None


def cache_dir() -> Path:
    """Where HyperLoRA keeps small per-machine files (``HYPERLORA_CACHE_DIR`` overrides it)."""
    override = os.environ.get("HYPERLORA_CACHE_DIR", "").strip().strip('"')
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hyperlora"


def machine_key() -> str:
    """CPU model, a digest of its feature flags and the torch version: what the speeds depend on."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                name, _, value = line.partition(":")
                if name.strip() == "model name" and model in ("", platform.machine()):
                    model = value.strip()
                elif name.strip() in ("flags", "Features") and not flags:
                    flags = " ".join(sorted(value.split()))
    except OSError:  # not Linux: the processor name is all there is
        pass
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    return f"{model} | flags {digest} | {platform.machine()} | torch {torch.__version__}"


def cpu_dtype() -> torch.dtype:
    """The CPU dtype for this machine, looked up or measured once per process."""
    return cpu_choice().dtype


def cpu_choice() -> Choice:
    """The dtype and mixing choice for this machine, looked up or measured once per process."""
    global _chosen
    with _lock:
        if _chosen is None:
            _chosen = load_or_probe(cache_dir() / CACHE_NAME, probe)
        return _chosen


def choose(seconds: Mapping[torch.dtype, float]) -> torch.dtype:
    """The fastest half dtype when it beats fp32 clearly, else fp32."""
    base = seconds.get(torch.float32)
    halves = {d: s for d, s in seconds.items() if d != torch.float32 and math.isfinite(s) and s > 0}
    if not halves:
        return torch.float32
    best = min(halves, key=halves.__getitem__)
    if base is None or not base > 0 or halves[best] < HALF_MUST_BE_FASTER * base:
        return best
    return torch.float32


def probe(repeats: int = 2) -> Estimate:
    """Estimated seconds of one identity per dtype, from a few small kernels (min of repeats).

    The dtypes take turns in every round so that a burst of load from elsewhere hits all alike.
    Each dtype's last kernel is its mixing (fp16: GEMVs over fp16; else through float32).
    """
    kernels = {dtype: _kernels(dtype) for dtype in CANDIDATES}
    best = {dtype: [float("inf")] * len(k) for dtype, k in kernels.items()}
    for round_ in range(repeats + 1):  # round 0 warms up (kernel selection, first touch)
        for dtype, work in kernels.items():
            for i, (run, _) in enumerate(work):
                start = time.perf_counter()
                run()
                if round_:
                    best[dtype][i] = min(best[dtype][i], time.perf_counter() - start)
    fp16_mixing_faster = best[torch.float16][-1] < HALF_MUST_BE_FASTER * best[torch.float32][-1]
    if fp16_mixing_faster:  # bf16 would mix the fp16 bases the fp16 way
        best[torch.bfloat16][-1] = best[torch.float16][-1]
    seconds = {
        d: sum(t * w for t, (_, w) in zip(best[d], k, strict=True)) for d, k in kernels.items()
    }
    return Estimate(seconds, fp16_mixing_faster)


def _kernels(dtype: torch.dtype) -> list[tuple[Callable[[], object], int]]:
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen).to(dtype)

    work: list[tuple[Callable[[], object], int]] = []
    for rows, width_in, width_out, calls in _GEMMS:
        x, w = rand(rows, width_in), rand(width_out, width_in)
        work.append((partial(torch.nn.functional.linear, x, w), calls))
    h, width, calls = _MIX
    coefficients = torch.randn(h, generator=gen)
    basis = torch.randn((h, width), generator=gen).half()
    if dtype == basis.dtype:  # as bases.py mixes: in the file's dtype, else through float32
        work.append((partial(torch.mv, basis.t(), coefficients.to(dtype)), calls))
    else:
        staging = torch.empty((h, width))
        work.append((lambda: torch.mv(staging.copy_(basis).t(), coefficients), calls))
    return work


def choice_of(estimate: Estimate) -> Choice:
    """What one probe chooses (fp16 mixing matters only to bf16: fp16 mixes so anyway)."""
    dtype = choose(estimate.seconds)
    return Choice(dtype, dtype == torch.bfloat16 and estimate.fp16_mixing_faster)


def load_or_probe(path: Path, measure: Measure) -> Choice:
    """The choice recorded for this machine in ``path``; else measured twice, and recorded when
    both measurements choose the same and nothing else competed for the CPU meanwhile."""
    key = machine_key()
    entries = _read_entries(path)
    known = _recorded(entries.get(key))
    if known is not None:
        return known
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        first, second = measure(), measure()
    share = cpu_share(time.perf_counter() - wall, time.process_time() - cpu)
    seconds = {d: min(first.seconds[d], second.seconds.get(d, math.inf)) for d in first.seconds}
    faster = first.fp16_mixing_faster and second.fp16_mixing_faster  # float32 is always fine
    chosen = choice_of(Estimate(seconds, faster))
    agree = choice_of(first) == choice_of(second)
    if not agree or share < QUIET_CPU_SHARE:
        # Load from elsewhere may have decided: use the better estimate for this process but
        # record nothing, so that a quieter moment measures again.
        _log.info(
            "HyperLoRA: CPU dtype probes %s; using %s, not recorded",
            "disagree" if not agree else f"ran busy (CPU share {share:.2f})",
            _NAMES[chosen.dtype],
        )
        return chosen
    entries[key] = {
        "dtype": _NAMES[chosen.dtype],
        "fp16_mixing": chosen.fp16_mixing,
        "seconds": {_NAMES[d]: round(float(s), 6) for d, s in seconds.items() if d in _NAMES},
    }
    _write_entries(path, dict(list(entries.items())[-MAX_ENTRIES:]))
    return chosen


def _recorded(entry: object) -> Choice | None:
    """The choice in a file entry, or None when it is not one this module wrote."""
    if not isinstance(entry, dict):
        return None
    name, fp16_mixing = entry.get("dtype"), entry.get("fp16_mixing", False)
    if not isinstance(name, str) or name not in _BY_NAME or not isinstance(fp16_mixing, bool):
        return None
    return Choice(_BY_NAME[name], fp16_mixing)


def cpu_share(wall: float, cpu: float) -> float:
    """The share of ``wall`` seconds that torch's threads ran (process CPU time / threads); 1.0
    for measurements too short to tell."""
    if wall < MIN_SHARE_SECONDS:
        return 1.0
    return cpu / wall / max(1, torch.get_num_threads())


def _read_entries(path: Path) -> dict:
    """The file's entries; empty when it is missing, too large or not what this module writes."""
    try:
        if path.stat().st_size > MAX_CACHE_BYTES:
            return {}
        data = parse_json(path.read_bytes(), str(path))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    entries = data.get("machines")
    return dict(entries) if isinstance(entries, dict) else {}


def _write_entries(path: Path, entries: dict) -> None:
    """Best effort: a read-only or odd folder only means probing again next time."""
    text = json.dumps({"version": CACHE_VERSION, "machines": entries}, indent=1)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    except OSError as error:
        _log.warning("HyperLoRA: could not record the CPU dtype in %s (%s)", path, error)
