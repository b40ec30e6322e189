"""Each argument field's value parsed on its own: flags, names, numbers, photo lists, identity
sources, mixes (also as text, ``"alice:0.7, @photos:0.3"``) and the API's ``slider`` object.

:class:`hyperlora_ext.args.HyperLoRAArgs` runs :data:`CHECKS` on every field and then its rules
between fields. Errors are :class:`ArgumentError` naming the field (``mix.2.weight``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hyperlora_ext.errors import ArgumentError
from hyperlora_ext.facts import (
    DTYPES,
    MAX_IMAGES,
    MAX_MIX_PARTS,
    PHOTOS,
    SLIDER_RANGE,
    WEIGHT_RANGE,
    check_face_choice,
    check_face_index,
    too_many_images,
)


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
    return _number("weight", value, *WEIGHT_RANGE)


@dataclass(frozen=True)
class IdentitySource:
    """One identity of a mix or slider: a saved identity, photos, or the generation's photos."""

    identity: str = ""
    images: tuple[Any, ...] = ()
    photo_weights: tuple[float, ...] = ()
    photos: bool = False  # the generation's own photos (``@photos``)

    def label(self) -> str:
        """How the infotext names it (``@`` never starts an identity name)."""
        if self.identity:
            return self.identity
        return PHOTOS if self.photos else f"@images({len(self.images)})"


@dataclass(frozen=True)
class MixPart:
    source: IdentitySource
    weight: float = 1.0


def _number(field: str, value: Any, low: float, high: float) -> float:
    """A finite number in low..high, given as a number or as text."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ArgumentError(field, f"expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentError(field, f"expected a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ArgumentError(field, f"expected a finite number, got {value!r}")
    if not low <= value <= high:  # compared as given: a huge int must not reach float()
        shown = (
            f"{value:.3g}" if isinstance(value, float) or abs(value) < 10**15 else "a huge number"
        )
        raise ArgumentError(field, f"{shown} is outside {low:g}..{high:g}")
    return float(value)


def _relative_weights(field: str, values: Sequence[Any]) -> tuple[float, ...]:
    weights = tuple(_number(field, v, 0, 1e6) for v in values)
    if weights and not any(weights):
        raise ArgumentError(field, "all weights are 0; give at least one a weight above 0")
    return weights


def _photo_weights(value: Any, field: str = "photo_weights") -> tuple[float, ...]:
    """Relative weights, one per photo: a list, or text such as ``"1, 0.5, 1"``."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [item for item in value.replace(";", ",").split(",") if item.strip()]
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Sequence):
        raise ArgumentError(field, f"expected a list of numbers, got {type(value).__name__}")
    if len(value) > MAX_IMAGES:
        raise ArgumentError(field, f"{len(value)} weights; at most {MAX_IMAGES} photos")
    return _relative_weights(field, value)


SOURCE_KEYS = ("identity", "images", "photo_weights")
MIX_PART_KEYS = (*SOURCE_KEYS, "weight")


def _source(field: str):
    """A saved identity's name, ``@photos``, or ``{"identity": name}`` / ``{"images": [...]}``."""

    def check(value: Any) -> IdentitySource | None:
        if value is None or isinstance(value, IdentitySource):
            return value
        if isinstance(value, str):
            name = value.strip()
            if not name:
                return None
            return IdentitySource(photos=True) if name == PHOTOS else IdentitySource(identity=name)
        if not isinstance(value, Mapping):
            raise ArgumentError(
                field, f"expected a saved identity's name or {{'images': [...]}}, got {value!r}"
            )
        return _source_from_dict(field, value)

    return check


def _source_from_dict(
    field: str, value: Mapping[str, Any], known: Sequence[str] = SOURCE_KEYS
) -> IdentitySource:
    unknown = [str(k) for k in value if k not in known]
    if unknown:
        raise ArgumentError(
            f"{field}.{unknown[0]}", f"unknown field; known fields: {', '.join(known)}"
        )
    identity = _str(f"{field}.identity")(value.get("identity"))
    images = _images(value.get("images"), f"{field}.images")
    if bool(identity) == bool(images):
        raise ArgumentError(field, "give either 'identity' (a saved identity) or 'images'")
    weights = _photo_weights(value.get("photo_weights"), f"{field}.photo_weights")
    if weights and len(weights) != len(images):
        raise ArgumentError(
            f"{field}.photo_weights", f"{len(weights)} weight(s) for {len(images)} photo(s)"
        )
    return IdentitySource(identity=identity, images=images, photo_weights=weights)


def _mix(value: Any) -> tuple[MixPart, ...]:
    """``[{"identity": name, "weight": 0.7}, {"images": [...], "weight": 0.3}]``, or as text
    ``"alice:0.7, @photos:0.3"`` (the accordion, the infotext)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [_mix_text_item(item) for item in value.split(",") if item.strip()]
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Sequence):
        raise ArgumentError("mix", f"expected a list of identities, got {type(value).__name__}")
    if len(value) > MAX_MIX_PARTS:
        raise ArgumentError("mix", f"{len(value)} identities; a mix takes at most {MAX_MIX_PARTS}")
    parts = tuple(_mix_part(number, item) for number, item in enumerate(value, 1))
    _relative_weights("mix", [part.weight for part in parts])
    return parts


def _mix_text_item(item: str) -> dict[str, Any]:
    name, colon, weight = item.rpartition(":")
    if not colon:
        name, weight = weight, "1"
    if not name.strip():
        raise ArgumentError(
            "mix",
            f"{item.strip()!r} names no identity before ':'; write NAME:WEIGHT, e.g. alice:0.5",
        )
    return {"identity": name, "weight": weight}


def _mix_part(number: int, item: Any) -> MixPart:
    field = f"mix.{number}"
    if isinstance(item, MixPart):
        return item
    if not isinstance(item, Mapping):
        raise ArgumentError(field, f"expected {{'identity' or 'images', 'weight'}}, got {item!r}")
    weight = _number(f"{field}.weight", item.get("weight", 1.0), 0, 1e6)
    source = _source_from_dict(
        field, {k: v for k, v in item.items() if k != "weight"}, MIX_PART_KEYS
    )
    if source is not None and source.identity == PHOTOS:
        source = IdentitySource(photos=True)
    return MixPart(source, weight)


def _slider_strength(value: Any) -> float:
    return _number("slider_strength", value, *SLIDER_RANGE)


def expand_slider(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """The API's ``slider: {"positive", "negative", "strength"}`` as the flat fields."""
    if "slider" not in values:
        return values
    slider = values["slider"]
    rest = {k: v for k, v in values.items() if k != "slider"}
    if slider is None:
        return rest
    if not isinstance(slider, Mapping):
        raise ArgumentError("slider", "expected {'positive': ..., 'negative': ..., 'strength': n}")
    for key in slider:
        if key not in ("positive", "negative", "strength"):
            raise ArgumentError(
                f"slider.{key}", "unknown field; known: positive, negative, strength"
            )
    for key in ("positive", "negative", "strength"):
        if key in slider:
            rest[f"slider_{key}"] = slider[key]
    return rest


def _dtype(value: Any) -> str:
    text = _str("dtype")(value).lower()
    if text and text not in DTYPES:
        raise ArgumentError(
            "dtype", f"expected one of {', '.join(DTYPES)} (or empty), got {value!r}"
        )
    return text


def _face(value: Any) -> str:
    return check_face_choice(value, "face")


def _face_index(value: Any) -> int:
    return check_face_index(value, "face_index")


def _images(value: Any, field: str = "images") -> tuple[Any, ...]:
    """Keep image-likes as given (decoding is the pipeline's job); unwrap upload wrappers."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ArgumentError(
            field, f"expected a list of photos, got {type(value).__name__}; send [photo]"
        )
    images = tuple(_unwrap_upload(item) for item in value if item is not None)
    if len(images) > MAX_IMAGES:
        raise ArgumentError(field, too_many_images(len(images)))
    return images  # their sizes are checked where they are read (encoders.images)


def _unwrap_upload(item: Any) -> Any:
    # gradio 3.41 gr.File yields tempfile wrappers (.name is the temp path); gradio 4 yields str.
    # A gr.Gallery yields (image, caption) pairs.
    name = getattr(item, "name", None)
    if isinstance(name, str) and not isinstance(item, (str, bytes, os.PathLike)):
        return name
    if isinstance(item, tuple) and len(item) == 2:
        return item[0]
    return item


CHECKS = {
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
    "photo_weights": _photo_weights,
    "mix": _mix,
    "slider_positive": _source("slider_positive"),
    "slider_negative": _source("slider_negative"),
    "slider_strength": _slider_strength,
    "dtype": _dtype,
}
