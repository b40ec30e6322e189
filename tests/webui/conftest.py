"""Fixtures for the WebUI tests: the A1111 double, installed and removed per test."""

from __future__ import annotations

import os

import pytest

from tests.webui import fake_webui

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _reset_adapters() -> None:
    from hyperlora_ext.webui import host

    host._adapters.clear()
    host._configured = None  # the settings the process-wide pipeline was built from


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
