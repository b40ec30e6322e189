"""HyperLoRA's section in the WebUI's Settings tab, and the typed view of its values.

:func:`register` (``on_ui_settings``) adds the options; the WebUI persists them in its config file.
:func:`current` reads them at any time (``opts.data`` holds the saved values before the Settings
tab is built). Options that shape the identity pipeline make up :func:`pipeline_fingerprint`:
``host.pipeline()`` compares it on every use and rebuilds the pipeline when it changed, so a change
made through the Settings tab, ``/sdapi/v1/options`` or ``override_settings`` takes effect on the
next generation. ``onchange`` additionally rebuilds at once, so that turning "keep models on GPU"
off frees the memory immediately. Nothing here imports gradio or the WebUI at module level.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SECTION = ("hyperlora", "HyperLoRA")
DTYPES = ("auto", "float16", "bfloat16", "float32")
API_ERROR_MODES = ("info", "fail")
MB = 2**20
PIPELINE_FIELDS = (
    "models_dir", "keep_on_device", "cache_entries", "cache_mb", "dtype", "free_encoders",
)  # fmt: skip
SMALL_RAM = 20 * 2**30  # 16 GB machines (about 15.5 GiB usable) and anything up to 20 GiB


def _small_machine() -> bool:
    """True when the machine's RAM is small enough that 4 GB of idle encoders hurt."""
    from hyperlora_ext.memory import total_ram_bytes

    total = total_ram_bytes()
    return total is not None and total <= SMALL_RAM


@dataclass(frozen=True)
class Settings:
    """The values of the HyperLoRA settings (defaults are the registered defaults)."""

    models_dir: str = ""  # empty: --hyperlora-models-dir, else the WebUI's models folder
    keep_on_device: bool = False
    cache_entries: int = 16
    cache_mb: int = 512
    trigger_words: bool = True
    api_on_error: str = "info"
    dtype: str = "auto"
    free_encoders: bool = _small_machine()
    likeness: bool = True

    def pipeline_fingerprint(self) -> tuple:
        """The values the identity pipeline is built from (changing any rebuilds it)."""
        return tuple(getattr(self, name) for name in PIPELINE_FIELDS)

    @property
    def torch_dtype(self) -> Any:
        """``torch.<dtype>``, or None for ``auto`` (the engine's default for the device)."""
        if self.dtype == "auto":
            return None
        import torch

        return getattr(torch, self.dtype)


@dataclass(frozen=True)
class Option:
    field: str  # Settings field
    key: str  # WebUI option key (the name in config.json and /sdapi/v1/options)
    label: str
    info: str = ""
    component: str | None = None  # gradio class name; None: the WebUI picks by the default's type
    component_args: dict[str, Any] | None = None
    reload_ui: bool = False  # only read when the UI is built

    @property
    def default(self) -> Any:
        return _DEFAULTS[self.field]


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Settings)}

OPTIONS = (
    Option(
        "models_dir",
        "hyperlora_models_dir",
        "Model folder",
        "holds hyper_lora/ and insightface/; a ComfyUI models folder works as is; empty: "
        "--hyperlora-models-dir, else the WebUI's models folder",
    ),
    Option(
        "keep_on_device",
        "hyperlora_keep_on_device",
        "Keep HyperLoRA models on the GPU between generations",
        "a new face encodes faster; the encoders then hold several GB of VRAM while idle",
    ),
    Option(
        "cache_entries",
        "hyperlora_cache_entries",
        "Identity cache: number of identities kept",
        "repeated generations with the same photos and options skip the encoders; 0 disables",
        "Slider",
        {"minimum": 0, "maximum": 128, "step": 1},
    ),
    Option(
        "cache_mb",
        "hyperlora_cache_mb",
        "Identity cache: size limit in MB",
        "cached identity LoRAs are kept in CPU memory",
        "Slider",
        {"minimum": 0, "maximum": 8192, "step": 64},
    ),
    Option(
        "trigger_words",
        "hyperlora_trigger_words",
        '"Add trigger words" is on by default',
        "the accordion's default for prepending 'fcsks fxhks fhyks, ' to prompts",
        reload_ui=True,
    ),
    Option(
        "api_on_error",
        "hyperlora_api_on_error",
        "When HyperLoRA fails in an API generation request",
        "info: answer 200 with 'HyperLoRA error' in info; fail: answer 422. A request's "
        "'X-HyperLoRA-On-Error' header overrides this",
        "Radio",
        {"choices": list(API_ERROR_MODES)},
    ),
    Option(
        "dtype",
        "hyperlora_dtype",
        "Precision of the HyperLoRA encoders",
        "auto: float16 on GPUs; on CPUs the fastest of float32 / bfloat16 / float16, measured once",
        "Radio",
        {"choices": list(DTYPES)},
    ),
    Option(
        "free_encoders",
        "hyperlora_free_encoders",
        "Free the encoders' memory after each new identity",
        "about 4 GB of RAM between generations; a new face then loads them again (seconds). "
        "The default is on for machines with 20 GB of RAM or less",
    ),
    Option(
        "likeness",
        "hyperlora_likeness",
        "Score the likeness of every generated image",
        "'HyperLoRA likeness' in the image's parameters: ArcFace cosine similarity of its largest "
        "face with the reference photos (1.00 = same face embedding); one face analysis per image",
    ),
)
BY_FIELD = {option.field: option for option in OPTIONS}
API_ON_ERROR = BY_FIELD["api_on_error"].key


def register(on_pipeline_change: Callable[[], None] | None = None) -> None:
    """Add the HyperLoRA section to the Settings tab (call from ``on_ui_settings``).

    ``on_pipeline_change`` runs when an option of the pipeline fingerprint is changed through
    ``opts.set`` (Settings tab, API).
    """
    import gradio as gr
    from modules import shared

    for option in OPTIONS:
        component = getattr(gr, option.component) if option.component else None
        info = shared.OptionInfo(
            option.default,
            option.label,
            component,
            option.component_args,
            onchange=on_pipeline_change if option.field in PIPELINE_FIELDS else None,
            section=SECTION,
        )
        if option.info:
            info = info.info(option.info)
        if option.reload_ui:
            info = info.needs_reload_ui()
        shared.opts.add_option(option.key, info)


def current() -> Settings:
    """The saved values, coerced to their types; the defaults outside the WebUI."""
    try:
        from modules import shared
    except ImportError:
        return Settings()
    data = getattr(getattr(shared, "opts", None), "data", None) or {}
    values = {o.field: _coerce(o, data.get(o.key, o.default)) for o in OPTIONS}
    return Settings(**values)


def _coerce(option: Option, value: Any) -> Any:
    """Settings arrive from JSON, sliders (floats) and API clients: never trust the type."""
    default = option.default
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("true", "1")
        if isinstance(default, int):
            return max(0, int(float(value)))
        value = "" if value is None else str(value).strip()
    except (TypeError, ValueError):
        return default
    choices = (option.component_args or {}).get("choices")
    if choices:
        return value.lower() if value.lower() in choices else default
    return value
