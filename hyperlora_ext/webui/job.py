"""One generation's HyperLoRA work, for the AlwaysOn script: prepare in ``process()``, apply
before every sampling pass, restore after the job. Per-job state lives on ``p``
(:mod:`~hyperlora_ext.webui.job_state`), never on the script object, which the UI, the API and
X/Y/Z cells share.

Every hook runs inside :func:`boundary`: the WebUI logs and swallows exceptions that escape a
script hook, which would leave an image that looks fine but lacks the identity. Instead, any
exception becomes a visible ``HyperLoRA error`` (infotext, comments, API ``info``, a 422 in fail
mode), the HyperLoRA parameters of the image are removed, and the console gets the traceback once.
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


def begin(p: Any) -> None:
    """``before_process()``, the job's first hook: a new job state, no error reported yet."""
    job_state.begin(p)


def prepare(p: Any, args: tuple) -> None:
    """``process()``: parse the arguments and predict (or reuse) the identity of this job."""
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
            report(p, _skipped(outcome, patch))
            return
    state = job_state.of(p)
    state.identity, state.patches = identity, patches
    slider = [patch.digest for patch in patches if patch.role != IDENTITY]
    infotext.write(p.extra_generation_params, options, identity.digest, slider_digests=slider)
    _write_errors(p)  # e.g. the clean-up of the previous job failed
    if options.trigger_words:
        for name in ("all_prompts", "all_hr_prompts"):
            prompts = getattr(p, name, None)
            if prompts:
                setattr(p, name, [add_trigger_words(prompt) for prompt in prompts])


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
    patches = [Patch.of(identity.lora, identity.digest, options.weight, IDENTITY)]
    if options.slider:
        try:
            with doing("preparing the slider's identities"):
                plus, minus = studio.resolve_slider(options, ctx)
        except HyperLoRAError as error:  # say which part failed; the message names the side
            raise HyperLoRAError(f"slider: {error}") from error.__cause__  # unexpected: logged
        strength = options.slider_strength
        patches.append(Patch.of(plus.lora, plus.digest, strength, SLIDER_POSITIVE))
        patches.append(Patch.of(minus.lora, minus.digest, -strength, SLIDER_NEGATIVE))
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
            report(p, _skipped(outcome, patch))
            return
    for outcome in outcomes:
        if outcome.matched < outcome.expected:
            message = f"only {outcome.matched} of {outcome.expected} layers matched this checkpoint"
            p.extra_generation_params[infotext.WARNING] = message
            p.comment(f"HyperLoRA: {message}")
            return


def _skipped(outcome: Any, patch: Patch) -> str:
    reason = outcome.reasons[0] if outcome.reasons else "no layer matched"
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
