"""preload.py options on a real argparse parser, and their use in hyperlora_ext.webui.cmd_opts."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from hyperlora_ext.webui import cmd_opts

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def preload_module():
    spec = importlib.util.spec_from_file_location("preload", ROOT / "preload.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def parser(preload_module):
    parser = argparse.ArgumentParser()
    parser.add_argument("--use-cpu", nargs="+", default=[], type=str.lower)  # as in A1111
    preload_module.preload(parser)
    return parser


def test_defaults(parser):
    opts = parser.parse_args([])
    assert opts.hyperlora_models_dir is None
    assert opts.hyperlora_insightface_dir is None
    assert opts.hyperlora_face_device == "auto"
    assert opts.hyperlora_device == "auto"


def test_values_parse(parser):
    opts = parser.parse_args(
        [
            "--hyperlora-models-dir=/data/models",
            "--hyperlora-insightface-dir",
            "/data/insightface",
            "--hyperlora-face-device",
            "cpu",
            "--hyperlora-device=cuda",
        ]
    )
    assert opts.hyperlora_models_dir == "/data/models"
    assert opts.hyperlora_insightface_dir == "/data/insightface"
    assert (opts.hyperlora_face_device, opts.hyperlora_device) == ("cpu", "cuda")


@pytest.mark.parametrize("flag", ["--hyperlora-face-device", "--hyperlora-device"])
def test_unknown_device_is_rejected(parser, flag, capsys):
    with pytest.raises(SystemExit):
        parser.parse_args([flag, "tpu"])
    assert "invalid choice" in capsys.readouterr().err


def test_second_preload_does_not_break_the_parser(parser, preload_module):
    preload_module.preload(parser)  # e.g. two copies of the extension
    assert parser.parse_args(["--hyperlora-device", "cpu"]).hyperlora_device == "cpu"


def test_preload_imports_only_the_standard_library_and_the_facts():
    code = (
        "import importlib.util, sys\n"
        "path = list(sys.path)\n"
        f"spec = importlib.util.spec_from_file_location('preload', {str(ROOT / 'preload.py')!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "assert sys.path == path, 'sys.path changed'\n"
        "heavy = {'torch', 'numpy', 'gradio', 'insightface', 'modules'}\n"
        "ours = {m for m in sys.modules if m.startswith('hyperlora_ext')}\n"
        "print(sorted(heavy & set(sys.modules)), sorted(ours))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (
        out.stdout.strip() == "[] ['hyperlora_ext', 'hyperlora_ext.errors', 'hyperlora_ext.facts']"
    )


# --- cmd_opts: options -> ModelRoots and devices ---


def make_layout(models: Path) -> Path:
    """The official plugin / ComfyUI layout: hyper_lora/{hyper_lora,clip_vit}/ and insightface/."""
    (models / "hyper_lora" / "hyper_lora" / "sdxl_hyper_id_lora_v1_fidelity").mkdir(parents=True)
    (models / "hyper_lora" / "clip_vit" / "clip_vit_large_14").mkdir(parents=True)
    (models / "insightface" / "models" / "antelopev2").mkdir(parents=True)
    return models


def test_default_roots_are_under_the_webui_models_folder(parser, tmp_path):
    roots = cmd_opts.roots_from_cmd_opts(parser.parse_args([]), tmp_path)
    assert roots.hyper_lora == tmp_path / "hyper_lora" / "hyper_lora"
    assert roots.clip_vit == tmp_path / "hyper_lora" / "clip_vit"
    assert roots.insightface == tmp_path / "insightface"


@pytest.mark.parametrize("given", ["ComfyUI/models", "ComfyUI", "ComfyUI/models/hyper_lora"])
def test_comfyui_layout_is_found_from_any_of_its_folders(parser, tmp_path, given):
    models = make_layout(tmp_path / "ComfyUI" / "models")
    opts = parser.parse_args(["--hyperlora-models-dir", str(tmp_path / given)])
    roots = cmd_opts.roots_from_cmd_opts(opts, tmp_path / "webui" / "models")
    assert roots.hyper_lora == models / "hyper_lora" / "hyper_lora"
    assert roots.clip_vit == models / "hyper_lora" / "clip_vit"
    assert roots.insightface == models / "insightface"


def test_insightface_dir_overrides_only_insightface(parser, tmp_path):
    opts = parser.parse_args(["--hyperlora-insightface-dir", str(tmp_path / "faces")])
    roots = cmd_opts.roots_from_cmd_opts(opts, tmp_path / "models")
    assert roots.insightface == tmp_path / "faces"
    assert roots.hyper_lora == tmp_path / "models" / "hyper_lora" / "hyper_lora"


def test_options_missing_from_cmd_opts_mean_defaults(tmp_path):
    bare = argparse.Namespace()  # preload.py did not run
    assert cmd_opts.roots_from_cmd_opts(bare, tmp_path).insightface == tmp_path / "insightface"
    assert cmd_opts.face_device(bare) == cmd_opts.encoder_device(bare) == "auto"


def test_use_cpu_sends_auto_devices_to_the_cpu(parser):
    for task in ("all", "hyperlora"):
        opts = parser.parse_args(["--use-cpu", task, "--hyperlora-face-device", "cuda"])
        assert cmd_opts.encoder_device(opts) == "cpu"
        assert cmd_opts.face_device(opts) == "cuda"  # an explicit choice wins
    opts = parser.parse_args(["--use-cpu", "interrogate"])
    assert cmd_opts.face_device(opts) == "auto"
