"""Refine's training core on the tiny SDXL: step 0, what changes, loss, seeds, masks, restore."""

import copy

import pytest
import torch

from hyperlora_ext.refine.lora_path import TrainableLoRA, find_layers, group_layers
from hyperlora_ext.refine.schedule import masked_mse, noisy_latents, training_target
from hyperlora_ext.refine.session import UNetChangedError, training_session
from hyperlora_ext.refine.trainer import (
    RefineOutOfMemoryError,
    RefineSettings,
    Trainer,
    refine,
)
from tests.refine.tiny import (
    assert_restored,
    crops,
    identity,
    tiny_model,
    training_set,
    unet_state,
)

CAPTION = "fcsks fxhks fhyks, a photo of a person"


def _merged(sd_model, lora, strength=1.0):
    """A copy of the model with W += strength * alpha/rank * up @ down merged (float32)."""
    merged = copy.deepcopy(sd_model)
    unet = merged.model.diffusion_model
    layers = find_layers(unet, list(group_layers(lora)))
    with torch.no_grad():
        for name, parts in group_layers(lora).items():
            down, up = parts["lora_down.weight"], parts["lora_up.weight"]
            scale = strength * float(parts["alpha"]) / down.shape[0]
            layers[name].weight += scale * (up @ down)
    return merged


def _inputs(model, data, seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, 1000, (batch,), generator=g)
    noise = torch.randn((batch, *data.latents.shape[1:]), generator=g)
    x_t = noisy_latents(data.latents[:batch], noise, model.alphas_cumprod, t)
    cond = {"crossattn": data.cond["crossattn"].expand(batch, -1, -1).float()}
    return x_t, t, cond, noise


def test_additive_path_at_step_0_equals_the_merged_weights():
    sd_model, model = tiny_model()
    lora = identity(sd_model)
    data = training_set(model)
    x_t, t, cond, _ = _inputs(model, data)
    with torch.no_grad():
        merged_out = _merged(sd_model, lora).apply_model(x_t, t, cond)
        plain_out = sd_model.apply_model(x_t, t, cond)
        trainable = TrainableLoRA(lora)
        layers = find_layers(model.unet, list(group_layers(lora)))
        with training_session(model.unet, trainable, layers):
            path_out = model.denoise(x_t, t, cond)
    assert not torch.allclose(plain_out, merged_out, atol=1e-4)  # the identity does something
    torch.testing.assert_close(path_out, merged_out, rtol=1e-5, atol=1e-6)


def test_only_the_lora_changes_and_the_unet_comes_back_bit_exact():
    sd_model, model = tiny_model()
    lora = identity(sd_model)
    before = unet_state(model.unet)
    result = refine(model, lora, crops(), CAPTION, RefineSettings(steps=3, learning_rate=1e-2))
    assert_restored(model.unet, before)
    assert result.lora.keys() == lora.keys() and list(result.lora) == list(lora)
    changed = [k for k in lora if not torch.equal(result.lora[k], lora[k].float())]
    assert changed and all(not k.endswith(".alpha") for k in changed)
    assert all(result.lora[k].dtype == torch.float32 for k in lora)


def _fixed_loss(model, lora, data, seed=5, batch=4):
    x_t, t, cond, noise = _inputs(model, data, seed, batch)
    target = training_target(data.latents[:batch], noise, model.alphas_cumprod, t, "eps")
    trainable = TrainableLoRA(lora)
    layers = find_layers(model.unet, list(group_layers(lora)))
    with torch.no_grad(), training_session(model.unet, trainable, layers):
        out = model.denoise(x_t, t, cond)
    return float(masked_mse(out, target, data.masks[:batch]).mean())


def test_loss_decreases_on_a_tiny_overfit_set():
    sd_model, model = tiny_model()
    lora = identity(sd_model)
    data = training_set(model)
    settings = RefineSettings(steps=15, learning_rate=3e-3)
    result = Trainer(model, lora, data, settings).run()
    assert len(result.losses) == 15
    assert _fixed_loss(model, result.lora, data) < 0.9 * _fixed_loss(model, lora, data)


def test_a_fixed_seed_gives_identical_results_and_another_seed_does_not():
    runs = []
    for seed in (7, 7, 8):
        sd_model, model = tiny_model()
        settings = RefineSettings(steps=3, learning_rate=1e-3, seed=seed)
        runs.append(refine(model, identity(sd_model), crops(), CAPTION, settings))
    assert runs[0].losses == runs[1].losses
    assert all(torch.equal(runs[0].lora[k], runs[1].lora[k]) for k in runs[0].lora)
    assert runs[0].losses != runs[2].losses


def test_micro_batches_accumulate_to_the_full_batch_and_checkpointing_changes_nothing():
    results = []
    for micro, checkpointing in ((4, False), (1, True), (2, True)):
        sd_model, model = tiny_model()
        settings = RefineSettings(steps=2, learning_rate=1e-3, micro_batch=micro,
                                  gradient_checkpointing=checkpointing)  # fmt: skip
        results.append(refine(model, identity(sd_model), crops(), CAPTION, settings))
    for other in results[1:]:
        assert other.losses == pytest.approx(results[0].losses, rel=1e-5)
        for key, tensor in results[0].lora.items():
            torch.testing.assert_close(other.lora[key], tensor, rtol=1e-4, atol=1e-7)


def test_an_all_zero_mask_gives_zero_gradient_and_leaves_the_lora_as_predicted():
    sd_model, model = tiny_model()
    lora = identity(sd_model)
    data = training_set(model)
    data.masks.zero_()
    x_t, t, cond, noise = _inputs(model, data)
    target = training_target(data.latents[:2], noise, model.alphas_cumprod, t, "eps")
    trainable = TrainableLoRA(lora)
    layers = find_layers(model.unet, list(group_layers(lora)))
    with training_session(model.unet, trainable, layers):
        masked_mse(model.denoise(x_t, t, cond), target, data.masks[:2]).sum().backward()
    grads = [p.grad for p in trainable.parameters()]
    assert all(g is not None and not g.any() for g in grads)
    result = Trainer(model, lora, data, RefineSettings(steps=2)).run()
    assert result.losses == [0.0, 0.0]
    assert all(torch.equal(result.lora[k], lora[k].float()) for k in lora)


def test_a_partial_mask_counts_only_its_pixels():
    prediction, target = torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.5, 0.0]]]])
    assert masked_mse(prediction, target, mask).tolist() == [pytest.approx(1.5 / 4)]


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_noise_schedule_and_targets_match_a_float64_reference(prediction):
    _, model = tiny_model(prediction)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas = torch.cumprod(1 - betas, 0)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 500, 998, 999])
    a = alphas[t].reshape(-1, 1, 1, 1)
    x_t = noisy_latents(x0.float(), noise.float(), model.alphas_cumprod, t)
    torch.testing.assert_close(x_t.double(), a.sqrt() * x0 + (1 - a).sqrt() * noise,
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    target = training_target(x0.float(), noise.float(), model.alphas_cumprod, t, prediction)
    want = noise if prediction == "eps" else a.sqrt() * noise - (1 - a).sqrt() * x0
    torch.testing.assert_close(target.double(), want, rtol=1e-5, atol=1e-6)
    assert target.dtype == torch.float32


def test_training_uses_the_checkpoints_target():
    """A v-prediction run and an eps run from the same seed differ from the first step."""
    losses = {}
    for prediction in ("eps", "v"):
        sd_model, model = tiny_model(prediction)
        losses[prediction] = refine(model, identity(sd_model), crops(), CAPTION,
                                    RefineSettings(steps=1)).losses  # fmt: skip
    assert losses["eps"] != losses["v"]


# ------------------------------------------------------------ restore after every ending
def _failing(model, fail_on_call, exc):
    calls = {"n": 0}
    denoise = model.denoise

    def wrapper(x_t, t, cond):
        calls["n"] += 1
        if calls["n"] == fail_on_call:
            raise exc
        return denoise(x_t, t, cond)

    model.denoise = wrapper
    return calls


def test_an_error_mid_training_propagates_and_the_unet_is_restored():
    sd_model, model = tiny_model()
    before = unet_state(model.unet)
    _failing(model, 3, ValueError("boom in the UNet"))
    with pytest.raises(ValueError, match="boom"):
        refine(model, identity(sd_model), crops(), CAPTION, RefineSettings(micro_batch=2))
    assert_restored(model.unet, before)


def test_interrupt_stops_between_micro_batches_and_restores():
    sd_model, model = tiny_model()
    before = unet_state(model.unet)
    asked = {"n": 0}

    def stop():
        asked["n"] += 1
        return asked["n"] > 5  # 2 micro-batches per step: the 3rd step is cut

    seen = []
    result = refine(model, identity(sd_model), crops(), CAPTION,
                    RefineSettings(steps=10, micro_batch=2),
                    progress=lambda done, total, loss: seen.append((done, total)),
                    should_stop=stop)  # fmt: skip
    assert result.interrupted and result.steps_done == 2 and len(result.losses) == 2
    assert seen == [(1, 10), (2, 10)]
    assert_restored(model.unet, before)


def test_out_of_memory_halves_the_micro_batch_and_repeats_the_step():
    sd_model, model = tiny_model()
    lora = identity(sd_model)
    before = unet_state(model.unet)
    denoise = model.denoise

    def small_only(x_t, t, cond):
        if len(x_t) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return denoise(x_t, t, cond)

    model.denoise = small_only
    result = refine(model, lora, crops(), CAPTION, RefineSettings(steps=2))
    assert result.micro_batch == 1 and result.steps_done == 2
    assert_restored(model.unet, before)
    _, fresh = tiny_model()
    plain = refine(fresh, lora, crops(), CAPTION, RefineSettings(steps=2, micro_batch=1))
    assert result.losses == plain.losses


def test_out_of_memory_at_micro_batch_one_is_a_clear_error_and_restores():
    sd_model, model = tiny_model()
    before = unet_state(model.unet)

    def never(x_t, t, cond):
        raise RuntimeError("CUDA error: out of memory")

    model.denoise = never
    with pytest.raises(RefineOutOfMemoryError, match=r"even with one image.*32 px"):
        refine(model, identity(sd_model), crops(), CAPTION)
    assert_restored(model.unet, before)


def test_a_weight_written_during_training_is_detected():
    sd_model, model = tiny_model()
    denoise = model.denoise

    def sneaky(x_t, t, cond):
        with torch.no_grad():
            model.unet.middle_block[1].proj_in.weight.add_(0.0)
        return denoise(x_t, t, cond)

    model.denoise = sneaky
    with pytest.raises(UNetChangedError, match="proj_in"):
        refine(model, identity(sd_model), crops(), CAPTION, RefineSettings(steps=1))


def test_metadata_records_the_run():
    import json

    sd_model, model = tiny_model()
    result = refine(model, identity(sd_model), crops(), CAPTION, RefineSettings(steps=2))
    record = json.loads(result.metadata["hyperlora_refine"])
    assert record["steps"] == 2 and record["learning_rate"] == 1e-4
    assert record["photos"] == ["p0", "p1"] and record["base_checkpoint"] == "tiny0000"
    assert record["loss_curve"] == [round(v, 6) for v in result.losses]
    assert record["resolution"] == 32


def test_bad_settings_are_refused_with_the_field():
    sd_model, model = tiny_model()
    with pytest.raises(Exception, match="steps must be at least 1"):
        refine(model, identity(sd_model), crops(), CAPTION, RefineSettings(steps=0))


def test_training_works_when_called_under_no_grad():
    sd_model, model = tiny_model()
    lora = identity(sd_model)
    with torch.no_grad():
        result = refine(model, lora, crops(), CAPTION, RefineSettings(steps=1, learning_rate=1e-2))
    assert any(not torch.equal(result.lora[k], lora[k]) for k in lora)


def test_the_result_is_saved_as_a_refined_identity(tmp_path):
    import json

    from hyperlora_ext.refine.save import save_refined
    from hyperlora_ext.store import IdentityStore

    sd_model, model = tiny_model()
    lora = identity(sd_model)
    store = IdentityStore(tmp_path)
    store.save("alice", lora, model="m", photos=2, reference_embedding=[0.5] * 512)
    result = refine(model, lora, crops(), CAPTION, RefineSettings(steps=2, learning_rate=1e-2))
    record = save_refined(store, "alice", result)
    assert record.name == "alice-refined" and record.photos == 2 and record.model == "m"
    assert record.reference_embedding == store.record("alice").reference_embedding != ()
    assert record.options["refine"]["loss_curve"] == [round(v, 6) for v in result.losses]
    loaded = store.load("alice-refined").lora
    for key, value in result.lora.items():
        torch.testing.assert_close(loaded[key].float(), value, rtol=1e-3, atol=1e-5)
    on_disk = json.loads((tmp_path / "hyperlora" / "alice-refined.hyperlora.json").read_text())
    assert on_disk["options"]["refined_from"] == "alice"


def test_the_models_own_checkpoint_flags_are_off_while_training_and_back_after():
    """sgm's SDXL config sets use_checkpoint: its checkpoint would drop the LoRA's gradients."""
    sd_model, model = tiny_model()
    blocks = [m for m in model.unet.modules() if hasattr(m, "attn1")]
    for block in blocks:
        block.checkpoint = True
    model.unet.middle_block[1].use_checkpoint = True
    model.unet.input_blocks[4][1].checkpoint = 1  # not a bool switch: left alone
    denoise, seen = model.denoise, []

    def spy(x_t, t, cond):
        seen.append({b.checkpoint for b in blocks} | {model.unet.middle_block[1].use_checkpoint})
        return denoise(x_t, t, cond)

    model.denoise = spy
    refine(model, identity(sd_model), crops(), CAPTION, RefineSettings(steps=1))
    assert seen and all(flags == {False} for flags in seen)
    assert all(b.checkpoint is True for b in blocks)
    assert model.unet.middle_block[1].use_checkpoint is True
    assert model.unet.input_blocks[4][1].checkpoint == 1


class _ForgeLinear(torch.nn.Module):
    """Forge 2's ``backend.operations`` Linear: an ``nn.Module`` (not an ``nn.Linear``) with
    ``in_features``/``out_features`` and a ``weight``."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight, self.bias)


def test_forge_style_linear_layers_are_found():
    sd_model, _ = tiny_model()
    lora = identity(sd_model)
    unet = sd_model.model.diffusion_model
    for module in list(unet.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, child_name, _ForgeLinear(child))
    layers = find_layers(unet, list(group_layers(lora)))
    assert len(layers) == len(group_layers(lora))
    assert all(isinstance(layer, _ForgeLinear) for layer in layers.values())
