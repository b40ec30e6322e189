"""CLIP vision loader: three on-disk layouts, hidden_states[-2], dtypes, refusals."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hyperlora_ext.encoders.clip_encoder import load_clip_vision
from hyperlora_ext.errors import CheckpointError, ModelNotFoundError
from tests.factories import write_tiny_clip

LAYOUTS = ("hf_full", "vision_folder", "vision_file")


def _pixels(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def _transformers_reference(folder, pixels) -> torch.Tensor:
    """hidden_states[-2] computed by transformers' own loading of the saved folder."""
    from transformers import CLIPVisionModel

    model = CLIPVisionModel.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        return model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    return {layout: write_tiny_clip(root / layout, layout=layout) for layout in LAYOUTS}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_give_hidden_states_minus_two(clips, layout):
    encoder = load_clip_vision(clips[layout], expected_hidden_size=32)
    assert (encoder.hidden_size, encoder.dtype, encoder.device.type) == (32, torch.float32, "cpu")
    pixels = _pixels()
    out = encoder.encode(pixels)
    assert out.shape == (2, 257, 32)
    # all three layouts hold the same vision weights (same seed)
    expected = _transformers_reference(clips["vision_folder"], pixels)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_full_clip_reads_only_the_vision_tower(clips, tmp_path):
    folder = tmp_path / "full"
    folder.mkdir()
    (folder / "config.json").write_text((clips["hf_full"] / "config.json").read_text())
    state = load_file(str(clips["hf_full"] / "model.safetensors"))
    vision = {k: v for k, v in state.items() if not k.startswith("text_model.")}
    assert len(vision) < len(state)
    save_file(vision, str(folder / "model.safetensors"))  # text tower absent: still loads
    out = load_clip_vision(folder, expected_hidden_size=32).encode(_pixels(1))
    reference = load_clip_vision(clips["hf_full"], expected_hidden_size=32)
    torch.testing.assert_close(out, reference.encode(_pixels(1)))


def test_single_file_without_prefix(clips, tmp_path):
    state = load_file(str(clips["vision_file"]))
    path = tmp_path / "bare.safetensors"
    save_file({k.removeprefix("vision_model."): v for k, v in state.items()}, str(path))
    out = load_clip_vision(path, expected_hidden_size=32).encode(_pixels(1))
    reference = load_clip_vision(clips["vision_file"], expected_hidden_size=32)
    torch.testing.assert_close(out, reference.encode(_pixels(1)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(clips, dtype):
    encoder = load_clip_vision(clips["hf_full"], dtype=dtype, expected_hidden_size=32)
    out = encoder.encode(_pixels(1))
    assert out.dtype == dtype == encoder.dtype
    full = load_clip_vision(clips["hf_full"], expected_hidden_size=32).encode(_pixels(1))
    assert (out.float() - full).abs().max() < 0.05 * full.abs().max()


def test_vit_h_refused(tmp_path):
    # only the header matters for the refusal: a ViT-H/14-sized vision tower (hidden 1280)
    path = tmp_path / "clip_h.safetensors"
    prefix = "vision_model.embeddings."
    save_file(
        {
            prefix + "patch_embedding.weight": torch.zeros(1280, 3, 14, 14),
            prefix + "position_embedding.weight": torch.zeros(257, 1280),
            "vision_model.encoder.layers.0.mlp.fc1.weight": torch.zeros(16, 1280),
        },
        str(path),
    )
    with pytest.raises(CheckpointError) as info:
        load_clip_vision(path)
    message = str(info.value)
    assert "hidden size 1280" in message and "ViT-H/14" in message
    assert "openai/clip-vit-large-patch14" in message


@pytest.mark.parametrize("layout", LAYOUTS)
def test_wrong_width_refused(clips, layout):
    with pytest.raises(CheckpointError, match="openai/clip-vit-large-patch14"):
        load_clip_vision(clips[layout])  # tiny (32) where ViT-L/14 (1024) is expected


def test_missing_config(clips, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(
        (clips["hf_full"] / "model.safetensors").read_bytes()
    )
    with pytest.raises(ModelNotFoundError, match=r"config\.json is missing"):
        load_clip_vision(tmp_path, expected_hidden_size=32)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "bert", "hidden_size": 32}, "type 'bert', not CLIP"),
        ({"hidden_size": 32}, "type None, not CLIP"),
        ({"model_type": "clip", "vision_config": [1, 2]}, "not a usable CLIP config"),
        ({"model_type": "clip_vision_model", "hidden_size": "wide"}, "config.json"),
        ([[[[]]]], "not CLIP"),
    ],
)
def test_a_config_of_another_model_names_the_file(clips, tmp_path, config, message):
    import json
    import shutil

    folder = tmp_path / "clip"
    shutil.copytree(clips["hf_full"], folder)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message) as info:
        load_clip_vision(folder, expected_hidden_size=32)
    assert "config.json" in str(info.value)


def test_missing_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no CLIP vision encoder"):
        load_clip_vision(tmp_path / "absent.safetensors")


def test_not_a_clip_file(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"latents": torch.zeros(1, 8, 4)}, str(path))
    with pytest.raises(CheckpointError, match="no CLIP vision-tower weights"):
        load_clip_vision(path)


def test_truncated_weights(clips, tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(json.loads((clips["vision_folder"] / "config.json").read_text()))
    )
    data = (clips["vision_folder"] / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_clip_vision(folder, expected_hidden_size=32)


def test_missing_layer_weights(clips, tmp_path):
    state = load_file(str(clips["vision_file"]))
    del state["vision_model.encoder.layers.0.self_attn.k_proj.weight"]
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path))
    with pytest.raises(
        CheckpointError, match=r"missing key .*layers\.0\.self_attn\.k_proj\.weight"
    ):
        load_clip_vision(path, expected_hidden_size=32)


def test_missing_weights(clips, tmp_path):
    (tmp_path / "config.json").write_text((clips["hf_full"] / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelNotFoundError, match=r"model\.safetensors: file is missing"):
        load_clip_vision(tmp_path, expected_hidden_size=32)
