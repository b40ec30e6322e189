"""HyperLoRA's entries in the generation parameters (PNG info) and how pasting reads them back.

Keys follow A1111's rule ``\\w[\\w \\-/]+`` (no ``:`` or ``.``). The model, weight and identity
digest are always written; other options only when they differ from the defaults. The photos
themselves are not in the infotext, so pasting restores the settings, not the identity.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from hyperlora_ext.args import FACE_LABELS, HyperLoRAArgs

PREFIX = "HyperLoRA "
MODEL = "HyperLoRA model"
WEIGHT = "HyperLoRA weight"
DIGEST = "HyperLoRA identity"
ERROR = "HyperLoRA error"
WARNING = "HyperLoRA warning"
# field -> key, for options written only when they differ from the default
OPTION_KEYS = {
    "trigger_words": "HyperLoRA trigger words",
    "face": "HyperLoRA face",
    "face_index": "HyperLoRA face index",
    "remove_background": "HyperLoRA remove background",
    "grayscale": "HyperLoRA grayscale",
    "identity": "HyperLoRA saved identity",
}


def clear(params: MutableMapping[str, Any]) -> None:
    """Remove every HyperLoRA key (X/Y/Z cells share this dict, so a disabled cell must pop)."""
    for key in [k for k in params if k.startswith(PREFIX)]:
        del params[key]


def write(params: MutableMapping[str, Any], args: HyperLoRAArgs, digest: str) -> None:
    clear(params)
    params[MODEL] = args.model
    params[WEIGHT] = format_weight(args.weight)
    params[DIGEST] = digest
    for field, value in args.changed_from_default().items():
        if field in OPTION_KEYS:
            params[OPTION_KEYS[field]] = str(value)


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

    return [
        ("enabled", lambda params: WEIGHT in params),
        ("model", MODEL),
        ("weight", WEIGHT),
        *[(field, option(field)) for field in OPTION_KEYS],
    ]


def paste_field_names() -> list[str]:
    return [MODEL, WEIGHT, *OPTION_KEYS.values()]
