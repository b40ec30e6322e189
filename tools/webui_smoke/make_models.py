"""Small random models for a smoke test of a real WebUI on a CPU.

    python make_models.py {a1111,forge} --checkpoint OUT.safetensors --models-dir DIR --sgm SGM
        [--full-depth]

Run with the WebUI's venv; SGM is a checkout of Stability-AI/generative-models (45c443b), used
only to read the SDXL key layout. Writes what is missing or was made for another layout:

* OUT.safetensors: a random SDXL base checkpoint (fp16, sd_xl_base key layout). Both text
  encoders and the VAE keep their real sizes (Forge builds them from its bundled configs).
  - a1111: SDXL's widths (320/640/1280, attention at the 640 and 1280 levels), which
    sd-webui-controlnet's SDXL ControlNets add to, with transformer depth 1 at both attention
    levels and in the middle block (22 attention modules); ``--full-depth``: SDXL's own depths
    (2 and 10), which sd-webui-controlnet's IP-Adapter (InstantID) hook indexes; its HyperLoRA
    model still lists the first block's 22 modules (A1111 keeps an fp32 backup of every patched
    weight, and 140 modules' backups beside the fp32 UNet did not fit in 24 GB).
    OUT.yaml beside it (A1111 reads that config; a different one makes the checkpoint again).
  - forge: 320 wide at every level (any other base width is taken for the refiner) with the
    real depths (2 and 10), which huggingface_guess needs to recognise SDXL.
* DIR: HyperLoRA models (full-size resampler; its module JSON lists exactly the checkpoint's
  attention modules with their widths), a random CLIP ViT-L/14, the synthetic antelopev2 pack
  of the tests, and ``smoke_no_match``: the same model with module names that no checkpoint
  has (a model that can never apply).
* DIR/face.png: a photo the synthetic face detector sees one face in.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import struct
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from hyperlora_ext.lora_format import sdxl_attention_modules  # noqa: E402
from hyperlora_ext.models import ModelRoots  # noqa: E402

# UNet layout per smoke WebUI: channel multipliers and transformer depth per level (the middle
# block takes the last level's depth). Real SDXL: [1, 2, 4] and [0, 2, 10].
LAYOUTS = {
    "a1111": ([1, 2, 4], [0, 1, 1]),
    "a1111-full": ([1, 2, 4], [0, 2, 10]),
    "forge": ([1, 1, 1], [0, 2, 10]),
}
MODEL = "sdxl_hyper_id_lora_v1_fidelity"  # an official folder name: the checklist counts it
NO_MATCH = "smoke_no_match"
# The released resampler sizes (the CLIP ViT-L/14 width is the resampler's input width).
SIZES = dict(
    embedding_dim=1024, dim=1024, num_id_tokens=16, rank=8, hyper_dim=128, depth=4, heads=12
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("webui", choices=["a1111", "forge"])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--sgm", type=Path, required=True)
    parser.add_argument("--full-depth", action="store_true", help="a1111: SDXL's own depths")
    args = parser.parse_args()
    layout = "a1111-full" if args.webui == "a1111" and args.full_depth else args.webui
    config = sdxl_config(layout, args.sgm)
    if not checkpoint_current(layout, args.checkpoint, config):
        write_checkpoint(layout, args.checkpoint, config, args.sgm)
    write_hyperlora_models(layout, args.models_dir)
    face = args.models_dir / "face.png"
    if not face.exists():
        from tests.encoders._photos import face_photo

        face_photo().save(face)
    print("models ready:", args.checkpoint, args.models_dir)


# ---------------------------------------------------------------- SDXL checkpoint


def sdxl_config(layout: str, sgm: Path):
    from omegaconf import OmegaConf

    config = OmegaConf.load(sgm / "configs/inference/sd_xl_base.yaml")
    unet = config.model.params.network_config.params
    unet.channel_mult, unet.transformer_depth = LAYOUTS[layout]
    unet.spatial_transformer_attn_type = "softmax"
    return config


def checkpoint_current(layout: str, out: Path, config) -> bool:
    """The checkpoint exists and (A1111) the config beside it is this layout's."""
    if layout == "forge" or not out.exists():
        return out.exists()
    from omegaconf import OmegaConf

    yaml = out.with_suffix(".yaml")
    return yaml.exists() and OmegaConf.to_container(OmegaConf.load(yaml)) == (
        OmegaConf.to_container(config)
    )


def checkpoint_shapes(config, sgm: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Key -> (shape, dtype) of a full SDXL base checkpoint built from ``config`` (no memory)."""
    sys.path.insert(0, str(sgm))
    import open_clip
    from sgm.util import instantiate_from_config
    from transformers import CLIPTextConfig, CLIPTextModel

    shapes = {}

    def collect(prefix: str, module: torch.nn.Module) -> None:
        for key, value in module.state_dict().items():
            shapes[prefix + key] = (tuple(value.shape), value.dtype)

    params = config.model.params
    with torch.device("meta"):
        collect("model.diffusion_model.", instantiate_from_config(params.network_config))
        collect("first_stage_model.", instantiate_from_config(params.first_stage_config))
        clip_l = CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            projection_dim=768,
        )
        collect("conditioner.embedders.0.transformer.", CLIPTextModel(clip_l))
        big_g = open_clip.create_model("ViT-bigG-14", pretrained=None, device="meta")
        del big_g.visual
        collect("conditioner.embedders.1.model.", big_g)
    return shapes


def random_tensor(key: str, shape: tuple[int, ...], dtype: torch.dtype, gen) -> torch.Tensor:
    """Random non-zero weights (a zero-initialised output layer would hide a LoRA's effect)."""
    if dtype == torch.int64:
        return torch.arange(shape[-1], dtype=torch.int64).expand(shape).contiguous()
    name = key.rsplit(".", 1)[-1]
    if len(shape) >= 2:
        std = (
            0.02
            if ("embedding" in key or "positional" in key)
            else 1 / math.sqrt(math.prod(shape[1:]))
        )
        return (torch.randn(shape, generator=gen) * std).half()
    if "bias" in name:
        return torch.zeros(shape, dtype=torch.float16)
    if "norm" in key or "ln_" in key or name == "gamma":
        return torch.ones(shape, dtype=torch.float16)
    if name == "logit_scale":
        return torch.full(shape, math.log(1 / 0.07), dtype=torch.float16)
    return (torch.randn(shape, generator=gen) * 0.02).half()


def write_checkpoint(layout: str, out: Path, config, sgm: Path) -> None:
    """Stream the random tensors to a safetensors file, one at a time (bounded memory)."""
    shapes = checkpoint_shapes(config, sgm)
    header, offset = {}, 0
    for key in sorted(shapes):
        shape, dtype = shapes[key]
        size = math.prod(shape) * (8 if dtype == torch.int64 else 2)
        kind = "I64" if dtype == torch.int64 else "F16"
        header[key] = {"dtype": kind, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt", "note": f"random small SDXL base ({layout} smoke)"}
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    print(f"writing {out} ({len(shapes)} tensors, {offset / 1e9:.2f} GB)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    partial = out.with_suffix(".partial")
    with open(partial, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)) + encoded)
        for key in sorted(shapes):
            handle.write(random_tensor(key, *shapes[key], gen).numpy().tobytes())
    partial.replace(out)
    if layout != "forge":
        from omegaconf import OmegaConf

        OmegaConf.save(config, out.with_suffix(".yaml"))


# ---------------------------------------------------------------- HyperLoRA models


def checkpoint_modules(layout: str) -> dict[str, dict[str, int | None]]:
    """The checkpoint's attention modules as a HyperLoRA module JSON lists them: SDXL's modules
    up to the layout's depth per level, with the layout's widths."""
    channel_mult, depths = LAYOUTS[layout]
    real = dict(zip((2, 10), depths[1:], strict=True))  # SDXL depth -> this layout's depth
    if layout == "a1111-full":  # the first block per level only: A1111 backs up every patched
        real = {2: 1, 10: 1}  # weight in fp32, and 140 modules' backups do not fit in 24 GB
    modules = {}
    for name, info in sdxl_attention_modules("diffusers").items():
        width = info["hidden_size"]
        assert width is not None
        index = int(name.split("_transformer_blocks_")[1].split("_")[0])
        if index < real[2 if width == 640 else 10]:
            level = {640: 1, 1280: 2}[width]
            modules[name] = {**info, "hidden_size": 320 * channel_mult[level]}
    return modules


def write_hyperlora_models(layout: str, models_dir: Path) -> None:
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from hyperlora_ext.encoders.clip_encoder import VIT_L14
    from tests import fake_antelopev2
    from tests.factories import tiny_hyperlora_tensors  # full sizes with SIZES

    roots = ModelRoots.from_models_dir(models_dir)
    folder = roots.hyper_lora / MODEL
    modules = checkpoint_modules(layout)
    if _read_json(folder / "hyper_lora_modules.json") != modules:
        print(f"writing HyperLoRA for {len(modules)} modules to {folder}", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hyper_lora_modules.json").write_text(json.dumps(modules, indent=1))
        state = tiny_hyperlora_tensors(modules, dtype=torch.float16, **SIZES)
        for name in list(state):
            save_file(state.pop(name), str(folder / name))
    no_match = roots.hyper_lora / NO_MATCH
    renamed = {n.replace("lora_unet_", "lora_unet_nomatch_"): v for n, v in modules.items()}
    if _read_json(no_match / "hyper_lora_modules.json") != renamed:
        shutil.copytree(folder, no_match, dirs_exist_ok=True)
        (no_match / "hyper_lora_modules.json").write_text(json.dumps(renamed, indent=1))
    clip_dir = roots.clip_vit / "clip_vit_large_14"
    if not (clip_dir / "model.safetensors").exists():
        print("writing a random CLIP ViT-L/14", flush=True)
        torch.manual_seed(0)
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_L14))
        model.save_pretrained(clip_dir, safe_serialization=True)
    if not roots.antelopev2.exists():
        fake_antelopev2.build(roots.antelopev2)


def _read_json(path: Path) -> object:
    return json.loads(path.read_text()) if path.exists() else None


if __name__ == "__main__":
    main()
