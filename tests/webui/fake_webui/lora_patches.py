"""``extensions-builtin/Lora/lora_patches.py``: monkey-patch ``nn.Linear`` (the double patches
only Linear: the tiny UNet has no Conv2d/GroupNorm/LayerNorm/MultiheadAttention layers)."""

import networks
import torch


class LoraPatches:
    def __init__(self):
        self.Linear_forward = torch.nn.Linear.forward
        self.Linear_load_state_dict = torch.nn.Linear._load_from_state_dict
        torch.nn.Linear.forward = networks.network_Linear_forward
        torch.nn.Linear._load_from_state_dict = networks.network_Linear_load_state_dict

    def undo(self):
        torch.nn.Linear.forward = self.Linear_forward
        torch.nn.Linear._load_from_state_dict = self.Linear_load_state_dict
