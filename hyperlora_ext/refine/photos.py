"""Reference photos -> :class:`FacePhoto` (the face to train on and the photo's weight)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hyperlora_ext.errors import HyperLoRAError, NoFaceError
from hyperlora_ext.refine.crops import FacePhoto


def face_photos(
    analyzer: Any,
    images: Sequence[Any],
    labels: Sequence[str],
    weights: Sequence[float] | None = None,
    face_choice: str = "largest",
    face_index: int = 0,
) -> list[FacePhoto]:
    """Detect the chosen face in each image (PIL); photos without a face are an error."""
    from hyperlora_ext.encoders.faces import choose_face

    weights = list(weights) if weights else [1.0] * len(images)
    if len(weights) != len(images):
        raise HyperLoRAError(f"{len(weights)} photo weight(s) for {len(images)} photo(s)")
    photos = []
    for image, label, weight in zip(images, labels, weights, strict=True):
        faces = analyzer.detect(image)
        try:
            face = faces[choose_face(faces, face_choice, face_index)]
        except NoFaceError as exc:
            hint = "Use a photo where the face is clearly visible."
            raise NoFaceError(f"{label}: {exc} {hint}") from None
        x1, y1, x2, y2 = (float(v) for v in face.box)
        photos.append(FacePhoto(image, (x1, y1, x2, y2), float(weight), label))
    return photos
