"""The reference crop geometry (docs/reference-pipeline.md, "Crops"), pixel for pixel.

From the photo and the face's 106 landmarks it makes the CLIP face (background replaced by grey
through a blurred outline mask, square face-box crop, optional grayscale) and the 2x ArcFace crop.
The released weights were trained on exactly these crops, so the Pillow calls are kept as they are,
including the rounding of ``crop`` against the ``int()`` truncation of ``paste`` (the pasted face
can land one pixel left of / above where it was cut). Arithmetic is float32 on numpy 1 and 2 alike.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

F32 = np.float32
GREY = (127, 127, 127)
MASK_SIZE = 512  # the blurred outline mask is computed at this size
MASK_BLUR = 15  # GaussianBlur radius at MASK_SIZE

# Face outline: jaw from one temple over the chin to the other, then back along both eyebrows.
OUTLINE = (
    1, 9, 10, 11, 12, 13, 14, 15, 16, 2, 3, 4, 5, 6, 7, 8, 0, 24, 23, 22, 21, 20, 19, 18, 32, 31,
    30, 29, 28, 27, 26, 25, 17, 101, 105, 104, 103, 102, 50, 51, 49, 48, 43,
)  # fmt: skip


class FaceBox(NamedTuple):
    """Centre and half side of the square face box, float32."""

    cx: np.float32
    cy: np.float32
    half: np.float32

    def box(self, scale: int = 1) -> tuple[np.float32, ...]:
        """(left, top, right, bottom) of the square ``scale`` times as large, for ``Image.crop``."""
        h = F32(scale) * self.half if scale != 1 else self.half
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)


def as_landmarks(landmarks_106) -> np.ndarray:
    pts = np.asarray(landmarks_106, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[0] < 106 or pts.shape[1] != 2:
        raise ValueError(f"expected 106 (x, y) landmarks, got an array of shape {pts.shape}")
    return pts[:106]


def face_box(landmarks_106) -> FaceBox:
    """Square around all 106 points, 1.5x their extent, shifted up by 1/8 of its half side."""
    pts = as_landmarks(landmarks_106)
    x_min, y_min = pts.min(axis=0)
    x_max, y_max = pts.max(axis=0)
    cx = (x_min + x_max) * F32(0.5)
    cy = (y_min + y_max) * F32(0.5)
    half = max(x_max - x_min, y_max - y_min) * F32(0.75)
    return FaceBox(cx, cy - F32(0.125) * half, half)


def crop_origin(box: tuple) -> tuple[int, int]:
    """Top-left pixel of ``Image.crop(box)``: Pillow rounds float boxes half to even."""
    return round(float(box[0])), round(float(box[1]))


def remove_background(image: Image.Image, landmarks_106) -> Image.Image:
    """The photo with everything outside the blurred face outline replaced by grey."""
    pts = as_landmarks(landmarks_106)[list(OUTLINE)]
    centre = pts.mean(axis=0)
    polygon = (pts - centre) * F32(1.0) + centre  # mask scale 1.0, kept for float equality
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in polygon.tolist()], fill=255)

    cx, cy = centre
    half = max(*(pts.max(axis=0) - pts.min(axis=0))) * F32(0.8)
    box = (cx - half, cy - half, cx + half, cy + half)
    face = image.crop(box)
    soft = mask.crop(box).resize((MASK_SIZE, MASK_SIZE), Image.BICUBIC)
    soft = soft.filter(ImageFilter.GaussianBlur(MASK_BLUR)).resize(face.size, Image.BICUBIC)

    out = Image.new("RGB", image.size, GREY)
    out.paste(face, (int(cx - half), int(cy - half)), soft)  # int(): truncation, as the reference
    return out


def arcface_crop(image: Image.Image, landmarks_106) -> Image.Image:
    """The original photo cropped to twice the face box (black outside), for ArcFace."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    return image.crop(face_box(landmarks_106).box(scale=2))


def id_crops(
    image: Image.Image, landmarks_106, remove_background: bool = True, grayscale: bool = False
) -> tuple[Image.Image, Image.Image]:
    """(clip_face, arcface_crop): the image for the CLIP processor and the crop for ArcFace."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    fb = face_box(landmarks_106)
    source = _remove_background(image, landmarks_106) if remove_background else image
    clip_face = source.crop(fb.box())
    if grayscale:
        clip_face = clip_face.convert("L")
    return clip_face, arcface_crop(image, landmarks_106)


_remove_background = remove_background  # id_crops' argument shadows the function name


def preview(clip_face: Image.Image, size: int = 512) -> Image.Image:
    """The reference's display preview: the CLIP crop at 512x512 (bicubic), as RGB.

    Display only, so big crops are first reduced by an integer factor (``reducing_gap``) for speed.
    """
    return clip_face.resize((size, size), Image.BICUBIC, reducing_gap=3.0).convert("RGB")
