"""HyperLoRA for the Stable Diffusion WebUI: an AlwaysOn script, glue only.

The script reads its arguments, asks the identity pipeline for the LoRA in ``process()``, lets the
host adapter patch it in before every sampling pass, and restores the UNet after the job (and,
defensively, at the start of the next one). Per-job state lives on ``p``, never on ``self``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from modules import script_callbacks, scripts

# A1111 puts this extension's folder on sys.path only while this file executes: import the
# package now, so later (lazy) imports of its submodules resolve through hyperlora_ext.__path__.
import hyperlora_ext
import hyperlora_ext.webui.host as host
from hyperlora_ext.args import HyperLoRAArgs, add_trigger_words
from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.webui import api, infotext, settings, xyz

assert hyperlora_ext.__version__

script_callbacks.on_app_started(lambda demo, app: api.register_routes(app))
script_callbacks.on_before_ui(xyz.register_axes)  # a no-op when the X/Y/Z script is absent
script_callbacks.on_ui_settings(lambda: settings.register(host.refresh_pipeline))


# Not a dataclass: A1111 loads this file without a sys.modules entry, which dataclasses need.
class Job(NamedTuple):
    lora: dict
    digest: str
    weight: float
    seconds: float = 0.0
    cache_hit: bool = False


class HyperLoRAScript(scripts.Script):
    sorting_priority = 15  # Forge: UI order

    def title(self) -> str:
        return "HyperLoRA"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        from hyperlora_ext.webui.ui import build_ui

        panel = build_ui(self.elem_id)
        self.infotext_fields = panel.infotext_fields
        self.paste_field_names = panel.paste_field_names
        return panel.inputs

    def before_process(self, p: Any, *args: Any) -> None:
        # A job that failed inside the sampler skipped postprocess: take its identity out now.
        _restore(p)

    def process(self, p: Any, *args: Any) -> None:
        p._hyperlora = None
        infotext.clear(p.extra_generation_params)
        try:
            options = _arguments(p, args)
            if options.enabled:
                _prepare(p, options)
        except HyperLoRAError as error:
            _report(p, str(error))

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        _apply(p)  # 1.10+: runs for every pass (hires too) and after the LoRA list was rebuilt

    def process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        if not _has_every_sampling_hook():  # 1.8/1.9
            _apply(p)

    def before_hr(self, p: Any, *args: Any) -> None:
        if not _has_every_sampling_hook():  # 1.8/1.9: the hires pass rebuilt the LoRA list
            _apply(p)

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        _restore(p)


def _arguments(p: Any, args: tuple) -> HyperLoRAArgs:
    return xyz.merge_overrides(HyperLoRAArgs.from_script_args(args), p)


def _prepare(p: Any, options: HyperLoRAArgs) -> None:
    reason = host.unsupported_reason(p.sd_model)
    if reason is not None:
        _report(p, f"skipped, {reason}")
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
        lora, digest = _saved_identity(options.identity)
        return Job(lora, digest, options.weight), options
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


def _apply(p: Any) -> None:
    job = getattr(p, "_hyperlora", None)
    if job is None:
        return
    try:
        report = host.get_adapter(p).apply(p, job.lora, job.weight, job.digest)
    except HyperLoRAError as error:
        _report(p, str(error))
        return
    if report.matched == 0:
        _report(p, f"skipped, {report.reasons[0] if report.reasons else 'no layer matched'}")
    elif report.matched < report.expected:
        message = f"only {report.matched} of {report.expected} layers matched this checkpoint"
        p.extra_generation_params[infotext.WARNING] = message
        p.comment(f"HyperLoRA: {message}")


def _restore(p: Any) -> None:
    try:
        adapter = host.get_adapter(p)
    except HyperLoRAError:
        return  # no LoRA system, nothing of ours can be merged
    adapter.restore(p)


def _report(p: Any, message: str) -> None:
    """Make a problem visible: the UI's comments and, for API clients, ``info``."""
    infotext.write_error(p.extra_generation_params, message)
    p.comment(f"HyperLoRA: {message}")
    api.fail_api_request(p, message)


def _saved_identity(name: str) -> tuple[dict, str]:
    try:
        from hyperlora_ext.identities import load_identity
    except ImportError:
        raise HyperLoRAError("saved identities are not supported by this version") from None
    from modules import shared

    return load_identity(name, shared.cmd_opts.lora_dir)


def _default_model() -> str:
    models = host.list_models()
    if not models:
        from hyperlora_ext.errors import ModelNotFoundError

        raise ModelNotFoundError(
            f"no HyperLoRA model installed: put one under {host.model_roots().hyper_lora}"
        )
    return models[0]


def _has_every_sampling_hook() -> bool:
    return "process_before_every_sampling" in vars(scripts.Script)
