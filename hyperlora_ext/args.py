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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hyperlora_ext.arg_table import ArgSpec, arg, specs
from hyperlora_ext.errors import ArgumentError
from hyperlora_ext.facts import (
    DTYPES,
    MAX_FACE_INDEX,
    MAX_IMAGES,
    MAX_MIX_PARTS,
    MAX_TOTAL_IMAGES,
    PHOTOS,
    RECOMMENDED_WEIGHT,
    SLIDER_RANGE,
    TRIGGER_WORDS,
    WEIGHT_RANGE,
    check_face_choice,
    check_face_index,
    too_many_images,
)

__all__ = ["HyperLoRAArgs", "add_trigger_words", "ignored"]


@dataclass(frozen=True)
class HyperLoRAArgs:
    """HyperLoRA settings for one generation. Field order is the ``ui()`` component order."""

    # Each field's label, infotext key, hint, widget and range: hyperlora_ext.arg_table.
    enabled: bool = arg(
        False,
        label="Enable",
        key="",
        widget="checkbox",
        hint="turn HyperLoRA on for this generation",
    )
    images: tuple[Any, ...] = arg(
        (),
        label="Reference photos",
        key="",
        widget="photos",
        hint=f"1 to {MAX_IMAGES} photos of the person (never stored in the infotext)",
    )
    model: str = arg(
        "",
        label="Model",
        key="HyperLoRA model",
        widget="dropdown",
        hint="HyperLoRA model folder name; empty: the default model",
    )
    weight: float = arg(
        RECOMMENDED_WEIGHT,
        label="Weight",
        key="HyperLoRA weight",
        widget="slider",
        range=WEIGHT_RANGE,
        hint="strength of the identity LoRA",
    )
    trigger_words: bool = arg(
        True,
        label="Add trigger words",
        key="HyperLoRA trigger words",
        widget="checkbox",
        hint="prepend the words the models were trained with to the prompt",
    )
    face: str = arg(
        "largest",
        label="Face",
        key="HyperLoRA face",
        widget="radio",
        hint="which face of a group photo: largest, index or best_score",
    )
    face_index: int = arg(
        0,
        label="Face index",
        key="HyperLoRA face index",
        widget="number",
        range=(0, MAX_FACE_INDEX),
        hint="with face=index: 0 is the leftmost face",
    )
    remove_background: bool = arg(
        True,
        label="Remove background",
        key="HyperLoRA remove background",
        widget="checkbox",
        hint="grey out everything but the face before encoding",
    )
    grayscale: bool = arg(
        False,
        label="Grayscale",
        key="HyperLoRA grayscale",
        widget="checkbox",
        hint="encode the photos in grayscale",
    )
    identity: str = arg(
        "",
        label="Saved identity (used instead of photos)",
        key="HyperLoRA saved identity",
        widget="dropdown",
        hint="the name of a saved identity, used instead of photos",
    )
    # Advanced: relative weights of the photos, a mix of identities, a slider.
    photo_weights: tuple[float, ...] = arg(
        (),
        label="Photo weights",
        key="HyperLoRA photo weights",
        widget="text",
        hint="relative weight of each photo, in order (default: equal)",
    )
    mix: tuple[MixPart, ...] = arg(
        (),
        label="Mix identities",
        key="HyperLoRA mix",
        widget="text",
        hint=f"identities to mix (at most {MAX_MIX_PARTS}): [{{'identity': 'alice', 'weight': "
        f"0.7}}, {{'images': [...], 'weight': 0.3}}] or as text alice:0.7, {PHOTOS}:0.3",
    )
    slider_positive: IdentitySource | None = arg(  # noqa: RUF009 - a field specifier
        None,
        label="Slider: positive identity",
        key="HyperLoRA slider positive",
        widget="dropdown",
        hint="the identity applied at +strength",
    )
    slider_negative: IdentitySource | None = arg(  # noqa: RUF009 - a field specifier
        None,
        label="Slider: negative identity",
        key="HyperLoRA slider negative",
        widget="dropdown",
        hint="the identity applied at -strength",
    )
    slider_strength: float = arg(
        0.5,
        label="Slider strength",
        key="HyperLoRA slider strength",
        widget="slider",
        range=SLIDER_RANGE,
        hint="0 turns the slider off",
    )
    # The dtype an infotext says its identity was made in ("" when not known): only compared with
    # the dtype this machine uses, to warn that a pasted image may not come out the same.
    dtype: str = arg(
        "",
        label="Encoder dtype",
        key="HyperLoRA dtype",
        widget="hidden",
        hint="the encoders' dtype of an earlier image (fp32, bf16, fp16): a warning if this "
        "machine's differs",
    )

    def __post_init__(self) -> None:
        # Normalise and validate every field, so any instance that exists is valid.
        for spec in dataclasses.fields(self):
            value = _CHECKS[spec.name](getattr(self, spec.name))
            object.__setattr__(self, spec.name, value)
        _check_together(self)

    @property
    def slider(self) -> bool:
        """A slider takes part: both identities given and a strength other than 0."""
        return self.slider_positive is not None and self.slider_strength != 0

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def specs(cls) -> dict[str, ArgSpec]:
        """Each field's label, infotext key, hint, widget kind and range."""
        return specs(cls)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> HyperLoRAArgs:
        """Named fields; missing ones keep their defaults."""
        names = cls.field_names()
        values = _expand_slider(values)
        for key in values:
            if key not in names:
                known = ", ".join((*names, "slider"))
                raise ArgumentError(str(key), f"unknown field; known fields: {known}")
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


def _expand_slider(values: Mapping[str, Any]) -> Mapping[str, Any]:
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


def _check_together(args: HyperLoRAArgs) -> None:
    """Rules between fields (each field is valid on its own by now)."""
    if args.photo_weights and args.images and len(args.photo_weights) != len(args.images):
        raise ArgumentError(
            "photo_weights",
            f"{len(args.photo_weights)} weight(s) for {len(args.images)} photo(s); give one per "
            "photo, in the order of the photos",
        )
    if args.mix and args.identity:
        raise ArgumentError("mix", "give either a saved identity or a mix, not both")
    if (args.slider_positive is None) != (args.slider_negative is None):
        missing = "slider_negative" if args.slider_negative is None else "slider_positive"
        raise ArgumentError(missing, "a slider needs both a positive and a negative identity")
    _check_total_images(args)


def _photo_sets(args: HyperLoRAArgs) -> list[tuple[str, int]]:
    """(field, photo count) of every photo set the generation may encode, in request order."""
    sets = [("images", len(args.images))]
    sets += [(f"mix.{n}.images", len(p.source.images)) for n, p in enumerate(args.mix, 1)]
    for field in ("slider_positive", "slider_negative"):
        source = getattr(args, field)
        sets.append((f"{field}.images", len(source.images) if source else 0))
    return sets


def _check_total_images(args: HyperLoRAArgs) -> None:
    total = 0
    for field, count in _photo_sets(args):
        total += count
        if total > MAX_TOTAL_IMAGES:
            raise ArgumentError(
                field, f"{total} photos in all (photos, mix parts and slider sides); at most "
                f"{MAX_TOTAL_IMAGES} per generation"
            )  # fmt: skip


def ignored(args: HyperLoRAArgs) -> list[str]:
    """What in ``args`` has no effect, one line each (a warning for the infotext and the API)."""
    notes = []
    if args.photo_weights and args.identity and not args.mix:
        notes.append(
            f"photo weights are ignored: the saved identity {args.identity!r} is used, not photos"
        )
    plus, minus = args.slider_positive, args.slider_negative
    if plus is None and args.slider_strength != HyperLoRAArgs.slider_strength:
        notes.append("slider strength is ignored: no slider identities are given")
    if args.slider and plus == minus:
        notes.append(
            f"the slider has {plus.label() if plus else ''!r} on both sides; it changes nothing"
        )
    return notes


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
    "photo_weights": _photo_weights,
    "mix": _mix,
    "slider_positive": _source("slider_positive"),
    "slider_negative": _source("slider_negative"),
    "slider_strength": _slider_strength,
    "dtype": _dtype,
}


def add_trigger_words(prompt: str) -> str:
    """Prepend the HyperLoRA trigger words unless the prompt already contains them."""
    if TRIGGER_WORDS in prompt:
        return prompt
    return f"{TRIGGER_WORDS}, {prompt}"
