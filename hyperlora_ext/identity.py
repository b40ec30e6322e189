"""Photos to identity LoRA in one call: face pipeline + CLIP + HyperLoRA, cached and memory-aware.

Encoders load on first use. By default they leave the GPU after each prediction (the WebUI needs the
VRAM for sampling); ``keep_on_device=True`` keeps them resident for speed. Results are cached by
(photo contents, model, options), so repeated generations, batches and X/Y/Z cells over other
parameters never re-run the encoders.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .cache import LruCache
from .encoders.faces import check_face_choice, check_face_index
from .errors import HyperLoRAError
from .lora_format import lora_digest
from .memory import peak_rss_mb
from .models import ModelRoots, resolve_antelopev2, resolve_clip, resolve_hyperlora

FACE_DEVICES = ("auto", "cpu", "cuda")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class IdentityOptions:
    """Everything besides the photos that changes the predicted LoRA."""

    model: str
    face_choice: str = "largest"
    face_index: int = 0
    remove_background: bool = True
    grayscale: bool = False
    clip: str | None = None  # CLIP ViT-L/14 encoder name; None picks the installed one

    def __post_init__(self) -> None:
        object.__setattr__(self, "face_choice", check_face_choice(self.face_choice))
        object.__setattr__(self, "face_index", check_face_index(self.face_index))
        if self.face_choice != "index":  # unused then: keep it out of the cache key
            object.__setattr__(self, "face_index", 0)


@dataclass
class IdentityResult:
    lora: dict[str, torch.Tensor]
    digest: str
    reports: list[Any]  # encoders.features.PhotoReport, one per input photo
    model: str
    photos_used: int
    cache_hit: bool = False
    seconds: float = 0.0
    peak_rss_mb: float | None = None  # None where the platform does not report it
    peak_vram_mb: float | None = None
    warnings: list[str] = field(default_factory=list)


def parse_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device; HyperLoRAError for text torch does not understand."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise HyperLoRAError(f"unknown device {device!r}: use cpu, cuda, cuda:N or mps") from None


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device this torch build can use (for devices users type)."""
    parsed = parse_device(device)
    usable = {
        "cpu": lambda: True,
        "cuda": torch.cuda.is_available,
        "mps": lambda: torch.backends.mps.is_available(),
    }
    if parsed.type not in usable:
        raise HyperLoRAError(f"device {device!r} is not supported: use cpu, cuda, cuda:N or mps")
    if not usable[parsed.type]():
        raise HyperLoRAError(
            f"device {device!r} is not available: this torch ({torch.__version__}) has no "
            f"{parsed.type.upper()} support or sees no such GPU. Use the device cpu instead."
        )
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise HyperLoRAError(
            f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) are visible"
        )
    return parsed


def _folder_fingerprint(folder: Path) -> tuple:
    """Changes when a file of a model folder is replaced, so stale cache entries are not reused."""
    files = [folder] if folder.is_file() else sorted(p for p in folder.iterdir() if p.is_file())
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)


class IdentityPipeline:
    """Owns the encoders and the LoRA cache; thread-safe (one prediction runs at a time)."""

    def __init__(
        self,
        roots: ModelRoots,
        *,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        keep_on_device: bool = False,
        cache_entries: int = 16,
        cache_bytes: int = 512 * 2**20,
        face_device: str = "auto",
    ) -> None:
        if face_device not in FACE_DEVICES:
            raise HyperLoRAError(f"face device {face_device!r} is not one of {FACE_DEVICES}")
        self.roots = roots
        self.device = parse_device(device)
        self.face_device = face_device
        self.dtype = dtype
        self.keep_on_device = keep_on_device
        self.cache: LruCache[IdentityResult] = LruCache(cache_entries, cache_bytes)
        self._lock = threading.RLock()
        self._engine: Any = None
        self._engine_key: tuple | None = None
        self._clip: Any = None
        self._clip_key: tuple | None = None
        self._faces: Any = None

    # ----------------------------------------------------------------- public
    def predict(
        self,
        images: Sequence[Any],
        options: IdentityOptions,
        *,
        labels: Sequence[str] | None = None,
        progress: Progress | None = None,
        before_compute: Callable[[], None] | None = None,
    ) -> IdentityResult:
        """Predict the identity LoRA of the person in ``images`` (1..N photos).

        ``before_compute`` runs only when the encoders are about to run (not on a cache hit),
        e.g. to make room on the GPU.
        """
        from .encoders.images import image_digest, load_image

        report = progress or (lambda stage: None)
        if not images:
            raise HyperLoRAError("no reference photo given: add at least one photo of the person")
        start = time.perf_counter()
        labels = list(labels) if labels else [f"image {i + 1}" for i in range(len(images))]
        if len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        report("reading photos")
        photos = [load_image(image, label) for image, label in zip(images, labels, strict=True)]
        with self._lock:
            model_dir = resolve_hyperlora(self.roots, options.model)
            clip_path = resolve_clip(self.roots, options.clip)
            key = (
                options,
                _folder_fingerprint(model_dir),
                _folder_fingerprint(clip_path),
                str(self.dtype),
                tuple(sorted(image_digest(photo) for photo in photos)),
            )
            cached = self.cache.get(key)
            if cached is not None:
                return _as_cache_hit(cached, time.perf_counter() - start)
            if before_compute is not None:
                before_compute()
            result = self._compute(photos, labels, options, model_dir, clip_path, report)
            result.seconds = time.perf_counter() - start
            self.cache.put(key, result)
            return result

    def unload(self) -> None:
        """Free every encoder (the cache stays)."""
        with self._lock:
            if self._faces is not None:
                self._faces.unload()
            self._engine = self._clip = self._faces = None
            self._engine_key = self._clip_key = None
            _empty_device_cache()

    # -------------------------------------------------------------- internals
    def _compute(self, photos, labels, options, model_dir, clip_path, report) -> IdentityResult:
        from .encoders.features import extract_identity_features

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        report("detecting faces")
        features = extract_identity_features(
            photos,
            self._face_analyzer(),
            face_choice=options.face_choice,
            face_index=options.face_index,
            remove_background=options.remove_background,
            grayscale=options.grayscale,
            labels=labels,
        )
        features.require_usable()
        report("loading the models")
        engine = self._load_engine(model_dir)
        clip = self._load_clip(clip_path, engine)
        try:
            report("encoding with CLIP")
            with torch.inference_mode(False), torch.no_grad():
                pixels = features.pixel_values.to(clip.device, clip.dtype)
                hidden = clip.encode(pixels)
                report("predicting the LoRA")
                lora = engine.predict_lora(features.id_embeds, hidden)
        finally:
            self._offload()
        warnings = [f"{r.label}: {r.reason}" for r in features.reports if not r.used]
        return IdentityResult(
            lora=lora,
            digest=lora_digest(lora),
            reports=features.reports,
            model=options.model,
            photos_used=features.usable,
            peak_rss_mb=peak_rss_mb(),
            peak_vram_mb=_peak_vram_mb(self.device),
            warnings=warnings,
        )

    def _face_analyzer(self):
        if self._faces is None:
            from .encoders.faces import FaceAnalyzer

            providers = ["CPUExecutionProvider"] if self._faces_on_cpu() else None
            self._faces = FaceAnalyzer(resolve_antelopev2(self.roots), providers=providers)
        return self._faces

    def _faces_on_cpu(self) -> bool:
        """``auto`` follows the encoder device; ``cuda`` lets onnxruntime pick its best provider."""
        if self.face_device == "auto":
            return self.device.type == "cpu"
        return self.face_device == "cpu"

    def _load_engine(self, model_dir: Path):
        from .engine.model import load_hyperlora

        key = (str(model_dir), _folder_fingerprint(model_dir))
        if self._engine_key != key:
            self._engine = None  # free the old 3 GB of bases before loading new ones
            self._engine = load_hyperlora(model_dir, device=self.device, dtype=self.dtype)
            self._engine_key = key
        return self._engine.to(self.device)

    def _load_clip(self, clip_path: Path, engine):
        from .encoders.clip_encoder import load_clip_vision

        key = (str(clip_path), _folder_fingerprint(clip_path), engine.dtype)
        if self._clip_key != key:
            self._clip = None
            self._clip = load_clip_vision(
                clip_path,
                device=self.device,
                dtype=engine.dtype,
                expected_hidden_size=engine.embedding_dim,
            )
            self._clip_key = key
        return self._clip.to(self.device)

    def _offload(self) -> None:
        if self.keep_on_device or self.device.type == "cpu":
            return
        for encoder in (self._engine, self._clip):
            if encoder is not None:
                encoder.to("cpu")
        _empty_device_cache()


def _as_cache_hit(result: IdentityResult, seconds: float) -> IdentityResult:
    hit = IdentityResult(**{**result.__dict__, "warnings": list(result.warnings)})
    hit.cache_hit, hit.seconds = True, seconds
    return hit


def _peak_vram_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def _empty_device_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------- process-wide pipeline
_pipeline: IdentityPipeline | None = None
_pipeline_lock = threading.Lock()


def configure_pipeline(roots: ModelRoots, **settings: Any) -> IdentityPipeline:
    """(Re)create the process-wide pipeline, e.g. when the WebUI's settings change."""
    global _pipeline
    with _pipeline_lock:
        if _pipeline is not None:
            _pipeline.unload()
        _pipeline = IdentityPipeline(roots, **settings)
        return _pipeline


def get_pipeline() -> IdentityPipeline:
    """The process-wide pipeline; configure_pipeline() must have been called first."""
    if _pipeline is None:
        raise HyperLoRAError("the HyperLoRA pipeline is not configured (configure_pipeline first)")
    return _pipeline
