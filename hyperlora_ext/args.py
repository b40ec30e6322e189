"""The one typed argument model shared by the accordion, the HTTP API, X/Y/Z and the infotext.

Script arguments arrive either as the positional list in ``ui()`` order (the WebUI's own way) or,
recommended for API clients, as a single dict with named fields. Both are parsed into one frozen
:class:`HyperLoRAArgs`; anything unknown or out of range raises :class:`ArgumentError` naming the
field. This module imports nothing from the WebUI.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hyperlora_ext.encoders.faces import (
    CHOICES,
    MAX_FACE_INDEX,
    check_face_choice,
    check_face_index,
)
from hyperlora_ext.errors import ArgumentError

__all__ = ["MAX_FACE_INDEX", "ArgumentError", "HyperLoRAArgs", "add_trigger_words"]

FACE_CHOICES = CHOICES  # how to pick the face when a photo shows several
# How the accordion shows each face choice; parsing accepts these labels too.
FACE_LABELS = {"largest": "Largest", "index": "Index", "best_score": "Best score"}
WEIGHT_RANGE = (-1.5, 1.5)
TRIGGER_WORDS = "fcsks fxhks fhyks"
MAX_IMAGES = 16  # photos per generation or request
MAX_IMAGE_BYTES = 20 * 2**20  # file size of one photo
_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class HyperLoRAArgs:
    """HyperLoRA settings for one generation. Field order is the ``ui()`` component order."""

    enabled: bool = False
    images: tuple[Any, ...] = ()
    model: str = ""
    weight: float = 0.8
    trigger_words: bool = True
    face: str = "largest"
    face_index: int = 0
    remove_background: bool = True
    grayscale: bool = False
    identity: str = ""

    def __post_init__(self) -> None:
        # Normalise and validate every field, so any instance that exists is valid.
        for spec in dataclasses.fields(self):
            value = _CHECKS[spec.name](getattr(self, spec.name))
            object.__setattr__(self, spec.name, value)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> HyperLoRAArgs:
        """Named fields; missing ones keep their defaults."""
        names = cls.field_names()
        for key in values:
            if key not in names:
                raise ArgumentError(str(key), f"unknown field; known fields: {', '.join(names)}")
        return cls(**dict(values))

    @classmethod
    def from_positional(cls, values: Sequence[Any]) -> HyperLoRAArgs:
        """Values in ``ui()`` order; a shorter list keeps the remaining defaults."""
        names = cls.field_names()
        if len(values) > len(names):
            raise ArgumentError(
                f"#{len(names)}", f"{len(values)} positional values given, at most {len(names)}"
            )
        return cls(**dict(zip(names[: len(values)], values, strict=True)))

    @classmethod
    def from_script_args(cls, args: Sequence[Any]) -> HyperLoRAArgs:
        """Parse the script's argument slice: one dict with named fields, or positional values."""
        # A dict can only sit in position 0 (normally the enable flag) in the named form. The API
        # pads the positions after it with the components' defaults, which are ignored.
        if len(args) >= 1 and isinstance(args[0], Mapping):
            return cls.from_dict(args[0])
        return cls.from_positional(list(args))

    def replace(self, **changes: Any) -> HyperLoRAArgs:
        """A validated copy with some fields changed (X/Y/Z overrides use this)."""
        return self.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.field_names()}

    def changed_from_default(self) -> dict[str, Any]:
        """Fields whose value differs from the default (images excluded)."""
        default = HyperLoRAArgs()
        return {
            name: getattr(self, name)
            for name in self.field_names()
            if name != "images" and getattr(self, name) != getattr(default, name)
        }


def _bool(field: str):
    def check(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ArgumentError(field, f"expected true or false, got {value!r}")

    return check


def _str(field: str):
    def check(value: Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ArgumentError(field, f"expected a string, got {type(value).__name__}")
        return value.strip()

    return check


def _weight(value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ArgumentError("weight", f"expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentError("weight", f"expected a number, got {value!r}")
    low, high = WEIGHT_RANGE
    if isinstance(value, float) and not math.isfinite(value):
        raise ArgumentError("weight", f"expected a finite number, got {value!r}")
    if not low <= value <= high:  # compared as given: a huge int must not reach float()
        shown = (
            f"{value:.3g}" if isinstance(value, float) or abs(value) < 10**15 else "a huge number"
        )
        raise ArgumentError("weight", f"{shown} is outside {low}..{high}")
    return float(value)


def _face(value: Any) -> str:
    return check_face_choice(value, "face")


def _face_index(value: Any) -> int:
    return check_face_index(value, "face_index")


def too_many_images(count: int, limit: int = MAX_IMAGES) -> str:
    return f"{count} images posted; at most {limit} per request"


def image_too_large(label: str, limit: int = MAX_IMAGE_BYTES) -> str:
    return f"{label}: the image is larger than {limit // 2**20} MiB; resize it"


def _images(value: Any) -> tuple[Any, ...]:
    """Keep image-likes as given (decoding is the pipeline's job); unwrap upload wrappers."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ArgumentError(
            "images", f"expected a list of photos, got {type(value).__name__}; send [photo]"
        )
    images = tuple(_unwrap_upload(item) for item in value if item is not None)
    if len(images) > MAX_IMAGES:
        raise ArgumentError("images", too_many_images(len(images)))
    for number, image in enumerate(images, 1):
        if _file_size(image) > MAX_IMAGE_BYTES:
            raise ArgumentError("images", image_too_large(f"image {number}"))
    return images


def _file_size(image: Any) -> int:
    """Bytes of a photo given as bytes, base64 / data URL or file path; 0 for decoded images."""
    if isinstance(image, (bytes, bytearray)):
        return len(image)
    if isinstance(image, os.PathLike) or (isinstance(image, str) and len(image) < 4096):
        try:
            if os.path.isfile(image):
                return os.path.getsize(image)
        except (OSError, ValueError):  # not a usable path: treat the text as base64
            pass
    if isinstance(image, str):
        return len(_DATA_URL.sub("", image, count=1)) * 3 // 4
    return 0


def _unwrap_upload(item: Any) -> Any:
    # gradio 3.41 gr.File yields tempfile wrappers (.name is the temp path); gradio 4 yields str.
    # A gr.Gallery yields (image, caption) pairs.
    name = getattr(item, "name", None)
    if isinstance(name, str) and not isinstance(item, (str, bytes, os.PathLike)):
        return name
    if isinstance(item, tuple) and len(item) == 2:
        return item[0]
    return item


_CHECKS = {
    "enabled": _bool("enabled"),
    "images": _images,
    "model": _str("model"),
    "weight": _weight,
    "trigger_words": _bool("trigger_words"),
    "face": _face,
    "face_index": _face_index,
    "remove_background": _bool("remove_background"),
    "grayscale": _bool("grayscale"),
    "identity": _str("identity"),
}


def add_trigger_words(prompt: str) -> str:
    """Prepend the HyperLoRA trigger words unless the prompt already contains them."""
    if TRIGGER_WORDS in prompt:
        return prompt
    return f"{TRIGGER_WORDS}, {prompt}"
