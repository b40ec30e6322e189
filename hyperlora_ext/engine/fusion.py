"""Fusing photos (or identities) into one identity: a weighted mean of pre-normalisation tokens.

The reference fuses N photos by the plain mean of the resampler outputs after ``proj_out`` and
before the per-token L2 normalisation (docs/reference-pipeline.md). Relative weights turn that
mean into a weighted one; identities fuse the same way, from their stored pre-normalisation tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

import torch

from ..errors import ArgumentError

NORM_EPS = 1e-8  # of the final per-token L2 normalisation


def check_weights(weights: Any, count: int, field: str = "photo_weights") -> list[float] | None:
    """``weights`` as ``count`` floats (relative: any positive scale), or None for None.

    Raises ArgumentError naming ``field`` for a wrong length, a negative, non-finite or
    non-numeric value, or weights that are all zero.
    """
    if weights is None:
        return None
    if isinstance(weights, torch.Tensor):
        weights = weights.tolist()
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise ArgumentError(field, f"expected a list of numbers, got {type(weights).__name__}")
    if len(weights) != count:
        raise ArgumentError(field, f"{len(weights)} weight(s) given for {count} item(s)")
    values = []
    for number, value in enumerate(weights, 1):
        if isinstance(value, bool) or not isinstance(value, Real):
            raise ArgumentError(field, f"weight {number} is not a number: {value!r}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float's range, e.g. 10**400
            raise ArgumentError(
                field,
                f"weight {number} is too large to be a number; weights are relative, "
                "so e.g. 3 and 1 weigh like 0.75 and 0.25",
            ) from None
        if not math.isfinite(value) or value < 0:
            raise ArgumentError(field, f"weight {number} is {value!r}; weights are numbers >= 0")
        values.append(value)
    if not any(values):
        raise ArgumentError(field, "all weights are 0; give at least one a weight above 0")
    return values


def stack_tokens(
    tokens: Sequence[Any],
    shape: tuple[int, int],
    model: str,
    labels: Sequence[str] | None = None,
    field: str = "mix",
) -> torch.Tensor:
    """(N, Q, H) float32 on the CPU: the identities' fused tokens, each checked to be the finite
    (Q, H) ``shape`` of ``model`` (ArgumentError naming ``field`` and the identity otherwise)."""
    if labels and len(labels) != len(tokens):
        raise ArgumentError("labels", f"{len(labels)} label(s) given for {len(tokens)} identities")
    rows = []
    for number, value in enumerate(tokens, 1):
        label = labels[number - 1] if labels else f"identity {number} of the mix"
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise ArgumentError(field, f"{label}: its tokens are not a float tensor: {value!r:.80}")
        if tuple(value.shape) != tuple(shape):
            raise ArgumentError(
                field, f"{label}: its tokens are {list(value.shape)}, the HyperLoRA model "
                f"{model!r} makes {list(shape)}: it was made with another HyperLoRA model, or "
                "its tokens file was changed; save it again from its photos with this model"
            )  # fmt: skip
        if not torch.isfinite(value).all():
            raise ArgumentError(
                field, f"{label}: its tokens hold NaN or infinite values (damaged); save it "
                "again from its photos"
            )  # fmt: skip
        rows.append(value.detach().to("cpu", torch.float32))
    return torch.stack(rows)


def weighted_mean(stack: torch.Tensor, weights: Sequence[float] | None = None) -> torch.Tensor:
    """Mean over axis 0 of ``stack`` (N, ...) with relative ``weights`` (checked beforehand).

    Rows of weight 0 are left out; equal weights (and None) take the plain mean, so they give
    bit for bit the reference's result.
    """
    if weights is None:
        return stack.mean(dim=0)
    keep = [i for i, w in enumerate(weights) if w > 0]
    kept = [weights[i] for i in keep]
    stack = stack[keep] if len(keep) < len(weights) else stack
    if all(w == kept[0] for w in kept):
        return stack.mean(dim=0)
    scale = torch.tensor(kept, dtype=torch.float64)
    scale = scale / scale.max()  # first: sums of weights near float's limits stay finite
    scale = (scale / scale.sum()).to(stack.dtype).to(stack.device)
    return (stack * scale.view(-1, *([1] * (stack.dim() - 1)))).sum(dim=0)


def normalise_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Per-token L2 normalisation over the last axis (the reference's rsqrt form)."""
    return tokens * torch.rsqrt(tokens.square().sum(dim=-1, keepdim=True) + NORM_EPS)


def nonzero_rows(weights: Sequence[float] | None, count: int) -> list[int]:
    """Indices of the rows that take part (all of them for None)."""
    if weights is None:
        return list(range(count))
    return [i for i, w in enumerate(weights) if w > 0]
