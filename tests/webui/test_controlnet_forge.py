"""HyperLoRA beside Forge 2's built-in ControlNet (``sd_forge_controlnet``) on the Forge double:
its ``process_before_every_sampling`` takes ``p.sd_model.forge_objects.unet``, clones it with
``apply_controlnet_advanced`` (a ControlNet added to the clone's linked list; InstantID's face
embedding also replaces attn2 in the clone's ``model_options``) and assigns the clone back. The
identity and the units end up in the same sampled UNet whichever hook runs first, with hires fix
and batch count, and the weights come back bit-exactly after finished and failed jobs."""

from __future__ import annotations

import pytest
import torch

from hyperlora_ext.webui import forge
from tests.webui.fake_webui import forge_backend as fb
from tests.webui.forge_helpers import fingerprint, hook, make_model, unet_of

UNITS = {
    "openpose": [("thibaud_xl_openpose", 0.7, 0.0, 0.7)],
    "instantid": [("ip-adapter_instant_id_sdxl", 0.0, 0.0, 1.0),
                  ("control_instant_id_sdxl", 0.6, 0.0, 1.0)],
}  # fmt: skip


def controlnet_hook(units):
    """``ControlNetForForgeOfficial.process_before_every_sampling`` for each unit, in order."""

    def process_before_every_sampling(p):
        for name, strength, start, end in units:
            unet = p.sd_model.forge_objects.unet
            if name.startswith("ip-adapter"):  # the face embedding: attn2 replaced in the clone
                unet = unet.clone()
                unet.set_model_attn2_replace(("ip", strength), "input", 4)
            else:
                hint = torch.zeros(1, 3, 8, 8)
                unet = fb.apply_controlnet_advanced(
                    unet, fb.ControlNet(name), hint, strength, start, end
                )
            p.sd_model.forge_objects.unet = unet

    return process_before_every_sampling


@pytest.fixture
def memory(monkeypatch) -> fb.MemoryManagement:
    return fb.install(monkeypatch)


def both(adapter, lora, units, identity_first):
    hooks = [hook(adapter, lora), controlnet_hook(units)]
    if not identity_first:
        hooks.reverse()

    def before_every_sampling(p):
        for each in hooks:
            each(p)

    return before_every_sampling


@pytest.mark.parametrize("identity_first", [True, False], ids=["identity_first", "units_first"])
@pytest.mark.parametrize("kind", UNITS)
def test_identity_and_units_in_every_sampled_unet_then_restored(memory, kind, identity_first):
    adapter = forge.ForgeAdapter()
    sd_model = make_model(torch.float16)
    pristine = fingerprint(sd_model)
    lora = fb.kohya_lora_for(unet_of(sd_model), dtype=torch.float16)
    p = fb.FakeProcessing(sd_model, n_iter=2, enable_hr=True)
    fb.run_job(p, memory, before_every_sampling=both(adapter, lora, UNITS[kind], identity_first))
    assert len(p.sampled_unets) == 4  # two batches, each with its hires pass
    names = [name for name, *_ in UNITS[kind] if not name.startswith("ip-adapter")]
    for unet in p.sampled_unets:
        assert any(str(key[0]).startswith("hyperlora") for key in unet.lora_patches), (
            unet.lora_patches
        )
        assert [c.name for c in unet.list_controlnets()] == names
        if kind == "instantid":
            assert unet.model_options["transformer_options"]["patches_replace"]["attn2"]
    assert fingerprint(sd_model) != pristine  # merged while the job ran
    adapter.restore(p)
    assert fingerprint(sd_model) == pristine
    for kept in (
        sd_model.forge_objects_original.unet,
        sd_model.forge_objects_after_applying_lora.unet,
    ):
        assert kept.controlnet_linked_list is None and not kept.model_options["transformer_options"]


@pytest.mark.parametrize("kind", UNITS)
def test_failed_job_with_units_is_restored_by_the_next_plain_job(memory, kind):
    adapter = forge.ForgeAdapter()
    sd_model = make_model(torch.float16)
    pristine = fingerprint(sd_model)
    lora = fb.kohya_lora_for(unet_of(sd_model), dtype=torch.float16)
    p = fb.FakeProcessing(sd_model, enable_hr=True)

    def fail(_):
        raise RuntimeError("interrupted in the sampler")

    with pytest.raises(RuntimeError):
        fb.run_job(
            p, memory, before_every_sampling=both(adapter, lora, UNITS[kind], True), on_sample=fail
        )
    plain = fb.FakeProcessing(sd_model)
    fb.run_job(plain, memory)
    assert fingerprint(sd_model) == pristine
    assert plain.sampled_unets[0].controlnet_linked_list is None
