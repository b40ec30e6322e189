"""The identities a generation applies, from its arguments: the main identity (photos, a saved
identity, or a mix of several) and a slider's positive and negative identity.

Used by the script (``job``), the accordion's "Save as LoRA" and the API, so all three read the
same fields the same way. API photos are decoded from base64 here (never server paths).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hyperlora_ext.args import PHOTOS, HyperLoRAArgs, IdentitySource
from hyperlora_ext.errors import ArgumentError, HyperLoRAError

# (photos, their weights or None, the arguments naming model and face options) -> IdentityResult
Predict = Callable[[Sequence[Any], Sequence[float] | None, HyperLoRAArgs], Any]


@dataclass(frozen=True)
class Context:
    """Where identities come from: the script, the accordion and the API each build one."""

    predict: Predict
    pipeline: Callable[[], Any]  # -> identity.IdentityPipeline (for mixing)
    store: Callable[[], Any]  # -> identities.IdentityStore
    default_model: Callable[[], str]
    is_api: bool = False  # photos are base64 only (never server paths)


def webui_context(predict: Predict, *, is_api: bool = False) -> Context:
    from hyperlora_ext.webui import host

    return Context(predict, host.pipeline, host.identity_store, host.default_model, is_api)


@dataclass(frozen=True)
class Identity:
    """An identity ready to patch in, and what the infotext and a save need of it."""

    lora: dict[str, torch.Tensor]
    digest: str
    model: str
    tokens: torch.Tensor | None = None  # None for a saved identity (read only when mixing)
    seconds: float = 0.0
    cache_hit: bool = False
    photos: int = 0
    preview: Any = None
    reference: Any = None  # likeness reference embedding (512 floats); None when unknown
    name: str = ""  # the saved identity's name, when it is one


def main_identity(args: HyperLoRAArgs, ctx: Context) -> tuple[Identity, HyperLoRAArgs]:
    """The generation's identity, and ``args`` with the model it was made with."""
    if args.mix:
        identity = mixed_identity(args, ctx)
    elif args.identity:
        identity = saved_identity(args.identity, args.model, ctx)
    elif args.images:
        args = args.replace(model=args.model or ctx.default_model())
        identity = photos_identity(args.images, args.photo_weights, args, ctx, "images")
    else:
        raise HyperLoRAError(
            "no reference photo: add at least one photo in the HyperLoRA panel (or pick a saved "
            "identity), or turn HyperLoRA off"
        )
    return identity, args.replace(model=identity.model)


def slider_identities(args: HyperLoRAArgs, ctx: Context) -> tuple[Identity, Identity]:
    """The slider's positive and negative identity (``args.model`` makes those from photos)."""
    assert args.slider_positive is not None and args.slider_negative is not None
    return (
        source_identity(args.slider_positive, args, ctx, "slider_positive"),
        source_identity(args.slider_negative, args, ctx, "slider_negative"),
    )


def source_identity(
    source: IdentitySource, args: HyperLoRAArgs, ctx: Context, field: str
) -> Identity:
    if source.identity:
        return saved_identity(source.identity, args.model, ctx)
    args = args.replace(model=args.model or ctx.default_model())
    if source.photos:
        if not args.images:
            raise ArgumentError(field, f"{PHOTOS} stands for the photos, but none are given")
        return photos_identity(args.images, args.photo_weights, args, ctx, "images")
    return photos_identity(source.images, source.photo_weights, args, ctx, f"{field}.images")


def photos_identity(
    images: Sequence[Any],
    weights: Sequence[float],
    args: HyperLoRAArgs,
    ctx: Context,
    field: str,
) -> Identity:
    if ctx.is_api:  # API photos are base64 only: never let a client name a path
        images = _api_images(images, field)
    result = ctx.predict(list(images), list(weights) or None, args)
    preview = next((r.preview for r in result.reports if r.preview is not None), None)
    return Identity(
        result.lora, result.digest, args.model, result.tokens, result.seconds,
        result.cache_hit, result.photos_used, preview, result.reference_embedding,
    )  # fmt: skip


def _api_images(images: Sequence[Any], field: str) -> list[bytes]:
    from hyperlora_ext.encoders.images import api_images
    from hyperlora_ext.errors import ImageTooLargeError

    try:
        return _about(field, api_images, images)
    except ImageTooLargeError as error:  # a limit of the request's argument, like their count
        raise ArgumentError(field, str(error)) from None


def saved_identity(name: str, model: str, ctx: Context) -> Identity:
    saved = ctx.store().load(name)
    # The infotext names the model the identity was made with, not the unused dropdown value.
    reference = saved.record.reference_embedding or None
    return Identity(
        saved.lora, saved.digest, saved.record.model or model, reference=reference, name=name
    )


def mixed_identity(args: HyperLoRAArgs, ctx: Context) -> Identity:
    """The weighted mix of the identities of ``args.mix``, fused like photos are."""
    if args.images and not any(part.source.photos for part in args.mix):
        raise ArgumentError(
            "mix", f"photos are given but the mix does not use them: add {PHOTOS}:WEIGHT to the "
            "mix, or remove the photos"
        )  # fmt: skip
    store = ctx.store()
    model = _mix_model(args, store, ctx)
    args = args.replace(model=model)
    tokens, references, photos = [], [], 0
    for part in args.mix:
        if part.source.identity:
            tokens.append(_about("mix", store.load_tokens, part.source.identity))
            references.append(store.record(part.source.identity).reference_embedding or None)
            continue
        identity = source_identity(part.source, args, ctx, "mix")
        tokens.append(identity.tokens)
        references.append(identity.reference)
        photos += identity.photos
    weights = [part.weight for part in args.mix]
    result = ctx.pipeline().mix(tokens, weights, model)
    return Identity(
        result.lora, result.digest, model, result.tokens, result.seconds, photos=photos,
        reference=_mixed_reference(references, weights),
    )  # fmt: skip


def _mixed_reference(references: Sequence[Any], weights: Sequence[float]) -> Any:
    """The likeness reference of a mix: the weighted mean of its parts' references (None when
    one part has none, e.g. an identity saved before references were recorded)."""
    from hyperlora_ext.likeness import reference_embedding

    if any(reference is None for reference in references):
        return None
    return reference_embedding(references, weights)


def _mix_model(args: HyperLoRAArgs, store: Any, ctx: Context) -> str:
    """The one model every identity of the mix was made with (their tokens live in its space)."""
    models: dict[str, str] = {}
    for part in args.mix:
        if part.source.identity:
            record = _about("mix", store.record, part.source.identity)
            if record.model:
                models[part.source.identity] = record.model
    if len(set(models.values())) > 1:
        listed = ", ".join(f"{name!r} with {model!r}" for name, model in models.items())
        raise ArgumentError(
            "mix", f"only identities of one HyperLoRA model mix; these were made {listed}"
        )
    return next(iter(models.values()), "") or args.model or ctx.default_model()


def _about(field: str, work: Callable[..., Any], *args: Any) -> Any:
    """``work(*args)``; a HyperLoRAError it raises is about the request field ``field``."""
    try:
        return work(*args)
    except HyperLoRAError as error:
        if getattr(error, "field", None) is None:
            error.field = field  # type: ignore[attr-defined]
        raise
