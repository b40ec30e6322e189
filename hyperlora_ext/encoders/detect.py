"""Faces found in a photo, as the ``/detect`` route reports them: boxes, scores, the choice each
face option would make, and optional face crops (PNG, base64)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from hyperlora_ext.encoders import images
from hyperlora_ext.encoders.faces import choose_face


def detect_faces(analyzer: Any, photo: bytes, label: str, crops: bool, side: int) -> dict:
    """Faces of one photo; sizes and boxes in the photo's own pixels even when it was reduced."""
    image = images.load_image(photo, label, images.WORK_SIDE)
    scale = image.info.get("scale", 1.0)
    faces = analyzer.detect(image)
    ordered = sorted(faces, key=lambda f: f.box[0])  # the order face_index counts in
    entry: dict[str, Any] = {
        "width": round(image.width * scale),
        "height": round(image.height * scale),
        "faces": [],
    }
    for index, face in enumerate(ordered):
        item = {"index": index, "box": [round(float(v) * scale, 1) for v in face.box]}
        item["score"] = round(float(face.score), 4)
        if crops:
            item["crop"] = _png_base64(_face_crop(image, face.box, side))
        entry["faces"].append(item)
    for choice in ("largest", "best_score"):
        entry[choice] = ordered.index(faces[choose_face(faces, choice)]) if faces else None
    return entry


def _face_crop(image: Any, box: Sequence[float], side: int) -> Any:
    """The face box with a margin of half its size, fitted into ``side`` x ``side``."""
    x1, y1, x2, y2 = box
    margin_x, margin_y = (x2 - x1) / 2, (y2 - y1) / 2
    area = (
        max(0, int(x1 - margin_x)),
        max(0, int(y1 - margin_y)),
        min(image.width, int(x2 + margin_x) + 1),
        min(image.height, int(y2 + margin_y) + 1),
    )
    crop = image.crop(area)
    crop.thumbnail((side, side))
    return crop


def _png_base64(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
