"""The domain's facts in one place: choices, ranges, limits, devices, package flavours, model files.

Every module that needs one of these imports it from here, so a change is made once. This module
imports only the standard library and :mod:`hyperlora_ext.errors`; ``install.py`` and
``preload.py`` run before the extension's dependencies exist and read it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hyperlora_ext.errors import ArgumentError

MB = 2**20

# ------------------------------------------------------------------------- face choice
FACE_CHOICES = ("largest", "index", "best_score")  # how to pick the face when a photo shows several
# How the accordion shows each face choice; parsing accepts these labels too.
FACE_LABELS = {"largest": "Largest", "index": "Index", "best_score": "Best score"}
MAX_FACE_INDEX = 63  # faces are counted from the left (0 = leftmost); no group photo needs more

# ---------------------------------------------------------------- generation arguments
WEIGHT_RANGE = (-1.5, 1.5)  # the LoRA strength a user may set
SLIDER_RANGE = (-3.0, 3.0)  # the strength of a slider LoRA
RECOMMENDED_WEIGHT = 0.8
TYPICAL_WEIGHTS = (0.75, 0.85)  # the HyperLoRA authors' README: "usually"
WORKFLOW_WEIGHTS = (0.85, 0.9)  # what their five published workflows use
# Weights outside this are far from both and get a note (our judgement, not the authors').
WEIGHT_ADVICE_RANGE = (0.5, 1.1)
PHOTOS = "@photos"  # in a mix or slider written as text: the generation's own photos
ERROR_LABEL = "HyperLoRA error"  # the infotext key, and how console lines and messages start
LORA_SUFFIX = ".safetensors"  # an identity's LoRA file (the Lora tab lists it)
# The words the HyperLoRA models were trained with; prompts get them prepended.
TRIGGER_WORDS = "fcsks fxhks fhyks"

# ------------------------------------------------------------------------ photo limits
MAX_IMAGES = 16  # photos per generation or request
MAX_IMAGE_BYTES = 20 * MB  # file size of one photo
# A mix, and all the photos of one generation or request (its photos, every mix part's and both
# slider sides'): each photo set is one prediction holding the queue, so their total is bounded.
MAX_MIX_PARTS = 8
MAX_TOTAL_IMAGES = 2 * MAX_IMAGES
# A photo sent as text: an optional ``data:image/...;base64,`` prefix, then base64.
DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)

# ----------------------------------------------------------------------------- devices
DEVICES = ("auto", "cpu", "cuda")  # where the encoders and face analysis may run
DTYPES = ("fp32", "bf16", "fp16")  # the encoders' dtypes; the infotext names the one used

# ------------------------------------------------------------------- package flavours
# Distributions that install the same import package: one present satisfies a requirement on any,
# and two present overwrite each other's files.
ONNXRUNTIME_FLAVOURS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-rocm",
    "onnxruntime-silicon",
    "onnxruntime-qnn",
)
OPENCV_FLAVOURS = (
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "opencv-contrib-python-headless",
)


# ------------------------------------------------------------------------- model files
@dataclass(frozen=True)
class FileSpec:
    """One file a model folder must hold, and how to tell that it is the right file."""

    name: str
    tensors: tuple[str, ...] = ()  # names a .safetensors file must contain (header only)
    min_bytes: int = 1  # anything smaller is a broken download (e.g. a Git LFS pointer)
    # Far below the real size: a download smaller than this is an error page or the like.
    download_floor: int = 1


# The released models, the authors' default first: all five official workflows use fidelity.
HYPERLORA_MODELS = ("sdxl_hyper_id_lora_v1_fidelity", "sdxl_hyper_id_lora_v1_edit")
# What each released model is for, in a few words (for model lists and hints).
HYPERLORA_MODEL_NOTES = {
    "sdxl_hyper_id_lora_v1_fidelity": "closest likeness; the authors' default",
    "sdxl_hyper_id_lora_v1_edit": "more editability: follows the prompt more freely",
}
MODULES_JSON = "hyper_lora_modules.json"
BASES_FILE = "hyper_lora_modules.safetensors"
RESAMPLER_FILE = "resampler.safetensors"
ID_PROJECTOR_FILE = "id_projector.safetensors"
HYPERLORA_FILES = (
    FileSpec(MODULES_JSON, download_floor=1024),
    FileSpec(
        BASES_FILE,
        (
            "0.to_q.id_down_basis",
            "0.to_k.id_down_basis",
            "0.to_v.id_up_basis",
            "0.to_out.id_up_basis",
        ),
        download_floor=500 * MB,
    ),
    FileSpec(
        RESAMPLER_FILE,
        ("latents", "proj_in.weight", "proj_in_2.weight", "proj_out.weight"),
        download_floor=50 * MB,
    ),
    FileSpec(
        ID_PROJECTOR_FILE, ("0.weight", "0.bias", "2.weight", "2.bias"), download_floor=5 * MB
    ),
)

DEFAULT_CLIP = "clip_vit_large_14"  # the folder name the official plugin's instructions use
CLIP_L14_WIDTH = 1024
CLIP_L14_LAYERS = 24
CLIP_FILES = (
    FileSpec("config.json", download_floor=100),
    FileSpec(
        "model.safetensors",
        ("vision_model.embeddings.patch_embedding.weight", "vision_model.post_layernorm.weight"),
        download_floor=500 * MB,
    ),
)

ANTELOPEV2 = "antelopev2"
# FaceAnalyzer uses the detector, the 106-point landmarks and the recognition model; the other two
# files belong to the complete pack (other extensions sharing the folder use them).
ANTELOPEV2_SPECS = (
    FileSpec("scrfd_10g_bnkps.onnx", download_floor=5 * MB),
    FileSpec("2d106det.onnx", download_floor=1 * MB),
    FileSpec("glintr100.onnx", download_floor=100 * MB),
    FileSpec("1k3d68.onnx", download_floor=50 * MB),
    FileSpec("genderage.onnx", download_floor=MB // 2),
)
ANTELOPEV2_FILES = tuple(spec.name for spec in ANTELOPEV2_SPECS)
ANTELOPEV2_REQUIRED = ANTELOPEV2_FILES[:3]
ANTELOPEV2_UNUSED = frozenset(ANTELOPEV2_FILES[3:])

# ------------------------------------------------------------------ model architecture
LAYER_NORM_EPS = 1e-5  # of every LayerNorm in the id projector and the resampler


# ------------------------------------------------------------------- validating choices
def too_many_images(count: int, limit: int = MAX_IMAGES) -> str:
    return f"{count} images posted; at most {limit} per request"


def image_too_large(label: str, limit: int = MAX_IMAGE_BYTES) -> str:
    return f"{label}: the image is larger than {limit // MB} MiB; resize it"


def check_face_choice(value: Any, field_name: str = "face") -> str:
    """The face choice as one of FACE_CHOICES; accepts the UI labels ("Best score")."""
    normal = (
        value.strip().lower().replace(" ", "_").replace("-", "_")
        if isinstance(value, str)
        else None
    )
    if normal not in FACE_CHOICES:
        raise ArgumentError(field_name, f"expected one of {', '.join(FACE_CHOICES)}, got {value!r}")
    return normal


def check_face_index(value: Any, field_name: str = "face_index") -> int:
    """The face number (0 = leftmost) as an int in 0..MAX_FACE_INDEX."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(field_name, f"expected a whole number, got {value!r}")
    if not 0 <= value <= MAX_FACE_INDEX:
        raise ArgumentError(field_name, f"{value} is outside 0..{MAX_FACE_INDEX}")
    return value
