"""What refine needs from the program that holds the SDXL checkpoint (the WebUI, or a test).

The host hands over its own UNet, VAE encoder and SDXL text conditioning, so the identity is
trained against exactly the model it will be used with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from hyperlora_ext.refine.schedule import Prediction

Cond = dict[str, torch.Tensor]  # SDXL: "crossattn" (B, 77, 2048) and "vector" (B, 2816)


@dataclass
class RefineModel:
    """The frozen model refine trains against.

    ``denoise(x_t, t, cond)`` runs the UNet on DDPM-scaled noisy latents at integer timesteps
    and returns its raw output (eps or v, as ``prediction`` says). ``encode_images`` maps
    (B, 3, H, W) pixels in [-1, 1] to scaled latents; ``encode_prompts`` gives the conditioning
    rows of a list of prompts. Both run once, before training.
    """

    unet: nn.Module
    denoise: Callable[[torch.Tensor, torch.Tensor, Cond], torch.Tensor]
    encode_images: Callable[[torch.Tensor], torch.Tensor]
    encode_prompts: Callable[[list[str]], Cond]
    alphas_cumprod: torch.Tensor
    prediction: Prediction
    device: torch.device
    dtype: torch.dtype
    checkpoint_hash: str = ""
