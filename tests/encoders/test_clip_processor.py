"""clip_pixel_values must equal transformers' PIL-based CLIPImageProcessor (openai ViT-L/14)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hyperlora_ext.encoders.clip_processor import clip_pixel_values


@pytest.fixture(scope="module")
def processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": 224},
        resample=3,
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
        do_convert_rgb=True,
    )


def _photo(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]
    return Image.fromarray(noise // 2 + ramp // 2).convert(mode)


@pytest.mark.parametrize(
    ("w", "h", "mode"),
    [(224, 224, "RGB"), (301, 301, "RGB"), (640, 480, "RGB"), (333, 517, "RGB"),
     (100, 90, "RGB"), (257, 257, "L")],
)  # fmt: skip
def test_equals_transformers_clip_image_processor(processor, w, h, mode):
    image = _photo(w, h, mode, seed=w + h)
    ours = clip_pixel_values(image)
    theirs = processor(images=image, return_tensors="pt").pixel_values
    assert ours.shape == (1, 3, 224, 224) and ours.dtype == torch.float32
    assert torch.equal(ours, theirs)


def test_grey_input_gives_three_equal_channels():
    x = clip_pixel_values(_photo(256, 256, "L"))
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    raw = x * std + mean
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-5)
    assert torch.allclose(raw[:, 0], raw[:, 2], atol=1e-5)
