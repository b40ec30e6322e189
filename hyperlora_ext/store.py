"""Saved identities: a named identity LoRA kept in the WebUI's Lora folder, under ``hyperlora/``.

Each identity ``NAME`` is these files in ``<Lora folder>/hyperlora/``:

* ``NAME.safetensors`` an ordinary kohya LoRA (the Lora tab lists it, ``<lora:NAME:0.8>`` works);
* ``NAME.json`` and ``NAME.preview.png``, the Lora tab's card (written by :func:`export_lora`);
* ``NAME.hyperlora.json``, our record: model, options, digest, photo count, creation time and
  the likeness reference (the photos' normalised mean ArcFace embedding, 512 numbers);
* ``NAME.hyperlora.tokens``, the identity's fused tokens before normalisation (a safetensors file
  under a suffix no LoRA loader lists), what mixing identities needs. Identities saved before it
  existed lack it: they work as LoRAs, and a mix that names them says how to fix it.

Names are plain file stems: anything that could leave the folder is refused with
:class:`InvalidNameError`. This module does not import the WebUI; the Lora folder is a parameter.
"""

from __future__ import annotations

import builtins
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from hyperlora_ext import names
from hyperlora_ext.cache import LruCache
from hyperlora_ext.errors import (
    HyperLoRAError,
    IdentityNotFoundError,
    InvalidNameError,
    NoTokensError,
)
from hyperlora_ext.export import RECOMMENDED_WEIGHT, export_lora
from hyperlora_ext.files import read_json, safetensors_reader, write_atomically
from hyperlora_ext.identity_value import Identity
from hyperlora_ext.lora_format import lora_digest

SUBFOLDER = "hyperlora"
RECORD_SUFFIX = ".hyperlora.json"
TOKENS_SUFFIX = ".hyperlora.tokens"
TOKENS_KEY = "tokens"
RECORD_VERSION = 1
MAX_NAME_LENGTH = 100
FILE_SUFFIXES = (".safetensors", ".json", ".preview.png", RECORD_SUFFIX, TOKENS_SUFFIX)
# An identity named "x.hyperlora" or "x.preview" would share files with identity "x".
RESERVED_SUFFIXES = (".hyperlora", ".preview")


@dataclass(frozen=True)
class IdentityRecord:
    """What we know about a saved identity without reading its tensors."""

    name: str
    model: str = ""
    digest: str = ""  # lora_digest of the tensors as stored in the file
    photos: int = 0
    created: str = ""  # ISO 8601, UTC
    options: dict[str, Any] = field(default_factory=dict)  # face choice, background, ...
    version: int = RECORD_VERSION
    # likeness reference: 512 floats; empty for identities saved before it was recorded
    reference_embedding: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> IdentityRecord:
        """Tolerant reader: unknown keys are ignored, wrong types fall back to defaults."""
        options = data.get("options")
        photos = data.get("photos")
        return cls(
            name=name,
            model=str(data.get("model") or ""),
            digest=str(data.get("digest") or ""),
            photos=photos if isinstance(photos, int) and not isinstance(photos, bool) else 0,
            created=str(data.get("created") or ""),
            options=dict(options) if isinstance(options, Mapping) else {},
            reference_embedding=_reference(data.get("reference_embedding")),
        )

    @property
    def prompt_tag(self) -> str:
        """How to use it in any prompt; A1111 and Forge find LoRAs by file stem, not path."""
        return f"<lora:{self.name}:{RECOMMENDED_WEIGHT:g}>"


def check_name(name: Any) -> str:
    """Return ``name`` if it is a usable identity name, else raise InvalidNameError.

    The one name check of :mod:`names` with the identity rules: at most 100 bytes, letters,
    digits, spaces and ``-_.()[]`` only (the name goes into ``<lora:NAME:0.8>`` prompt tags),
    and no ending that would make its files those of another identity (``x.hyperlora``'s card
    ``x.hyperlora.json`` is ``x``'s record).
    """
    return names.check_name(
        name,
        "identity name",
        max_bytes=MAX_NAME_LENGTH,
        tag_safe=True,
        reserved_suffixes=RESERVED_SUFFIXES,
    )


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
        """The record of ``name`` (a bare record for a LoRA file saved without one)."""
        if not self.exists(name):
            raise self._not_found(name)
        path = self._inside(name + RECORD_SUFFIX)
        try:
            data = read_json(path) if path.is_file() else {}
        except (OSError, ValueError):
            data = {}  # a damaged record must not hide the identity itself
        return IdentityRecord.from_dict(name, data if isinstance(data, Mapping) else {})

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
        with self._changing:
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
        target = export_lora(
            dict(lora), self.folder, name, model=model, photos=photos, preview=preview,
            overwrite=overwrite,
        )  # fmt: skip
        record = IdentityRecord(
            name=name,
            model=model,
            digest=_file_digest(target),
            photos=photos,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            options=dict(options or {}),
            reference_embedding=_reference(reference_embedding),
        )
        text = json.dumps(record.to_dict(), indent=2)
        write_atomically(
            self._inside(name + RECORD_SUFFIX), lambda tmp: Path(tmp).write_text(text, "utf-8")
        )
        return record

    def load(self, name: str) -> Identity:
        """The identity (its LoRA tensors as stored, digest and record's facts); cached until the
        file changes."""
        from safetensors import SafetensorError  # type: ignore[attr-defined]  # not in its stubs
        from safetensors.torch import load_file

        path = self.lora_path(name)
        if not path.is_file():
            raise self._not_found(name)
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        try:
            lora = load_file(str(path))
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
        self._cache.put(key, loaded)
        return loaded

    def load_tokens(self, name: str) -> torch.Tensor:
        """The identity's fused pre-normalisation tokens (Q, H) float32, for mixing.

        NoTokensError when it was saved without them (before mixing existed) or its LoRA file was
        replaced since.
        """
        from safetensors import SafetensorError  # type: ignore[attr-defined]  # not in its stubs

        loaded = self.load(name)  # not found / unreadable LoRA: its own clear error
        path = self.tokens_path(name)
        if not path.is_file():
            raise NoTokensError(
                f"saved identity {name!r} cannot be mixed: it was saved before mixing existed "
                f"(no {path.name} beside it). It still works as a LoRA; to mix it, save it again "
                "from its photos"
            )
        try:
            with safetensors_reader(path) as handle:
                digest = (handle.metadata() or {}).get("lora_digest", "")
                tokens = handle.get_tensor(TOKENS_KEY)
        except (SafetensorError, OSError, ValueError) as exc:
            raise NoTokensError(
                f"saved identity {name!r}: {path.name} cannot be read ({exc}); save it again "
                "from its photos to mix it"
            ) from exc
        if digest != loaded.digest or tokens.dim() != 2 or not torch.isfinite(tokens).all():
            raise NoTokensError(
                f"saved identity {name!r}: {path.name} does not belong to its LoRA file (the "
                "LoRA was replaced after saving); save it again from its photos to mix it"
            )
        return tokens.float()

    def delete(self, name: str) -> builtins.list[Path]:
        """Remove the identity's files; returns those removed."""
        with self._changing:
            return self._delete(name)

    def _delete(self, name: str) -> builtins.list[Path]:
        if not self.exists(name):
            raise self._not_found(name)
        removed = []
        for path in self._files(name):
            if path.is_file() or path.is_symlink():
                path.unlink()
                removed.append(path)
        self._cache.clear()
        return removed

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


def _reference(value: Any) -> tuple[float, ...]:
    """A stored likeness reference as a tuple of floats; () when absent or malformed."""
    from hyperlora_ext.likeness import check_reference

    vector = check_reference(value) if value is not None else None
    return () if vector is None else tuple(float(v) for v in vector)


def _file_digest(path: Path) -> str:
    """The digest stored in the file's metadata by export_lora (that of its stored tensors)."""
    with safetensors_reader(path) as handle:
        digest = (handle.metadata() or {}).get("hyperlora_digest")
        if digest:
            return digest
        return lora_digest({key: handle.get_tensor(key) for key in handle.keys()})  # noqa: SIM118
