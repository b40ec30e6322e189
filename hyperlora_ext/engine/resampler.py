"""HyperLoRA's perceiver resampler (docs/reference-pipeline.md), inference only.

The learned latents and everything computed from them before the first photo-dependent input
(block 0's self-attention and block 0's cross-attention query) do not depend on the photos, so
they are computed once at load time in float32 and kept instead of the weights that made them.
Attention runs through torch's scaled_dot_product_attention (scale 1/sqrt(dim_head)).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from ..facts import LAYER_NORM_EPS
from .checkpoint import Shape, shape_of
from .fusion import normalise_tokens, weighted_mean

DEFAULT_DIM_HEAD = 64  # released models: 12 heads x 64; not recoverable from the tensors


@dataclass(frozen=True)
class ResamplerConfig:
    """Sizes of a resampler, derived from the tensor shapes of ``resampler.safetensors``."""

    dim: int  # D
    num_queries: int  # Q = 8 x number of modules
    embedding_dim: int  # E: width of the conditions fed to proj_in / proj_in_2
    output_dim: int  # H: hyper_dim
    depth: int
    inner_dim: int  # I = heads x dim_head
    ff_dim: int  # 4 D
    heads: int

    @classmethod
    def from_shapes(
        cls, path: Path, shapes: dict[str, Shape], dim_head: int = DEFAULT_DIM_HEAD
    ) -> ResamplerConfig:
        _, num_queries, dim = shape_of(path, shapes, "latents", 3)
        embedding_dim = shape_of(path, shapes, "proj_in.weight", 2)[1]
        output_dim = shape_of(path, shapes, "proj_out.weight", 2)[0]
        inner_dim = shape_of(path, shapes, "layers.0.attn1.to_q.weight", 2)[0]
        ff_dim = shape_of(path, shapes, "layers.0.ff.net.0.proj.weight", 2)[0]
        depth = 0
        while f"layers.{depth}.attn1.to_q.weight" in shapes:
            depth += 1
        if inner_dim % dim_head:
            raise CheckpointError(
                f"{path}: attention width {inner_dim} is not a multiple of dim_head {dim_head}"
            )
        return cls(
            dim=dim,
            num_queries=num_queries,
            embedding_dim=embedding_dim,
            output_dim=output_dim,
            depth=depth,
            inner_dim=inner_dim,
            ff_dim=ff_dim,
            heads=inner_dim // dim_head,
        )

    def expected_shapes(self) -> dict[str, Shape]:
        """Every key of the released resampler (two conditions: ID tokens and CLIP tokens)."""
        d, i, e = self.dim, self.inner_dim, self.embedding_dim
        shapes: dict[str, Shape] = {"latents": (1, self.num_queries, d)}
        for name in ("proj_in", "proj_in_2"):
            shapes |= {f"{name}.weight": (d, e), f"{name}.bias": (d,)}
        shapes |= {"proj_out.weight": (self.output_dim, d), "proj_out.bias": (self.output_dim,)}
        for layer in range(self.depth):
            p = f"layers.{layer}."
            for norm in ("attn1", "attn2_l", "attn2_x", "attn3_l", "attn3_y", "ff"):
                shapes |= {f"{p}norm_{norm}.weight": (d,), f"{p}norm_{norm}.bias": (d,)}
            for attn in ("attn1", "attn2", "attn3"):
                for proj in ("to_q", "to_k", "to_v"):
                    shapes[f"{p}{attn}.{proj}.weight"] = (i, d)
                shapes[f"{p}{attn}.to_out.0.weight"] = (d, i)
            shapes |= {
                f"{p}ff.net.0.proj.weight": (self.ff_dim, d),
                f"{p}ff.net.0.proj.bias": (self.ff_dim,),
                f"{p}ff.net.2.weight": (d, self.ff_dim),
                f"{p}ff.net.2.bias": (d,),
            }
        return shapes


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    n, s, inner = t.shape
    return t.view(n, s, heads, inner // heads).transpose(1, 2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    n, heads, s, dim_head = t.shape
    return t.transpose(1, 2).reshape(n, s, heads * dim_head)


class _Tensors(nn.Module):
    """Named tensors kept as buffers (they move with ``.to()``); a pair is ``NAME_weight`` and
    ``NAME_bias``."""

    def keep(self, name: str, value: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> None:
        if isinstance(value, tuple):
            self.register_buffer(f"{name}_weight", value[0], False)
            self.register_buffer(f"{name}_bias", value[1], False)
        else:
            self.register_buffer(name, value, False)

    def one(self, name: str) -> torch.Tensor:
        return self.get_buffer(name)

    def pair(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.get_buffer(f"{name}_weight"), self.get_buffer(f"{name}_bias")


class Resampler(_Tensors):
    """Inference-only resampler holding its weights in the model dtype, fused for fewer matmuls."""

    def __init__(self, config: ResamplerConfig, weights: dict[str, torch.Tensor], dtype, device):
        super().__init__()
        self.config = config
        self.dtype = dtype
        w = weights  # consumed (popped) so file-dtype copies are freed as we go

        def take(key: str) -> torch.Tensor:
            return w.pop(key).to(device=device, dtype=dtype).contiguous()

        def weight_bias(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
            return take(f"{prefix}.weight"), take(f"{prefix}.bias")

        def cat(*keys: str) -> torch.Tensor:
            return torch.cat([w.pop(k) for k in keys]).to(device=device, dtype=dtype).contiguous()

        start, query0 = self._precompute(w)  # pops latents and block 0's attn1 / attn2 query
        self.keep("start", start.to(device=device, dtype=dtype))
        self.keep("query0", query0.to(device=device, dtype=dtype).contiguous())
        for name in ("proj_in", "proj_in_2", "proj_out"):
            self.keep(name, weight_bias(name))
        self.blocks = nn.ModuleList()
        for layer in range(config.depth):
            p = f"layers.{layer}."
            block: dict[str, Any] = {}
            if layer > 0:  # block 0's self-attention is folded into self.start
                block["norm1"] = weight_bias(f"{p}norm_attn1")
                block["qkv1"] = cat(*(f"{p}attn1.{x}.weight" for x in ("to_q", "to_k", "to_v")))
                block["out1"] = take(f"{p}attn1.to_out.0.weight")
                block["norm2_l"] = weight_bias(f"{p}norm_attn2_l")
                block["q2"] = take(f"{p}attn2.to_q.weight")
            for attn, cond in (("attn2", "x"), ("attn3", "y")):
                block[f"norm_{attn}_c"] = weight_bias(f"{p}norm_{attn}_{cond}")
                block[f"kv_{attn}"] = cat(f"{p}{attn}.to_k.weight", f"{p}{attn}.to_v.weight")
                block[f"out_{attn}"] = take(f"{p}{attn}.to_out.0.weight")
            block["norm3_l"] = weight_bias(f"{p}norm_attn3_l")
            block["q3"] = take(f"{p}attn3.to_q.weight")
            block["norm_ff"] = weight_bias(f"{p}norm_ff")
            block["ff1"] = weight_bias(f"{p}ff.net.0.proj")
            block["ff2"] = weight_bias(f"{p}ff.net.2")
            self.blocks.append(_block(block))
        w.clear()

    def _precompute(self, w: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Block 0 up to its first photo-dependent input, in float32 (where the file was read).

        ``start`` = latents after block 0's self-attention residual; ``query0`` = block 0's
        cross-attention query, already split into heads.
        """

        def f32(key: str) -> torch.Tensor:
            return w.pop(key).float()

        latents = f32("latents")
        h = self._norm(
            latents, (f32("layers.0.norm_attn1.weight"), f32("layers.0.norm_attn1.bias"))
        )
        qkv = torch.cat([f32(f"layers.0.attn1.{x}.weight") for x in ("to_q", "to_k", "to_v")])
        start = latents + self._self_attention(h, qkv, f32("layers.0.attn1.to_out.0.weight"))
        h = self._norm(
            start, (f32("layers.0.norm_attn2_l.weight"), f32("layers.0.norm_attn2_l.bias"))
        )
        query0 = _split_heads(F.linear(h, f32("layers.0.attn2.to_q.weight")), self.config.heads)
        return start, query0

    @staticmethod
    def _norm(t: torch.Tensor, weight_bias: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.layer_norm(t, (t.shape[-1],), *weight_bias, eps=LAYER_NORM_EPS)

    def _self_attention(self, h: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor):
        q, k, v = (_split_heads(t, self.config.heads) for t in F.linear(h, qkv).chunk(3, dim=-1))
        return F.linear(_merge_heads(F.scaled_dot_product_attention(q, k, v)), out)

    def _cross_attention(self, q: torch.Tensor, context: torch.Tensor, kv: torch.Tensor, out):
        k, v = (_split_heads(t, self.config.heads) for t in F.linear(context, kv).chunk(2, dim=-1))
        return F.linear(_merge_heads(F.scaled_dot_product_attention(q, k, v)), out)

    def forward(self, x: torch.Tensor, y: torch.Tensor, weights=None) -> torch.Tensor:
        """Tokens for ID tokens ``x`` (N, T, E) and CLIP tokens ``y`` (N, S, E), model dtype.

        Returns (Q, H) float32: the per-image outputs averaged over the N images (weighted by
        ``weights`` when given), then L2-normalised per token.
        """
        return normalise_tokens(weighted_mean(self.per_photo(x, y), weights))

    def per_photo(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(N, Q, H) float32: each photo's tokens after ``proj_out``, before any fusion."""
        heads, n = self.config.heads, x.shape[0]
        x = F.linear(x, *self.pair("proj_in"))
        y = F.linear(y, *self.pair("proj_in_2"))
        latents = self.one("start").expand(n, -1, -1)
        for layer, b in enumerate(self._blocks()):
            if layer == 0:
                q = self.one("query0").expand(n, -1, -1, -1)
            else:
                latents = latents + self._self_attention(
                    self._norm(latents, b.pair("norm1")), b.one("qkv1"), b.one("out1")
                )
                h = self._norm(latents, b.pair("norm2_l"))
                q = _split_heads(F.linear(h, b.one("q2")), heads)
            context = self._norm(x, b.pair("norm_attn2_c"))
            kv, out = b.one("kv_attn2"), b.one("out_attn2")
            latents = latents + self._cross_attention(q, context, kv, out)
            q = _split_heads(F.linear(self._norm(latents, b.pair("norm3_l")), b.one("q3")), heads)
            context = self._norm(y, b.pair("norm_attn3_c"))
            kv, out = b.one("kv_attn3"), b.one("out_attn3")
            latents = latents + self._cross_attention(q, context, kv, out)
            hidden = F.gelu(F.linear(self._norm(latents, b.pair("norm_ff")), *b.pair("ff1")))
            latents = latents + F.linear(hidden, *b.pair("ff2"))
        return F.linear(latents, *self.pair("proj_out")).float()

    def _blocks(self) -> list[_Tensors]:
        return [block for block in self.blocks if isinstance(block, _Tensors)]


def _block(tensors: dict[str, Any]) -> _Tensors:
    block = _Tensors()
    for name, value in tensors.items():
        block.keep(name, value)
    return block
