"""Forge adapter: patch the identity LoRA into Forge's UNet patcher (Forge 2, Forge 1, reForge).

Forge replaced A1111's LoRA code with patchers (docs/webui-integration.md). The identity LoRA
goes through Forge's own key mapping and loader and is added to a *clone* of the current UNet
patcher in ``process_before_every_sampling``; the clone is assigned back to
``p.sd_model.forge_objects.unet``.
Forge merges the patches when sampling loads the UNet and re-merges only when the list of patch
identifiers changes, so the identifier (the ``filename``) carries a digest of the LoRA content.

Why each rule:
- Clone, never mutate: ``forge_objects.unet`` is shared with ``forge_objects_after_applying_lora``
  (the user's LoRAs); patching it in place would leak the identity into later jobs.
- Apply in ``process_before_every_sampling``: Forge resets ``forge_objects`` from
  ``after_applying_lora`` right before every sampling pass (twice with hires fix), so patches
  made earlier are lost. ``apply`` is idempotent: it first removes any earlier HyperLoRA patch.
- Shapes come from the live model: Forge accepts any key that names a parameter and would fail
  (or pad the weight) while merging a LoRA of another width, so mismatching layers are skipped.
- Restore: Forge's ``LoraLoader`` keeps the original Parameters and reinstalls them on refresh,
  which is bit-exact for fp16/bf16/fp32/fp8. Quantised UNets (NF4/FP4/GGUF) re-quantise merged
  weights, so there the LoRA is applied online (per forward, no weight is written).
"""

from __future__ import annotations

import logging
import math
import sys
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from hyperlora_ext.errors import UnsupportedForgeError
from hyperlora_ext.lora_format import lora_digest
from hyperlora_ext.webui.adapter import NAME_PREFIX, ApplyReport, Patch, unsupported_reason

log = logging.getLogger(__name__)

FILENAME_PREFIX = "hyperlora:"
Generation = Literal["forge2", "ldm_patched"]


def detect_generation() -> Generation | None:
    """``"forge2"`` (``backend/``), ``"ldm_patched"`` (Forge 1, reForge) or None (not Forge)."""
    try:
        import backend.patcher.lora  # noqa: F401

        return "forge2"
    except ImportError:
        pass
    try:
        import ldm_patched.modules.lora  # noqa: F401

        return "ldm_patched"
    except ImportError:
        return None


@dataclass
class _Prepared:
    """Forge patches for one LoRA on one model, reused by the second hires-fix call."""

    digest: str
    model: weakref.ref
    patches: dict[str, Any]  # Forge parameter key -> patch value, only layers that fit
    layers: dict[str, str] = field(default_factory=dict)  # parameter key -> kohya layer name
    expected: int = 0
    reasons: list[str] = field(default_factory=list)


class ForgeAdapter:
    """Applies and removes the identity LoRA on Forge's UNet patcher.

    ``apply(p, lora, weight, name)`` is called from ``process_before_every_sampling``;
    ``restore(p)`` after the job (and defensively before the next one).
    """

    def __init__(self, generation: Generation | None = None) -> None:
        generation = generation or detect_generation()
        if generation is None:
            raise UnsupportedForgeError(
                "This WebUI has neither Forge's backend.patcher.lora (Forge 2) nor "
                "ldm_patched (Forge 1 / reForge); use the A1111 adapter instead."
            )
        self.generation: Generation = generation
        self._prepared: dict[str, _Prepared] = {}  # by digest, for the LoRAs of the current job

    # ------------------------------------------------------------------ apply

    def apply(
        self, p: Any, lora: Mapping[str, torch.Tensor], weight: float, name: str
    ) -> ApplyReport:
        """Add ``lora`` at ``weight`` to a clone of the current UNet patcher and assign it back.

        ``name`` is the identity digest: it becomes the patch identifier, which is all Forge
        compares to decide whether to re-merge.
        """
        return self.apply_all(p, [Patch(lora, weight, name)])[0]

    def apply_all(self, p: Any, patches: Sequence[Patch]) -> list[ApplyReport]:
        """Every LoRA of ``patches`` as its own patch entry (own identifier and strength) on one
        clone of the current UNet patcher, assigned back."""
        objects = _forge_objects(p)
        reason = unsupported_reason(p.sd_model)
        if reason is not None:
            self.restore(p)
            return [_refused(patch.lora, reason) for patch in patches]
        unet = objects.unet
        prepared = [self._prepare(unet, patch.lora, _digest(patch)) for patch in patches]
        self._prepared = {item.digest: item for item in prepared}  # forget older identities
        clone = unet.clone()
        if self.generation == "forge2":
            _drop_ours(clone.lora_patches)
        else:
            _drop_ours_ldm(clone, getattr(unet, "hyperlora_patch_ids", frozenset()))
            clone.hyperlora_patch_ids = frozenset(
                id(value) for item in prepared for value in item.patches.values()
            )
        reports = [
            self._add(clone, item, patch.weight, unet.model)
            for item, patch in zip(prepared, patches, strict=True)
        ]
        objects.unet = clone
        return reports

    def _add(self, clone: Any, prepared: _Prepared, weight: float, model: Any) -> ApplyReport:
        if self.generation == "forge2":
            accepted = clone.add_patches(
                filename=FILENAME_PREFIX + prepared.digest,
                patches=prepared.patches,
                strength_patch=float(weight),
                online_mode=_needs_online(model),
            )
        else:
            accepted = clone.add_patches(prepared.patches, float(weight))  # positional there
        reasons = prepared.reasons + [
            f"{prepared.layers[key]}: Forge did not accept {key}"
            for key in prepared.patches
            if key not in accepted
        ]
        report = ApplyReport(
            matched=len(accepted),
            expected=prepared.expected,
            skipped=prepared.expected - len(accepted),
            reasons=tuple(reasons),
        )
        if report.skipped:
            log.warning("HyperLoRA: %s patched; skipped: %s", report.summary(), reasons[:3])
        return report

    def check(self, p: Any, lora: Mapping[str, torch.Tensor], name: str) -> ApplyReport:
        reason = unsupported_reason(p.sd_model)
        expected = _layer_count(lora)
        if reason is not None:
            return ApplyReport(0, expected, expected, (reason,))
        prepared = self._prepare(_forge_objects(p).unet, lora, _digest(Patch(lora, 0.0, name)))
        matched = len(prepared.patches)
        return ApplyReport(matched, expected, expected - matched, tuple(prepared.reasons))

    def _prepare(self, unet: Any, lora: Mapping[str, torch.Tensor], digest: str) -> _Prepared:
        cached = self._prepared.get(digest)
        if cached is not None and cached.model() is unet.model:
            return cached
        load_lora, model_lora_keys_unet = _loader_functions(self.generation)
        key_map = model_lora_keys_unet(unet.model, {})  # the default dict is shared in Forge
        result = load_lora(_tensor_alphas(lora), key_map)
        patches = result[0] if isinstance(result, tuple) else result  # reForge: dict only
        shapes = {key: _logical_shape(param) for key, param in unet.model.named_parameters()}
        prepared = _Prepared(digest, weakref.ref(unet.model), {}, expected=_layer_count(lora))
        for layer in _layer_names(lora):
            key = key_map.get(layer)
            if key is None or key not in patches:
                prepared.reasons.append(f"{layer}: no such layer in this checkpoint")
                continue
            delta, live = _delta_shape(patches[key]), shapes.get(key)
            if not _fits(delta, live):
                prepared.reasons.append(f"{layer}: shape {live} does not match the LoRA's {delta}")
                continue
            prepared.patches[key] = patches[key]
            prepared.layers[key] = layer
        self._prepared[digest] = prepared
        return prepared

    # ------------------------------------------------------------------ restore

    def restore(self, p: Any = None) -> None:
        """Remove the identity: drop our patch and reinstall the pre-job UNet weights.

        Forge 2: refresh the LoRA loader from ``forge_objects_after_applying_lora`` (the user's
        LoRAs), which puts the original Parameters back. Forge 1 / reForge restore their
        backups themselves when the next UNet without our patch is loaded.
        """
        sd_model: Any = getattr(p, "sd_model", None)
        if sd_model is None:  # no job at hand: the loaded checkpoint
            sd_model = getattr(sys.modules.get("modules.shared"), "sd_model", None)
        objects = getattr(sd_model, "forge_objects", None)
        if objects is None:
            return
        if self.generation == "ldm_patched":
            if getattr(objects.unet, "hyperlora_patch_ids", None):
                clean = objects.unet.clone()
                _drop_ours_ldm(clean, objects.unet.hyperlora_patch_ids)
                objects.unet = clean
            return
        if _has_ours(objects.unet.lora_patches):
            clean = objects.unet.clone()
            _drop_ours(clean.lora_patches)
            objects.unet = clean
        reference = getattr(sd_model, "forge_objects_after_applying_lora", None)
        if reference is None or _has_ours(reference.unet.lora_patches):
            reference = sd_model.forge_objects_original
        if FILENAME_PREFIX in reference.unet.lora_loader.loaded_hash:
            with torch.no_grad():
                reference.unet.refresh_loras()


# ---------------------------------------------------------------------- helpers


def _digest(patch: Patch) -> str:
    return patch.name.removeprefix(NAME_PREFIX) or lora_digest(dict(patch.lora))


def _refused(lora: Mapping[str, torch.Tensor], reason: str) -> ApplyReport:
    expected = _layer_count(lora)
    return ApplyReport(0, expected, expected, (reason,))


def _forge_objects(p: Any) -> Any:
    objects = getattr(getattr(p, "sd_model", None), "forge_objects", None)
    if objects is None:
        raise UnsupportedForgeError(
            "p.sd_model has no forge_objects: this is not a Forge model; use the A1111 adapter."
        )
    return objects


def _loader_functions(generation: Generation) -> tuple[Any, Any]:
    if generation == "forge2":
        from backend.patcher.lora import load_lora, model_lora_keys_unet
    else:
        from ldm_patched.modules.lora import load_lora, model_lora_keys_unet
    return load_lora, model_lora_keys_unet


def _layer_names(lora: Mapping[str, torch.Tensor]) -> list[str]:
    suffix = ".lora_down.weight"
    return [key[: -len(suffix)] for key in lora if key.endswith(suffix)]


def _layer_count(lora: Mapping[str, torch.Tensor]) -> int:
    return len(_layer_names(lora))


def _tensor_alphas(lora: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Forge reads ``alpha.item()``: make plain-number alphas tensors."""
    return {
        key: torch.tensor(float(value))
        if key.endswith(".alpha") and not torch.is_tensor(value)
        else value
        for key, value in lora.items()
    }


def _delta_shape(value: Any) -> tuple[int, int] | None:
    """(rows, columns) of up @ down for a LoRA patch: Forge's tuple or reForge's adapter."""
    if isinstance(value, tuple):  # Forge 1/2: ("lora", (up, down, alpha, mid, dora))
        kind, weights = value if len(value) == 2 else (None, None)
    else:  # reForge: weight_adapter.LoRAAdapter with .name and .weights
        kind, weights = getattr(value, "name", None), getattr(value, "weights", None)
    if kind != "lora" or not weights:
        return None
    up, down = weights[0], weights[1]
    return up.shape[0], math.prod(down.shape[1:])


def _logical_shape(param: torch.Tensor) -> tuple[int, ...]:
    """Shape of the dequantised weight (bitsandbytes NF4/FP4 store a packed tensor)."""
    quant_state = getattr(param, "quant_state", None)
    return tuple(getattr(quant_state, "shape", None) or param.shape)


def _fits(delta: tuple[int, int] | None, shape: tuple[int, ...] | None) -> bool:
    if delta is None or shape is None:
        return True  # not a LoRA patch or not a parameter: Forge decides
    return len(shape) >= 2 and delta == (shape[0], math.prod(shape[1:]))


def _needs_online(model: Any) -> bool:
    """Quantised storage (``"nf4"``, ``"fp4"``, ``"gguf"``) cannot be restored exactly."""
    return isinstance(getattr(model, "storage_dtype", None), str)


def _is_ours(identifier: Any) -> bool:
    return isinstance(identifier, tuple) and str(identifier[0]).startswith(FILENAME_PREFIX)


def _has_ours(lora_patches: Mapping) -> bool:
    return any(_is_ours(identifier) for identifier in lora_patches)


def _drop_ours(lora_patches: dict) -> None:
    for identifier in [i for i in lora_patches if _is_ours(i)]:
        del lora_patches[identifier]


def _drop_ours_ldm(patcher: Any, ours: frozenset[int]) -> None:
    """ldm_patched keeps patches per key with no filename: drop entries holding our values."""
    if not ours:
        return
    for key in list(patcher.patches):
        entries = [entry for entry in patcher.patches[key] if id(entry[1]) not in ours]
        if entries:
            patcher.patches[key] = entries
        else:
            del patcher.patches[key]
