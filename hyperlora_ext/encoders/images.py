"""Decode and normalise the photos users hand us, whatever form they come in, into RGB PIL images.

Every failure raises :class:`ImageError` naming the image (its label), what was wrong, what to do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hyperlora_ext.errors import ImageError, ImageTooLargeError
from hyperlora_ext.facts import DATA_URL, MAX_IMAGE_BYTES, image_too_large

MAX_PIXELS = 64_000_000  # refuse larger images (decompression bombs, absurd scans)
# Photos are analysed at most this large: ordinary photos (up to 16 MP) keep every pixel, larger
# ones are reduced while decoding, so one photo never holds more than ~50 MB of pixels.
WORK_SIDE = 4096
# A JPEG larger than WORK_SIDE is decoded at a DCT scale (1/2, 1/4, 1/8: nearly free) whose
# result may fall to this share of WORK_SIDE instead of being decoded in full and resized: an
# 8000 px photo becomes 4000 px while decoding, not 64 MP resized to 4096. The faces need far less
# (detection at 640 px, crops ending at 112-512 px).
DRAFT_FLOOR = 0.75
BACKGROUND = (127, 127, 127)  # neutral grey behind transparent pixels (the reference's fill colour)
# Text that starts or ends like a file path or an address. Base64 can look like that too (JPEG
# base64 starts "/9j/"), so it counts only for text that does not decode to an image.
_SERVER_PATH = re.compile(r"^(?:[A-Za-z]:[\\/]|[/\\~.]|file:|https?://)|[\\/].*\.\w{2,5}$")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_PATHLIKE = re.compile(r"[/\\]|\.\w{1,5}$")  # a separator, or a file extension at the end
_SUPPORTED = "JPEG, PNG, WebP, BMP, GIF or TIFF"


def source_name(source: Any) -> str | None:
    """A short human name for a source (its file name), or None when it has none."""
    if isinstance(source, (tuple, list)) and source:
        return source_name(source[0])
    if isinstance(source, Path):
        return source.name
    if isinstance(source, str) and not source.startswith("data:") and len(source) < 1024:
        return os.path.basename(source) if os.path.splitext(source)[1] else None
    name = getattr(source, "name", None) or getattr(source, "filename", None)
    if isinstance(name, str) and name:
        return os.path.basename(name)
    return None


def image_label(index: int, source: Any) -> str:
    """'image 2 (alice.jpg)' style label, 1-based, for messages."""
    name = source_name(source)
    return f"image {index + 1} ({name})" if name else f"image {index + 1}"


def load_image(source: Any, label: str, max_side: int | None = None) -> Image.Image:
    """Decode ``source`` into a fully loaded RGB image (EXIF orientation applied).

    With ``max_side``, larger photos come back reduced to it (JPEGs are decoded reduced, down to
    ``DRAFT_FLOOR`` of it, so the full-size pixels never exist); ``image.info["scale"]`` is then
    original size / returned size.
    """
    image = _open(source, label)
    _check_size(image, label)
    original = max(image.size)
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)  # animated: the first frame
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # our own limit applies, see _check_size
            if max_side and original > max_side and image.format == "JPEG":
                factor = max_side * DRAFT_FLOOR / original
                image.draft("RGB", (round(image.width * factor), round(image.height * factor)))
            image.load()
            image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(
            f"{label}: the image data is corrupt or truncated ({exc}). "
            "Re-export or re-download the photo and try again."
        ) from exc
    image = _to_rgb(image, label)
    if max_side and max(image.size) > max_side:
        factor = max_side / max(image.size)
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        image = image.resize(size, Image.BICUBIC, reducing_gap=3.0)
    if max(image.size) != original:
        image.info["scale"] = original / max(image.size)
    return image


def decode_base64_image(text: str, label: str) -> bytes:
    """The file bytes of base64 text or of a ``data:image/...;base64,`` URL; ImageError else."""
    if DATA_URL.match(text):
        text = text.split(",", 1)[1]
    text = "".join(text.split())
    if not text:
        raise ImageError(f"{label}: the image is an empty string. Upload a photo instead.")
    data = _b64decode(text, label)
    if not data:
        raise ImageError(f"{label}: the image is empty")
    return data


def looks_like_server_path(text: str) -> bool:
    """True for text shaped like a file path or an address (see _SERVER_PATH)."""
    return len(text) < 4096 and "\n" not in text and bool(_SERVER_PATH.search(text.strip()))


def is_image_data(data: bytes) -> bool:
    """True when Pillow recognises ``data`` as an image file (reads the header only)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.open(io.BytesIO(data)).close()
    except Exception:  # any failure to identify the bytes is the answer
        return False
    return True


def image_digest(image: Image.Image) -> str:
    """sha256 over mode, size and pixels: a cache key that ignores file names and metadata."""
    h = hashlib.sha256(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def _open(source: Any, label: str) -> Image.Image:
    if isinstance(source, (tuple, list)) and len(source) == 2 and _is_caption(source[1]):
        source = source[0]  # gradio gallery item: (image, caption)
    if source is None:
        raise ImageError(f"{label}: no image was given. Upload a photo or remove the empty slot.")
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source, label)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(source), label)
    if isinstance(source, Path):
        return _from_file(source, label)
    if isinstance(source, str):
        return _from_string(source, label)
    if isinstance(source, dict):  # gradio FileData, ImageEditor ("composite"), sketch ("image")
        for key in ("path", "name", "url", "composite", "image"):
            if source.get(key) is not None:
                return _open(source[key], label)
    name = getattr(source, "name", None)
    if isinstance(name, str) and name:  # gradio 3 temp-file wrapper
        return _from_file(Path(name), label)
    raise ImageError(
        f"{label}: unsupported input of type {type(source).__name__}. "
        "Pass a PIL image, a numpy array, image bytes, a file path or a base64 string."
    )


def _is_caption(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _from_string(text: str, label: str) -> Image.Image:
    _check_base64_length(text, label, MAX_IMAGE_BYTES)
    if DATA_URL.match(text) or not text.strip():
        return _from_bytes(decode_base64_image(text, label), label)
    if len(text) < 4096 and _is_file(text):
        return _from_file(Path(text), label)
    compact = "".join(text.split())
    looks_like_path = len(text) < 4096 and "\n" not in text and bool(_PATHLIKE.search(text))
    if looks_like_path and not (_BASE64.fullmatch(compact) and len(compact) % 4 == 0):
        raise ImageError(f"{label}: file not found: {text}. Check the path or upload the photo.")
    return _from_bytes(_b64decode(compact, label), label)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # name too long, NUL byte, ...
        return False


def _b64decode(text: str, label: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(
            f"{label}: not valid base64 image data ({exc}), nor an existing file. Send the "
            "file's bytes as base64 or as a data:image/...;base64, URL."
        ) from exc


def _from_file(path: Path, label: str) -> Image.Image:
    if not path.is_file():
        raise ImageError(f"{label}: file not found: {path}. Check the path or upload the photo.")
    if path.stat().st_size > MAX_IMAGE_BYTES:  # refused before reading it
        raise ImageTooLargeError(image_too_large(label))
    return _from_bytes(path.read_bytes(), label)


def _from_bytes(data: bytes, label: str) -> Image.Image:
    if not data:
        raise ImageError(f"{label}: the file is empty (0 bytes). Upload the photo again.")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLargeError(image_too_large(label))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError(_too_big(label, "its header declares too many pixels")) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"{label}: not a recognised image format. Use a {_SUPPORTED} file."
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(
            f"{label}: the image data is corrupt or truncated ({exc}). "
            "Re-export or re-download the photo and try again."
        ) from exc


def _from_array(array: np.ndarray, label: str) -> Image.Image:
    if array.dtype.kind not in "biuf":  # strings, objects, dates, complex numbers
        raise ImageError(
            f"{label}: an array of {array.dtype} values is not an image. Use numbers: uint8 "
            "0..255, uint16, or floats 0..1."
        )
    if array.ndim in (2, 3) and array.size // (array.shape[2] if array.ndim == 3 else 1) > (
        MAX_PIXELS
    ):
        raise ImageError(_too_big(label, f"an array of shape {array.shape}"))
    a = array
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)  # CHW -> HWC
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or 0 in a.shape:
        raise ImageError(
            f"{label}: array of shape {array.shape} is not an image. "
            "Expected height x width (x 3 or 4 channels)."
        )
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        # like the reference: clip to [0, 1], scale to 255, truncate
        a = (np.clip(np.nan_to_num(a), 0.0, 1.0) * 255).astype(np.uint8)
    elif a.dtype.kind == "u" and a.dtype.itemsize == 2:  # either byte order
        a = _scale16(a)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a))


def _too_big(label: str, detail: str) -> str:
    return (
        f"{label}: image too large ({detail}; the limit is {MAX_PIXELS / 1e6:g} megapixels). "
        "Resize it to a few megapixels before uploading."
    )


def _check_size(image: Image.Image, label: str) -> None:
    w, h = image.size
    if w * h > MAX_PIXELS:
        raise ImageError(_too_big(label, f"{w}x{h} pixels = {w * h / 1e6:.1f} megapixels"))
    if w < 1 or h < 1:
        raise ImageError(f"{label}: the image has no pixels ({w}x{h}). Upload a real photo.")


def _scale16(a: np.ndarray) -> np.ndarray:
    """16-bit samples -> 8 bit (65535 -> 255), rounding."""
    return ((a.astype(np.float64) / 257.0) + 0.5).astype(np.uint8)


def _on_background(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def _wide_to_gray(image: Image.Image) -> Image.Image:
    """Modes I / I;16* / F: scale the value range to 8 bit instead of clipping it like PIL does."""
    a = np.asarray(image)
    if image.mode == "F":
        a = np.nan_to_num(a.astype(np.float64))
        peak = float(a.max(initial=0.0))
        scale = 255.0 if peak <= 1.0 else (1.0 if peak <= 255.0 else 255.0 / 65535.0)
        return Image.fromarray((np.clip(a * scale, 0, 255) + 0.5).astype(np.uint8))
    a = a.astype(np.int64)
    if image.mode.startswith("I;16") or int(a.max(initial=0)) > 255:
        return Image.fromarray(_scale16(np.clip(a, 0, 65535)))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _to_rgb(image: Image.Image, label: str) -> Image.Image:
    mode = image.mode
    try:
        if mode == "RGB":
            return image
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            mode == "P" and "transparency" in image.info
        ):
            return _on_background(image)
        if mode == "F" or mode.startswith("I"):
            return _wide_to_gray(image).convert("RGB")
        if mode == "CMYK":
            return _cmyk_to_rgb(image)
        return image.convert("RGB")  # L, 1, P, YCbCr, LAB, HSV, ...
    except (ValueError, OSError) as exc:
        raise ImageError(
            f"{label}: cannot convert an image of mode {mode} to RGB ({exc}). "
            "Re-save it as an 8-bit RGB JPEG or PNG."
        ) from exc


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """Use the embedded ICC profile when there is one (print CMYK is far from naive inversion)."""
    icc = image.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            return ImageCms.profileToProfile(image, src, dst, outputMode="RGB")
        except Exception:  # broken or unsupported profile: fall back to PIL's conversion
            pass
    return image.convert("RGB")


# ------------------------------------------------------------------------ photos sent by clients
def decode_image_payload(value: Any, label: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The file bytes of a base64 string or ``data:image/...;base64,`` URL; nothing else.

    Raises ImageError (ImageTooLargeError over ``max_bytes``). Server paths and URLs are refused:
    a remote client must not make the server read its own files or fetch addresses.
    """
    if not isinstance(value, str):
        raise ImageError(
            f"{label}: expected a base64 string or a data URL, got {type(value).__name__}"
        )
    path_like = not DATA_URL.match(value) and looks_like_server_path(value)
    _check_base64_length(value, label, max_bytes)
    try:
        data = decode_base64_image(value, label)
    except ImageError:
        if path_like:
            raise ImageError(_PATHS_REFUSED.format(label=label)) from None
        raise
    if len(data) > max_bytes:
        raise ImageTooLargeError(image_too_large(label, max_bytes))
    if path_like and not is_image_data(data):
        raise ImageError(_PATHS_REFUSED.format(label=label))
    return data


def _check_base64_length(text: str, label: str, max_bytes: int) -> None:
    """Refuse base64 text too long for ``max_bytes`` before decoding it (2: the padding)."""
    prefix = DATA_URL.match(text)
    if (len(text) - (prefix.end() if prefix else 0)) * 3 // 4 > max_bytes + 2:
        raise ImageTooLargeError(image_too_large(label, max_bytes))


_PATHS_REFUSED = (
    "{label}: this looks like a file path or an address; paths and URLs are not accepted over "
    "the API. Send the photo itself as base64 or as a data:image/...;base64, URL"
)


def api_images(images: Sequence[Any], max_bytes: int = MAX_IMAGE_BYTES) -> list[bytes]:
    """Decode the photos of an API request (``p.is_api``) so the pipeline never sees a path."""
    return [
        decode_image_payload(image, f"image {i + 1}", max_bytes) for i, image in enumerate(images)
    ]
