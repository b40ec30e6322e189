"""The state of model files on disk: truncated safetensors, and fingerprints that see replacements.

A safetensors file starts with an 8-byte header length and a JSON header whose ``data_offsets``
declare how many bytes of tensor data follow, so a cut file (an interrupted download or copy) is
known from its first bytes. A fingerprint tells whether a file was replaced since it was loaded:
size, mtime, ctime and inode number change with almost every way of replacing a file, and a hash
of the header and a few samples of the data catches what keeps them (an in-place copy of the same
size with its mtime restored, ``cp -p`` / ``rsync -t``, on Windows where ctime is the creation
time and the file index stays). :func:`check_file` says what is wrong with one downloaded or
installed file (size, JSON, safetensors tensors, ONNX graph).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from hyperlora_ext.facts import FileSpec
from hyperlora_ext.files import read_json, safetensors_reader

MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit
HEAD_BYTES = 64 * 1024  # hashed from the start (the header of every released file fits)
SAMPLES = 8  # further 4 KiB samples spread evenly over the data
SAMPLE_BYTES = 4096


def truncation(path: Path) -> str:
    """Why the safetensors file ``path`` cannot be complete, or "" (also for a missing file)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return ""  # missing: the registry reports that itself
    if not stat.S_ISREG(mode):
        return ""  # a folder or a FIFO (opening one would block): reported as missing
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            length = int.from_bytes(file.read(8), "little")
            if size < 8 or length > min(MAX_HEADER_BYTES, size - 8):
                return _cut(path, size, "its header")
            header = json.loads(file.read(length))
        declared = 8 + length + _data_bytes(header)
    except (OSError, ValueError, TypeError, KeyError, IndexError) as error:
        return f"{path} is not a readable safetensors file ({error}); re-download it"
    return _cut(path, size, f"the {declared} bytes its header declares") if size < declared else ""


def _data_bytes(header: dict) -> int:
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    if not all(isinstance(end, int) for end in ends):
        raise ValueError("data_offsets are not integers")
    return max(ends, default=0)


def _cut(path: Path, size: int, expected: str) -> str:
    return (
        f"{path} is truncated: {size} bytes, shorter than {expected} (an interrupted download "
        "or copy?); re-download it"
    )


def damaged_file(folder: Path, specs: Sequence[FileSpec]) -> str:
    """Why a safetensors file of ``folder`` is unusable (shorter than its header says), or ""."""
    for spec in specs:
        if spec.name.endswith(".safetensors"):
            problem = truncation(folder / spec.name)
            if problem:
                return problem
    return ""


def check_file(path: Path, spec: FileSpec, expected_size: int | None = None) -> str | None:
    """What is wrong with one model file, or None. Reads only the safetensors header."""
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        return f"{path} has {size} bytes, the source lists {expected_size}"
    if size < spec.min_bytes:
        return f"{path} has only {size} bytes, expected at least {spec.min_bytes}"
    if path.suffix == ".json":
        return _check_json(path)
    if path.suffix == ".safetensors":
        return _check_safetensors(path, spec.tensors)
    if path.suffix == ".onnx":
        return _check_onnx(path)
    return None


def _check_onnx(path: Path) -> str | None:
    """Parse the ONNX graph (no weights are run); None when fine or when onnx is not installed."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and onnx's own errors
        return f"{path} is not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})"
    return None


def _check_json(path: Path) -> str | None:
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        return str(exc)
    if not isinstance(data, dict) or not data:
        return f"{path} should hold a non-empty JSON object"
    return None


def _check_safetensors(path: Path, tensors: Sequence[str]) -> str | None:
    keys = safetensors_keys(path)
    if keys is None:
        return f"{path} is not a complete safetensors file (truncated or not safetensors)"
    absent = [name for name in tensors if name not in keys]
    if absent:
        return f"{path} lacks the tensor(s) {', '.join(absent)}: it is not the expected model file"
    return None


def safetensors_keys(path: Path) -> set[str] | None:
    """Tensor names from the header, or None when the file is not a complete safetensors file."""
    try:
        with safetensors_reader(path, framework="numpy") as handle:
            return set(handle.keys())
    except Exception:  # safetensors raises its own error types for truncated / foreign files
        return None


def fingerprint(path: Path) -> tuple:
    """Changes when the file at ``path`` is replaced or rewritten (see the module docstring)."""
    info = path.stat()
    sample = _sample_hash(path, info.st_size) if stat.S_ISREG(info.st_mode) else ""
    return (path.name, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, sample)


def _sample_hash(path: Path, size: int) -> str:
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as file:
            digest.update(file.read(HEAD_BYTES))
            for index in range(1, SAMPLES + 1):
                file.seek(size * index // (SAMPLES + 1))
                digest.update(file.read(SAMPLE_BYTES))
            file.seek(max(0, size - SAMPLE_BYTES))
            digest.update(file.read(SAMPLE_BYTES))
    except OSError as error:  # unreadable: the loader says so if the file is one it needs
        return f"unreadable: {error.errno}"
    return digest.hexdigest()


def folder_fingerprint(folder: Path) -> tuple:
    """The fingerprints of a model file, or of every file of a model folder."""
    files = [folder] if folder.is_file() else sorted(p for p in folder.iterdir() if p.is_file())
    return tuple(fingerprint(p) for p in files)
