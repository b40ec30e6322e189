"""install.py decisions per environment, and its executor with an injected pip runner.

Nothing here touches the real venv: environments are built by hand, pip is a fake.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from hyperlora_ext import install_plan as ip
from hyperlora_ext.install_plan import Environment

ROOT = Path(__file__).resolve().parents[1]

# Versions as importlib.metadata reports them in the two WebUIs.
A1111_PINS = {
    "torch": "2.1.2+cu121",
    "torchvision": "0.16.2+cu121",
    "numpy": "1.26.2",
    "pillow": "9.5.0",
    "gradio": "3.41.2",
    "fastapi": "0.94.0",
    "httpx": "0.24.1",
    "httpcore": "0.15.0",
    "transformers": "4.30.2",
    "safetensors": "0.4.2",
    "scikit-image": "0.21.0",
    "protobuf": "3.20.0",
    "opencv-python": "4.10.0.84",
    "scipy": "1.14.1",
    "requests": "2.32.3",
    "tqdm": "4.66.5",
}
FORGE_PINS = {
    "torch": "2.3.1+cu121",
    "numpy": "1.26.2",
    "pillow": "10.4.0",
    "gradio": "4.40.0",
    "fastapi": "0.104.1",
    "httpx": "0.24.1",
    "pydantic": "2.8.2",
    "huggingface-hub": "0.26.2",
    "transformers": "4.46.1",
    "safetensors": "0.4.2",
}
INSIGHTFACE_21_REQUIRES = (
    "numpy",
    "onnx>=1.13",
    "onnxruntime",
    "opencv-python",
    "tqdm",
    "requests",
    "scipy",
    "scikit-image",
    'PySide6-Essentials>=6.5; extra == "gui"',
)
INSIGHTFACE_073_REQUIRES = (
    "numpy",
    "onnx",
    "tqdm",
    "requests",
    "matplotlib",
    "Pillow",
    "scipy",
    "scikit-learn",
    "scikit-image",
    "easydict",
    "cython",
    "albumentations",
    "prettytable",
)


def env(installed: dict[str, str], **kwargs) -> Environment:
    kwargs.setdefault("platform", "linux")
    kwargs.setdefault("python", (3, 10))
    return Environment(installed=dict(installed), **kwargs)


def all_args(plan: ip.Plan) -> list[str]:
    args: list[str] = []
    for step in plan.steps:
        attempt = step
        while attempt is not None:
            args.extend(attempt.args)
            attempt = attempt.fallback
    return args


def requested_names(plan: ip.Plan) -> set[str]:
    names = set()
    for arg in all_args(plan):
        if not arg.startswith("-"):
            names.add(ip.normalize(ip.Requirement(arg).name))
    return names


def with_insightface(installed, version, requires):
    deps = {name: "1.0" for name in ("matplotlib", "scikit-learn", "easydict", "cython")}
    deps |= {"onnx": "1.23.2", "prettytable": "3.0", "albumentations": "1.4.3"}
    return installed | deps | {"insightface": version}, requires


# --- plan_install: one test per environment ---


def test_a1111_with_cuda_torch_installs_gpu_onnxruntime_and_insightface_wheel():
    plan = ip.plan_install(env(A1111_PINS, torch_cuda="12.1", can_compile=True))
    ort, insight = plan.steps
    assert ort.args[-1] == "onnxruntime-gpu>=1.19,<1.27"
    assert ort.fallback is not None and ort.fallback.args[-1] == "onnxruntime"
    assert insight.args == ("--only-binary=:all:", "--no-deps", ip.INSIGHTFACE_WHEEL)
    assert insight.fallback is not None and insight.fallback.args[-1] == "insightface==0.7.3"
    assert "--no-deps" in insight.fallback.args
    for pin in ("torch==2.1.2+cu121", "numpy==1.26.2", "gradio==3.41.2", "pillow==9.5.0"):
        assert pin in plan.constraints
    assert "transformers==4.30.2" in plan.constraints
    assert requested_names(plan).isdisjoint(ip.PROTECTED)


def test_forge_pins_with_cpu_torch_install_cpu_onnxruntime_and_freeze_forge_pins():
    plan = ip.plan_install(env(FORGE_PINS, torch_cuda=None))
    assert [step.args[-1] for step in plan.steps] == ["onnxruntime", ip.INSIGHTFACE_WHEEL]
    assert plan.steps[0].fallback is None
    for pin in ("gradio==4.40.0", "pydantic==2.8.2", "huggingface-hub==0.26.2", "numpy==1.26.2"):
        assert pin in plan.constraints
    assert requested_names(plan).isdisjoint(ip.PROTECTED)


@pytest.mark.parametrize(
    ("cuda", "spec"),
    [
        ("11.8", "onnxruntime-gpu<1.19"),
        ("12.4", "onnxruntime-gpu>=1.19,<1.27"),
        ("13.0", "onnxruntime-gpu>=1.27"),
        ("10.2", "onnxruntime-gpu"),
    ],
)
def test_onnxruntime_gpu_matches_the_cuda_major_of_torch(cuda, spec):
    step = ip.onnxruntime_step(env(A1111_PINS, torch_cuda=cuda))
    assert step.args[-1] == spec
    assert cuda in step.what


def test_macos_never_gets_onnxruntime_gpu():
    plan = ip.plan_install(env(A1111_PINS, torch_cuda="12.1", platform="darwin"))
    assert plan.steps[0].args[-1] == "onnxruntime"


@pytest.mark.parametrize(
    ("version", "requires"),
    [("0.7.3", INSIGHTFACE_073_REQUIRES), ("2.1", INSIGHTFACE_21_REQUIRES)],
)
def test_everything_present_means_nothing_to_do(version, requires):
    installed, requires = with_insightface(
        A1111_PINS | {"onnxruntime": "1.32.0"}, version, requires
    )
    plan = ip.plan_install(env(installed, insightface_requires=requires))
    assert not plan.steps and not plan.problems and not plan.notes


def test_onnxruntime_gpu_present_satisfies_insightface_2_onnxruntime_requirement():
    installed, requires = with_insightface(
        A1111_PINS | {"onnxruntime-gpu": "1.18.1"}, "2.1", INSIGHTFACE_21_REQUIRES
    )
    plan = ip.plan_install(env(installed, torch_cuda="12.1", insightface_requires=requires))
    assert plan.steps == ()
    assert "onnxruntime" not in requested_names(plan)


def test_headless_opencv_satisfies_insightface_2_opencv_requirement():
    installed = A1111_PINS.copy()
    del installed["opencv-python"]
    installed["opencv-python-headless"] = "4.11.0.86"
    installed, requires = with_insightface(
        installed | {"onnxruntime": "1.32.0"}, "2.1", INSIGHTFACE_21_REQUIRES
    )
    assert ip.plan_install(env(installed, insightface_requires=requires)).steps == ()


def test_onnxruntime_present_only_insightface_is_planned():
    plan = ip.plan_install(env(A1111_PINS | {"onnxruntime": "1.32.0"}, torch_cuda="12.1"))
    assert [step.args[-1] for step in plan.steps] == [ip.INSIGHTFACE_WHEEL]


def test_any_onnxruntime_flavour_counts_as_present():
    for flavour in ip.ONNXRUNTIME_FLAVOURS:
        plan = ip.plan_install(env(A1111_PINS | {flavour: "1.0"}, torch_cuda="12.1"))
        assert not any("onnxruntime" in arg for arg in all_args(plan)), flavour


def test_both_absent_plans_onnxruntime_before_insightface():
    plan = ip.plan_install(env({"numpy": "1.26.4"}))
    assert [step.args[-1] for step in plan.steps] == ["onnxruntime", ip.INSIGHTFACE_WHEEL]
    assert plan.constraints == ("numpy==1.26.4",)


def test_no_compiler_means_no_source_build_and_a_fix_naming_the_build_tools():
    linux = ip.plan_install(env(A1111_PINS, can_compile=False)).steps[-1]
    assert linux.fallback is None
    assert "build-essential" in linux.fix
    windows = ip.insightface_step(env(A1111_PINS, can_compile=False, platform="win32"))
    assert windows is not None and "Build Tools" in windows.fix
    mac = ip.insightface_step(env(A1111_PINS, can_compile=False, platform="darwin"))
    assert mac is not None and "xcode-select" in mac.fix


def test_python_without_insightface_wheels_builds_0_7_3_or_reports_a_problem():
    with_cc = ip.plan_install(env(A1111_PINS, python=(3, 9), can_compile=True))
    assert with_cc.steps[-1].args == ("--no-deps", "insightface==0.7.3")
    without = ip.plan_install(env(A1111_PINS, python=(3, 9), can_compile=False))
    assert "insightface" not in requested_names(without)
    (problem,) = without.problems
    assert "3.9" in problem and "build-essential" in problem


def test_missing_insightface_dependencies_are_installed_and_pins_held():
    installed = A1111_PINS | {"onnxruntime": "1.32.0", "insightface": "0.7.3", "onnx": "1.12.0"}
    requires = (
        "numpy>=2",  # hypothetical: the WebUI's numpy must win
        "onnx>=1.13",
        "scipy",
        "albumentations",
        "opencv-python",
        'pyside6; extra == "gui"',
        'pywin32; sys_platform == "nonexistent"',
    )
    plan = ip.plan_install(env(installed, insightface_requires=requires))
    (step,) = plan.steps
    assert set(step.args) - {"--prefer-binary"} == {"onnx>=1.13", "albumentations"}
    (note,) = plan.notes
    assert "numpy>=2" in note and "1.26.2" in note


def test_missing_opencv_is_installed_headless():
    installed = {"numpy": "1.26.4", "onnxruntime": "1.32.0", "insightface": "2.1"}
    plan = ip.plan_install(env(installed, insightface_requires=("opencv-python",)))
    assert plan.steps[0].args[-1] == "opencv-python-headless"


def test_constraints_cover_only_installed_protected_packages():
    constraints = ip.protected_constraints({"numpy": "1.26.2", "tqdm": "4.0", "torch": "2.1.2"})
    assert constraints == ("numpy==1.26.2", "torch==2.1.2")


def test_an_unparsable_installed_version_gets_no_constraint():
    constraints = ip.protected_constraints({"torch": "unknown", "numpy": "1.26.4"})
    assert constraints == ("numpy==1.26.4",)


def test_normalize_follows_pep_503():
    assert ip.normalize("Huggingface_Hub") == ip.normalize("huggingface.hub") == "huggingface-hub"


def test_probe_reads_this_venv():
    probed = ip.probe_environment()
    assert probed.installed.get("pytest") == pytest.__version__
    assert probed.has("numpy")


# --- the executor (install.py) with a fake pip ---


@pytest.fixture(scope="module")
def installer():
    spec = importlib.util.spec_from_file_location("hyperlora_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakePip:
    """Records pip commands (and the constraints they were given); fails the listed packages."""

    def __init__(self, fail: tuple[str, ...] = ()):
        self.fail = fail
        self.calls: list[list[str]] = []
        self.constraints: list[str] = []

    def __call__(self, cmd: list[str]) -> subprocess.CompletedProcess:
        self.calls.append(cmd)
        if "-c" in cmd:
            self.constraints.append(Path(cmd[cmd.index("-c") + 1]).read_text())
        failed = any(arg in self.fail for arg in cmd)
        return subprocess.CompletedProcess(cmd, int(failed), "pip out", "pip err" if failed else "")

    def packages(self) -> list[str]:
        return [cmd[-1] if "-c" not in cmd else cmd[cmd.index("-c") - 1] for cmd in self.calls]


def probes(*environments: Environment):
    queue = list(environments)
    return lambda: queue.pop(0) if len(queue) > 1 else queue[0]


BARE = env(A1111_PINS, torch_cuda="12.1", can_compile=True)
INSIGHT_NO_DEPS = env(
    A1111_PINS | {"onnxruntime-gpu": "1.26.0", "insightface": "2.1"},
    insightface_requires=INSIGHTFACE_21_REQUIRES,
)
COMPLETE = replace(INSIGHT_NO_DEPS, installed=INSIGHT_NO_DEPS.installed | {"onnx": "1.23.2"})


def test_executor_runs_rounds_until_nothing_is_left(installer, capsys):
    pip = FakePip()
    rc = installer.install(probes(BARE, INSIGHT_NO_DEPS, COMPLETE), pip, environ={})
    assert rc == 0
    assert pip.packages() == ["onnxruntime-gpu>=1.19,<1.27", ip.INSIGHTFACE_WHEEL, "onnx>=1.13"]
    for cmd in pip.calls:
        assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    assert all("torch==2.1.2+cu121" in text and "numpy==1.26.2" in text for text in pip.constraints)
    assert not any(Path(cmd[cmd.index("-c") + 1]).exists() for cmd in pip.calls)
    assert "Installed insightface (prebuilt wheel)" in capsys.readouterr().out


def test_executor_falls_back_to_source_build_when_the_wheel_fails(installer):
    pip = FakePip(fail=(ip.INSIGHTFACE_WHEEL,))
    rc = installer.install(probes(BARE, COMPLETE), pip, environ={})
    assert rc == 0
    assert ip.INSIGHTFACE_SDIST in pip.packages()


def test_executor_prints_the_fix_when_everything_fails(installer, capsys):
    pip = FakePip(fail=(ip.INSIGHTFACE_WHEEL, ip.INSIGHTFACE_SDIST))
    rc = installer.install(probes(BARE), pip, environ={})
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAILED insightface (prebuilt wheel)" in out and "build-essential" in out
    assert "pip err" in out
    assert len(pip.calls) == 3  # onnxruntime-gpu, the wheel, the sdist; no further round


def test_nothing_to_do_runs_no_pip_and_prints_nothing(installer, capsys):
    pip = FakePip()
    assert installer.install(probes(COMPLETE), pip, environ={}) == 0
    assert pip.calls == [] and capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("environ", "argv"),
    [
        ({"COMMANDLINE_ARGS": "--xformers --skip-install"}, ()),
        ({}, ("--skip-install",)),
        ({"HYPERLORA_SKIP_INSTALL": "1"}, ()),
    ],
)
def test_skip_install_only_reports(installer, capsys, environ, argv):
    pip = FakePip()
    assert installer.install(probes(BARE), pip, environ=environ, argv=argv) == 0
    assert pip.calls == []
    assert "not installing" in capsys.readouterr().out


def test_index_url_of_the_webui_is_passed_to_pip(installer):
    pip = FakePip()
    installer.install(probes(BARE, COMPLETE), pip, environ={"INDEX_URL": "https://mirror/simple"})
    assert all(cmd[-2:] == ["--index-url", "https://mirror/simple"] for cmd in pip.calls)
