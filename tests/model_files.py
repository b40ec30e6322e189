"""Model folders written for the tests (a helper module, not a test module): files with the
released names and headers, whole trees, and looking up a doctor check by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from hyperlora_ext.facts import ANTELOPEV2_FILES, CLIP_FILES, HYPERLORA_FILES, FileSpec
from hyperlora_ext.models import ModelRoots
from tests.factories import write_tiny_hyperlora

FIDELITY = "sdxl_hyper_id_lora_v1_fidelity"


# ------------------------------------------------------------------ builders
def write_safetensors(path: Path, names: tuple[str, ...] | list[str], extra: dict | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: np.full((2, 3), i, dtype=np.float16) for i, name in enumerate(names)}
    save_file({**tensors, **(extra or {})}, str(path))
    return path


def write_model_files(folder: Path, specs) -> Path:
    """Small files that pass the registry's and doctor's checks for ``specs``."""
    folder.mkdir(parents=True, exist_ok=True)
    if tuple(specs) == HYPERLORA_FILES:  # files that belong together (doctor checks that)
        write_tiny_hyperlora(folder)
        return folder
    for spec in specs:
        path = folder / spec.name
        if spec.name.endswith(".json"):
            path.write_text(
                '{"lora_unet_a_attn1": {"hidden_size": 8, "cross_attention_dim": null}}'
            )
        elif spec.name.endswith(".safetensors"):
            write_safetensors(path, spec.tensors)
        else:
            path.write_bytes(_TINY_ONNX)
    return folder


def _tiny_onnx() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "tiny", [x], [y])
    return helper.make_model(graph).SerializeToString()


_TINY_ONNX = _tiny_onnx()


def make_hyperlora(roots: ModelRoots, name: str = FIDELITY) -> Path:
    return write_model_files(roots.hyper_lora / name, HYPERLORA_FILES)


def make_clip(roots: ModelRoots, name: str = "clip_vit_large_14") -> Path:
    return write_model_files(roots.clip_vit / name, CLIP_FILES)


def make_antelopev2(roots: ModelRoots, nested: bool = False) -> Path:
    folder = roots.antelopev2 / "antelopev2" if nested else roots.antelopev2
    return write_model_files(folder, [FileSpec(name) for name in ANTELOPEV2_FILES])


def make_clip_file(path: Path, width: int = 1024, layers: int = 24) -> Path:
    """A single-file HuggingFace-format CLIP vision checkpoint with the real ViT shape markers."""
    patch = np.zeros((width, 3, 14, 14), dtype=np.float16)
    names = [f"vision_model.encoder.layers.{i}.mlp.fc1.bias" for i in range(layers)]
    extra = {"vision_model.embeddings.patch_embedding.weight": patch}
    return write_safetensors(path, [*names, "vision_model.post_layernorm.weight"], extra)


def make_tree(models_dir: Path, *, nested: bool = False) -> ModelRoots:
    """A complete install: one HyperLoRA model, the CLIP folder and antelopev2."""
    roots = ModelRoots.from_models_dir(models_dir)
    make_hyperlora(roots)
    make_clip(roots)
    make_antelopev2(roots, nested=nested)
    return roots


def by_name(checks, prefix: str):
    found = [c for c in checks if c.name.startswith(prefix)]
    assert found, f"no check named {prefix}: {[c.name for c in checks]}"
    return found
