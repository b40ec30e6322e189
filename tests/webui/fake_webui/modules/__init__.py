"""Test double of A1111 1.10's ``modules`` package: the surface HyperLoRA touches."""
