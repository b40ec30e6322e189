"""The CPU dtype of the encoders: a fixed rule on the CPU's features and the torch build.

The same photos must give the same identity after every restart, so the dtype may depend only on
what does not change while a machine runs: its CPU's instruction sets and torch's build, never on
a timing (an earlier version measured the dtypes at the first start and, under load, chose
differently from one start to the next). The rule, from measurements in bench/README.md:

* **AMX-BF16** (Intel Xeon 4th generation and later): bfloat16, 2-4x faster than float32 there
  (oneDNN's AMX kernels). Every such CPU also has AVX512-FP16, so a bf16 model mixes the
  memory-mapped fp16 bases straight in fp16 (bases.py), faster than through float32 there.
* **AVX512-BF16 without AMX** (AMD Zen 4/5, Intel Cooper Lake): bfloat16, faster than float32 by
  a smaller margin; the fp16 bases are mixed through float32 (fp16 GEMVs are slow without fp16
  arithmetic).
* anything else, or a torch without oneDNN: float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class CpuFeatures:
    """The instruction sets the rule looks at (from torch's own CPU detection, any OS)."""

    amx_bf16: bool
    avx512_bf16: bool
    onednn: bool  # torch built with oneDNN (mkldnn): its bf16 kernels

    @classmethod
    def detect(cls) -> CpuFeatures:
        cpu = torch.cpu  # the private checks exist since torch 2.3; absent means "no"
        return cls(
            amx_bf16=_supported(cpu, "_is_amx_tile_supported"),
            avx512_bf16=_supported(cpu, "_is_avx512_bf16_supported"),
            onednn=torch.backends.mkldnn.is_available(),
        )


def _supported(module: object, check: str) -> bool:
    try:
        return bool(getattr(module, check)())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class Choice:
    """What this machine runs: the dtype, and whether a bf16 model mixes fp16 bases in fp16."""

    dtype: torch.dtype
    fp16_mixing: bool = False


def rule(features: CpuFeatures) -> Choice:
    """The dtype for a CPU with ``features`` (see the module docstring)."""
    if features.onednn and features.amx_bf16:
        return Choice(torch.bfloat16, fp16_mixing=True)
    if features.onednn and features.avx512_bf16:
        return Choice(torch.bfloat16)
    return Choice(torch.float32)


def cpu_choice() -> Choice:
    """The dtype and mixing choice for this machine (the same in every process)."""
    return rule(CpuFeatures.detect())


def cpu_dtype() -> torch.dtype:
    """The CPU dtype for this machine."""
    return cpu_choice().dtype


def dtype_name(dtype: torch.dtype) -> str:
    """``fp32`` / ``bf16`` / ``fp16``: the names of the CLI's ``--dtype`` and of infotexts."""
    return _NAMES.get(dtype, str(dtype).removeprefix("torch."))
