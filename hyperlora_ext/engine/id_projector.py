"""The ID projector (docs/reference-pipeline.md): ArcFace embedding -> T ID tokens of width E.

Linear(512 -> T*E), reshape to (N, T, E), LayerNorm(E). Keys: ``0.weight``, ``0.bias``,
``2.weight``, ``2.bias`` (index 1 is the parameter-free reshape).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import CheckpointError
from ..facts import LAYER_NORM_EPS
from .checkpoint import Shape, shape_of


class IdProjector:
    def __init__(self, weights: dict[str, torch.Tensor], num_tokens: int, dtype, device):
        self.num_tokens = num_tokens
        self.linear = [weights[k].to(device=device, dtype=dtype) for k in ("0.weight", "0.bias")]
        self.norm = [weights[k].to(device=device, dtype=dtype) for k in ("2.weight", "2.bias")]

    @property
    def input_dim(self) -> int:
        return self.linear[0].shape[1]

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

    def __call__(self, embeds: torch.Tensor) -> torch.Tensor:
        """(N, 512) -> (N, T, E)."""
        tokens = F.linear(embeds, *self.linear).view(embeds.shape[0], self.num_tokens, -1)
        weight, bias = self.norm
        return F.layer_norm(tokens, (tokens.shape[-1],), weight, bias, eps=LAYER_NORM_EPS)

    def tensors(self) -> list[torch.Tensor]:
        return [*self.linear, *self.norm]

    def to(self, device: torch.device | str) -> IdProjector:
        self.linear = [t.to(device) for t in self.linear]
        self.norm = [t.to(device) for t in self.norm]
        return self
