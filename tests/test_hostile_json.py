"""Absurdly nested JSON in a model folder or beside a saved identity: a clear error naming the
file (or, for an identity's record, the identity still listed), never a RecursionError."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hyperlora_ext.doctor import ERROR, doctor
from hyperlora_ext.engine.checkpoint import read_module_specs
from hyperlora_ext.engine.model import load_hyperlora
from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.identity import IdentityOptions, IdentityPipeline
from hyperlora_ext.models import list_hyperlora_models
from hyperlora_ext.store import RECORD_SUFFIX, IdentityStore
from tests import fake_antelopev2
from tests.encoders._photos import face_photo
from tests.factories import save_identity, write_tiny_clip, write_tiny_hyperlora
from tests.model_files import by_name

DEEP = "[" * 100_000 + "]" * 100_000
MODULES = "hyper_lora_modules.json"


@pytest.fixture
def roots(tmp_path):
    from hyperlora_ext.models import ModelRoots

    roots = ModelRoots.from_models_dir(tmp_path / "models")
    write_tiny_hyperlora(roots.hyper_lora / "deep")
    (roots.hyper_lora / "deep" / MODULES).write_text(DEEP)
    write_tiny_clip(roots.clip_vit / "clip_vit_large_14")
    fake_antelopev2.build(roots.antelopev2)
    return roots


def test_the_module_list_is_refused_by_name(roots):
    path = roots.hyper_lora / "deep" / MODULES
    for read in (read_module_specs, lambda p: load_hyperlora(p.parent, dtype=torch.float32)):
        with pytest.raises(HyperLoRAError, match="nested too deeply") as info:
            read(path)
        assert str(path) in str(info.value)


def test_prediction_refuses_the_model_by_name(roots):
    assert list_hyperlora_models(roots) == ["deep"]  # listing reads no JSON
    with pytest.raises(HyperLoRAError, match="nested too deeply") as info:
        IdentityPipeline(roots).predict([face_photo()], IdentityOptions("deep"))
    assert MODULES in str(info.value)


def test_doctor_reports_the_file(roots):
    checks = doctor(roots, environment=False)
    (model,) = by_name(checks, "HyperLoRA model deep")
    assert model.status == ERROR and "nested too deeply" in model.message


def test_a_saved_identity_with_such_a_record_is_still_listed(tmp_path: Path):
    store = IdentityStore(tmp_path / "Lora")
    save_identity(store, "alice")
    save_identity(store, "bob")
    (store.folder / f"alice{RECORD_SUFFIX}").write_text(DEEP)
    assert [record.name for record in store.list()] == ["alice", "bob"]
    assert store.record("alice").photos == 0 and store.record("bob").photos == 3
    assert store.record("alice").model == "fidelity"  # from the LoRA file's metadata


def test_a_tokens_file_with_such_a_header_is_damaged_tokens_by_name(tmp_path: Path):
    import struct

    from hyperlora_ext.store import NoTokensError

    store = IdentityStore(tmp_path / "Lora")
    save_identity(store, "alice", tokens=torch.ones(4, 3))
    header = DEEP.encode()
    store.tokens_path("alice").write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(NoTokensError, match=r"'alice'.*tokens file .* is damaged"):
        store.load_tokens("alice")
    assert store.load("alice").model == "fidelity"  # the identity itself still works
