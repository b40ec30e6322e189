"""HyperLoRA's HTTP API (``/hyperlora/v1/...``).

Routes, registered on the WebUI's FastAPI app by :func:`register_routes` (``on_app_started``):

* ``GET  /hyperlora/v1/status``            version, readiness, device, cache;
* ``GET  /hyperlora/v1/models``            installed models and what is missing;
* ``POST /hyperlora/v1/detect``            faces in posted photos (boxes, scores, crops);
* ``POST /hyperlora/v1/encode``            photos -> identity digest; save it or return the file;
* ``POST /hyperlora/v1/likeness``          likeness of posted images to an identity or photos;
* ``GET  /hyperlora/v1/identities``        saved identities;
* ``GET|DELETE /hyperlora/v1/identities/{name}`` (GET: ``?preview=true``, ``?lora=true``);
* ``POST /hyperlora/v1/identities/{name}/rename``  ``{"new_name": ..., "overwrite": false}``.
* ``POST /hyperlora/v1/refine``, ``/refine/kit`` (:mod:`.api_refine`).

Photos are base64 strings or ``data:image/...;base64,`` URLs only: never server paths or URLs.
Errors are JSON ``{"error": <type>, "detail": <message>, "field": <the request field at fault, or
null>}`` with a 4xx status; 500 only for faults of the server (broken model files, bugs).
How generation requests report HyperLoRA's failures is :mod:`hyperlora_ext.webui.fail_mode`.
"""

import base64
import tempfile
import threading
import traceback
from collections.abc import Callable
from typing import Any

from hyperlora_ext.args import HyperLoRAArgs
from hyperlora_ext.encoders.images import decode_image_payload
from hyperlora_ext.errors import (
    HyperLoRAError,
    IdentityNotFoundError,
    ImageError,
    InvalidNameError,
    ModelNotFoundError,
    NoFaceError,
    NoReferenceError,
    about,
)
from hyperlora_ext.facts import LORA_SUFFIX, too_many_images
from hyperlora_ext.identity_value import Identity
from hyperlora_ext.webui import adetailer, api_identities, fail_mode, studio
from hyperlora_ext.webui import api_models as m
from hyperlora_ext.webui.api_errors import ApiError
from hyperlora_ext.webui.api_request import Limits
from hyperlora_ext.webui.api_request import check_fields as _check_fields
from hyperlora_ext.webui.api_request import flag as _flag
from hyperlora_ext.webui.api_request import post as _post
from hyperlora_ext.webui.api_request import request_images as _images
from hyperlora_ext.webui.api_request import run as _run
from hyperlora_ext.webui.fail_mode import install_fail_mode
from hyperlora_ext.webui.services import Services

PREFIX = "/hyperlora/v1"


# ---------------------------------------------------------------------------------- routes
def register_routes(
    app: Any, backend: Services | None = None, limits: Limits | None = None
) -> None:
    """Add the ``/hyperlora/v1`` routes to ``app`` (once) and the fail-mode wrapper."""
    from fastapi import APIRouter, Depends, Request

    limits = limits or Limits()

    if any(getattr(r, "path", "").startswith(PREFIX) for r in app.router.routes):
        return
    if backend is None:
        from hyperlora_ext.webui import host

        backend = host.services()
    global _first_use
    _first_use = _once(backend.preload)
    fail_mode.on_hyperlora_request = _first_use
    router = APIRouter(prefix=PREFIX, tags=["HyperLoRA"], dependencies=[Depends(_first_use)])

    @router.get("/status", responses={200: {"model": m.StatusResponse}, **m.ERRORS})
    async def status() -> Any:
        return await _run(lambda: _status(backend))

    @router.get("/models", responses={200: {"model": m.ModelsResponse}, **m.ERRORS})
    async def models() -> Any:
        return await _run(lambda: _models(backend))

    @router.post(
        "/detect",
        responses={200: {"model": m.DetectResponse}, **m.ERRORS},
        openapi_extra=m.request_body(m.DetectRequest),
    )
    async def detect(request: Request) -> Any:
        return await _post(request, limits, lambda data: _detect(backend, limits, data))

    @router.post(
        "/encode",
        responses={200: {"model": m.EncodeResponse}, **m.ERRORS},
        openapi_extra=m.request_body(m.EncodeRequest),
    )
    async def encode(request: Request) -> Any:
        return await _post(request, limits, lambda data: _encode(backend, limits, data))

    @router.post(
        "/likeness",
        responses={200: {"model": m.LikenessResponse}, **m.ERRORS},
        openapi_extra=m.request_body(m.LikenessRequest),
    )
    async def likeness(request: Request) -> Any:
        return await _post(request, limits, lambda data: _likeness(backend, limits, data))

    @router.get("/identities", responses={200: {"model": m.IdentityList}, **m.ERRORS})
    async def identities() -> Any:
        return await _run(lambda: {"identities": [_record(r) for r in backend.store().list()]})

    # {name:path} so that "a/b" or "../x" reach us and get a clear 400 instead of a bare 404.
    @router.get(
        "/identities/{name:path}", responses={200: {"model": m.IdentityWithPreview}, **m.ERRORS}
    )
    async def identity(name: str, preview: str | None = None, lora: str | None = None) -> Any:
        return await _run(lambda: _identity(backend, name, preview, lora))

    @router.post(
        "/identities/{name:path}/rename",
        responses={200: {"model": m.RenameResponse}, **m.ERRORS},
        openapi_extra=m.request_body(m.RenameRequest),
    )
    async def rename_identity(name: str, request: Request) -> Any:
        store = backend.store
        return await _post(
            request, limits, lambda d: api_identities.rename_request(store(), name, d)
        )

    @router.delete(
        "/identities/{name:path}", responses={200: {"model": m.DeleteResponse}, **m.ERRORS}
    )
    async def delete_identity(name: str) -> Any:
        return await _run(lambda: _delete(backend, name))

    from hyperlora_ext.webui import api_refine  # POST /refine, /refine/kit

    api_refine.add_routes(router, backend, limits)
    app.include_router(router)
    install_fail_mode(app)


def _once(preload: Callable[[], None]) -> Callable[[], None]:
    """``preload`` on the first API request that concerns HyperLoRA; failures go to the console
    (the request itself, or the next job, reports what is wrong)."""
    started = threading.Event()

    def first_use() -> None:
        if started.is_set():
            return
        started.set()
        try:
            preload()
        except Exception:
            traceback.print_exc()

    return first_use


_first_use: Callable[[], None] = lambda: None  # noqa: E731 - set by register_routes


# ---------------------------------------------------------------------------- handlers
def _status(backend: Services) -> dict[str, Any]:
    from hyperlora_ext.doctor import models_ready

    roots = backend.roots()
    pipeline = backend.pipeline()
    stats = pipeline.cache.stats
    return {
        "version": backend.version,
        "ready": models_ready(roots),
        "device": str(pipeline.device),
        "cache": {
            "entries": len(pipeline.cache),
            "bytes": pipeline.cache.nbytes,
            "hits": stats.hits,
            "misses": stats.misses,
        },
        "identities": len(backend.store().names()),
        "adetailer": adetailer.read().as_json(),
    }


def _models(backend: Services) -> dict[str, Any]:
    from hyperlora_ext.doctor import model_checks, models_ready
    from hyperlora_ext.models import inspect_antelopev2, inspect_clip, inspect_hyperlora

    roots = backend.roots()
    checks = model_checks(roots)
    return {
        "ready": models_ready(roots),
        "hyperlora": [_model_status(s) for s in inspect_hyperlora(roots)],
        "clip": [_model_status(s) for s in inspect_clip(roots)],
        "antelopev2": _model_status(inspect_antelopev2(roots)),
        "problems": [c.to_dict() for c in checks if c.status != "ok"],
    }


def _model_status(status: Any) -> dict[str, Any]:
    return {
        "name": status.name,
        "complete": status.complete,
        "path": str(status.path),
        "missing": list(status.missing),
        "problem": status.problem,
    }


def _detect(backend: Services, limits: Limits, data: dict[str, Any]) -> dict[str, Any]:
    from hyperlora_ext.encoders.detect import detect_faces

    _check_fields(data, m.field_names(m.DetectRequest))
    data = {**m.defaults(m.DetectRequest), **data}
    photos = _images(data, limits)
    crops = _flag(data, "crops")
    side, low, high = data["crop_size"], m.MIN_CROP_SIDE, limits.max_crop_side
    if isinstance(side, bool) or not isinstance(side, int) or not low <= side <= high:
        raise ApiError(422, f"'crop_size' must be a whole number from {low} to {high}", "crop_size")
    with backend.lock:  # one photo decoded at a time, in the queue like every GPU job
        analyzer = backend.analyzer()
        results = [
            detect_faces(analyzer, photo, f"image {i + 1}", crops, side)
            for i, photo in enumerate(photos)
        ]
    return {"images": results}


ENCODE_FIELDS = m.field_names(m.EncodeRequest)


def _encode(backend: Services, limits: Limits, data: dict[str, Any]) -> dict[str, Any]:
    """Parse -> resolve -> save -> serialise."""
    _check_fields(data, ENCODE_FIELDS)
    data = {**m.defaults(m.EncodeRequest), **data}
    args, save_as, overwrite, return_lora = _encode_request(backend, limits, data)
    with backend.lock, about("model", InvalidNameError, ModelNotFoundError):
        identity = studio.resolve(args, studio.Context(backend, is_api=True))
    response: dict[str, Any] = {
        "digest": identity.digest,
        "model": identity.model,
        "dtype": identity.dtype,
        "photos_used": identity.photos,
        "cache_hit": identity.cache_hit,
        "seconds": round(identity.seconds, 3),
        "warnings": identity.warnings,
        "photos": [_photo_report(r) for r in identity.reports],
        "saved": None,
        "lora": None,
    }
    if save_as is not None:
        with about("save_as", HyperLoRAError):
            record = studio.save(save_as, identity, args, backend.store(), overwrite=overwrite)
        response["saved"] = _record(record)
    if return_lora:
        name = save_as or f"hyperlora_{identity.digest}"
        response["lora"] = _lora_file_base64(identity, name)
        response["lora_filename"] = name + LORA_SUFFIX
    return response


def _encode_request(
    backend: Services, limits: Limits, data: dict[str, Any]
) -> tuple[HyperLoRAArgs, str | None, bool, bool]:
    """The request's arguments (photos decoded, never paths), save name and flags."""
    from hyperlora_ext.store import check_name

    option_fields = (
        "model", "face", "face_index", "remove_background", "grayscale", "photo_weights", "mix",
        "dtype",
    )  # fmt: skip
    args = HyperLoRAArgs.from_dict({k: data[k] for k in option_fields if k in data})
    save_as = data["save_as"]
    if save_as is not None:
        with about("save_as", InvalidNameError):
            check_name(save_as)
    overwrite, return_lora = _flag(data, "overwrite"), _flag(data, "return_lora")
    if save_as is not None and not overwrite and backend.store().exists(save_as):
        raise ApiError(
            409, f"an identity named {save_as!r} exists; set overwrite to replace it", "save_as"
        )
    # A mix decodes its photos with the mix's other photos; without one, photos are required.
    photos = (data.get("images") or []) if args.mix else _images(data, limits)
    return args.replace(images=photos), save_as, overwrite, return_lora


def _photo_report(report: Any) -> dict[str, Any]:
    return {
        "label": report.label,
        "faces_found": report.faces_found,
        "used": report.used,
        "reason": report.reason,
        "box": [round(float(v), 1) for v in report.box] if report.box else None,
        "score": None if report.score is None else round(float(report.score), 4),
    }


def _lora_file_base64(identity: Identity, name: str) -> str:
    """The identity as the same .safetensors file a save writes."""
    from hyperlora_ext.export import export_lora

    with tempfile.TemporaryDirectory(prefix="hyperlora-") as folder:
        path = export_lora(
            identity.lora, folder, name, model=identity.model, photos=identity.photos
        )
        return base64.b64encode(path.read_bytes()).decode("ascii")


def _likeness(backend: Services, limits: Limits, data: dict[str, Any]) -> dict[str, Any]:
    """``{images, identity | reference_images}`` -> per image ``{image, faces, likeness}``."""
    _check_fields(data, m.field_names(m.LikenessRequest))
    images = _images(data, limits)
    has_identity, has_photos = data.get("identity") is not None, "reference_images" in data
    if has_identity == has_photos:
        raise ApiError(
            422,
            "give either 'identity' (the name of a saved identity) or 'reference_images' "
            "(photos of the person, base64), not both",
            "identity" if has_identity else "reference_images",
        )
    with backend.lock:  # in the queue like every GPU job; one photo decoded at a time
        pipeline = backend.pipeline()
        if has_identity:
            reference = _identity_reference(backend, data["identity"])
        else:
            photos = _reference_photos(data.get("reference_images"), limits)
            labels = [f"reference image {i + 1}" for i in range(len(photos))]
            with about("reference_images", ImageError, NoFaceError):
                reference = pipeline.reference_from_photos(photos, labels)
        labels = [f"image {i + 1}" for i in range(len(images))]
        scores = pipeline.likeness(images, reference, labels)
    return {"images": [score.to_dict() for score in scores]}


def _identity_reference(backend: Services, name: Any) -> Any:
    if not isinstance(name, str):
        raise ApiError(422, f"'identity' must be a name, got {name!r}", "identity")
    with about("identity", InvalidNameError, IdentityNotFoundError, NoReferenceError):
        return backend.store().likeness_reference(name)


def _reference_photos(value: Any, limits: Limits) -> list[bytes]:
    if not isinstance(value, list) or not value:
        raise ApiError(
            422, "'reference_images' must be a non-empty list of base64 photos", "reference_images"
        )
    if len(value) > limits.max_images:
        message = too_many_images(len(value), limits.max_images)
        raise ApiError(422, message, "reference_images")
    with about("reference_images", ImageError):
        return [
            decode_image_payload(photo, f"reference image {i + 1}", limits.max_image_bytes)
            for i, photo in enumerate(value)
        ]


_record = api_identities.record_dict


def _identity(
    backend: Services, name: str, preview: str | None, lora: str | None = None
) -> dict[str, Any]:
    want_preview, want_lora = _query_flag("preview", preview), _query_flag("lora", lora)
    store = backend.store()
    with about("name", InvalidNameError):
        response = _record(store.record(name))
        path = store.preview_path(name) if want_preview else None
    if want_preview:
        response["preview"] = base64.b64encode(path.read_bytes()).decode() if path else None
    if want_lora:
        response.update(api_identities.lora_file(store, name))
    return response


def _query_flag(name: str, value: str | None) -> bool:
    """A true/false query parameter (parsed here so that a bad one gets our error shape)."""
    text = (value or "false").strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise ApiError(422, f"'{name}' must be true or false, got {value!r}", name)
    return text in ("true", "1", "yes")


def _delete(backend: Services, name: str) -> dict[str, Any]:
    with about("name", InvalidNameError):
        removed = backend.store().delete(name)
    return {"deleted": name, "files": [p.name for p in removed]}
