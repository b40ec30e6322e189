"""Shared test settings: never let transformers or huggingface_hub reach the network; one thread.

The test models are tiny, so torch's intra-op threads only cost time: idle threads spin, and on a
busy 2-core machine one 16x16 float16 ``Linear`` took about 9 ms with 2 threads and 7 µs with one
(torch 2.13 CPU). The CLI tests' subprocesses inherit ``OMP_NUM_THREADS``.
"""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# nothing a test writes goes to the user's cache folder
os.environ.setdefault("HYPERLORA_CACHE_DIR", tempfile.mkdtemp(prefix="hyperlora-cache-"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # after OMP_NUM_THREADS is set

torch.set_num_threads(1)
