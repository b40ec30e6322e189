"""A1111Adapter on the A1111 double: where deltas land, stacking, re-application, restore."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from hyperlora_ext.webui.a1111 import A1111Adapter, network_name
from tests.webui.fake_webui.tiny_sdxl import unet_fingerprint
from tests.webui.loras import expected_delta, make_lora, target_layers


class Job:
    """The fields of ``p`` the adapter reads."""

    def __init__(self, sd_model):
        self.sd_model = sd_model


def run_unet(sd_model):
    """One sampling step: every Linear runs its patched forward, so A1111 merges lazily."""
    unet = sd_model.model.diffusion_model
    with torch.no_grad():
        x = torch.ones(1, 2, unet.w640)
        return unet(x, torch.ones(1, 4, 12, dtype=torch.float16))


def changed_layers(before, sd_model):
    after = unet_fingerprint(sd_model)
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_deltas_land_on_exactly_the_targets_with_weight_alpha_over_rank(webui):
    model = webui.load_model()
    before = unet_fingerprint(model)
    lora = make_lora(model, rank=4, alpha=2.0)
    report = A1111Adapter().apply(Job(model), lora, 0.7, "abc123")
    assert (report.matched, report.expected, report.skipped) == (560, 560, 0)
    run_unet(model)

    targets = {f"diffusion_model.{path}.weight": kohya for kohya, path in target_layers()}
    assert changed_layers(before, model) == set(targets)
    unet = model.model.diffusion_model
    for name, kohya in list(targets.items())[:40]:
        path = name[len("diffusion_model.") : -len(".weight")]
        got = unet.get_submodule(path).weight.float() - before[name].float()
        want = expected_delta(lora, kohya, 0.7).float()
        torch.testing.assert_close(got, want, atol=2e-3, rtol=2e-2)


def test_both_kohya_name_styles_give_the_same_weights(webui):
    model = webui.load_model()
    adapter = A1111Adapter()
    merged = []
    for style in ("sgm", "diffusers"):
        adapter.apply(Job(model), make_lora(model, style=style, seed=3), 1.0, f"d-{style}")
        run_unet(model)
        merged.append(unet_fingerprint(model))
        adapter.restore(Job(model))
    assert all(torch.equal(merged[0][k], merged[1][k]) for k in merged[0])
    assert any(not torch.equal(merged[0][k], unet_fingerprint(model)[k]) for k in merged[0])


def test_shape_mismatch_is_skipped_and_counted(webui):
    model = webui.load_model()
    lora = make_lora(model)
    bad = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
    lora[f"{bad}.lora_down.weight"] = torch.randn(4, 2048)  # real SDXL width, not the model's
    lora["lora_unet_not_a_layer_to_q.lora_down.weight"] = torch.randn(4, 8)
    lora["lora_unet_not_a_layer_to_q.lora_up.weight"] = torch.randn(8, 4)
    report = A1111Adapter().apply(Job(model), lora, 1.0, "mismatch")
    assert (report.matched, report.expected, report.skipped) == (560 - 1, 561, 2)
    assert any(bad in r and "shape" in r for r in report.reasons)
    assert report.matched < report.expected
    net = webui.networks.loaded_networks[-1]
    assert "diffusion_model_input_blocks_4_1_transformer_blocks_0_attn2_to_k" not in net.modules


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sd3", "refiner", "ssd"])
def test_non_sdxl_base_models_get_nothing_with_a_reason(webui, kind):
    model = webui.load_model(kind)
    before = unet_fingerprint(model)
    report = A1111Adapter().apply(Job(model), make_lora(model), 1.0, "x")
    assert report.matched == 0 and report.reasons and "SDXL" in report.reasons[0]
    assert webui.networks.loaded_networks == []
    run_unet(model)
    assert changed_layers(before, model) == set()


def test_apply_is_idempotent_and_keeps_the_list_object(webui):
    model = webui.load_model()
    loaded = webui.networks.loaded_networks
    adapter = A1111Adapter()
    lora = make_lora(model)
    for _ in range(3):
        adapter.apply(Job(model), lora, 0.5, "same")
    assert webui.networks.loaded_networks is loaded
    assert [n.name for n in loaded] == [network_name("same")]
    net = loaded[0]
    assert (net.unet_multiplier, net.te_multiplier, net.dyn_dim) == (0.5, 0.0, None)
    assert isinstance(net.modules[next(iter(net.modules))].alpha, float)


def test_weight_change_and_new_face_re_merge(webui):
    model = webui.load_model()
    adapter = A1111Adapter()
    layer = model.model.diffusion_model.get_submodule(
        "input_blocks.4.1.transformer_blocks.0.attn1.to_q"
    )
    original = layer.weight.detach().clone()
    seen = []
    for lora_seed, weight, name in [(1, 0.5, "a"), (1, 1.0, "a"), (2, 1.0, "b")]:
        adapter.apply(Job(model), make_lora(model, seed=lora_seed), weight, name)
        run_unet(model)
        seen.append(layer.weight.detach().clone())
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    delta_half, delta_full = (seen[0] - original).float(), (seen[1] - original).float()
    torch.testing.assert_close(delta_full, 2 * delta_half, atol=2e-3, rtol=2e-2)


def write_user_lora(webui, model, name="user", seed=9):
    """A user's LoRA file on the same attention layers plus a non-target layer (ff)."""
    lora = make_lora(model, seed=seed, only=16)
    lora["lora_unet_input_blocks_4_1_transformer_blocks_0_ff.lora_down.weight"] = torch.randn(2, 8)
    lora["lora_unet_input_blocks_4_1_transformer_blocks_0_ff.lora_up.weight"] = torch.randn(8, 2)
    lora["lora_unet_input_blocks_4_1_transformer_blocks_0_ff.alpha"] = torch.tensor(1.0)
    save_file(lora, str(webui.lora_dir / f"{name}.safetensors"))
    return lora


def test_stacks_with_a_user_lora_and_restores_bit_exactly(webui):
    model = webui.load_model()
    before = unet_fingerprint(model)
    user = write_user_lora(webui, model)
    webui.networks.load_networks(["user"], [1.0], [1.0], [None])
    ours = make_lora(model, seed=4)
    adapter = A1111Adapter()
    adapter.apply(Job(model), ours, 0.8, "stack")
    assert [n.name for n in webui.networks.loaded_networks] == ["user", network_name("stack")]
    run_unet(model)

    kohya, path = next(iter(target_layers()))
    got = model.model.diffusion_model.get_submodule(path).weight.float()
    want = before[f"diffusion_model.{path}.weight"].float()
    want = (
        want + expected_delta(user, kohya, 1.0).float() + expected_delta(ours, kohya, 0.8).float()
    )
    torch.testing.assert_close(got, want, atol=3e-3, rtol=2e-2)

    adapter.restore(Job(model))  # with grad enabled, as in postprocess
    assert [n.name for n in webui.networks.loaded_networks] == ["user"]
    after = unet_fingerprint(model)
    for k in before:
        if "ff" not in k:  # the user's own non-target layer stays as A1111 left it
            assert torch.equal(before[k], after[k]), k


def test_restore_works_with_grad_enabled_where_the_webui_alone_raises(webui):
    model = webui.load_model()
    adapter = A1111Adapter()
    adapter.apply(Job(model), make_lora(model), 1.0, "grad")
    run_unet(model)
    layer = model.model.diffusion_model.get_submodule(
        "middle_block.1.transformer_blocks.0.attn2.to_v"
    )
    assert torch.is_grad_enabled() and layer.weight.requires_grad
    with pytest.raises(RuntimeError, match="leaf Variable"):
        webui.networks.network_restore_weights_from_backup(layer)
    before_restore = layer.network_weights_backup.clone()
    adapter.restore(Job(model))
    assert torch.equal(layer.weight, before_restore)
    assert layer.network_current_names == ()


def test_restore_without_a_prior_apply_repairs_stale_state(webui):
    """A fresh adapter (e.g. after a crash) still finds our entries and merged layers."""
    model = webui.load_model()
    before = unet_fingerprint(model)
    A1111Adapter().apply(Job(model), make_lora(model), 1.0, "stale")
    run_unet(model)
    assert changed_layers(before, model)
    A1111Adapter().restore(Job(model))
    assert webui.networks.loaded_networks == []
    assert changed_layers(before, model) == set()


def test_missing_lora_extension_is_a_clear_error(webui, monkeypatch):
    import sys

    from hyperlora_ext.errors import HyperLoRAError

    model = webui.load_model()
    monkeypatch.delitem(sys.modules, "networks")
    with pytest.raises(HyperLoRAError, match="builtin Lora extension"):
        A1111Adapter().apply(Job(model), make_lora(model, only=4), 1.0, "x")


# ------------------------------------------------------------------ sliders: several LoRAs


def test_slider_networks_stack_and_restore_bit_exactly(webui):
    from hyperlora_ext.webui.adapter import Patch

    model = webui.load_model()
    pristine = unet_fingerprint(model)
    main, plus, minus = (make_lora(model, seed=s) for s in (1, 2, 3))
    patches = [
        Patch(main, 0.8, "main"),
        Patch(plus, 0.6, "slider+p"),
        Patch(minus, -0.6, "slider-n"),
    ]
    adapter = A1111Adapter()
    reports = adapter.apply_all(Job(model), patches)
    assert [r.matched for r in reports] == [560, 560, 560]
    networks = webui.networks.loaded_networks
    assert [(n.name, n.unet_multiplier) for n in networks] == [
        (network_name("main"), 0.8),
        (network_name("slider+p"), 0.6),
        (network_name("slider-n"), -0.6),
    ]
    run_unet(model)
    unet = model.model.diffusion_model
    for kohya, path in list(target_layers())[:20]:
        name = f"diffusion_model.{path}.weight"
        got = unet.get_submodule(path).weight.float() - pristine[name].float()
        want = sum(
            expected_delta(lora, kohya, w).float()
            for lora, w in ((main, 0.8), (plus, 0.6), (minus, -0.6))
        )
        torch.testing.assert_close(got, want, atol=3e-3, rtol=3e-2)
    adapter.restore(Job(model))
    assert webui.networks.loaded_networks == []
    after = unet_fingerprint(model)
    assert all(torch.equal(after[k], pristine[k]) for k in pristine)


def test_slider_off_in_the_next_job_leaves_only_the_identity(webui):
    from hyperlora_ext.webui.adapter import Patch

    model = webui.load_model()
    main, plus, minus = (make_lora(model, seed=s) for s in (1, 2, 3))
    adapter = A1111Adapter()
    adapter.apply_all(
        Job(model), [Patch(main, 0.8, "m"), Patch(plus, 1, "p"), Patch(minus, -1, "n")]
    )
    adapter.apply_all(Job(model), [Patch(main, 0.8, "m")])
    assert [n.name for n in webui.networks.loaded_networks] == [network_name("m")]
