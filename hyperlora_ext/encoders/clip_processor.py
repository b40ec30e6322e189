"""CLIP image preprocessing with the openai ViT-L/14 settings, in PIL and numpy.

Equal to transformers' classic (PIL-based) ``CLIPImageProcessor``: shortest edge to 224 with PIL
bicubic on uint8, centre crop 224, ``x * (1/255)`` in float64 stored as float32, then
``(x - mean) / std`` in float32. Written out here so the numbers do not depend on the installed
transformers version or on torchvision (transformers 5 uses a torchvision backend when present).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

SIZE = 224
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def resize_shortest_edge(image: Image.Image, size: int = SIZE) -> Image.Image:
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)  # truncation, as transformers does
    new_size = (size, new_long) if w <= h else (new_long, size)
    return image.resize(new_size, Image.BICUBIC)


def clip_pixel_values(image: Image.Image) -> torch.Tensor:
    """(1, 3, 224, 224) float32 pixel values for CLIP ViT-L/14."""
    image = resize_shortest_edge(image.convert("RGB"))
    a = np.asarray(image)
    top, left = (a.shape[0] - SIZE) // 2, (a.shape[1] - SIZE) // 2
    a = a[top : top + SIZE, left : left + SIZE]
    x = (a * (1 / 255)).astype(np.float32)
    x = (x - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
