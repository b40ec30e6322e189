"""Reading the ``/hyperlora/v1`` routes' requests: input limits, the JSON body, common fields,
and running the handler off the event loop with errors as JSON (:mod:`.api_errors`)."""

import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hyperlora_ext.encoders.images import api_images
from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.facts import MAX_IMAGE_BYTES, MAX_IMAGES, too_many_images
from hyperlora_ext.files import parse_json
from hyperlora_ext.webui import api_models as m
from hyperlora_ext.webui.api_errors import ApiError, error_response


@dataclass(frozen=True)
class Limits:
    """Input limits of the routes (requests over them get 413 or 422)."""

    max_body_bytes: int = 96 * 2**20
    max_images: int = MAX_IMAGES
    max_image_bytes: int = MAX_IMAGE_BYTES  # decoded file size of one photo
    max_crop_side: int = m.MAX_CROP_SIDE


async def run(work: Callable[[], Any]) -> Any:
    """Run blocking work off the event loop and turn our errors into JSON responses."""
    from starlette.concurrency import run_in_threadpool

    try:
        return await run_in_threadpool(work)
    except (ApiError, HyperLoRAError) as error:
        return error_response(error)
    except Exception as error:  # a bug: still our JSON shape, and the traceback in the console
        traceback.print_exc()
        return error_response(error)


async def post(request: Any, limits: Limits, work: Callable[[dict], Any]) -> Any:
    try:
        data = await read_json(request, limits)
    except ApiError as error:
        return error_response(error)
    return await run(lambda: work(data))


async def read_json(request: Any, limits: Limits) -> dict[str, Any]:
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


def check_fields(data: Mapping[str, Any], known: Sequence[str]) -> None:
    for key in data:
        if key not in known:
            raise ApiError(422, f"unknown field {key!r}; known fields: {', '.join(known)}", key)


def request_images(data: Mapping[str, Any], limits: Limits) -> list[bytes]:
    images = data.get("images")
    if not isinstance(images, list) or not images:
        raise ApiError(422, "'images' must be a non-empty list of base64 images", "images")
    if len(images) > limits.max_images:
        raise ApiError(422, too_many_images(len(images), limits.max_images), "images")
    return api_images(images, limits.max_image_bytes)


def flag(data: Mapping[str, Any], name: str) -> bool:
    value = data[name]
    if not isinstance(value, bool):
        raise ApiError(422, f"'{name}' must be true or false, got {value!r}", name)
    return value
