"""What each generation argument is, declared once: its label, infotext key, hint, widget kind
and range, as the metadata of :class:`~hyperlora_ext.args.HyperLoRAArgs`'s dataclass fields.

The infotext keys and paste rules (:mod:`hyperlora_ext.webui.infotext`) and the API's request
model (:mod:`hyperlora_ext.webui.api_models`) read them from here; the accordion may too. This
module imports only the standard library.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal

Widget = Literal["checkbox", "photos", "dropdown", "slider", "number", "radio", "text", "hidden"]
KEY_RULE = re.compile(r"\w[\w \-/]+")  # A1111's infotext key pattern: no ':' or '.'
PREFIX = "HyperLoRA "


@dataclass(frozen=True)
class ArgSpec:
    """One argument: how the accordion shows it, what the infotext calls it, what it means."""

    label: str
    key: str  # infotext key ("" when the argument is never written, e.g. the photos)
    hint: str  # one line: for tooltips and the API's schema
    widget: Widget
    range: tuple[float, float] | None = None  # numbers: the inclusive bounds


def arg(default: Any, *, label: str, key: str, hint: str, widget: Widget, **extra: Any) -> Any:
    """A dataclass field with ``default`` and its :class:`ArgSpec` as metadata."""
    spec = ArgSpec(label, key, hint, widget, **extra)
    return dataclasses.field(default=default, metadata={"spec": spec})


def specs(cls: type) -> dict[str, ArgSpec]:
    """Field name -> its spec, in field order (``cls`` is a dataclass of :func:`arg` fields)."""
    return {f.name: f.metadata["spec"] for f in dataclasses.fields(cls)}
