"""ADetailer's face pass and HyperLoRA: detection, the settings fix and the face-pass rules.

ADetailer (Bing-su/adetailer) repaints each face in a new img2img job (``p._ad_inner``) that keeps
only the always-on scripts whose file stem is listed in its setting ``ad_script_names`` (while
``ad_only_selected_scripts`` is on, the default). Unless ``hyperlora`` is listed, the face is
repainted by the bare checkpoint. On Forge, an ADetailer ControlNet model drops every other script
from the face pass, whatever the list says.

On the main job ADetailer re-enters the hooks with shallow copies of ``p`` (which share the job's
state): ``postprocess(copy(p), dummy)`` and ``before_process``/``process(copy(p))``. Those are
the same job: :func:`is_reentry` tells them apart from a new job. The face pass itself reuses the
main job's identity (:func:`main_job`): no second prediction, and it can never read photos the
main job refused (an API job's server paths).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperlora_ext.webui import job_state

SCRIPT_NAMES = "ad_script_names"
ONLY_SELECTED = "ad_only_selected_scripts"
OUR_STEM = "hyperlora"  # scripts/hyperlora.py: ADetailer matches the file stem
ADETAILER_STEM = "!adetailer"  # scripts/!adetailer.py
NO_CONTROLNET = ("None", "Passthrough")  # ADetailer's values that keep the script list
SETTING_LABEL = "Settings > ADetailer > Script names to apply to ADetailer"
LORA_TAG = re.compile(r"<lora:([^:>]+)")  # A1111's extra network syntax: <lora:name:weight>

FORGE_CONTROLNET_NOTE = (
    "on Forge, an ADetailer ControlNet model other than None runs the face pass with ControlNet "
    "alone, without the identity (the image's HyperLoRA warning says so)"
)

# The main job in progress (the WebUI runs one job at a time): the face pass reuses its identity.
_main: tuple[Any, job_state.JobState] | None = None


@dataclass(frozen=True)
class Setup:
    """What ADetailer's settings mean for HyperLoRA."""

    installed: bool
    only_selected: bool = True
    script_names: str = ""
    forge: bool = False  # Forge: ADetailer's ControlNet option drops every other script

    @property
    def listed(self) -> bool:
        return OUR_STEM in _names(self.script_names)

    @property
    def keeps_identity(self) -> bool:
        return not self.installed or not self.only_selected or self.listed

    def problem(self) -> str | None:
        if self.keeps_identity:
            return None
        return (
            "ADetailer's face pass runs without the identity (the face is repainted by the bare "
            f"checkpoint): add '{OUR_STEM}' to {SETTING_LABEL}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "installed": self.installed,
            "only_selected_scripts": self.only_selected,
            "script_names": self.script_names,
            "listed": self.listed,
            "keeps_identity": self.keeps_identity,
            "problem": self.problem(),
            "fix": None if self.keeps_identity else fix_body(self),
            "notes": [FORGE_CONTROLNET_NOTE] if self.installed and self.forge else [],
        }


def _names(text: str) -> list[str]:
    return [name.strip() for name in str(text).split(",") if name.strip()]


def fix_body(setup: Setup) -> dict[str, str]:
    """The ``/sdapi/v1/options`` body that adds HyperLoRA (what the accordion's button does)."""
    return {SCRIPT_NAMES: ",".join([*_names(setup.script_names), OUR_STEM])}


def read() -> Setup:
    """ADetailer's current settings (``installed=False`` without ADetailer)."""
    try:
        from modules import scripts, shared
    except ImportError:  # outside a WebUI (the CLI's server, tests of the API alone)
        return Setup(installed=False)

    stems = {Path(str(getattr(entry, "path", ""))).stem for entry in scripts.scripts_data}
    installed = ADETAILER_STEM in stems or SCRIPT_NAMES in shared.opts.data
    if not installed:
        return Setup(installed=False)
    data = shared.opts.data
    return Setup(
        installed=True,
        only_selected=bool(data.get(ONLY_SELECTED, True)),
        script_names=str(data.get(SCRIPT_NAMES, "")),
        forge=_forge_webui(),
    )


def _forge_webui() -> bool:
    try:
        return importlib.util.find_spec("modules_forge") is not None
    except ValueError:  # in sys.modules without a spec: it is there
        return True


def set_listed(listed: bool) -> Setup:
    """Add (or take out) HyperLoRA in ADetailer's script list, as a user's change in Settings:
    the value is set through the options (their change callbacks run) and saved to the
    settings file."""
    from modules import shared

    setup = read()
    names = [name for name in _names(setup.script_names) if name != OUR_STEM]
    if listed:
        names.append(OUR_STEM)
    shared.opts.set(SCRIPT_NAMES, ",".join(names))
    shared.opts.save(shared.config_filename)
    return read()


# ----------------------------------------------------------------------------- the job's rules
def is_inner(p: Any) -> bool:
    """``p`` is one of ADetailer's face passes."""
    return bool(getattr(p, "_ad_inner", False))


def is_reentry(p: Any) -> bool:
    """``p`` is ADetailer's shallow copy of a job still in progress (it shares the job's state)."""
    state = job_state.peek(p)
    return state is not None and state.owner not in (None, id(p)) and not state.finished


def begin_main(p: Any, state: job_state.JobState) -> None:
    global _main
    _main = (p, state)


def end_main(p: Any) -> None:
    global _main
    if _main is not None and _main[0] is p:
        _main = None


def main_job(p: Any) -> tuple[Any, job_state.JobState] | None:
    """The job whose face pass ``p`` is (None when ``p`` is not a face pass, or no job runs)."""
    return _main if is_inner(p) else None


def face_pass_problem(p: Any) -> str | None:
    """Why this job's face pass will not carry the identity, if it will not."""
    problem = read().problem()
    if problem is not None:
        return problem
    if _is_forge(p) and _controlnet_models(p):
        models = ", ".join(sorted(_controlnet_models(p)))
        return (
            f"ADetailer's ControlNet model ({models}) makes Forge run the face pass with "
            "ControlNet alone, without the identity: set ADetailer's ControlNet model to None"
        )
    return None


def _is_forge(p: Any) -> bool:
    return hasattr(getattr(p, "sd_model", None), "forge_objects")


def _controlnet_models(p: Any) -> set[str]:
    """ADetailer's ControlNet models of this job's enabled tabs (its args are one dict a tab)."""
    runner = getattr(p, "scripts", None)
    for script in getattr(runner, "alwayson_scripts", []):
        if Path(str(getattr(script, "filename", ""))).stem != ADETAILER_STEM:
            continue
        args = list(p.script_args[script.args_from : script.args_to])
        if args and args[0] is False:  # "Enable ADetailer" off
            return set()
        tabs = [a for a in args if isinstance(a, dict) and a.get("ad_tab_enable", True)]
        return {str(m) for tab in tabs if (m := tab.get("ad_controlnet_model", "None"))} - set(
            NO_CONTROLNET
        )
    return set()


def uses_saved_identity(prompts: Iterable[str] | None, saved: Sequence[str]) -> bool:
    """A prompt uses a saved identity as a LoRA (``<lora:alice:0.85>``): the LoRA was trained
    with the trigger words, so the prompt needs them too."""
    names = set(saved)
    return any(tag.strip() in names for text in prompts or () for tag in LORA_TAG.findall(text))
