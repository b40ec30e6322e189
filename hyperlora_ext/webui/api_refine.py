"""``POST /hyperlora/v1/refine`` and ``POST /hyperlora/v1/refine/kit``.

``/refine`` trains saved identity ``identity`` for a few steps on the loaded SDXL checkpoint from
its photos (given again: the store keeps no photos) and saves ``NAME-refined``. It runs as a
WebUI job (``/sdapi/v1/progress`` shows the steps, ``/sdapi/v1/interrupt`` stops it), holds the
WebUI's queue lock meanwhile (generations wait) and answers 409 while another refine runs.
``/refine/kit`` writes the kohya training kit into the WebUI's ``outputs/hyperlora-kits/NAME``.
"""

from typing import Any

from pydantic import BaseModel, Field

from hyperlora_ext.errors import InvalidNameError, about
from hyperlora_ext.facts import FACE_CHOICES, MAX_FACE_INDEX
from hyperlora_ext.refine.kit import KitSettings
from hyperlora_ext.refine.trainer import RefineOutOfMemoryError
from hyperlora_ext.store import check_name
from hyperlora_ext.webui import api_models as m
from hyperlora_ext.webui import refine_actions, refine_likeness
from hyperlora_ext.webui.api_errors import ApiError
from hyperlora_ext.webui.api_request import Limits, check_fields, flag, post, request_images
from hyperlora_ext.webui.refine_host import RefineBusyError, WebUIRefineSettings
from hyperlora_ext.webui.services import Services

MAX_STEPS = 1000
MAX_LEARNING_RATE = 1e-2
RESOLUTION = (64, 2048)  # pixels, a multiple of 8 (the VAE's factor)


# ------------------------------------------------------------------------------ schema
class _PhotosOf(BaseModel):
    identity: str = Field(..., description="the saved identity to start from")
    images: list[str] = Field(..., description="the identity's photos again: " + m.PHOTOS)
    photo_weights: list[float] | None = Field(
        None, description="relative weight of each photo (default: equal)"
    )
    face: str = Field(
        "largest", description=f"which face of a group photo: {', '.join(FACE_CHOICES)}"
    )
    face_index: int = Field(
        0, ge=0, le=MAX_FACE_INDEX, description="with face=index: 0 is the leftmost face"
    )
    resolution: int = Field(
        768,
        ge=RESOLUTION[0],
        le=RESOLUTION[1],
        description="side of the square face crops, pixels (multiple of 8)",
    )
    steps: int = Field(50, ge=1, le=MAX_STEPS, description="training steps (batch 4 each)")
    learning_rate: float = Field(1e-4, gt=0, le=MAX_LEARNING_RATE, description="AdamW, constant")
    seed: int = Field(0, ge=0, description="noise, timesteps and crop jitter")
    overwrite: bool = Field(False, description="replace an existing identity or kit of that name")


class RefineRequest(_PhotosOf):
    """Refine a saved identity on the loaded checkpoint and save it as a new identity."""

    save_name: str | None = Field(None, description="the new identity's name; default NAME-refined")
    score_likeness: bool = Field(
        False,
        description="afterwards, make one fixed-seed image with each identity and score both "
        "against the identity's likeness reference (two extra generations)",
    )


class KitRequest(_PhotosOf):
    """Write the kohya sd-scripts training kit of a saved identity (LoRA, crops, masks,
    dataset.toml, train.sh/.bat) into the WebUI's outputs/hyperlora-kits/KIT_NAME."""

    kit_name: str | None = Field(None, description="the kit folder's name; default the identity's")
    base_checkpoint: str = Field("", description="the SDXL checkpoint path train.sh names")


class RefineResponse(BaseModel):
    name: str | None = Field(..., description="the saved identity; null when interrupted")
    steps: int = Field(..., description="steps done")
    loss: list[float] = Field(..., description="the loss of each step")
    interrupted: bool
    seconds: float
    micro_batch: int
    prompt_tag: str | None = Field(None, description="e.g. <lora:alice-refined:1>")
    likeness_before: float | None = None
    likeness_after: float | None = None
    likeness_note: str = Field("", description="how the likeness was measured, or why not")


class KitResponse(BaseModel):
    folder: str = Field(..., description="where the kit was written (on the WebUI's machine)")
    lora: str
    dataset: str
    images: int
    command: list[str]


# ------------------------------------------------------------------------------ routes
def add_routes(router: Any, backend: Services, limits: Limits) -> None:
    from fastapi import Request

    @router.post(
        "/refine",
        responses={200: {"model": RefineResponse}, 503: {"model": m.ErrorBody}, **m.ERRORS},
        openapi_extra=m.request_body(RefineRequest),
    )
    async def refine(request: Request) -> Any:
        return await post(request, limits, lambda data: _refine(backend, limits, data))

    @router.post(
        "/refine/kit",
        responses={200: {"model": KitResponse}, **m.ERRORS},
        openapi_extra=m.request_body(KitRequest),
    )
    async def kit(request: Request) -> Any:
        return await post(request, limits, lambda data: _kit(backend, limits, data))


# ---------------------------------------------------------------------------- handlers
def _refine(backend: Services, limits: Limits, data: dict[str, Any]) -> dict[str, Any]:
    from modules import shared

    request = _parse(RefineRequest, backend, limits, data)
    target = _target(backend, request, request["save_name"], "save_name")
    settings = WebUIRefineSettings(
        steps=request["steps"],
        learning_rate=request["learning_rate"],
        resolution=request["resolution"],
        seed=request["seed"],
    )
    try:
        outcome = refine_actions.refine(
            backend,
            shared.sd_model,
            request["identity"],
            request["photos"],
            settings,
            save_name=target,
            overwrite=request["overwrite"],
        )
    except RefineBusyError as error:
        raise ApiError(409, str(error)) from None
    except RefineOutOfMemoryError as error:
        raise ApiError(503, str(error)) from None
    tag = f"<lora:{outcome.saved}:1>" if outcome.saved else None
    pair = refine_likeness.after_refine(
        backend, shared.sd_model, request["identity"], outcome.saved, request["score_likeness"]
    )
    return {**outcome.response(), "prompt_tag": tag, **pair.response()}


def _kit(backend: Services, limits: Limits, data: dict[str, Any]) -> dict[str, Any]:
    request = _parse(KitRequest, backend, limits, data)
    name = request["kit_name"] or request["identity"]
    with about("kit_name", InvalidNameError):
        check_name(name)
    folder = refine_actions.kits_root() / name
    if folder.exists() and any(folder.iterdir()) and not request["overwrite"]:
        raise ApiError(409, f"a kit named {name!r} exists; set overwrite to replace it", "kit_name")
    settings = KitSettings(
        resolution=request["resolution"],
        steps=request["steps"],
        learning_rate=request["learning_rate"],
        seed=request["seed"],
        base_checkpoint=_text(request, "base_checkpoint"),
    )
    kit = refine_actions.kit(
        backend,
        request["identity"],
        request["photos"],
        settings,
        kit_name=name,
        overwrite=request["overwrite"],
    )
    return {
        "folder": str(kit.folder),
        "lora": kit.lora.name,
        "dataset": kit.dataset.name,
        "images": kit.images,
        "command": kit.command,
    }


# ----------------------------------------------------------------------------- parsing
def _parse(
    model: type[BaseModel], backend: Services, limits: Limits, data: dict[str, Any]
) -> dict[str, Any]:
    """The request's fields checked, with defaults, and its photos as a PhotoSet."""
    check_fields(data, m.field_names(model))
    request = {**m.defaults(model), **data}
    identity = request.get("identity")
    if identity is None:
        raise ApiError(422, "'identity' is required: the name of a saved identity", "identity")
    with about("identity", InvalidNameError):
        check_name(identity)
    if not backend.store().exists(identity):
        raise ApiError(404, f"no saved identity named {identity!r}", "identity")
    images = request_images(request, limits)
    for name in ("overwrite", "score_likeness"):
        if name in request:
            flag(request, name)
    for name, low, high in (
        ("steps", 1, MAX_STEPS),
        ("resolution", *RESOLUTION),
        ("face_index", 0, MAX_FACE_INDEX),
        ("seed", 0, 2**63 - 1),
    ):
        _whole(request, name, low, high)
    if request["resolution"] % 8:
        raise ApiError(
            422, "'resolution' must be a multiple of 8 (e.g. 512, 768, 1024)", "resolution"
        )
    _learning_rate(request["learning_rate"])
    request["photos"] = refine_actions.PhotoSet(
        images,
        [f"image {i + 1}" for i in range(len(images))],
        _weights(request["photo_weights"], len(images)),
        _face(request["face"]),
        request["face_index"],
    )
    return request


def _target(backend: Services, request: dict[str, Any], name: Any, field: str) -> str:
    """The refined identity's name; 409 when it exists and overwrite is off."""
    if name is not None and not isinstance(name, str):
        raise ApiError(422, f"'{field}' must be a name, got {name!r}", field)
    with about(field, InvalidNameError):
        target = refine_actions.target_name(request["identity"], name)
    if backend.store().exists(target) and not request["overwrite"]:
        raise ApiError(
            409,
            f"an identity named {target!r} exists; choose another save_name or set overwrite",
            field,
        )
    return target


def _whole(request: dict[str, Any], name: str, low: int, high: int) -> None:
    value = request[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(
            422, f"'{name}' must be a whole number from {low} to {high}, got {value!r}", name
        )


def _learning_rate(value: Any) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not 0 < value <= MAX_LEARNING_RATE:
        raise ApiError(
            422,
            f"'learning_rate' must be a number above 0 and at most "
            f"{MAX_LEARNING_RATE:g} (1e-4 is the recipe), got {value!r}",
            "learning_rate",
        )


def _weights(value: Any, count: int) -> list[float]:
    if value is None:
        return []
    ok = isinstance(value, list) and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in value
    )
    if not ok or len(value) != count:
        raise ApiError(
            422,
            f"'photo_weights' must be {count} number(s) above 0, one per photo",
            "photo_weights",
        )
    return [float(w) for w in value]


def _face(value: Any) -> str:
    if value not in FACE_CHOICES:
        raise ApiError(
            422, f"'face' must be one of {', '.join(FACE_CHOICES)}, got {value!r}", "face"
        )
    return str(value)


def _text(request: dict[str, Any], name: str) -> str:
    value = request[name]
    if not isinstance(value, str):
        raise ApiError(422, f"'{name}' must be text, got {value!r}", name)
    return value
