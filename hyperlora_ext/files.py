"""Writing files without half-written results or races; reading JSON and safetensors files.

:func:`write_atomically` writes through a uniquely named temporary file in the target's folder,
then moves it into place: readers never see half a file, concurrent writers never share a
temporary name, and without ``overwrite`` the final step is an exclusive link, so of two
concurrent writers exactly one succeeds (no check-then-write window).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hyperlora_ext.errors import FileExistsRefusedError


def write_atomically(target: Path, write: Callable[[str], Any], *, overwrite: bool = True) -> None:
    """Call ``write(temporary_path)``, then move the result to ``target`` in one step."""
    target = Path(target)
    handle, tmp = tempfile.mkstemp(prefix=f".{target.name[:80]}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        write(tmp)
        if overwrite:
            os.replace(tmp, target)
        else:
            _link_exclusively(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _link_exclusively(tmp: str, target: Path) -> None:
    try:
        os.link(tmp, target)  # fails if target exists, atomically
    except FileExistsError:
        raise FileExistsRefusedError(f"{target} already exists") from None
    except OSError:  # a file system without hard links (FAT, some network shares)
        try:
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # claim the name
        except FileExistsError:
            raise FileExistsRefusedError(f"{target} already exists") from None
        os.close(fd)
        os.replace(tmp, target)


def parse_json(text: str | bytes, what: str) -> Any:
    """``json.loads`` whose failures (including absurd nesting) are ValueError naming ``what``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply to be real JSON data") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} is not valid JSON ({exc})") from None


def read_json(path: Path) -> Any:
    """The JSON content of ``path``; OSError or ValueError (with the path) when unreadable."""
    return parse_json(Path(path).read_bytes(), str(path))


def safetensors_reader(path: Path, framework: str = "pt", device: str = "cpu") -> Any:
    """``safetensors.safe_open``: reads the header now and tensors on demand; use it in ``with``.

    Typed ``Any`` because the package's type stubs lack the context-manager methods.
    """
    from safetensors import safe_open

    return safe_open(str(path), framework=framework, device=device)
