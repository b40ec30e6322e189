"""Random full-size SDXL base checkpoint in the sd_xl_base key layout, streamed to a
safetensors file (fp16) so memory stays bounded. For smoke tests of a real WebUI on a CPU.

    python make_sdxl.py <a1111 root> <out.safetensors>   (in the WebUI's venv; ~4 min, 6.9 GB)
"""

import json
import math
import struct
import sys

import torch
from omegaconf import OmegaConf

SGM = f"{sys.argv[1]}/repositories/generative-models"
sys.path.insert(0, SGM)
from sgm.util import instantiate_from_config  # noqa: E402

out = sys.argv[2]
cfg = OmegaConf.load(f"{SGM}/configs/inference/sd_xl_base.yaml")
mp = cfg.model.params
mp.network_config.params.spatial_transformer_attn_type = "softmax"
shapes = {}


def collect(prefix, module):
    for k, v in module.state_dict().items():
        shapes[prefix + k] = (tuple(v.shape), v.dtype)


with torch.device("meta"):
    collect("model.diffusion_model.", instantiate_from_config(mp.network_config))
    collect("first_stage_model.", instantiate_from_config(mp.first_stage_config))
    from transformers import CLIPTextConfig, CLIPTextModel

    tc = CLIPTextConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=12,
        projection_dim=768,
    )
    collect("conditioner.embedders.0.transformer.", CLIPTextModel(tc))
    import open_clip

    g = open_clip.create_model("ViT-bigG-14", pretrained=None, device="meta")
    del g.visual
    collect("conditioner.embedders.1.model.", g)

keys = sorted(shapes)
header, off = {}, 0
for k in keys:
    shp, dt = shapes[k]
    st, nb = ("I64", 8) if dt == torch.int64 else ("F16", 2)
    n = math.prod(shp) * nb
    header[k] = {"dtype": st, "shape": list(shp), "data_offsets": [off, off + n]}
    off += n
header["__metadata__"] = {"format": "pt", "note": "random SDXL base for smoke tests"}
hb = json.dumps(header).encode()
hb += b" " * (-len(hb) % 8)
gen = torch.Generator().manual_seed(0)
print(len(keys), "tensors", off / 1e9, "GB", flush=True)
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(hb)) + hb)
    for k in keys:
        shp, dt = shapes[k]
        if dt == torch.int64:
            t = torch.arange(shp[-1], dtype=torch.int64).expand(shp).contiguous()
        elif len(shp) >= 2:
            fan_in = math.prod(shp[1:])
            std = 0.02 if ("embedding" in k or "positional" in k) else 1 / math.sqrt(fan_in)
            t = (torch.randn(shp, generator=gen) * std).half()
        elif k.endswith("bias") or "bias" in k.rsplit(".", 1)[-1]:
            t = torch.zeros(shp, dtype=torch.float16)
        elif "norm" in k or "ln_" in k or k.endswith(".gamma"):
            t = torch.ones(shp, dtype=torch.float16)
        elif k.endswith("logit_scale"):
            t = torch.full(shp, math.log(1 / 0.07), dtype=torch.float16)
        else:
            t = (torch.randn(shp, generator=gen) * 0.02).half()
        f.write(t.numpy().tobytes())
print("written", out)
