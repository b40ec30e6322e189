"""Reference photos -> the identity features HyperLoRA needs (ArcFace embeddings, CLIP pixels).

Each photo is decoded, its faces detected, one chosen, cropped like the reference and encoded.
A photo that cannot be used is reported with the specific reason instead of being dropped
silently; the caller decides whether the rest is enough (``IdentityFeatures.require_usable``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from hyperlora_ext.encoders.clip_processor import clip_pixel_values
from hyperlora_ext.encoders.faces import (
    DetectedFace,
    FaceAnalyzer,
    choose_face,
    face_embedding,
    scale_face,
)
from hyperlora_ext.encoders.images import WORK_SIDE, image_label, load_image
from hyperlora_ext.encoders.preprocess import face_box, id_crops, preview
from hyperlora_ext.errors import ImageError, NoFaceError

THUMBNAIL_SIDE = 256
# The ArcFace crop is twice the face box; it ends at 112 px (and the CLIP crop, half its side, at
# 224 px). Faces whose ArcFace crop would be larger are cropped from a reduced photo, so a huge
# close-up costs no more than this; smaller faces keep the reference's crops pixel for pixel.
MAX_CROP_SIDE = WORK_SIDE
BOX_COLOUR = (0, 220, 0)


@dataclass
class PhotoReport:
    """What happened to one reference photo."""

    label: str
    faces_found: int = 0
    chosen: int | None = None  # index into the detected faces (insightface order)
    box: tuple[float, float, float, float] | None = None  # chosen face, photo pixels
    score: float | None = None
    used: bool = False
    reason: str | None = None  # why it was skipped
    preview: Image.Image | None = None  # CLIP crop at 512x512, as the reference shows it
    thumbnail: Image.Image | None = None  # the photo, small, with the chosen face's box drawn


@dataclass
class IdentityFeatures:
    """Features of the usable photos (N' of them, in input order) and a report per input photo."""

    id_embeds: torch.Tensor  # (N', 512) float32, L2-normalised ArcFace embeddings
    pixel_values: torch.Tensor  # (N', 3, 224, 224) float32, CLIP ViT-L/14 input
    reports: list[PhotoReport] = field(default_factory=list)

    @property
    def usable(self) -> int:
        return int(self.id_embeds.shape[0])

    def require_usable(self) -> IdentityFeatures:
        """Return self, or raise NoFaceError listing why each photo was skipped."""
        if self.usable:
            return self
        if not self.reports:
            raise NoFaceError("No reference photo was given. Upload at least one photo of a face.")
        lines = "\n".join(f"- {r.label}: {r.reason}" for r in self.reports)
        raise NoFaceError(
            f"None of the {len(self.reports)} reference photo(s) could be used:\n{lines}\n"
            "Use clear photos where one face is visible, not too small and not cut off."
        )


def extract_identity_features(
    images: Sequence[Any],
    analyzer: FaceAnalyzer,
    *,
    face_choice: str = "largest",
    face_index: int = 0,
    remove_background: bool = True,
    grayscale: bool = False,
    labels: Sequence[str] | None = None,
) -> IdentityFeatures:
    """Run the whole per-photo pipeline; never raises for a bad photo, reports it instead."""
    embeds: list[np.ndarray] = []
    pixels: list[torch.Tensor] = []
    reports = []
    for i, source in enumerate(images):
        label = labels[i] if labels is not None else image_label(i, source)
        report = PhotoReport(label=label)
        try:
            embed, pixel_values = _one_photo(
                source, analyzer, report, face_choice, face_index, remove_background, grayscale
            )
        except (ImageError, NoFaceError) as exc:  # per-photo problems; missing models raise
            report.reason = unreadable_reason(exc, label)
        else:
            embeds.append(embed)
            pixels.append(pixel_values)
            report.used = True
        reports.append(report)
    return IdentityFeatures(
        id_embeds=torch.from_numpy(np.stack(embeds)) if embeds else torch.zeros(0, 512),
        pixel_values=torch.cat(pixels) if pixels else torch.zeros(0, 3, 224, 224),
        reports=reports,
    )


def _one_photo(
    source: Any,
    analyzer: FaceAnalyzer,
    report: PhotoReport,
    choice: str,
    index: int,
    remove_background: bool,
    grayscale: bool,
) -> tuple[np.ndarray, torch.Tensor]:
    image = load_image(source, report.label, WORK_SIDE)
    faces = analyzer.detect(image)
    report.faces_found = len(faces)
    if not faces:
        raise NoFaceError(
            "no face found (tried 4 detector sizes and a padded retry). Use a photo where the "
            "face is clearly visible, roughly frontal and at least ~64 pixels wide."
        )
    report.chosen = choose_face(faces, choice, index)
    face = faces[report.chosen]
    report.box, report.score = face.box, face.score
    report.thumbnail = thumbnail(image, face.box)

    image, face, embed = bounded_embedding(analyzer, image, face)
    clip_face, _ = id_crops(image, face.landmarks_106, remove_background, grayscale)
    report.preview = preview(clip_face)
    return embed, clip_pixel_values(clip_face)


def bounded_embedding(
    analyzer: FaceAnalyzer, image: Image.Image, face: DetectedFace
) -> tuple[Image.Image, DetectedFace, np.ndarray]:
    """The ArcFace embedding of ``face`` as every reference photo gets it (the likeness score
    uses it too), with the photo and face it was computed on (reduced for huge faces)."""
    image, face = bound_crop_work(image, face)
    return image, face, face_embedding(analyzer, image, face)


def bound_crop_work(image: Image.Image, face: DetectedFace) -> tuple[Image.Image, DetectedFace]:
    """``image`` and ``face`` reduced when the face's ArcFace crop would exceed MAX_CROP_SIDE."""
    left, _, right, _ = face_box(face.landmarks_106).box(scale=2)
    side = float(right - left)
    if side <= MAX_CROP_SIDE:
        return image, face
    factor = MAX_CROP_SIDE / side
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    scale = (size[0] / image.width, size[1] / image.height)
    return image.resize(size, Image.BICUBIC, reducing_gap=3.0), scale_face(face, scale)


def thumbnail(image: Image.Image, box: Sequence[float], side: int = THUMBNAIL_SIDE) -> Image.Image:
    """A small copy of the photo with ``box`` drawn on it, for the UI."""
    scale = min(1.0, side / max(image.size))
    thumb = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
        Image.BILINEAR,
        reducing_gap=2.0,
    )
    width = max(2, round(max(thumb.size) / 100))
    x1, y1, x2, y2 = (v * scale for v in box)
    rect = [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]
    ImageDraw.Draw(thumb).rectangle(rect, outline=BOX_COLOUR, width=width)
    return thumb


def unreadable_reason(exc: Exception, label: str) -> str:
    """The error message without the leading label (the report already carries it)."""
    text = str(exc)
    prefix = f"{label}: "
    return text[len(prefix) :] if text.startswith(prefix) else text
