"""``POST /hyperlora/v1/likeness``: score posted images against a saved identity or photos.

Request ``{"images": [...], "identity": "alice"}`` or ``{"images": [...], "reference_images":
[...]}`` (exactly one of the two); the answer has one entry per image, in order: ``{"image":
"image 1", "faces": 2, "likeness": 0.62}``, or ``"likeness": null`` with ``"faces": 0`` when no
face was found. Errors use the routes' ``{error, detail, field}`` shape (see :mod:`.api`).
"""

from __future__ import annotations

from typing import Any

from hyperlora_ext.encoders.images import decode_image_payload
from hyperlora_ext.errors import ImageError, InvalidNameError, NoFaceError
from hyperlora_ext.facts import too_many_images
from hyperlora_ext.webui import api
from hyperlora_ext.webui import api_models as m
from hyperlora_ext.webui.api_errors import ApiError, about


def likeness(backend: api.Backend, limits: api.Limits, data: dict[str, Any]) -> dict[str, Any]:
    api._check_fields(data, m.field_names(m.LikenessRequest))
    images = api._images(data, limits)
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


def _identity_reference(backend: api.Backend, name: Any) -> Any:
    from hyperlora_ext.identities import IdentityNotFoundError

    if not isinstance(name, str):
        raise ApiError(422, f"'identity' must be a name, got {name!r}", "identity")
    with about("identity", InvalidNameError, IdentityNotFoundError):
        record = backend.identities().record(name)
    if not record.reference_embedding:
        raise ApiError(
            422,
            f"the saved identity {name!r} has no likeness reference (it was saved before this "
            "version): save it again from its photos, or send 'reference_images'",
            "identity",
        )
    return record.reference_embedding


def _reference_photos(value: Any, limits: api.Limits) -> list[bytes]:
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
