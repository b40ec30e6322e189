import pytest
import torch

from hyperlora_ext.lora_format import (
    convert_key_style,
    kohya_to_webui_layer,
    lora_digest,
    sdxl_attention_modules,
    to_diffusers_name,
    to_sgm_name,
)


def test_sdxl_layout_has_140_modules_with_real_widths():
    modules = sdxl_attention_modules()
    assert len(modules) == 140
    widths = {name: info["hidden_size"] for name, info in modules.items()}
    assert widths["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1"] == 640
    assert widths["lora_unet_mid_block_attentions_0_transformer_blocks_9_attn2"] == 1280
    assert widths["lora_unet_up_blocks_1_attentions_2_transformer_blocks_1_attn1"] == 640
    crosses = {info["cross_attention_dim"] for name, info in modules.items() if "attn2" in name}
    assert crosses == {2048}
    assert all(info["cross_attention_dim"] is None for n, info in modules.items() if "attn1" in n)


def test_both_styles_list_the_same_layers_in_the_same_order():
    diffusers, sgm = sdxl_attention_modules("diffusers"), sdxl_attention_modules("sgm")
    assert [to_sgm_name(name) for name in diffusers] == list(sgm)
    assert [to_diffusers_name(name) for name in sgm] == list(diffusers)
    assert list(sgm.values()) == list(diffusers.values())


@pytest.mark.parametrize(
    ("kohya", "webui"),
    [
        (
            "lora_unet_down_blocks_2_attentions_1_transformer_blocks_3_attn2_to_k",
            "diffusion_model_input_blocks_8_1_transformer_blocks_3_attn2_to_k",
        ),
        (
            "lora_unet_up_blocks_0_attentions_2_transformer_blocks_0_attn1_to_out_0",
            "diffusion_model_output_blocks_2_1_transformer_blocks_0_attn1_to_out_0",
        ),
        (
            "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q",
            "diffusion_model_middle_block_1_transformer_blocks_0_attn1_to_q",
        ),
        (
            "lora_unet_output_blocks_5_1_transformer_blocks_1_attn2_to_v",
            "diffusion_model_output_blocks_5_1_transformer_blocks_1_attn2_to_v",
        ),
    ],
)
def test_kohya_names_map_to_webui_layers(kohya, webui):
    assert kohya_to_webui_layer(kohya) == webui


def test_non_unet_names_are_refused():
    with pytest.raises(ValueError, match="lora_unet_"):
        kohya_to_webui_layer("lora_te1_text_model_encoder_layers_0_mlp_fc1")


def test_convert_key_style_keeps_values():
    value = torch.ones(1)
    converted = convert_key_style({"lora_unet_mid_block_attentions_0_x.alpha": value}, "sgm")
    assert converted == {"lora_unet_middle_block_1_x.alpha": value}
    assert convert_key_style(converted, None) == converted


def test_digest_depends_on_values_not_on_key_order():
    a = {"k1": torch.arange(4.0), "k2": torch.tensor(4.0)}
    b = {"k2": torch.tensor(4.0), "k1": torch.arange(4.0)}
    assert lora_digest(a) == lora_digest(b)
    assert lora_digest(a) != lora_digest({**a, "k1": torch.arange(4.0) + 1e-3})
    assert lora_digest(a) != lora_digest({**a, "k1": torch.arange(4.0).half()})
