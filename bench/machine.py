"""One line naming the machine a benchmark ran on: CPU model, the flags that matter, torch."""

from __future__ import annotations

import os
import platform

import torch

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16", "bf16", "fphp")


def describe() -> str:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                name, _, value = line.partition(":")
                if name.strip() == "model name":
                    model = value.strip()
                elif name.strip() in ("flags", "Features"):
                    flags = set(value.split())
    except OSError:
        pass
    shown = " ".join(f for f in FLAGS if f in flags) or "flags unknown"
    return (
        f"machine: {model}, {os.cpu_count()} CPUs ({shown}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
