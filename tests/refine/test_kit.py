"""The kohya training kit: sd-scripts must load every key of the written LoRA."""

import numpy as np
import pytest
import tomllib
import torch
from PIL import Image
from safetensors.torch import load_file

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.refine.crops import FacePhoto, make_crops
from hyperlora_ext.refine.kit import KitSettings, write_kit
from tests.webui.fake_webui.tiny_sdxl import TinySDXL
from tests.webui.loras import make_lora

# sd-scripts' networks/lora.py wraps every Linear inside these module classes of the SDXL UNet
# (its sdxl_original_unet calls the SGM SpatialTransformer "Transformer2DModel").
SD_SCRIPTS_TARGET_CLASSES = ("Transformer2DModel", "SpatialTransformer")


def sd_scripts_module_names(unet: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """What sd-scripts' create_modules names: prefix + module path + child path, dots -> '_'."""
    names = {}
    for name, module in unet.named_modules():
        if module.__class__.__name__ not in SD_SCRIPTS_TARGET_CLASSES:
            continue
        for child_name, child in module.named_modules():
            if child.__class__.__name__ in ("Linear", "LoRACompatibleLinear"):
                names[f"lora_unet.{name}.{child_name}".replace(".", "_")] = child
    return names


def _photo(label="p", weight=1.0, size=(200, 160), box=(60, 40, 120, 110)):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    return FacePhoto(image, box, weight, label)


@pytest.mark.parametrize("style", ["diffusers", "sgm"])
def test_every_key_of_the_kit_lora_is_a_module_sd_scripts_creates(tmp_path, style):
    model = TinySDXL()
    unet = model.model.diffusion_model
    lora = make_lora(model, style=style, rank=8, alpha=4.0)
    kit = write_kit(tmp_path / "kit", "alice", lora, [_photo()], KitSettings(resolution=64))
    created = sd_scripts_module_names(unet)
    written = load_file(kit.lora)
    assert len(written) == 560 * 3
    for key, tensor in written.items():
        layer, _, suffix = key.partition(".")
        assert layer in created, f"sd-scripts creates no module {layer}"
        linear = created[layer]
        if suffix == "lora_down.weight":
            assert tensor.shape == (8, linear.in_features)
        elif suffix == "lora_up.weight":
            assert tensor.shape == (linear.out_features, 8)
        else:
            assert suffix == "alpha" and float(tensor) == 4.0
    # The values are the identity's, converted to fp32 only.
    assert torch.equal(
        written["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight"],
        lora[next(k for k in lora if k.endswith("blocks_0_attn1_to_q.lora_down.weight"))].float(),
    )


def test_a_key_sd_scripts_would_ignore_is_refused_before_writing(tmp_path):
    lora = make_lora(TinySDXL(), only=4)
    lora["lora_unet_input_blocks_4_1_proj_in.lora_down.weight"] = torch.zeros(8, 8)
    with pytest.raises(HyperLoRAError, match=r"proj_in.*silently ignore"):
        write_kit(tmp_path / "kit", "alice", lora, [_photo()])
    assert not (tmp_path / "kit").exists()


def test_dataset_toml_and_command_follow_the_recipe(tmp_path):
    photos = [_photo("a", 1.0), _photo("b", 0.5)]
    settings = KitSettings(resolution=64, jitters=1, base_checkpoint="realvis.safetensors")
    kit = write_kit(tmp_path / "kit", "bob", make_lora(TinySDXL(), only=4), photos, settings)
    config = tomllib.loads(kit.dataset.read_text("utf-8"))
    subsets = config["datasets"][0]["subsets"]
    assert [s["num_repeats"] for s in subsets] == [4, 2]
    assert config["datasets"][0]["resolution"] == 64
    for subset in subsets:
        images = sorted(p.name for p in (tmp_path / "kit" / subset["image_dir"]).glob("*.png"))
        mask_dir = tmp_path / "kit" / subset["conditioning_data_dir"]
        masks = sorted(p.name for p in mask_dir.iterdir())
        assert images == masks and len(images) == 2  # centred + 1 jitter, a mask for each
    assert kit.images == 4
    command = kit.command
    assert command[command.index("--network_weights") + 1] == str(kit.lora)
    for flag in ("--dim_from_weights", "--network_train_unet_only", "--masked_loss",
                 "--cache_latents", "--gradient_checkpointing"):  # fmt: skip
        assert flag in command
    assert command[command.index("--learning_rate") + 1] == "0.0001"
    assert command[command.index("--max_train_steps") + 1] == "50"
    assert command[command.index("--clip_skip") + 1] == "2"
    assert "realvis.safetensors" in (tmp_path / "kit" / "train.sh").read_text()


def test_a_non_empty_folder_is_refused(tmp_path):
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "mine.txt").write_text("x")
    with pytest.raises(HyperLoRAError, match="not empty"):
        write_kit(tmp_path / "kit", "a", make_lora(TinySDXL(), only=4), [_photo()])


def test_masks_weigh_face_one_background_small_and_padding_zero():
    # The face touches the left edge: the crop reaches outside the photo there.
    photo = FacePhoto(Image.new("RGB", (200, 200), "white"), (0, 60, 60, 120), 1.0, "edge")
    crop = make_crops(photo, size=64, jitters=0)[0]
    mask = np.asarray(crop.mask)
    face_centre = (32, 32)  # the crop is centred on the face box
    assert mask[face_centre] == 255
    assert mask[63, 63] == round(255 * 0.1)  # in the photo, far from the head
    assert mask[32, 2] == 0  # left of the photo
    assert np.asarray(crop.image)[32, 2].tolist() == [127, 127, 127]


def test_jittered_crops_are_seeded_and_differ():
    photo = _photo()
    a = make_crops(photo, size=32, jitters=2, seed=1)
    b = make_crops(photo, size=32, jitters=2, seed=1)
    assert [np.asarray(c.image).tobytes() for c in a] == [np.asarray(c.image).tobytes() for c in b]
    assert len({np.asarray(c.image).tobytes() for c in a}) == 3
    assert sum(c.weight for c in a) == pytest.approx(1.0)


def test_cli_kit_detects_the_faces_and_writes_the_kit(tmp_path, capsys):
    from safetensors.torch import save_file

    from hyperlora_ext import cli
    from tests import fake_antelopev2
    from tests.encoders._photos import face_photo

    models = tmp_path / "models"
    fake_antelopev2.build(models / "insightface" / "models" / "antelopev2")
    refs = []
    for i, box in enumerate([(210, 90, 430, 390), (150, 60, 330, 420)]):
        refs += ["--ref", str(tmp_path / f"p{i}.png")]
        face_photo(faces=(box,)).save(refs[-1])
    lora_file = tmp_path / "alice.safetensors"
    save_file(make_lora(TinySDXL(), style="diffusers", only=8), lora_file)
    out = ["--out", str(tmp_path / "kit"), "--resolution", "64", "--models-dir", str(models)]
    argv = ["kit", *refs, "--weight", "1", "--weight", "0.5", "--lora", str(lora_file), *out]
    assert cli.main(argv) == 0, capsys.readouterr().err
    written = load_file(tmp_path / "kit" / "alice.safetensors")
    assert all(key.startswith("lora_unet_input_blocks_4_1_") for key in written)
    assert len(list((tmp_path / "kit" / "data").rglob("img/*.png"))) == 6
    blank = tmp_path / "blank.png"
    face_photo(faces=()).save(blank)
    argv = ["kit", "--ref", str(blank), "--lora", str(lora_file), "--out", str(tmp_path / "k2"),
            "--models-dir", str(models)]  # fmt: skip
    assert cli.main(argv) == 1
    assert "--ref" in capsys.readouterr().err
