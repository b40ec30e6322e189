"""Refine and training-kit actions shared by ``POST /hyperlora/v1/refine*`` and the accordion.

Both start from a saved identity and the photos it was made from (the store does not keep
photos, so the caller gives them again): decode, find the face in each photo (under the
services' lock, like every encoder job), then refine on the loaded checkpoint or write the kohya
kit. Kits go into ``<WebUI data folder>/outputs/hyperlora-kits/NAME`` only, never a given path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperlora_ext.encoders.images import load_image
from hyperlora_ext.errors import HyperLoRAError, about
from hyperlora_ext.refine.crops import FacePhoto
from hyperlora_ext.refine.kit import Kit, KitSettings, write_kit
from hyperlora_ext.refine.photos import face_photos
from hyperlora_ext.refine.save import refined_name
from hyperlora_ext.store import check_name
from hyperlora_ext.webui.refine_host import (
    RefineOutcome,
    WebUIRefineSettings,
    refine_saved_identity,
)
from hyperlora_ext.webui.services import Services

KITS_FOLDER = ("outputs", "hyperlora-kits")
MAX_PHOTO_SIDE = 2048  # larger photos are reduced before the face search (crops are 768²)


@dataclass(frozen=True)
class PhotoSet:
    """The photos of one request: raw sources (bytes, files, PIL), labels and choices."""

    sources: Sequence[Any]
    labels: Sequence[str]
    weights: Sequence[float] = ()
    face: str = "largest"
    face_index: int = 0
    field: str = field(default="images")  # the request field the photos came from


def faces(services: Services, photos: PhotoSet) -> list[FacePhoto]:
    """Each photo decoded and its chosen face found (the services' lock held meanwhile)."""
    if not photos.sources:
        raise HyperLoRAError(
            "refining needs the identity's photos: add the photos it was made from"
        )
    with about(photos.field, HyperLoRAError), services.lock:
        images = [
            load_image(source, label, MAX_PHOTO_SIDE)
            for source, label in zip(photos.sources, photos.labels, strict=True)
        ]
        analyzer = services.analyzer()
        return face_photos(analyzer, images, photos.labels, photos.weights or None,
                           photos.face, photos.face_index)  # fmt: skip


def target_name(identity: str, save_name: str | None) -> str:
    """The refined identity's name: ``save_name`` checked, or ``IDENTITY-refined``."""
    return check_name(save_name) if save_name else check_name(refined_name(identity))


def refine(
    services: Services,
    sd_model: Any,
    identity: str,
    photos: PhotoSet,
    settings: WebUIRefineSettings,
    *,
    save_name: str | None = None,
    overwrite: bool = False,
) -> RefineOutcome:
    """Refine saved ``identity`` on ``sd_model`` and save the result; holds the WebUI's queue
    lock while training (do not call from inside ``wrap_gradio_gpu_call``)."""
    if sd_model is None:
        raise HyperLoRAError("no checkpoint is loaded; load an SDXL checkpoint and try again")
    store = services.store()
    with about("identity", HyperLoRAError):
        store.record(identity)
    found = faces(services, photos)
    return refine_saved_identity(
        sd_model, store, identity, found, settings,
        save_name=target_name(identity, save_name), overwrite=overwrite, hold_queue_lock=True,
    )  # fmt: skip


def kits_root() -> Path:
    from modules import paths

    return Path(paths.data_path, *KITS_FOLDER)


def kit(
    services: Services,
    identity: str,
    photos: PhotoSet,
    settings: KitSettings,
    *,
    kit_name: str | None = None,
    overwrite: bool = False,
) -> Kit:
    """Write the kohya kit of saved ``identity`` into ``kits_root()/KIT_NAME`` (default: the
    identity's name)."""
    store = services.store()
    with about("identity", HyperLoRAError):
        lora = store.load(identity).lora
    name = check_name(kit_name or identity)
    found = faces(services, photos)
    return write_kit(kits_root() / name, name, dict(lora), found, settings, overwrite=overwrite)
