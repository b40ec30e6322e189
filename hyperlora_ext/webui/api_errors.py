"""How the ``/hyperlora/v1`` routes answer errors: ``{"error", "detail", "field"}`` JSON.

The status follows the error's type (4xx for what the client can fix; 503 for a damaged model
file, whose message names it; 500 only for bugs); ``field`` names the request field at fault, or
is null.
"""

from __future__ import annotations

from typing import Any

from hyperlora_ext.errors import (
    ArgumentError,
    CheckpointError,
    ExportExistsError,
    HyperLoRAError,
    IdentityNotFoundError,
    ImageError,
    ImageTooLargeError,
    InvalidNameError,
    ModelNotFoundError,
    NoFaceError,
)


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def error_response(error: Exception) -> Any:
    """``{"error", "detail", "field"}`` with a 4xx status (500 only for server-side faults)."""
    from fastapi.responses import JSONResponse

    status, message, field_name = describe(error)
    kind = (
        type(error).__name__ if isinstance(error, (ApiError, HyperLoRAError)) else "InternalError"
    )
    body = {"error": kind, "detail": message, "field": field_name}
    return JSONResponse(status_code=status, content=body)


def describe(error: Exception) -> tuple[int, str, str | None]:
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
        (CheckpointError, 503, "model"),  # a damaged model file: the server can't until fixed
    )
    status, field_name = next(
        ((code, name) for kind, code, name in statuses if isinstance(error, kind)), (422, None)
    )
    return status, str(error), error.field or field_name
