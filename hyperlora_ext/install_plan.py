"""What ``install.py`` installs, decided from what the WebUI venv already holds.

``plan_install(env)`` is pure: it takes an ``Environment`` (installed distributions, the CUDA
version of torch, the platform, whether a C++ compiler exists) and returns a ``Plan`` of pip steps.
``probe_environment()`` reads the real venv; ``install.py`` runs the plan.

Rules (docs/dependencies.md has the measurements behind them):
- Never install or upgrade packages the WebUI pins: every installed one is written to a constraints
  file, so pip fails or picks another version instead of replacing it.
- onnxruntime and onnxruntime-gpu (and opencv-python and -headless) ship the same import folder and
  overwrite each other, so any installed flavour counts as present.
- insightface goes in with ``--no-deps`` (its 2.x wheel asks for ``onnxruntime`` and
  ``opencv-python``, which would replace a GPU or headless flavour); its missing dependencies follow
  in a second round, read from its own metadata with flavours taken into account.
- insightface 2.x is a pure wheel; 0.7.3 is an sdist that needs a C++ compiler.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

try:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version
except ImportError:  # a venv without packaging (the WebUI's has it); pip carries a copy
    from pip._vendor.packaging.requirements import (  # type: ignore[assignment]
        InvalidRequirement,
        Requirement,
    )
    from pip._vendor.packaging.version import InvalidVersion, Version  # type: ignore[assignment]

from hyperlora_ext.facts import ONNXRUNTIME_FLAVOURS, OPENCV_FLAVOURS

# Packages the WebUI (A1111 1.10, Forge) pins or builds around; installed versions are frozen.
PROTECTED = frozenset(
    {
        "torch",
        "torchvision",
        "torchaudio",
        "torchsde",
        "xformers",
        "numpy",
        "gradio",
        "gradio-client",
        "pillow",
        "transformers",
        "tokenizers",
        "safetensors",
        "huggingface-hub",
        "accelerate",
        "diffusers",
        "fastapi",
        "starlette",
        "pydantic",
        "httpx",
        "httpcore",
        "h11",
        "scikit-image",
        "open-clip-torch",
        "pytorch-lightning",
        "setuptools",
    }
)

_FLAVOURS = {name: ONNXRUNTIME_FLAVOURS for name in ONNXRUNTIME_FLAVOURS} | {
    name: OPENCV_FLAVOURS for name in OPENCV_FLAVOURS
}

INSIGHTFACE_WHEEL = "insightface>=2"  # 2.x: py3-none-any wheels, Python >= 3.10
INSIGHTFACE_SDIST = "insightface==0.7.3"  # what most WebUI users run; compiles a Cython module

# onnxruntime-gpu on PyPI: <= 1.18 is built for CUDA 11, 1.19-1.26 for CUDA 12, >= 1.27 for CUDA 13
# (read from the wheels' "cuda" extra). A mismatch still runs, on the CPU.
_ORT_GPU_FOR_CUDA = {
    11: "onnxruntime-gpu<1.19",
    12: "onnxruntime-gpu>=1.19,<1.27",
    13: "onnxruntime-gpu>=1.27",
}


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` become ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Environment:
    """What the planner needs to know about the venv."""

    installed: Mapping[str, str]  # normalized distribution name -> version
    torch_cuda: str | None = None  # CUDA version of torch when it is a CUDA build with a GPU
    platform: str = sys.platform  # sys.platform: "linux", "win32", "darwin"
    python: tuple[int, int] = (sys.version_info.major, sys.version_info.minor)
    can_compile: bool = False  # a C++ compiler and the Python headers are there
    insightface_requires: tuple[str, ...] = ()  # Requires-Dist of the installed insightface

    def has(self, name: str) -> bool:
        return normalize(name) in self.installed

    def has_flavour_of(self, name: str) -> bool:
        return any(self.has(other) for other in _FLAVOURS.get(normalize(name), (name,)))


@dataclass(frozen=True)
class Step:
    """One ``pip install`` call; ``fallback`` runs when it fails, ``fix`` is printed if all fail."""

    what: str
    args: tuple[str, ...]
    fallback: Step | None = None
    fix: str = ""


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...] = ()
    constraints: tuple[str, ...] = ()  # "name==version" lines for the constraints file
    problems: tuple[str, ...] = ()  # things that cannot be installed automatically, with the fix
    notes: tuple[str, ...] = ()  # informational: left alone on purpose


def plan_install(env: Environment) -> Plan:
    steps: list[Step] = []
    problems: list[str] = []
    notes: list[str] = []
    if not env.has_flavour_of("onnxruntime"):
        steps.append(onnxruntime_step(env))
    if not env.has("insightface"):
        step = insightface_step(env)
        if step is None:
            problems.append(insightface_fix(env, wheel_possible=False))
        else:
            steps.append(step)
    else:
        missing, held = missing_requirements(env)
        if missing:
            steps.append(Step("insightface dependencies", ("--prefer-binary", *missing)))
        notes.extend(
            f"insightface asks for {req}; left at the WebUI's {normalize(req.name)} "
            f"{env.installed[normalize(req.name)]}"
            for req in held
        )
    return Plan(tuple(steps), protected_constraints(env.installed), tuple(problems), tuple(notes))


def onnxruntime_step(env: Environment) -> Step:
    """onnxruntime-gpu only beside a CUDA torch; CPU onnxruntime everywhere else (macOS has no GPU
    wheel). insightface 0.7.3 does not list onnxruntime, so it is always installed explicitly."""
    if env.torch_cuda and env.platform != "darwin":
        major = _major(env.torch_cuda)
        spec = _ORT_GPU_FOR_CUDA.get(major, "onnxruntime-gpu")
        return Step(
            f"{spec} (torch uses CUDA {env.torch_cuda})",
            ("--prefer-binary", spec),
            fallback=Step("onnxruntime (CPU)", ("--prefer-binary", "onnxruntime")),
            fix="pip install onnxruntime  (face analysis then runs on the CPU)",
        )
    return Step(
        "onnxruntime (CPU)",
        ("--prefer-binary", "onnxruntime"),
        fix="pip install onnxruntime  (Python 3.10-3.12, 64-bit)",
    )


def insightface_step(env: Environment) -> Step | None:
    """A prebuilt 2.x wheel first; the 0.7.3 source build only where it can compile."""
    build = None
    if env.can_compile:
        build = Step(
            "insightface 0.7.3 (building from source)",
            ("--no-deps", INSIGHTFACE_SDIST),
            fix=insightface_fix(env, wheel_possible=env.python >= (3, 10)),
        )
    if env.python < (3, 10):
        return build
    return Step(
        "insightface (prebuilt wheel)",
        ("--only-binary=:all:", "--no-deps", INSIGHTFACE_WHEEL),
        fallback=build,
        fix=insightface_fix(env, wheel_possible=True),
    )


def insightface_fix(env: Environment, wheel_possible: bool) -> str:
    lines = ["insightface could not be installed."]
    if wheel_possible:
        lines.append(
            "pip could not fetch the prebuilt wheel: check the network / proxy / INDEX_URL."
        )
    else:
        lines.append(f"No insightface wheel exists for Python {env.python[0]}.{env.python[1]};")
        lines.append("insightface 0.7.3 has to be compiled.")
    if env.platform == "win32":
        lines.append(
            "To build 0.7.3: install Visual Studio Build Tools with 'Desktop development with"
            " C++', or install a prebuilt insightface 0.7.3 wheel matching your Python into the"
            " WebUI venv (venv\\Scripts\\python -m pip install <wheel>)."
        )
    elif env.platform == "darwin":
        lines.append("To build 0.7.3: run `xcode-select --install`.")
    else:
        lines.append("To build 0.7.3: install a compiler and headers (Debian/Ubuntu: `sudo apt")
        lines.append("install build-essential python3-dev`).")
    lines.append("Then restart the WebUI; install.py tries again.")
    return " ".join(lines)


def missing_requirements(env: Environment) -> tuple[list[str], list[Requirement]]:
    """insightface's unmet requirements: (to install, held back because the WebUI pins them)."""
    missing: list[str] = []
    held: list[Requirement] = []
    for text in env.insightface_requires:
        req = _parse(text)
        if req is None or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        name = normalize(req.name)
        if name in _FLAVOURS:
            if name in ONNXRUNTIME_FLAVOURS or env.has_flavour_of(name):
                continue  # onnxruntime has its own step; any opencv flavour provides cv2
        elif _satisfied(req, env.installed.get(name)):
            continue
        if name in PROTECTED and name in env.installed:
            held.append(req)
        elif name in OPENCV_FLAVOURS:
            missing.append("opencv-python-headless")  # same cv2, without the libGL dependency
        else:
            missing.append(f"{req.name}{req.specifier}")
    return missing, held


def protected_constraints(installed: Mapping[str, str]) -> tuple[str, ...]:
    """``name==version`` for installed protected packages; odd versions ("unknown") cannot be
    pinned, so pip gets no constraint for them rather than an unsatisfiable one."""
    return tuple(
        f"{name}=={installed[name]}"
        for name in sorted(PROTECTED)
        if name in installed and _valid_version(installed[name])
    )


def _valid_version(version: str) -> bool:
    try:
        Version(version)
    except InvalidVersion:
        return False
    return True


def _parse(text: str) -> Requirement | None:
    try:
        return Requirement(text)
    except InvalidRequirement:
        return None


def _satisfied(req: Requirement, version: str | None) -> bool:
    if version is None:
        return False
    try:
        return req.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return True  # an odd local build: trust it rather than replace it


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


# --- reading the real environment (impure, kept small) ---


def installed_distributions() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normalize(name), dist.version)
    return found


def torch_cuda_version() -> str | None:
    """CUDA version of torch when it is a CUDA build that sees a GPU (ROCm, MPS, CPU: None)."""
    try:
        import torch
    except Exception:
        return None
    cuda = getattr(torch.version, "cuda", None)
    try:
        return cuda if cuda and torch.cuda.is_available() else None
    except Exception:
        return None


def compiler_available() -> bool:
    """Python headers plus a C++ compiler (MSVC counts when its installer is present)."""
    if not Path(sysconfig.get_paths()["include"], "Python.h").is_file():
        return False
    if sys.platform == "win32":
        program_files = os.environ.get("PROGRAMFILES(X86)", r"C:\Program Files (x86)")
        vswhere = Path(program_files, "Microsoft Visual Studio", "Installer", "vswhere.exe")
        return shutil.which("cl") is not None or vswhere.is_file()
    return any(shutil.which(cc) for cc in ("c++", "g++", "clang++"))


def probe_environment() -> Environment:
    """Read the venv. torch and the compiler are only probed when the answer matters."""
    importlib.invalidate_caches()
    installed = installed_distributions()
    env = Environment(installed=installed)
    needs_ort = not env.has_flavour_of("onnxruntime")
    needs_insightface = not env.has("insightface")
    requires: tuple[str, ...] = ()
    if not needs_insightface:
        requires = tuple(importlib.metadata.requires("insightface") or ())
    return Environment(
        installed=installed,
        torch_cuda=torch_cuda_version() if needs_ort else None,
        can_compile=compiler_available() if needs_insightface else False,
        insightface_requires=requires,
    )
