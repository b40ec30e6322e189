"""A tiny model with the SDXL base UNet's module names (SGM layout) built of real nn.Linear layers.

All 70 transformer blocks are there (560 attention Linears), with small widths: 640 -> ``w640``,
1280 -> ``w1280``, the 2048 text context -> ``ctx``. ``kind`` sets A1111's model flags.
"""

import contextlib
import math

import torch
from torch import nn

# (SGM block path, transformer depth, SDXL width) of the SDXL base UNet's attention blocks.
SDXL_ATTENTION_BLOCKS = (
    ("input_blocks.4.1", 2, 640),
    ("input_blocks.5.1", 2, 640),
    ("input_blocks.7.1", 10, 1280),
    ("input_blocks.8.1", 10, 1280),
    ("middle_block.1", 10, 1280),
    ("output_blocks.0.1", 10, 1280),
    ("output_blocks.1.1", 10, 1280),
    ("output_blocks.2.1", 10, 1280),
    ("output_blocks.3.1", 2, 640),
    ("output_blocks.4.1", 2, 640),
    ("output_blocks.5.1", 2, 640),
)


class CrossAttention(nn.Module):
    def __init__(self, dim, context_dim):
        super().__init__()
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

    def forward(self, x, context):
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        attn = torch.softmax(q.float() @ k.float().transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
        return self.to_out((attn @ v.float()).to(x.dtype))


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, context_dim):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim)
        self.attn2 = CrossAttention(dim, context_dim)
        self.ff = nn.Linear(dim, dim)  # not a HyperLoRA target; a user LoRA may patch it

    def forward(self, x, context):
        x = x + self.attn1(x, x)
        x = x + self.attn2(x, context)
        return x + self.ff(x)


class SpatialTransformer(nn.Module):
    def __init__(self, dim, depth, context_dim):
        super().__init__()
        self.proj_in = nn.Linear(dim, dim)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(dim, context_dim) for _ in range(depth)
        )

    def forward(self, x, context):
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context)
        return x


class UNetModel(nn.Module):
    def __init__(self, w640, w1280, ctx, model_channels=320):
        super().__init__()
        self.model_channels = model_channels
        self.input_blocks = nn.ModuleList(nn.ModuleList([nn.Identity()]) for _ in range(9))
        self.middle_block = nn.ModuleList([nn.Identity(), nn.Identity(), nn.Identity()])
        self.output_blocks = nn.ModuleList(nn.ModuleList([nn.Identity()]) for _ in range(9))
        self.widths = {640: w640, 1280: w1280}
        self.w640 = w640
        for path, depth, width in SDXL_ATTENTION_BLOCKS:
            block = SpatialTransformer(self.widths[width], depth, ctx)
            if path == "middle_block.1":
                self.middle_block[1] = block
            else:
                group, index, _ = path.split(".")
                getattr(self, group)[int(index)].append(block)

    def attention_blocks(self):
        for path, _depth, width in SDXL_ATTENTION_BLOCKS:
            yield self.get_submodule(path), self.widths[width]

    def forward(self, x, context):
        """``x``: (batch, tokens, w640). Every attention block sees x widened to its width."""
        out = torch.zeros_like(x)
        dtype = self.proj_dtype()
        for block, width in self.attention_blocks():
            h = x.repeat(1, 1, width // self.w640)
            out = out + block(h.to(dtype), context.to(dtype))[..., : self.w640].float()
        return out / 100.0

    def proj_dtype(self):
        return self.output_blocks[5][1].proj_in.weight.dtype

    def denoise(self, x, t, context):
        """Latents (B, C, h, w) and timesteps (B,) -> a prediction shaped like ``x`` (float32).

        Each latent pixel is a token (its channels repeated to w640) plus a sinusoidal
        timestep embedding; no parameters besides the attention blocks'.
        """
        b, c, h, w = x.shape
        tokens = x.float().flatten(2).transpose(1, 2).repeat(1, 1, -(-self.w640 // c))
        freqs = torch.exp(-math.log(1000.0) * torch.arange(self.w640 // 2) / (self.w640 // 2))
        angles = t.float()[:, None].cpu() * freqs[None]
        embedding = torch.cat([angles.sin(), angles.cos()], -1).to(x.device)
        out = self(tokens[..., : self.w640] + embedding[:, None], context)
        return (100.0 * out[..., :c]).transpose(1, 2).reshape(b, c, h, w)


class TextEncoder(nn.Module):
    """Stands in for an SDXL text encoder: ``wrapped.transformer.text_model.encoder.layers``."""

    def __init__(self, width, out):
        super().__init__()
        self.wrapped = nn.Module()
        self.wrapped.transformer = nn.Module()
        self.wrapped.transformer.text_model = nn.Module()
        self.wrapped.transformer.text_model.encoder = nn.Module()
        layer = nn.Module()
        layer.self_attn = nn.Module()
        layer.self_attn.q_proj = nn.Linear(width, out)
        self.wrapped.transformer.text_model.encoder.layers = nn.ModuleList([layer])

    def forward(self, tokens):
        return self.wrapped.transformer.text_model.encoder.layers[0].self_attn.q_proj(tokens)


class Conditioner(nn.Module):
    def __init__(self, ctx):
        super().__init__()
        self.embedders = nn.ModuleList([TextEncoder(6, ctx // 2), TextEncoder(6, ctx - ctx // 2)])

    def forward(self, prompts):
        rows = []
        for prompt in prompts:
            g = torch.Generator().manual_seed(sum(map(ord, prompt)) % (2**31))
            tokens = torch.randn(1, 4, 6, generator=g).to(torch.float16)
            rows.append(torch.cat([e(tokens) for e in self.embedders], -1))
        return torch.cat(rows)


class DiffusionWrapper(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.diffusion_model = unet


class TinySDXL(nn.Module):
    """``p.sd_model``: ``.model.diffusion_model``, ``.conditioner``, the ``is_*`` flags."""

    def __init__(self, kind="sdxl", w640=8, w1280=16, ctx=12, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        channels = 384 if kind == "refiner" else 320
        self.model = DiffusionWrapper(UNetModel(w640, w1280, ctx, channels))
        self.conditioner = Conditioner(ctx)
        self.to(torch.float16)
        self.is_sdxl = kind in ("sdxl", "refiner", "ssd")
        self.is_sd1 = kind == "sd1"
        self.is_sd2 = kind == "sd2"
        self.is_sd3 = kind == "sd3"
        self.is_ssd = kind == "ssd"
        self.sd_checkpoint_info = type("CheckpointInfo", (), {"name_for_extra": f"tiny_{kind}"})()
        self.sd_model_hash = f"{kind}0000"
        # sgm's DiffusionEngine: SDXL's scaled-linear schedule, eps prediction, VAE scale factor.
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1 - betas, 0).float()
        self.parameterization = "eps"
        self.scale_factor = 0.13025

    def apply_model(self, x, t, cond):
        """sgm's ``apply_model``: the UNet's raw output (eps or v) for noisy latents ``x``."""
        context = cond["crossattn"] if isinstance(cond, dict) else cond
        return self.model.diffusion_model.denoise(x, t, context)

    def encode_first_stage(self, x):
        """sgm encodes and scales at once: pixels (B, 3, H, W) in [-1, 1] -> (B, 4, H/8, W/8)."""
        z = torch.nn.functional.avg_pool2d(x.float(), 8)
        return torch.cat([z, z.mean(1, keepdim=True)], 1) * (self.scale_factor / 0.13025)

    def get_first_stage_encoding(self, x):
        return x  # A1111's sd_models_xl: encode_first_stage already did everything

    def ema_scope(self):
        return contextlib.nullcontext()

    def get_learned_conditioning(self, prompts):
        return self.conditioner(prompts)


def unet_fingerprint(sd_model):
    """Bytes of every UNet parameter, for bit-exact comparisons."""
    return {name: t.detach().clone() for name, t in sd_model.model.state_dict().items()}
