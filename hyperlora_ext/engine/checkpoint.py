"""Reading and validating the files of a released HyperLoRA model folder.

Everything here is about files: the module JSON, opening safetensors with clear errors, and
strict key / shape checks whose messages name the file, the key and the expected vs found shape.
The checks run on the safetensors headers only, before any tensor data is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..files import read_json, safetensors_reader

_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ModuleSpec:
    """One UNet attention module of the JSON: its kohya name prefix and its linear widths."""

    name: str
    hidden_size: int
    kv_in: int  # input width of to_k / to_v: cross_attention_dim, or hidden_size for self-attention


def read_module_specs(path: Path) -> list[ModuleSpec]:
    """Parse ``hyper_lora_modules.json``, keeping its key order (it maps tokens to layers)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing; re-download the model folder")
    try:
        data = read_json(path)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{error}; re-download it") from error
    if not isinstance(data, dict) or not data:
        raise CheckpointError(f"{path}: expected a non-empty JSON object of module names")
    return [_module_spec(path, name, value) for name, value in data.items()]


def _module_spec(path: Path, name: str, value: Any) -> ModuleSpec:
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: module {name!r} must map to an object, got {value!r}")
    hidden: Any = value.get("hidden_size")  # checked below
    cross: Any = value.get("cross_attention_dim")
    if not _is_width(hidden):
        raise CheckpointError(f"{path}: module {name!r} has no valid 'hidden_size' ({hidden!r})")
    if cross and not _is_width(cross):  # null / 0 / missing mean self-attention
        raise CheckpointError(
            f"{path}: module {name!r} has an invalid 'cross_attention_dim' ({cross!r})"
        )
    return ModuleSpec(name=name, hidden_size=hidden, kv_in=cross or hidden)


def _is_width(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@contextmanager
def open_safetensors(path: Path, device: str = "cpu") -> Iterator[Any]:
    """``safe_open`` with errors that say what is wrong with the file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing; re-download the model folder")
    try:
        handle = safetensors_reader(path, device=device)
    except Exception as error:  # safetensors raises its own SafetensorError (or OSError)
        text = str(error)
        if "IncompleteBuffer" in text:
            reason = "is truncated (shorter than its header says; an interrupted download?)"
        else:
            reason = f"is not a valid safetensors file ({text})"
        raise CheckpointError(f"{path}: {reason}; re-download it") from error
    with handle as opened:
        yield opened


def header_shapes(path: Path, handle: Any) -> dict[str, Shape]:
    """Shapes of all tensors in an open file, from the header only; refuses non-float tensors."""
    shapes = {}
    keys = handle.keys()  # a safe_open handle is not iterable
    for key in keys:
        tensor_slice = handle.get_slice(key)
        dtype = tensor_slice.get_dtype()
        if dtype not in _FLOAT_DTYPES:
            raise CheckpointError(f"{path}: tensor {key!r} has dtype {dtype}, expected a float")
        shapes[key] = tuple(tensor_slice.get_shape())
    return shapes


def shape_of(path: Path, shapes: Mapping[str, Shape], key: str, ndim: int) -> Shape:
    """The shape of one key that sizes are derived from, with a clear error if absent or odd."""
    if key not in shapes:
        raise CheckpointError(f"{path}: missing key {key!r}; is this a HyperLoRA model file?")
    shape = shapes[key]
    if len(shape) != ndim:
        raise CheckpointError(
            f"{path}: key {key!r} has shape {list(shape)}, expected {ndim} dimensions"
        )
    return shape


def check_state(path: Path, found: Mapping[str, Shape], expected: Mapping[str, Shape]) -> None:
    """Strict check like ``load_state_dict``: no missing, no unexpected keys, exact shapes."""
    problems = [
        f"missing key {key!r} (expected shape {list(shape)})"
        for key, shape in expected.items()
        if key not in found
    ]
    problems += [f"unexpected key {key!r}" for key in found if key not in expected]
    problems += [
        f"key {key!r}: expected shape {list(shape)}, found {list(found[key])}"
        for key, shape in expected.items()
        if key in found and tuple(found[key]) != tuple(shape)
    ]
    if problems:
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(
            f"{path} does not match this model ({shown}{more}); the files of a model folder "
            "must come from the same release"
        )
