"""``python -m hyperlora_ext``: exit codes and messages of doctor and download."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hyperlora_ext import cli
from hyperlora_ext import download as download_module
from hyperlora_ext.facts import HYPERLORA_MODELS
from hyperlora_ext.models import ModelRoots, resolve_hyperlora
from tests.fake_hub import FakeHub
from tests.model_files import FIDELITY, make_tree


@pytest.fixture
def hub(tmp_path: Path, monkeypatch) -> FakeHub:
    """The CLI's downloads go to a local fake hub with the real size floors lifted."""
    fake = FakeHub(tmp_path / "hub").add_defaults()
    monkeypatch.setattr(download_module, "_hub_downloader", lambda: fake.download)
    monkeypatch.setattr(download_module, "hub_file_sizes", fake.sizes)
    for name in download_module.SIZE_FLOORS:
        monkeypatch.setitem(download_module.SIZE_FLOORS, name, 1)
    return fake


def test_doctor_exit_codes(tmp_path: Path, capsys):
    models = tmp_path / "models"
    assert cli.main(["doctor", "--models-only", "--models-dir", str(models)]) == 1
    out = capsys.readouterr().out
    assert "[ERROR] HyperLoRA models" in out and "python -m hyperlora_ext download" in out

    make_tree(models)
    assert cli.main(["doctor", "--models-only", "--models-dir", str(models)]) == 0
    assert "All good" in capsys.readouterr().out


def test_doctor_json(tmp_path: Path, capsys):
    roots = make_tree(tmp_path / "models")
    code = cli.main(["doctor", "--json", "--models-only", "--models-dir", str(roots.models_dir)])
    checks = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {c["status"] for c in checks} == {"ok"}


def test_folder_overrides(tmp_path: Path, capsys):
    roots = make_tree(tmp_path / "elsewhere")
    args = ["doctor", "--models-only", "--models-dir", str(tmp_path / "empty")]
    args += ["--hyper-lora-dir", str(roots.hyper_lora), "--clip-vit-dir", str(roots.clip_vit)]
    args += ["--insightface-dir", str(roots.insightface)]
    assert cli.main(args) == 0
    assert str(roots.hyper_lora / FIDELITY) in capsys.readouterr().out


def test_download_installs_and_is_idempotent(tmp_path: Path, hub, capsys):
    models = tmp_path / "models"
    assert cli.main(["download", "--models-dir", str(models)]) == 0
    assert "installed" in capsys.readouterr().out
    roots = ModelRoots.from_models_dir(models)
    assert all(resolve_hyperlora(roots, name) for name in HYPERLORA_MODELS)
    assert cli.main(["doctor", "--models-only", "--models-dir", str(models)]) == 0
    hub.calls.clear()
    assert cli.main(["download", "--models-dir", str(models)]) == 0
    assert hub.calls == []
    assert "0 file(s) installed" in capsys.readouterr().out


def test_download_only_one_part_and_model_alias(tmp_path: Path, hub):
    models = tmp_path / "models"
    args = ["download", "--models-dir", str(models), "--only", "hyperlora", "--model", "edit"]
    assert cli.main(args) == 0
    roots = ModelRoots.from_models_dir(models)
    assert (roots.hyper_lora / HYPERLORA_MODELS[1]).is_dir()
    assert not (roots.hyper_lora / HYPERLORA_MODELS[0]).exists()
    assert not roots.clip_vit.exists() and not roots.insightface.exists()


def test_download_dry_run_changes_nothing(tmp_path: Path, hub, capsys):
    models = tmp_path / "models"
    assert cli.main(["download", "--dry-run", "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    assert (
        "bytedance-research/HyperLoRA: sdxl_hyper_id_lora_v1_fidelity/resampler.safetensors" in out
    )
    assert "DIAMONIK7777/antelopev2: glintr100.onnx" in out
    assert hub.calls == [] and not models.exists()


def test_download_failures_exit_1_with_a_message(tmp_path: Path, hub, capsys):
    models = tmp_path / "models"
    hub.truncate.add("model.safetensors")
    assert cli.main(["download", "--models-dir", str(models), "--only", "clip"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model.safetensors" in err and "not installed" in err

    # a mirror that does not hold the pack
    args = ["download", "--models-dir", str(models), "--antelopev2-repo", "nobody/nothing"]
    assert cli.main([*args, "--only", "antelopev2"]) == 1
    assert "nobody/nothing has no file" in capsys.readouterr().err


def test_invalid_model_name_exits_1(tmp_path: Path, hub, capsys):
    args = ["download", "--models-dir", str(tmp_path), "--model", "../../etc"]
    assert cli.main(args) == 1
    assert "not usable as a model name" in capsys.readouterr().err
    assert hub.calls == []


def test_real_size_floors_reject_tiny_files(tmp_path: Path, hub, capsys, monkeypatch):
    monkeypatch.setitem(download_module.SIZE_FLOORS, "config.json", 10**6)
    assert cli.main(["download", "--models-dir", str(tmp_path), "--only", "clip"]) == 1
    assert "expected at least" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["nonsense"], ["download", "--only", "everything"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_interrupt_exits_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_doctor", interrupted)
    assert cli.main(["doctor"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path: Path):
    command = [sys.executable, "-m", "hyperlora_ext", "doctor", "--models-only"]
    result = subprocess.run(
        [*command, "--models-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 1
    assert "InsightFace antelopev2" in result.stdout
