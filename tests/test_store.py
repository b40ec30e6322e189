"""Saved identities: files on disk, records, loading, deleting, and names that cannot escape."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hyperlora_ext.errors import ExportExistsError, HyperLoRAError, InvalidNameError
from hyperlora_ext.lora_format import lora_digest
from hyperlora_ext.store import (
    RECORD_SUFFIX,
    IdentityNotFoundError,
    IdentityStore,
    check_name,
    get_store,
)
from tests.factories import STORE_PREFIX as PREFIX
from tests.factories import save_identity, tiny_lora


@pytest.fixture
def store(tmp_path):
    return IdentityStore(tmp_path / "Lora")


def test_save_writes_lora_card_preview_and_record(store):
    preview = Image.new("RGB", (8, 8), (200, 10, 10))
    record = save_identity(store, options={"face": "largest"}, preview=preview)
    folder = store.folder
    assert folder.name == "hyperlora"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(
        ["alice.safetensors", "alice.json", "alice.preview.png", f"alice{RECORD_SUFFIX}"]
    )
    on_disk = json.loads((folder / f"alice{RECORD_SUFFIX}").read_text())
    assert on_disk["model"] == "fidelity" and on_disk["photos"] == 3
    assert on_disk["options"] == {"face": "largest"}
    assert on_disk["created"].endswith("+00:00")
    assert record.digest == lora_digest(load_file(folder / "alice.safetensors"))
    assert record.prompt_tag == "<lora:alice:0.8>"
    assert store.preview_path("alice") == folder / "alice.preview.png"


def test_load_returns_the_stored_tensors_and_their_digest(store):
    record = save_identity(store)
    loaded = store.load("alice")
    original = tiny_lora(0)
    assert set(loaded.lora) == set(original)
    down = f"{PREFIX}.lora_down.weight"
    assert torch.allclose(loaded.lora[down].float(), original[down], atol=1e-2)
    assert loaded.digest == record.digest == lora_digest(loaded.lora)
    assert loaded.model == "fidelity"
    assert get_store(store.folder.parent).load("alice").digest == record.digest


def test_load_is_cached_until_the_file_changes(store):
    save_identity(store)
    assert store.load("alice") is store.load("alice")
    first = store.load("alice").digest
    save_identity(store, seed=1, overwrite=True)
    assert store.load("alice").digest != first


def test_existing_name_needs_overwrite(store):
    save_identity(store)
    with pytest.raises(ExportExistsError, match="already exists"):
        save_identity(store, seed=1)
    assert save_identity(store, seed=1, overwrite=True).digest == store.load("alice").digest


def test_list_names_and_records(store):
    save_identity(store, "bob")
    save_identity(store, "Alice")
    assert store.names() == ["Alice", "bob"]
    assert [r.name for r in store.list()] == ["Alice", "bob"]
    assert store.exists("bob") and not store.exists("carol")
    assert IdentityStore(store.folder / "nowhere").names() == []


def test_a_lora_without_record_or_with_a_broken_one_is_still_listed(store):
    save_identity(store, "alice")
    (store.folder / f"alice{RECORD_SUFFIX}").write_text("{not json")
    save_identity(store, "bob")
    (store.folder / f"bob{RECORD_SUFFIX}").unlink()
    records = {r.name: r for r in store.list()}
    assert records["alice"].model == "" and records["bob"].photos == 0
    assert store.load("bob").digest == lora_digest(load_file(store.folder / "bob.safetensors"))


def test_delete_removes_every_file(store):
    save_identity(store, preview=Image.new("RGB", (4, 4)))
    save_identity(store, "bob")
    removed = store.delete("alice")
    assert len(removed) == 4
    assert [p.name for p in store.folder.iterdir() if p.name.startswith("alice")] == []
    assert store.names() == ["bob"]
    with pytest.raises(IdentityNotFoundError, match=r"alice.*saved: bob"):
        store.load("alice")
    with pytest.raises(IdentityNotFoundError):
        store.delete("alice")
    with pytest.raises(IdentityNotFoundError):
        store.record("alice")


BAD_NAMES = [
    "",
    "   ",
    "../escape",
    "..",
    "a/b",
    "a\\b",
    "/etc/passwd",
    "C:evil",
    "name\x00",
    "tab\there",
    " padded",
    "con",
    "x" * 101,
    "semi;colon",
    "..hidden",
    None,
    7,
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_that_are_not_plain_stems_are_refused_everywhere(store, tmp_path, name):
    with pytest.raises(InvalidNameError):
        check_name(name)
    for action in (store.load, store.delete, store.record, store.exists):
        with pytest.raises(InvalidNameError):
            action(name)
    with pytest.raises(InvalidNameError):
        save_identity(store, name)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == []


def test_refusal_suggests_a_usable_name():
    with pytest.raises(InvalidNameError, match="'my face'"):
        check_name("my face!")
    assert check_name("Alice (2024) [v2].final") == "Alice (2024) [v2].final"


def test_symlinks_leaving_the_folder_are_refused(store, tmp_path):
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(b"not yours")
    store.folder.mkdir(parents=True)
    (store.folder / "evil.safetensors").symlink_to(outside)
    with pytest.raises(InvalidNameError, match="outside"):
        store.load("evil")
    with pytest.raises(InvalidNameError):
        store.delete("evil")
    assert outside.read_bytes() == b"not yours"


def test_an_unreadable_lora_file_is_a_clear_error(store):
    store.folder.mkdir(parents=True)
    (store.folder / "broken.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(Exception, match=r"cannot be read.*delete it"):
        store.load("broken")


def test_an_identity_cannot_take_over_another_identitys_record(store):
    save_identity(store, "victim", seed=1)
    record = (store.folder / f"victim{RECORD_SUFFIX}").read_text()
    with pytest.raises(InvalidNameError):
        save_identity(store, "victim.hyperlora", seed=2)
    with pytest.raises(InvalidNameError):
        store.delete("victim.hyperlora")
    assert (store.folder / f"victim{RECORD_SUFFIX}").read_text() == record
    assert store.record("victim").model


def test_a_name_differing_only_in_case_is_refused(store):
    save_identity(store, "alice")
    with pytest.raises(InvalidNameError, match="letter case"):
        save_identity(store, "ALICE", overwrite=True)
    assert store.names() == ["alice"]


def test_a_folder_named_like_a_lora_is_not_an_identity(store):
    save_identity(store, "alice")
    (store.folder / "x.safetensors").mkdir()
    assert store.names() == ["alice"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_concurrent_saves_of_one_name(store, overwrite):
    from concurrent.futures import ThreadPoolExecutor

    def attempt(seed):
        try:
            save_identity(store, "race", seed=seed, overwrite=overwrite)
            return "saved"
        except ExportExistsError:
            return "exists"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(40)))
    assert outcomes.count("saved") == (40 if overwrite else 1)
    assert store.load("race").digest == store.record("race").digest
    assert not [p for p in store.folder.iterdir() if p.name.startswith(".")]


def test_an_empty_lora_file_is_refused(store):
    from safetensors.torch import save_file

    store.folder.mkdir(parents=True)
    save_file({}, str(store.folder / "empty.safetensors"))
    with pytest.raises(HyperLoRAError, match="no tensors"):
        store.load("empty")


# ------------------------------------------------------------------ tokens for mixing


def test_tokens_are_kept_beside_an_ordinary_lora(store):
    tokens = torch.randn(8, 6)
    save_identity(store, tokens=tokens)
    lora_file = store.folder / "alice.safetensors"
    assert set(load_file(lora_file)) == set(tiny_lora())  # the LoRA holds only LoRA keys
    assert store.tokens_path("alice").name == "alice.hyperlora.tokens"
    assert store.names() == ["alice"]  # the sidecar is no identity and no LoRA file
    assert torch.equal(store.load_tokens("alice"), tokens)
    removed = {p.name for p in store.delete("alice")}
    assert "alice.hyperlora.tokens" in removed and not store.tokens_path("alice").exists()


def test_identity_saved_without_tokens_still_loads_and_says_why_it_cannot_mix(store):
    from hyperlora_ext.errors import NoTokensError

    save_identity(store)
    assert store.load("alice").lora.keys() == tiny_lora().keys()
    with pytest.raises(NoTokensError, match=r"saved before mixing existed.*works as a LoRA"):
        store.load_tokens("alice")


def test_tokens_of_a_replaced_lora_are_refused(store):
    from safetensors.torch import save_file

    from hyperlora_ext.errors import NoTokensError

    save_identity(store, tokens=torch.randn(8, 6))
    save_file(tiny_lora(seed=5), str(store.folder / "alice.safetensors"))
    with pytest.raises(NoTokensError, match="does not belong to its LoRA"):
        store.load_tokens("alice")


def test_overwriting_without_tokens_drops_the_old_tokens(store):
    save_identity(store, tokens=torch.randn(8, 6))
    save_identity(store, seed=1, overwrite=True)
    assert not store.tokens_path("alice").exists()


def test_two_writers_past_the_existence_check_cannot_both_save(tmp_path, monkeypatch):
    """Two stores on one folder (two processes, or the UI and the API of two WebUIs) save one name
    at the same moment: both pass any "does it exist" check before either writes; one wins."""
    import contextlib
    import threading

    import safetensors.torch

    both_writing = threading.Barrier(2, timeout=5)
    real_save_file = safetensors.torch.save_file

    def save_file_in_step(*args, **kwargs):
        # A check-then-write store lets both writers get here; a broken barrier means the other
        # writer was refused before writing, which is also fine.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_writing.wait()
        return real_save_file(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file_in_step)
    stores = [IdentityStore(tmp_path / "Lora") for _ in range(2)]
    outcomes: list[str] = []

    def attempt(store, seed):
        try:
            save_identity(store, "race", seed=seed)
            outcomes.append(f"saved {seed}")
        except ExportExistsError:
            outcomes.append("exists")

    threads = [threading.Thread(target=attempt, args=(s, i)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes)[0] == "exists" and len(outcomes) == 2, outcomes
    winner = int(next(o for o in outcomes if o.startswith("saved")).split()[1])
    assert store_digest(stores[0], "race") == lora_digest(tiny_lora(winner))


def store_digest(store, name):
    return lora_digest(load_file(store.lora_path(name)))


def test_the_likeness_reference_is_stored_in_the_record_exactly(store):
    import numpy as np

    reference = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    reference /= np.linalg.norm(reference)
    save_identity(store, reference_embedding=reference)
    on_disk = json.loads((store.folder / f"alice{RECORD_SUFFIX}").read_text())
    assert len(on_disk["reference_embedding"]) == 512
    again = np.asarray(store.record("alice").reference_embedding, np.float32)
    np.testing.assert_allclose(again, reference, rtol=0, atol=1e-7)
    assert store.load("alice").likeness_reference == store.record("alice").reference_embedding


@pytest.mark.parametrize("stored", [None, [0.5] * 3, "text", [[1.0] * 512] * 2, [0.0] * 512])
def test_a_record_without_a_usable_reference_reads_as_none(store, stored):
    save_identity(store)  # an identity saved before the likeness reference existed has none
    path = store.folder / f"alice{RECORD_SUFFIX}"
    data = json.loads(path.read_text())
    assert data["reference_embedding"] == []
    path.write_text(json.dumps({**data, "reference_embedding": stored}))
    assert store.record("alice").reference_embedding == ()
