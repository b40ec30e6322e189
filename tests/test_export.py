import json

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from hyperlora_ext.errors import ExportExistsError, HyperLoRAError, InvalidNameError
from hyperlora_ext.export import export_lora
from hyperlora_ext.lora_format import (
    LORA_PARTS,
    kohya_to_webui_layer,
    lora_digest,
    sdxl_attention_modules,
)


def _lora(dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    """A small kohya LoRA over the first SDXL modules (diffusers-style names)."""
    gen = torch.Generator().manual_seed(0)
    lora = {}
    for name, info in list(sdxl_attention_modules().items())[:4]:
        width, cross = info["hidden_size"], info["cross_attention_dim"] or info["hidden_size"]
        for part in LORA_PARTS:
            in_features = cross if part in ("to_k", "to_v") else width
            lora[f"{name}_{part}.alpha"] = torch.tensor(4.0)
            lora[f"{name}_{part}.lora_down.weight"] = torch.randn(8, in_features, generator=gen).to(
                dtype
            )
            lora[f"{name}_{part}.lora_up.weight"] = torch.randn(width, 8, generator=gen).to(dtype)
    return lora


def test_export_writes_a_loadable_kohya_file_with_card_and_preview(tmp_path):
    lora = _lora()
    path = export_lora(
        lora, tmp_path, "Alice", model="fidelity", photos=2, preview=Image.new("RGB", (64, 64))
    )
    assert path == tmp_path / "Alice.safetensors"
    loaded = load_file(path)
    assert set(loaded) == set(lora)  # safetensors stores keys sorted
    for key, tensor in loaded.items():
        assert tensor.dtype == lora[key].dtype  # kept, so the file reproduces the live identity
        torch.testing.assert_close(tensor.float(), lora[key].float(), rtol=0, atol=0)
        assert kohya_to_webui_layer(key.split(".")[0]).startswith("diffusion_model_")
    with safe_open(path, "pt") as handle:
        meta = handle.metadata()
    assert meta["ss_base_model_version"].startswith("sdxl_")
    assert meta["ss_network_dim"] == "8" and meta["ss_network_alpha"] == "4.0"
    assert "fcsks fxhks fhyks" in meta["modelspec.description"]
    assert meta["hyperlora_digest"] == lora_digest(loaded)
    card = json.loads((tmp_path / "Alice.json").read_text())
    assert card["sd version"] == "SDXL" and card["preferred weight"] == 0.8
    assert card["activation text"] == "fcsks fxhks fhyks"
    assert Image.open(tmp_path / "Alice.preview.png").size == (64, 64)


def test_export_in_sgm_style_renames_every_module(tmp_path):
    path = export_lora(_lora(), tmp_path, "bob", model="m", photos=1, style="sgm")
    keys = list(load_file(path))
    assert all("down_blocks" not in key and "up_blocks" not in key for key in keys)
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.alpha" in keys


def test_export_never_overwrites_unless_asked(tmp_path):
    export_lora(_lora(), tmp_path, "carol", model="m", photos=1)
    first = (tmp_path / "carol.safetensors").read_bytes()
    with pytest.raises(ExportExistsError, match="already exists"):
        export_lora(_lora(torch.float32), tmp_path, "carol", model="m", photos=1)
    assert (tmp_path / "carol.safetensors").read_bytes() == first
    export_lora(_lora(torch.float32), tmp_path, "carol", model="m", photos=1, overwrite=True)
    assert not list(tmp_path.glob(".carol*"))  # no temporary files left behind


@pytest.mark.parametrize("name", ["", "   ", "..", "CON", "nul", "../../etc/passwd", "a:b"])
def test_export_refuses_names_that_are_not_plain_file_names(tmp_path, name):
    with pytest.raises(InvalidNameError, match=r"not usable|non-empty"):
        export_lora(_lora(), tmp_path, name, model="m", photos=1)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_an_existing_card_or_preview_without_overwrite(tmp_path):
    (tmp_path / "alice.json").write_text("{}")
    (tmp_path / "bob.preview.png").write_bytes(b"png")
    for name in ("alice", "bob"):
        with pytest.raises(ExportExistsError, match="already exists"):
            export_lora(_lora(), tmp_path, name, model="m", photos=1)
    assert (tmp_path / "alice.json").read_text() == "{}"
    assert not list(tmp_path.glob("*.safetensors"))


def test_export_into_a_file_says_so(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for folder in (blocker, blocker / "sub"):
        with pytest.raises(HyperLoRAError, match=r"file\.txt"):
            export_lora(_lora(), folder, "alice", model="m", photos=1)


def test_export_can_convert_the_matrices(tmp_path):
    path = export_lora(_lora(), tmp_path, "dan", model="m", photos=1, dtype=torch.float16)
    for key, tensor in load_file(path).items():
        assert tensor.dtype == (torch.float32 if key.endswith(".alpha") else torch.float16)


@pytest.mark.parametrize(("photos", "words"), [(1, "from 1 photo,"), (3, "from 3 photos,")])
def test_the_description_counts_photos_and_says_nothing_false_about_clip_skip(
    tmp_path, photos, words
):
    path = export_lora(_lora(), tmp_path, "bob", model="m", photos=photos)
    with safe_open(path, "pt") as handle:
        description = handle.metadata()["modelspec.description"]
    assert words in description and "photo(s)" not in description
    # "CLIP skip 2" was false advice for SDXL in A1111 and Forge (they use the penultimate layer)
    assert "CLIP skip 2" not in description and "penultimate layer" in description
