"""HyperLoRA's one per-job state object on ``p`` (``p._hyperlora_job``).

It holds what one generation job knows: the identity, the patches (with their roles), the errors
said so far, the likeness scores, the job's own warning and the X/Y/Z cell's overrides. Never on
the script object, which the UI, the API and X/Y/Z cells share.

Shallow copies of ``p`` share the object (``copy(p)`` copies the reference): an extension that
re-enters the hooks on a copy of the same job (ADetailer calls ``before_process``/``process``/
``postprocess`` on ``copy(p)``) sees, and writes into, the job's own state. X/Y/Z cells are jobs
of their own: an axis gives its cell a new state (:func:`with_override`) and the main ``p`` of an
X/Y/Z run never enters the hooks, so cells never share one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hyperlora_ext.identity_value import Identity
from hyperlora_ext.webui.adapter import Patch

ATTRIBUTE = "_hyperlora_job"
UNSET: Any = object()  # the job's own warning before a likeness note was added: not read yet


@dataclass(eq=False)
class JobState:
    identity: Identity | None = None  # None: nothing to apply (off, skipped or failed)
    patches: tuple[Patch, ...] = ()  # the identity, then a slider's two sides if any
    errors: tuple[str, ...] = ()  # every error said for this job, in order
    likeness: list[Any] = field(default_factory=list)  # likeness.Likeness per scored image
    base_warning: Any = UNSET  # the job's HyperLoRA warning, without the likeness notes
    overrides: dict[str, Any] = field(default_factory=dict)  # X/Y/Z axis values of this cell
    owner: int | None = None  # id() of the p whose before_process began the job
    finished: bool = False  # the owner's postprocess ran: a copy of p made now is a new job

    def drop_identity(self) -> None:
        self.identity, self.patches = None, ()


def of(p: Any) -> JobState:
    """The job's state (made on first use)."""
    state = getattr(p, ATTRIBUTE, None)
    if state is None:
        state = JobState()
        setattr(p, ATTRIBUTE, state)
    return state


def peek(p: Any) -> JobState | None:
    """The job's state, or None when no hook made one (nothing to read then)."""
    return getattr(p, ATTRIBUTE, None)


def begin(p: Any) -> JobState:
    """``before_process()``: a new job, keeping only the X/Y/Z cell's overrides."""
    old = peek(p)
    state = JobState(overrides=dict(old.overrides) if old is not None else {}, owner=id(p))
    setattr(p, ATTRIBUTE, state)
    return state


def with_override(p: Any, name: str, value: Any) -> None:
    """Record one X/Y/Z axis value on the cell's ``p``: a new state, since cells are shallow
    copies of one ``p`` and must not write into each other's."""
    old = peek(p)
    overrides = {**(old.overrides if old is not None else {}), name: value}
    setattr(p, ATTRIBUTE, JobState(overrides=overrides))
