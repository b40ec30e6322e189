"""``doctor``: what is installed, where, what is missing, and how to fix it.

Each check is a small function returning :class:`Check` records; :func:`doctor` runs them all and
:func:`render` turns the result into text. Nothing here downloads or changes anything.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata

from hyperlora_ext.facts import (
    ANTELOPEV2_REQUIRED,
    CLIP_FILES,
    HYPERLORA_FILES,
    ONNXRUNTIME_FLAVOURS,
    FileSpec,
)
from hyperlora_ext.model_files import check_file
from hyperlora_ext.models import (
    ModelRoots,
    ModelStatus,
    escaping_file,
    inspect_antelopev2,
    inspect_clip,
    inspect_hyperlora,
)

OK, WARN, ERROR = "ok", "warn", "error"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK | WARN | ERROR
    message: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def doctor(roots: ModelRoots, *, environment: bool = True) -> list[Check]:
    """All checks: the Python environment (optional) and every model the pipeline needs."""
    checks = environment_checks() if environment else []
    return checks + model_checks(roots)


def has_errors(checks: list[Check]) -> bool:
    return any(c.status == ERROR for c in checks)


def render(checks: list[Check]) -> str:
    """Text report: one line per check, the fix indented below it."""
    labels = {OK: "[ ok  ]", WARN: "[warn ]", ERROR: "[ERROR]"}
    lines = []
    for check in checks:
        lines.append(f"{labels[check.status]} {check.name}: {check.message}")
        for number, line in enumerate(check.fix.splitlines()):
            lines.append(f"{'        fix: ' if number == 0 else ' ' * 13}{line}")
    errors = sum(c.status == ERROR for c in checks)
    warnings = sum(c.status == WARN for c in checks)
    lines.append(
        "All good: HyperLoRA is ready."
        if not errors and not warnings
        else f"{errors} problem(s), {warnings} warning(s)."
    )
    return "\n".join(lines)


# ------------------------------------------------------------------ environment
def environment_checks() -> list[Check]:
    checks = [_python()]
    for probe in (_torch, _onnxruntime, _insightface):
        checks += probe()
    checks += _library("safetensors")()
    checks += _library("huggingface_hub", needed_for="the download command")()
    return checks


def _python() -> Check:
    return Check("Python", OK, f"{platform.python_version()} ({sys.executable})")


def _torch() -> list[Check]:
    try:
        import torch
    except Exception as exc:  # any import failure is the finding
        return [Check("torch", ERROR, f"cannot be imported: {exc}", "run inside the WebUI's venv")]
    if torch.cuda.is_available():
        where = f"CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}"
    else:
        where = "no CUDA GPU: everything runs on the CPU (slow)"
    return [Check("torch", OK, f"{torch.__version__}, {where}")]


def _onnxruntime() -> list[Check]:
    installed = [f"{name} {_version(name)}" for name in ONNXRUNTIME_FLAVOURS if _version(name)]
    checks = []
    if len(installed) > 1:
        checks.append(
            Check(
                "onnxruntime packages",
                WARN,
                f"several flavours installed ({', '.join(installed)}); they overwrite each other",
                "pip uninstall all of them, then install exactly one (onnxruntime-gpu for NVIDIA)",
            )
        )
    try:
        import onnxruntime
    except Exception as exc:
        fix = "pip install onnxruntime (or onnxruntime-gpu on an NVIDIA GPU)"
        return [*checks, Check("onnxruntime", ERROR, f"cannot be imported: {exc}", fix)]
    providers = onnxruntime.get_available_providers()
    message = f"{onnxruntime.__version__}, providers: {', '.join(providers)}"
    checks.append(Check("onnxruntime", OK, message))
    if "CUDAExecutionProvider" not in providers and _cuda_available():
        checks.append(
            Check(
                "face analysis device",
                WARN,
                "a CUDA GPU is present but onnxruntime has no CUDA provider: faces run on the CPU",
                "pip uninstall onnxruntime, then pip install onnxruntime-gpu (optional, faster)",
            )
        )
    return checks


def _insightface() -> list[Check]:
    version = _version("insightface")
    if not version:
        fix = "pip install insightface (a prebuilt wheel avoids needing a C++ compiler)"
        return [Check("insightface", ERROR, "not installed", fix)]
    try:
        importlib.import_module("insightface.model_zoo")
    except Exception as exc:
        fix = "reinstall it: pip install --force-reinstall insightface (check its dependencies)"
        return [Check("insightface", ERROR, f"{version} is installed but fails: {exc}", fix)]
    return [Check("insightface", OK, version)]


def _library(name: str, needed_for: str = "") -> Callable[[], list[Check]]:
    def probe() -> list[Check]:
        version = _version(name)
        if version:
            return [Check(name, OK, version)]
        status = WARN if needed_for else ERROR
        message = f"not installed{f' (needed for {needed_for})' if needed_for else ''}"
        return [Check(name, status, message, f"pip install {name}")]

    return probe


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


# ----------------------------------------------------------------------- models
def models_ready(roots: ModelRoots) -> bool:
    """HyperLoRA can run: the one definition of "ready" (API, accordion, CLI agree on it)."""
    return not has_errors(model_checks(roots))


def model_checks(roots: ModelRoots) -> list[Check]:
    unusable = _unusable_folders(roots)
    if unusable:  # nothing below them can be looked at
        return unusable
    return [*_hyperlora_checks(roots), *_clip_checks(roots), _antelopev2_check(roots)]


def _unusable_folders(roots: ModelRoots) -> list[Check]:
    """The model folders the operating system refuses to look at (a name too long for it, no
    permission), as errors naming the folder; a folder that does not exist yet is fine here."""
    checks = []
    for folder in (roots.hyper_lora, roots.clip_vit, roots.insightface):
        try:
            os.stat(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (OSError, ValueError) as error:  # ValueError: a NUL character in the path
            reason = getattr(error, "strerror", None) or str(error)
            checks.append(
                Check(
                    "Model folder",
                    ERROR,
                    f"{folder} cannot be used: {reason}",
                    "choose another models folder (--models-dir or HYPERLORA_MODELS_DIR)",
                )
            )
    return checks


def _hyperlora_checks(roots: ModelRoots) -> list[Check]:
    found = inspect_hyperlora(roots)
    checks = [_status_check("HyperLoRA model", s, HYPERLORA_FILES, roots) for s in found]
    if not any(c.status == OK for c in checks):
        where = f"{roots.hyper_lora}/<name>/"
        checks.append(
            Check(
                "HyperLoRA models",
                ERROR,
                f"no complete model in {roots.hyper_lora}",
                f"{roots.download_hint()}\nor put each model folder at {where} with "
                f"{', '.join(s.name for s in HYPERLORA_FILES)}",
            )
        )
    return checks


def _clip_checks(roots: ModelRoots) -> list[Check]:
    found = inspect_clip(roots)
    checks = [_status_check("CLIP ViT-L/14", s, CLIP_FILES, roots) for s in found]
    if not any(c.status == OK for c in checks):
        where = f"{roots.clip_vit}/clip_vit_large_14/ with config.json and model.safetensors"
        checks.append(
            Check(
                "CLIP ViT-L/14",
                ERROR,
                f"no CLIP ViT-L/14 vision encoder in {roots.clip_vit}",
                f"{roots.download_hint()} (add --only clip for just this)\n"
                f"or put openai/clip-vit-large-patch14 in {where}",
            )
        )
    return checks


def _status_check(kind: str, status: ModelStatus, specs, roots: ModelRoots) -> Check:
    name = f"{kind} {status.name}"
    fix = f"delete the broken file(s), then {roots.download_hint()}"
    if status.problem:  # a bad name, a link leaving its root, or a truncated file
        damaged = status.path.is_dir() and not escaping_file(status.path, specs)
        return Check(name, ERROR, status.problem, fix if damaged else "")
    if status.missing:
        return Check(
            name,
            ERROR,
            f"{status.path} is incomplete: missing or empty {', '.join(status.missing)}",
            f"{roots.download_hint()}\nor copy the missing file(s) into {status.path}",
        )
    if status.path.is_dir():
        found = [check_file(status.path / spec.name, spec) for spec in specs]
        if not any(found) and status.kind == "hyperlora":
            found = [_files_together(status.path)]
        problems = [p for p in found if p]
        if problems:
            return Check(name, ERROR, "; ".join(problems), fix)
    return Check(name, OK, str(status.path))


def _files_together(folder) -> str | None:
    """Whether a model folder's files fit each other (e.g. not from two releases)."""
    from hyperlora_ext.engine.model import check_model_folder
    from hyperlora_ext.errors import CheckpointError

    try:
        check_model_folder(folder)
    except CheckpointError as exc:
        return str(exc)
    return None


def _antelopev2_check(roots: ModelRoots) -> Check:
    status = inspect_antelopev2(roots)
    checked = [check_file(status.path / n, FileSpec(n)) for n in ANTELOPEV2_REQUIRED]
    broken = [b for b in checked if b]
    if status.complete and broken:
        fix = f"delete the broken file(s), then {roots.download_hint()} --only antelopev2"
        return Check("InsightFace antelopev2", ERROR, "; ".join(broken), fix)
    if status.complete:
        layout = "nested layout" if status.path != roots.antelopev2 else "installed"
        return Check("InsightFace antelopev2", OK, f"{layout}: {status.path}")
    return Check(
        "InsightFace antelopev2",
        ERROR,
        f"missing {', '.join(status.missing)} in {status.path}",
        f"{roots.download_hint()} (add --only antelopev2 for just this)\n"
        f"or unpack antelopev2.zip so that the *.onnx files are in {roots.antelopev2}/",
    )
