"""One generation's HyperLoRA work, for the AlwaysOn script: prepare in ``process()``, apply
before every sampling pass, restore after the job. Per-job state lives on ``p`` (``p._hyperlora``),
never on the script object, which the UI, the API and X/Y/Z cells share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hyperlora_ext.args import HyperLoRAArgs, add_trigger_words
from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.webui import api, host, infotext, xyz


@dataclass(frozen=True)
class Job:
    lora: dict
    digest: str
    weight: float
    seconds: float = 0.0
    cache_hit: bool = False


def prepare(p: Any, args: tuple) -> None:
    """``process()``: parse the arguments and predict (or reuse) the identity of this job."""
    p._hyperlora = None
    infotext.clear(p.extra_generation_params)
    try:
        options = _arguments(p, args)
        if options.enabled:
            _prepare(p, options)
    except HyperLoRAError as error:
        report(p, str(error))


def _arguments(p: Any, args: tuple) -> HyperLoRAArgs:
    return xyz.merge_overrides(HyperLoRAArgs.from_script_args(args), p)


def _prepare(p: Any, options: HyperLoRAArgs) -> None:
    reason = host.unsupported_reason(p.sd_model)
    if reason is not None:
        report(p, f"skipped, {reason}")
        return
    job, options = _identity(p, options)
    p._hyperlora = job
    infotext.write(p.extra_generation_params, options, job.digest)
    if options.trigger_words:
        for name in ("all_prompts", "all_hr_prompts"):
            prompts = getattr(p, name, None)
            if prompts:
                setattr(p, name, [add_trigger_words(prompt) for prompt in prompts])


def _identity(p: Any, options: HyperLoRAArgs) -> tuple[Job, HyperLoRAArgs]:
    if options.identity:
        saved = api.identity_store().load(options.identity)
        # The infotext names the model the identity was made with, not the unused dropdown value.
        options = options.replace(model=saved.record.model or options.model)
        return Job(saved.lora, saved.digest, options.weight), options
    if not options.images:
        raise HyperLoRAError(
            "no reference photo: add at least one photo in the HyperLoRA panel (or pick a saved "
            "identity), or turn HyperLoRA off"
        )
    if getattr(p, "is_api", False):  # API photos are base64 only: never let a client name a path
        options = options.replace(images=tuple(api.api_images(options.images)))
    if not options.model:
        options = options.replace(model=_default_model())
    result = host.predict(options, before_compute=lambda: host.free_vram_for_encoders(p))
    return Job(
        result.lora, result.digest, options.weight, result.seconds, result.cache_hit
    ), options


def apply(p: Any) -> None:
    """Patch the identity in; idempotent, so every sampling pass may call it."""
    job = getattr(p, "_hyperlora", None)
    if job is None:
        return
    try:
        report = host.get_adapter(p).apply(p, job.lora, job.weight, job.digest)
    except HyperLoRAError as error:
        report(p, str(error))
        return
    if report.matched == 0:
        report(p, f"skipped, {report.reasons[0] if report.reasons else 'no layer matched'}")
    elif report.matched < report.expected:
        message = f"only {report.matched} of {report.expected} layers matched this checkpoint"
        p.extra_generation_params[infotext.WARNING] = message
        p.comment(f"HyperLoRA: {message}")


def restore(p: Any) -> None:
    """Take every trace of the identity out of the UNet (bit-exact)."""
    try:
        adapter = host.get_adapter(p)
    except HyperLoRAError:
        return  # no LoRA system, nothing of ours can be merged
    adapter.restore(p)


def report(p: Any, message: str) -> None:
    """Make a problem visible: the UI's comments and, for API clients, ``info``."""
    infotext.write_error(p.extra_generation_params, message)
    p.comment(f"HyperLoRA: {message}")
    api.fail_api_request(p, message)


def _default_model() -> str:
    models = host.list_models()
    if not models:
        from hyperlora_ext.errors import ModelNotFoundError

        raise ModelNotFoundError(
            f"no HyperLoRA model installed: put one under {host.model_roots().hyper_lora}"
        )
    return models[0]
