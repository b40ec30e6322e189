"""The infotext of images made with a refined identity: ``HyperLoRA refined: 50 steps (NAME)``.

A refined identity is an ordinary saved identity whose record has ``options["refine"]``; it is
used from the accordion's "Saved identity" or as ``<lora:NAME>`` in the prompt, so both are read.
The entry is informational (it is not pasted back; the identity's name is).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import Any

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.refine.save import REFINE_OPTION

KEY = "HyperLoRA refined"
LORA_TAG = re.compile(r"<lora:([^:>]+)")


def note(store: Any, name: str) -> str | None:
    """``"50 steps (NAME)"`` when ``name`` is a saved identity refined by this extension."""
    try:
        if not store.exists(name):
            return None
        run = store.record(name).options.get(REFINE_OPTION)
    except (HyperLoRAError, OSError):  # not an identity name (e.g. a Lora in a subfolder)
        return None
    if not isinstance(run, dict):
        return None
    steps = run.get("steps")
    return f"{steps} steps ({name})" if isinstance(steps, int) else f"yes ({name})"


def names_in(prompts: Iterable[str]) -> list[str]:
    """The ``<lora:NAME...>`` names of ``prompts``, first use first."""
    found: dict[str, None] = {}
    for prompt in prompts:
        for name in LORA_TAG.findall(prompt or ""):
            found.setdefault(name.strip(), None)
    return list(found)


def write(
    params: MutableMapping[str, Any], store: Any, identity: str, prompts: Iterable[str]
) -> None:
    """Add ``KEY`` for the saved ``identity`` (may be "") and refined identities in ``prompts``."""
    names = ([identity] if identity else []) + names_in(prompts)
    notes = [text for text in dict.fromkeys(note(store, n) for n in names) if text]
    if notes:
        params[KEY] = ", ".join(notes)


def write_for_job(p: Any, store: Any, args: Any) -> None:
    """``process()``: the note for this job's saved identity (when used) and ``<lora:>`` tags."""
    used = args.enabled and args.weight != 0 and not args.mix
    prompts = [*(getattr(p, "all_prompts", None) or [p.prompt]),
               *(getattr(p, "all_hr_prompts", None) or [])]  # fmt: skip
    write(p.extra_generation_params, store, args.identity if used else "", prompts)
