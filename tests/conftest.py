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

import pytest
import torch  # after OMP_NUM_THREADS is set

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def roots(tmp_path_factory):
    """The tiny model tree of the pipeline tests (tests/tiny_tree.py), written once per session;
    modules that need their own folders define their own ``roots``."""
    from tests.tiny_tree import write_tree

    return write_tree(tmp_path_factory.mktemp("models"))


@pytest.fixture
def pipeline(roots):
    """A fresh float32 CPU pipeline over the session's tiny tree."""
    from hyperlora_ext.identity import IdentityPipeline

    return IdentityPipeline(roots, device="cpu", dtype=torch.float32)
