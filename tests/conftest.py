"""Shared test settings: never let transformers or huggingface_hub reach the network."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# the measured CPU dtype is recorded here, never in the user's cache folder
os.environ.setdefault("HYPERLORA_CACHE_DIR", tempfile.mkdtemp(prefix="hyperlora-cache-"))
