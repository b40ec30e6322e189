"""The whole identity path on tiny models through the real loaders: photos -> LoRA -> file."""

from __future__ import annotations

import threading

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hyperlora_ext.errors import HyperLoRAError, ImageError, ModelNotFoundError, NoFaceError
from hyperlora_ext.export import export_lora
from hyperlora_ext.identity import IdentityOptions, IdentityPipeline
from hyperlora_ext.lora_format import kohya_to_webui_layer, sdxl_attention_modules
from hyperlora_ext.models import ModelRoots
from tests import fake_antelopev2
from tests.encoders._photos import face_photo
from tests.factories import tiny_modules, write_tiny_clip, write_tiny_hyperlora

MODEL = "tiny_fidelity"


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> ModelRoots:
    models = tmp_path_factory.mktemp("models")
    roots = ModelRoots.from_models_dir(models)
    write_tiny_hyperlora(roots.hyper_lora / MODEL)
    write_tiny_hyperlora(roots.hyper_lora / "tiny_edit", style="sgm", seed=1)
    write_tiny_clip(roots.clip_vit / "clip-vit-large-patch14")
    fake_antelopev2.build(roots.antelopev2)
    return roots


@pytest.fixture
def pipeline(roots) -> IdentityPipeline:
    return IdentityPipeline(roots, device="cpu", dtype=torch.float32)


def _photo(shift: int = 0) -> Image.Image:
    return face_photo(faces=((210 + shift, 90, 430 + shift, 390),))


def test_predicts_a_kohya_lora_for_every_module(pipeline):
    result = pipeline.predict([_photo()], IdentityOptions(MODEL))
    names = list(tiny_modules())
    assert len(result.lora) == len(names) * 4 * 3
    for name in names:
        for part in ("to_q", "to_k", "to_v", "to_out_0"):
            rank = result.lora[f"{name}_{part}.lora_down.weight"].shape[0]
            assert result.lora[f"{name}_{part}.lora_up.weight"].shape[1] == rank
            assert result.lora[f"{name}_{part}.alpha"].item() == rank / 2
    assert result.photos_used == 1 and not result.cache_hit
    assert [r.used for r in result.reports] == [True]
    assert result.peak_rss_mb > 0 and len(result.digest) == 12


def test_second_call_is_a_cache_hit_whatever_the_photo_order(pipeline, monkeypatch):
    first = pipeline.predict([_photo(), _photo(60)], IdentityOptions(MODEL))
    calls = []
    monkeypatch.setattr(pipeline, "_compute", lambda *a: calls.append(a))
    again = pipeline.predict([_photo(60), _photo()], IdentityOptions(MODEL))
    assert calls == [] and again.cache_hit and again.digest == first.digest


def test_options_model_and_photos_are_part_of_the_cache_key(pipeline):
    base = pipeline.predict([_photo()], IdentityOptions(MODEL))
    gray = pipeline.predict([_photo()], IdentityOptions(MODEL, grayscale=True))
    other_model = pipeline.predict([_photo()], IdentityOptions("tiny_edit"))
    other_photo = pipeline.predict([_photo(60)], IdentityOptions(MODEL))
    assert not (gray.cache_hit or other_model.cache_hit or other_photo.cache_hit)
    digests = {base.digest, gray.digest, other_model.digest, other_photo.digest}
    assert len(digests) == 4
    # the SGM-named model keeps its names as given
    assert any("input_blocks" in key for key in other_model.lora)


def test_face_index_only_counts_when_choosing_by_index(pipeline):
    first = pipeline.predict([_photo()], IdentityOptions(MODEL, face_index=0))
    again = pipeline.predict([_photo()], IdentityOptions(MODEL, face_index=3))
    assert again.cache_hit and again.digest == first.digest
    by_index = pipeline.predict([_photo()], IdentityOptions(MODEL, face_choice="index"))
    assert not by_index.cache_hit


def test_two_identical_photos_give_the_same_lora_as_one(pipeline):
    one = pipeline.predict([_photo()], IdentityOptions(MODEL))
    two = pipeline.predict([_photo(), _photo()], IdentityOptions(MODEL))
    for key, value in one.lora.items():
        torch.testing.assert_close(two.lora[key], value, rtol=1e-4, atol=1e-5)


def test_faceless_photo_is_reported_and_the_rest_is_used(pipeline):
    dark = Image.new("RGB", (320, 240), (20, 20, 20))
    result = pipeline.predict([_photo(), dark], IdentityOptions(MODEL))
    assert result.photos_used == 1
    assert [r.used for r in result.reports] == [True, False]
    assert result.warnings and "image 2" in result.warnings[0]


def test_no_usable_photo_raises_with_each_reason(pipeline):
    dark = Image.new("RGB", (320, 240), (20, 20, 20))
    with pytest.raises(NoFaceError, match="image 1"):
        pipeline.predict([dark], IdentityOptions(MODEL))


def test_undecodable_photo_names_the_image(pipeline):
    with pytest.raises(ImageError, match="image 2"):
        pipeline.predict([_photo(), b"not an image"], IdentityOptions(MODEL))


def test_unknown_model_explains_what_is_installed(pipeline):
    with pytest.raises(ModelNotFoundError, match=MODEL):
        pipeline.predict([_photo()], IdentityOptions("does_not_exist"))


def test_concurrent_predictions_compute_once(roots):
    pipeline = IdentityPipeline(roots, device="cpu", dtype=torch.float32)
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(pipeline.predict([_photo(30)], IdentityOptions(MODEL)))
        )
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({r.digest for r in results}) == 1
    assert sum(not r.cache_hit for r in results) == 1


def test_unload_frees_encoders_and_keeps_the_cache(pipeline):
    first = pipeline.predict([_photo()], IdentityOptions(MODEL))
    pipeline.unload()
    assert pipeline._engine is None and pipeline._clip is None
    assert pipeline.predict([_photo()], IdentityOptions(MODEL)).digest == first.digest


def test_photos_to_exported_file(pipeline, tmp_path):
    result = pipeline.predict([_photo()], IdentityOptions(MODEL))
    path = export_lora(
        result.lora, tmp_path, "alice", model=MODEL, photos=1, preview=result.reports[0].preview
    )
    loaded = load_file(path)
    assert set(loaded) == set(result.lora)
    sdxl_layers = {kohya_to_webui_layer(name) for name in sdxl_attention_modules()}
    for key in loaded:
        layer = key.split(".")[0].rsplit("_to_", 1)[0]
        assert kohya_to_webui_layer(layer) in sdxl_layers
    assert (tmp_path / "alice.preview.png").exists()


def test_cli_lora_writes_the_file_with_progress(roots, tmp_path, capsys):
    from hyperlora_ext.cli import main

    photo = tmp_path / "alice.png"
    _photo().save(photo)
    dark = tmp_path / "dark.png"
    Image.new("RGB", (100, 100)).save(dark)
    argv = ["lora", "--ref", str(photo), "--ref", str(dark), "--model", MODEL]
    argv += ["--out", str(tmp_path / "out" / "alice"), "--style", "sgm", "--dtype", "fp32"]
    argv += ["--models-dir", str(roots.models_dir)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "detecting faces" in err and "predicting the LoRA" in err
    assert "image 2 (dark.png)" in err and "skipped" in err
    keys = load_file(tmp_path / "out" / "alice.safetensors")
    assert all("down_blocks" not in key for key in keys)
    # a second run refuses to overwrite, with a clear message and exit code 1
    assert main(argv) == 1
    assert "already exists" in capsys.readouterr().err


def test_cli_lora_reports_missing_models(tmp_path, capsys):
    from hyperlora_ext.cli import main

    photo = tmp_path / "a.png"
    _photo().save(photo)
    argv = ["lora", "--ref", str(photo), "--out", str(tmp_path / "x.safetensors")]
    assert main([*argv, "--models-dir", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert "sdxl_hyper_id_lora_v1_fidelity" in err and "download" in err


def test_before_compute_runs_on_a_cache_miss_only(pipeline):
    calls: list[str] = []
    for label in ("miss", "hit"):
        pipeline.predict(
            [_photo(30)], IdentityOptions(MODEL), before_compute=lambda lb=label: calls.append(lb)
        )
    assert calls == ["miss"]


@pytest.mark.parametrize(
    ("device", "face_device", "cpu_only"),
    [("cpu", "auto", True), ("cuda", "auto", False), ("cuda", "cpu", True), ("cpu", "cuda", False)],
)
def test_face_device_chooses_the_onnxruntime_providers(roots, device, face_device, cpu_only):
    pipeline = IdentityPipeline(roots, device=device, face_device=face_device)
    providers = pipeline._face_analyzer().providers
    assert (providers == ["CPUExecutionProvider"]) is cpu_only
    assert cpu_only or providers is None  # None: onnxruntime's best available provider


def test_unknown_face_device_is_refused(roots):
    with pytest.raises(HyperLoRAError, match="face device"):
        IdentityPipeline(roots, face_device="tpu")
