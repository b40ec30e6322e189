"""Decoding and normalising user photos: every accepted form and every refusal with its message."""

from __future__ import annotations

import base64
import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from hyperlora_ext.encoders import images
from hyperlora_ext.encoders.images import image_digest, image_label, load_image
from hyperlora_ext.errors import ImageError

LABEL = "image 2 (alice.jpg)"


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def _gradient(size=(40, 30)) -> Image.Image:
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], -1))


def _refused(source, *fragments: str) -> str:
    with pytest.raises(ImageError) as info:
        load_image(source, LABEL)
    msg = str(info.value)
    assert msg.startswith(LABEL + ":"), msg
    for fragment in fragments:
        assert fragment.lower() in msg.lower(), msg
    return msg


def test_sources_decode_to_the_same_rgb_pixels(tmp_path):
    photo = _gradient()
    png = _encode(photo, "PNG")
    path = tmp_path / "alice.png"
    path.write_bytes(png)
    b64 = base64.b64encode(png).decode()
    sources = [
        photo,
        np.asarray(photo),
        np.asarray(photo).astype(np.float32) / 255,
        png,
        bytearray(png),
        path,
        str(path),
        SimpleNamespace(name=str(path)),  # gradio 3 temp-file wrapper
        {"path": str(path)},  # gradio 4 FileData
        {"composite": photo, "layers": []},  # gradio 4 ImageEditor
        (photo, "a caption"),
        b64,
        "data:image/png;base64," + b64,
    ]
    for source in sources:
        out = load_image(source, LABEL)
        assert out.mode == "RGB" and out.size == photo.size
        assert np.array_equal(np.asarray(out), np.asarray(photo)), type(source)


def test_short_base64_with_slashes_is_not_mistaken_for_a_path():
    for value in range(256):
        tiny = Image.new("RGB", (1, 1), (value, 255 - value, 7))
        b64 = base64.b64encode(_encode(tiny, "PNG")).decode()
        if "/" in b64:
            break
    assert "/" in b64
    assert load_image(b64, LABEL).getpixel((0, 0)) == (value, 255 - value, 7)
    wrapped = "data:image/png;base64," + "\n".join(b64[i : i + 20] for i in range(0, len(b64), 20))
    assert load_image(wrapped, LABEL).getpixel((0, 0)) == (value, 255 - value, 7)


def test_float_arrays_follow_the_reference_clip_and_truncation():
    a = np.array([[[-0.5, 0.5, 2.0]]], np.float32)
    assert np.asarray(load_image(a, LABEL)).tolist() == [[[0, 127, 255]]]


def test_exif_orientation_is_applied():
    photo = _gradient((40, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _encode(photo, "PNG", exif=exif)
    out = load_image(data, LABEL)
    assert out.size == (30, 40)
    expected = photo.transpose(Image.Transpose.ROTATE_270)
    assert np.array_equal(np.asarray(out), np.asarray(expected))


def test_alpha_is_composited_on_neutral_grey():
    rgba = Image.new("RGBA", (4, 2), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent
    rgba.putpixel((1, 0), (255, 255, 255, 128))  # half transparent white
    out = np.asarray(load_image(_encode(rgba, "PNG"), LABEL))
    assert out[0, 0].tolist() == [127, 127, 127]
    assert all(190 <= v <= 192 for v in out[0, 1])  # halfway between 127 and 255
    assert out[1, 3].tolist() == [255, 0, 0]
    la = Image.new("LA", (2, 1), (200, 0))
    assert np.asarray(load_image(la, LABEL))[0, 0].tolist() == [127, 127, 127]


def test_palette_with_and_without_transparency():
    p = Image.new("P", (3, 1))
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    out = np.asarray(load_image(_encode(p, "PNG"), LABEL))
    assert out[0, 0].tolist() == [10, 20, 30] and out[0, 1].tolist() == [200, 100, 50]
    out = np.asarray(load_image(_encode(p, "PNG", transparency=0), LABEL))
    assert out[0, 0].tolist() == [127, 127, 127] and out[0, 1].tolist() == [200, 100, 50]


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in naive CMYK
    out = np.asarray(load_image(_encode(cmyk, "JPEG", quality=95), LABEL))
    r, g, b = out[8, 8].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_sixteen_bit_grey_is_scaled_not_clipped():
    values = np.array([[0, 257 * 100, 65535]], np.uint16)
    i16 = Image.fromarray(values)  # mode I;16
    assert i16.mode == "I;16"
    for source in (i16, _encode(i16, "PNG"), values):
        out = np.asarray(load_image(source, LABEL))
        assert out[0, :, 0].tolist() == [0, 100, 255], type(source)
        assert (out[..., 0] == out[..., 1]).all()


def test_int32_and_float_modes_are_scaled():
    i32 = Image.fromarray(np.array([[0, 32768, 65535]], np.int32), "I")
    assert np.asarray(load_image(i32, LABEL))[0, :, 0].tolist() == [0, 128, 255]
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    assert np.asarray(load_image(f, LABEL))[0, :, 0].tolist() == [0, 128, 255]


def test_grey_and_bilevel_become_three_equal_channels():
    grey = Image.fromarray(np.array([[0, 77, 255]], np.uint8), "L")
    assert np.asarray(load_image(grey, LABEL))[0].tolist() == [[0] * 3, [77] * 3, [255] * 3]
    one = Image.new("1", (2, 1), 0)
    one.putpixel((1, 0), 1)
    assert np.asarray(load_image(_encode(one, "PNG"), LABEL))[0].tolist() == [[0] * 3, [255] * 3]


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    r, g, b = np.asarray(load_image(data, LABEL))[4, 4].astype(int)
    assert r > 200 and g < 50 and b < 50


def test_decompression_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    _refused(_encode(Image.new("RGB", (40, 30)), "PNG"), "too large", "40x30", "resize")
    _refused(Image.new("RGB", (40, 30)), "too large")


def test_pillows_own_bomb_error_is_translated(monkeypatch):
    monkeypatch.setattr(
        Image, "MAX_IMAGE_PIXELS", 100
    )  # header > 2x this -> DecompressionBombError
    _refused(_encode(Image.new("RGB", (40, 30)), "PNG"), "too large", "resize")


def test_corrupt_and_truncated_data_are_refused():
    _refused(b"this is not an image at all", "not a recognised image format", "JPEG")
    jpeg = _encode(_gradient((64, 64)), "JPEG")
    _refused(jpeg[: len(jpeg) // 2], "corrupt or truncated", "re-export")
    png = _encode(_gradient((64, 64)), "PNG")
    broken = png[:60] + bytes(len(png) - 60)  # valid header, zeroed data
    _refused(broken, "corrupt or truncated")


def test_empty_missing_and_unsupported_inputs_are_refused(tmp_path):
    _refused(b"", "empty")
    _refused(None, "no image")
    _refused("", "empty")
    _refused(tmp_path / "nope.jpg", "not found", "nope.jpg")
    _refused("/no/such/dir/photo.png", "not found")
    _refused(42, "unsupported input", "int")
    _refused(np.zeros((5, 5, 7), np.uint8), "not an image", "(5, 5, 7)")
    _refused(np.zeros((0, 4, 3), np.uint8), "not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    _refused(empty, "empty")


def test_bad_base64_is_refused():
    _refused("not*base64*at*all", "base64")
    _refused("data:image/png;base64,@@@@", "base64")
    _refused(base64.b64encode(b"hello world").decode(), "not a recognised image format")


def test_labels_and_digest(tmp_path):
    assert image_label(1, tmp_path / "alice.jpg") == "image 2 (alice.jpg)"
    assert image_label(0, Image.new("RGB", (1, 1))) == "image 1"
    assert image_label(2, SimpleNamespace(name="/tmp/gradio/x/bob.png")) == "image 3 (bob.png)"
    a = _gradient()
    assert image_digest(a) == image_digest(a.copy())
    b = a.copy()
    b.putpixel((0, 0), (1, 2, 3))
    assert image_digest(a) != image_digest(b)
    assert image_digest(a) != image_digest(a.convert("L").convert("RGB"))


@pytest.mark.parametrize(
    "array",
    [
        np.array([["a", "b"], ["c", "d"]]),
        np.array([[object(), None]], dtype=object),
        np.array([["2024-01-01"]], dtype="datetime64[D]"),
        np.ones((4, 4, 3), np.complex64),
    ],
)
def test_arrays_of_non_numbers_are_refused_clearly(array):
    _refused(array, "is not an image", "uint8")


def test_big_endian_sixteen_bit_is_scaled_like_little_endian():
    little = np.array([[0, 257 * 128, 65535]], dtype="<u2")
    big = little.astype(">u2")
    expected = np.asarray(load_image(little, LABEL))
    assert np.asarray(load_image(big, LABEL)).tolist() == expected.tolist()
    assert expected[0, :, 0].tolist() == [0, 128, 255]


def test_oversized_arrays_are_refused_before_any_conversion():
    import tracemalloc

    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.float64), (9000, 9000, 3), (0, 0, 0))
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        _refused(huge, "too large")  # a view of one float: converting it would take gigabytes
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB allocated before refusing"


def test_large_photos_are_reduced_while_decoding():
    big = _gradient((6000, 3000))
    for source in (big, _encode(big, "JPEG", quality=80), _encode(big, "PNG")):
        out = load_image(source, LABEL, max_side=images.WORK_SIDE)
        assert out.size == (4096, 2048) and out.info["scale"] == pytest.approx(6000 / 4096)
    small = load_image(_gradient(), LABEL, max_side=images.WORK_SIDE)
    assert small.size == (40, 30) and "scale" not in small.info


def test_a_huge_jpeg_is_decoded_at_a_dct_scale_not_in_full():
    """8000 px: decoded at 1/2 (4000 px) instead of all 32 MP being decoded, then resized."""
    big = _gradient((8000, 4000))
    out = load_image(_encode(big, "JPEG", quality=90), LABEL, max_side=images.WORK_SIDE)
    assert out.size == (4000, 2000) and out.info["scale"] == 2.0
    reference = big.resize(out.size, Image.BICUBIC)  # the same content at the same size
    difference = np.abs(np.asarray(out, np.int16) - np.asarray(reference, np.int16))
    assert difference.mean() < 2.0
    assert load_image(_encode(big, "PNG"), LABEL, max_side=images.WORK_SIDE).size == (4096, 2048)


def test_a_jpeg_within_the_work_side_is_decoded_as_it_is():
    data = _encode(_gradient((4096, 3000)), "JPEG", quality=90)
    out = load_image(data, LABEL, max_side=images.WORK_SIDE)
    assert np.array_equal(np.asarray(out), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_one_data_url_pattern_for_every_decoder():
    data = _encode(_gradient(), "PNG")
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    assert images.decode_base64_image(url, LABEL) == data
    assert images.decode_image_payload(url, LABEL) == data


def test_photos_over_the_size_limit_are_refused_where_they_are_read(tmp_path):
    from hyperlora_ext.errors import ImageTooLargeError
    from hyperlora_ext.facts import MAX_IMAGE_BYTES

    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (MAX_IMAGE_BYTES + 1))
    for photo in (
        str(big),
        big,
        b"\0" * (MAX_IMAGE_BYTES + 1),
        "A" * (MAX_IMAGE_BYTES * 4 // 3 + 8),
        "data:image/png;base64," + "A" * (MAX_IMAGE_BYTES * 4 // 3 + 8),
    ):
        with pytest.raises(ImageTooLargeError, match="image 2: the image is larger than 20 MiB"):
            load_image(photo, "image 2")
