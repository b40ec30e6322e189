"""AUTOMATIC1111 adapter: the identity LoRA as an in-memory network of the builtin Lora extension.

A1111 merges LoRA deltas lazily: each patched layer compares the tuple of
``(name, te_multiplier, unet_multiplier, dyn_dim)`` of ``networks.loaded_networks`` with what it
merged last (``network_current_names``) on its next forward, restores its backup and re-merges.
So applying is "put a ``network.Network`` in that list before sampling"; A1111 does the math
exactly as for a ``<lora:...>`` file. Restoring is ours: the WebUI only restores lazily, and a job
that crashes leaves the weights merged. Background: docs/webui-integration.md.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from hyperlora_ext.errors import HyperLoRAError
from hyperlora_ext.lora_format import (
    LORA_PARTS,
    group_layers,
    kohya_to_webui_layer,
    sdxl_attention_modules,
)
from hyperlora_ext.webui.adapter import NAME_PREFIX, ApplyReport, Patch, unsupported_reason

UP, DOWN, ALPHA = "lora_up.weight", "lora_down.weight", "alpha"


def network_name(digest: str) -> str:
    """The name our network carries in ``loaded_networks`` (and in A1111's error counts)."""
    return digest if digest.startswith(NAME_PREFIX) else NAME_PREFIX + digest


def target_layer_names() -> tuple[str, ...]:
    """WebUI names of the 560 SDXL attention Linears HyperLoRA may patch."""
    return tuple(
        kohya_to_webui_layer(f"{module}_{part}")
        for module in sdxl_attention_modules("sgm")
        for part in LORA_PARTS
    )


@dataclass
class InMemoryNetworkOnDisk:
    """Stands in for ``network.NetworkOnDisk``; third-party code may read these fields."""

    name: str
    filename: str = "<in-memory>"
    alias: str = ""
    metadata: dict = field(default_factory=dict)
    hash: str = ""
    shorthash: str = ""
    is_safetensors: bool = False
    sd_version: Any = None

    def read_hash(self) -> None:
        pass

    def get_alias(self) -> str:
        return self.alias or self.name


class A1111Adapter:
    """Injects the identity into ``networks.loaded_networks`` and restores the UNet bit-exactly."""

    def __init__(self) -> None:
        # network name -> (model ref, net, report), for the networks of the current job
        self._built: dict[str, tuple[Any, Any, ApplyReport]] = {}
        self._models: weakref.WeakSet = weakref.WeakSet()  # models we may have merged into
        self._targets = target_layer_names()

    def apply(
        self, p: Any, lora: Mapping[str, torch.Tensor], weight: float, name: str
    ) -> ApplyReport:
        return self.apply_all(p, [Patch(lora, weight, name)])[0]

    def apply_all(self, p: Any, patches: Sequence[Patch]) -> list[ApplyReport]:
        """One in-memory network per patch in ``loaded_networks``, each at its own multiplier."""
        networks = _networks()
        sd_model = p.sd_model
        refused = [_refusal(sd_model, patch.lora) for patch in patches]
        if any(refused):
            self._remove_ours(networks.loaded_networks)
            return [r or ApplyReport(0, 0) for r in refused]
        names = [network_name(patch.name) for patch in patches]
        built = [
            self._network_for(sd_model, patch.lora, name, networks)
            for patch, name in zip(patches, names, strict=True)
        ]
        self._built = {name: self._built[name] for name in names}  # forget older identities
        # Change the list in place: A1111 and other extensions hold references to it.
        self._remove_ours(networks.loaded_networks)
        for (net, report), patch in zip(built, patches, strict=True):
            net.te_multiplier = 0.0
            net.unet_multiplier = float(patch.weight)
            net.dyn_dim = None
            if report.matched:
                networks.loaded_networks.append(net)
                self._models.add(sd_model)
        return [report for _, report in built]

    def check(self, p: Any, lora: Mapping[str, torch.Tensor], name: str) -> ApplyReport:
        refused = _refusal(p.sd_model, lora)
        if refused is not None:
            return refused
        return self._network_for(p.sd_model, lora, network_name(name), _networks())[1]

    def restore(self, p: Any = None) -> None:
        networks = sys.modules.get("networks")
        if networks is None:
            return
        stale = self._remove_ours(networks.loaded_networks)
        models = set(self._models)
        current = getattr(p, "sd_model", None)
        if current is not None:
            models.add(current)
        for model in models:
            if stale or model in self._models or self._mentions_us(model):
                self._restore_model(model, networks)
        self._models.clear()

    def _network_for(
        self, sd_model: Any, lora: Mapping[str, torch.Tensor], full_name: str, networks: Any
    ) -> tuple[Any, ApplyReport]:
        # Build once per identity and model; hires fix and every batch reuse it.
        cached = self._built.get(full_name)
        if cached is not None and cached[0]() is sd_model:
            return cached[1], cached[2]
        mapping = getattr(sd_model, "network_layer_mapping", None)
        if mapping is None:
            networks.assign_network_names_to_compvis_modules(sd_model)
            mapping = sd_model.network_layer_mapping
        net, report = build_network(lora, full_name, mapping)
        self._built[full_name] = (weakref.ref(sd_model), net, report)
        return net, report

    @staticmethod
    def _remove_ours(loaded: list) -> bool:
        ours = [net for net in loaded if str(net.name).startswith(NAME_PREFIX)]
        if ours:
            loaded[:] = [net for net in loaded if net not in ours]
        return bool(ours)

    def _mentions_us(self, model: Any) -> bool:
        mapping = getattr(model, "network_layer_mapping", None) or {}
        for layer in self._targets:
            names = getattr(mapping.get(layer), "network_current_names", ())
            if any(str(entry[0]).startswith(NAME_PREFIX) for entry in names):
                return True
        return False

    def _restore_model(self, model: Any, networks: Any) -> None:
        mapping = getattr(model, "network_layer_mapping", None) or {}
        # Every target with a backup, not only layers that list us: after a crash A1111's record
        # of what is merged can be wrong. no_grad: the parameters require grad and hooks outside
        # sampling run with grad enabled (both in docs/webui-integration.md).
        with torch.no_grad():
            for layer in self._targets:
                module: Any = mapping.get(layer)
                if getattr(module, "network_weights_backup", None) is None:
                    continue
                networks.network_restore_weights_from_backup(module)
                module.network_current_names = ()


def _refusal(sd_model: Any, lora: Mapping[str, torch.Tensor]) -> ApplyReport | None:
    """The report for a checkpoint the identity cannot apply to at all, else None."""
    reason = unsupported_reason(sd_model)
    if reason is None:
        return None
    expected = len(group_layers(lora))
    return ApplyReport(0, expected, expected, (reason,))


def build_network(
    lora: Mapping[str, torch.Tensor], full_name: str, mapping: Mapping[str, Any]
) -> tuple[Any, ApplyReport]:
    """A ``network.Network`` holding one ``NetworkModuleLora`` per matching UNet layer."""
    network = sys.modules["network"]
    network_lora = sys.modules.get("network_lora") or __import__("network_lora")
    stub = InMemoryNetworkOnDisk(full_name, sd_version=network.SdVersion.SDXL)
    net = network.Network(full_name, stub)
    net.bundle_embeddings = {}  # A1111 iterates it; without it load_networks fails silently
    module_type = network_lora.ModuleTypeLora()
    layers = group_layers(lora)
    skipped: list[str] = []
    for kohya_layer, parts in layers.items():
        sd_key, sd_module, reason = _match(kohya_layer, parts, mapping)
        if reason:
            skipped.append(f"{kohya_layer}: {reason}")
            continue
        weights = network.NetworkWeights(
            network_key=f"{kohya_layer}.{DOWN}", sd_key=sd_key, w=_lora_weights(parts),
            sd_module=sd_module,
        )  # fmt: skip
        net.modules[sd_key] = module_type.create_module(net, weights)
    return net, ApplyReport(len(net.modules), len(layers), len(skipped), tuple(skipped))


def _match(
    kohya_layer: str, parts: Mapping[str, torch.Tensor], mapping: Mapping[str, Any]
) -> tuple[str, Any, str | None]:
    """(WebUI layer name, live module, reason to skip or None)."""
    try:
        sd_key = kohya_to_webui_layer(kohya_layer)
    except ValueError:
        return "", None, "not a UNet layer"
    module = mapping.get(sd_key)
    if module is None:
        return sd_key, None, f"no layer {sd_key} in this checkpoint"
    if UP not in parts or DOWN not in parts:
        return sd_key, None, "lora_up/lora_down weights missing"
    if type(module) is not torch.nn.Linear:  # A1111's own check is an exact type() match
        return sd_key, None, f"layer is a {type(module).__name__}, not a Linear"
    up, down = parts[UP], parts[DOWN]
    want = (up.shape[0], down.shape[-1])
    if tuple(module.weight.shape) != want or up.shape[-1] != down.shape[0]:
        shape = tuple(module.weight.shape)
        return sd_key, None, f"shape {shape} does not match the LoRA's {want}"
    return sd_key, module, None


def _lora_weights(parts: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    weights = {UP: parts[UP], DOWN: parts[DOWN]}
    if ALPHA in parts:
        # A1111 calls alpha.item(): it must be a tensor, and without it the scale is 1.0.
        weights[ALPHA] = torch.as_tensor(parts[ALPHA]).detach().cpu().reshape(())
    return weights


def _networks() -> Any:
    networks = sys.modules.get("networks")
    if networks is None or not hasattr(networks, "loaded_networks"):
        raise HyperLoRAError(
            "the WebUI's builtin Lora extension is not loaded; enable it in Settings > "
            "Extensions and restart the WebUI"
        )
    return networks
