"""The ID projector (docs/reference-pipeline.md): ArcFace embedding -> T ID tokens of width E.

Linear(512 -> T*E), reshape to (N, T, E), LayerNorm(E). Keys: ``0.weight``, ``0.bias``,
``2.weight``, ``2.bias`` (index 1 is the parameter-free reshape).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from ..facts import LAYER_NORM_EPS
from .checkpoint import Shape, shape_of


class IdProjector(nn.Module):
    """The projector's four tensors as buffers (they move with ``.to()``), in the model dtype."""

    linear_weight: torch.Tensor
    linear_bias: torch.Tensor
    norm_weight: torch.Tensor
    norm_bias: torch.Tensor

    def __init__(self, weights: dict[str, torch.Tensor], num_tokens: int, dtype, device):
        super().__init__()
        self.num_tokens = num_tokens
        for name, key in (
            ("linear_weight", "0.weight"),
            ("linear_bias", "0.bias"),
            ("norm_weight", "2.weight"),
            ("norm_bias", "2.bias"),
        ):
            self.register_buffer(name, weights[key].to(device=device, dtype=dtype), False)

    @property
    def input_dim(self) -> int:
        return self.linear_weight.shape[1]

    @staticmethod
    def expected_shapes(path: Path, shapes: dict[str, Shape], width: int) -> dict[str, Shape]:
        """Keys and shapes for token width ``width`` (E); T and the input width from 0.weight."""
        rows, input_dim = shape_of(path, shapes, "0.weight", 2)
        if rows % width:
            raise CheckpointError(
                f"{path}: key '0.weight' has shape {[rows, input_dim]}, expected [T*{width}, "
                f"{input_dim}] (T ID tokens of width {width}, the resampler's input width)"
            )
        return {
            "0.weight": (rows, input_dim),
            "0.bias": (rows,),
            "2.weight": (width,),
            "2.bias": (width,),
        }

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """(N, 512) -> (N, T, E)."""
        tokens = F.linear(embeds, self.linear_weight, self.linear_bias)
        tokens = tokens.view(embeds.shape[0], self.num_tokens, -1)
        return F.layer_norm(
            tokens, (tokens.shape[-1],), self.norm_weight, self.norm_bias, eps=LAYER_NORM_EPS
        )
