"""One generation's HyperLoRA work, for the AlwaysOn script: prepare in ``process()``, apply
before every sampling pass, restore after the job. Per-job state lives on ``p``
(:mod:`~hyperlora_ext.webui.job_state`), never on the script object, which the UI, the API and
X/Y/Z cells share.

Every hook runs inside :func:`boundary`: the WebUI logs and swallows exceptions that escape a
script hook, which would leave an image that looks fine but lacks the identity. Instead, any
exception becomes a visible ``HyperLoRA error`` (infotext, comments, API ``info``, a 422 in fail
mode), the HyperLoRA parameters of the image are removed, and the console gets the traceback once.

ADetailer re-enters the hooks on copies of a job and runs face passes inside it; the rules for
those calls are in :mod:`~hyperlora_ext.webui.adetailer` (the same job is not begun, prepared or
restored twice; a face pass reuses the main job's identity).
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hyperlora_ext.args import HyperLoRAArgs, add_trigger_words
from hyperlora_ext.errors import HyperLoRAError, UnexpectedError
from hyperlora_ext.facts import ERROR_LABEL
from hyperlora_ext.identity_value import Identity
from hyperlora_ext.webui import (
    adetailer,
    fail_mode,
    host,
    infotext,
    job_state,
    likeness,
    progress,
    refine_info,
    studio,
    xyz,
)
from hyperlora_ext.webui.adapter import IDENTITY, SLIDER_NEGATIVE, SLIDER_POSITIVE, Patch

MAX_MESSAGE = 300  # characters of an unexpected exception's message kept in the infotext


@contextmanager
def doing(action: str) -> Iterator[None]:
    """Name the work in progress in any exception that is not already a HyperLoRAError."""
    try:
        yield
    except HyperLoRAError:
        raise
    except Exception as error:
        raise UnexpectedError(f"{action} failed: {_one_line(error)}") from error


@contextmanager
def boundary(p: Any, action: str, *, after_images: bool = False) -> Iterator[None]:
    """A script hook's edge: nothing escapes to the WebUI (which would swallow it silently).

    ``after_images``: the hook runs after the images were made (``postprocess``), so their
    HyperLoRA parameters stay true; the error is added beside them.
    """
    try:
        with doing(action):
            yield
    except Exception as error:
        fail(p, error, after_images=after_images)


def fail(p: Any, error: Exception, *, after_images: bool = False) -> None:
    """Say so everywhere, once; before the images are made, the identity is dropped from the job."""
    message = str(error)
    _log(message, unexpected=not isinstance(error, HyperLoRAError) or error.__cause__ is not None)
    if not after_images:
        job_state.of(p).drop_identity()
    report(p, message, identity_applied=after_images)


def begin(p: Any) -> bool:
    """``before_process()``, the job's first hook: a new job state, no error reported yet.
    False for ADetailer's copy of a job in progress: the same job, nothing to begin."""
    if adetailer.is_reentry(p):
        return False
    state = job_state.begin(p)
    if not adetailer.is_inner(p):
        adetailer.begin_main(p, state)
    return True


def prepare(p: Any, args: tuple) -> None:
    """``process()``: parse the arguments and predict (or reuse) the identity of this job."""
    if adetailer.is_reentry(p):
        return  # ADetailer's copy of this job: prepared already, its warnings stay
    if adetailer.is_inner(p):
        _prepare_face_pass(p, args)
        return
    job_state.of(p).drop_identity()
    likeness.reset(p)
    # X/Y/Z cells share this dict: take out the last cell's entries, keep this job's errors.
    infotext.clear(p.extra_generation_params)
    _write_errors(p)
    options = _arguments(p, args)
    # Weight 0 and "Enabled: off" are the same: no encoding, no trigger words, no parameters.
    if options.enabled and options.weight != 0:
        _prepare(p, options)
    refine_info.write_for_job(p, host.services().store(), options)


def _arguments(p: Any, args: tuple) -> HyperLoRAArgs:
    return xyz.merge_overrides(HyperLoRAArgs.from_script_args(args), p)


def _prepare(p: Any, options: HyperLoRAArgs) -> None:
    reason = host.unsupported_reason(p.sd_model)
    if reason is not None:
        report(p, f"skipped, {reason}")
        return
    identity, patches, options = _identity(p, options)
    for patch in patches:
        with doing("matching the identity to the checkpoint"):
            outcome = host.get_adapter(p).check(p, patch.lora, patch.name)
        if outcome.matched == 0:  # known now, before the trigger words would change the prompt
            report(p, _skipped(p, outcome, patch))
            return
    state = job_state.of(p)
    state.identity, state.patches = identity, patches
    slider = [patch.digest for patch in patches if patch.role != IDENTITY]
    infotext.write(
        p.extra_generation_params, options, identity.digest, slider_digests=slider,
        dtype=identity.dtype,
    )  # fmt: skip
    _warn(p, identity.notes)
    _write_errors(p)  # e.g. the clean-up of the previous job failed
    if options.trigger_words:
        _add_trigger_words(p)


def _add_trigger_words(p: Any) -> None:
    for name in ("all_prompts", "all_hr_prompts"):
        prompts = getattr(p, name, None)
        if prompts:
            setattr(p, name, [add_trigger_words(prompt) for prompt in prompts])


def _prepare_face_pass(p: Any, args: tuple) -> None:
    """ADetailer's face pass: the main job's identity again, from its state (no prediction, and
    no photo the main job refused: its input rules hold here too)."""
    try:
        options = _arguments(p, args)
    except HyperLoRAError:
        return  # the main job's own arguments: it reported the error already
    if options.trigger_words and adetailer.uses_saved_identity(p.all_prompts, _saved_names()):
        _add_trigger_words(p)  # a per-face prompt with <lora:alice:...>, a saved identity
    main = adetailer.main_job(p)
    if main is None or main[1].identity is None:
        return
    main_p, main_state = main
    reason = host.unsupported_reason(p.sd_model)  # ADetailer's own checkpoint for the face
    if reason is not None:
        warn(main_p, f"the face pass ran without the identity: {reason}")
        return
    state = job_state.of(p)
    state.identity, state.patches = main_state.identity, main_state.patches
    if options.trigger_words:  # also into a custom ADetailer prompt
        _add_trigger_words(p)


def _saved_names() -> list[str]:
    try:
        return host.services().store().names()
    except Exception as error:  # the trigger words are a help; the face pass goes on without
        _log(f"reading the saved identities for the face pass: {error}", unexpected=False)
        return []


def warn(p: Any, message: str) -> None:
    """Add ``message`` to the job's HyperLoRA warning (kept under the likeness notes)."""
    params, state = p.extra_generation_params, job_state.of(p)
    if message in str(params.get(infotext.WARNING) or ""):
        return  # said already for this job (ADetailer re-enters once per batch)
    params[infotext.WARNING] = _joined(params.get(infotext.WARNING), message)
    if state.base_warning is not job_state.UNSET:
        state.base_warning = _joined(state.base_warning, message)
    p.comment(f"HyperLoRA: {message}")


def _joined(first: Any, second: str) -> str:
    return f"{first}; {second}" if first else second


def finish(p: Any) -> None:
    """``postprocess()``: restore the UNet, the job is over. ADetailer's dummy postprocess on a
    copy of the job (before its face pass) restores nothing: it is where the image learns
    whether its face pass will carry the identity."""
    if adetailer.is_reentry(p):
        problem = adetailer.face_pass_problem(p)
        if problem is not None and job_state.of(p).identity is not None:
            warn(p, problem)
        return
    try:
        restore(p)
    finally:
        state = job_state.peek(p)
        if state is not None and state.owner == id(p):
            state.finished = True
        adetailer.end_main(p)


def _identity(p: Any, options: HyperLoRAArgs) -> tuple[Identity, tuple[Patch, ...], HyperLoRAArgs]:
    """The job's identity, its patches (the identity, a slider's sides) and ``options`` with the
    model the identity was made with."""
    ctx = studio.Context(
        host.services(),
        is_api=bool(getattr(p, "is_api", False)),
        stage=progress.encoding,
        before_compute=lambda: host.free_vram_for_encoders(p),
    )
    with doing(_action(options)):
        identity = studio.resolve(options, ctx)
    options = options.replace(model=identity.model)
    patches = [Patch.of(identity.lora, identity.digest, options.weight, IDENTITY, identity.model)]
    if options.slider:
        try:
            with doing("preparing the slider's identities"):
                plus, minus = studio.resolve_slider(options, ctx)
        except HyperLoRAError as error:  # say which part failed; the message names the side
            raise HyperLoRAError(f"slider: {error}") from error.__cause__  # unexpected: logged
        strength = options.slider_strength
        patches.append(Patch.of(plus.lora, plus.digest, strength, SLIDER_POSITIVE, plus.model))
        patches.append(Patch.of(minus.lora, minus.digest, -strength, SLIDER_NEGATIVE, minus.model))
    return identity, tuple(patches), options


def _action(options: HyperLoRAArgs) -> str:
    if options.mix:
        return f"mixing {len(options.mix)} identities"
    if options.identity:
        return f"loading the saved identity {options.identity!r}"
    model = options.model or "(default)"
    return f"encoding {len(options.images)} photo(s) with the model {model!r}"


def apply(p: Any) -> None:
    """Patch the identity in; idempotent, so every sampling pass may call it."""
    state = job_state.peek(p)
    if state is None or state.identity is None:
        return
    try:
        with doing("applying the identity to the checkpoint"):
            outcomes = host.get_adapter(p).apply_all(p, state.patches)
    except Exception:
        _take_out(p)  # a half-done apply must not leave the identity in an "error" image
        raise
    for outcome, patch in zip(outcomes, state.patches, strict=True):
        if outcome.matched == 0:
            _take_out(p)  # a slider without one of its sides would be a different image
            state.drop_identity()
            report(p, _skipped(p, outcome, patch))
            return
    for outcome in outcomes:
        if outcome.matched < outcome.expected:
            message = f"only {outcome.matched} of {outcome.expected} layers matched this checkpoint"
            _warn(p, (*state.identity.notes, message))
            return


def _warn(p: Any, notes: tuple[str, ...]) -> None:
    """The job's warnings in the infotext and the UI's comments (the same text every call)."""
    if notes:
        message = "; ".join(notes)
        p.extra_generation_params[infotext.WARNING] = message
        p.comment(f"HyperLoRA: {message}")


def _skipped(p: Any, outcome: Any, patch: Patch) -> str:
    """Why nothing of ``patch`` was applied: a checkpoint HyperLoRA cannot patch at all, or a
    model none of whose layers fits this checkpoint (one layer's reason as the example)."""
    reason = host.unsupported_reason(p.sd_model)
    if reason is None:
        model = f"HyperLoRA model {patch.model!r}" if patch.model else "the HyperLoRA model"
        reason = f"none of the {outcome.expected} layers of {model} fit this checkpoint"
        if outcome.reasons:
            reason += f" (e.g. {outcome.reasons[0]})"
    side = {SLIDER_POSITIVE: "slider positive: ", SLIDER_NEGATIVE: "slider negative: "}
    return f"skipped, {side.get(patch.role, '')}{reason}"


def restore(p: Any) -> None:
    """Take every trace of the identity out of the UNet (bit-exact)."""
    try:
        adapter = host.get_adapter(p)
    except HyperLoRAError:
        return  # no LoRA system, nothing of ours can be merged
    with doing("restoring the checkpoint's weights"):
        adapter.restore(p)


def _take_out(p: Any) -> None:
    try:
        restore(p)
    except Exception as error:  # reported by the caller's boundary; this is the second failure
        _log(f"restoring after a failed apply: {error}", unexpected=True)


def report(p: Any, message: str, *, identity_applied: bool = False) -> None:
    """Make a problem visible: the UI's comments and, for API clients, ``info``.

    Unless the identity was applied, the images do not carry it, so their HyperLoRA parameters
    (model, weight, identity digest, options) are removed: only the error remains.
    """
    main = adetailer.main_job(p)
    if main is not None:  # a face pass: the image of the main job carries it
        p, message, identity_applied = main[0], f"face pass: {message}", True
    state = job_state.of(p)
    if message not in state.errors:
        state.errors = (*state.errors, message)
    if not identity_applied:
        infotext.clear(p.extra_generation_params)
    _write_errors(p)
    p.comment(f"HyperLoRA: {message}")
    if not progress.interrupted():  # an interrupted job makes no image: nothing to fail
        fail_mode.fail_api_request(p, message)


def _write_errors(p: Any) -> None:
    state = job_state.peek(p)
    if state is not None and state.errors:
        infotext.write_error(p.extra_generation_params, "; ".join(state.errors))


def _log(message: str, *, unexpected: bool) -> None:
    """The console line; the traceback too when the exception was not one of ours."""
    text = f"{ERROR_LABEL}: {message}"
    try:
        from modules import errors
    except ImportError:
        errors = None
    if errors is not None and unexpected:
        errors.report(text, exc_info=True)
    elif unexpected:
        print(text + "\n" + traceback.format_exc())
    else:
        print(text)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "(no message)"
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 3] + "..."
    return f"{type(error).__name__}: {text}"
