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
from hyperlora_ext.errors import ArgumentError, HyperLoRAError, NoFaceError

EMBEDDING_SIZE = 512
DAMAGED_EMBEDDING = (
    "{what} is zero or not a finite number, which no real face gives: the face recognition "
    "model (antelopev2 glintr100.onnx) is damaged; re-download it (python -m hyperlora_ext doctor)"
)


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
    if not np.isfinite(rows).all():
        raise HyperLoRAError(DAMAGED_EMBEDDING.format(what="a photo's face embedding"))
    from hyperlora_ext.engine.fusion import check_weights

    checked = check_weights(weights, len(rows), field="weights")
    share = np.ones(len(rows)) if checked is None else np.asarray(checked, np.float64)
    share = share / share.max()  # relative weights: 5e-324 must not underflow to nothing
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
    if embedding is None:
        return Likeness(label, faces, None)
    try:
        return Likeness(label, faces, cosine(embedding, reference))
    except HyperLoRAError as error:
        raise HyperLoRAError(f"{label}: {error}") from None


def score_images(
    images: Sequence[Any],
    reference: np.ndarray,
    analyzer: FaceAnalyzer,
    labels: Sequence[str] | None = None,
) -> list[Likeness]:
    """One :class:`Likeness` per image, in order; an unreadable image raises ImageError."""
    labels = image_labels(images, labels)
    return [score_image(im, reference, analyzer, lb) for im, lb in zip(images, labels, strict=True)]


def reference_from_photos(
    images: Sequence[Any], analyzer: FaceAnalyzer, labels: Sequence[str] | None = None
) -> np.ndarray:
    """The reference embedding of photos (largest face of each), without the HyperLoRA model.

    A photo without a face is an error naming it: a reference must be what the user meant.
    """
    if not images:
        raise NoFaceError("no reference photo given: add at least one photo of the person")
    labels = image_labels(images, labels)
    embeddings = []
    for image, label in zip(images, labels, strict=True):
        _, found = largest_face_embedding(image, analyzer, label)
        if found is None:
            raise NoFaceError(f"{label}: no face found in this reference photo; use another one")
        embeddings.append(found)
    return reference_embedding(np.stack(embeddings))


def image_labels(images: Sequence[Any], labels: Sequence[str] | None = None) -> list[str]:
    """``labels`` checked (one per image), or by default 'image 2 (alice.jpg)' style labels that
    name the file where the image is a path; ArgumentError naming ``labels`` otherwise."""
    from hyperlora_ext.encoders.images import image_label

    if not labels:
        return [image_label(i, image) for i, image in enumerate(images)]
    if isinstance(labels, (str, bytes)) or len(labels) != len(images):
        count = 1 if isinstance(labels, (str, bytes)) else len(labels)
        raise ArgumentError(
            "labels", f"{count} label(s) given for {len(images)} image(s): give one per image, "
            "in the same order, or none"
        )  # fmt: skip
    return [str(label) for label in labels]


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
    """Cosine similarity in float64, clipped to [-1, 1] against rounding.

    HyperLoRAError for a zero or non-finite vector: its cosine is undefined (clamping the NaN it
    gives would report a perfect match).
    """
    a, b = _unit(a), _unit(b)
    if a.shape != b.shape:
        raise HyperLoRAError(f"face embeddings of {a.size} and {b.size} numbers cannot be compared")
    return max(-1.0, min(1.0, float(a @ b)))


def _unit(vector: Any) -> np.ndarray:
    values = np.asarray(vector, np.float64).reshape(-1)
    peak = float(np.abs(values).max()) if values.size else 0.0
    if not math.isfinite(peak) or peak == 0:  # NaN anywhere makes the peak NaN
        raise HyperLoRAError(DAMAGED_EMBEDDING.format(what="a face embedding"))
    values = values / peak  # first: the norm of huge values must not overflow
    return values / np.linalg.norm(values)
