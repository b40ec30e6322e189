"""The one typed argument model shared by the accordion, the HTTP API, X/Y/Z and the infotext.

Script arguments arrive either as the positional list in ``ui()`` order (the WebUI's own way) or,
recommended for API clients, as a single dict with named fields. Both are parsed into one frozen
:class:`HyperLoRAArgs`; anything unknown or out of range raises :class:`ArgumentError` naming the
field. Each field's own parsing is in :mod:`hyperlora_ext.arg_values`; this module holds the model
and the rules between fields. It imports nothing from the WebUI.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hyperlora_ext.arg_table import ArgSpec, arg, specs
from hyperlora_ext.arg_values import CHECKS, IdentitySource, MixPart, expand_slider
from hyperlora_ext.errors import ArgumentError
from hyperlora_ext.facts import (
    MAX_FACE_INDEX,
    MAX_IMAGES,
    MAX_MIX_PARTS,
    MAX_TOTAL_IMAGES,
    PHOTOS,
    RECOMMENDED_WEIGHT,
    SLIDER_RANGE,
    TRIGGER_WORDS,
    WEIGHT_RANGE,
)

__all__ = ["HyperLoRAArgs", "IdentitySource", "MixPart", "add_trigger_words", "ignored"]


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
            value = CHECKS[spec.name](getattr(self, spec.name))
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
        values = expand_slider(values)
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


def add_trigger_words(prompt: str) -> str:
    """Prepend the HyperLoRA trigger words unless the prompt already contains them."""
    if TRIGGER_WORDS in prompt:
        return prompt
    return f"{TRIGGER_WORDS}, {prompt}"
