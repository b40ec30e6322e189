"""Face analysis with InsightFace's ``antelopev2`` pack: detection, 106 landmarks, embedding.

``models_root`` follows insightface's ``FaceAnalysis(name, root)`` convention: it is the folder that
*contains* ``models/antelopev2`` (for the WebUI, ``<webui>/models/insightface``). The pack's
``*.onnx`` files are found in ``<root>/models/antelopev2/`` or in the nested
``<root>/models/antelopev2/antelopev2/`` the official zip unpacks to; a root that is the
``antelopev2`` folder itself is accepted too. Nothing is ever downloaded.

Only three models are loaded (detector, 2d106 landmarks, recognition), through insightface's own
``model_zoo`` and calls that behave the same on insightface 0.7.3 and 2.1: 2.1 ignores the
detector's ``input_size`` attribute, so the size is passed to ``detect`` on every call.
"""

from __future__ import annotations

import contextlib
import gc
import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hyperlora_ext.errors import CheckpointError, ModelNotFoundError, NoFaceError
from hyperlora_ext.facts import (
    ANTELOPEV2,
    ANTELOPEV2_UNUSED,
    check_face_choice,
    check_face_index,
)

DETECT_SIZES = (640, 512, 384, 256)  # the reference's retry order
EMBED_DETECT_SIZE = 640  # the reference re-detects on the ArcFace crop at this size
MAX_DETECT_SIDE = 2048  # larger photos are downscaled for detection; results are mapped back
PAD_FRACTION = 0.25  # padding retry: neutral border of this fraction of the longer side, each side
PAD_COLOUR = (127, 127, 127)
DET_THRESH = 0.5
NEEDED = {"detection", "landmark_2d_106", "recognition"}


@dataclass
class DetectedFace:
    """One face, in the coordinates of the image given to :meth:`FaceAnalyzer.detect`."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks_106: np.ndarray  # (106, 2) float32
    kps: np.ndarray  # (5, 2) float32: eyes, nose, mouth corners
    embedding: np.ndarray | None = None  # (512,) normed ArcFace embedding, when computed

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, else CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def find_pack(models_root: str | Path) -> Path:
    """The folder holding the pack's ``*.onnx`` files; ModelNotFoundError lists where it looked."""
    from hyperlora_ext.models import antelopev2_folders, find_antelopev2

    folder = find_antelopev2(models_root)
    if folder is not None:
        return folder
    root = Path(models_root).expanduser()
    looked = "\n".join(f"  {c}" for c in antelopev2_folders(root)[:2])
    raise ModelNotFoundError(
        f"InsightFace {ANTELOPEV2} models not found. Looked for *.onnx in:\n{looked}\n"
        f"Download {ANTELOPEV2}.zip (InsightFace model zoo) and unpack it into {root / 'models'}."
    )


class _FaceRecord(dict):
    """What insightface's model ``get(img, face)`` calls read and write: keys as attributes.

    (insightface's own ``Face`` lives in its ``app`` package, whose import is slow.)
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            return None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


class FaceAnalyzer:
    """Lazily loaded antelopev2 face analysis. Thread-safe loading; ``unload()`` frees memory."""

    def __init__(self, models_root: str | Path, providers: list[str] | None = None) -> None:
        self.models_root = Path(models_root)
        self.providers = providers
        self._models: dict[str, Any] | None = None
        self._lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        with self._lock:
            if self._models is None:
                self._models = self._load_models()
            return self._models

    def _load_models(self) -> dict[str, Any]:
        from .insightface_import import model_zoo as import_model_zoo

        model_zoo = import_model_zoo()
        folder = find_pack(self.models_root)
        providers = self.providers or default_providers()
        ctx_id = 0 if "CUDAExecutionProvider" in providers else -1
        models: dict[str, Any] = {}
        for path in sorted(folder.glob("*.onnx")):
            if path.name in ANTELOPEV2_UNUSED:
                continue
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # 0.7.3 prints every session
                    model = model_zoo.get_model(str(path), providers=providers)
            except Exception as exc:  # onnxruntime raises its own types for broken files
                raise CheckpointError(
                    f"InsightFace model file {path} could not be loaded ({exc}). "
                    f"Delete it and unpack {ANTELOPEV2}.zip again."
                ) from exc
            task = getattr(model, "taskname", None)
            if task in NEEDED and task not in models:
                models[task] = model
        missing = NEEDED - set(models)
        if missing:
            raise ModelNotFoundError(
                f"The InsightFace pack in {folder} lacks the {', '.join(sorted(missing))} "
                f"model(s). Re-download {ANTELOPEV2}.zip and unpack it there."
            )
        models["detection"].prepare(
            ctx_id, input_size=(DETECT_SIZES[0],) * 2, det_thresh=DET_THRESH
        )
        models["landmark_2d_106"].prepare(ctx_id)
        models["recognition"].prepare(ctx_id)
        return models

    def load(self) -> None:
        """Load the ONNX sessions now (they load on first use otherwise)."""
        self._load()

    @property
    def loaded(self) -> bool:
        return self._models is not None

    def unload(self) -> None:
        """Drop the ONNX sessions; the next call loads them again."""
        with self._lock:
            self._models = None
        gc.collect()

    # -- detection -----------------------------------------------------------------------------
    def _detect_bgr(self, bgr: np.ndarray, sizes: Sequence[int]) -> list[DetectedFace]:
        models = self._load()
        for size in sizes:
            boxes, kpss = models["detection"].detect(bgr, input_size=(size, size), max_num=0)
            if len(boxes):
                break
        else:
            return []
        faces = []
        for i, row in enumerate(boxes):
            face = _FaceRecord(bbox=row[:4], kps=kpss[i], det_score=row[4])
            models["landmark_2d_106"].get(bgr, face)
            faces.append(
                DetectedFace(
                    box=(float(row[0]), float(row[1]), float(row[2]), float(row[3])),
                    score=float(row[4]),
                    landmarks_106=np.asarray(face.landmark_2d_106, np.float32)[:106],
                    kps=np.asarray(kpss[i], np.float32),
                )
            )
        return faces

    def detect(self, image: Image.Image) -> list[DetectedFace]:
        """All faces in insightface's order (best score first), in ``image`` coordinates.

        Tries detector sizes 640, 512, 384, 256, then once more on the photo padded with a grey
        border (close-ups whose face touches the frame). Photos larger than MAX_DETECT_SIDE are
        downscaled first and the results mapped back.
        """
        image = image if image.mode == "RGB" else image.convert("RGB")
        scale = max(image.size) / MAX_DETECT_SIDE
        if scale > 1:
            small = (max(1, round(image.width / scale)), max(1, round(image.height / scale)))
            scale_xy = (image.width / small[0], image.height / small[1])
            image = image.resize(small, Image.BICUBIC)
        else:
            scale_xy = (1.0, 1.0)
        faces = self._detect_bgr(_bgr(image), DETECT_SIZES)
        offset = (0, 0)
        if not faces:
            pad = max(1, round(max(image.size) * PAD_FRACTION))
            padded = Image.new("RGB", (image.width + 2 * pad, image.height + 2 * pad), PAD_COLOUR)
            padded.paste(image, (pad, pad))
            faces = self._detect_bgr(_bgr(padded), DETECT_SIZES)
            offset = (pad, pad)
        return [_map_face(f, offset, scale_xy) for f in faces]

    # -- embedding -----------------------------------------------------------------------------
    def embedding(self, crop: Image.Image, fallback_kps: np.ndarray | None = None) -> np.ndarray:
        """(512,) float32 L2-normalised ArcFace embedding of the face in ``crop``.

        Like the reference, the face is re-detected on the crop at 640. With several faces the one
        nearest the crop centre is used (the crop is centred on the chosen face). When none is
        found, ``fallback_kps`` (5 keypoints in crop coordinates) align the crop instead.
        """
        models = self._load()
        crop = crop if crop.mode == "RGB" else crop.convert("RGB")
        bgr = _bgr(crop)
        boxes, kpss = models["detection"].detect(
            bgr, input_size=(EMBED_DETECT_SIZE,) * 2, max_num=0
        )
        if len(boxes):
            centres = (boxes[:, :2] + boxes[:, 2:4]) / 2 - np.array(crop.size) / 2
            kps = kpss[int(np.argmin((centres**2).sum(axis=1)))]
        elif fallback_kps is not None:
            kps = np.asarray(fallback_kps, np.float32)
        else:
            raise NoFaceError(
                "the face was not found again in its enlarged crop, so no ArcFace embedding "
                "could be computed. Try a sharper, more frontal photo."
            )
        face = _FaceRecord(kps=kps)
        models["recognition"].get(bgr, face)
        emb = np.asarray(face.embedding, np.float32).reshape(-1)
        return emb / np.linalg.norm(emb)


def choose_face(faces: Sequence[DetectedFace], choice: str = "largest", index: int = 0) -> int:
    """Index into ``faces`` of the face to use.

    ``largest``: biggest box; ``best_score``: highest detector score; ``index``: the ``index``-th
    face counting from the left (0 = leftmost). Raises NoFaceError when there is none to choose.
    """
    choice, index = check_face_choice(choice), check_face_index(index)
    if not faces:
        raise NoFaceError("no face was found, so none can be chosen.")
    if choice == "largest":
        return max(range(len(faces)), key=lambda i: faces[i].area)
    if choice == "best_score":
        return max(range(len(faces)), key=lambda i: faces[i].score)
    left_to_right = sorted(range(len(faces)), key=lambda i: faces[i].box[0])
    if index >= len(faces):
        raise NoFaceError(
            f"face number {index} (counting from 0, left to right) was requested but only "
            f"{len(faces)} face(s) were found. Pick a number from 0 to {len(faces) - 1}."
        )
    return left_to_right[index]


def face_embedding(analyzer: FaceAnalyzer, image: Image.Image, face: DetectedFace) -> np.ndarray:
    """The ArcFace embedding of ``face`` in ``image``, as the reference computes it: the face is
    re-detected on its ArcFace crop (twice the face box); its own keypoints align the crop when it
    is not found again."""
    from hyperlora_ext.encoders.preprocess import arcface_crop, crop_origin, face_box

    origin = np.array(crop_origin(face_box(face.landmarks_106).box(scale=2)), np.float32)
    crop = arcface_crop(image, face.landmarks_106)
    return analyzer.embedding(crop, fallback_kps=face.kps - origin)


def _bgr(image: Image.Image) -> np.ndarray:
    import cv2  # an insightface dependency

    return cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)


def scale_face(face: DetectedFace, scale: tuple[float, float]) -> DetectedFace:
    """``face`` in the coordinates of its photo resized by ``scale`` (x, y)."""
    return _map_face(face, (0, 0), scale)


def _map_face(
    face: DetectedFace, offset: tuple[int, int], scale: tuple[float, float]
) -> DetectedFace:
    """From detection-image coordinates (padded and/or downscaled) back to the photo's."""
    if offset == (0, 0) and scale == (1.0, 1.0):
        return face
    off = np.array(offset, np.float32)
    sc = np.array(scale, np.float32)
    x1, y1, x2, y2 = face.box
    return DetectedFace(
        box=(
            (x1 - offset[0]) * scale[0],
            (y1 - offset[1]) * scale[1],
            (x2 - offset[0]) * scale[0],
            (y2 - offset[1]) * scale[1],
        ),
        score=face.score,
        landmarks_106=((face.landmarks_106 - off) * sc).astype(np.float32),
        kps=((face.kps - off) * sc).astype(np.float32),
    )
