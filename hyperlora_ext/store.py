"""Saved identities: a named identity LoRA kept in the WebUI's Lora folder, under ``hyperlora/``.

Each identity ``NAME`` is these files in ``<Lora folder>/hyperlora/``:

* ``NAME.safetensors`` an ordinary kohya LoRA (the Lora tab lists it, ``<lora:NAME:0.8>`` works);
* ``NAME.json`` and ``NAME.preview.png``, the Lora tab's card (written by :func:`export_lora`);
* ``NAME.hyperlora.json``, our record: model, options, digest, photo count, creation time and
  the likeness reference (the photos' normalised mean ArcFace embedding, 512 numbers);
* ``NAME.hyperlora.tokens``, the identity's fused tokens before normalisation (a safetensors file
  under a suffix no LoRA loader lists), what mixing identities needs. Identities saved before it
  existed lack it: they work as LoRAs, and a mix that names them says how to fix it.

A save, rename or delete holds ``.hyperlora.lock`` in the folder (:mod:`.folder_lock`), so stores
of several processes (two WebUIs on one folder, a script) never interleave their files; a read
that meets a save half done reads again after it. What the files and names are:
:mod:`.store_record`; the rename transaction: :mod:`.store_rename`.

Names are plain file stems: anything that could leave the folder is refused with
:class:`InvalidNameError`. This module does not import the WebUI; the Lora folder is a parameter.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from hyperlora_ext import names
from hyperlora_ext.cache import LruCache
from hyperlora_ext.errors import (
    ExportExistsError,
    HyperLoRAError,
    IdentityNotFoundError,
    InvalidNameError,
    NoReferenceError,
    NoTokensError,
)
from hyperlora_ext.export import export_lora
from hyperlora_ext.files import read_json, safetensors_reader, write_atomically
from hyperlora_ext.folder_lock import folder_lock, wait_unlocked
from hyperlora_ext.identity_value import Identity
from hyperlora_ext.lora_format import lora_digest
from hyperlora_ext.store_record import (
    FILE_SUFFIXES,
    RECORD_SUFFIX,
    SUBFOLDER,
    TOKENS_SUFFIX,
    IdentityRecord,
    check_name,
    reference_tuple,
)
from hyperlora_ext.store_rename import Rename

TOKENS_KEY = "tokens"

READS = 3  # a read meeting a save (of any process) between its files reads again after it


class IdentityStore:
    """The saved identities under ``<lora_dir>/hyperlora``."""

    def __init__(self, lora_dir: str | Path, *, cache_entries: int = 4) -> None:
        self.folder = Path(lora_dir) / SUBFOLDER
        self._cache: LruCache[Identity] = LruCache(cache_entries)
        self._changing = threading.Lock()  # a save or delete writes several files

    # ---------------------------------------------------------------- paths
    def lora_path(self, name: str) -> Path:
        return self._inside(f"{check_name(name)}.safetensors")

    def tokens_path(self, name: str) -> Path:
        return self._inside(f"{check_name(name)}{TOKENS_SUFFIX}")

    def _files(self, name: str) -> list[Path]:
        stem = check_name(name)
        return [self._inside(stem + suffix) for suffix in FILE_SUFFIXES]

    def _inside(self, file_name: str) -> Path:
        """``folder / file_name``, refusing entries (e.g. symlinks) that resolve elsewhere."""
        return names.inside(self.folder, self.folder / file_name)

    # --------------------------------------------------------------- queries
    def names(self) -> list[str]:
        """Names of the saved identities (every LoRA file in the folder), sorted."""
        if not self.folder.is_dir():
            return []
        stems = []
        for path in self.folder.glob("*.safetensors"):
            if not path.is_file():
                continue  # e.g. a folder named x.safetensors
            try:
                stems.append(check_name(path.stem))
            except InvalidNameError:
                continue  # a file someone put there by hand; not addressable by name
        return sorted(stems, key=str.casefold)

    def exists(self, name: str) -> bool:
        return self.lora_path(name).is_file()

    def record(self, name: str) -> IdentityRecord:
        """The record of ``name``; without a readable one, a bare record with the model named in
        the LoRA file (so a mix still uses the right model)."""
        if not self.exists(name):
            raise self._not_found(name)
        path = self._inside(name + RECORD_SUFFIX)
        try:
            data = read_json(path) if path.is_file() else {}
        except (OSError, ValueError):
            data = {}  # a damaged record must not hide the identity itself
        if not isinstance(data, Mapping) or not data.get("model"):
            model = self._lora_metadata(name).get("hyperlora_model", "")
            data = {**(data if isinstance(data, Mapping) else {}), "model": model}
        return IdentityRecord.from_dict(name, data)

    def likeness_reference(self, name: str) -> tuple[float, ...]:
        """The identity's likeness reference (512 floats); NoReferenceError saying why it has
        none."""
        reference = self.record(name).reference_embedding
        if reference:
            return reference
        if not self._made_here(name):
            raise NoReferenceError(
                f"{name!r} has no likeness reference: it is a LoRA file that was not made by "
                "HyperLoRA (no record beside it). Score against reference photos instead"
            )
        raise NoReferenceError(
            f"the saved identity {name!r} has no likeness reference (it was saved before "
            "references were recorded): save it again from its photos, or score against "
            "reference photos"
        )

    def _made_here(self, name: str) -> bool:
        """Whether HyperLoRA saved ``name`` (its record, or our mark in the LoRA file)."""
        return self._inside(name + RECORD_SUFFIX).is_file() or bool(
            self._lora_metadata(name).get("hyperlora_digest")
        )

    def _lora_metadata(self, name: str) -> dict[str, str]:
        """The LoRA file's safetensors metadata ({} when unreadable: reported where it is used)."""
        try:
            with safetensors_reader(self.lora_path(name)) as handle:
                return dict(handle.metadata() or {})
        except Exception:  # safetensors' own errors are no OSError subclasses
            return {}

    def list(self) -> list[IdentityRecord]:
        return [self.record(name) for name in self.names()]

    def preview_path(self, name: str) -> Path | None:
        path = self._inside(f"{check_name(name)}.preview.png")
        return path if path.is_file() else None

    # --------------------------------------------------------------- changes
    def save(
        self,
        name: str,
        lora: Mapping[str, torch.Tensor],
        *,
        model: str,
        photos: int,
        options: Mapping[str, Any] | None = None,
        preview: Image.Image | None = None,
        overwrite: bool = False,
        tokens: torch.Tensor | None = None,
        reference_embedding: Any = None,
    ) -> IdentityRecord:
        """Export the LoRA (+ card and preview), its ``tokens`` (for mixing) and its record.

        ``reference_embedding`` (512 numbers) lets images be scored against the identity.
        """
        with self._changing, folder_lock(self.folder):
            record = self._save(
                name, lora, model, photos, options, preview, overwrite, reference_embedding
            )
            tokens_path = self.tokens_path(name)
            if tokens is None:
                tokens_path.unlink(missing_ok=True)  # an overwritten identity's old tokens
            else:
                _write_tokens(tokens_path, tokens, model=model, digest=record.digest)
            return record

    def _save(
        self, name, lora, model, photos, options, preview, overwrite, reference_embedding
    ) -> IdentityRecord:
        self._files(name)  # validates the name; refuses files that are links to elsewhere
        twin = names.case_twin(name, self.names())
        if twin:
            raise InvalidNameError(
                f"an identity named {twin!r} exists; {name!r} differs only in letter case and "
                "would be the same file on Windows and macOS. Use that name or another one"
            )
        export_lora(
            dict(lora), self.folder, name, model=model, photos=photos, preview=preview,
            overwrite=overwrite,
        )  # fmt: skip
        record = IdentityRecord(
            name=name,
            model=model,
            digest=lora_digest(dict(lora)),  # that of the file: export_lora keeps every tensor
            photos=photos,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            options=dict(options or {}),
            reference_embedding=reference_tuple(reference_embedding),
        )
        text = json.dumps(record.to_dict(), indent=2)
        write_atomically(
            self._inside(name + RECORD_SUFFIX), lambda tmp: Path(tmp).write_text(text, "utf-8")
        )
        return record

    def load(self, name: str) -> Identity:
        """The identity (its LoRA tensors as stored, digest and record's facts); cached until the
        file changes. A LoRA and record met in the middle of a save are read again after it."""
        path = self.lora_path(name)
        for attempt in range(1, READS + 1):
            try:
                stat = path.stat()
            except FileNotFoundError:
                raise self._not_found(name) from None
            # ctime changes with every write, even one that restores the mtime (cp -p)
            key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
            cached = self._cache.get(key)
            if cached is not None:
                return cached
            loaded, recorded_digest = self._read_lora(name, path)
            if recorded_digest == loaded.digest or attempt == READS:
                self._cache.put(key, loaded)  # a record deleted or left stale by hand stays so
                return loaded
            wait_unlocked(self.folder)
        raise AssertionError("unreachable")

    def _read_lora(self, name: str, path: Path) -> tuple[Identity, str]:
        """The identity in the LoRA file, and the digest its record expects."""
        from safetensors import SafetensorError  # type: ignore[attr-defined]  # not in its stubs
        from safetensors.torch import load_file

        try:
            lora = load_file(str(path))
        except FileNotFoundError:  # deleted by another store (process) just now
            raise self._not_found(name) from None
        except (SafetensorError, OSError, ValueError) as exc:
            raise HyperLoRAError(
                f"saved identity {name!r} ({path}) cannot be read ({exc}); delete it and save "
                "it again"
            ) from exc
        if not lora:
            raise HyperLoRAError(
                f"saved identity {name!r} ({path}) holds no tensors; delete it and save it again"
            )
        record = self.record(name)
        loaded = Identity(
            lora=lora, digest=lora_digest(lora), model=record.model, name=name,
            photos=record.photos, likeness_reference=record.reference_embedding or None,
        )  # fmt: skip
        return loaded, record.digest

    def load_tokens(self, name: str) -> torch.Tensor:
        """The identity's fused pre-normalisation tokens (Q, H) float32, for mixing.

        NoTokensError when it has none (saved before mixing existed, or not made by HyperLoRA),
        its tokens file is damaged, or its LoRA file was replaced since. Files met in the middle
        of a save (by any store or process) are read again once the save is done.
        """
        for attempt in range(1, READS + 1):
            try:
                return self._read_tokens(name)
            except NoTokensError:
                if attempt == READS:
                    raise
                wait_unlocked(self.folder)
        raise AssertionError("unreachable")

    def _read_tokens(self, name: str) -> torch.Tensor:
        from safetensors import SafetensorError  # type: ignore[attr-defined]  # not in its stubs

        loaded = self.load(name)  # not found / unreadable LoRA: its own clear error
        path = self.tokens_path(name)
        if not path.is_file():
            raise NoTokensError(self._no_tokens(name, path))
        try:
            with safetensors_reader(path) as handle:
                digest = (handle.metadata() or {}).get("lora_digest", "")
                tokens = handle.get_tensor(TOKENS_KEY)
        except (SafetensorError, OSError, ValueError) as exc:
            raise NoTokensError(_damaged(name, path, f"it cannot be read: {exc}")) from exc
        if tokens.dim() != 2 or not tokens.is_floating_point() or not torch.isfinite(tokens).all():
            problem = f"it holds a {list(tokens.shape)} {tokens.dtype} tensor, not finite (Q, H)"
            raise NoTokensError(_damaged(name, path, problem))
        if digest != loaded.digest:
            raise NoTokensError(
                f"saved identity {name!r}: {path.name} does not belong to its LoRA file (the "
                "LoRA was replaced after saving); save it again from its photos to mix it"
            )
        return tokens.float()

    def _no_tokens(self, name: str, path: Path) -> str:
        if not self._made_here(name):
            return (
                f"{name!r} cannot be mixed: it is a LoRA file that was not made by HyperLoRA, "
                "so it has no identity tokens. It still works as a LoRA in the prompt"
            )
        source = self.record(name).options.get("refined_from")
        if source:  # refine trains the LoRA itself: there are no tokens to mix
            return (
                f"saved identity {name!r} cannot be mixed: it was refined by training, so it "
                f"has no identity tokens. Mix its source {source!r} instead, or use it as "
                f"<lora:{name}:0.8> in the prompt"
            )
        return (
            f"saved identity {name!r} cannot be mixed: it was saved before mixing existed "
            f"(no {path.name} beside it). It still works as a LoRA; to mix it, save it again "
            "from its photos"
        )

    def delete(self, name: str) -> builtins.list[Path]:
        """Remove the identity's files; returns those removed."""
        if not self.exists(name):
            raise self._not_found(name)
        with self._changing, folder_lock(self.folder):
            return self._delete(name)

    def _delete(self, name: str) -> builtins.list[Path]:
        if not self.exists(name):  # deleted by another store while this one waited
            raise self._not_found(name)
        removed = []
        for path in self._files(name):
            if path.is_file() or path.is_symlink():
                with contextlib.suppress(FileNotFoundError):  # removed by hand meanwhile
                    path.unlink()
                    removed.append(path)
        self._cache.clear()
        return removed

    def rename(self, old: str, new: str, *, overwrite: bool = False) -> IdentityRecord:
        """Give identity ``old`` the name ``new``; its new record.

        Every file moves (LoRA, card, preview, record, tokens) or, on any failure, none does.
        The LoRA's title metadata (``ss_output_name``, which A1111 also accepts as the prompt
        name) is rewritten to the new name; its tensors, so its digest and tokens, stay as they
        are. An existing ``new`` is replaced only with ``overwrite`` (else ExportExistsError).
        """
        check_name(old)
        check_name(new)
        with self._changing, folder_lock(self.folder):
            if not self.exists(old):
                raise self._not_found(old)
            if old != new:
                self._check_rename_target(old, new, overwrite)
                Rename(self.folder, self._files, old, new).run()
                self._cache.clear()
            return self.record(new)

    def _check_rename_target(self, old: str, new: str, overwrite: bool) -> None:
        if names.same_on_windows(old, new):
            return  # a change of letter case: the target is the identity itself
        twin = names.case_twin(new, self.names())
        if twin and twin != old:
            raise InvalidNameError(
                f"an identity named {twin!r} exists; {new!r} differs only in letter case and "
                "would be the same file on Windows and macOS. Use that name or another one"
            )
        if self.exists(new) and not overwrite:
            raise ExportExistsError(
                f"an identity named {new!r} exists; choose another name or allow overwriting"
            )

    def _not_found(self, name: str) -> IdentityNotFoundError:
        known = ", ".join(self.names()[:20]) or "none"
        return IdentityNotFoundError(
            f"no saved identity named {name!r} in {self.folder} (saved: {known})"
        )


_stores: dict[str, IdentityStore] = {}


def get_store(lora_dir: str | Path) -> IdentityStore:
    """One store per folder, so its load cache lives across generations."""
    key = os.path.abspath(lora_dir)
    if key not in _stores:
        _stores[key] = IdentityStore(lora_dir)
    return _stores[key]


def _write_tokens(path: Path, tokens: torch.Tensor, *, model: str, digest: str) -> None:
    from safetensors.torch import save_file

    data = {TOKENS_KEY: tokens.detach().to("cpu", torch.float32).contiguous()}
    metadata = {"hyperlora_model": model, "lora_digest": digest, "format": "hyperlora-tokens-1"}
    write_atomically(path, lambda tmp: save_file(data, tmp, metadata=metadata))


def _damaged(name: str, path: Path, problem: str) -> str:
    return (
        f"saved identity {name!r}: its tokens file {path.name} is damaged ({problem}); save the "
        "identity again from its photos to mix it (it still works as a LoRA)"
    )
