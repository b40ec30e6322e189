"""Model files on disk: truncation is read from the header; replacements are seen and reloaded."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hyperlora_ext.doctor import ERROR, model_checks
from hyperlora_ext.errors import CheckpointError
from hyperlora_ext.identity import IdentityOptions, IdentityPipeline
from hyperlora_ext.model_files import fingerprint, truncation
from hyperlora_ext.models import ModelRoots, inspect_hyperlora, list_hyperlora_models
from tests import fake_antelopev2
from tests.encoders._photos import face_photo
from tests.factories import write_tiny_clip, write_tiny_hyperlora

BASES = "hyper_lora_modules.safetensors"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> ModelRoots:
    """Two tiny models of the same shapes (files of equal sizes), a CLIP and antelopev2."""
    roots = ModelRoots.from_models_dir(tmp_path_factory.mktemp("models"))
    write_tiny_hyperlora(roots.hyper_lora / "a", seed=0)
    write_tiny_hyperlora(roots.hyper_lora / "b", seed=1)
    write_tiny_clip(roots.clip_vit / "clip-vit-large-patch14")
    fake_antelopev2.build(roots.antelopev2)
    return roots


@pytest.fixture
def roots(source, tmp_path) -> ModelRoots:
    shutil.copytree(source.models_dir, tmp_path / "models")
    return ModelRoots.from_models_dir(tmp_path / "models")


def _cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _overwrite_in_place(source: Path, target: Path) -> None:
    """What ``cp -p`` / ``rsync -t`` do: same inode, new bytes, the old mtime put back."""
    times = target.stat()
    with open(target, "r+b") as file:  # no truncation: the same size throughout
        file.write(source.read_bytes())
    os.utime(target, ns=(times.st_atime_ns, times.st_mtime_ns))


def test_truncation_is_read_from_the_header(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"a": torch.zeros(100), "b": torch.ones(100)}, str(path))
    assert truncation(path) == ""
    size = path.stat().st_size
    for keep in (size - 1, size - 500, 12, 3, 0):
        _cut(path, keep)
        assert "truncated" in truncation(path) and str(path) in truncation(path)
    path.write_bytes((20).to_bytes(8, "little") + b"{not json at all}...")
    assert "not a readable safetensors file" in truncation(path)
    assert truncation(tmp_path / "missing.safetensors") == ""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_not_opened(tmp_path):
    os.mkfifo(tmp_path / "model.safetensors")
    assert truncation(tmp_path / "model.safetensors") == ""  # would block if opened
    assert fingerprint(tmp_path / "model.safetensors")[-1] == ""


def test_a_truncated_model_is_incomplete_and_doctor_says_which_file(roots):
    bases = roots.hyper_lora / "b" / BASES
    _cut(bases, bases.stat().st_size - 10)
    status = {s.name: s for s in inspect_hyperlora(roots)}
    assert status["a"].complete and not status["b"].complete
    assert str(bases) in status["b"].problem and "truncated" in status["b"].problem
    assert list_hyperlora_models(roots) == ["a"]
    errors = [c for c in model_checks(roots) if c.status == ERROR]
    assert len(errors) == 1 and str(bases) in errors[0].message


def test_a_same_size_replacement_with_its_mtime_restored_is_reloaded(roots):
    photo, options = face_photo(), IdentityOptions("a")
    pipeline = IdentityPipeline(roots, dtype=torch.float32)
    expected_b = pipeline.predict([photo], IdentityOptions("b")).digest
    before = pipeline.predict([photo], options).digest
    for name in ("resampler.safetensors", "id_projector.safetensors", BASES):
        _overwrite_in_place(roots.hyper_lora / "b" / name, roots.hyper_lora / "a" / name)
    after = pipeline.predict([photo], options)
    assert not after.cache_hit and after.digest == expected_b != before


def test_a_model_rewritten_during_a_job_is_refused_then_reloaded(roots):
    photo, options = face_photo(), IdentityOptions("a")
    pipeline = IdentityPipeline(roots, dtype=torch.float32)
    expected_b = pipeline.predict([photo], IdentityOptions("b")).digest

    def rewrite(stage: str) -> None:
        if stage == "predicting the LoRA":
            _overwrite_in_place(roots.hyper_lora / "b" / BASES, roots.hyper_lora / "a" / BASES)

    with pytest.raises(CheckpointError, match="changed while this identity was computed"):
        pipeline.predict([photo], options, progress=rewrite)
    for name in ("resampler.safetensors", "id_projector.safetensors"):
        _overwrite_in_place(roots.hyper_lora / "b" / name, roots.hyper_lora / "a" / name)
    assert pipeline.predict([photo], options).digest == expected_b


TRUNCATE_DURING_JOB = """
import os, sys
import torch
from hyperlora_ext.errors import CheckpointError
from hyperlora_ext.identity import IdentityOptions, IdentityPipeline
from hyperlora_ext.models import ModelRoots
from tests.encoders._photos import face_photo

roots = ModelRoots.from_models_dir(sys.argv[1])
bases = roots.hyper_lora / "a" / "hyper_lora_modules.safetensors"

def truncate(stage):  # what `cp new old` does first, while the bases are mapped
    if stage == "predicting the LoRA":
        os.truncate(bases, 100)

pipeline = IdentityPipeline(roots, dtype=torch.float32)  # mapped bases on the CPU
try:
    pipeline.predict([face_photo()], IdentityOptions("a"), progress=truncate)
except CheckpointError as error:
    print("refused:", error)
"""


def test_a_bases_file_cut_during_a_job_is_refused_not_a_bus_error(roots):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", TRUNCATE_DURING_JOB, str(roots.models_dir)],
        env=dict(os.environ, PYTHONPATH=str(root)), cwd=root, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "refused:" in done.stdout and "changed while" in done.stdout


def test_a_truncated_clip_is_named_when_no_other_is_usable(roots):
    from hyperlora_ext.errors import ModelNotFoundError
    from hyperlora_ext.models import resolve_clip

    weights = roots.clip_vit / "clip-vit-large-patch14" / "model.safetensors"
    _cut(weights, weights.stat().st_size // 2)
    with pytest.raises(ModelNotFoundError, match="truncated") as info:
        resolve_clip(roots)
    assert str(weights) in str(info.value)


def test_an_unreadable_file_has_a_fingerprint(tmp_path, monkeypatch):
    from hyperlora_ext import model_files

    path = tmp_path / "notes.txt"
    path.write_text("not a model file")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(model_files, "open", denied, raising=False)
    assert fingerprint(path)[-1] == "unreadable: 13"
