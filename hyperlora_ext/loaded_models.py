"""The encoders an identity pipeline holds, and where they are.

The face analyser, the HyperLoRA engine and the CLIP encoder load on first use, each under a key
with its files' fingerprint, so a replaced file is loaded again. They are placed on the pipeline's
device (through the host's memory management where there is one, as on Forge), go back to the CPU
after a prediction unless they are to stay, and can be freed. Not thread-safe by itself: the
pipeline calls it under its own lock.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, Protocol

import torch

from .devices import parse_device
from .errors import CheckpointError, HyperLoRAError
from .facts import DEVICES
from .memory import return_freed_memory
from .model_files import folder_fingerprint
from .models import ModelRoots, resolve_antelopev2


class Placement(Protocol):
    """A host's memory management (Forge): it makes room for an encoder and may evict it later."""

    def load(self, module: torch.nn.Module) -> torch.device: ...

    def release(self, module: torch.nn.Module) -> None: ...


class LoadedModels:
    """The loaded encoders of one pipeline (None until first used or after :meth:`unload`)."""

    def __init__(
        self,
        roots: ModelRoots,
        *,
        device: str | torch.device,
        face_device: str,
        dtype: torch.dtype | None,
        keep_on_device: bool,
        free_after_use: bool,
        placement: Placement | None,
    ) -> None:
        if face_device not in DEVICES:
            raise HyperLoRAError(f"face device {face_device!r} is not one of {DEVICES}")
        self.roots = roots
        self.device = parse_device(device)
        self.face_device = face_device
        self.dtype = dtype
        self.keep_on_device = keep_on_device
        self.free_after_use = free_after_use
        self.placement = placement
        self.engine: Any = None
        self.engine_key: tuple | None = None
        self.clip: Any = None
        self.clip_key: tuple | None = None
        self.faces: Any = None

    # ---------------------------------------------------------------- loading
    def face_analyzer(self):
        if self.faces is None:
            from .encoders.faces import FaceAnalyzer

            providers = ["CPUExecutionProvider"] if self.faces_on_cpu() else None
            self.faces = FaceAnalyzer(resolve_antelopev2(self.roots), providers=providers)
        return self.faces

    def faces_on_cpu(self) -> bool:
        """``auto`` follows the encoder device; ``cuda`` lets onnxruntime pick its best provider."""
        if self.face_device == "auto":
            return self.device.type == "cpu"
        return self.face_device == "cpu"

    def load_engine(self, model_dir: Path):
        from .engine.model import load_hyperlora

        key = (str(model_dir), folder_fingerprint(model_dir))
        if self.engine_key != key:
            # Free the old 3 GB of bases first; no key until the new ones have loaded, so that
            # a failed load is retried rather than leaving no engine under the old key.
            self.engine = self.engine_key = None
            self.engine = load_hyperlora(
                model_dir,
                device="cpu",
                dtype=self.working_dtype(),
                map_bases=self.device.type == "cpu",  # a GPU gets stacked copies (one bmm each)
            )
            self.engine_key = key
        return self._place(self.engine, self.engine.module())

    def working_dtype(self) -> torch.dtype:
        """The engine's dtype: the one asked for, else the device's default."""
        from .engine.model import default_dtype

        return self.dtype or default_dtype(self.device)

    def load_clip(self, clip_path: Path, engine):
        from .encoders.clip_encoder import load_clip_vision

        key = (str(clip_path), folder_fingerprint(clip_path), engine.dtype)
        if self.clip_key != key:
            self.clip = self.clip_key = None  # as in load_engine
            self.clip = load_clip_vision(
                clip_path,
                device="cpu",
                dtype=engine.dtype,
                expected_hidden_size=engine.embedding_dim,
            )
            self.clip_key = key
        return self._place(self.clip, self.clip.model)

    def load_all(self, model_dir: Path, clip_path: Path) -> None:
        """Every encoder, left in CPU memory (the background preload)."""
        self.face_analyzer().load()
        engine = self.load_engine(model_dir)
        self.load_clip(clip_path, engine)
        self.offload()

    # -------------------------------------------------- the files under a job
    def fingerprints(self) -> tuple:
        """The fingerprints of the engine's and CLIP's files as they were loaded."""
        return (self.engine_key[1], self.clip_key[1])  # type: ignore[index]

    def require_unchanged(self, loaded: tuple, model_dir: Path, clip_path: Path) -> None:
        """A model file rewritten during the job may have given a half-old, half-new LoRA:
        refuse it, and load the files again next time."""
        if loaded == (folder_fingerprint(model_dir), folder_fingerprint(clip_path)):
            return
        self.engine = self.clip = self.engine_key = self.clip_key = None
        raise CheckpointError(
            f"the files of the HyperLoRA model {model_dir} or of the CLIP encoder {clip_path} "
            "changed while this identity was computed; run it again. Replace model files only "
            "while no generation runs (docs/model-files.md)."
        )

    # ---------------------------------------------------------- device memory
    def _place(self, encoder, module: torch.nn.Module):
        """``encoder`` on the pipeline's device: through the host's memory management if any."""
        if self.placement is None:
            return encoder.to(self.device)
        self.placement.load(module)
        return encoder

    def offload(self) -> None:
        """Encoders back to the CPU after a prediction, unless they are to stay on the GPU."""
        if self.keep_on_device:
            return
        loaded = [(e, e.module()) for e in (self.engine,) if e is not None]
        loaded += [(c, c.model) for c in (self.clip,) if c is not None]
        for encoder, module in loaded:
            if self.placement is not None:
                self.placement.release(module)
            elif self.device.type != "cpu":
                encoder.to("cpu")
        if self.device.type != "cpu":
            _empty_device_cache()

    def after_use(self) -> None:
        """After a prediction: offload, and free everything when asked to."""
        self.offload()
        if self.free_after_use:  # 16 GB machines: the RAM is worth more than a fast next face
            self.unload()

    def unload(self) -> None:
        """Free every encoder and give the memory back."""
        if self.faces is not None:
            self.faces.unload()
        self.engine = self.clip = self.faces = None
        self.engine_key = self.clip_key = None
        _release_memory()

    def reset_peak_vram(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_vram_mb(self) -> float | None:
        """The GPU memory peak since :meth:`reset_peak_vram` (None off CUDA)."""
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**20


def _empty_device_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _release_memory() -> None:
    """Give unloaded encoders' memory back to the OS: the CPU's and torch's GPU cache."""
    gc.collect()  # tensors held in reference cycles (e.g. by an exception's frames)
    return_freed_memory()
    _empty_device_cache()
