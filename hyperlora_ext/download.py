"""Fetch the HyperLoRA models, CLIP ViT-L/14 and antelopev2 from the Hugging Face Hub.

Each file is downloaded with huggingface_hub (its progress bar, and resume of interrupted
transfers) into a hidden staging folder beside its destination, then checked: size against the
hub's listing, a plausible minimum size, and for safetensors the expected tensor names (header
only). Only a file that passes is moved into place, so a partial or wrong download never replaces
an installed file; files already installed and passing the checks are skipped.

The sources are repo ids, overridable because the official antelopev2 link is dead and mirrors
come and go. ``owner/name/sub/folder`` names a folder inside a repository.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from hyperlora_ext.errors import CheckpointError, HyperLoRAError
from hyperlora_ext.facts import (
    ANTELOPEV2_SPECS,
    CLIP_FILES,
    DEFAULT_CLIP,
    HYPERLORA_FILES,
    HYPERLORA_MODELS,
    MB,
    FileSpec,
)
from hyperlora_ext.files import write_atomically
from hyperlora_ext.model_files import check_file
from hyperlora_ext.models import (
    ModelRoots,
    inspect_antelopev2,
    safe_child,
)

PARTS = ("hyperlora", "clip", "antelopev2")
STAGING = ".hyperlora-download"  # hidden, so the registry never lists it as a model

# Per file name, the smallest plausible download (catches error pages, Git LFS pointers).
SIZE_FLOORS = {
    spec.name: spec.download_floor for spec in (*HYPERLORA_FILES, *CLIP_FILES, *ANTELOPEV2_SPECS)
}

LIST_TIMEOUT = 30.0  # seconds for the hub's file listing; a silent server must not hang us
Downloader = Callable[..., str]  # hf_hub_download(repo_id=, filename=, local_dir=) -> local path
SizeLookup = Callable[[str], Mapping[str, int]]  # repo id -> {path in repo: size in bytes}
Log = Callable[[str], None]


@dataclass(frozen=True)
class Sources:
    """Where each part comes from: ``owner/name`` or ``owner/name/folder/inside``."""

    hyperlora: str = "bytedance-research/HyperLoRA"
    clip: str = "openai/clip-vit-large-patch14"
    antelopev2: str = "DIAMONIK7777/antelopev2"


@dataclass(frozen=True)
class DownloadFile:
    repo_id: str
    remote: str  # path inside the repository
    dest: Path
    spec: FileSpec


@dataclass(frozen=True)
class DownloadItem:
    label: str
    folder: Path
    files: tuple[DownloadFile, ...]


@dataclass(frozen=True)
class Outcome:
    file: DownloadFile
    action: str  # "installed" | "skipped"


def split_source(source: str) -> tuple[str, str]:
    """``owner/name[/folder]`` -> (repo id, folder prefix inside the repository)."""
    parts = [p for p in source.strip().split("/") if p]
    if len(parts) < 2 or any(p in (".", "..") for p in parts):
        raise HyperLoRAError(
            f"invalid source {source!r}: expected a Hugging Face repo id 'owner/name', "
            "optionally followed by a folder inside it ('owner/name/folder')"
        )
    return "/".join(parts[:2]), "/".join(parts[2:])


def plan_downloads(
    roots: ModelRoots,
    *,
    parts: Sequence[str] = PARTS,
    models: Sequence[str] = HYPERLORA_MODELS,
    sources: Sources = Sources(),
    size_floors: Mapping[str, int] = SIZE_FLOORS,
) -> list[DownloadItem]:
    """What to fetch and where it goes, in the registry's layout under ``roots``."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise HyperLoRAError(f"unknown part(s) {', '.join(sorted(unknown))}; known: {PARTS}")

    def item(label: str, source: str, folder: Path, specs: Sequence[FileSpec], sub: str = ""):
        repo_id, prefix = split_source(source)
        files = tuple(
            DownloadFile(
                repo_id,
                "/".join(p for p in (prefix, sub, spec.name) if p),
                folder / spec.name,
                replace(spec, min_bytes=max(spec.min_bytes, size_floors.get(spec.name, 1))),
            )
            for spec in specs
        )
        return DownloadItem(label, folder, files)

    items = []
    if "hyperlora" in parts:
        for name in models:
            folder = safe_child(roots.hyper_lora, name)
            items.append(
                item(f"HyperLoRA {name}", sources.hyperlora, folder, HYPERLORA_FILES, name)
            )
    if "clip" in parts:
        folder = roots.clip_vit / DEFAULT_CLIP
        items.append(item("CLIP ViT-L/14", sources.clip, folder, CLIP_FILES))
    if "antelopev2" in parts:
        # Keep an installed pack where it is (the zip's nested layout included).
        installed = inspect_antelopev2(roots)
        folder = installed.path if installed.path.is_dir() else roots.antelopev2
        specs = [FileSpec(spec.name) for spec in ANTELOPEV2_SPECS]
        items.append(item("InsightFace antelopev2", sources.antelopev2, folder, specs))
    return items


def pending(item: DownloadItem, *, force: bool = False) -> list[DownloadFile]:
    """The files of ``item`` that are not installed or fail their checks."""
    return [f for f in item.files if force or check_file(f.dest, f.spec) is not None]


def download(
    items: Sequence[DownloadItem],
    *,
    downloader: Downloader | None = None,
    remote_sizes: SizeLookup | None = None,
    force: bool = False,
    log: Log = print,
    progress: Callable[[int, int], None] | None = None,
) -> list[Outcome]:
    """Fetch, check and install every file of ``items`` that is missing or broken.

    ``downloader`` and ``remote_sizes`` default to huggingface_hub's ``hf_hub_download`` and the
    hub's file listing; tests pass local stand-ins. ``progress(done, total)`` counts files.
    """
    downloader = downloader or _hub_downloader()
    remote_sizes = remote_sizes or hub_file_sizes
    total = sum(len(i.files) for i in items)
    outcomes: list[Outcome] = []
    listings: dict[str, Mapping[str, int]] = {}

    def record(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if progress is not None:
            progress(len(outcomes), total)

    for item in items:
        todo = pending(item, force=force)
        for file in item.files:
            if file not in todo:
                record(Outcome(file, "skipped"))
        if not todo:
            log(f"{item.label}: already installed in {item.folder}")
            continue
        log(f"{item.label}: {len(todo)} file(s) to fetch into {item.folder}")
        sizes = _sizes_for(todo, listings, remote_sizes)
        _check_space(item.folder, sum(sizes[f.remote] for f in todo))
        _fetch_item(item, todo, sizes, downloader, log, record)
    return outcomes


def _fetch_item(
    item: DownloadItem,
    todo: Sequence[DownloadFile],
    sizes: Mapping[str, int],
    downloader: Downloader,
    log: Log,
    record: Callable[[Outcome], None],
) -> None:
    staging = item.folder.parent / STAGING / item.folder.name
    for file in todo:
        log(f"  {file.remote} ({sizes[file.remote] / MB:.1f} MB) from {file.repo_id}")
        staged = _fetch(downloader, file, staging)
        problem = check_file(staged, file.spec, sizes[file.remote])
        if problem:
            staged.unlink(missing_ok=True)
            raise CheckpointError(
                f"the download of {file.remote} from {file.repo_id} failed its check: {problem}. "
                f"It was not installed. Run the command again; if it fails the same way, the "
                f"source repository holds a different file: choose another one with its --*-repo "
                f"option."
            )
        _install(staged, file.dest)
        record(Outcome(file, "installed"))
    shutil.rmtree(staging, ignore_errors=True)  # also drops the hub's resume metadata
    _remove_if_empty(staging.parent)


def _sizes_for(
    todo: Sequence[DownloadFile],
    listings: dict[str, Mapping[str, int]],
    remote_sizes: SizeLookup,
) -> dict[str, int]:
    """The hub's size of each file; a file the repository lacks is a wrong source."""
    sizes = {}
    for file in todo:
        if file.repo_id not in listings:
            try:
                listings[file.repo_id] = remote_sizes(file.repo_id)
            except HyperLoRAError:
                raise
            except Exception as exc:  # network, auth and hub errors all end the same way
                raise HyperLoRAError(
                    f"could not list the files of {file.repo_id} on the Hugging Face Hub: {exc}. "
                    "Check the internet connection and the repo id."
                ) from exc
        size = listings[file.repo_id].get(file.remote)
        if size is None:
            raise HyperLoRAError(
                f"{file.repo_id} has no file {file.remote}: the repository is not the expected "
                "source. Choose another one with the matching --*-repo option."
            )
        sizes[file.remote] = size
    return sizes


def _check_space(folder: Path, needed: int) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise HyperLoRAError(
            f"not enough disk space in {existing}: the download needs {needed / 2**30:.2f} GB, "
            f"{free / 2**30:.2f} GB are free"
        )


def _fetch(downloader: Downloader, file: DownloadFile, staging: Path) -> Path:
    staging.mkdir(parents=True, exist_ok=True)
    try:
        path = downloader(repo_id=file.repo_id, filename=file.remote, local_dir=str(staging))
    except Exception as exc:  # network and hub errors: say what failed and that it resumes
        raise HyperLoRAError(
            f"could not download {file.remote} from {file.repo_id}: {exc}. Partial data is kept "
            f"in {staging}; run the command again to resume."
        ) from exc
    return Path(path)


def _install(staged: Path, dest: Path) -> None:
    """Move a checked file into place atomically (copy when it is a link or on another disk)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not staged.is_symlink():
        try:
            os.replace(staged, dest)
            return
        except OSError:
            pass
    try:
        write_atomically(dest, lambda temporary: shutil.copyfile(staged, temporary))
    except PermissionError as error:  # Windows: a mapped file cannot be replaced
        raise HyperLoRAError(
            f"could not replace {dest}: it is in use ({error}). A running WebUI keeps loaded "
            f"HyperLoRA models open (memory-mapped); close it and run the command again."
        ) from error


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (another part still staged) or gone
        folder.rmdir()


def _hub_downloader() -> Downloader:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise HyperLoRAError(
            "downloading needs the huggingface_hub package: pip install huggingface_hub"
        ) from exc
    return hf_hub_download


def hub_file_sizes(repo_id: str) -> dict[str, int]:
    """{path in repo: size} from the hub's listing of ``repo_id`` (one request)."""
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:
        raise HyperLoRAError(
            "downloading needs the huggingface_hub package: pip install huggingface_hub"
        ) from exc
    try:
        info = HfApi().model_info(repo_id, files_metadata=True, timeout=LIST_TIMEOUT)
    except OSError as exc:  # requests' timeouts and connection errors are OSErrors
        if "timed out" not in str(exc).lower() and "timeout" not in type(exc).__name__.lower():
            raise
        raise HyperLoRAError(
            f"the Hugging Face Hub did not answer within {LIST_TIMEOUT:g} s when listing the "
            f"files of {repo_id}. Check the internet connection (or HF_ENDPOINT) and try again."
        ) from exc
    return {s.rfilename: s.size for s in info.siblings or [] if s.size is not None}
