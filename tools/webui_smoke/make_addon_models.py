"""Random models for the other extensions of the official workflows (ADetailer, ControlNet).

    python make_addon_models.py {a1111,forge} --webui WEBUI --checkpoint CKPT --photos-dir DIR

Run with the WebUI's venv (ultralytics installed). Writes, skipping what exists:

* WEBUI/models/adetailer/face_smoke.pt and faces2_smoke.pt: YOLOv8 detectors built from
  ultralytics' ``yolov8n.yaml`` with one class ``face`` and the NMS-free head (``end2end``; the
  PyPI torchvision beside the CPU torch has no C++ ``nms``). The last convolution of every head
  branch has zero weights, so the output is its bias alone and every image gets the same boxes:
  the class bias is high only on the coarsest level (stride 32) and the box bias puts each box
  at its anchor +- a quarter of the stride. The saved ``imgsz`` decides how many stride-32
  anchors a square image has: 32 px -> one box (the middle quarter of the image), 64 px -> four
  boxes (one per quadrant; the two-faces workflow keeps two of them).
* WEBUI/models/ControlNet/smoke_openpose_sdxl.safetensors and control_instant_id_sdxl.safetensors:
  SDXL ControlNets in the ldm layout both WebUIs read (``input_hint_block``, ``zero_convs``,
  ``middle_block_out``, ``label_emb`` and the UNet encoder's keys) with the checkpoint's own
  encoder shapes, so they fit its UNet. Forge: the whole encoder. A1111: without the attention
  blocks, which sd-webui-controlnet reads as its "small" SDXL ControlNet (SDXL's widths
  320/640/1280, no attention: the A1111 smoke checkpoint has those widths).
* WEBUI/models/ControlNet/ip-adapter_instant_id_sdxl.safetensors: InstantID's IP-Adapter, the
  ``image_proj.`` Resampler (dim 1280, 4 layers, 16 tokens from a 512-d face embedding) and
  ``ip_adapter.{1,3,...}.to_{k,v}_ip`` for each cross-attention layer of the checkpoint, numbered
  in the order each WebUI hooks them. sd-webui-controlnet (A1111) hooks SDXL's 70 layers by
  fixed block and depth indices, so A1111 gets the two InstantID files only when the checkpoint
  has SDXL's own depths (``make_models.py --full-depth``); otherwise they are removed and the
  InstantID case skips ("no ControlNet model fits").
* The synthetic antelopev2 pack from DIR, for the InstantID preprocessors (insightface, which
  downloads the pack when a file is missing): Forge reads WEBUI/models/insightface/models,
  sd-webui-controlnet its annotator/downloads/insightface/models.
* DIR/pose.png (a stick figure, used as a ready pose map) and DIR/slider0.png, slider1.png.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

UNET = "model.diffusion_model."
# ControlNet input hint: channels of the 8 convolutions (3x3), every second one with stride 2.
HINT = [(3, 16), (16, 16), (16, 32), (32, 32), (32, 96), (96, 96), (96, 256), (256, None)]
CROSS_DIM = 2048  # SDXL's text context width (the IP-Adapter's key/value input)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("webui", choices=["a1111", "forge"])
    parser.add_argument("--webui", dest="root", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--photos-dir", type=Path, required=True)
    args = parser.parse_args()
    detectors = args.root / "models" / "adetailer"
    write_detector(detectors / "face_smoke.pt", imgsz=32)
    write_detector(detectors / "faces2_smoke.pt", imgsz=64)
    if args.webui == "forge":
        write_forge_controlnets(args.root, read_header(args.checkpoint), args.photos_dir)
    else:
        write_a1111_controlnets(args.root, read_header(args.checkpoint), args.photos_dir)
    write_photos(args.photos_dir)
    print("add-on models ready:", args.root / "models")


# ---------------------------------------------------------------- face detector


def write_detector(out: Path, imgsz: int) -> None:
    if out.exists():
        return
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    head = model.model[-1]
    head.end2end = True  # what YOLOv10's head sets: one-to-one branches, no NMS
    head.one2one_cv2 = _copy(head.cv2)
    head.one2one_cv3 = _copy(head.cv3)
    model.end2end = True
    with torch.no_grad():
        for level, (box, cls) in enumerate(zip(head.one2one_cv2, head.one2one_cv3, strict=True)):
            box[-1].weight.zero_()
            cls[-1].weight.zero_()
            # DFL: per side, bin 0 with 3/4 and bin 1 with 1/4 -> distance 0.25 * stride.
            bins = torch.full((head.reg_max,), -30.0)
            bins[0], bins[1] = math.log(3.0), 0.0
            box[-1].bias.copy_(bins.repeat(4))
            cls[-1].bias.fill_(8.0 if level == head.nl - 1 else -30.0)
    model.names = {0: "face"}
    model.args = {"imgsz": imgsz, "task": "detect"}
    out.parent.mkdir(parents=True, exist_ok=True)
    # ultralytics' own checkpoint format (a pickle, read by ultralytics inside ADetailer).
    torch.save({"model": model.half(), "train_args": model.args, "date": "smoke"}, out)
    print(f"wrote {out} (imgsz {imgsz})", flush=True)


def _copy(module: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(module)


# ---------------------------------------------------------------- ControlNet / InstantID

OPENPOSE = "smoke_openpose_sdxl.safetensors"
INSTANTID = ("control_instant_id_sdxl.safetensors", "ip-adapter_instant_id_sdxl.safetensors")
# sd-webui-controlnet's IP-Adapter hook: SDXL's 70 cross-attention layers, numbered input,
# output, middle blocks (its scripts/enums.py transformer_ids); Forge: input, middle, output.
A1111_CROSS_ATTENTION_LAYERS = 70
A1111_ORDER = {"input_blocks": 0, "output_blocks": 1, "middle_block": 2}
FORGE_ORDER = {"input_blocks": 0, "middle_block": 1, "output_blocks": 2}


def write_forge_controlnets(root: Path, unet: dict[str, list[int]], photos_dir: Path) -> None:
    controlnets = root / "models" / "ControlNet"
    for name in (OPENPOSE, INSTANTID[0]):
        write_random(controlnets / name, controlnet_shapes(unet, with_attention=True))
    write_random(controlnets / INSTANTID[1], instantid_shapes(unet, FORGE_ORDER))
    copy_antelopev2(photos_dir, root / "models" / "insightface" / "models")


def write_a1111_controlnets(root: Path, unet: dict[str, list[int]], photos_dir: Path) -> None:
    """sd-webui-controlnet's "small" SDXL ControlNets; InstantID only on SDXL's own depths."""
    widths = [unet[f"input_blocks.{b}.0.out_layers.3.weight"][0] for b in (1, 4, 7)]
    if widths != [320, 640, 1280]:
        raise SystemExit(
            f"the A1111 checkpoint's UNet is {widths} wide, not SDXL's [320, 640, 1280]: "
            "sd-webui-controlnet's SDXL ControlNets cannot fit it; re-run make_models.py a1111"
        )
    controlnets = root / "models" / "ControlNet"
    write_random(controlnets / OPENPOSE, controlnet_shapes(unet, with_attention=False))
    layers = sum(1 for key in unet if key.endswith("attn2.to_k.weight"))
    if layers == A1111_CROSS_ATTENTION_LAYERS:
        write_random(controlnets / INSTANTID[0], controlnet_shapes(unet, with_attention=False))
        write_random(controlnets / INSTANTID[1], instantid_shapes(unet, A1111_ORDER))
    else:
        for name in INSTANTID:
            if (controlnets / name).exists():
                (controlnets / name).unlink()
        print(
            f"no InstantID files: the checkpoint has {layers} cross-attention layers and "
            f"sd-webui-controlnet's IP-Adapter hooks SDXL's {A1111_CROSS_ATTENTION_LAYERS} "
            "(make_models.py a1111 --full-depth makes one that has them)",
            flush=True,
        )
    annotators = root / "extensions" / "sd-webui-controlnet" / "annotator" / "downloads"
    copy_antelopev2(photos_dir, annotators / "insightface" / "models")


def read_header(path: Path) -> dict[str, list[int]]:
    """Key -> shape of the checkpoint's UNet tensors (from the safetensors header alone)."""
    with open(path, "rb") as handle:
        size = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(size))
    return {k[len(UNET) :]: v["shape"] for k, v in header.items() if k.startswith(UNET)}


def controlnet_shapes(unet: dict[str, list[int]], with_attention: bool) -> dict[str, list[int]]:
    """An SDXL ControlNet: a copy of the UNet's encoder (``with_attention`` or without its
    transformer blocks; the middle block keeps its norm and projections), the hint encoder and
    the zero convs."""
    encoder = ("time_embed.", "label_emb.", "input_blocks.", "middle_block.")
    shapes = {
        k: s
        for k, s in unet.items()
        if k.startswith(encoder) and (with_attention or not _in_attention(k))
    }
    width = unet["input_blocks.0.0.weight"][0]
    for i, (cin, cout) in enumerate(HINT):
        shapes[f"input_hint_block.{2 * i}.weight"] = [cout or width, cin, 3, 3]
        shapes[f"input_hint_block.{2 * i}.bias"] = [cout or width]
    blocks = sorted({int(k.split(".")[1]) for k in shapes if k.startswith("input_blocks.")})
    for block in blocks:
        channels = _block_channels(unet, block)
        shapes[f"zero_convs.{block}.0.weight"] = [channels, channels, 1, 1]
        shapes[f"zero_convs.{block}.0.bias"] = [channels]
    channels = _block_channels(unet, None)
    shapes["middle_block_out.0.weight"] = [channels, channels, 1, 1]
    shapes["middle_block_out.0.bias"] = [channels]
    return shapes


def _in_attention(key: str) -> bool:
    parts = key.split(".")
    if parts[0] == "input_blocks":
        return parts[2] == "1"
    return parts[0] == "middle_block" and parts[2] == "transformer_blocks"


def _block_channels(unet: dict[str, list[int]], block: int | None) -> int:
    """Output channels of input block ``block`` (None: the middle block)."""
    prefix = "middle_block." if block is None else f"input_blocks.{block}."
    biases = [k for k in unet if k.startswith(prefix) and k.endswith(".bias")]
    last = max(biases, key=lambda k: [int(p) if p.isdigit() else p for p in k.split(".")])
    return unet[last][0]


def instantid_shapes(unet: dict[str, list[int]], order: dict[str, int]) -> dict[str, list[int]]:
    dim, inner, ff = 1280, 20 * 64, 4 * 1280
    shapes: dict[str, list[int]] = {
        "image_proj.latents": [1, 16, dim],
        "image_proj.proj_in.weight": [dim, 512],
        "image_proj.proj_in.bias": [dim],
        "image_proj.proj_out.weight": [CROSS_DIM, dim],
        "image_proj.proj_out.bias": [CROSS_DIM],
        "image_proj.norm_out.weight": [CROSS_DIM],
        "image_proj.norm_out.bias": [CROSS_DIM],
    }
    for i in range(4):
        layer = f"image_proj.layers.{i}."
        for norm in ("0.norm1", "0.norm2", "1.0"):
            shapes[f"{layer}{norm}.weight"] = shapes[f"{layer}{norm}.bias"] = [dim]
        shapes[f"{layer}0.to_q.weight"] = [inner, dim]
        shapes[f"{layer}0.to_kv.weight"] = [2 * inner, dim]
        shapes[f"{layer}0.to_out.weight"] = [dim, inner]
        shapes[f"{layer}1.1.weight"] = [ff, dim]
        shapes[f"{layer}1.3.weight"] = [dim, ff]
    # One key/value pair per cross-attention layer, numbered 1, 3, 5, ... in the WebUI's order.
    attn2 = [k for k in unet if k.endswith("attn2.to_k.weight")]
    for n, key in enumerate(sorted(attn2, key=lambda k: _unet_order(k, order))):
        width = unet[key.replace("to_k", "to_q")][0]
        shapes[f"ip_adapter.{2 * n + 1}.to_k_ip.weight"] = [width, CROSS_DIM]
        shapes[f"ip_adapter.{2 * n + 1}.to_v_ip.weight"] = [width, CROSS_DIM]
    return shapes


def _unet_order(key: str, order: dict[str, int]) -> tuple[int, int, int]:
    parts = key.split(".")
    section = order[parts[0]]
    block = int(parts[1]) if parts[0] != "middle_block" else 0
    return section, block, int(parts[parts.index("transformer_blocks") + 1])


def write_random(out: Path, shapes: dict[str, list[int]]) -> None:
    if out.exists():
        return
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(len(out.name))
    state = {}
    for key, shape in shapes.items():
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        std = 1 / math.sqrt(fan_in) if len(shape) > 1 else 0.02
        value = torch.randn(shape, generator=gen) * std
        if len(shape) == 1 and key.endswith("weight"):
            value += 1  # norms
        state[key] = value.half()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out))
    print(f"wrote {out} ({len(state)} tensors)", flush=True)


def copy_antelopev2(models_dir: Path, insightface_models: Path) -> None:
    """The InstantID preprocessors run insightface's antelopev2 from INSIGHTFACE_MODELS (and
    download it when missing): give them the synthetic pack make_models.py wrote for HyperLoRA."""
    import shutil

    from hyperlora_ext.models import ModelRoots

    dest = insightface_models / "antelopev2"
    if not dest.exists():
        shutil.copytree(ModelRoots.from_models_dir(models_dir).antelopev2, dest)
        print(f"copied the synthetic antelopev2 pack to {dest}", flush=True)


# ---------------------------------------------------------------- images


def write_photos(folder: Path) -> None:
    from PIL import Image, ImageDraw

    from tests.encoders._photos import face_photo

    folder.mkdir(parents=True, exist_ok=True)
    pose = folder / "pose.png"
    if not pose.exists():
        image = Image.new("RGB", (512, 512), "black")
        draw = ImageDraw.Draw(image)
        joints = [(256, 90), (256, 170), (190, 170), (322, 170), (160, 260), (352, 260)]
        joints += [(220, 320), (292, 320), (210, 450), (302, 450)]
        for a, b in [(0, 1), (1, 2), (1, 3), (2, 4), (3, 5), (1, 6), (1, 7), (6, 8), (7, 9)]:
            draw.line([joints[a], joints[b]], fill=(0, 255, 0), width=8)
        for joint in joints:
            draw.ellipse([joint[0] - 6, joint[1] - 6, joint[0] + 6, joint[1] + 6], fill="red")
        image.save(pose)
    for i, box in enumerate(((200, 80, 440, 400), (230, 120, 410, 360))):
        path = folder / f"slider{i}.png"
        if not path.exists():
            face_photo(faces=(box,)).save(path)


if __name__ == "__main__":
    main()
