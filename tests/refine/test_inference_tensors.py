"""Refine around a UNet whose weights are inference tensors (Forge 2 loads checkpoints so)."""

import pytest
import torch
from torch import nn

from hyperlora_ext.refine import inference_tensors
from hyperlora_ext.refine.inference_tensors import autograd_usable
from hyperlora_ext.refine.trainer import RefineOutOfMemoryError, RefineSettings, refine
from tests.refine.tiny import assert_restored, crops, identity, tiny_model, unet_state

CAPTION = "fcsks fxhks fhyks, a photo of a person"


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict([*model.named_parameters(), *model.named_buffers()])


def _assert_given_back(unet, originals, before):
    """The module holds the very tensor objects it had (still inference tensors), bit-exact."""
    now = _tensors(unet)
    assert now.keys() == originals.keys()
    assert all(now[name] is tensor for name, tensor in originals.items())
    assert all(tensor.is_inference() for tensor in now.values())
    assert_restored(unet, before)


def test_an_inference_tensor_unet_trains_like_a_normal_one_and_keeps_its_tensors():
    sd_model, model = tiny_model(inference=True)
    originals = _tensors(model.unet)
    assert originals and all(t.is_inference() for t in originals.values())
    before = unet_state(model.unet)
    lora = identity(sd_model)
    settings = RefineSettings(steps=3, learning_rate=1e-2)
    result = refine(model, lora, crops(), CAPTION, settings)
    _assert_given_back(model.unet, originals, before)
    assert result.steps_done == 3 and len(set(result.losses)) == 3
    assert any(not torch.equal(result.lora[k], lora[k].float()) for k in lora)
    sd_plain, plain = tiny_model()
    expected = refine(plain, identity(sd_plain), crops(), CAPTION, settings)
    assert result.losses == expected.losses
    assert all(torch.equal(result.lora[k], expected.lora[k]) for k in lora)


def _oom(x_t, t, cond):
    raise RuntimeError("CUDA error: out of memory")


def _boom(x_t, t, cond):
    raise ValueError("boom in the UNet")


@pytest.mark.parametrize(
    ("ending", "error"),
    [("error", ValueError), ("out of memory", RefineOutOfMemoryError), ("interrupt", None)],
)
def test_the_original_tensors_come_back_after_every_ending(ending, error):
    sd_model, model = tiny_model(inference=True)
    originals, before = _tensors(model.unet), unet_state(model.unet)
    denoise, calls = model.denoise, []

    failure = {"error": _boom, "out of memory": _oom}.get(ending)

    def counted(x_t, t, cond):
        calls.append(len(x_t))
        if failure is not None and len(calls) == 3:  # in the second step
            failure(x_t, t, cond)
        return denoise(x_t, t, cond)

    model.denoise = counted
    settings = RefineSettings(steps=4, micro_batch=1 if ending == "out of memory" else 2)
    stop = (lambda: len(calls) >= 3) if ending == "interrupt" else None
    if error is None:
        result = refine(model, identity(sd_model), crops(), CAPTION, settings, should_stop=stop)
        assert result.interrupted and result.steps_done == 1
    else:
        with pytest.raises(error):
            refine(model, identity(sd_model), crops(), CAPTION, settings)
    _assert_given_back(model.unet, originals, before)


def test_out_of_memory_while_copying_is_clear_and_what_was_swapped_goes_back(monkeypatch):
    sd_model, model = tiny_model(inference=True)
    originals, before = _tensors(model.unet), unet_state(model.unet)
    copy, made = inference_tensors._copy, []

    def scarce(tensor):
        if len(made) == 10:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        made.append(tensor)
        return copy(tensor)

    monkeypatch.setattr(inference_tensors, "_copy", scarce)
    with pytest.raises(RefineOutOfMemoryError, match=r"copying the UNet's weights.*second copy"):
        refine(model, identity(sd_model), crops(), CAPTION, RefineSettings(steps=1))
    assert len(made) == 10
    _assert_given_back(model.unet, originals, before)


def test_only_inference_tensors_are_swapped_each_once_and_put_back_when_the_block_fails():
    with torch.inference_mode():
        shared = nn.Linear(3, 3)
        model = nn.Sequential(shared, nn.BatchNorm1d(3), shared)  # a tied layer and buffers
    model.append(nn.Linear(3, 3))  # a normal layer: left alone
    originals = _tensors(model)
    normal = model[3].weight
    with pytest.raises(RuntimeError, match="inside"), autograd_usable(model) as swapped:
        assert swapped == 7  # the tied weight and bias once, BN: weight, bias and 3 buffers
        inside = _tensors(model)
        assert model[0].weight is model[2].weight  # still one tensor for the tied layer
        assert not any(t.is_inference() for t in inside.values())
        assert not any(p.requires_grad for name, p in inside.items() if not name.startswith("3."))
        assert inside["3.weight"] is normal
        for name, tensor in inside.items():
            assert torch.equal(tensor, originals[name]), name
        raise RuntimeError("inside the block")
    assert all(_tensors(model)[name] is tensor for name, tensor in originals.items())
