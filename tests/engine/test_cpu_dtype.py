"""The CPU dtype is a fixed rule on the CPU's features: the same in every process, no file."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hyperlora_ext.engine import cpu_dtype as cd
from hyperlora_ext.engine.model import default_dtype, load_hyperlora
from tests.factories import write_tiny_hyperlora

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "onednn", "expected"),
    [
        (True, True, True, cd.Choice(BF16, fp16_mixing=True)),  # Xeon 4th gen+: AMX, AVX512-FP16
        (False, True, True, cd.Choice(BF16)),  # AMD Zen 4/5, Cooper Lake
        (False, False, True, cd.Choice(F32)),  # AVX2 / AVX-512 without bf16
        (True, True, False, cd.Choice(F32)),  # a torch without oneDNN has no fast bf16
        (False, False, False, cd.Choice(F32)),
    ],
)
def test_rule(amx, avx512_bf16, onednn, expected):
    assert cd.rule(cd.CpuFeatures(amx, avx512_bf16, onednn)) == expected


def test_this_machine_follows_the_rule():
    assert cd.cpu_choice() == cd.rule(cd.CpuFeatures.detect())
    assert cd.cpu_dtype() == cd.cpu_choice().dtype


def test_a_torch_without_the_checks_means_float32(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert cd.CpuFeatures.detect() == cd.CpuFeatures(False, False, cd.CpuFeatures.detect().onednn)
    assert cd.cpu_choice() == cd.Choice(F32)


def test_dtype_names():
    assert [cd.dtype_name(d) for d in (F32, BF16, F16)] == ["fp32", "bf16", "fp16"]


def _features(monkeypatch, features: cd.CpuFeatures) -> None:
    monkeypatch.setattr(cd.CpuFeatures, "detect", classmethod(lambda cls: features))


def test_default_dtype_follows_the_rule_and_an_explicit_dtype_wins(tmp_path, monkeypatch):
    folder = write_tiny_hyperlora(tmp_path / "tiny")
    _features(monkeypatch, cd.CpuFeatures(amx_bf16=False, avx512_bf16=True, onednn=True))
    assert default_dtype("cpu") == BF16
    assert default_dtype("cuda") == F16
    assert load_hyperlora(folder).dtype == BF16
    _features(monkeypatch, cd.CpuFeatures(amx_bf16=False, avx512_bf16=False, onednn=True))
    assert default_dtype("cpu") == F32
    assert load_hyperlora(folder, dtype=F16).dtype == F16


def test_a_bf16_model_mixes_fp16_bases_as_the_rule_says(tmp_path, monkeypatch):
    """Mixing in fp16 or through float32 gives LoRAs within bf16's precision of each other."""
    folder = write_tiny_hyperlora(tmp_path / "tiny")  # fp16 bases, as released
    loras = {}
    for amx in (False, True):
        _features(monkeypatch, cd.CpuFeatures(amx_bf16=amx, avx512_bf16=True, onednn=True))
        model = load_hyperlora(folder, dtype=BF16)
        assert model.fp16_mixing is amx
        gen = torch.Generator().manual_seed(0)
        ids = torch.nn.functional.normalize(torch.randn(1, 512, generator=gen), dim=-1)
        loras[amx] = model.predict_lora(ids, torch.randn(1, 257, 32, generator=gen))
    for key, value in loras[True].items():
        assert value.dtype == (torch.float32 if key.endswith("alpha") else BF16)
        torch.testing.assert_close(value, loras[False][key], rtol=2e-2, atol=2e-2)
    assert any(not torch.equal(v, loras[False][k]) for k, v in loras[True].items())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_named_like_the_old_dtype_file_does_not_block(tmp_path):
    """The dtype probe of earlier versions read cpu_dtype.json from the cache folder: a FIFO of
    that name blocked the first prediction for ever, holding a lock."""
    os.mkfifo(tmp_path / "cpu_dtype.json")
    env = dict(os.environ, HYPERLORA_CACHE_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    code = "from hyperlora_ext.engine.cpu_dtype import cpu_dtype; print(cpu_dtype())"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(cd.cpu_dtype())
