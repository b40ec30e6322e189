"""HyperLoRA identity engine for the Stable Diffusion WebUI (A1111 / Forge).

The public API is re-exported here lazily, so ``import hyperlora_ext`` stays light: it does not
import torch-heavy submodules, insightface, onnxruntime, gradio or the WebUI until a name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS = {
    "load_hyperlora": "hyperlora_ext.engine.model",
    "HyperLoRAModel": "hyperlora_ext.engine.model",
    "default_dtype": "hyperlora_ext.engine.model",
    "load_clip_vision": "hyperlora_ext.encoders.clip_encoder",
    "ClipVisionEncoder": "hyperlora_ext.encoders.clip_encoder",
    "id_crops": "hyperlora_ext.encoders.preprocess",
    "clip_pixel_values": "hyperlora_ext.encoders.clip_processor",
    "FaceAnalyzer": "hyperlora_ext.encoders.faces",
    "face_embedding": "hyperlora_ext.encoders.faces",
    "choose_face": "hyperlora_ext.encoders.faces",
    "DetectedFace": "hyperlora_ext.encoders.faces",
    "load_image": "hyperlora_ext.encoders.images",
    "image_digest": "hyperlora_ext.encoders.images",
    "extract_identity_features": "hyperlora_ext.encoders.features",
    "IdentityFeatures": "hyperlora_ext.encoders.features",
    "PhotoReport": "hyperlora_ext.encoders.features",
    "IdentityPipeline": "hyperlora_ext.identity",
    "IdentityOptions": "hyperlora_ext.identity",
    "Identity": "hyperlora_ext.identity_value",
    "ModelRoots": "hyperlora_ext.models",
    "IdentityStore": "hyperlora_ext.store",
    "Likeness": "hyperlora_ext.likeness",
    "score_images": "hyperlora_ext.likeness",
    "reference_embedding": "hyperlora_ext.likeness",
    "reference_from_photos": "hyperlora_ext.likeness",
    "export_lora": "hyperlora_ext.export",
    "HyperLoRAError": "hyperlora_ext.errors",
    "CheckpointError": "hyperlora_ext.errors",
    "ImageError": "hyperlora_ext.errors",
    "NoFaceError": "hyperlora_ext.errors",
    "ModelNotFoundError": "hyperlora_ext.errors",
    "InvalidNameError": "hyperlora_ext.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hyperlora_ext' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
