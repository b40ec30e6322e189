"""Request and response bodies of the ``/hyperlora/v1`` routes, as pydantic models.

They are the routes' schema in the WebUI's ``/docs`` and the one list of each request's fields.
The request checks themselves (with their specific messages) live in :mod:`.api`. Written for
both pydantic 1.10 (A1111 1.10) and pydantic 2 (Forge 2): flat request models, no validators.
"""

from typing import Any

from pydantic import BaseModel, Field

from hyperlora_ext.args import HyperLoRAArgs
from hyperlora_ext.facts import MAX_IMAGES

MIN_CROP_SIDE, MAX_CROP_SIDE = 16, 1024
PHOTOS = (
    f"1 to {MAX_IMAGES} photos, each a base64 string or a data:image/...;base64, URL "
    "(never a path or an address)"
)


# ------------------------------------------------------------------------------- requests
def _arg(name: str, default: Any = ...) -> Any:
    """The request field of the generation argument ``name``: its default, hint and range as the
    argument model declares them (hyperlora_ext.arg_table)."""
    spec = HyperLoRAArgs.specs()[name]
    low, high = spec.range or (None, None)
    default = getattr(HyperLoRAArgs, name) if default is ... else default
    return Field(default, description=spec.hint, ge=low, le=high)


class DetectRequest(BaseModel):
    """Faces in posted photos."""

    images: list[str] = Field(..., description=PHOTOS)
    crops: bool = Field(True, description="return a PNG crop of each face")
    crop_size: int = Field(
        256, ge=MIN_CROP_SIDE, le=MAX_CROP_SIDE, description="side of the square crops, pixels"
    )


class EncodeRequest(BaseModel):
    """Photos (or a mix) -> identity; optionally saved as a named identity or returned as a LoRA
    file."""

    images: list[str] | None = Field(None, description=PHOTOS + "; optional with a mix")
    photo_weights: list[float] | None = _arg("photo_weights", None)
    mix: list[dict[str, Any]] | None = _arg("mix", None)
    model: str = _arg("model")
    face: str = _arg("face")
    face_index: int = _arg("face_index")
    remove_background: bool = _arg("remove_background")
    grayscale: bool = _arg("grayscale")
    dtype: str = _arg("dtype")
    save_as: str | None = Field(None, description="save under this identity name")
    overwrite: bool = Field(False, description="replace an identity of the same name")
    return_lora: bool = Field(False, description="include the .safetensors file as base64")


class LikenessRequest(BaseModel):
    """Images scored against a saved identity or photos of the person (exactly one of the two)."""

    images: list[str] = Field(..., description=PHOTOS)
    identity: str | None = Field(None, description="the name of a saved identity")
    reference_images: list[str] | None = Field(
        None, description="photos of the person, instead of 'identity': " + PHOTOS
    )


class RenameRequest(BaseModel):
    """A new name for a saved identity (all its files move)."""

    new_name: str = Field(..., description="the new name (the rules of save_as)")
    overwrite: bool = Field(False, description="replace an identity of that name")


def field_names(model: type[BaseModel]) -> tuple[str, ...]:
    """The request fields of ``model``, in declaration order (pydantic 1 and 2)."""
    return tuple(_fields(model))


def defaults(model: type[BaseModel]) -> dict[str, Any]:
    """The default of every optional request field of ``model`` (pydantic 1 and 2)."""
    return {name: f.default for name, f in _fields(model).items() if not _required(f)}


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    fields: Any = getattr(model, "model_fields", None) or model.__fields__  # pydantic 2 or 1
    return dict(fields)


def _required(field: Any) -> bool:
    is_required = getattr(field, "is_required", None)  # pydantic 2: a method; 1: an attribute
    return bool(is_required() if callable(is_required) else field.required)


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of a flat request model (pydantic 1 and 2)."""
    if hasattr(model, "model_json_schema"):
        return model.model_json_schema()
    return model.schema()


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON request body the route reads itself."""
    schema = {"content": {"application/json": {"schema": json_schema(model)}}, "required": True}
    return {"requestBody": schema}


# ------------------------------------------------------------------------------ responses
class ErrorBody(BaseModel):
    """Every error of these routes (4xx; 500 only for faults of the server)."""

    error: str = Field(..., description="the error type, e.g. NoFaceError")
    detail: str = Field(..., description="what was wrong and what to do")
    field: str | None = Field(None, description="the request field at fault")


class CacheStats(BaseModel):
    entries: int
    bytes: int
    hits: int
    misses: int


class ADetailerStatus(BaseModel):
    """ADetailer's settings as they matter to HyperLoRA: its face pass keeps the identity only
    when ``hyperlora`` is in ``ad_script_names``; ``fix`` is the /sdapi/v1/options body."""

    installed: bool
    only_selected_scripts: bool
    script_names: str
    listed: bool
    keeps_identity: bool
    problem: str | None
    fix: dict[str, str] | None
    notes: list[str]


class StatusResponse(BaseModel):
    version: str
    ready: bool
    device: str
    cache: CacheStats
    identities: int
    adetailer: ADetailerStatus


class ModelState(BaseModel):
    name: str
    complete: bool
    path: str
    missing: list[str]
    problem: str


class Problem(BaseModel):
    name: str
    status: str
    message: str
    fix: str


class ModelsResponse(BaseModel):
    ready: bool
    hyperlora: list[ModelState]
    clip: list[ModelState]
    antelopev2: ModelState
    problems: list[Problem]


class FaceBox(BaseModel):
    index: int = Field(..., description="the face_index that picks this face")
    box: list[float] = Field(..., description="x1, y1, x2, y2 in the photo's pixels")
    score: float
    crop: str | None = Field(None, description="PNG, base64; present when crops is true")


class PhotoFaces(BaseModel):
    width: int
    height: int
    faces: list[FaceBox]
    largest: int | None = Field(None, description="index of the face face=largest picks")
    best_score: int | None = Field(None, description="index of the face face=best_score picks")


class DetectResponse(BaseModel):
    images: list[PhotoFaces]


class PhotoUse(BaseModel):
    label: str
    faces_found: int
    used: bool
    reason: str | None
    box: list[float] | None
    score: float | None


class IdentityRecord(BaseModel):
    name: str
    model: str
    digest: str
    photos: int
    created: str
    options: dict[str, Any]
    version: int
    likeness_reference: bool = Field(
        False, description="whether images can be scored against it (/likeness)"
    )
    prompt_tag: str = Field(..., description="use it in any prompt, e.g. <lora:NAME:0.8>")


class IdentityWithPreview(IdentityRecord):
    preview: str | None = Field(None, description="PNG, base64; with ?preview=true")
    lora: str | None = Field(None, description="the .safetensors file, base64; with ?lora=true")
    lora_filename: str | None = Field(None, description="NAME.safetensors; with ?lora=true")


class RenameResponse(BaseModel):
    renamed: str = Field(..., description="the old name")
    identity: IdentityRecord


class IdentityList(BaseModel):
    identities: list[IdentityRecord]


class EncodeResponse(BaseModel):
    digest: str
    model: str
    dtype: str = Field("", description="the encoders' dtype (fp32, bf16, fp16); '' if unknown")
    photos_used: int
    cache_hit: bool
    seconds: float
    warnings: list[str]
    photos: list[PhotoUse]
    saved: IdentityRecord | None
    lora: str | None = Field(None, description="the .safetensors file, base64")
    lora_filename: str | None = None


class LikenessScore(BaseModel):
    image: str = Field(..., description="image 1, image 2, ... in request order")
    faces: int = Field(..., description="faces found; the largest one is scored")
    likeness: float | None = Field(
        None, description="ArcFace cosine similarity, -1..1; null when no face was found"
    )


class LikenessResponse(BaseModel):
    images: list[LikenessScore]


class DeleteResponse(BaseModel):
    deleted: str
    files: list[str]


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 404, 409, 413, 422, 500)
}
