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


def count_decoded_alive(monkeypatch) -> list[int]:
    """Patch ``load_image`` (where the pipeline and the routes call it) so that each call records
    how many photos decoded by earlier calls are still in memory; returns those counts."""
    import gc
    import weakref

    from hyperlora_ext.encoders import features, images

    decoded: list[weakref.ref] = []  # PIL images are unhashable: no WeakSet
    alive_at_decode: list[int] = []
    real_load_image = images.load_image

    def tracking_load_image(*args, **kwargs):
        gc.collect()
        alive_at_decode.append(sum(ref() is not None for ref in decoded))
        image = real_load_image(*args, **kwargs)
        decoded.append(weakref.ref(image))
        return image

    monkeypatch.setattr(images, "load_image", tracking_load_image)
    monkeypatch.setattr(features, "load_image", tracking_load_image)
    return alive_at_decode
