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


def test_another_store_replacing_the_file_with_the_same_size_and_mtime_is_seen(store, tmp_path):
    """A save from another store (process) within the file system's timestamp tick, or a copy
    that restores the old mtime, gives a file of the same size and mtime: not the cached one."""
    import os

    save_identity(store)
    first = store.load("alice").digest
    stat = store.lora_path("alice").stat()
    save_identity(IdentityStore(tmp_path / "Lora"), seed=1, overwrite=True)
    os.utime(store.lora_path("alice"), ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert store.lora_path("alice").stat().st_size == stat.st_size
    assert store.load("alice").digest == lora_digest(tiny_lora(1)) != first


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
    assert records["alice"].photos == records["bob"].photos == 0
    # the model is still known (from the LoRA file), so a mix still picks the right one
    assert records["alice"].model == records["bob"].model == "fidelity"
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

    both_writing = threading.Barrier(2, timeout=1)
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


# ------------------------------------------- store instances sharing a folder (issue 21)


def _consistent(store, name):
    """The identity's LoRA, record and tokens are of one save (the tokens encode the seed)."""
    loaded = store.load(name)
    tokens = store.load_tokens(name)
    seed = int(tokens[0, 0])
    assert loaded.digest == store.record(name).digest == lora_digest(tiny_lora(seed))
    return seed


def test_two_store_instances_racing_saves_and_deletes_lose_nothing(tmp_path):
    """Two WebUI processes (or a script) sharing a folder: saves, deletes and reads of the same
    names from two stores raise nothing but "not found", never mix one save's files with
    another's, and every identity saved last is there whole."""
    import random
    import threading

    stores = [IdentityStore(tmp_path / "Lora") for _ in range(2)]
    unexpected: list[BaseException] = []

    def work(worker: int) -> None:
        store, rng = stores[worker % 2], random.Random(worker)
        for step in range(25):
            name, seed = rng.choice(["a", "b"]), worker * 100 + step
            try:
                action = rng.choice(["save", "save", "delete", "read"])
                if action == "save":
                    tokens = torch.full((4, 3), float(seed))
                    save_identity(store, name, seed, overwrite=True, tokens=tokens)
                elif action == "delete":
                    store.delete(name)
                else:  # what a generation and a mix read: each consistent in itself
                    loaded = store.load(name)
                    assert lora_digest(loaded.lora) == loaded.digest
                    assert loaded.model == "fidelity" and loaded.photos == 3
                    store.load_tokens(name)
            except IdentityNotFoundError:
                pass
            except Exception as error:  # the test's finding (AssertionError included)
                unexpected.append(error)
        save_identity(store, f"own {worker}", seed=worker, tokens=torch.full((4, 3), float(worker)))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert unexpected == [], [f"{type(e).__name__}: {e}" for e in unexpected[:3]]
    for worker in range(4):
        assert _consistent(stores[1 - worker % 2], f"own {worker}") == worker
    for name in set(stores[0].names()) & {"a", "b"}:
        _consistent(stores[1], name)
    assert not [p for p in stores[0].folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_mix_read_during_another_stores_save_gets_the_new_tokens(tmp_path, overwrite):
    """Another process's save is between its LoRA and its tokens file when the mix reads them:
    the read waits for the save instead of calling the identity old or replaced."""
    import threading

    from hyperlora_ext import store as identities

    writer, reader = IdentityStore(tmp_path / "Lora"), IdentityStore(tmp_path / "Lora")
    if overwrite:
        save_identity(writer, "alice", seed=1, tokens=torch.full((4, 3), 1.0))
    lora_written, reader_started = threading.Event(), threading.Event()
    real_write_tokens = identities._write_tokens

    def write_tokens_late(*args, **kwargs):
        lora_written.set()
        reader_started.wait(5)
        threading.Event().wait(0.2)  # the reader has met the half-saved identity by now
        real_write_tokens(*args, **kwargs)

    identities._write_tokens = write_tokens_late
    try:
        saving = threading.Thread(
            target=save_identity,
            args=(writer, "alice", 2),
            kwargs={"overwrite": True, "tokens": torch.full((4, 3), 2.0)},
        )
        saving.start()
        assert lora_written.wait(5)
        reader_started.set()
        tokens = reader.load_tokens("alice")
        saving.join()
    finally:
        identities._write_tokens = real_write_tokens
    assert int(tokens[0, 0]) == 2


def test_a_save_waits_for_a_held_lock_and_takes_over_a_stale_one(store):
    import os
    import threading
    import time

    from hyperlora_ext.folder_lock import LOCK_NAME, STALE_LOCK_SECONDS

    store.folder.mkdir(parents=True)
    lock = store.folder / LOCK_NAME
    lock.touch()  # another process is saving
    saving = threading.Thread(target=save_identity, args=(store, "alice"))
    saving.start()
    saving.join(0.3)
    assert saving.is_alive() and not store.exists("alice")
    lock.unlink()
    saving.join(5)
    assert store.exists("alice") and not lock.exists()
    lock.touch()  # left behind by a process that crashed while saving
    old = time.time() - STALE_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    save_identity(store, "bob")
    assert store.names() == ["alice", "bob"] and not lock.exists()


# ---------------------------------------------------------- what the messages blame


@pytest.mark.parametrize(
    "damage",
    [
        b"not a safetensors file",
        torch.full((4, 3), float("nan")),
        torch.ones(12),
        torch.ones(2, 2, 3),
    ],
)
def test_damaged_tokens_are_called_damaged_not_a_replaced_lora(store, damage):
    from safetensors.torch import save_file

    from hyperlora_ext.store import NoTokensError

    record = save_identity(store, tokens=torch.randn(4, 3))
    path = store.tokens_path("alice")
    if isinstance(damage, bytes):
        path.write_bytes(damage)
    else:
        save_file({"tokens": damage}, str(path), metadata={"lora_digest": record.digest})
    with pytest.raises(
        NoTokensError, match=r"'alice'.*alice\.hyperlora\.tokens is damaged"
    ) as info:
        store.load_tokens("alice")
    assert "replaced" not in str(info.value)


def test_a_lora_placed_by_hand_says_it_was_not_made_by_hyperlora(store):
    from safetensors.torch import save_file

    from hyperlora_ext.store import NoReferenceError, NoTokensError

    store.folder.mkdir(parents=True)
    save_file(tiny_lora(), str(store.folder / "civitai.safetensors"))
    for read, error in (
        (store.load_tokens, NoTokensError),
        (store.likeness_reference, NoReferenceError),
    ):
        with pytest.raises(error, match=r"'civitai'.*not made by HyperLoRA") as info:
            read("civitai")
        assert "saved before" not in str(info.value)


def test_an_identity_saved_before_references_says_so(store):
    from hyperlora_ext.store import NoReferenceError

    save_identity(store)
    with pytest.raises(NoReferenceError, match=r"'alice'.*saved before references were recorded"):
        store.likeness_reference("alice")
    save_identity(store, "bob", reference_embedding=[1.0] * 512)
    assert store.likeness_reference("bob") == store.record("bob").reference_embedding
    assert len(store.likeness_reference("bob")) == 512


WORKER = """
import random, sys, torch
from hyperlora_ext.errors import IdentityNotFoundError
from hyperlora_ext.store import IdentityStore
from tests.factories import save_identity

worker, folder = int(sys.argv[1]), sys.argv[2]
store, rng = IdentityStore(folder), random.Random(worker)
for step in range(30):
    name, seed = rng.choice("ab"), worker * 100 + step
    try:
        action = rng.choice(["save", "save", "delete", "read"])
        if action == "save":
            save_identity(store, name, seed, overwrite=True, tokens=torch.full((4, 3), float(seed)))
        elif action == "delete":
            store.delete(name)
        else:
            store.load_tokens(name)
    except IdentityNotFoundError:
        pass
    except Exception as error:
        print(f"{type(error).__name__}: {error}")
save_identity(store, f"own {worker}", seed=worker, tokens=torch.full((4, 3), float(worker)))
"""


def test_two_processes_sharing_a_folder_lose_nothing(tmp_path):
    """Two WebUIs (processes) on one Lora folder, each with its own store."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(worker), str(tmp_path / "Lora")],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for worker in (1, 2)
    ]
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    assert outputs == ["", ""]
    store = IdentityStore(tmp_path / "Lora")
    assert {"own 1", "own 2"} <= set(store.names())
    for name in store.names():
        seed = _consistent(store, name)
        assert name[-1] == str(seed) if name.startswith("own") else seed >= 100
    assert not [p for p in store.folder.iterdir() if p.name.startswith(".")]


def test_a_folder_that_refuses_the_lock_is_a_clear_error_not_a_hang(store, monkeypatch):
    import os

    from hyperlora_ext.folder_lock import LOCK_NAME

    real_open = os.open

    def refusing_open(path, *args, **kwargs):
        if str(path).endswith(LOCK_NAME):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(HyperLoRAError, match=r"cannot write into .*hyperlora.*Permission denied"):
        save_identity(store)
    assert not store.exists("alice")


# ------------------------------------------------------------------------------ rename
def _files_of(store, name):
    return sorted(p.name for p in store.folder.iterdir() if p.name.split(".")[0] == name)


def test_rename_moves_every_file_and_keeps_the_identity(store):
    from safetensors import safe_open

    preview = Image.new("RGB", (4, 4), (1, 2, 3))
    before = save_identity(store, preview=preview, tokens=torch.ones(2, 3))
    reference = store.load_tokens("alice")
    record = store.rename("alice", "carol")
    assert _files_of(store, "alice") == []
    assert _files_of(store, "carol") == sorted(
        f"carol{s}"
        for s in (".safetensors", ".json", ".preview.png", RECORD_SUFFIX, ".hyperlora.tokens")
    )
    assert store.names() == ["carol"]
    assert (record.name, record.digest, record.photos) == ("carol", before.digest, 3)
    assert record.created == before.created
    assert json.loads((store.folder / f"carol{RECORD_SUFFIX}").read_text())["name"] == "carol"
    assert store.load("carol").digest == before.digest
    assert torch.equal(store.load_tokens("carol"), reference)  # the tokens still belong to it
    with safe_open(store.folder / "carol.safetensors", "pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_output_name"] == metadata["modelspec.title"] == "carol"
    assert [p.name for p in store.folder.iterdir() if p.name.startswith(".rename")] == []
    with pytest.raises(IdentityNotFoundError):
        store.load("alice")


def test_rename_refuses_an_existing_name_unless_overwriting(store):
    save_identity(store, "alice", seed=0, tokens=torch.ones(2, 3))
    bob = save_identity(store, "bob", seed=1)
    with pytest.raises(ExportExistsError, match="'bob' exists"):
        store.rename("alice", "bob")
    assert store.names() == ["alice", "bob"] and store.record("bob").digest == bob.digest
    alice = store.record("alice")
    record = store.rename("alice", "bob", overwrite=True)
    assert store.names() == ["bob"] and record.digest == alice.digest != bob.digest
    assert store.load("bob").digest == alice.digest


def test_rename_checks_names_and_existence(store):
    save_identity(store)
    save_identity(store, "Bob", seed=1)
    with pytest.raises(InvalidNameError):
        store.rename("alice", "../escape")
    with pytest.raises(InvalidNameError, match="letter case"):
        store.rename("alice", "bob")
    with pytest.raises(IdentityNotFoundError):
        store.rename("nobody", "carol")
    assert store.rename("alice", "Alice").name == "Alice"  # a change of case is allowed
    assert store.names() == ["Alice", "Bob"]
    assert store.rename("Alice", "Alice").name == "Alice"


def test_a_failed_rename_leaves_both_identities_as_they_were(store, monkeypatch):
    from hyperlora_ext import store_rename

    save_identity(store, "alice", seed=0, preview=Image.new("RGB", (4, 4)))
    save_identity(store, "bob", seed=1)
    before = {p.name: p.read_bytes() for p in store.folder.iterdir() if p.is_file()}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_rename.shutil, "copy2", full_disk)
    with pytest.raises(OSError, match="No space"):
        store.rename("alice", "bob", overwrite=True)
    after = {p.name: p.read_bytes() for p in store.folder.iterdir() if p.is_file()}
    assert after == before
    assert [p for p in store.folder.iterdir() if p.is_dir()] == []
    assert store.load("bob").digest != store.load("alice").digest


def test_a_lora_placed_by_hand_can_be_renamed_too(store):
    from safetensors import safe_open
    from safetensors.torch import save_file

    store.folder.mkdir(parents=True)
    save_file(tiny_lora(), str(store.folder / "civitai.safetensors"), metadata={"note": "kept"})
    record = store.rename("civitai", "mine")
    assert store.names() == ["mine"] and _files_of(store, "mine") == ["mine.safetensors"]
    assert record.name == "mine" and record.digest == ""  # still no record: none is invented
    with safe_open(store.folder / "mine.safetensors", "pt") as handle:
        assert handle.metadata() == {"note": "kept"}
