"""``extensions-builtin/Lora/networks.py``: loading LoRA files, lazy merge with backups, restore.

Faithful to A1111 1.10 for Linear layers and plain LoRAs: ``loaded_networks`` is emptied and
refilled by ``load_networks`` (same list object); each Linear merges lazily in its patched
``forward`` when the wanted ``(name, te, unet, dyn_dim)`` tuple differs from
``network_current_names``; backups are CPU copies made once; restore is in place and raises
under grad mode for parameters that require grad (as in the real WebUI).
"""

import logging
import os

import network
import network_lora
import torch
from modules import devices, shared

module_types = [network_lora.ModuleTypeLora()]
originals = None
extra_network_lora = None
available_networks = {}
available_network_aliases = {}
loaded_networks = []
networks_in_memory = {}
forbidden_network_aliases = {}


def convert_diffusers_name_to_compvis(key, is_sd2):
    import re

    m = re.match(r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", key)
    if m:
        b, kind, a, rest = int(m[1]), m[2], int(m[3]), m[4]
        kind_index = 1 if kind == "attentions" else 0
        return f"diffusion_model_input_blocks_{1 + b * 3 + a}_{kind_index}_{rest}"
    m = re.match(r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)", key)
    if m:
        kind, a, rest = m[1], int(m[2]), m[3]
        return f"diffusion_model_middle_block_{1 if kind == 'attentions' else a * 2}_{rest}"
    m = re.match(r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", key)
    if m:
        b, kind, a, rest = int(m[1]), m[2], int(m[3]), m[4]
        return (
            f"diffusion_model_output_blocks_{b * 3 + a}_{1 if kind == 'attentions' else 0}_{rest}"
        )
    return key


def assign_network_names_to_compvis_modules(sd_model):
    network_layer_mapping = {}
    for i, embedder in enumerate(sd_model.conditioner.embedders):
        for name, module in embedder.wrapped.named_modules():
            network_name = f"{i}_{name.replace('.', '_')}"
            network_layer_mapping[network_name] = module
            module.network_layer_name = network_name
    for name, module in sd_model.model.named_modules():
        network_name = name.replace(".", "_")
        network_layer_mapping[network_name] = module
        module.network_layer_name = network_name
    sd_model.network_layer_mapping = network_layer_mapping


def load_network(name, network_on_disk):
    from safetensors.torch import load_file

    net = network.Network(name, network_on_disk)
    net.mtime = os.path.getmtime(network_on_disk.filename)
    sd = load_file(network_on_disk.filename)
    mapping = shared.sd_model.network_layer_mapping
    matched = {}
    for key_network, weight in sd.items():
        key_without_parts, _, network_part = key_network.partition(".")
        key = convert_diffusers_name_to_compvis(key_without_parts, False)
        sd_module = mapping.get(key, None)
        if sd_module is None and "lora_unet" in key_without_parts:
            key = key_without_parts.replace("lora_unet", "diffusion_model")
            sd_module = mapping.get(key, None)
        if sd_module is None:
            continue
        if key not in matched:
            matched[key] = network.NetworkWeights(
                network_key=key_network, sd_key=key, w={}, sd_module=sd_module
            )
        matched[key].w[network_part] = weight
    for key, weights in matched.items():
        net_module = None
        for nettype in module_types:
            net_module = nettype.create_module(net, weights)
            if net_module is not None:
                break
        if net_module is None:
            raise AssertionError(f"no module type accepts {', '.join(weights.w)}")
        net.modules[key] = net_module
    net.bundle_embeddings = {}
    return net


def load_networks(names, te_multipliers=None, unet_multipliers=None, dyn_dims=None):
    already_loaded = {}
    for net in loaded_networks:
        if net.name in names:
            already_loaded[net.name] = net
        for _emb_name, _embedding in net.bundle_embeddings.items():  # fails without the attribute
            pass
    loaded_networks.clear()
    if any(available_network_aliases.get(name) is None for name in names):
        list_available_networks()
    for i, name in enumerate(names):
        network_on_disk = available_network_aliases.get(name)
        net = already_loaded.get(name)
        if network_on_disk is not None:
            if net is None:
                net = networks_in_memory.get(name)
            if net is None or os.path.getmtime(network_on_disk.filename) > net.mtime:
                net = load_network(name, network_on_disk)
                networks_in_memory.pop(name, None)
                networks_in_memory[name] = net
            net.mentioned_name = name
            network_on_disk.read_hash()
        if net is None:
            logging.info(f"Couldn't find network with name {name}")
            continue
        net.te_multiplier = te_multipliers[i] if te_multipliers else 1.0
        net.unet_multiplier = unet_multipliers[i] if unet_multipliers else 1.0
        net.dyn_dim = dyn_dims[i] if dyn_dims else 1.0
        loaded_networks.append(net)


def store_weights_backup(weight):
    if weight is None:
        return None
    return weight.to(devices.cpu, copy=True)


def restore_weights_backup(obj, field, weight):
    if weight is None:
        setattr(obj, field, None)
        return
    getattr(obj, field).copy_(weight)


def network_restore_weights_from_backup(self):
    weights_backup = getattr(self, "network_weights_backup", None)
    bias_backup = getattr(self, "network_bias_backup", None)
    if weights_backup is None and bias_backup is None:
        return
    if weights_backup is not None:
        restore_weights_backup(self, "weight", weights_backup)
    restore_weights_backup(self, "bias", bias_backup)


def network_apply_weights(self):
    network_layer_name = getattr(self, "network_layer_name", None)
    if network_layer_name is None:
        return
    current_names = getattr(self, "network_current_names", ())
    wanted_names = tuple(
        (x.name, x.te_multiplier, x.unet_multiplier, x.dyn_dim) for x in loaded_networks
    )

    weights_backup = getattr(self, "network_weights_backup", None)
    if weights_backup is None and wanted_names != ():
        if current_names != ():
            raise RuntimeError(
                f"{network_layer_name} - no backup weights found and current weights are not "
                "unchanged"
            )
        self.network_weights_backup = store_weights_backup(self.weight)

    bias_backup = getattr(self, "network_bias_backup", None)
    if bias_backup is None and wanted_names != ():
        bias_backup = (
            store_weights_backup(self.bias) if getattr(self, "bias", None) is not None else None
        )
        if bias_backup is not None and current_names != ():
            raise RuntimeError("no backup bias found and current bias are not unchanged")
        self.network_bias_backup = bias_backup

    if current_names != wanted_names:
        network_restore_weights_from_backup(self)  # outside no_grad, as in A1111
        for net in loaded_networks:
            module = net.modules.get(network_layer_name, None)
            if module is None:
                continue
            try:
                with torch.no_grad():
                    weight = self.weight
                    updown, ex_bias = module.calc_updown(weight)
                    self.weight.copy_(
                        (weight.to(dtype=updown.dtype) + updown).to(dtype=self.weight.dtype)
                    )
                    if ex_bias is not None and self.bias is not None:
                        self.bias.copy_((self.bias + ex_bias).to(dtype=self.bias.dtype))
            except RuntimeError as e:
                logging.debug(f"Network {net.name} layer {network_layer_name}: {e}")
                extra_network_lora.errors[net.name] = extra_network_lora.errors.get(net.name, 0) + 1
        self.network_current_names = wanted_names


def network_forward(org_module, input, original_forward):
    if len(loaded_networks) == 0:
        return original_forward(org_module, input)
    network_restore_weights_from_backup(org_module)
    network_reset_cached_weight(org_module)
    y = original_forward(org_module, input)
    network_layer_name = getattr(org_module, "network_layer_name", None)
    for lora in loaded_networks:
        module = lora.modules.get(network_layer_name, None)
        if module is not None:
            y = module.forward(input, y)
    return y


def network_reset_cached_weight(self):
    self.network_current_names = ()
    self.network_weights_backup = None
    self.network_bias_backup = None


def network_Linear_forward(self, input):
    if shared.opts.lora_functional:
        return network_forward(self, input, originals.Linear_forward)
    network_apply_weights(self)
    return originals.Linear_forward(self, input)


def network_Linear_load_state_dict(self, *args, **kwargs):
    network_reset_cached_weight(self)
    return originals.Linear_load_state_dict(self, *args, **kwargs)


def list_available_networks():
    available_networks.clear()
    available_network_aliases.clear()
    lora_dir = shared.cmd_opts.lora_dir
    if not os.path.isdir(lora_dir):
        return
    for root, _dirs, files in os.walk(lora_dir):
        for filename in files:
            if not filename.endswith(".safetensors"):
                continue
            path = os.path.join(root, filename)
            name = os.path.splitext(filename)[0]
            entry = network.NetworkOnDisk(name, path)
            available_networks[name] = entry
            available_network_aliases[name] = entry
            available_network_aliases[entry.alias] = entry
