"""A saved identity's files, name rule and record (``NAME.hyperlora.json``), without the store.

:mod:`hyperlora_ext.store` reads and writes them; this module only says what they are, so the
store's helpers (the rename transaction) and its callers share one definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from hyperlora_ext import names
from hyperlora_ext.export import RECOMMENDED_WEIGHT

SUBFOLDER = "hyperlora"
RECORD_SUFFIX = ".hyperlora.json"
TOKENS_SUFFIX = ".hyperlora.tokens"
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
            reference_embedding=reference_tuple(data.get("reference_embedding")),
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


def reference_tuple(value: Any) -> tuple[float, ...]:
    """A stored likeness reference as a tuple of floats; () when absent or malformed."""
    from hyperlora_ext.likeness import check_reference

    vector = check_reference(value) if value is not None else None
    return () if vector is None else tuple(float(v) for v in vector)
