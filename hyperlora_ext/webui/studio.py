"""The studio: arguments in, :class:`~hyperlora_ext.identity_value.Identity` out, and saving one.

The one path from a generation's arguments to its identity, used by the script (``job``), the
accordion (preview, "Save as LoRA") and the HTTP API (``/encode``): photos, a saved identity, a
mix of several, and a slider's two sides. API photos are decoded from base64 here (never server
paths).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

from hyperlora_ext.args import HyperLoRAArgs, IdentitySource, ignored
from hyperlora_ext.errors import (
    ArgumentError,
    ExportExistsError,
    HyperLoRAError,
    ImageTooLargeError,
    about,
)
from hyperlora_ext.facts import PHOTOS
from hyperlora_ext.identity_value import Identity
from hyperlora_ext.webui.services import Services

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Context:
    """Who asks: the services, whether photos are a remote client's, and the caller's progress
    display and VRAM hook for the encoders."""

    services: Services
    is_api: bool = False  # photos are base64 only (never server paths)
    # Entered around each encoding; yields the stage reporter (or None).
    stage: Callable[[], AbstractContextManager[Progress | None]] = nullcontext
    before_compute: Callable[[], None] | None = None  # on a cache miss, before the encoders run


def resolve(args: HyperLoRAArgs, ctx: Context) -> Identity:
    """The generation's identity: from a mix, a saved identity or the photos of ``args``; its
    ``notes`` say what in ``args`` had no effect or may not reproduce a pasted image."""
    identity = _resolve(args, ctx)
    notes = [*identity.notes, *ignored(args), *_dtype_notes(args, identity)]
    return replace(identity, notes=tuple(notes)) if notes else identity


def _dtype_notes(args: HyperLoRAArgs, identity: Identity) -> list[str]:
    if not args.dtype or not identity.dtype or args.dtype == identity.dtype:
        return []
    return [
        f"the pasted settings' identity was made in {args.dtype}; this machine makes it in "
        f"{identity.dtype} (a fixed rule of its CPU and torch build), so the image may differ "
        "slightly from the original"
    ]


def _resolve(args: HyperLoRAArgs, ctx: Context) -> Identity:
    if args.mix:
        return _mixed(args, ctx)
    if args.identity:
        return _saved(args.identity, args.model, ctx)
    if args.images:
        args = args.replace(model=args.model or ctx.services.default_model())
        return _photos(args.images, args.photo_weights, args, ctx, "images")
    raise HyperLoRAError(
        "no reference photo: add at least one photo in the HyperLoRA panel (or pick a saved "
        "identity), or turn HyperLoRA off"
    )


def resolve_slider(args: HyperLoRAArgs, ctx: Context) -> tuple[Identity, Identity]:
    """The slider's positive and negative identity (``args.model`` makes those from photos)."""
    assert args.slider_positive is not None and args.slider_negative is not None
    return (
        _source(args.slider_positive, args, ctx, "slider_positive"),
        _source(args.slider_negative, args, ctx, "slider_negative"),
    )


def save(
    name: str, identity: Identity, args: HyperLoRAArgs, store: Any, *, overwrite: bool = False
) -> Any:
    """Save ``identity`` as ``name`` (LoRA, card, tokens, likeness reference); its record.

    ``args`` gives the face options the record keeps. An existing name is replaced only with
    ``overwrite`` (else ExportExistsError); a bad name is refused, never rewritten.
    """
    from hyperlora_ext.identity import IdentityOptions

    check_new_name(name, store, overwrite)
    return store.save(
        name, identity.lora, model=identity.model, photos=identity.photos,
        options=IdentityOptions.from_args(args, identity.model).record(),
        preview=identity.preview, overwrite=overwrite, tokens=identity.tokens,
        reference_embedding=identity.likeness_reference,
    )  # fmt: skip


def check_new_name(name: str, store: Any, overwrite: bool) -> None:
    """A usable name, free unless ``overwrite`` (callers check before the encoding, too)."""
    from hyperlora_ext.store import check_name

    check_name(name)
    if store.exists(name) and not overwrite:
        raise ExportExistsError(
            f"an identity named {name!r} exists; tick 'Overwrite' to replace it, or choose "
            "another name"
        )


def _source(
    source: IdentitySource, args: HyperLoRAArgs, ctx: Context, field: str, label: str = ""
) -> Identity:
    """The identity of one mix part or slider side; ``field`` names it (``mix.2``), ``label`` its
    photos in messages (``mix part 2``)."""
    if source.identity:
        return _saved(source.identity, args.model, ctx)
    args = args.replace(model=args.model or ctx.services.default_model())
    if source.photos:
        if not args.images:
            raise ArgumentError(field, f"{PHOTOS} stands for the photos, but none are given")
        return _photos(args.images, args.photo_weights, args, ctx, "images")
    images_field = f"{field}.images"
    with about(images_field):  # e.g. no face: in which part's photos
        return _photos(source.images, source.photo_weights, args, ctx, images_field, label)


def _photos(
    images: Sequence[Any],
    weights: Sequence[float],
    args: HyperLoRAArgs,
    ctx: Context,
    field: str,
    label: str = "",
) -> Identity:
    from hyperlora_ext.identity import IdentityOptions

    if ctx.is_api:  # API photos are base64 only: never let a client name a path
        images = _api_images(images, field)
    labels = [f"{label}, image {n}" for n in range(1, len(images) + 1)] if label else None
    with ctx.stage() as progress:
        return ctx.services.pipeline().predict(
            list(images),
            IdentityOptions.from_args(args),
            before_compute=ctx.before_compute,
            progress=progress,
            weights=list(weights) or None,
            labels=labels,
        )


def _api_images(images: Sequence[Any], field: str) -> list[bytes]:
    """Photos of a remote client: base64 only. Bytes were decoded by the route already (under its
    limits); JSON cannot carry bytes, so a client cannot send them."""
    from hyperlora_ext.encoders.images import decode_image_payload

    try:
        return [
            image if isinstance(image, bytes) else
            _about(field, decode_image_payload, image, f"image {number}")
            for number, image in enumerate(images, 1)
        ]  # fmt: skip
    except ImageTooLargeError as error:  # a limit of the request's argument, like their count
        raise ArgumentError(field, str(error)) from None


def _saved(name: str, model: str, ctx: Context) -> Identity:
    identity = ctx.services.store().load(name)
    # The infotext names the model the identity was made with, not the unused dropdown value.
    return identity if identity.model else replace(identity, model=model)


def _mixed(args: HyperLoRAArgs, ctx: Context) -> Identity:
    """The weighted mix of the identities of ``args.mix``, fused like photos are."""
    if args.images and not any(part.source.photos for part in args.mix):
        raise ArgumentError(
            "mix", f"photos are given but the mix does not use them: add {PHOTOS}:WEIGHT to the "
            "mix, or remove the photos"
        )  # fmt: skip
    store = ctx.services.store()
    saved = {
        part.source.identity: _about("mix", store.load, part.source.identity)
        for part in args.mix
        if part.source.identity
    }  # one snapshot of each: its model and likeness reference
    model, notes = _mix_model(args, saved, ctx)
    args = args.replace(model=model)
    tokens, references, labels, photos = [], [], [], 0
    reports: list[Any] = []
    for number, part in enumerate(args.mix, 1):
        name = part.source.identity
        if name:
            tokens.append(_about("mix", store.load_tokens, name))
            references.append(saved[name].likeness_reference)
            labels.append(name)
            continue
        label = PHOTOS if part.source.photos else f"photos of part {number}"
        identity = _source(part.source, args, ctx, f"mix.{number}", f"mix part {number}")
        tokens.append(identity.tokens)
        references.append(identity.likeness_reference)
        labels.append(label)
        reports += identity.reports  # their photos' warnings, labelled with the part
        photos += identity.photos
    weights = [part.weight for part in args.mix]
    mixed = ctx.services.pipeline().mix(tokens, weights, model, labels=labels)
    reference = _mixed_reference(references, weights)
    return replace(
        mixed, photos=photos, likeness_reference=reference, notes=tuple(notes),
        reports=tuple(reports),
    )  # fmt: skip


def _mixed_reference(references: Sequence[Any], weights: Sequence[float]) -> Any:
    """The likeness reference of a mix: the weighted mean of its parts' references (None when
    one part has none, e.g. an identity saved before references were recorded)."""
    from hyperlora_ext.likeness import reference_embedding

    if any(reference is None for reference in references):
        return None
    return reference_embedding(references, weights)


def _mix_model(
    args: HyperLoRAArgs, saved: dict[str, Identity], ctx: Context
) -> tuple[str, list[str]]:
    """The one model every identity of the mix was made with (their tokens live in its space),
    and a note when it is not the ``model`` the request named."""
    models = {name: identity.model for name, identity in saved.items() if identity.model}
    if len(set(models.values())) > 1:
        listed = ", ".join(f"{name!r} with {model!r}" for name, model in models.items())
        raise ArgumentError(
            "mix", f"only identities of one HyperLoRA model mix; these were made {listed}"
        )
    made_with = next(iter(models.values()), "")
    if made_with and args.model and args.model != made_with:
        note = (
            f"model {args.model!r} is ignored: the mix's saved identities were made with "
            f"{made_with!r}, so the whole mix is"
        )
        return made_with, [note]
    return made_with or args.model or ctx.services.default_model(), []


def _about(field: str, work: Callable[..., Any], *args: Any) -> Any:
    """``work(*args)``; a HyperLoRAError it raises is about the request field ``field``."""
    with about(field):
        return work(*args)
