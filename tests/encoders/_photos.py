"""Synthetic test photos for the fake antelopev2 detector (a bright region is a face)."""

from __future__ import annotations

from PIL import Image, ImageDraw

SKIN = (230, 220, 210)
DARK = (30, 30, 30)


def face_photo(
    size: tuple[int, int] = (640, 480),
    faces: tuple[tuple[int, int, int, int], ...] = ((210, 90, 430, 390),),
    mode: str = "RGB",
) -> Image.Image:
    """Dark photo with light ellipses (the fake detector's faces) at the given boxes."""
    image = Image.new("RGB", size, DARK)
    draw = ImageDraw.Draw(image)
    for box in faces:
        draw.ellipse(box, fill=SKIN)
    return image if mode == "RGB" else image.convert(mode)
