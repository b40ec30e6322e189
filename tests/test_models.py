"""Model registry: layout, listing, resolution, safe names and file checks, on temp folders.

The ``make_*`` builders are shared with the doctor, download and CLI tests.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from hyperlora_ext import models as models_module
from hyperlora_ext.errors import InvalidNameError, ModelNotFoundError
from hyperlora_ext.facts import (
    HYPERLORA_FILES,
    HYPERLORA_MODELS,
    FileSpec,
)
from hyperlora_ext.model_files import check_file
from hyperlora_ext.models import (
    ModelRoots,
    default_hyperlora,
    default_models_dir,
    describe_hyperlora,
    inspect_antelopev2,
    list_clip_encoders,
    list_hyperlora_models,
    resolve_antelopev2,
    resolve_clip,
    resolve_hyperlora,
    safe_child,
)
from tests.model_files import (
    FIDELITY,
    make_antelopev2,
    make_clip,
    make_clip_file,
    make_hyperlora,
    write_safetensors,
)


@pytest.fixture
def roots(tmp_path: Path) -> ModelRoots:
    return ModelRoots.from_models_dir(tmp_path / "models")


# ------------------------------------------------------------------- layout
def test_default_layout_follows_the_official_plugin(tmp_path):
    roots = ModelRoots.from_models_dir(tmp_path)
    assert roots.hyper_lora == tmp_path / "hyper_lora" / "hyper_lora"
    assert roots.clip_vit == tmp_path / "hyper_lora" / "clip_vit"
    assert roots.insightface == tmp_path / "insightface"
    assert roots.antelopev2 == tmp_path / "insightface" / "models" / "antelopev2"
    assert roots.clip_vision_files == tmp_path / "clip_vision"
    assert str(tmp_path) in roots.download_hint()


def test_hints_repeat_overridden_folders(tmp_path):
    roots = ModelRoots.from_models_dir(tmp_path / "my models")
    assert roots.download_hint().endswith(f'--models-dir "{tmp_path / "my models"}"')
    moved = replace(roots, insightface=tmp_path / "faces")
    assert moved.cli_arguments().endswith(f"--insightface-dir {tmp_path / 'faces'}")
    assert "--hyper-lora-dir" not in moved.cli_arguments()


def test_default_models_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HYPERLORA_MODELS_DIR", str(tmp_path / "m"))
    assert default_models_dir() == tmp_path / "m"
    monkeypatch.delenv("HYPERLORA_MODELS_DIR")
    monkeypatch.chdir(tmp_path)
    assert default_models_dir() == tmp_path / "models"  # outside a WebUI
    webui = tmp_path / "webui"
    installed = webui / "extensions" / "sd-webui-hyperlora" / "hyperlora_ext" / "models.py"
    installed.parent.mkdir(parents=True)
    monkeypatch.setattr(models_module, "__file__", str(installed))
    assert default_models_dir() == webui / "models"


# ---------------------------------------------------------------- HyperLoRA
def test_lists_and_resolves_complete_models_only(roots):
    make_hyperlora(roots, "b_model")
    make_hyperlora(roots, "a_model")
    (roots.hyper_lora / "a_model" / "resampler.safetensors").unlink()
    (roots.hyper_lora / ".hyperlora-download" / "x").mkdir(parents=True)  # staging is hidden
    assert list_hyperlora_models(roots) == ["b_model"]
    assert resolve_hyperlora(roots, "b_model") == roots.hyper_lora / "b_model"


def test_without_a_choice_fidelity_is_used_when_both_released_models_are_installed(roots):
    # "edit" sorts first alphabetically; the authors' workflows all use fidelity
    for name in (*HYPERLORA_MODELS, "a_custom", "z_custom"):
        make_hyperlora(roots, name)
    assert default_hyperlora(roots) == FIDELITY
    assert list_hyperlora_models(roots) == [*HYPERLORA_MODELS, "a_custom", "z_custom"]


def test_without_fidelity_the_edit_model_comes_before_other_folders(roots):
    for name in ("a_custom", HYPERLORA_MODELS[1]):
        make_hyperlora(roots, name)
    assert default_hyperlora(roots) == HYPERLORA_MODELS[1]


def test_without_any_model_the_default_says_how_to_get_one(roots):
    with pytest.raises(ModelNotFoundError, match="python -m hyperlora_ext download"):
        default_hyperlora(roots)


def test_released_models_are_described_and_others_keep_their_name():
    assert "likeness" in describe_hyperlora(FIDELITY) and "default" in describe_hyperlora(FIDELITY)
    assert "editability" in describe_hyperlora(HYPERLORA_MODELS[1])
    assert describe_hyperlora("my_model") == "my_model"


def test_incomplete_model_lists_exactly_what_is_missing(roots):
    folder = make_hyperlora(roots)
    (folder / "resampler.safetensors").unlink()
    (folder / "id_projector.safetensors").write_bytes(b"")  # empty counts as missing
    with pytest.raises(ModelNotFoundError) as err:
        resolve_hyperlora(roots, FIDELITY)
    message = str(err.value)
    assert str(folder) in message
    assert "resampler.safetensors" in message and "id_projector.safetensors" in message
    assert "hyper_lora_modules.json" not in message  # present files are not blamed
    assert "download" in message


def test_unknown_model_says_where_it_goes_and_what_is_installed(roots):
    make_hyperlora(roots, "other")
    with pytest.raises(ModelNotFoundError) as err:
        resolve_hyperlora(roots, FIDELITY)
    message = str(err.value)
    assert str(roots.hyper_lora / FIDELITY) in message
    assert "Installed: other" in message
    assert all(spec.name in message for spec in HYPERLORA_FILES)


def test_empty_model_name_is_not_found(roots):
    with pytest.raises(ModelNotFoundError, match="no HyperLoRA model chosen"):
        resolve_hyperlora(roots, "")


@pytest.mark.parametrize(
    "name",
    ["..", ".", "../secret", "a/b", "a\\b", "/etc", "C:evil", "x\x00y", " x", "x\n", "~/m"],
)
def test_names_that_could_escape_are_rejected(roots, name):
    make_hyperlora(roots)
    with pytest.raises(InvalidNameError):
        resolve_hyperlora(roots, name)
    with pytest.raises(InvalidNameError):
        safe_child(roots.hyper_lora, name)


def test_symlink_leaving_the_root_is_rejected(roots, tmp_path):
    outside = make_hyperlora(ModelRoots.from_models_dir(tmp_path / "elsewhere"), "real")
    roots.hyper_lora.mkdir(parents=True)
    (roots.hyper_lora / "evil").symlink_to(outside, target_is_directory=True)
    (roots.hyper_lora / "loop").symlink_to(roots.hyper_lora / "loop")
    assert list_hyperlora_models(roots) == []
    with pytest.raises(InvalidNameError, match="outside"):
        resolve_hyperlora(roots, "evil")
    with pytest.raises(InvalidNameError):
        resolve_hyperlora(roots, "loop")


def test_symlink_inside_the_root_is_allowed(roots):
    make_hyperlora(roots, "real")
    (roots.hyper_lora / "alias").symlink_to(roots.hyper_lora / "real", target_is_directory=True)
    assert list_hyperlora_models(roots) == ["alias", "real"]
    assert resolve_hyperlora(roots, "alias") == roots.hyper_lora / "alias"


# --------------------------------------------------------------------- CLIP
def test_clip_folder_default_prefers_the_official_name(roots):
    make_clip(roots, "another")
    make_clip(roots, "clip_vit_large_14")
    assert list_clip_encoders(roots) == ["another", "clip_vit_large_14"]
    assert resolve_clip(roots) == roots.clip_vit / "clip_vit_large_14"
    assert resolve_clip(roots, "another") == roots.clip_vit / "another"


def test_clip_missing_config_is_named(roots):
    folder = make_clip(roots)
    (folder / "config.json").unlink()
    with pytest.raises(ModelNotFoundError) as err:
        resolve_clip(roots)
    assert "config.json" in str(err.value) and str(folder) in str(err.value)
    with pytest.raises(ModelNotFoundError, match=r"missing or empty config\.json"):
        resolve_clip(roots, "clip_vit_large_14")


def test_no_clip_at_all_explains_where_it_goes(roots):
    with pytest.raises(ModelNotFoundError) as err:
        resolve_clip(roots)
    assert str(roots.clip_vit / "clip_vit_large_14") in str(err.value)
    assert "openai/clip-vit-large-patch14" in str(err.value)


def test_single_file_vit_l14_encoders_are_found_by_header(roots):
    files = roots.clip_vision_files
    make_clip_file(files / "clip_l.safetensors")
    make_clip_file(files / "clip_h.safetensors", width=1280, layers=32)  # IP-Adapter's ViT-H
    write_safetensors(files / "junk.safetensors", ["x"])
    (files / "notes.txt").write_text("hi")
    assert list_clip_encoders(roots) == ["clip_l.safetensors"]
    assert resolve_clip(roots) == files / "clip_l.safetensors"
    assert resolve_clip(roots, "clip_l.safetensors") == files / "clip_l.safetensors"
    with pytest.raises(ModelNotFoundError, match="not a CLIP ViT-L/14"):
        resolve_clip(roots, "clip_h.safetensors")
    with pytest.raises(ModelNotFoundError, match="no file"):
        resolve_clip(roots, "absent.safetensors")
    with pytest.raises(InvalidNameError):
        resolve_clip(roots, "../clip_vision/clip_l.safetensors")


# --------------------------------------------------------------- antelopev2
@pytest.mark.parametrize("nested", [False, True])
def test_antelopev2_both_layouts(roots, nested):
    folder = make_antelopev2(roots, nested=nested)
    assert resolve_antelopev2(roots) == folder
    assert inspect_antelopev2(roots).complete


def test_antelopev2_missing_says_where(roots):
    with pytest.raises(ModelNotFoundError) as err:
        resolve_antelopev2(roots)
    assert str(roots.antelopev2) in str(err.value)
    assert "glintr100.onnx" in str(err.value)


def test_antelopev2_incomplete_lists_missing_files(roots):
    folder = make_antelopev2(roots, nested=True)
    (folder / "glintr100.onnx").unlink()
    (folder / "genderage.onnx").unlink()  # not used by HyperLoRA: not required
    with pytest.raises(ModelNotFoundError) as err:
        resolve_antelopev2(roots)
    assert "missing glintr100.onnx." in str(err.value)
    assert str(folder) in str(err.value)


def test_resolved_antelopev2_folder_is_accepted_by_the_face_analyzer(roots):
    faces = pytest.importorskip("hyperlora_ext.encoders.faces")
    folder = make_antelopev2(roots, nested=True)
    assert faces.find_pack(resolve_antelopev2(roots)) == folder


# --------------------------------------------------------------- file checks
def test_check_file_catches_broken_downloads(tmp_path):
    spec = FileSpec("resampler.safetensors", ("latents", "proj_in.weight"))
    good = write_safetensors(tmp_path / "resampler.safetensors", ["latents", "proj_in.weight"])
    assert check_file(good, spec) is None
    assert check_file(good, spec, expected_size=good.stat().st_size) is None
    assert "source lists" in check_file(good, spec, expected_size=good.stat().st_size + 1)
    assert "at least" in check_file(good, FileSpec(spec.name, min_bytes=10**9))

    wrong = write_safetensors(tmp_path / "w" / "resampler.safetensors", ["latents"])
    assert "proj_in.weight" in check_file(wrong, spec)

    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(good.read_bytes()[:-4])
    assert "not a complete safetensors" in check_file(truncated, spec)

    pointer = tmp_path / "p.safetensors"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    assert "not a complete safetensors" in check_file(pointer, spec)

    bad_json = tmp_path / "x.json"
    bad_json.write_text("<html>rate limited</html>")
    assert "not valid JSON" in check_file(bad_json, FileSpec("x.json"))
    assert "missing" in check_file(tmp_path / "absent.json", FileSpec("absent.json"))


def test_registry_does_not_import_heavy_modules():
    # models.py is imported by the pipeline and the CLI; it must stay light.
    code = (
        "import sys, hyperlora_ext.models; "
        "heavy = ('torch', 'insightface', 'onnxruntime', 'transformers', 'huggingface_hub'); "
        "sys.exit(sorted(n for n in heavy if n in sys.modules) or 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("file_name", [spec.name for spec in HYPERLORA_FILES])
def test_model_file_linked_outside_the_folder_is_refused(roots, tmp_path, file_name):
    """A model *file* that is a link leading out of its folder is refused like a folder link."""
    folder = make_hyperlora(roots, "linked")
    outside = tmp_path / "elsewhere" / file_name
    outside.parent.mkdir()
    (folder / file_name).rename(outside)
    (folder / file_name).symlink_to(outside)
    assert list_hyperlora_models(roots) == []
    with pytest.raises(InvalidNameError, match="outside"):
        resolve_hyperlora(roots, "linked")


def test_clip_file_linked_outside_the_folder_is_refused(roots, tmp_path):
    folder = make_clip(roots, "linked")
    outside = tmp_path / "elsewhere.safetensors"
    (folder / "model.safetensors").rename(outside)
    (folder / "model.safetensors").symlink_to(outside)
    assert list_clip_encoders(roots) == []
    with pytest.raises(InvalidNameError, match="outside"):
        resolve_clip(roots, "linked")
