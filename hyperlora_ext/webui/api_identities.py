"""Saved-identity actions shared by the HTTP API and the accordion's gallery: the record as
clients see it, rename, and the LoRA file for download.

Both callers go through these functions and the one :class:`~hyperlora_ext.store.IdentityStore`,
so a rename or a download behaves the same from the UI and from ``/hyperlora/v1``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from hyperlora_ext.errors import ExportExistsError, InvalidNameError, about
from hyperlora_ext.facts import LORA_SUFFIX
from hyperlora_ext.webui import api_models as m
from hyperlora_ext.webui.api_errors import ApiError

RENAME_FIELDS = m.field_names(m.RenameRequest)


def record_dict(record: Any) -> dict[str, Any]:
    """The record for clients: the 512 numbers of the likeness reference only as a flag."""
    data = record.to_dict()
    data["likeness_reference"] = bool(data.pop("reference_embedding", ()))
    return {**data, "prompt_tag": record.prompt_tag}


def rename(store: Any, name: str, new_name: str, overwrite: bool = False) -> dict[str, Any]:
    """Rename the saved identity ``name``; ``{"renamed": name, "identity": its new record}``."""
    from hyperlora_ext.store import check_name

    with about("name", InvalidNameError):
        check_name(name)
    with about("new_name", InvalidNameError, ExportExistsError):
        check_name(new_name)
        record = store.rename(name, new_name, overwrite=overwrite)
    return {"renamed": name, "identity": record_dict(record)}


def rename_request(store: Any, name: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /identities/NAME/rename`` with ``{"new_name": ..., "overwrite": false}``."""
    unknown = [key for key in data if key not in RENAME_FIELDS]
    if unknown:
        known = ", ".join(RENAME_FIELDS)
        raise ApiError(422, f"unknown field {unknown[0]!r}; known fields: {known}", unknown[0])
    new_name = data.get("new_name")
    if not isinstance(new_name, str):
        raise ApiError(422, f"'new_name' must be the new name, got {new_name!r}", "new_name")
    overwrite = data.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise ApiError(422, f"'overwrite' must be true or false, got {overwrite!r}", "overwrite")
    return rename(store, name, new_name, overwrite)


def lora_file(store: Any, name: str) -> dict[str, str]:
    """The identity's LoRA file as ``{"lora": base64, "lora_filename": "NAME.safetensors"}``."""
    with about("name", InvalidNameError):
        path = store.lora_path(name)
    if not path.is_file():
        store.record(name)  # raises IdentityNotFoundError naming the saved ones
    return {
        "lora": base64.b64encode(path.read_bytes()).decode("ascii"),
        "lora_filename": name + LORA_SUFFIX,
    }
