"""The tiny model tree of the pipeline tests (a helper module, not a test module); the session
fixture ``roots`` in tests/conftest.py writes it once per session."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from hyperlora_ext.models import ModelRoots
from tests import fake_antelopev2
from tests.encoders._photos import face_photo
from tests.factories import write_tiny_clip, write_tiny_hyperlora

MODEL = "tiny_fidelity"


def write_tree(models: Path) -> ModelRoots:
    """Two tiny HyperLoRA models (kohya and sgm key styles), a tiny CLIP, the fake antelopev2."""
    roots = ModelRoots.from_models_dir(models)
    write_tiny_hyperlora(roots.hyper_lora / MODEL)
    write_tiny_hyperlora(roots.hyper_lora / "tiny_edit", style="sgm", seed=1)
    write_tiny_clip(roots.clip_vit / "clip-vit-large-patch14")
    fake_antelopev2.build(roots.antelopev2)
    return roots


def _photo(shift: int = 0) -> Image.Image:
    return face_photo(faces=((210 + shift, 90, 430 + shift, 390),))
