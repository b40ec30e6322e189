"""Likeness: how close the largest face of an image is to an identity (ArcFace cosine similarity).

The face is embedded through the crop path of the reference photos
(:func:`~hyperlora_ext.encoders.features.bounded_embedding`), so a reference photo scored against
its own identity gives 1.0. An identity's reference embedding is the L2-normalised mean of its
photos' ArcFace embeddings. Runs wherever the face analyser's ONNX sessions run (CPU or GPU).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hyperlora_ext.encoders.faces import FaceAnalyzer, choose_face
from hyperlora_ext.errors import HyperLoRAError, NoFaceError

EMBEDDING_SIZE = 512


@dataclass(frozen=True)
class Likeness:
    """The score of one image: ``score`` is None when no face was found (``faces`` is then 0)."""

    label: str
    faces: int
    score: float | None

    @property
    def text(self) -> str:
        """``0.62`` or ``no face``, as the infotext shows it."""
        return "no face" if self.score is None else f"{self.score:.2f}"

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.label, "faces": self.faces, "likeness": self.score}


def reference_embedding(embeddings: Any, weights: Sequence[float] | None = None) -> np.ndarray:
    """(512,) float32: the L2-normalised (weighted) mean of N ArcFace embeddings ((N, 512) or
    (512,)); ``weights`` are the photos' relative weights (None: all alike)."""
    rows = np.asarray(embeddings, np.float64).reshape(-1, EMBEDDING_SIZE)
    if not len(rows):
        raise NoFaceError("no face embedding to build the reference from: no usable photo")
    share = np.ones(len(rows)) if weights is None else np.asarray(weights, np.float64)
    mean = (rows * share[:, None]).sum(axis=0) / share.sum()
    norm = float(np.linalg.norm(mean))
    if not math.isfinite(norm) or norm == 0:
        raise HyperLoRAError("the photos' face embeddings cancel out: no reference direction")
    return (mean / norm).astype(np.float32)


def check_reference(value: Any) -> np.ndarray | None:
    """``value`` as a reference embedding, or None when it is not 512 finite numbers."""
    try:
        array = np.asarray(value, np.float32).reshape(-1)
    except (TypeError, ValueError):
        return None
    if array.shape != (EMBEDDING_SIZE,) or not np.isfinite(array).all() or not array.any():
        return None
    return array / np.linalg.norm(array)


def score_image(image: Any, reference: np.ndarray, analyzer: FaceAnalyzer, label: str) -> Likeness:
    """The likeness of the largest face in ``image`` (anything ``load_image`` reads)."""
    faces, embedding = largest_face_embedding(image, analyzer, label)
    return Likeness(label, faces, None if embedding is None else cosine(embedding, reference))


def score_images(
    images: Sequence[Any],
    reference: np.ndarray,
    analyzer: FaceAnalyzer,
    labels: Sequence[str] | None = None,
) -> list[Likeness]:
    """One :class:`Likeness` per image, in order; an unreadable image raises ImageError."""
    from hyperlora_ext.encoders.images import image_label

    labels = labels or [image_label(i, image) for i, image in enumerate(images)]
    return [score_image(im, reference, analyzer, lb) for im, lb in zip(images, labels, strict=True)]


def reference_from_photos(
    images: Sequence[Any], analyzer: FaceAnalyzer, labels: Sequence[str] | None = None
) -> np.ndarray:
    """The reference embedding of photos (largest face of each), without the HyperLoRA model.

    A photo without a face is an error naming it: a reference must be what the user meant.
    """
    from hyperlora_ext.encoders.images import image_label

    if not images:
        raise NoFaceError("no reference photo given: add at least one photo of the person")
    labels = labels or [image_label(i, image) for i, image in enumerate(images)]
    embeddings = []
    for image, label in zip(images, labels, strict=True):
        _, found = largest_face_embedding(image, analyzer, label)
        if found is None:
            raise NoFaceError(f"{label}: no face found in this reference photo; use another one")
        embeddings.append(found)
    return reference_embedding(np.stack(embeddings))


def largest_face_embedding(
    image: Any, analyzer: FaceAnalyzer, label: str
) -> tuple[int, np.ndarray | None]:
    """(faces found, ArcFace embedding of the largest one or None), as for reference photos."""
    from hyperlora_ext.encoders.features import bounded_embedding
    from hyperlora_ext.encoders.images import WORK_SIDE, load_image

    picture = load_image(image, label, WORK_SIDE)
    faces = analyzer.detect(picture)
    if not faces:
        return 0, None
    return len(faces), bounded_embedding(analyzer, picture, faces[choose_face(faces)])[2]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity in float64, clipped to [-1, 1] against rounding."""
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    value = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return max(-1.0, min(1.0, value))
