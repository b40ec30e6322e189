"""Photos to identity LoRA in one call: face pipeline + CLIP + HyperLoRA, cached.

Encoders load on first use (``loaded_models.LoadedModels`` holds and places them). By default they
leave the GPU after each prediction (the WebUI needs the VRAM for sampling); ``keep_on_device=True``
keeps them resident for speed. Results are cached by (photo contents, model, options), so repeated
generations, batches and X/Y/Z cells over other parameters never re-run the encoders.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .cache import LruCache
from .engine.cpu_dtype import dtype_name
from .engine.fusion import check_weights
from .errors import ArgumentError, CheckpointError, HyperLoRAError
from .facts import check_face_choice, check_face_index
from .identity_value import Identity
from .loaded_models import LoadedModels, Placement
from .lora_format import lora_digest
from .memory import peak_rss_mb
from .model_files import folder_fingerprint
from .models import ModelRoots, resolve_clip, resolve_hyperlora

_log = logging.getLogger(__name__)
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

    @classmethod
    def from_args(cls, args: Any, model: str | None = None) -> IdentityOptions:
        """The options of a :class:`~hyperlora_ext.args.HyperLoRAArgs` (``model`` overrides)."""
        return cls(
            model=args.model if model is None else model,
            face_choice=args.face,
            face_index=args.face_index,
            remove_background=args.remove_background,
            grayscale=args.grayscale,
        )

    def record(self) -> dict[str, Any]:
        """What a saved identity's record keeps of them: everything but the model names."""
        values = asdict(self)
        values.pop("model", None)
        values.pop("clip", None)
        return values


class IdentityPipeline:
    """Owns the encoders (``models``) and the LoRA cache; thread-safe (one prediction runs at a
    time: its methods use ``models`` only under the pipeline's lock)."""

    def __init__(
        self,
        roots: ModelRoots,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        keep_on_device: bool = False,
        cache_entries: int = 16,
        cache_bytes: int = 512 * 2**20,
        face_device: str = "auto",
        free_after_use: bool = False,
        placement: Placement | None = None,
    ) -> None:
        self.roots = roots
        self.models = LoadedModels(
            roots, device=device, face_device=face_device, dtype=dtype,
            keep_on_device=keep_on_device, free_after_use=free_after_use, placement=placement,
        )  # fmt: skip
        # Per key: the identity as computed, and per photo content (digest) what happened to it.
        self.cache: LruCache[_Cached] = LruCache(cache_entries, cache_bytes)
        self._lock = threading.RLock()
        self._preloading: threading.Thread | None = None
        self._preload_lock = threading.Lock()
        self._preload_error: BaseException | None = None

    # What the host reads of the models' settings (the others: ``models``).
    @property
    def device(self) -> torch.device:
        return self.models.device

    @property
    def placement(self) -> Placement | None:
        return self.models.placement

    # ----------------------------------------------------------------- public
    def predict(
        self,
        images: Sequence[Any],
        options: IdentityOptions,
        *,
        labels: Sequence[str] | None = None,
        progress: Progress | None = None,
        before_compute: Callable[[], None] | None = None,
        weights: Sequence[float] | None = None,
    ) -> Identity:
        """Predict the identity LoRA of the person in ``images`` (1..N photos).

        ``weights``: one relative weight >= 0 per photo (``photo_weights``); None weighs all
        alike. ``before_compute`` runs only when the encoders are about to run (not on a cache
        hit), e.g. to make room on the GPU.
        """
        report = progress or (lambda stage: None)
        if not images:
            raise HyperLoRAError("no reference photo given: add at least one photo of the person")
        weights = check_weights(weights, len(images))
        start = time.perf_counter()
        from .likeness import image_labels

        labels = image_labels(images, labels)  # by default "image 2 (alice.jpg)"
        # Photos are decoded under the lock, one at a time, so concurrent requests never hold
        # more than one request's decoded photo; only their compact digests are kept.
        with self._lock:
            self._raise_preload_error()
            report("reading photos")
            digests, unreadable = _digests(images, labels)
            model_dir = resolve_hyperlora(self.roots, options.model)
            clip_path = resolve_clip(self.roots, options.clip)
            key = (
                options,
                folder_fingerprint(model_dir),
                folder_fingerprint(clip_path),
                str(self.models.dtype),
                _weighted_digests(digests, weights),
            )
            cached = self.cache.get(key) if any(digests) else None
            hit = cached is not None
            if cached is None:
                if before_compute is not None and any(digests):
                    before_compute()
                cached = self._compute(
                    images, labels, digests, unreadable, options, model_dir, clip_path, report,
                    weights,
                )  # fmt: skip
                self.cache.put(key, cached)
            return _result(cached, digests, labels, unreadable, hit, time.perf_counter() - start)

    def mix(
        self,
        tokens: Sequence[torch.Tensor],
        weights: Sequence[float],
        model: str,
        labels: Sequence[str] | None = None,
    ) -> Identity:
        """The identity LoRA of several identities' fused ``tokens``, mixed by relative
        ``weights`` (field ``mix``) the way photos are fused; ``model`` made all of them.
        ``labels`` name the identities in errors (e.g. their saved names)."""
        from .engine.fusion import stack_tokens, weighted_mean

        checked = check_weights(weights, len(tokens), field="mix")
        if not tokens:
            raise ArgumentError("mix", "nothing to mix: give at least one identity")
        start = time.perf_counter()
        with self._lock:
            model_dir = resolve_hyperlora(self.roots, model)
            engine = self.models.load_engine(model_dir)
            try:
                config = engine.resampler.config
                shape = (config.num_queries, config.output_dim)
                stacked = stack_tokens(tokens, shape, model, labels)
                fused = weighted_mean(stacked, checked)
                try:
                    lora = engine.lora_from_tokens(fused)
                except ValueError as error:
                    raise ArgumentError("mix", str(error)) from None
            finally:
                self.models.offload()
        _require_finite(lora, model_dir, model_dir)
        return Identity(
            lora=_copy(lora), digest=lora_digest(lora), model=model,
            seconds=time.perf_counter() - start, tokens=fused.clone(),
            dtype=dtype_name(engine.dtype),
        )  # fmt: skip

    def preload(self, options: IdentityOptions) -> threading.Thread | None:
        """Start loading the encoders for ``options`` in a background thread (into CPU memory).

        A prediction meanwhile waits only for the rest of the loading. A failure is logged at
        once and raised by the next prediction (which then clears it). Returns the thread, or
        None when a preload is already running.
        """
        with self._preload_lock:  # never the pipeline lock: the preload holds that while loading
            if self._preloading is not None and self._preloading.is_alive():
                return None
            thread = threading.Thread(
                target=self._preload, args=(options,), name="hyperlora-preload", daemon=True
            )
            self._preloading = thread
            thread.start()
            return thread

    def _preload(self, options: IdentityOptions) -> None:
        try:
            with self._lock:
                model_dir = resolve_hyperlora(self.roots, options.model)
                clip_path = resolve_clip(self.roots, options.clip)
                self.models.load_all(model_dir, clip_path)
        except BaseException as error:  # kept for the next job, which reports it
            _log.warning("HyperLoRA: loading the models in the background failed", exc_info=True)
            self._preload_error = error

    def _raise_preload_error(self) -> None:
        error, self._preload_error = self._preload_error, None
        if error is not None:
            raise error

    def likeness(
        self, images: Sequence[Any], reference: Any, labels: Sequence[str] | None = None
    ) -> list[Any]:
        """Score ``images`` against a reference embedding (``likeness.Likeness`` per image).

        Uses the face models already loaded for the identities (loading them if released).
        """
        from .likeness import check_reference, score_images

        vector = check_reference(reference)
        if vector is None:
            raise HyperLoRAError("the likeness reference is not a 512-number face embedding")
        with self._lock:
            return score_images(images, vector, self.models.face_analyzer(), labels)

    def reference_from_photos(self, images: Sequence[Any], labels: Sequence[str] | None = None):
        """The reference embedding of photos (largest face each), with the face models only."""
        from .likeness import reference_from_photos

        with self._lock:
            return reference_from_photos(images, self.models.face_analyzer(), labels)

    def unload(self) -> None:
        """Free every encoder (the cache stays)."""
        with self._lock:
            self.models.unload()

    # -------------------------------------------------------------- internals
    def _compute(
        self, images, labels, digests, unreadable, options, model_dir, clip_path, report, weights
    ) -> _Cached:
        from .encoders.features import IdentityFeatures, extract_identity_features
        from .likeness import reference_embedding

        models = self.models
        models.reset_peak_vram()
        report("detecting faces")
        readable = [i for i, digest in enumerate(digests) if digest]
        features = extract_identity_features(
            [images[i] for i in readable],
            models.face_analyzer(),
            face_choice=options.face_choice,
            face_index=options.face_index,
            remove_background=options.remove_background,
            grayscale=options.grayscale,
            labels=[labels[i] for i in readable],
        )
        by_digest = dict(zip([digests[i] for i in readable], features.reports, strict=True))
        if not features.usable:  # every photo's reason, the unreadable ones included
            reports = [unreadable.get(i) or by_digest[d] for i, d in enumerate(digests)]
            IdentityFeatures(features.id_embeds, features.pixel_values, reports).require_usable()
        rows, used_weights = _weighted_rows(features.reports, readable, weights)
        report("loading the models")
        engine = models.load_engine(model_dir)
        clip = models.load_clip(clip_path, engine)
        loaded = models.fingerprints()
        try:
            report("encoding with CLIP")
            with torch.inference_mode(False), torch.no_grad():
                pixels = features.pixel_values[rows].to(clip.device, clip.dtype)
                hidden = clip.encode(pixels)
                report("predicting the LoRA")
                models.require_unchanged(loaded, model_dir, clip_path)  # before the mapped bases
                tokens = engine.predict_tokens(features.id_embeds[rows], hidden, used_weights)
                lora = engine.lora_from_tokens(tokens)
        finally:
            models.after_use()
        _require_finite(lora, model_dir, clip_path)
        models.require_unchanged(loaded, model_dir, clip_path)
        identity = Identity(
            lora=lora,  # fresh tensors, referenced nowhere else; callers get copies (_result)
            tokens=tokens.detach().to("cpu").clone(),
            digest=lora_digest(lora),
            model=options.model,
            likeness_reference=reference_embedding(features.id_embeds[rows].numpy(), used_weights),
            peak_rss_mb=peak_rss_mb(),
            peak_vram_mb=models.peak_vram_mb(),
            dtype=dtype_name(engine.dtype),
        )
        return identity, by_digest


def _weighted_digests(digests: Sequence[str | None], weights: Sequence[float] | None) -> tuple:
    """The photos part of the cache key: (content digest, weight) pairs, in any photo order."""
    pairs = zip(digests, weights or [1.0] * len(digests), strict=True)
    return tuple(sorted((d, w) for d, w in pairs if d))


def _weighted_rows(
    reports: Sequence[Any], readable: Sequence[int], weights: Sequence[float] | None
) -> tuple[list[int], list[float] | None]:
    """Feature rows to encode (used photos of weight > 0) and their weights (None: all alike)."""
    used = [readable[j] for j, r in enumerate(reports) if r.used]  # input index of each row
    if weights is None:
        return list(range(len(used))), None
    rows = [row for row, i in enumerate(used) if weights[i] > 0]
    if not rows:
        raise ArgumentError(
            "photo_weights",
            "every photo that could be used has weight 0; give one of them a weight above 0",
        )
    return rows, [weights[used[row]] for row in rows]


# What the cache keeps: the identity as computed and, per photo content (digest), its report.
_Cached = tuple[Identity, dict[str, Any]]


def _digests(images: Sequence[Any], labels: Sequence[str]) -> tuple[list[str | None], dict]:
    """Per photo its pixel digest, or None when it cannot be decoded (then its report)."""
    from .encoders.features import PhotoReport, unreadable_reason
    from .encoders.images import WORK_SIDE, image_digest, load_image
    from .errors import ImageError

    digests: list[str | None] = []
    unreadable: dict[int, Any] = {}
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        try:
            digests.append(image_digest(load_image(image, label, WORK_SIDE)))
        except ImageError as exc:
            digests.append(None)
            unreadable[i] = PhotoReport(label=label, reason=unreadable_reason(exc, label))
    return digests, unreadable


def _result(
    cached: _Cached,
    digests: Sequence[str | None],
    labels: Sequence[str],
    unreadable: dict,
    hit: bool,
    seconds: float,
) -> Identity:
    """This call's identity: its own labels and photo order, and tensors of its own (a copy)."""
    computed, by_digest = cached
    reports = tuple(
        unreadable[i] if digest is None else replace(by_digest[digest], label=labels[i])
        for i, digest in enumerate(digests)
    )
    assert computed.tokens is not None
    return replace(
        computed,
        lora=_copy(computed.lora),
        tokens=computed.tokens.clone(),
        likeness_reference=computed.likeness_reference.copy(),
        reports=reports,
        photos=sum(r.used for r in reports),
        preview=next((r.preview for r in reports if r.preview is not None), None),
        cache_hit=hit,
        seconds=seconds,
    )


def _copy(lora: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Callers may edit their LoRA in place; the cached one must not change with it."""
    return {key: tensor.clone() for key, tensor in lora.items()}


def _require_finite(lora: dict[str, torch.Tensor], model_dir: Path, clip_path: Path) -> None:
    bad = next((key for key, t in lora.items() if not torch.isfinite(t).all()), None)
    if bad is not None:
        raise CheckpointError(
            f"the predicted LoRA holds NaN or infinite values (first in {bad}): the weights of "
            f"the HyperLoRA model {model_dir} or the CLIP encoder {clip_path} are damaged. "
            "Re-download them (python -m hyperlora_ext doctor shows where they are)."
        )
