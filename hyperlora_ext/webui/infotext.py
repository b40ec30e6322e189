"""HyperLoRA's entries in the generation parameters (PNG info) and how pasting reads them back.

Keys follow A1111's rule ``\\w[\\w \\-/]+`` (no ``:`` or ``.``). The model, weight and identity
digest are always written; other options only when they differ from the defaults. The photos
themselves are not in the infotext, so pasting restores the settings, not the identity. The
encoders' dtype is written too: pasted, it is compared with this machine's (a warning when they
differ, as the same photos then give a slightly different identity).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

from hyperlora_ext.arg_table import PREFIX
from hyperlora_ext.args import HyperLoRAArgs, IdentitySource, MixPart
from hyperlora_ext.facts import ERROR_LABEL, FACE_LABELS, PHOTOS

# The arguments' keys are declared with the arguments (HyperLoRAArgs.specs()).
KEYS = {name: spec.key for name, spec in HyperLoRAArgs.specs().items() if spec.key}
MODEL = KEYS["model"]
WEIGHT = KEYS["weight"]
DIGEST = "HyperLoRA identity"
DTYPE = KEYS["dtype"]  # the encoders' dtype: it changes the identity's last bits
ERROR = ERROR_LABEL
WARNING = "HyperLoRA warning"
# field -> key, for options written only when they differ from the default
OPTIONS = ("trigger_words", "face", "face_index", "remove_background", "grayscale", "identity")
OPTION_KEYS = {name: KEYS[name] for name in OPTIONS}
PHOTO_WEIGHTS = KEYS["photo_weights"]
MIX = KEYS["mix"]
SLIDER_POSITIVE = KEYS["slider_positive"]
SLIDER_NEGATIVE = KEYS["slider_negative"]
SLIDER_STRENGTH = KEYS["slider_strength"]
SLIDER_DIGESTS = "HyperLoRA slider identities"  # positive/negative identity digests


def clear(params: MutableMapping[str, Any]) -> None:
    """Remove every HyperLoRA key (X/Y/Z cells share this dict, so a disabled cell must pop)."""
    for key in [k for k in params if k.startswith(PREFIX)]:
        del params[key]


def write(
    params: MutableMapping[str, Any],
    args: HyperLoRAArgs,
    digest: str,
    *,
    slider_digests: Sequence[str] = (),
    dtype: str = "",
) -> None:
    clear(params)
    params[MODEL] = args.model
    params[WEIGHT] = format_weight(args.weight)
    params[DIGEST] = digest
    if dtype:
        params[DTYPE] = dtype
    for field, value in args.changed_from_default().items():
        if field in OPTION_KEYS:
            params[OPTION_KEYS[field]] = str(value)
    if args.photo_weights and (args.mix or not args.identity):
        params[PHOTO_WEIGHTS] = format_weights(args.photo_weights)
    if args.mix:
        params[MIX] = format_mix(args.mix)
    if args.slider and args.slider_positive and args.slider_negative:
        params[SLIDER_POSITIVE] = args.slider_positive.label()
        params[SLIDER_NEGATIVE] = args.slider_negative.label()
        params[SLIDER_STRENGTH] = format_weight(args.slider_strength)
        if slider_digests:
            params[SLIDER_DIGESTS] = "/".join(slider_digests)


def format_weights(weights: Sequence[float]) -> str:
    return ", ".join(format_weight(w) for w in weights)


def format_mix(parts: Sequence[MixPart]) -> str:
    """The text form the accordion and ``HyperLoRAArgs`` read: ``alice:0.7, @photos:0.3``."""
    return ", ".join(f"{_mix_label(part.source)}:{format_weight(part.weight)}" for part in parts)


def _mix_label(source: IdentitySource) -> str:
    # A mix's own photos paste back as the accordion's photos (photos are never in the infotext).
    return source.identity or PHOTOS


def write_error(params: MutableMapping[str, Any], message: str) -> None:
    params[ERROR] = message


def format_weight(weight: float) -> str:
    return f"{weight:.4g}"


def paste_rules() -> list[tuple[str, str | Callable[[dict], Any]]]:
    """(argument field, infotext key or function of the parsed params) for ``infotext_fields``.

    A function returning None leaves the control alone. Options missing from a HyperLoRA infotext
    had their default value, so they are reset to it; an infotext without HyperLoRA turns it off.
    """
    defaults = HyperLoRAArgs()

    def option(field: str) -> Callable[[dict], Any]:
        def read(params: dict) -> Any:
            if WEIGHT not in params:
                return None
            value = params.get(OPTION_KEYS[field], str(getattr(defaults, field)))
            return FACE_LABELS.get(value, value) if field == "face" else value

        return read

    def text(key: str, default: str = "") -> Callable[[dict], Any]:
        return lambda params: params.get(key, default) if WEIGHT in params else None

    def saved(key: str) -> Callable[[dict], Any]:
        """A saved identity's name for its dropdown; photos (``@...``) cannot paste back."""

        def read(params: dict) -> Any:
            if WEIGHT not in params:
                return None
            value = str(params.get(key, ""))
            return "" if value.startswith("@") else value

        return read

    return [
        ("enabled", lambda params: WEIGHT in params),
        ("model", MODEL),
        ("weight", WEIGHT),
        *[(field, option(field)) for field in OPTION_KEYS],
        ("photo_weights", text(PHOTO_WEIGHTS)),
        ("mix", text(MIX)),
        ("slider_positive", saved(SLIDER_POSITIVE)),
        ("slider_negative", saved(SLIDER_NEGATIVE)),
        ("slider_strength", text(SLIDER_STRENGTH, format_weight(defaults.slider_strength))),
        ("dtype", text(DTYPE)),
    ]


def paste_field_names() -> list[str]:
    advanced = [PHOTO_WEIGHTS, MIX, SLIDER_POSITIVE, SLIDER_NEGATIVE, SLIDER_STRENGTH]
    return [MODEL, WEIGHT, *OPTION_KEYS.values(), *advanced, DTYPE]
