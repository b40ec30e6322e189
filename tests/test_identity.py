"""The whole identity path on tiny models through the real loaders: photos -> LoRA -> file."""

from __future__ import annotations

import io
import threading
import weakref

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hyperlora_ext import loaded_models
from hyperlora_ext.errors import CheckpointError, HyperLoRAError, ModelNotFoundError, NoFaceError
from hyperlora_ext.export import export_lora
from hyperlora_ext.identity import IdentityOptions, IdentityPipeline
from hyperlora_ext.lora_format import kohya_to_webui_layer, sdxl_attention_modules
from hyperlora_ext.models import ModelRoots, resolve_hyperlora
from tests.encoders._photos import count_decoded_alive
from tests.factories import tiny_modules, write_tiny_hyperlora
from tests.tiny_tree import MODEL, _photo


def test_predicts_a_kohya_lora_for_every_module(pipeline):
    result = pipeline.predict([_photo()], IdentityOptions(MODEL))
    names = list(tiny_modules())
    assert len(result.lora) == len(names) * 4 * 3
    for name in names:
        for part in ("to_q", "to_k", "to_v", "to_out_0"):
            rank = result.lora[f"{name}_{part}.lora_down.weight"].shape[0]
            assert result.lora[f"{name}_{part}.lora_up.weight"].shape[1] == rank
            assert result.lora[f"{name}_{part}.alpha"].item() == rank / 2
    assert result.photos == 1 and not result.cache_hit
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
    assert result.photos == 1
    assert [r.used for r in result.reports] == [True, False]
    assert result.warnings and "image 2" in result.warnings[0]


def test_no_usable_photo_raises_with_each_reason(pipeline):
    dark = Image.new("RGB", (320, 240), (20, 20, 20))
    with pytest.raises(NoFaceError, match="image 1"):
        pipeline.predict([dark], IdentityOptions(MODEL))


def test_an_unreadable_photo_is_skipped_and_reported_by_name(pipeline):
    labels = ["image 1 (alice.jpg)", "image 2 (broken.jpg)"]
    result = pipeline.predict([_photo(), b"not an image"], IdentityOptions(MODEL), labels=labels)
    assert result.photos == 1
    assert [r.used for r in result.reports] == [True, False]
    assert result.warnings == ["image 2 (broken.jpg): not a recognised image format. Use a JPEG, "
                               "PNG, WebP, BMP, GIF or TIFF file."]  # fmt: skip


def test_only_unreadable_photos_name_each_one(pipeline):
    with pytest.raises(NoFaceError, match=r"(?s)image 1: the file is empty.*image 2: not a"):
        pipeline.predict([b"", b"not an image"], IdentityOptions(MODEL))


def test_a_cache_hit_reports_this_calls_photos_in_this_calls_order(pipeline):
    dark = Image.new("RGB", (320, 240), (20, 20, 20))
    first = pipeline.predict(
        [_photo(), dark],
        IdentityOptions(MODEL),
        labels=["image 1 (alice.jpg)", "image 2 (blank.jpg)"],
    )
    hit = pipeline.predict(
        [dark.copy(), _photo()],
        IdentityOptions(MODEL),
        labels=["image 1 (blank2.jpg)", "image 2 (alice2.jpg)"],
    )
    assert hit.cache_hit and hit.digest == first.digest
    assert [r.label for r in hit.reports] == ["image 1 (blank2.jpg)", "image 2 (alice2.jpg)"]
    assert [r.used for r in hit.reports] == [False, True]
    assert len(hit.warnings) == 1 and hit.warnings[0].startswith("image 1 (blank2.jpg): no face")


def test_editing_a_result_in_place_does_not_change_later_cache_hits(pipeline):
    first = pipeline.predict([_photo()], IdentityOptions(MODEL))
    saved = {key: tensor.clone() for key, tensor in first.lora.items()}
    for tensor in first.lora.values():
        tensor.mul_(0)
    hit = pipeline.predict([_photo()], IdentityOptions(MODEL))
    assert hit.cache_hit
    for key, tensor in saved.items():
        assert torch.equal(hit.lora[key], tensor)
    next(iter(hit.lora.values())).add_(1)
    assert torch.equal(pipeline.predict([_photo()], IdentityOptions(MODEL)).lora[key], saved[key])


def test_nan_weights_are_reported_instead_of_a_nan_lora(tmp_path, roots):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = ModelRoots.from_models_dir(tmp_path)
    shutil.copytree(roots.hyper_lora / MODEL, broken.hyper_lora / "nan")
    shutil.copytree(roots.clip_vit, broken.clip_vit)
    shutil.copytree(roots.insightface, broken.insightface)
    path = broken.hyper_lora / "nan" / "id_projector.safetensors"
    tensors = load_file(path)
    next(iter(tensors.values())).fill_(float("nan"))
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        IdentityPipeline(broken).predict([_photo()], IdentityOptions("nan"))


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


def test_unload_frees_encoders_and_keeps_the_cache(pipeline, monkeypatch):
    first = pipeline.predict([_photo()], IdentityOptions(MODEL))
    engine = weakref.ref(pipeline.models.engine)
    trims: list[bool] = []
    monkeypatch.setattr(loaded_models, "return_freed_memory", lambda: trims.append(True))
    pipeline.unload()
    assert pipeline.models.engine is None and pipeline.models.clip is None
    assert engine() is None and trims == [True]  # gone, and its memory handed back to the OS
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
    providers = pipeline.models.face_analyzer().providers
    assert (providers == ["CPUExecutionProvider"]) is cpu_only
    assert cpu_only or providers is None  # None: onnxruntime's best available provider


def test_unknown_face_device_is_refused(roots):
    with pytest.raises(HyperLoRAError, match="face device"):
        IdentityPipeline(roots, face_device="tpu")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_photos_are_decoded_one_at_a_time_across_requests(roots, monkeypatch):
    """Bounded memory: no decoded photo is alive when the next one is decoded, within one
    request and across concurrent ones (only the compressed bytes wait for the lock)."""
    alive_at_decode = count_decoded_alive(monkeypatch)
    pipeline = IdentityPipeline(roots, device="cpu", dtype=torch.float32)
    start = threading.Barrier(2)
    results = []

    def request(shift):
        photos = [_png(_photo(shift + 7 * i)) for i in range(3)]
        start.wait()
        results.append(pipeline.predict(photos, IdentityOptions(MODEL)).photos)

    threads = [threading.Thread(target=request, args=(shift,)) for shift in (3, 50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [3, 3]
    assert len(alive_at_decode) >= 6 and max(alive_at_decode) == 0, alive_at_decode


def test_preload_loads_every_encoder_and_a_job_then_loads_nothing(pipeline, monkeypatch):
    thread = pipeline.preload(IdentityOptions(MODEL))
    thread.join(timeout=120)
    assert pipeline.models.engine is not None and pipeline.models.clip is not None
    assert pipeline.models.faces.loaded
    from hyperlora_ext.engine import model

    def no_load(*args, **kwargs):
        raise AssertionError("the preloaded models must be used")

    monkeypatch.setattr(model, "load_hyperlora", no_load)
    assert pipeline.predict([_photo()], IdentityOptions(MODEL)).photos == 1


def test_a_job_waits_for_a_running_preload(pipeline, monkeypatch):
    from hyperlora_ext.engine import model

    loads, release = [], threading.Event()
    real = model.load_hyperlora

    def slow_load(*args, **kwargs):
        release.wait(timeout=60)
        loads.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "load_hyperlora", slow_load)
    thread = pipeline.preload(IdentityOptions(MODEL))
    assert pipeline.preload(IdentityOptions(MODEL)) is None  # one at a time
    threading.Timer(0.3, release.set).start()
    assert pipeline.predict([_photo()], IdentityOptions(MODEL)).photos == 1
    thread.join(timeout=60)
    assert loads == [1]


def test_a_failed_preload_is_raised_by_the_next_job_then_retried(tmp_path, caplog):
    broken = ModelRoots.from_models_dir(tmp_path / "models")
    write_tiny_hyperlora(broken.hyper_lora / MODEL)
    pipeline = IdentityPipeline(broken, device="cpu", dtype=torch.float32)
    pipeline.preload(IdentityOptions(MODEL)).join(timeout=60)  # no CLIP installed there
    assert "loading the models in the background failed" in caplog.text
    with pytest.raises(ModelNotFoundError, match="CLIP"):
        pipeline.predict([_photo()], IdentityOptions(MODEL))
    assert pipeline._preload_error is None  # reported once; the next job tries again


def test_a_preload_error_is_not_lost_when_the_next_job_would_load_fine(pipeline, monkeypatch):
    monkeypatch.setattr(pipeline.models, "face_analyzer", lambda: 1 / 0)
    pipeline.preload(IdentityOptions(MODEL)).join(timeout=60)
    monkeypatch.undo()
    with pytest.raises(ZeroDivisionError):
        pipeline.predict([_photo()], IdentityOptions(MODEL))
    assert pipeline.predict([_photo()], IdentityOptions(MODEL)).photos == 1


def test_free_after_use_unloads_the_encoders_but_keeps_the_cache(roots):
    pipeline = IdentityPipeline(roots, device="cpu", dtype=torch.float32, free_after_use=True)
    first = pipeline.predict([_photo()], IdentityOptions(MODEL))
    models = pipeline.models
    assert models.engine is None and models.clip is None and models.faces is None
    again = pipeline.predict([_photo()], IdentityOptions(MODEL))
    assert again.cache_hit and again.digest == first.digest
    other = pipeline.predict([_photo(60)], IdentityOptions(MODEL))  # loads them again
    assert not other.cache_hit and pipeline.models.engine is None


def test_the_engine_as_a_module_moves_the_engine(pipeline):
    pipeline.predict([_photo()], IdentityOptions(MODEL))
    engine = pipeline.models.engine
    module = engine.module()
    assert module is engine.module()
    sizes = sum(t.numel() * t.element_size() for t in module.parameters())
    assert sizes == engine.nbytes()
    assert module.to("meta") is module and engine.device == torch.device("meta")
    assert all(t.is_meta for t in module.parameters())


def test_starting_a_preload_never_waits_for_a_running_one(pipeline, monkeypatch):
    from hyperlora_ext.engine import model

    entered, release = threading.Event(), threading.Event()
    real = model.load_hyperlora

    def slow_load(*args, **kwargs):
        entered.set()  # the preload holds the pipeline lock from here on
        release.wait(timeout=60)
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "load_hyperlora", slow_load)
    thread = pipeline.preload(IdentityOptions(MODEL))
    assert entered.wait(timeout=60)
    second = threading.Thread(target=pipeline.preload, args=(IdentityOptions(MODEL),))
    second.start()
    second.join(timeout=10)
    assert not second.is_alive()  # a UI event that turns HyperLoRA on returns at once
    release.set()
    thread.join(timeout=60)


@pytest.mark.parametrize(("device", "mapped"), [("cpu", True), ("meta", False)])
def test_bases_are_mapped_on_a_cpu_and_stacked_for_other_devices(roots, device, mapped):
    """A GPU (here the meta device, which moves like one) gets stacked copies to move; a CPU
    pipeline leaves the bases in the file's memory map."""
    pipeline = IdentityPipeline(roots, device=device, dtype=torch.float16)
    engine = pipeline.models.load_engine(resolve_hyperlora(roots, MODEL))
    assert engine.device.type == device
    assert all(group.stacked != mapped for group in engine.bank.groups)
    assert (engine.mapped_nbytes() > 0) == mapped


def _truncated_copy(roots: ModelRoots, tmp_path, name: str, file: str) -> ModelRoots:
    """Roots beside ``roots`` holding MODEL and a copy of it named ``name`` with ``file`` cut."""
    import shutil

    copy = ModelRoots.from_models_dir(tmp_path)
    shutil.copytree(roots.hyper_lora / MODEL, copy.hyper_lora / MODEL)
    shutil.copytree(roots.hyper_lora / MODEL, copy.hyper_lora / name)
    shutil.copytree(roots.clip_vit, copy.clip_vit)
    shutil.copytree(roots.insightface, copy.insightface)
    path = copy.hyper_lora / name / file
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return copy


def test_a_bad_model_does_not_break_later_new_faces_on_a_working_model(tmp_path, roots):
    copy = _truncated_copy(roots, tmp_path, "cut", "hyper_lora_modules.safetensors")
    pipeline = IdentityPipeline(copy, dtype=torch.float32, free_after_use=False)
    pipeline.predict([_photo()], IdentityOptions(MODEL))  # the working model is loaded
    with pytest.raises(CheckpointError, match="truncated"):
        pipeline.predict([_photo(5)], IdentityOptions("cut"))
    result = pipeline.predict([_photo(10)], IdentityOptions(MODEL))  # a new face: no cache hit
    assert not result.cache_hit and result.photos == 1
