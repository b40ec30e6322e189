"""Saved identities: a named identity LoRA kept in the WebUI's Lora folder, under ``hyperlora/``.

Each identity ``NAME`` is four files in ``<Lora folder>/hyperlora/``:

* ``NAME.safetensors`` an ordinary kohya LoRA (the Lora tab lists it, ``<lora:NAME:0.8>`` works);
* ``NAME.json`` and ``NAME.preview.png``, the Lora tab's card (written by :func:`export_lora`);
* ``NAME.hyperlora.json``, our record: model, options, digest, photo count, creation time.

Names are plain file stems: anything that could leave the folder is refused with
:class:`InvalidNameError`. This module does not import the WebUI; the Lora folder is a parameter.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from hyperlora_ext.cache import LruCache
from hyperlora_ext.errors import HyperLoRAError, InvalidNameError
from hyperlora_ext.export import RECOMMENDED_WEIGHT, export_lora, sanitize_name
from hyperlora_ext.lora_format import lora_digest

SUBFOLDER = "hyperlora"
RECORD_SUFFIX = ".hyperlora.json"
RECORD_VERSION = 1
MAX_NAME_LENGTH = 100


class IdentityNotFoundError(HyperLoRAError):
    """No saved identity of that name exists."""


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
        )

    @property
    def prompt_tag(self) -> str:
        """How to use it in any prompt; A1111 and Forge find LoRAs by file stem, not path."""
        return f"<lora:{self.name}:{RECOMMENDED_WEIGHT:g}>"


@dataclass(frozen=True)
class LoadedIdentity:
    lora: dict[str, torch.Tensor]
    digest: str
    record: IdentityRecord


def check_name(name: Any) -> str:
    """Return ``name`` if it is a usable identity name, else raise InvalidNameError.

    A usable name is its own safe file stem (see :func:`export.sanitize_name`): letters, digits,
    spaces, ``-_.()[]``, no path separators, no ``..``, at most 100 characters.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidNameError(f"identity name must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidNameError(f"identity name is longer than {MAX_NAME_LENGTH} characters")
    try:
        safe = sanitize_name(name)
    except InvalidNameError:
        raise InvalidNameError(
            f"{name!r} is not usable as an identity name: use letters, digits, spaces, "
            "'-', '_', '.', '(', ')', '[' or ']'"
        ) from None
    if safe != name:
        raise InvalidNameError(
            f"{name!r} is not usable as an identity name (no folders, '..' or special "
            f"characters); for example {safe!r} is"
        )
    return name


class IdentityStore:
    """The saved identities under ``<lora_dir>/hyperlora``."""

    def __init__(self, lora_dir: str | Path, *, cache_entries: int = 4) -> None:
        self.folder = Path(lora_dir) / SUBFOLDER
        self._cache: LruCache[LoadedIdentity] = LruCache(cache_entries)

    # ---------------------------------------------------------------- paths
    def lora_path(self, name: str) -> Path:
        return self._inside(f"{check_name(name)}.safetensors")

    def _files(self, name: str) -> list[Path]:
        stem = check_name(name)
        suffixes = (".safetensors", ".json", ".preview.png", RECORD_SUFFIX)
        return [self._inside(stem + suffix) for suffix in suffixes]

    def _inside(self, file_name: str) -> Path:
        """``folder / file_name``, refusing entries (e.g. symlinks) that resolve elsewhere."""
        path = self.folder / file_name
        if path.is_symlink() or path.exists():
            real_folder = self.folder.resolve()
            if path.resolve().parent != real_folder:
                raise InvalidNameError(f"{path} points outside {self.folder}; refusing to use it")
        return path

    # --------------------------------------------------------------- queries
    def names(self) -> list[str]:
        """Names of the saved identities (every LoRA file in the folder), sorted."""
        if not self.folder.is_dir():
            return []
        stems = []
        for path in self.folder.glob("*.safetensors"):
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
            data = json.loads(path.read_text("utf-8")) if path.is_file() else {}
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
    ) -> IdentityRecord:
        """Export the LoRA (+ card and preview) and write its record; return the record."""
        self._files(name)  # validates the name; refuses files that are links to elsewhere
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
        )
        _write_json(self._inside(name + RECORD_SUFFIX), record.to_dict())
        return record

    def load(self, name: str) -> LoadedIdentity:
        """The identity's LoRA tensors (as stored) and digest; cached until the file changes."""
        from safetensors import SafetensorError
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
        loaded = LoadedIdentity(lora, lora_digest(lora), self.record(name))
        self._cache.put(key, loaded)
        return loaded

    def delete(self, name: str) -> list[Path]:
        """Remove the identity's files; returns those removed."""
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


def _file_digest(path: Path) -> str:
    """The digest stored in the file's metadata by export_lora (that of its stored tensors)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        digest = (handle.metadata() or {}).get("hyperlora_digest")
        if digest:
            return digest
        return lora_digest({key: handle.get_tensor(key) for key in handle.keys()})  # noqa: SIM118


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2), "utf-8")
    os.replace(tmp, path)
