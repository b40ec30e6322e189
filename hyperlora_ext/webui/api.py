"""HyperLoRA's HTTP API (``/hyperlora/v1/...``) and how generation requests report its failures.

Routes, registered on the WebUI's FastAPI app by :func:`register_routes` (``on_app_started``):

* ``GET  /hyperlora/v1/status``            version, readiness, device, cache;
* ``GET  /hyperlora/v1/models``            installed models and what is missing;
* ``POST /hyperlora/v1/detect``            faces in posted photos (boxes, scores, crops);
* ``POST /hyperlora/v1/encode``            photos -> identity digest; save it or return the file;
* ``GET  /hyperlora/v1/identities``        saved identities;
* ``GET|DELETE /hyperlora/v1/identities/{name}``.

Photos are base64 strings or ``data:image/...;base64,`` URLs only: never server paths or URLs.
Errors are JSON ``{"error": <type>, "detail": <message>, "field": <the request field at fault, or
null>}`` with a 4xx status; 500 only for faults of the server (broken model files, bugs).

Generation requests (``/sdapi/v1/txt2img|img2img``) answer 200 even when a script hook fails,
because the WebUI swallows hook exceptions. HyperLoRA writes its failures into the response's
``info`` (``extra_generation_params["HyperLoRA error"]``). A client may instead ask the request to
fail (header ``X-HyperLoRA-On-Error: fail``, or the setting ``hyperlora_api_on_error``): the
script then calls :func:`fail_api_request`, which stops the job before sampling, and a thin
wrapper around those two routes (:func:`install_fail_mode`) answers 422 with the message.
"""

import base64
import io
import json
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hyperlora_ext.args import (
    MAX_IMAGE_BYTES,
    MAX_IMAGES,
    ArgumentError,
    HyperLoRAArgs,
    image_too_large,
    too_many_images,
)
from hyperlora_ext.encoders.images import ImageTooLargeError
from hyperlora_ext.errors import (
    CheckpointError,
    HyperLoRAError,
    ImageError,
    InvalidNameError,
    ModelNotFoundError,
    NoFaceError,
)
from hyperlora_ext.files import parse_json
from hyperlora_ext.webui.settings import API_ON_ERROR

PREFIX = "/hyperlora/v1"
GENERATION_ROUTES = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img")
ERROR_HEADER = "x-hyperlora-on-error"  # "fail" or "info"
ON_ERROR_OPTION = API_ON_ERROR  # WebUI setting (hyperlora_ext.webui.settings), the default
ERROR_KEY = "HyperLoRA error"


@dataclass(frozen=True)
class Limits:
    """Input limits of the routes (requests over them get 413 or 422)."""

    max_body_bytes: int = 96 * 2**20
    max_images: int = MAX_IMAGES
    max_image_bytes: int = MAX_IMAGE_BYTES  # decoded file size of one photo
    max_crop_side: int = 1024


@dataclass
class Backend:
    """What the routes need from the host. :func:`webui_backend` builds it from the WebUI."""

    roots: Callable[[], Any]  # -> models.ModelRoots
    pipeline: Callable[[], Any]  # -> identity.IdentityPipeline
    identities: Callable[[], Any]  # -> identities.IdentityStore
    face_analyzer: Callable[[], Any]  # -> encoders.faces.FaceAnalyzer
    lock: Any = field(default_factory=nullcontext)  # one GPU job at a time (the WebUI's queue)
    version: str = ""


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


# --------------------------------------------------------------------------- the WebUI side
def lora_dir() -> Path:
    from modules import shared

    return Path(shared.cmd_opts.lora_dir)


def identity_store() -> Any:
    """The WebUI's saved identities (``<Lora folder>/hyperlora``)."""
    from hyperlora_ext.identities import get_store

    return get_store(lora_dir())


def webui_backend() -> Backend:
    import hyperlora_ext
    from hyperlora_ext.webui import host

    try:
        from modules.call_queue import queue_lock
    except ImportError:  # pragma: no cover - every supported WebUI has it
        queue_lock = nullcontext()
    return Backend(
        roots=host.model_roots,
        pipeline=host.pipeline,
        identities=identity_store,
        # The pipeline's own analyzer: one copy of the ONNX sessions for detect and encode.
        face_analyzer=lambda: host.pipeline()._face_analyzer(),
        lock=queue_lock,
        version=getattr(hyperlora_ext, "__version__", ""),
    )


# ------------------------------------------------------------------------------- decoding
def decode_image_payload(value: Any, label: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The file bytes of a base64 string or ``data:image/...;base64,`` URL; nothing else.

    Raises ImageError (ImageTooLargeError over ``max_bytes``). Server paths and URLs are refused:
    a remote client must not make the server read its own files or fetch addresses.
    """
    from hyperlora_ext.encoders.images import (
        DATA_URL,
        decode_base64_image,
        is_image_data,
        looks_like_server_path,
    )

    if not isinstance(value, str):
        raise ImageError(
            f"{label}: expected a base64 string or a data URL, got {type(value).__name__}"
        )
    path_like = not DATA_URL.match(value) and looks_like_server_path(value)
    if len(value) * 3 // 4 > max_bytes + 100:  # refused before decoding (100: a data URL prefix)
        raise ImageTooLargeError(image_too_large(label, max_bytes))
    try:
        data = decode_base64_image(value, label)
    except ImageError:
        if path_like:
            raise ImageError(_PATHS_REFUSED.format(label=label)) from None
        raise
    if len(data) > max_bytes:
        raise ImageTooLargeError(image_too_large(label, max_bytes))
    if path_like and not is_image_data(data):
        raise ImageError(_PATHS_REFUSED.format(label=label))
    return data


_PATHS_REFUSED = (
    "{label}: this looks like a file path or an address; paths and URLs are not accepted over "
    "the API. Send the photo itself as base64 or as a data:image/...;base64, URL"
)


def api_images(images: Sequence[Any], max_bytes: int = MAX_IMAGE_BYTES) -> list[bytes]:
    """Decode the photos of an API request (``p.is_api``) so the pipeline never sees a path."""
    return [
        decode_image_payload(image, f"image {i + 1}", max_bytes) for i, image in enumerate(images)
    ]


# ---------------------------------------------------------------------------------- routes
def register_routes(app: Any, backend: Backend | None = None, limits: Limits | None = None) -> None:
    """Add the ``/hyperlora/v1`` routes to ``app`` (once) and the fail-mode wrapper."""
    from fastapi import APIRouter, Request

    limits = limits or Limits()

    if any(getattr(r, "path", "").startswith(PREFIX) for r in app.router.routes):
        return
    backend = backend or webui_backend()
    router = APIRouter(prefix=PREFIX, tags=["HyperLoRA"])

    @router.get("/status")
    async def status() -> Any:
        return await _run(lambda: _status(backend))

    @router.get("/models")
    async def models() -> Any:
        return await _run(lambda: _models(backend))

    @router.post("/detect")
    async def detect(request: Request) -> Any:
        return await _post(request, limits, lambda data: _detect(backend, limits, data))

    @router.post("/encode")
    async def encode(request: Request) -> Any:
        return await _post(request, limits, lambda data: _encode(backend, limits, data))

    @router.get("/identities")
    async def identities() -> Any:
        return await _run(lambda: {"identities": [_record(r) for r in backend.identities().list()]})

    # {name:path} so that "a/b" or "../x" reach us and get a clear 400 instead of a bare 404.
    @router.get("/identities/{name:path}")
    async def identity(name: str, request: Request) -> Any:
        return await _run(lambda: _identity(backend, name, request.query_params.get("preview")))

    @router.delete("/identities/{name:path}")
    async def delete_identity(name: str) -> Any:
        return await _run(lambda: _delete(backend, name))

    app.include_router(router)
    install_fail_mode(app)


async def _run(work: Callable[[], Any]) -> Any:
    """Run blocking work off the event loop and turn our errors into JSON responses."""
    from starlette.concurrency import run_in_threadpool

    try:
        return await run_in_threadpool(work)
    except (ApiError, HyperLoRAError) as error:
        return error_response(error)
    except Exception as error:  # a bug: still our JSON shape, and the traceback in the console
        traceback.print_exc()
        return error_response(error)


async def _post(request: Any, limits: Limits, work: Callable[[dict], Any]) -> Any:
    try:
        data = await _read_json(request, limits)
    except ApiError as error:
        return error_response(error)
    return await _run(lambda: work(data))


def error_response(error: Exception) -> Any:
    """``{"error", "detail", "field"}`` with a 4xx status (500 only for server-side faults)."""
    from fastapi.responses import JSONResponse

    status, message, field_name = _describe(error)
    kind = (
        type(error).__name__ if isinstance(error, (ApiError, HyperLoRAError)) else "InternalError"
    )
    body = {"error": kind, "detail": message, "field": field_name}
    return JSONResponse(status_code=status, content=body)


def _describe(error: Exception) -> tuple[int, str, str | None]:
    from hyperlora_ext.export import ExportExistsError
    from hyperlora_ext.identities import IdentityNotFoundError

    if isinstance(error, ApiError):
        return error.status, error.message, error.field
    if not isinstance(error, HyperLoRAError):
        return 500, f"internal error: {type(error).__name__}: {error}, please report it (the " \
            "WebUI console shows the traceback)", None  # fmt: skip
    statuses = (  # (type, status, the request field it is about unless the error says)
        (ArgumentError, 422, None),
        (InvalidNameError, 400, None),
        (IdentityNotFoundError, 404, "name"),
        (ModelNotFoundError, 404, "model"),
        (ExportExistsError, 409, "save_as"),
        (ImageTooLargeError, 413, "images"),
        (ImageError, 400, "images"),
        (NoFaceError, 422, "images"),
        (CheckpointError, 500, None),
    )
    status, field_name = next(
        ((code, name) for kind, code, name in statuses if isinstance(error, kind)), (422, None)
    )
    return status, str(error), getattr(error, "field", None) or field_name


@contextmanager
def _about(field_name: str, *kinds: type[Exception]) -> Iterator[None]:
    """Errors of ``kinds`` raised inside are about the request field ``field_name``."""
    try:
        yield
    except kinds as error:
        if getattr(error, "field", None) is None:
            error.field = field_name  # type: ignore[attr-defined]
        raise


async def _read_json(request: Any, limits: Limits) -> dict[str, Any]:
    too_big = ApiError(413, f"the request body is larger than {limits.max_body_bytes} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.max_body_bytes:
            raise too_big
    try:
        data = parse_json(bytes(body), "the request body")
    except ValueError as error:
        raise ApiError(400, str(error)) from None
    if not isinstance(data, dict):
        raise ApiError(422, "the request body must be a JSON object")
    return data


# ---------------------------------------------------------------------------- handlers
def _status(backend: Backend) -> dict[str, Any]:
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
        "identities": len(backend.identities().names()),
    }


def _models(backend: Backend) -> dict[str, Any]:
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


def _check_fields(data: Mapping[str, Any], known: Sequence[str]) -> None:
    for key in data:
        if key not in known:
            raise ApiError(422, f"unknown field {key!r}; known fields: {', '.join(known)}", key)


def _images(data: Mapping[str, Any], limits: Limits) -> list[bytes]:
    images = data.get("images")
    if not isinstance(images, list) or not images:
        raise ApiError(422, "'images' must be a non-empty list of base64 images", "images")
    if len(images) > limits.max_images:
        raise ApiError(422, too_many_images(len(images), limits.max_images), "images")
    return api_images(images, limits.max_image_bytes)


def _flag(data: Mapping[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(422, f"'{name}' must be true or false, got {value!r}", name)
    return value


def _detect(backend: Backend, limits: Limits, data: dict[str, Any]) -> dict[str, Any]:
    _check_fields(data, ("images", "crops", "crop_size"))
    photos = _images(data, limits)
    crops = _flag(data, "crops", True)
    side = data.get("crop_size", 256)
    if (
        isinstance(side, bool)
        or not isinstance(side, int)
        or not 16 <= side <= limits.max_crop_side
    ):
        raise ApiError(
            422,
            f"'crop_size' must be a whole number from 16 to {limits.max_crop_side}",
            "crop_size",
        )
    with backend.lock:  # one photo decoded at a time, in the queue like every GPU job
        analyzer = backend.face_analyzer()
        results = [
            _detect_one(analyzer, photo, f"image {i + 1}", crops, side)
            for i, photo in enumerate(photos)
        ]
    return {"images": results}


def _detect_one(analyzer: Any, photo: bytes, label: str, crops: bool, side: int) -> dict:
    """Faces of one photo; sizes and boxes in the photo's own pixels even when it was reduced."""
    from hyperlora_ext.encoders.faces import choose_face
    from hyperlora_ext.encoders.images import WORK_SIDE, load_image

    image = load_image(photo, label, WORK_SIDE)
    scale = image.info.get("scale", 1.0)
    faces = analyzer.detect(image)
    ordered = sorted(faces, key=lambda f: f.box[0])  # the order face_index counts in
    entry: dict[str, Any] = {
        "width": round(image.width * scale),
        "height": round(image.height * scale),
        "faces": [],
    }
    for index, face in enumerate(ordered):
        item = {"index": index, "box": [round(float(v) * scale, 1) for v in face.box]}
        item["score"] = round(float(face.score), 4)
        if crops:
            item["crop"] = _png_base64(_face_crop(image, face.box, side))
        entry["faces"].append(item)
    for choice in ("largest", "best_score"):
        entry[choice] = ordered.index(faces[choose_face(faces, choice)]) if faces else None
    return entry


def _face_crop(image: Any, box: Sequence[float], side: int) -> Any:
    """The face box with a margin of half its size, fitted into ``side`` x ``side``."""
    x1, y1, x2, y2 = box
    margin_x, margin_y = (x2 - x1) / 2, (y2 - y1) / 2
    area = (
        max(0, int(x1 - margin_x)),
        max(0, int(y1 - margin_y)),
        min(image.width, int(x2 + margin_x) + 1),
        min(image.height, int(y2 + margin_y) + 1),
    )
    crop = image.crop(area)
    crop.thumbnail((side, side))
    return crop


def _png_base64(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


ENCODE_FIELDS = (
    "images",
    "photo_weights",
    "mix",
    "model",
    "face",
    "face_index",
    "remove_background",
    "grayscale",
    "save_as",
    "overwrite",
    "return_lora",
)


def _encode(backend: Backend, limits: Limits, data: dict[str, Any]) -> dict[str, Any]:
    from hyperlora_ext.identities import check_name
    from hyperlora_ext.models import list_hyperlora_models

    _check_fields(data, ENCODE_FIELDS)
    option_fields = ("model", "face", "face_index", "remove_background", "grayscale")
    option_fields += ("photo_weights", "mix")
    args = HyperLoRAArgs.from_dict({k: data[k] for k in option_fields if k in data})
    save_as = data.get("save_as")
    if save_as is not None:
        with _about("save_as", InvalidNameError):
            check_name(save_as)
    overwrite = _flag(data, "overwrite", False)
    return_lora = _flag(data, "return_lora", False)
    store = backend.identities()
    if save_as is not None and not overwrite and store.exists(save_as):
        raise ApiError(
            409, f"an identity named {save_as!r} exists; set overwrite to replace it", "save_as"
        )
    model = args.model or next(iter(list_hyperlora_models(backend.roots())), "")
    options = _options(args.replace(model=model))
    if args.mix:
        photos = data.get("images") or []  # decoded with the mix's other photos
        args = HyperLoRAArgs.from_dict({**args.to_dict(), "images": photos, "model": model})
        with backend.lock, _about("model", InvalidNameError, ModelNotFoundError):
            result = _mix(backend, args)
    else:
        photos = _images(data, limits)
        weights = list(args.photo_weights) or None
        with backend.lock, _about("model", InvalidNameError, ModelNotFoundError):
            result = backend.pipeline().predict(photos, options, weights=weights)
    response: dict[str, Any] = {
        "digest": result.digest,
        "model": result.model,
        "photos_used": result.photos_used,
        "cache_hit": result.cache_hit,
        "seconds": round(result.seconds, 3),
        "warnings": list(result.warnings),
        "photos": [_photo_report(r) for r in result.reports],
        "saved": None,
        "lora": None,
    }
    preview = next((r.preview for r in result.reports if r.preview is not None), None)
    if save_as is not None:
        with _about("save_as", HyperLoRAError):
            record = store.save(
                save_as, result.lora, model=result.model, photos=result.photos_used,
                options=record_options(options), preview=preview, overwrite=overwrite,
                tokens=result.tokens,
            )  # fmt: skip
        response["saved"] = _record(record)
    if return_lora:
        name = save_as or f"hyperlora_{result.digest}"
        response["lora"] = _lora_file_base64(result, name)
        response["lora_filename"] = f"{name}.safetensors"
    return response


def _mix(backend: Backend, args: HyperLoRAArgs) -> Any:
    """A mix (saved identities and photos) as an IdentityResult of the mixed identity."""
    from dataclasses import replace

    from hyperlora_ext.identity import IdentityResult
    from hyperlora_ext.models import list_hyperlora_models
    from hyperlora_ext.webui.sources import Context, mixed_identity

    def predict(images: Any, weights: Any, part_args: HyperLoRAArgs) -> Any:
        options = replace(_options(args), model=part_args.model)
        return backend.pipeline().predict(images, options, weights=weights)

    def default_model() -> str:
        return next(iter(list_hyperlora_models(backend.roots())), "")

    ctx = Context(predict, backend.pipeline, backend.identities, default_model, is_api=True)
    mixed = mixed_identity(args, ctx)
    return IdentityResult(
        lora=mixed.lora, digest=mixed.digest, reports=[], model=mixed.model,
        photos_used=mixed.photos, seconds=mixed.seconds, tokens=mixed.tokens,
    )  # fmt: skip


def _options(args: HyperLoRAArgs) -> Any:
    from hyperlora_ext.identity import IdentityOptions

    return IdentityOptions(
        model=args.model,
        face_choice=args.face,
        face_index=args.face_index,
        remove_background=args.remove_background,
        grayscale=args.grayscale,
    )


def record_options(options: Any) -> dict[str, Any]:
    """An identity record's options: the pipeline options without the model names."""
    values = asdict(options)
    values.pop("model", None)
    values.pop("clip", None)
    return values


def _photo_report(report: Any) -> dict[str, Any]:
    return {
        "label": report.label,
        "faces_found": report.faces_found,
        "used": report.used,
        "reason": report.reason,
        "box": [round(float(v), 1) for v in report.box] if report.box else None,
        "score": None if report.score is None else round(float(report.score), 4),
    }


def _lora_file_base64(result: Any, name: str) -> str:
    """The identity as the same .safetensors file a save writes."""
    from hyperlora_ext.export import export_lora

    with tempfile.TemporaryDirectory(prefix="hyperlora-") as folder:
        path = export_lora(result.lora, folder, name, model=result.model, photos=result.photos_used)
        return base64.b64encode(path.read_bytes()).decode("ascii")


def _record(record: Any) -> dict[str, Any]:
    return {**record.to_dict(), "prompt_tag": record.prompt_tag}


def _identity(backend: Backend, name: str, preview: str | None) -> dict[str, Any]:
    want_preview = _query_flag("preview", preview)
    store = backend.identities()
    with _about("name", InvalidNameError):
        response = _record(store.record(name))
        path = store.preview_path(name) if want_preview else None
    if want_preview:
        response["preview"] = base64.b64encode(path.read_bytes()).decode() if path else None
    return response


def _query_flag(name: str, value: str | None) -> bool:
    """A true/false query parameter (parsed here so that a bad one gets our error shape)."""
    text = (value or "false").strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise ApiError(422, f"'{name}' must be true or false, got {value!r}", name)
    return text in ("true", "1", "yes")


def _delete(backend: Backend, name: str) -> dict[str, Any]:
    with _about("name", InvalidNameError):
        removed = backend.identities().delete(name)
    return {"deleted": name, "files": [p.name for p in removed]}


# ----------------------------------------------------------- failing generation requests
@dataclass
class _RequestErrors:
    messages: list[str] = field(default_factory=list)


# Set by the route wrapper for a generation request that asked to fail; the script's hooks run
# in a worker thread that inherits this context (Starlette copies it into the threadpool).
_failing_request: ContextVar[_RequestErrors | None] = ContextVar("hyperlora_fail", default=None)


def fail_api_request(p: Any, message: str) -> bool:
    """Make an API generation request fail with ``message`` if it asked to; True if so.

    Call it after writing the error into ``p.extra_generation_params`` (which stays the default
    way to report). Script hook exceptions are swallowed by the WebUI, so instead this stops the
    job (``shared.state.interrupt()``: the batch loop ends before sampling, no time is wasted) and
    records the message for the route wrapper, which answers 422 instead of the empty result. If
    the wrapper is missing, the client still gets no images and the error in ``info``.
    """
    if not getattr(p, "is_api", False):
        return False
    errors = _failing_request.get()
    if errors is None and not _option_says_fail():
        return False
    if errors is not None:
        errors.messages.append(message)
    from modules import shared

    shared.state.interrupt()
    return True


def _option_says_fail() -> bool:
    from hyperlora_ext.webui import settings

    return settings.current().api_on_error == "fail"


def _fail_requested(scope: Mapping[str, Any]) -> bool:
    for key, value in scope.get("headers", ()):
        if key.decode("latin-1").lower() == ERROR_HEADER:
            mode = value.decode("latin-1").strip().lower()
            if mode in ("fail", "true", "1"):
                return True
            if mode in ("info", "false", "0"):
                return False
    return _option_says_fail()


def install_fail_mode(app: Any) -> int:
    """Wrap the txt2img/img2img routes of ``app`` so failing requests answer 422; returns how many.

    Only those two routes are touched (their ASGI callable is wrapped); the app's middleware stack,
    which may already be built, is left alone. Safe to call twice.
    """
    wrapped = 0
    for route in app.router.routes:
        if getattr(route, "path", None) not in GENERATION_ROUTES or not hasattr(route, "app"):
            continue
        if not getattr(route.app, "_hyperlora_fail_mode", False):
            route.app = _fail_mode(route.app)
        wrapped += 1
    return wrapped


def _fail_mode(inner: Callable) -> Callable:
    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http" or not _fail_requested(scope):
            await inner(scope, receive, send)
            return
        errors = _RequestErrors()
        token = _failing_request.set(errors)
        held: list[dict] = []

        async def hold(message: dict) -> None:
            held.append(message)

        try:
            await inner(scope, receive, hold)
        except Exception:
            if not errors.messages:
                raise  # not ours: the WebUI's own error handling answers
        finally:
            _failing_request.reset(token)
        if errors.messages:
            await _send_failure(send, errors.messages)
            return
        for message in held:
            await send(message)

    app._hyperlora_fail_mode = True  # type: ignore[attr-defined]
    return app


async def _send_failure(send: Callable, messages: list[str]) -> None:
    """A 422 in the WebUI's own API error shape ({error, detail, body, errors})."""
    detail = f"{ERROR_KEY}: {'; '.join(messages)}"
    body = json.dumps(
        {"error": "HyperLoRAError", "detail": detail, "body": "", "errors": detail}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 422, "headers": headers})
    await send({"type": "http.response.body", "body": body})
