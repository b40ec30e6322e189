"""doctor: structured checks and the text report, on complete and incomplete model trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperlora_ext import doctor as doctor_module
from hyperlora_ext.doctor import ERROR, OK, WARN, doctor, environment_checks, has_errors, render
from hyperlora_ext.models import ModelRoots
from tests.model_files import FIDELITY, by_name, make_clip_file, make_tree


def test_complete_tree_is_all_ok(tmp_path: Path):
    roots = make_tree(tmp_path / "models")
    checks = doctor(roots, environment=False)
    assert [c.status for c in checks] == [OK] * len(checks)
    assert not has_errors(checks)
    (model,) = by_name(checks, "HyperLoRA model")
    assert model.name == f"HyperLoRA model {FIDELITY}"
    assert model.message == str(roots.hyper_lora / FIDELITY)
    (faces,) = by_name(checks, "InsightFace antelopev2")
    assert faces.message.endswith(str(roots.antelopev2))
    text = render(checks)
    assert "All good" in text and "[ERROR]" not in text


def test_empty_tree_says_what_is_missing_and_how_to_fix(tmp_path: Path):
    roots = ModelRoots.from_models_dir(tmp_path / "models")
    checks = doctor(roots, environment=False)
    assert [c.status for c in checks] == [ERROR] * 3
    assert all(roots.download_hint() in c.fix for c in checks)
    text = render(checks)
    assert "3 problem(s)" in text
    assert str(roots.clip_vit / "clip_vit_large_14") in text
    assert str(roots.antelopev2) in text


def test_incomplete_tree(tmp_path: Path):
    roots = make_tree(tmp_path / "models", nested=True)
    (roots.hyper_lora / FIDELITY / "resampler.safetensors").unlink()
    clip_weights = roots.clip_vit / "clip_vit_large_14" / "model.safetensors"
    clip_weights.write_bytes(clip_weights.read_bytes()[:-8])  # present but truncated
    checks = doctor(roots, environment=False)

    model = by_name(checks, f"HyperLoRA model {FIDELITY}")[0]
    assert model.status == ERROR
    assert "missing or empty resampler.safetensors" in model.message
    assert "id_projector" not in model.message
    assert by_name(checks, "HyperLoRA models")[-1].status == ERROR  # no usable model at all

    clip = by_name(checks, "CLIP ViT-L/14")
    assert clip[0].status == ERROR and "is truncated" in clip[0].message and clip[0].fix
    assert clip[-1].status == ERROR and "no CLIP ViT-L/14" in clip[-1].message

    (faces,) = by_name(checks, "InsightFace antelopev2")
    assert faces.status == OK and "nested" in faces.message
    assert has_errors(checks)
    assert "fix: " in render(checks)


def test_single_file_clip_counts_as_installed(tmp_path: Path):
    roots = make_tree(tmp_path / "models")
    (roots.clip_vit / "clip_vit_large_14" / "config.json").unlink()
    make_clip_file(roots.clip_vision_files / "clip_l.safetensors")
    checks = by_name(doctor(roots, environment=False), "CLIP ViT-L/14")
    assert [c.status for c in checks] == [ERROR, OK]  # the broken folder is still reported
    assert checks[1].message.endswith("clip_l.safetensors")


def test_environment_checks_report_versions():
    checks = environment_checks()
    names = [c.name for c in checks]
    for expected in ("Python", "torch", "onnxruntime", "insightface"):
        assert expected in names
    assert "transformers" not in names  # the CLIP tower is ours: transformers is not needed
    onnx = next(c for c in checks if c.name == "onnxruntime")
    assert "CPUExecutionProvider" in onnx.message
    assert all(c.status in (OK, WARN, ERROR) for c in checks)


def test_clashing_onnxruntime_flavours_warn(monkeypatch):
    versions = {"onnxruntime": "1.20.0", "onnxruntime-gpu": "1.20.0"}
    monkeypatch.setattr(doctor_module, "_version", lambda name: versions.get(name, ""))
    checks = doctor_module._onnxruntime()
    (clash,) = [c for c in checks if c.name == "onnxruntime packages"]
    assert clash.status == WARN and "onnxruntime-gpu" in clash.message
    assert "install exactly one" in clash.fix


@pytest.mark.parametrize("package", ["insightface", "safetensors"])
def test_missing_package_is_an_error_with_a_fix(monkeypatch, package):
    real = doctor_module._version
    monkeypatch.setattr(doctor_module, "_version", lambda n: "" if n == package else real(n))
    (check,) = [c for c in environment_checks() if c.name == package]
    assert check.status == ERROR and "not installed" in check.message
    assert f"pip install {package}" in check.fix


def test_checks_serialise_to_plain_dicts(tmp_path: Path):
    checks = doctor(ModelRoots.from_models_dir(tmp_path), environment=False)
    data = checks[0].to_dict()
    assert set(data) == {"name", "status", "message", "fix"}
    assert all(isinstance(v, str) for v in data.values())


def test_corrupt_onnx_and_mismatched_model_files_are_errors(tmp_path: Path):
    import shutil

    from tests.factories import write_tiny_hyperlora

    roots = make_tree(tmp_path / "models")
    (roots.antelopev2 / "glintr100.onnx").write_bytes(b"\x08\x07" + b"\xff" * 300)
    other = write_tiny_hyperlora(tmp_path / "other", embedding_dim=16)  # another release
    shutil.copy(other / "resampler.safetensors", roots.hyper_lora / FIDELITY)
    checks = doctor(roots, environment=False)
    (faces,) = by_name(checks, "InsightFace antelopev2")
    assert faces.status == ERROR and "glintr100.onnx is not a readable ONNX model" in faces.message
    (model,) = by_name(checks, f"HyperLoRA model {FIDELITY}")
    assert model.status == ERROR and "must come from the same release" in model.message
