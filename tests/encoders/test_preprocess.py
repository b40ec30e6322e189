"""Reference crop geometry on a real photo, against an independent numpy re-derivation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from skimage import data

from hyperlora_ext.encoders.preprocess import face_box, id_crops
from tests import fake_antelopev2

# The 41-point outline, written out again here on purpose (docs/reference-pipeline.md).
OUTLINE = [
    1, 9, 10, 11, 12, 13, 14, 15, 16, 2, 3, 4, 5, 6, 7, 8, 0, 24, 23, 22, 21, 20, 19, 18,
    32, 31, 30, 29, 28, 27, 26, 25, 17, 101, 105, 104, 103, 102, 50, 51, 49, 48, 43,
]  # fmt: skip
f32 = np.float32


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())  # 512x512 RGB, public domain


def landmarks(cx: float, cy: float, radius: float, seed: int = 0) -> np.ndarray:
    """A fixed, slightly irregular 106-point face layout around (cx, cy)."""
    jitter = np.random.default_rng(seed).uniform(-0.03, 0.03, (106, 2))
    return ((fake_antelopev2.landmark_layout() + jitter) * radius + [cx, cy]).astype(np.float32)


def np_crop(a: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Crop with zero fill outside the array."""
    out = np.zeros((y1 - y0, x1 - x0, *a.shape[2:]), a.dtype)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x1, a.shape[1]), min(y1, a.shape[0])
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = a[sy0:sy1, sx0:sx1]
    return out


def np_paste(dst: np.ndarray, src: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend src into dst at (x, y) with Pillow's 8-bit arithmetic, clipped to dst."""
    h, w = mask.shape
    dx0, dy0, dx1, dy1 = max(x, 0), max(y, 0), min(x + w, dst.shape[1]), min(y + h, dst.shape[0])
    s = src[dy0 - y : dy1 - y, dx0 - x : dx1 - x].astype(np.int64)
    m = mask[dy0 - y : dy1 - y, dx0 - x : dx1 - x, None].astype(np.int64)
    d = dst[dy0:dy1, dx0:dx1].astype(np.int64)
    t = d * (255 - m) + s * m + 128
    dst[dy0:dy1, dx0:dx1] = ((t >> 8) + t) >> 8


def rounded_box(cx, cy, half) -> tuple[int, int, int, int]:
    return tuple(int(np.round(v)) for v in (cx - half, cy - half, cx + half, cy + half))


def expected_crops(photo: Image.Image, lm: np.ndarray, remove_bg: bool, grey: bool):
    a = np.asarray(photo)
    lo, hi = lm.min(0), lm.max(0)
    cx, cy = (lo + hi) * f32(0.5)
    half = (hi - lo).max() * f32(0.75)
    cy = cy - f32(0.125) * half
    if remove_bg:
        pts = lm[OUTLINE]
        mx, my = pts.mean(0)
        mask = Image.new("L", photo.size, 0)
        ImageDraw.Draw(mask).polygon([(int(x), int(y)) for x, y in pts], fill=255)
        h2 = (pts.max(0) - pts.min(0)).max() * f32(0.8)
        box = rounded_box(mx, my, h2)
        face = np_crop(a, *box)
        m = Image.fromarray(np_crop(np.asarray(mask), *box))
        m = m.resize((512, 512), Image.BICUBIC).filter(ImageFilter.GaussianBlur(15))
        m = np.asarray(m.resize((face.shape[1], face.shape[0]), Image.BICUBIC))
        composite = np.full_like(a, 127)
        np_paste(composite, face, m, int(mx - h2), int(my - h2))  # truncated, not rounded
    else:
        composite = a
    clip = np_crop(composite, *rounded_box(cx, cy, half))
    if grey:  # ITU-R 601-2 luma, as Pillow's convert('L')
        clip = (clip.astype(np.int64) @ [19595, 38470, 7471] + 0x8000) >> 16
    arc = np_crop(a, *rounded_box(cx, cy, f32(2) * half))
    return clip.astype(np.uint8), arc


CASES = [  # (cx, cy, radius, seed): inside the photo, and half outside its top-left corner
    (215.3, 150.7, 70.0, 0),
    (216.1, 151.2, 71.3, 1),
    (30.4, 20.8, 60.0, 2),
    (480.6, 300.2, 55.5, 3),
]


@pytest.mark.parametrize(("cx", "cy", "radius", "seed"), CASES)
@pytest.mark.parametrize(("remove_bg", "grey"), [(True, False), (False, False), (True, True)])
def test_id_crops_match_independent_computation(astronaut, cx, cy, radius, seed, remove_bg, grey):
    lm = landmarks(cx, cy, radius, seed)
    clip, arc = id_crops(astronaut, lm, remove_background=remove_bg, grayscale=grey)
    want_clip, want_arc = expected_crops(astronaut, lm, remove_bg, grey)
    assert clip.mode == ("L" if grey else "RGB") and arc.mode == "RGB"
    assert np.array_equal(np.asarray(clip), want_clip)
    assert np.array_equal(np.asarray(arc), want_arc)


def test_cases_cover_the_one_pixel_paste_offset():
    """The paste lands one pixel off (crop rounds, paste truncates) in some cases, not all."""
    shifted = []
    for cx, cy, radius, seed in CASES:
        pts = landmarks(cx, cy, radius, seed)[OUTLINE]
        mx, my = pts.mean(0)
        h2 = (pts.max(0) - pts.min(0)).max() * f32(0.8)
        shifted.append(
            (round(float(mx - h2)) != int(mx - h2), round(float(my - h2)) != int(my - h2))
        )
    assert any(x or y for x, y in shifted) and not all(x and y for x, y in shifted)


def test_background_removal_greys_the_background_and_keeps_the_face(astronaut):
    lm = landmarks(215.3, 150.7, 70.0)
    clip, _ = id_crops(astronaut, lm)
    plain, _ = id_crops(astronaut, lm, remove_background=False)
    a, b = np.asarray(clip).astype(int), np.asarray(plain).astype(int)
    assert (a[0, 0] == 127).all() and (a[-1, -1] == 127).all()  # corners: outside the outline
    c = a.shape[0] // 2
    assert np.abs(a[c - 5 : c + 5, c - 5 : c + 5] - 127).mean() > 10  # the face shows through
    assert not np.array_equal(a, b)


def test_face_box_geometry():
    lm = np.zeros((106, 2), np.float32)
    lm[:, 0] = np.linspace(100, 200, 106)  # width 100
    lm[:, 1] = np.linspace(50, 130, 106)  # height 80
    fb = face_box(lm)
    assert (fb.cx, fb.half) == (150.0, 75.0)
    assert fb.cy == pytest.approx(90.0 - 75.0 / 8)
    assert all(isinstance(v, np.float32) for v in fb)
    with pytest.raises(ValueError, match="106"):
        face_box(np.zeros((5, 2)))
