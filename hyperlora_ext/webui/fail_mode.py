"""Failing generation requests: how ``/sdapi/v1/txt2img|img2img`` report HyperLoRA's errors.

Generation requests answer 200 even when a script hook fails, because the WebUI swallows hook
exceptions. HyperLoRA writes its failures into the response's ``info``
(``extra_generation_params["HyperLoRA error"]``). A client may instead ask the request to fail
(header ``X-HyperLoRA-On-Error: fail``, or the setting ``hyperlora_api_on_error``): the script then
calls :func:`fail_api_request`, which stops the job before sampling, and a thin wrapper around
those two routes (:func:`install_fail_mode`) answers 422 with the message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from hyperlora_ext.facts import ERROR_LABEL

GENERATION_ROUTES = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img")
ERROR_HEADER = "x-hyperlora-on-error"  # "fail" or "info"


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


# Set by api.register_routes: starts loading the encoders at the first request naming HyperLoRA.
on_hyperlora_request: Callable[[], None] = lambda: None  # noqa: E731


def _watch_for_hyperlora(receive: Callable) -> Callable:
    """``receive`` that starts the preload when a generation request's body names HyperLoRA."""

    async def watched() -> dict:
        message = await receive()
        if b"hyperlora" in message.get("body", b"").lower():
            on_hyperlora_request()
        return message

    return watched


def _fail_mode(inner: Callable) -> Callable:
    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        receive = _watch_for_hyperlora(receive)
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
    detail = f"{ERROR_LABEL}: {'; '.join(messages)}"
    body = json.dumps(
        {"error": "HyperLoRAError", "detail": detail, "body": "", "errors": detail}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 422, "headers": headers})
    await send({"type": "http.response.body", "body": body})
