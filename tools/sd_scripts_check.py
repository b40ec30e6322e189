"""Load a training kit's LoRA into kohya sd-scripts' own SDXL LoRA network and count what loads.

The unit test ``tests/refine/test_kit.py`` models sd-scripts' naming rule; this runs sd-scripts
itself (its ``library/sdxl_original_unet.py`` and ``networks/lora.py``), on the meta device so
no 10 GB UNet is allocated, with the steps ``sdxl_train_network.py`` takes for the kit's command
(``--network_weights FILE --dim_from_weights --network_train_unet_only``):
``create_network_from_weights`` builds a module per layer name it finds in the UNet,
``apply_to`` attaches them, ``load_weights`` loads the file with ``strict=False``, which drops a
key it does not know without a word (the silent no-load). This fails when any key is unexpected,
any layer builds no module, a module is left at its initial values, or a module's scale is not
the file's alpha/rank (step 0 would then not be the predicted identity).

    python tools/sd_scripts_check.py --sd-scripts PATH [--lora KIT.safetensors]

Without ``--lora`` it writes a kit (``write_kit``) for a random identity with the real SDXL
shapes of HyperLoRA's 140 modules (560 layers). It needs a Python with this repository's
requirements plus sd-scripts' imports at its pins (``diffusers==0.32.1``, ``transformers==4.54.1``,
``accelerate==1.6.0``, ``einops``, ``opencv-python``, ``torchvision``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hyperlora_ext.lora_format import LORA_PARTS, sdxl_attention_modules  # noqa: E402
from hyperlora_ext.refine.crops import FacePhoto  # noqa: E402
from hyperlora_ext.refine.kit import KitSettings, write_kit  # noqa: E402

RANK, ALPHA = 8, 4.0


def random_identity(seed: int = 0) -> dict[str, torch.Tensor]:
    """A kohya LoRA as HyperLoRA predicts it: 140 modules x (q, k, v, out), real SDXL shapes."""
    gen = torch.Generator().manual_seed(seed)
    lora = {}
    for module, dims in sdxl_attention_modules("diffusers").items():
        width, cross = dims["hidden_size"], dims["cross_attention_dim"]
        for part in LORA_PARTS:
            in_features = cross if cross and part in ("to_k", "to_v") else width
            stem = f"{module}_{part}"
            lora[f"{stem}.lora_down.weight"] = torch.randn(RANK, in_features, generator=gen)
            lora[f"{stem}.lora_up.weight"] = torch.randn(width, RANK, generator=gen) * 0.01
            lora[f"{stem}.alpha"] = torch.tensor(ALPHA)
    return lora


def write_random_kit(folder: Path) -> Path:
    photo = FacePhoto(Image.new("RGB", (256, 256), (128, 100, 90)), (64, 64, 192, 192), 1.0, "p")
    kit = write_kit(folder / "kit", "check", random_identity(), [photo], KitSettings(resolution=64))
    return kit.lora


def load_into_sd_scripts(sd_scripts: Path, lora_file: Path) -> bool:
    """sdxl_train_network.py's steps with --dim_from_weights; True when every key loads."""
    sys.path.insert(0, str(sd_scripts))
    import networks.lora as kohya_lora  # sd-scripts
    from library.sdxl_original_unet import SdxlUNet2DConditionModel  # sd-scripts

    # Copying into meta parameters is a no-op (shapes are still checked); say it once, here.
    warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
    weights = load_file(lora_file)
    layers = {key.split(".")[0] for key in weights}
    with torch.device("meta"):
        unet = SdxlUNet2DConditionModel()
        network, _ = kohya_lora.create_network_from_weights(1, str(lora_file), None, [], unet)
        network.apply_to([], unet, False, True)  # --network_train_unet_only
        result = network.load_weights(str(lora_file))
    built = {lora.lora_name: lora for lora in network.unet_loras}
    unbuilt = sorted(layers - set(built))
    untouched = sorted(set(built) - layers)  # left at sd-scripts' initial values
    wrong_scale = [
        name for name, lora in built.items() if name in layers
        and abs(lora.scale - float(weights[f"{name}.alpha"]) / lora.lora_dim) > 1e-6
    ]  # fmt: skip
    loaded = len(weights) - len(result.unexpected_keys)
    print(f"{lora_file.name}: {len(weights)} keys in {len(layers)} layers")
    print(f"  modules built {len(built)}, keys loaded {loaded}/{len(weights)}, unexpected "
          f"{len(result.unexpected_keys)}, layers without a module {len(unbuilt)}, modules "
          f"not loaded {len(untouched)}, scale != alpha/rank {len(wrong_scale)}")  # fmt: skip
    for key in (result.unexpected_keys + unbuilt + untouched + wrong_scale)[:5]:
        print(f"    not loaded as written: {key}")
    problems = result.unexpected_keys or unbuilt or untouched or wrong_scale
    return not problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sd-scripts", type=Path, required=True, help="sd-scripts checkout")
    parser.add_argument("--lora", type=Path, help="a kit's LoRA (default: write a random kit)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lora_file = args.lora or write_random_kit(Path(tmp))
        ok = load_into_sd_scripts(args.sd_scripts.resolve(), lora_file)
    print("OK: every key loads, at its alpha/rank" if ok else "FAIL: sd-scripts drops part of it")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
