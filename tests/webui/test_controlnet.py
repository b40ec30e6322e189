"""HyperLoRA beside sd-webui-controlnet's units on the A1111 double, in the extension's hook order
(``tests/webui/fake_webui/controlnet.py``): an OpenPose-style unit and InstantID's two units
(face embedding at weight 0, keypoints). The identity is applied at every sampling pass while the
UNet's forward is ControlNet's, and the UNet's weights and ControlNet's hooks come back after
finished, interrupted and failed jobs, with hires fix and batches."""

from __future__ import annotations

import importlib

import pytest
import torch

from hyperlora_ext.webui import infotext
from tests.webui.fake_webui import EXTENSION_ROOT
from tests.webui.fake_webui.tiny_sdxl import unet_fingerprint
from tests.webui.harness import ON, Harness, ours

OPENPOSE = [
    {"enabled": True, "module": "none", "model": "thibaud_xl_openpose", "weight": 0.7,
     "guidance_start": 0.0, "guidance_end": 0.7},
]  # fmt: skip
INSTANTID = [
    {"enabled": True, "module": "instant_id_face_embedding", "model": "ip-adapter_instant_id_sdxl",
     "weight": 0.0},
    {"enabled": True, "module": "instant_id_face_keypoints", "model": "control_instant_id_sdxl",
     "weight": 0.6, "guidance_start": 0.0, "guidance_end": 1.0},
]  # fmt: skip
UNITS = {"openpose": OPENPOSE, "instantid": INSTANTID}


class ControlNetHarness(Harness):
    def __init__(self, webui, monkeypatch):
        super().__init__(webui, monkeypatch)
        self.cn_module = importlib.reload(importlib.import_module(cn_module()))
        files = {
            str(EXTENSION_ROOT / "scripts" / "hyperlora.py"): self.script_class,
            self.cn_module.FILENAME: self.cn_module.ControlNet,
        }
        ad = importlib.import_module("tests.webui.fake_webui.adetailer")
        self.runner = importlib.reload(ad).runner(files)
        self.controlnet = self.runner.scripts[1]
        self.hooked: list[tuple[bool, bool, list[str]]] = []  # (forward hooked, hr, ours)
        webui.processing.sampler_step_hooks.append(self._record_hook)

    def unet(self):
        return self.model.model.diffusion_model

    def _record_hook(self, p, step):
        names = ours(n.name for n in self.webui.networks.loaded_networks)
        self.hooked.append((hasattr(self.unet(), "_original_forward"), p.is_hr_pass, names))

    def job(self, args=None, units=(), **kwargs):
        ours_args = args if isinstance(args, dict) else {"enabled": False}
        padding = [None] * (self.controlnet.args_from - 2)
        self.hooked.clear()
        return super().job([ours_args, *padding, *units], **kwargs)

    def hooks_restored(self) -> bool:
        unet = self.unet()
        attn2 = [m for n, m in unet.named_modules() if n.endswith("attn2")]
        forward = getattr(unet, "forward", None)
        return (
            getattr(forward, "__func__", None) is type(unet).forward
            and not hasattr(unet, "_original_forward")
            and not any("forward" in vars(m) for m in attn2)
        )


def cn_module() -> str:
    return "tests.webui.fake_webui.controlnet"


@pytest.fixture
def cn(webui, monkeypatch):
    harness = ControlNetHarness(webui, monkeypatch)
    yield harness
    webui.processing.sampler_step_hooks.clear()
    webui.shared.state.begin()


def _same_unet(before, model) -> bool:
    after = unet_fingerprint(model)
    return all(torch.equal(before[k], v) for k, v in after.items())


@pytest.mark.parametrize("kind", UNITS)
def test_identity_applied_under_the_units_with_hires_and_batches(cn, kind):
    before = unet_fingerprint(cn.model)
    plain = cn.image(units=UNITS[kind], enable_hr=True)
    p, processed = cn.job(ON, units=UNITS[kind], enable_hr=True, batch_size=2, n_iter=2)
    assert infotext.ERROR not in p.extra_generation_params
    assert cn.hooked and all(hooked and names for hooked, _, names in cn.hooked), cn.hooked
    assert {hr for _, hr, _ in cn.hooked} == {False, True}  # both passes of each batch
    assert not torch.equal(processed.images[0], plain)
    assert cn.hooks_restored() and _same_unet(before, cn.model)
    assert torch.equal(cn.image(units=UNITS[kind], enable_hr=True), plain)


def test_the_units_change_the_image_with_the_identity(cn):
    identity_only = cn.image(ON)
    assert not torch.equal(cn.image(ON, units=OPENPOSE), identity_only)


@pytest.mark.parametrize("kind", UNITS)
def test_interrupted_job_restores_the_unet_and_the_hooks(cn, kind):
    before = unet_fingerprint(cn.model)

    def interrupt(p, step):
        if step == 1:
            cn.webui.shared.state.interrupted = True

    cn.webui.processing.sampler_step_hooks.append(interrupt)
    cn.job(ON, units=UNITS[kind], n_iter=2)
    cn.webui.processing.sampler_step_hooks.remove(interrupt)
    cn.webui.shared.state.begin()
    assert cn.hooks_restored() and _same_unet(before, cn.model)


@pytest.mark.parametrize("kind", UNITS)
def test_failed_job_is_cleaned_up_by_the_next_job(cn, kind):
    """An exception escaping the sampler skips every postprocess: ControlNet restores its hook in
    the next job's process(), HyperLoRA its weights in the next job's before_process()."""
    plain = cn.image()
    before = unet_fingerprint(cn.model)

    def failing(p, step):
        if step == 1:
            raise RuntimeError("CUDA out of memory (simulated)")

    cn.webui.processing.sampler_step_hooks.append(failing)
    with pytest.raises(RuntimeError):
        cn.job(ON, units=UNITS[kind], enable_hr=True)
    cn.webui.processing.sampler_step_hooks.remove(failing)
    assert torch.equal(cn.image(), plain)
    assert cn.hooks_restored() and _same_unet(before, cn.model)
