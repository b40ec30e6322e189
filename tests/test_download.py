"""download: against a local fake of the hub's file layout; nothing reaches the network."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from hyperlora_ext import download as download_module
from hyperlora_ext.download import (
    STAGING,
    Sources,
    download,
    hub_file_sizes,
    pending,
    plan_downloads,
    split_source,
)
from hyperlora_ext.errors import CheckpointError, HyperLoRAError, InvalidNameError
from hyperlora_ext.facts import (
    ANTELOPEV2_FILES,
    CLIP_FILES,
    HYPERLORA_FILES,
    HYPERLORA_MODELS,
)
from hyperlora_ext.models import ModelRoots, resolve_antelopev2, resolve_clip, resolve_hyperlora
from tests.fake_hub import FakeHub
from tests.model_files import make_antelopev2, write_safetensors

SOURCES = Sources()


@pytest.fixture
def hub(tmp_path: Path) -> FakeHub:
    return FakeHub(tmp_path / "hub").add_defaults()


@pytest.fixture
def roots(tmp_path: Path) -> ModelRoots:
    return ModelRoots.from_models_dir(tmp_path / "models")


def run(roots: ModelRoots, hub: FakeHub, *, force: bool = False, log=None, **plan):
    items = plan_downloads(roots, size_floors={}, **plan)
    return download(
        items,
        downloader=hub.download,
        remote_sizes=hub.sizes,
        force=force,
        log=(log or (lambda message: None)),
    )


def test_fetches_everything_into_the_registry_layout(roots, hub):
    lines: list[str] = []
    steps: list[tuple[int, int]] = []
    items = plan_downloads(roots, size_floors={})
    outcomes = download(
        items,
        downloader=hub.download,
        remote_sizes=hub.sizes,
        log=lines.append,
        progress=lambda done, total: steps.append((done, total)),
    )
    total = 2 * len(HYPERLORA_FILES) + len(CLIP_FILES) + len(ANTELOPEV2_FILES)
    assert [o.action for o in outcomes] == ["installed"] * total
    assert steps == [(done, total) for done in range(1, total + 1)]
    for model in HYPERLORA_MODELS:
        folder = resolve_hyperlora(roots, model)
        remote = hub.root / SOURCES.hyperlora / model / "resampler.safetensors"
        assert (folder / "resampler.safetensors").read_bytes() == remote.read_bytes()
    assert resolve_clip(roots) == roots.clip_vit / "clip_vit_large_14"
    assert resolve_antelopev2(roots) == roots.antelopev2
    assert not list(roots.models_dir.rglob(STAGING))  # staging folders cleaned up
    assert any("HyperLoRA sdxl_hyper_id_lora_v1_fidelity" in line for line in lines)


def test_second_run_skips_installed_files(roots, hub):
    run(roots, hub)
    hub.calls.clear()
    outcomes = run(roots, hub)
    assert hub.calls == []
    assert {o.action for o in outcomes} == {"skipped"}


def test_truncated_download_is_rejected_and_not_installed(roots, hub):
    hub.truncate.add("model.safetensors")
    with pytest.raises(CheckpointError) as err:
        run(roots, hub, parts=["clip"])
    assert "model.safetensors" in str(err.value) and "source lists" in str(err.value)
    assert not (roots.clip_vit / "clip_vit_large_14" / "model.safetensors").exists()


def test_file_without_expected_tensors_is_rejected(roots, hub):
    remote = hub.root / SOURCES.hyperlora / HYPERLORA_MODELS[0] / "resampler.safetensors"
    write_safetensors(remote, ["something_else"])  # a different model under the same name
    with pytest.raises(CheckpointError, match="latents"):
        run(roots, hub, parts=["hyperlora"], models=HYPERLORA_MODELS[:1])
    assert not (roots.hyper_lora / HYPERLORA_MODELS[0] / "resampler.safetensors").exists()


def test_size_floor_rejects_implausibly_small_files(roots, hub):
    items = plan_downloads(roots, parts=["antelopev2"])  # the real floors: megabytes
    with pytest.raises(CheckpointError, match="at least"):
        download(items, downloader=hub.download, remote_sizes=hub.sizes, log=lambda m: None)
    assert not any(roots.antelopev2.glob("*.onnx"))


def test_failed_forced_download_keeps_the_good_file(roots, hub):
    run(roots, hub, parts=["clip"])
    installed = roots.clip_vit / "clip_vit_large_14" / "model.safetensors"
    before = installed.read_bytes()
    hub.truncate.add("model.safetensors")
    with pytest.raises(CheckpointError):
        run(roots, hub, parts=["clip"], force=True)
    assert installed.read_bytes() == before


def test_damaged_installed_file_is_replaced(roots, hub):
    run(roots, hub, parts=["clip"])
    installed = roots.clip_vit / "clip_vit_large_14" / "model.safetensors"
    good = installed.read_bytes()
    installed.write_bytes(good[:-10])  # e.g. a copy that was cut short
    hub.calls.clear()
    outcomes = run(roots, hub, parts=["clip"])
    assert hub.calls == [f"{SOURCES.clip}:model.safetensors"]
    assert [o.action for o in outcomes] == ["skipped", "installed"]
    assert installed.read_bytes() == good


def test_interrupted_run_resumes_with_the_remaining_files(roots, hub):
    hub.fail.add("glintr100.onnx")
    with pytest.raises(HyperLoRAError, match="run the command again to resume"):
        run(roots, hub, parts=["antelopev2"])
    failed_at = ANTELOPEV2_FILES.index("glintr100.onnx")
    for name in ANTELOPEV2_FILES[:failed_at]:  # fetched and checked before the failure
        assert (roots.antelopev2 / name).is_file()
    assert not (roots.antelopev2 / "glintr100.onnx").exists()
    hub.calls.clear()
    run(roots, hub, parts=["antelopev2"])
    assert hub.calls == [f"{SOURCES.antelopev2}:{n}" for n in ANTELOPEV2_FILES[failed_at:]]
    assert resolve_antelopev2(roots) == roots.antelopev2


def test_repository_without_the_file_is_a_wrong_source(roots, hub):
    shutil.rmtree(hub.root / SOURCES.hyperlora / HYPERLORA_MODELS[1])
    with pytest.raises(HyperLoRAError, match="has no file"):
        run(roots, hub, parts=["hyperlora"], models=HYPERLORA_MODELS[1:])
    assert hub.calls == []


def test_listing_failure_is_reported(roots, hub):
    def offline(repo_id: str):
        raise OSError("network unreachable")

    items = plan_downloads(roots, parts=["clip"], size_floors={})
    with pytest.raises(HyperLoRAError, match="could not list the files"):
        download(items, downloader=hub.download, remote_sizes=offline, log=lambda m: None)


def test_configurable_mirror_with_a_subfolder(roots, hub):
    mirror = hub.root / "someone" / "tools" / "insightface" / "antelopev2"
    shutil.copytree(hub.root / SOURCES.antelopev2, mirror)
    sources = Sources(antelopev2="someone/tools/insightface/antelopev2")
    run(roots, hub, parts=["antelopev2"], sources=sources)
    assert hub.calls[0] == "someone/tools:insightface/antelopev2/scrfd_10g_bnkps.onnx"
    assert resolve_antelopev2(roots) == roots.antelopev2


def test_installed_nested_antelopev2_is_kept_in_place(roots, hub):
    nested = make_antelopev2(roots, nested=True)
    (item,) = plan_downloads(roots, parts=["antelopev2"], size_floors={})
    assert item.folder == nested
    assert pending(item) == []


def test_not_enough_space_stops_before_downloading(roots, hub, monkeypatch):
    full_disk = SimpleNamespace(total=10, used=10, free=0)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: full_disk)
    with pytest.raises(HyperLoRAError, match="disk space"):
        run(roots, hub, parts=["clip"])
    assert hub.calls == []


def test_split_source():
    assert split_source("a/b") == ("a/b", "")
    assert split_source("a/b/c/d/") == ("a/b", "c/d")
    for bad in ("justname", "a/../b", ""):
        with pytest.raises(HyperLoRAError):
            split_source(bad)


def test_plan_rejects_bad_model_names_and_parts(roots):
    with pytest.raises(InvalidNameError):
        plan_downloads(roots, models=["../outside"])
    with pytest.raises(HyperLoRAError, match="unknown part"):
        plan_downloads(roots, parts=["everything"])


def test_default_hub_functions_are_called_the_way_huggingface_hub_expects(monkeypatch):
    # No network: check the call shapes against huggingface_hub's real signatures and types.
    huggingface_hub = pytest.importorskip("huggingface_hub")
    signature = inspect.signature(huggingface_hub.hf_hub_download)
    signature.bind(repo_id="a/b", filename="x/y.safetensors", local_dir="/tmp/somewhere")

    class FakeApi:
        def model_info(self, repo_id, files_metadata=False, timeout=None):
            assert files_metadata and timeout == download_module.LIST_TIMEOUT
            real = inspect.signature(huggingface_hub.HfApi.model_info)
            real.bind(self, repo_id, files_metadata=files_metadata, timeout=timeout)
            siblings = [
                huggingface_hub.hf_api.RepoSibling(rfilename="m/a.safetensors", size=123),
                huggingface_hub.hf_api.RepoSibling(rfilename="README.md", size=None),
            ]
            return SimpleNamespace(siblings=siblings)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert hub_file_sizes("a/b") == {"m/a.safetensors": 123}


def test_listing_gives_up_on_a_server_that_never_answers(monkeypatch):
    import socket
    import threading

    from huggingface_hub import constants
    from huggingface_hub.utils._http import reset_sessions

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held = []
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(download_module, "LIST_TIMEOUT", 0.5)
    reset_sessions()
    try:
        with pytest.raises(HyperLoRAError, match=r"did not answer within 0\.5 s"):
            download_module.hub_file_sizes("someone/something")
    finally:
        reset_sessions()
        server.close()


def test_a_file_in_use_names_the_cause(roots, hub, monkeypatch):
    """Windows refuses to replace a file a running WebUI has mapped: say so, not a traceback."""
    run(roots, hub, parts=["clip"])
    installed = roots.clip_vit / "clip_vit_large_14" / "model.safetensors"
    installed.write_bytes(installed.read_bytes()[:-10])

    def refuse(source, target):
        raise PermissionError(13, "The process cannot access the file", str(target))

    monkeypatch.setattr(download_module.os, "replace", refuse)
    monkeypatch.setattr("hyperlora_ext.files.os.replace", refuse)
    with pytest.raises(HyperLoRAError, match=r"in use.*close it and run the command again"):
        run(roots, hub, parts=["clip"])
