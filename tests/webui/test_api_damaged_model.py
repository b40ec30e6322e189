"""A truncated model through the routes: listed as broken, refused with a 503 naming it."""

from __future__ import annotations

import shutil

import pytest

from hyperlora_ext import identity
from hyperlora_ext.models import ModelRoots
from tests.webui.tiny_host import FACE, expect_error, make_client, point_webui_at, tiny_models

BASES = "hyper_lora_modules.safetensors"


@pytest.fixture
def damaged(webui, tmp_path, tmp_path_factory, monkeypatch):
    """The session's tiny models plus ``cut``: a copy of ``tiny`` with its bases file cut short."""
    models, _ = tiny_models(tmp_path_factory)
    shutil.copytree(models, tmp_path / "damaged_models")
    roots = ModelRoots.from_models_dir(tmp_path / "damaged_models")
    shutil.copytree(roots.hyper_lora / "tiny", roots.hyper_lora / "cut")
    bases = roots.hyper_lora / "cut" / BASES
    bases.write_bytes(bases.read_bytes()[:-100])
    point_webui_at(roots.models_dir, identity.IdentityPipeline(roots), monkeypatch)
    return bases


def test_the_models_route_lists_a_truncated_model_as_broken(damaged):
    models = make_client().get("/hyperlora/v1/models").json()
    listed = {m["name"]: m for m in models["hyperlora"]}
    assert listed["tiny"]["complete"] and not listed["cut"]["complete"]
    assert any(
        str(damaged) in p["message"] and "truncated" in p["message"] for p in models["problems"]
    )


def test_encode_with_a_truncated_model_is_a_503_naming_model_and_file(damaged):
    response = make_client().post("/hyperlora/v1/encode", json={"images": [FACE], "model": "cut"})
    body = expect_error(response, 503, "CheckpointError", "cut", BASES, "truncated")
    assert body["field"] == "model"
