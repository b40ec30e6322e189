"""sd-webui-controlnet's hooks (A1111), replayed on the A1111 double in their real order.

Read from Mikubill/sd-webui-controlnet at 56cec5b2: ``scripts/controlnet.py`` (class ``Script``)
and ``scripts/hook.py`` (``UnetHook``). What HyperLoRA's hooks share the job with:

- ``process(p)`` (or, with a refiner, ``before_process_batch(p)``) runs ``controlnet_main_entry``:
  the previous job's hook is restored first (``latest_network.restore()``: a failed job skipped
  ``postprocess``), then, with enabled units, ``UnetHook.hook`` replaces the UNet's ``forward``
  (``model._original_forward = model.forward``; ``model.forward = forward_webui``), which adds each
  control model's residuals to the UNet's output;
- an IP-Adapter/InstantID face-embedding unit swaps each ``attn2``'s forward for a hacked one that
  still calls ``to_q/to_k/to_v/to_out`` (so merged LoRA deltas apply) and adds the image-prompt
  attention times the unit's weight (0 in the authors' InstantID workflow);
- ``postprocess(p, processed)`` restores both (``forward`` back, the attribute deleted).

A unit is the dict the API sends (``enabled``, ``module``, ``model``, ``weight``,
``guidance_start``, ``guidance_end``). The control residual is a fixed function of the unit (the
double has no control models); the guidance range is not modelled: the residual acts at every
step.
"""

from __future__ import annotations

import torch
from modules import scripts

FILENAME = "extensions/sd-webui-controlnet/scripts/controlnet.py"
FACE_EMBEDDING = ("instant_id_face_embedding", "ip-adapter_face_id")  # IP-Adapter kind units


class ControlNet(scripts.Script):
    def __init__(self):
        self.latest_network = None

    def title(self):
        return "ControlNet"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args, **kwargs):
        if getattr(p, "refiner_checkpoint", None) is None:
            self._main_entry(p, args)

    def before_process_batch(self, p, *args, **kwargs):
        if getattr(p, "refiner_checkpoint", None) is not None:
            self._main_entry(p, args)

    def postprocess(self, p, processed, *args):
        if self.latest_network is None:
            return
        self.latest_network.restore()
        self.latest_network = None

    def _main_entry(self, p, units):
        if self.latest_network is not None:
            self.latest_network.restore()  # always restore (~0.05s)
        enabled = [u for u in units if isinstance(u, dict) and u.get("enabled", True)]
        if not enabled:
            self.latest_network = None
            return
        self.latest_network = UnetHook()
        self.latest_network.hook(p.sd_model.model.diffusion_model, enabled)


class UnetHook:
    def __init__(self):
        self.model = None
        self.attn2 = []

    def hook(self, model, units):
        self.model = model
        original = model.forward
        controls = [u for u in units if u.get("module") not in FACE_EMBEDDING]

        def forward_webui(x, context):
            out = original(x, context)
            for unit in controls:
                out = out + float(unit.get("weight", 1.0)) * _residual(out, unit)
            return out

        model._original_forward = model.forward
        model.forward = forward_webui
        for unit in units:
            if unit.get("module") in FACE_EMBEDDING:
                self._hack_attn2(model, float(unit.get("weight", 1.0)))

    def _hack_attn2(self, model, weight):
        for name, module in model.named_modules():
            if name.endswith("attn2") and "forward" not in vars(module):
                module.forward = _attn_forward_hacked(module, weight)
                self.attn2.append(module)

    def restore(self):
        if self.model is not None and hasattr(self.model, "_original_forward"):
            self.model.forward = self.model._original_forward
            del self.model._original_forward
        for module in self.attn2:
            del module.forward
        self.attn2 = []


def _residual(out, unit):
    g = torch.Generator().manual_seed(sum(map(ord, str(unit.get("model", "")))) % (2**31))
    return 0.01 * torch.randn(out.shape[-1], generator=g).to(out.dtype)


def _attn_forward_hacked(module, weight):
    cls_forward = type(module).forward

    def forward(x, context):
        out = cls_forward(module, x, context)  # to_q/to_k/to_v/to_out, with merged deltas
        return out + weight * module.to_out(module.to_q(x))  # the image-prompt attention

    return forward
