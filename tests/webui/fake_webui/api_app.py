"""A FastAPI app with the parts of A1111's ``modules/api/api.py`` HyperLoRA meets.

``POST /sdapi/v1/txt2img`` runs a job through the double's ``process_images`` under the queue
lock, in a worker thread (a sync endpoint, as in A1111). ``alwayson_scripts`` are matched by title,
case-insensitively; unknown titles give 422; each script's slice starts from the ``ui()`` defaults
and is overwritten position by position. ``script_name`` + ``script_args`` choose a selectable
script (X/Y/Z), which then runs the job. Exceptions escaping the job become A1111's JSON error
``{error, detail, body, errors}`` with the exception's ``status_code`` or 500 (its middleware).
``GET /sdapi/v1/script-info`` lists each script's ``api_info``.

:func:`api_only` starts it in the order of ``webui.py:api_only`` (A1111 1.10.1 and Forge 2 alike):
scripts are loaded, creating the API builds the UI (every ``ui()`` runs), and only then do the
``before_ui`` and ``app_started`` callbacks run.
"""

from __future__ import annotations

from typing import Any

from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse


def _error_response(error: Exception) -> JSONResponse:
    body = {
        "error": type(error).__name__,
        "detail": vars(error).get("detail", ""),
        "body": vars(error).get("body", ""),
        "errors": str(error),
    }
    return JSONResponse(
        status_code=vars(error).get("status_code", 500), content=jsonable_encoder(body)
    )


def create_app(runner: Any, sd_model: Any, defaults: dict[str, list] | None = None) -> FastAPI:
    """``defaults``: script title (lower case) -> its ``ui()`` component values."""
    from modules import call_queue, processing, shared

    app = FastAPI()

    @app.middleware("http")
    async def exception_handling(request: Request, call_next):
        try:
            return await call_next(request)
        except Exception as error:
            return _error_response(error)

    @app.exception_handler(Exception)
    async def handle_exception(request: Request, error: Exception):
        return _error_response(error)

    @app.exception_handler(HTTPException)
    async def handle_http_exception(request: Request, error: HTTPException):
        return _error_response(error)

    def init_script_args(request: dict) -> list:
        size = max((s.args_to for s in runner.scripts), default=1)
        script_args: list = [None] * size
        script_args[0] = 0
        for script in runner.scripts:
            values = (defaults or {}).get(script.title().lower(), [])
            script_args[script.args_from : script.args_from + len(values)] = values
        if request.get("script_name"):
            selectable = runner.selectable_scripts
            titles = [s.title().lower() for s in selectable]
            name = request["script_name"].lower()
            if name not in titles:
                raise HTTPException(status_code=422, detail=f"Script '{name}' not found")
            script = selectable[titles.index(name)]
            script_args[0] = titles.index(name) + 1
            values = request.get("script_args", [])
            script_args[script.args_from : script.args_from + len(values)] = values
        for title, entry in (request.get("alwayson_scripts") or {}).items():
            script = runner.script(title)
            if script is None:
                raise HTTPException(status_code=422, detail=f"always on script {title} not found")
            args = entry.get("args", [])
            for i in range(min(script.args_to - script.args_from, len(args))):
                script_args[script.args_from + i] = args[i]
        return script_args

    @app.post("/sdapi/v1/txt2img")
    def txt2img(request: dict = Body(...)) -> dict:  # noqa: B008 (FastAPI's idiom)
        script_args = init_script_args(request)
        with call_queue.queue_lock:
            p = processing.StableDiffusionProcessingTxt2Img(
                sd_model=sd_model,
                scripts_runner=runner,
                prompt=request.get("prompt", ""),
                steps=request.get("steps", 2),
                n_iter=request.get("n_iter", 1),
                is_api=True,
            )
            shared.state.begin()
            p.script_args = tuple(script_args)
            processed = runner.run(p, *p.script_args) if script_args[0] else None
            processed = processed or processing.process_images(p)
        return {
            "images": [f"<image {i}>" for i in range(len(processed.images))],
            "parameters": request,
            "info": processed.js(),
        }

    @app.get("/sdapi/v1/script-info")
    def script_info() -> list:
        return [s.api_info for s in runner.scripts if s.api_info is not None]

    return app


def start(script_paths: list, sd_model: Any, *, nowebui: bool) -> tuple[FastAPI, Any]:
    """A server, with the UI (``--api``) or API-only (``--nowebui``): (app, its txt2img runner).

    With the UI, ``before_ui`` runs before the UI is built; API-only, creating the API builds it
    (``Api.__init__`` -> ``ui.create_ui()``, every ``ui()`` runs) and ``before_ui`` runs after.
    """
    from modules import script_callbacks, scripts

    for path in script_paths:
        scripts.load_script_file(str(path))
    if not nowebui:
        script_callbacks.fire("before_ui")
    runner = scripts.ScriptRunner([data.script_class for data in scripts.scripts_data])
    runner.setup_ui()
    defaults = {
        s.title().lower(): [arg["value"] for arg in s.api_info["args"]] for s in runner.scripts
    }
    app = create_app(runner, sd_model, defaults)
    if nowebui:
        script_callbacks.fire("before_ui")
    script_callbacks.fire("app_started", None, app)
    return app, runner
