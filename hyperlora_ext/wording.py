"""Small helpers for the words users read (no WebUI import)."""

from __future__ import annotations


def counted(number: int, noun: str, plural: str = "") -> str:
    """``"1 photo"``, ``"2 photos"``, ``"0 faces"``: ``noun`` agreeing with ``number``."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"
