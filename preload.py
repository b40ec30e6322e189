"""Command-line options of HyperLoRA, added to the WebUI's parser before it parses ``sys.argv``.

The WebUI loads this file on its own (not as part of a package) and calls ``preload(parser)``;
keep it free of imports beyond the standard library and ``hyperlora_ext.facts`` (which imports
only the standard library). The options are read in ``hyperlora_ext.webui.cmd_opts``; an option
left out falls back to the WebUI's models folder.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
sys.path.insert(0, _HERE)  # the WebUI does not put this folder on sys.path for preload.py
try:
    from hyperlora_ext.facts import DEVICES
finally:
    sys.path.remove(_HERE)


def preload(parser: argparse.ArgumentParser) -> None:
    _add(
        parser,
        "--hyperlora-models-dir",
        default=None,
        help=(
            "HyperLoRA: folder holding hyper_lora/ (hyper_lora/<model>, clip_vit/<encoder>) and "
            "insightface/ (models/antelopev2). Default: the WebUI's models folder. A ComfyUI "
            "models folder, as set up by the official HyperLoRA plugin, works as is."
        ),
    )
    _add(
        parser,
        "--hyperlora-insightface-dir",
        default=None,
        help=(
            "HyperLoRA: insightface root, the folder holding models/antelopev2 "
            "(default: <models dir>/insightface)."
        ),
    )
    _add(
        parser,
        "--hyperlora-face-device",
        choices=DEVICES,
        default="auto",
        help="HyperLoRA: where face analysis (onnxruntime) runs; auto uses CUDA when available.",
    )
    _add(
        parser,
        "--hyperlora-device",
        choices=DEVICES,
        default="auto",
        help="HyperLoRA: where the CLIP encoder and HyperLoRA networks run (auto: the WebUI's).",
    )


def _add(parser: argparse.ArgumentParser, flag: str, **kwargs) -> None:
    # A second copy of the extension must not break start-up with a conflicting option.
    with contextlib.suppress(argparse.ArgumentError):
        parser.add_argument(flag, type=str, **kwargs)
