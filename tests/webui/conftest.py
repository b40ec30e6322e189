"""Fixtures for the WebUI tests: the A1111 double, installed and removed per test."""

from __future__ import annotations

import os

import pytest

from tests.webui import fake_webui

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(autouse=True)
def no_hook_exception_escapes(request):
    """The WebUI logs and swallows exceptions escaping a script hook, so the image looks fine
    while the identity is missing. Here such an exception fails the test, unless the test is
    marked ``hook_exceptions`` (then it reads ``fake_webui.escaped_hook_exceptions`` itself)."""
    fake_webui.escaped_hook_exceptions.clear()
    yield
    escaped = list(fake_webui.escaped_hook_exceptions)
    fake_webui.escaped_hook_exceptions.clear()
    if escaped and request.node.get_closest_marker("hook_exceptions") is None:
        hooks = ", ".join(f"{hook}: {type(error).__name__}: {error}" for hook, error in escaped)
        pytest.fail(f"an exception escaped a script hook (the WebUI would hide it): {hooks}")


def _reset_adapters() -> None:
    from hyperlora_ext.webui import host, services

    host._adapters.clear()
    services._pipeline = services._pipeline_key = None  # each test starts like a fresh process


@pytest.fixture
def webui(tmp_path):
    _reset_adapters()
    handle = fake_webui.install(tmp_path)
    try:
        yield handle
    finally:
        fake_webui.uninstall()
        _reset_adapters()


@pytest.fixture
def webui_19(tmp_path):
    """A1111 1.9 (and 1.8): no ``process_before_every_sampling`` hook."""
    _reset_adapters()
    handle = fake_webui.install(tmp_path, version="1.9")
    try:
        yield handle
    finally:
        fake_webui.uninstall()
        _reset_adapters()


# ------------------------------------------ the tiny host (tests/webui/tiny_host.py)
@pytest.fixture
def session_pipeline(tmp_path_factory):
    from tests.webui.tiny_host import tiny_models

    return tiny_models(tmp_path_factory)[1]


@pytest.fixture
def host(webui, tmp_path_factory, monkeypatch):
    from tests.webui.tiny_host import point_webui_at, tiny_models

    point_webui_at(*tiny_models(tmp_path_factory), monkeypatch)
    return webui


@pytest.fixture
def client(host):
    from tests.webui.tiny_host import make_client

    return make_client()
