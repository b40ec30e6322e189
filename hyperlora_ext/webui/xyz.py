"""HyperLoRA axes for the WebUI's X/Y/Z plot script.

The axes are added to ``xyz_grid.py``'s ``axis_options`` from ``on_before_ui`` when that script is
loaded (it is not importable by name: it is found in ``modules.scripts.scripts_data``). Each cell
runs on a shallow copy of ``p``; an axis stores its value in a fresh job state of the cell
(``job_state.with_override``) and the script overlays it on its arguments with
:func:`merge_overrides`. The identity pipeline caches
predictions, so cells differing only in weight or other parameters never re-encode the photos.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hyperlora_ext.args import HyperLoRAArgs
from hyperlora_ext.errors import ArgumentError
from hyperlora_ext.webui import job_state

LABEL_PREFIX = "[HyperLoRA] "
XYZ_FILE = "xyz_grid.py"


def merge_overrides(args: HyperLoRAArgs, p: Any) -> HyperLoRAArgs:
    """``args`` with the X/Y/Z cell's HyperLoRA values applied (validated: ArgumentError)."""
    state = job_state.peek(p)
    overrides = state.overrides if state is not None else None
    if not overrides:
        return args
    merged = args.replace(**overrides)
    if "slider_strength" in overrides and merged.enabled and merged.slider_positive is None:
        raise ArgumentError(
            "slider_strength",
            "the X/Y/Z axis [HyperLoRA] Slider strength needs a slider: pick its positive and "
            "negative identities in HyperLoRA's Advanced section (or send 'slider' in the API)",
        )
    return merged


def find_xyz_module() -> Any:
    """The loaded ``xyz_grid.py`` module, or None when the X/Y/Z script is absent."""
    try:
        from modules import scripts
    except ImportError:
        return None
    for data in getattr(scripts, "scripts_data", ()):
        names = (os.path.basename(getattr(data, "path", "") or ""), _module_name(data))
        if XYZ_FILE in names and hasattr(data.module, "axis_options"):
            return data.module
    return None


def _module_name(data: Any) -> str:
    return getattr(getattr(data, "script_class", None), "__module__", "") or ""


def register_axes(
    module: Any = None,
    *,
    list_models: Callable[[], list[str]] | None = None,
    list_identities: Callable[[], list[str]] | None = None,
) -> bool:
    """Add the HyperLoRA axes to the X/Y/Z script; False (and nothing done) when it is absent.

    Safe to call again (``on_before_ui`` reruns on UI reload): old HyperLoRA axes are replaced.
    """
    module = module or find_xyz_module()
    if module is None:
        return False
    options = axis_options(
        module,
        list_models=list_models or _webui_models,
        list_identities=list_identities or _webui_identities,
    )
    kept = [o for o in module.axis_options if not str(o.label).startswith(LABEL_PREFIX)]
    module.axis_options[:] = [*kept, *options]
    return True


def axis_options(
    module: Any,
    *,
    list_models: Callable[[], list[str]],
    list_identities: Callable[[], list[str]],
) -> list[Any]:
    """The HyperLoRA axes, built with the X/Y/Z module's own ``AxisOption`` class."""
    axis = module.AxisOption
    label = getattr(module, "format_value_add_label", None)
    extra = {"format_value": label} if label else {}
    booleans = getattr(module, "boolean_choice", None)
    return [
        axis(f"{LABEL_PREFIX}Weight", float, _apply("weight"), confirm=_confirm("weight"), **extra),
        axis(
            f"{LABEL_PREFIX}Model",
            str,
            _apply("model"),
            confirm=_confirm_in("model", list_models),
            choices=list_models,
            **extra,
        ),
        axis(
            f"{LABEL_PREFIX}Identity",
            str,
            _apply("identity"),
            confirm=_confirm_in("identity", list_identities),
            choices=list_identities,
            **extra,
        ),
        axis(
            f"{LABEL_PREFIX}Slider strength",
            float,
            _apply("slider_strength"),
            confirm=_confirm("slider_strength"),
            **extra,
        ),
        axis(
            f"{LABEL_PREFIX}Enabled",
            str,
            _apply("enabled"),
            confirm=_confirm("enabled"),
            choices=booleans(reverse=False) if booleans else lambda: ["True", "False"],
            **extra,
        ),
    ]


def _apply(field: str) -> Callable[[Any, Any, Any], None]:
    def apply(p: Any, value: Any, values: Any) -> None:
        job_state.with_override(p, field, _normalise(field, value))

    apply.__name__ = f"apply_hyperlora_{field}"
    return apply


def _normalise(field: str, value: Any) -> Any:
    """The typed value ("True" -> True); an invalid one is kept for the script to report."""
    try:
        return getattr(HyperLoRAArgs.from_dict({field: value}), field)
    except ArgumentError:
        return value


def _confirm(field: str) -> Callable[[Any, list], None]:
    """Reject bad values before the grid starts (the X/Y/Z script expects ValueError)."""

    def confirm(p: Any, values: list) -> None:
        for value in values:
            try:
                HyperLoRAArgs.from_dict({field: value})
            except ArgumentError as error:
                raise ValueError(str(error)) from None

    return confirm


def _confirm_in(field: str, known: Callable[[], list[str]]) -> Callable[[Any, list], None]:
    def confirm(p: Any, values: list) -> None:
        available = known()
        for value in values:
            if value not in available:
                raise ValueError(
                    f"HyperLoRA {field} {value!r} not found; available: "
                    f"{', '.join(available) or 'none'}"
                )

    return confirm


def _webui_models() -> list[str]:
    from hyperlora_ext.webui.host import list_models

    return list_models()


def _webui_identities() -> list[str]:
    from hyperlora_ext.webui.host import identity_store

    return identity_store().names()
