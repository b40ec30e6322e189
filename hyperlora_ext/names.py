"""The one check for names that become file or folder names: model names and identity names.

A name is a single plain entry of a folder on every platform the WebUI runs on: no path
separators or drive letters, no ``.``/``..``, no control characters, none of Windows' forbidden
characters or reserved device names (``CON``, ``nul.txt``, ``COM¹``), no trailing dot or space
(Windows silently drops them), and short enough for every file system. :func:`child` adds the
containment check on disk: the entry must not be a link that resolves outside its folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hyperlora_ext.errors import InvalidNameError

MAX_NAME_BYTES = 200  # room for suffixes such as ".hyperlora.json" within 255-byte file names
WINDOWS_FORBIDDEN = set('<>:"/\\|?*')
_DEVICES = ("con", "prn", "aux", "nul", "conin$", "conout$")
_NUMBERED = tuple(f"{p}{d}" for p in ("com", "lpt") for d in "0123456789¹²³")
WINDOWS_RESERVED = frozenset(_DEVICES + _NUMBERED)
# Identity names also end up in prompts as <lora:NAME:0.8>: only characters that cannot break it.
TAG_SAFE = re.compile(r"[\w\- .()\[\]]+")


def check_name(
    name: Any,
    what: str = "name",
    *,
    max_bytes: int = MAX_NAME_BYTES,
    tag_safe: bool = False,
    reserved_suffixes: Iterable[str] = (),
) -> str:
    """Return ``name`` when it is a plain entry name on every platform; else InvalidNameError.

    ``what`` names the thing in messages ("model name"); ``tag_safe`` also limits the characters
    to letters, digits, spaces and ``-_.()[]``; ``reserved_suffixes`` are endings (compared
    without case) that would make the name's files collide with another name's files.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidNameError(f"{what} must be a non-empty string, got {name!r}")
    problem = _problem(name, max_bytes, tag_safe, tuple(reserved_suffixes))
    if problem:
        raise InvalidNameError(f"{name[:120]!r} is not usable as a {what}: {problem}")
    return name


def _problem(name: str, max_bytes: int, tag_safe: bool, suffixes: tuple[str, ...]) -> str | None:
    if name != name.strip():
        return "it starts or ends with a space"
    if name in (".", "..") or any(c in WINDOWS_FORBIDDEN for c in name):
        return 'it is a path, not a name (no / \\ : * ? " < > | and not . or ..)'
    if not name.isprintable():
        return "it contains control characters"
    if name.endswith("."):
        return "it ends with a dot, which Windows drops"
    if len(name.encode("utf-8")) > max_bytes:
        return f"it is longer than {max_bytes} bytes"
    if _device_stem(name) in WINDOWS_RESERVED:
        return f"{_device_stem(name).upper()} is a reserved device name on Windows"
    if tag_safe and not TAG_SAFE.fullmatch(name):
        hint = suggest_name(name)
        example = f"; for example {hint!r} is usable" if hint else ""
        return f"use only letters, digits, spaces and - _ . ( ) [ ]{example}"
    if name.startswith(".."):
        return "it starts with '..'"
    ending = next((s for s in suffixes if name.casefold().endswith(s.casefold())), None)
    if ending:
        return f"names ending in {ending!r} are reserved for the files of other names"
    return None


def suggest_name(name: str) -> str:
    """A tag-safe variant of ``name`` to propose in messages ("" when nothing is left)."""
    stem = re.sub(r"[^\w\- .()\[\]]+|\.{2,}", "_", name.strip())
    return re.sub(r"_+", "_", stem).strip(" ._")[:100]


def _device_stem(name: str) -> str:
    """Windows reserves device names with any extension: ``nul.txt`` and ``Con .tar.gz`` too."""
    return name.split(".", 1)[0].rstrip(" ").casefold()


def same_on_windows(a: str, b: str) -> bool:
    """True when two names address the same file on a case-insensitive disk."""
    return a.casefold() == b.casefold()


def case_twin(name: str, existing: Iterable[str]) -> str | None:
    """An existing name that differs from ``name`` only in letter case, if any."""
    return next((e for e in existing if e != name and same_on_windows(e, name)), None)


def child(root: str | Path, name: str, what: str = "name", **rules: Any) -> Path:
    """``root / name`` for a checked ``name``; refuses entries (links) that resolve outside root."""
    check_name(name, what, **rules)
    root = Path(root)
    path = root / name
    inside(root, path)
    return path


def inside(root: Path, path: Path) -> Path:
    """``path`` when it is not a link (or a link chain) leading outside ``root``."""
    if not (path.exists() or path.is_symlink()):
        return path
    try:
        real_root, real_path = root.resolve(), path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise InvalidNameError(f"{path} cannot be resolved: {exc}") from exc
    if real_path == real_root or not real_path.is_relative_to(real_root):
        raise InvalidNameError(
            f"{path} points to {real_path}, outside {root}; move the files into {root} "
            "or point the folder setting at where they are"
        )
    return path
