"""Fixtures for the face pipeline tests: fake antelopev2 packs built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hyperlora_ext.encoders.faces import FaceAnalyzer
from tests import fake_antelopev2

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CPU = ["CPUExecutionProvider"]


def _pack_root(factory: pytest.TempPathFactory, name: str, **options) -> Path:
    root = factory.mktemp(name)
    fake_antelopev2.build(root / "models" / "antelopev2", **options)
    return root


@pytest.fixture(scope="session")
def pack_root(tmp_path_factory) -> Path:
    """An insightface root: <root>/models/antelopev2/*.onnx (fake, one face per bright region)."""
    return _pack_root(tmp_path_factory, "insightface")


@pytest.fixture(scope="session")
def analyzer(pack_root) -> FaceAnalyzer:
    return FaceAnalyzer(pack_root, providers=CPU)


@pytest.fixture(scope="session")
def split_analyzer(tmp_path_factory) -> FaceAnalyzer:
    """Left and right halves of the detector input are separate faces (scores 0.95 / 0.99)."""
    return FaceAnalyzer(_pack_root(tmp_path_factory, "split", split=True), providers=CPU)


@pytest.fixture(scope="session")
def border_analyzer(tmp_path_factory) -> FaceAnalyzer:
    """Misses faces touching the top or left edge of the detector input, like real detectors."""
    root = _pack_root(tmp_path_factory, "border", reject_border=True)
    return FaceAnalyzer(root, providers=CPU)
