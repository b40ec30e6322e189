"""Model roots and registry: where the HyperLoRA models, CLIP ViT-L/14 and antelopev2 live.

The default layout is the one users already have from the official ComfyUI plugin, placed under the
WebUI's ``models/`` folder::

    models/
      hyper_lora/
        hyper_lora/<name>/      hyper_lora_modules.json, hyper_lora_modules.safetensors,
                                resampler.safetensors, id_projector.safetensors
        clip_vit/<name>/        config.json, model.safetensors (openai/clip-vit-large-patch14)
      clip_vision/<file>.safetensors   optional single-file CLIP ViT-L/14 vision encoders
      insightface/models/antelopev2/   *.onnx (or the zip's nested antelopev2/antelopev2/)

Model names are plain folder or file names, never paths: :func:`safe_child` rejects anything that
would leave its root. Every "not found" error says what is missing and where it should go.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hyperlora_ext import names
from hyperlora_ext.errors import InvalidNameError, ModelNotFoundError
from hyperlora_ext.facts import (
    ANTELOPEV2,
    ANTELOPEV2_FILES,
    ANTELOPEV2_REQUIRED,
    CLIP_FILES,
    CLIP_L14_LAYERS,
    CLIP_L14_WIDTH,
    DEFAULT_CLIP,
    HYPERLORA_FILES,
    HYPERLORA_MODEL_NOTES,
    HYPERLORA_MODELS,
    FileSpec,
)
from hyperlora_ext.files import safetensors_reader
from hyperlora_ext.model_files import damaged_file, truncation

_ROOT_OPTIONS = (
    ("--hyper-lora-dir", "hyper_lora"),
    ("--clip-vit-dir", "clip_vit"),
    ("--insightface-dir", "insightface"),
)


@dataclass(frozen=True)
class ModelRoots:
    """The folders the registry searches. ``models_dir`` is only used to phrase hints."""

    hyper_lora: Path
    clip_vit: Path
    insightface: Path  # the insightface root: antelopev2 lives in <insightface>/models/antelopev2
    clip_vision_files: Path | None = None
    models_dir: Path | None = None

    @classmethod
    def from_models_dir(cls, models_dir: str | Path) -> ModelRoots:
        models = user_path(models_dir)
        return cls(
            hyper_lora=models / "hyper_lora" / "hyper_lora",
            clip_vit=models / "hyper_lora" / "clip_vit",
            insightface=models / "insightface",
            clip_vision_files=models / "clip_vision",
            models_dir=models,
        )

    @property
    def antelopev2(self) -> Path:
        """Where the antelopev2 pack is installed (the flat layout)."""
        return self.insightface / "models" / ANTELOPEV2

    def cli_arguments(self) -> str:
        """The command-line options that select these roots (for hints users can paste)."""
        models = self.models_dir or self.hyper_lora.parent.parent
        text = f"--models-dir {_quote(models)}"
        default = ModelRoots.from_models_dir(models)
        for option, field in _ROOT_OPTIONS:
            if getattr(self, field) != getattr(default, field):
                text += f" {option} {_quote(getattr(self, field))}"
        return text

    def download_hint(self) -> str:
        return f"python -m hyperlora_ext download {self.cli_arguments()}"


def user_path(value: str | Path) -> Path:
    """A folder path as users paste it: surrounding spaces and quotes (Windows' "Copy as path"
    adds them) removed, ``~`` expanded; backslashes and drive letters are kept as given."""
    text = str(value).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return Path(text).expanduser()


def default_models_dir() -> Path:
    """The WebUI's ``models/`` folder when this package sits in ``<webui>/extensions/<ext>/``.

    ``HYPERLORA_MODELS_DIR`` overrides it; outside a WebUI it is ``./models``.
    """
    env = os.environ.get("HYPERLORA_MODELS_DIR")
    if env:
        return user_path(env)
    extension = Path(__file__).resolve().parent.parent
    if extension.parent.name == "extensions":
        return extension.parent.parent / "models"
    return Path.cwd() / "models"


@dataclass(frozen=True)
class ModelStatus:
    """What the registry found for one model: where, and which of its files are missing or bad."""

    kind: str  # "hyperlora" | "clip" | "antelopev2"
    name: str
    path: Path
    missing: tuple[str, ...] = ()  # file names absent or empty
    problem: str = ""  # anything else (e.g. a symlink leaving the root)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.problem


# --------------------------------------------------------------------------- names
def safe_child(root: str | Path, name: str) -> Path:
    """``root / name`` for a plain model ``name`` (:func:`names.child`); InvalidNameError else."""
    return names.child(root, name, "model name")


def escaping_file(folder: Path, specs: Sequence[FileSpec]) -> str:
    """Why a file of ``folder`` is refused (a link leading outside it), or ""."""
    for spec in specs:
        try:
            names.inside(folder, folder / spec.name)
        except InvalidNameError as exc:
            return str(exc)
    return ""


# ----------------------------------------------------------------- file checks
def missing_files(folder: Path, specs: Sequence[FileSpec]) -> tuple[str, ...]:
    """Names of the files that are absent, not regular files, or empty."""
    return tuple(
        spec.name
        for spec in specs
        if not (folder / spec.name).is_file() or (folder / spec.name).stat().st_size == 0
    )


# ------------------------------------------------------------------- HyperLoRA
def inspect_hyperlora(roots: ModelRoots) -> list[ModelStatus]:
    """Every model folder under ``roots.hyper_lora`` (complete or not), sorted by name."""
    return [_hyperlora_status(roots, name) for name in _entries(roots.hyper_lora, dirs=True)]


def _hyperlora_status(roots: ModelRoots, name: str) -> ModelStatus:
    try:
        folder = safe_child(roots.hyper_lora, name)
    except InvalidNameError as exc:
        return ModelStatus("hyperlora", name, roots.hyper_lora / name, problem=str(exc))
    problem = escaping_file(folder, HYPERLORA_FILES) or damaged_file(folder, HYPERLORA_FILES)
    return ModelStatus("hyperlora", name, folder, missing_files(folder, HYPERLORA_FILES), problem)


def list_hyperlora_models(roots: ModelRoots) -> list[str]:
    """Names of the complete HyperLoRA model folders, in :func:`preferred_order`."""
    return preferred_order(s.name for s in inspect_hyperlora(roots) if s.complete)


def preferred_order(names: Iterable[str]) -> list[str]:
    """The released models first, in the order of HYPERLORA_MODELS (fidelity, the authors'
    default, then edit), then any other model folders alphabetically."""
    rank = {name: index for index, name in enumerate(HYPERLORA_MODELS)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


def default_hyperlora(roots: ModelRoots) -> str:
    """The model used when none is chosen: fidelity when installed (what the authors' workflows
    use), else the first installed one in :func:`preferred_order`."""
    models = list_hyperlora_models(roots)
    if not models:
        raise ModelNotFoundError(
            f"no HyperLoRA model installed: put one under {roots.hyper_lora}, or run: "
            f"{roots.download_hint()}"
        )
    return models[0]


def describe_hyperlora(name: str) -> str:
    """``name`` with what it is for, e.g. "sdxl_hyper_id_lora_v1_edit (more editability: ...)";
    a model folder of unknown origin is its bare name."""
    note = HYPERLORA_MODEL_NOTES.get(name)
    return f"{name} ({note})" if note else name


def resolve_hyperlora(roots: ModelRoots, name: str) -> Path:
    """The folder of HyperLoRA model ``name``; explains what is missing and where it goes."""
    installed = list_hyperlora_models(roots)
    if not name:
        raise ModelNotFoundError(
            f"no HyperLoRA model chosen; installed: {_names(installed)} (in {roots.hyper_lora})"
        )
    folder = safe_child(roots.hyper_lora, name)
    needed = ", ".join(spec.name for spec in HYPERLORA_FILES)
    if not folder.is_dir():
        raise ModelNotFoundError(
            f"HyperLoRA model {name!r} not found: there is no folder {folder}. "
            f"Installed: {_names(installed)}. A model is a folder {roots.hyper_lora}/<name>/ "
            f"holding {needed}. To fetch the released models run: {roots.download_hint()}"
        )
    problem = escaping_file(folder, HYPERLORA_FILES)
    if problem:
        raise InvalidNameError(f"HyperLoRA model {name!r}: {problem}")
    missing = missing_files(folder, HYPERLORA_FILES)
    if missing:
        raise ModelNotFoundError(
            f"HyperLoRA model {name!r} in {folder} is incomplete: missing or empty "
            f"{', '.join(missing)}. Put them into {folder} (from the model's folder in the "
            f"bytedance-research/HyperLoRA repository) or run: {roots.download_hint()}"
        )
    return folder


# ------------------------------------------------------------------------ CLIP
def inspect_clip(roots: ModelRoots) -> list[ModelStatus]:
    """CLIP folders under ``roots.clip_vit`` and ViT-L/14 files in ``roots.clip_vision_files``."""
    found = []
    for name in _entries(roots.clip_vit, dirs=True):
        try:
            folder = safe_child(roots.clip_vit, name)
        except InvalidNameError as exc:
            found.append(ModelStatus("clip", name, roots.clip_vit / name, problem=str(exc)))
            continue
        missing = missing_files(folder, CLIP_FILES)
        problem = escaping_file(folder, CLIP_FILES) or damaged_file(folder, CLIP_FILES)
        found.append(ModelStatus("clip", name, folder, missing, problem))
    files = roots.clip_vision_files
    if files is not None:
        for name in _entries(files, dirs=False):
            if not name.endswith(".safetensors"):
                continue
            try:
                path = safe_child(files, name)
            except InvalidNameError as exc:
                found.append(ModelStatus("clip", name, files / name, problem=str(exc)))
                continue
            if is_clip_l14_file(path):  # clip_vision also holds ViT-H/bigG files for IP-Adapter
                found.append(ModelStatus("clip", name, path, problem=truncation(path)))
    return found


def list_clip_encoders(roots: ModelRoots) -> list[str]:
    """Names of the usable CLIP ViT-L/14 encoders: folder names first, then single files."""
    return [s.name for s in inspect_clip(roots) if s.complete]


def resolve_clip(roots: ModelRoots, name: str | None = None) -> Path:
    """The CLIP ViT-L/14 folder (or single file) ``name``; None picks the installed one."""
    if not name:
        return _default_clip(roots)
    if name.endswith(".safetensors"):
        return _resolve_clip_file(roots, name)
    folder = safe_child(roots.clip_vit, name)
    if not folder.is_dir():
        raise ModelNotFoundError(
            f"CLIP encoder {name!r} not found: there is no folder {folder}. "
            f"Installed: {_names(list_clip_encoders(roots))}. {_clip_help(roots)}"
        )
    problem = escaping_file(folder, CLIP_FILES)
    if problem:
        raise InvalidNameError(f"CLIP encoder {name!r}: {problem}")
    missing = missing_files(folder, CLIP_FILES)
    if missing:
        raise ModelNotFoundError(
            f"CLIP encoder folder {folder} is incomplete: missing or empty {', '.join(missing)}. "
            f"{_clip_help(roots)}"
        )
    return folder


def _resolve_clip_file(roots: ModelRoots, name: str) -> Path:
    if roots.clip_vision_files is None:
        raise ModelNotFoundError(
            f"CLIP encoder {name!r} is a single file, but no single-file folder is configured. "
            f"{_clip_help(roots)}"
        )
    path = safe_child(roots.clip_vision_files, name)
    if not path.is_file():
        raise ModelNotFoundError(
            f"CLIP encoder {name!r} not found: there is no file {path}. "
            f"Installed: {_names(list_clip_encoders(roots))}. {_clip_help(roots)}"
        )
    if not is_clip_l14_file(path):
        raise ModelNotFoundError(
            f"{path} is not a CLIP ViT-L/14 vision encoder in HuggingFace format (24 layers "
            f"of width 1024, 'vision_model.*' tensors), which HyperLoRA needs. {_clip_help(roots)}"
        )
    return path


def _default_clip(roots: ModelRoots) -> Path:
    usable = [s for s in inspect_clip(roots) if s.complete]
    for status in usable:
        if status.name == DEFAULT_CLIP:
            return status.path
    if usable:
        return usable[0].path
    statuses = inspect_clip(roots)
    detail = "".join(f" {s.path} lacks {', '.join(s.missing)}." for s in statuses if s.missing)
    detail += "".join(f" {s.problem}." for s in statuses if s.problem and not s.missing)
    raise ModelNotFoundError(f"no CLIP ViT-L/14 vision encoder found.{detail} {_clip_help(roots)}")


def _clip_help(roots: ModelRoots) -> str:
    where = f"{roots.clip_vit / DEFAULT_CLIP}/ with config.json and model.safetensors"
    single = (
        f", or a single-file ViT-L/14 vision encoder in {roots.clip_vision_files}/"
        if roots.clip_vision_files is not None
        else ""
    )
    return (
        f"HyperLoRA needs openai/clip-vit-large-patch14 in {where}{single}. "
        f"To fetch it run: {roots.download_hint()}"
    )


def is_clip_l14_file(path: Path) -> bool:
    """True for a HuggingFace-format CLIP ViT-L/14 vision checkpoint (checked from the header)."""
    last, beyond = f"vision_model.encoder.layers.{CLIP_L14_LAYERS - 1}.", "vision_model.encoder."
    beyond += f"layers.{CLIP_L14_LAYERS}."
    try:
        with safetensors_reader(path, framework="numpy") as handle:
            keys = set(handle.keys())
            patch = "vision_model.embeddings.patch_embedding.weight"
            if patch not in keys:
                return False
            shape = handle.get_slice(patch).get_shape()
    except Exception:  # not a readable safetensors file
        return False
    has_last = any(k.startswith(last) for k in keys)
    has_beyond = any(k.startswith(beyond) for k in keys)
    return has_last and not has_beyond and list(shape) == [CLIP_L14_WIDTH, 3, 14, 14]


# ------------------------------------------------------------------ antelopev2
def antelopev2_folders(insightface_root: str | Path) -> list[Path]:
    """Where an antelopev2 pack may be, in the order tried, for an insightface root (the folder
    holding ``models/antelopev2``): the flat layout, the nested one the official zip unpacks to,
    the same without ``models/``, and the root being the pack folder itself."""
    root = user_path(insightface_root)
    return [
        root / "models" / ANTELOPEV2,
        root / "models" / ANTELOPEV2 / ANTELOPEV2,
        root / ANTELOPEV2,
        root / ANTELOPEV2 / ANTELOPEV2,
        root,
    ]


def find_antelopev2(insightface_root: str | Path) -> Path | None:
    """The first of :func:`antelopev2_folders` that holds ``*.onnx`` files, or None."""
    for folder in antelopev2_folders(insightface_root):
        if folder.is_dir() and any(folder.glob("*.onnx")):
            return folder
    return None


def inspect_antelopev2(roots: ModelRoots) -> ModelStatus:
    """The antelopev2 pack under ``roots.insightface`` (see :func:`antelopev2_folders`)."""
    folder = find_antelopev2(roots.insightface)
    if folder is not None:
        return ModelStatus("antelopev2", ANTELOPEV2, folder, _missing_onnx(folder))
    return ModelStatus("antelopev2", ANTELOPEV2, roots.antelopev2, ANTELOPEV2_REQUIRED)


def _missing_onnx(folder: Path) -> tuple[str, ...]:
    specs = [FileSpec(name) for name in ANTELOPEV2_REQUIRED]
    return missing_files(folder, specs)


def resolve_antelopev2(roots: ModelRoots) -> Path:
    """The folder holding antelopev2's ``*.onnx`` files (FaceAnalyzer accepts it as its root)."""
    status = inspect_antelopev2(roots)
    if status.complete:
        return status.path
    if status.path.is_dir() and any(status.path.glob("*.onnx")):
        raise ModelNotFoundError(
            f"the InsightFace antelopev2 pack in {status.path} is incomplete: missing "
            f"{', '.join(status.missing)}. Re-download it: {roots.download_hint()}"
        )
    raise ModelNotFoundError(
        f"InsightFace antelopev2 not found: put {', '.join(ANTELOPEV2_FILES)} into "
        f"{roots.antelopev2}/ (the nested {roots.antelopev2 / ANTELOPEV2}/ of the official zip "
        f"works too), or run: {roots.download_hint()}"
    )


# --------------------------------------------------------------------- helpers
def _entries(folder: Path, *, dirs: bool) -> list[str]:
    """Sorted visible sub-folders (or files) of ``folder``; none when it does not exist."""
    if not folder.is_dir():
        return []
    return sorted(
        entry.name
        for entry in folder.iterdir()
        if not entry.name.startswith(".") and (entry.is_dir() if dirs else entry.is_file())
    )


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def _quote(path: Path) -> str:
    text = str(path)
    return f'"{text}"' if " " in text else text
