"""The DDPM forward process and training targets (eps or v) the SDXL UNet is trained with.

``x_t = sqrt(ā_t)·x_0 + sqrt(1-ā_t)·ε``; the target is ``ε`` for eps-prediction checkpoints and
``v = sqrt(ā_t)·ε - sqrt(1-ā_t)·x_0`` for v-prediction ones. Computed in float32 whatever the
UNet's dtype.
"""

from __future__ import annotations

from typing import Literal

import torch

Prediction = Literal["eps", "v"]


def _coefficients(alphas_cumprod: torch.Tensor, t: torch.Tensor, ndim: int):
    alpha = alphas_cumprod.to(t.device, torch.float32)[t].reshape(-1, *([1] * (ndim - 1)))
    return alpha.sqrt(), (1 - alpha).sqrt()


def noisy_latents(
    x0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    signal, sigma = _coefficients(alphas_cumprod, t, x0.ndim)
    return signal * x0.float() + sigma * noise.float()


def training_target(
    x0: torch.Tensor,
    noise: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    t: torch.Tensor,
    prediction: Prediction,
) -> torch.Tensor:
    if prediction == "eps":
        return noise.float()
    if prediction != "v":
        raise ValueError(f"unknown prediction type {prediction!r} (expected 'eps' or 'v')")
    signal, sigma = _coefficients(alphas_cumprod, t, x0.ndim)
    return signal * noise.float() - sigma * x0.float()


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of ``mask · (prediction - target)²`` (kohya's masked loss: not renormalised,
    so an all-zero mask gives zero loss and zero gradient). ``mask``: (B, 1, h, w) in [0, 1]."""
    error = (prediction.float() - target.float()) ** 2 * mask.float()
    return error.mean(dim=tuple(range(1, error.ndim)))
