"""Square face crops and face/hair loss masks, for refine training and the kohya kit.

A crop is about twice the face box (the authors' recipe crops the face region to 768²), centred
on the face; jittered variants change its scale and centre a little (no flip: faces are not
symmetric). The mask weighs the face and hair 1, the rest of the photo ``background_weight`` and
padding outside the photo 0, so backgrounds and clothes stay out of the identity.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw

from hyperlora_ext.errors import HyperLoRAError

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in photo pixels

CROP_SCALE = 2.0  # crop side / longer face-box side
JITTER_SCALE = 0.1  # crop side varies by up to ±10 %
JITTER_SHIFT = 0.05  # centre moves by up to ±5 % of the crop side
BACKGROUND_WEIGHT = 0.1


@dataclass(frozen=True)
class FacePhoto:
    """One training photo: the image, the face to train on and the photo's weight."""

    image: Image.Image
    box: Box
    weight: float = 1.0
    label: str = "photo"


@dataclass(frozen=True)
class Crop:
    """One training image and its loss mask (mode ``L``, 255 = weight 1), both ``size``²."""

    image: Image.Image
    mask: Image.Image
    weight: float  # the photo's weight shared among its crops
    label: str


def check_photo(photo: FacePhoto) -> None:
    x1, y1, x2, y2 = photo.box
    if not (x2 > x1 and y2 > y1):
        raise HyperLoRAError(f"{photo.label}: the face box {photo.box} is empty")
    if not photo.weight > 0:
        raise HyperLoRAError(f"{photo.label}: the photo weight must be above 0 (is {photo.weight})")


def crop_box(box: Box, scale: float = CROP_SCALE, shift: tuple[float, float] = (0.0, 0.0)) -> Box:
    """The square crop around ``box``: side ``scale`` × the longer face side, centre shifted by
    ``shift`` (fractions of the side)."""
    x1, y1, x2, y2 = box
    side = scale * max(x2 - x1, y2 - y1)
    cx = (x1 + x2) / 2 + shift[0] * side
    cy = (y1 + y2) / 2 + shift[1] * side
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def face_mask(photo: FacePhoto, region: Box, size: int, background_weight: float) -> Image.Image:
    """The loss mask of the crop ``region`` of ``photo``, resized to ``size``²."""
    x1, y1, x2, y2 = photo.box
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 - 0.2 * h  # raised: the hair is above the face box
    head = (cx - 0.8 * w, cy - 0.9 * h, cx + 0.8 * w, cy + 0.9 * h)
    side = region[2] - region[0]
    k = size / side

    def to_crop(b: Box) -> list[float]:
        return [(b[0] - region[0]) * k, (b[1] - region[1]) * k,
                (b[2] - region[0]) * k, (b[3] - region[1]) * k]  # fmt: skip

    mask = Image.new("L", (size, size), round(255 * background_weight))
    ImageDraw.Draw(mask).ellipse(to_crop(head), fill=255)
    # Padding outside the photo weighs 0, also where the head ellipse reaches into it.
    inside = Image.new("L", (size, size), 0)
    ImageDraw.Draw(inside).rectangle(to_crop((0, 0, photo.image.width, photo.image.height)),
                                     fill=255)  # fmt: skip
    return ImageChops.multiply(mask, inside)


def make_crops(
    photo: FacePhoto,
    size: int = 768,
    jitters: int = 2,
    seed: int = 0,
    background_weight: float = BACKGROUND_WEIGHT,
) -> list[Crop]:
    """The centred crop of ``photo`` plus ``jitters`` seeded scale/shift variants."""
    check_photo(photo)
    rng = random.Random(f"{seed}:{photo.label}")
    variants = [(CROP_SCALE, (0.0, 0.0))]
    for _ in range(jitters):
        scale = CROP_SCALE * (1 + rng.uniform(-JITTER_SCALE, JITTER_SCALE))
        shift = (rng.uniform(-JITTER_SHIFT, JITTER_SHIFT), rng.uniform(-JITTER_SHIFT, JITTER_SHIFT))
        variants.append((scale, shift))
    image = photo.image.convert("RGB")
    crops = []
    for scale, shift in variants:
        region = crop_box(photo.box, scale, shift)
        picture = _square(image, region, size)
        mask = face_mask(photo, region, size, background_weight)
        crops.append(Crop(picture, mask, photo.weight / len(variants), photo.label))
    return crops


def _clipped(region: Box, image: Image.Image) -> Box:
    return (max(0.0, region[0]), max(0.0, region[1]),
            min(float(image.width), region[2]), min(float(image.height), region[3]))  # fmt: skip


def _square(image: Image.Image, region: Box, size: int) -> Image.Image:
    """``region`` of ``image`` as a ``size``² picture; parts outside the photo are grey."""
    inner = _clipped(region, image)
    if inner == region:
        return image.resize((size, size), Image.LANCZOS, box=region)
    k = size / (region[2] - region[0])
    left, top = round((inner[0] - region[0]) * k), round((inner[1] - region[1]) * k)
    width = max(1, round((inner[2] - inner[0]) * k))
    height = max(1, round((inner[3] - inner[1]) * k))
    square = Image.new("RGB", (size, size), (127, 127, 127))
    square.paste(image.resize((width, height), Image.LANCZOS, box=inner), (left, top))
    return square
