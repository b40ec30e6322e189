"""Renaming a saved identity as one transaction: every file moves, or on any failure none does.

The store calls it holding its folder lock; the files of a name come from the store (``files``),
so this module needs nothing of the store itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from hyperlora_ext import names
from hyperlora_ext.files import read_json, safetensors_reader, write_atomically
from hyperlora_ext.store_record import FILE_SUFFIXES, RECORD_SUFFIX


class Rename:
    """One rename, undone on failure: the old files and any replaced identity's files wait in a
    hidden staging folder (which no listing sees) until the new files are all written."""

    def __init__(
        self, folder: Path, files: Callable[[str], list[Path]], old: str, new: str
    ) -> None:
        """``files(name)``: the paths of ``name``'s files, in the order of FILE_SUFFIXES."""
        self.files, self.old, self.new = files, old, new
        self.staging = Path(tempfile.mkdtemp(prefix=".rename-", dir=folder))
        self.created: list[Path] = []
        self.parked: list[tuple[Path, Path]] = []  # (where it was, where it waits)

    def run(self) -> None:
        try:
            if not names.same_on_windows(self.old, self.new):
                self._park(self.new)  # the identity it replaces: deleted with the staging folder
            moved = dict(zip(FILE_SUFFIXES, self._park(self.old), strict=True))
            self._write(moved)
        except BaseException:
            self._undo()
            raise
        shutil.rmtree(self.staging, ignore_errors=True)

    def _park(self, name: str) -> list[Path | None]:
        """Move ``name``'s files into the staging folder; where each went (None: absent)."""
        parked: list[Path | None] = []
        for index, path in enumerate(self.files(name)):
            if not (path.is_file() or path.is_symlink()):
                parked.append(None)
                continue
            spot = self.staging / f"{name}.{index}"
            os.rename(path, spot)
            self.parked.append((path, spot))
            parked.append(spot)
        return parked

    def _write(self, moved: dict[str, Path | None]) -> None:
        target = dict(zip(FILE_SUFFIXES, self.files(self.new), strict=True))
        lora = moved.pop(".safetensors")
        assert lora is not None  # the identity exists (checked under the lock)
        self.created.append(target[".safetensors"])
        _retitle_lora(lora, target[".safetensors"], self.new)
        record = moved.pop(RECORD_SUFFIX)
        for suffix, spot in moved.items():
            if spot is not None:
                self.created.append(target[suffix])
                shutil.copy2(spot, target[suffix])  # a copy: the staged one stays for an undo
        if record is not None:
            data = read_json(record)
            text = json.dumps(
                {**(data if isinstance(data, dict) else {}), "name": self.new}, indent=2
            )
            self.created.append(target[RECORD_SUFFIX])
            write_atomically(target[RECORD_SUFFIX], lambda tmp: Path(tmp).write_text(text, "utf-8"))

    def _undo(self) -> None:
        for path in self.created:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        for path, spot in reversed(self.parked):
            with contextlib.suppress(OSError):
                os.replace(spot, path)
        shutil.rmtree(self.staging, ignore_errors=True)


def _retitle_lora(source: Path, target: Path, name: str) -> None:
    """Write the LoRA file ``source`` as ``target`` with its title metadata set to ``name``."""
    from safetensors.torch import load_file, save_file

    with safetensors_reader(source) as handle:
        metadata = dict(handle.metadata() or {})
    for key in ("ss_output_name", "modelspec.title"):
        if key in metadata:
            metadata[key] = name
    tensors = load_file(str(source))
    write_atomically(
        target, lambda tmp: save_file(tensors, tmp, metadata=metadata), overwrite=False
    )
