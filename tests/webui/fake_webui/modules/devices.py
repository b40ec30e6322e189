"""``modules.devices`` on a CPU machine with half precision, like ``--use-cpu all`` with fp16."""

import contextlib

import torch

cpu = torch.device("cpu")
device = cpu
dtype = torch.float16
dtype_unet = torch.float16
dtype_vae = torch.float16
unet_needs_upcast = False


def get_optimal_device():
    return cpu


def get_device_for(task):
    return cpu


def torch_gc():
    pass


def autocast(disable=False):
    return contextlib.nullcontext()


def without_autocast(disable=False):
    return contextlib.nullcontext()


def cond_cast_unet(x):
    return x
