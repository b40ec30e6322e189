"""CLIP vision loader: three on-disk layouts, hidden_states[-2], dtypes, refusals.

transformers is the oracle: its own loading and forward pass of the same files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hyperlora_ext.encoders import clip_encoder
from hyperlora_ext.encoders.clip_encoder import load_clip_vision
from hyperlora_ext.errors import CheckpointError, ModelNotFoundError
from tests.factories import tiny_clip_vision_config, write_tiny_clip

LAYOUTS = ("hf_full", "vision_folder", "vision_file")


def _pixels(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def _transformers_reference(folder, pixels, dtype=torch.float32) -> torch.Tensor:
    """hidden_states[-2] computed by transformers' own loading of the saved folder."""
    from transformers import CLIPVisionModel

    model = CLIPVisionModel.from_pretrained(folder, local_files_only=True).to(dtype).eval()
    with torch.no_grad():
        out = model(pixel_values=pixels.to(dtype), output_hidden_states=True)
    return out.hidden_states[-2]


def _vision_folder(folder: Path, **settings) -> Path:
    """A tiny CLIPVisionModel folder with these config changes (e.g. more layers, "gelu")."""
    from transformers import CLIPVisionModel

    torch.manual_seed(1)
    config = tiny_clip_vision_config()
    for name, value in settings.items():
        setattr(config, name, value)
    CLIPVisionModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


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


@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
def test_deeper_tower_matches_transformers(tmp_path, hidden_act):
    folder = _vision_folder(tmp_path, num_hidden_layers=4, hidden_act=hidden_act)
    pixels = _pixels()
    out = load_clip_vision(folder, expected_hidden_size=32).encode(pixels)
    torch.testing.assert_close(out, _transformers_reference(folder, pixels), rtol=1e-5, atol=1e-5)


def test_bfloat16_matches_transformers(tmp_path):
    folder = _vision_folder(tmp_path, num_hidden_layers=4)
    pixels = _pixels()
    out = load_clip_vision(folder, dtype=torch.bfloat16, expected_hidden_size=32).encode(pixels)
    expected = _transformers_reference(folder, pixels, torch.bfloat16)
    assert out.dtype == expected.dtype == torch.bfloat16
    # two bfloat16 computations (8-bit mantissa) differ by a few units in the last place
    torch.testing.assert_close(out.float(), expected.float(), rtol=0.05, atol=0.05)
    full = _transformers_reference(folder, pixels)
    assert (out.float() - full).abs().max() < 0.05 * full.abs().max()


def test_unsupported_activation_refused(tmp_path):
    folder = _vision_folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"hidden_act": "silu"}))
    with pytest.raises(CheckpointError, match="activation 'silu' is not supported") as info:
        load_clip_vision(folder, expected_hidden_size=32)
    assert "config.json" in str(info.value)


@pytest.mark.parametrize(
    "config",
    [
        {"model_type": "clip_vision_model"},
        {"model_type": "clip", "vision_config": {}},
        {"model_type": "clip", "vision_config": {"hidden_size": 1024, "num_attention_heads": 16}},
        {"model_type": "clip_vision_model", "hidden_act": "gelu", "layer_norm_eps": 1e-6},
    ],
)
def test_config_fields_as_transformers_reads_them(tmp_path, config):
    """A field absent from config.json takes CLIPVisionConfig's default (ViT-B/32 sizes)."""
    from transformers import CLIPVisionConfig

    (tmp_path / "config.json").write_text(json.dumps(config))
    ours = clip_encoder._folder_config(tmp_path)
    theirs = CLIPVisionConfig.from_pretrained(tmp_path, local_files_only=True)
    assert vars(ours) == {name: getattr(theirs, name) for name in vars(ours)}


def test_saved_configs_as_transformers_reads_them(clips):
    from transformers import CLIPVisionConfig

    for layout in ("hf_full", "vision_folder"):
        ours = clip_encoder._folder_config(clips[layout])
        theirs = CLIPVisionConfig.from_pretrained(clips[layout], local_files_only=True)
        assert vars(ours) == {name: getattr(theirs, name) for name in vars(ours)}


def test_loading_imports_neither_transformers_nor_dynamo(clips):
    """torch._dynamo (~1 s) came with random init on the meta device; modeling_clip, ~0.3 s."""
    code = (
        "import sys, torch\n"
        "from hyperlora_ext.encoders.clip_encoder import load_clip_vision\n"
        f"clip = load_clip_vision({str(clips['hf_full'])!r}, expected_hidden_size=32)\n"
        "clip.encode(torch.zeros(1, 3, 224, 224))\n"
        "print(sorted(m for m in sys.modules if m.startswith(('transformers', 'torch._dynamo'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_tower_tensors_are_frozen_parameters_under_the_file_names(clips):
    encoder = load_clip_vision(clips["vision_file"], expected_hidden_size=32)
    state = load_file(str(clips["vision_file"]))
    params = dict(encoder.model.named_parameters())
    assert not any(p.requires_grad for p in params.values())
    tower = {k.removeprefix("vision_model.") for k in state if k.startswith("vision_model.")}
    unused = {k for k in tower if k.startswith(("encoder.layers.1.", "post_layernorm."))}
    assert set(params) == tower - unused  # the last layer's output is not hidden_states[-2]
    for name, param in params.items():
        assert torch.equal(param, state["vision_model." + name])
    assert encoder.to("meta").device.type == "meta"  # .to() moves every tensor
    assert {p.device.type for p in encoder.model.parameters()} == {"meta"}


def _mapped_ranges(path: Path) -> list[tuple[int, int]]:
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path)):
            start, end = line.split()[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc/self/maps")
def test_float32_weights_stay_in_the_memory_mapped_file(clips):
    path = clips["vision_folder"] / "model.safetensors"
    encoder = load_clip_vision(clips["vision_folder"], expected_hidden_size=32)
    ranges = _mapped_ranges(path.resolve())
    assert ranges, "safetensors no longer maps the file"
    for name, param in encoder.model.named_parameters():
        pointer = param.data_ptr()
        assert any(start <= pointer < end for start, end in ranges), f"{name} was copied"
    half = load_clip_vision(clips["vision_folder"], dtype=torch.bfloat16, expected_hidden_size=32)
    pointer = next(half.model.parameters()).data_ptr()
    assert not any(start <= pointer < end for start, end in _mapped_ranges(path.resolve()))


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
        ({"model_type": "clip_vision_model", "hidden_size": 1024}, "not a multiple of"),
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
