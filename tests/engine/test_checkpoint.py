"""Loader errors: every message names the file, the key and the expected vs found shape."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from hyperlora_ext.engine.model import load_hyperlora
from hyperlora_ext.errors import CheckpointError
from tests.factories import write_tiny_hyperlora

BASES = "hyper_lora_modules.safetensors"
RESAMPLER = "resampler.safetensors"
PROJECTOR = "id_projector.safetensors"
JSON_FILE = "hyper_lora_modules.json"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_tiny_hyperlora(tmp_path_factory.mktemp("pristine") / "model")


@pytest.fixture
def folder(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / "model")


def _edit(folder, name, change):
    state = load_file(str(folder / name))
    change(state)
    save_file(state, str(folder / name))


def _error(folder) -> str:
    with pytest.raises(CheckpointError) as info:
        load_hyperlora(folder, dtype=torch.float32)
    return str(info.value)


def test_missing_folder(tmp_path):
    assert "model folder not found" in _error(tmp_path / "nope")


@pytest.mark.parametrize("name", [JSON_FILE, BASES, RESAMPLER, PROJECTOR])
def test_missing_file(folder, name):
    (folder / name).unlink()
    message = _error(folder)
    assert name in message and "missing" in message


@pytest.mark.parametrize("name", [BASES, RESAMPLER, PROJECTOR])
def test_truncated_file(folder, name):
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    message = _error(folder)
    assert name in message and "truncated" in message


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 a zip, not safetensors" * 8, b"{}"])
def test_not_safetensors(folder, content):
    (folder / RESAMPLER).write_bytes(content)
    message = _error(folder)
    assert RESAMPLER in message and "not a valid safetensors file" in message


def test_missing_key(folder):
    _edit(folder, RESAMPLER, lambda s: s.pop("layers.1.attn3.to_v.weight"))
    message = _error(folder)
    assert RESAMPLER in message and "missing key 'layers.1.attn3.to_v.weight'" in message
    assert "[128, 48]" in message


def test_unexpected_key(folder):
    _edit(folder, PROJECTOR, lambda s: s.update({"3.weight": torch.zeros(4)}))
    message = _error(folder)
    assert PROJECTOR in message and "unexpected key '3.weight'" in message


def test_wrong_shape(folder):
    _edit(folder, BASES, lambda s: s.update({"2.to_k.id_down_basis": torch.zeros(16, 41, 4)}))
    message = _error(folder)
    assert BASES in message and "'2.to_k.id_down_basis'" in message
    assert "expected shape [16, 40, 4], found [16, 41, 4]" in message


def test_bases_of_another_hyper_dim(folder):
    _edit(folder, BASES, lambda s: s.update({k: v[:8] for k, v in s.items()}))
    message = _error(folder)
    assert BASES in message and "expected shape [16, 20, 4], found [8, 20, 4]" in message


def test_non_float_tensor(folder):
    _edit(folder, PROJECTOR, lambda s: s.update({"0.bias": s["0.bias"].to(torch.int32)}))
    message = _error(folder)
    assert PROJECTOR in message and "'0.bias' has dtype I32" in message


def test_projector_width_mismatch(folder):
    _edit(folder, PROJECTOR, lambda s: s.update({"0.weight": s["0.weight"][:-1]}))
    assert "'0.weight'" in _error(folder)


def test_json_and_resampler_disagree(folder):
    modules = json.loads((folder / JSON_FILE).read_text())
    modules.popitem()
    (folder / JSON_FILE).write_text(json.dumps(modules))
    message = _error(folder)
    assert "'latents' has 32 queries" in message and "lists 3 modules" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a non-empty JSON object"),
        ("{}", "expected a non-empty JSON object"),
        ('{"lora_unet_x_attn1": 5}', "must map to an object"),
        ('{"lora_unet_x_attn1": {"hidden_size": "640"}}', "no valid 'hidden_size'"),
        ('{"lora_unet_x_attn1": {"hidden_size": 20, "cross_attention_dim": -1}}', "invalid"),
    ],
)
def test_bad_json(folder, text, expected):
    (folder / JSON_FILE).write_text(text)
    message = _error(folder)
    assert JSON_FILE in message and expected in message
