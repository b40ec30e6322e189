"""Windows users are the majority: nothing Unix-only at module level, and any folder path works.

The import test runs in a fresh interpreter where the Unix-only standard modules cannot be
imported (as on Windows), imports every module of the package (the WebUI adapters inside the WebUI
double) and the extension's scripts, and predicts an identity.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from hyperlora_ext import cli
from hyperlora_ext.models import ModelRoots, list_hyperlora_models, user_path
from hyperlora_ext.webui.cmd_opts import roots_from_cmd_opts
from tests.factories import write_tiny_hyperlora

ROOT = Path(__file__).resolve().parents[1]
UNIX_ONLY = ("resource", "fcntl", "termios", "pwd", "grp", "pty", "tty", "syslog", "crypt")
# Also absent on Windows, but imported by the standard library itself on Linux (os needs posix),
# so only the source check below can forbid them.
NOT_ON_WINDOWS = (*UNIX_ONLY, "posix", "_posixsubprocess", "spwd", "nis", "ossaudiodev", "curses")
SOURCES = [
    *sorted((ROOT / "hyperlora_ext").rglob("*.py")),
    *sorted((ROOT / "scripts").glob("*.py")),
]
SOURCES += [ROOT / "preload.py", ROOT / "install.py", *sorted((ROOT / "bench").glob("*.py"))]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_unix_only_module_at_module_level(path):
    tree = ast.parse(path.read_text("utf-8"))
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, functions) for n in ast.walk(f)}
    for node in ast.walk(tree):
        if id(node) in inner or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
        for module in filter(None, modules):
            top = module.split(".")[0]
            assert top not in NOT_ON_WINDOWS, f"{path}:{node.lineno} imports {module}"


BLOCKED_RUN = """
import importlib, pkgutil, sys
from importlib.abc import MetaPathFinder

BLOCKED = set(sys.argv[2].split(","))

class WindowsLike(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: Unix-only)")
        return None

for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]
sys.meta_path.insert(0, WindowsLike())
sys.path.insert(0, sys.argv[1])
try:
    import resource
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("the Unix-only modules are not blocked")

import runpy
import tempfile
from pathlib import Path

from tests.webui import fake_webui

fake_webui.install(Path(tempfile.mkdtemp()))  # the WebUI adapters import modules.*
import hyperlora_ext

imported = ["hyperlora_ext"]
for module in pkgutil.walk_packages(hyperlora_ext.__path__, "hyperlora_ext."):
    importlib.import_module(module.name)
    imported.append(module.name)
for script in sorted(Path(sys.argv[1], "scripts").glob("*.py")):
    runpy.run_path(str(script))
    imported.append(script.name)
print("imported", " ".join(imported))

from PIL import Image, ImageDraw
from hyperlora_ext.identity import IdentityOptions, IdentityPipeline
from hyperlora_ext.models import ModelRoots
from hyperlora_ext.memory import peak_rss_mb

roots = ModelRoots.from_models_dir(sys.argv[3])
photo = Image.new("RGB", (640, 480), (30, 30, 30))
ImageDraw.Draw(photo).ellipse((210, 90, 430, 390), fill=(230, 220, 210))
result = IdentityPipeline(roots).predict([photo], IdentityOptions("tiny"))
assert result.photos == 1 and result.lora
assert peak_rss_mb() is None  # unknown without resource, not a wrong number
print("predicted", result.digest)
"""


def test_imports_and_predicts_with_unix_only_modules_blocked(tmp_path):
    from tests import fake_antelopev2
    from tests.factories import write_tiny_clip

    roots = ModelRoots.from_models_dir(tmp_path / "models")
    write_tiny_hyperlora(roots.hyper_lora / "tiny")
    write_tiny_clip(roots.clip_vit / "clip_vit_large_14")
    fake_antelopev2.build(roots.antelopev2)
    run = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, str(ROOT), ",".join(UNIX_ONLY), str(roots.models_dir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "predicted" in run.stdout
    imported = set(run.stdout.split("imported ", 1)[1].split("\n", 1)[0].split())
    package = ROOT / "hyperlora_ext"
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in package.rglob("*.py")
    }
    scripts = {p.name for p in (ROOT / "scripts").glob("*.py")}
    assert modules | scripts <= imported, sorted(modules | scripts - imported)


WINDOWS_DIR = "C:\\Users\\Zoë Ann\\stable-diffusion-webui\\models"


@pytest.mark.parametrize("typed", [WINDOWS_DIR, f'"{WINDOWS_DIR}"', f"  '{WINDOWS_DIR}' "])
def test_pasted_windows_paths_are_kept_as_given(typed):
    assert str(user_path(typed)) == WINDOWS_DIR
    roots = ModelRoots.from_models_dir(typed)
    assert str(roots.models_dir) == WINDOWS_DIR
    assert roots.cli_arguments() == f'--models-dir "{WINDOWS_DIR}"'


def test_backslash_and_drive_letter_folders_work_end_to_end(tmp_path, monkeypatch, capsys):
    # On Linux "C:\\AI\\models" is one folder name: nothing may split it or apply name rules.
    models = tmp_path / "C:\\AI\\models"
    write_tiny_hyperlora(ModelRoots.from_models_dir(models).hyper_lora / "tiny")
    for given in (str(models), f'"{models}"'):
        assert list_hyperlora_models(ModelRoots.from_models_dir(given)) == ["tiny"]
        settings_roots = roots_from_cmd_opts(_options(given), tmp_path / "elsewhere")
        assert list_hyperlora_models(settings_roots) == ["tiny"]
    cli.main(["doctor", "--models-only", "--models-dir", f'"{models}"'])
    assert "[ ok  ] HyperLoRA model tiny" in capsys.readouterr().out


def _options(models_dir: str) -> argparse.Namespace:
    return argparse.Namespace(hyperlora_models_dir=models_dir)
