"""Installs HyperLoRA's dependencies (insightface, onnxruntime) into the WebUI's venv.

The WebUI runs this as ``python install.py`` on every launch (not with ``--skip-install``). What to
install is decided in ``hyperlora_ext.install_plan``; this file only runs pip, with the WebUI's
pinned packages frozen by a constraints file. Nothing runs when everything is present.
Set HYPERLORA_SKIP_INSTALL=1 to only print what would be installed.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hyperlora_ext import install_plan

PREFIX = "[HyperLoRA]"
MAX_ROUNDS = 3  # round 1: onnxruntime + insightface (--no-deps); round 2: insightface's deps

Runner = Callable[[list[str]], subprocess.CompletedProcess]


def pip_runner(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def skip_requested(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """``--skip-install`` on our command line or in the WebUI's COMMANDLINE_ARGS."""
    try:
        webui_args = shlex.split(environ.get("COMMANDLINE_ARGS", ""))
    except ValueError:
        webui_args = []
    return "--skip-install" in [*argv, *webui_args] or environ.get("HYPERLORA_SKIP_INSTALL") == "1"


def pip_command(step: install_plan.Step, constraints: str | None, environ: Mapping[str, str]):
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *step.args]
    if constraints:
        cmd += ["-c", constraints]
    if environ.get("INDEX_URL"):  # the WebUI's own mirror setting
        cmd += ["--index-url", environ["INDEX_URL"]]
    return cmd


@contextlib.contextmanager
def constraints_file(lines: Sequence[str]) -> Iterator[str | None]:
    if not lines:
        yield None
        return
    # delete=False: Windows cannot reopen a file that is still open
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="hyperlora-", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    try:
        yield f.name
    finally:
        os.unlink(f.name)


def run_step(
    step: install_plan.Step, constraints: str | None, runner: Runner, environ: Mapping[str, str]
) -> bool:
    attempt: install_plan.Step | None = step
    while attempt is not None:
        print(f"{PREFIX} Installing {attempt.what} ...", flush=True)
        result = runner(pip_command(attempt, constraints, environ))
        if result.returncode == 0:
            print(f"{PREFIX} Installed {attempt.what}.")
            return True
        output = f"{result.stdout or ''}\n{result.stderr or ''}".strip().splitlines()
        print(f"{PREFIX} pip failed for {attempt.what}:\n    " + "\n    ".join(output[-15:]))
        attempt = attempt.fallback
    return False


def install(
    probe: Callable[[], install_plan.Environment] = install_plan.probe_environment,
    runner: Runner = pip_runner,
    environ: Mapping[str, str] = os.environ,
    argv: Sequence[str] = (),
) -> int:
    """Plan, install, re-plan until nothing is left or a step fails. Returns the exit status."""
    plan = install_plan.plan_install(probe())
    if plan.steps and skip_requested(argv, environ):
        wanted = ", ".join(step.what for step in plan.steps)
        print(f"{PREFIX} Install skipped (--skip-install); not installing: {wanted}")
        plan = install_plan.Plan(problems=plan.problems, notes=plan.notes)
    failed: list[install_plan.Step] = []
    for _ in range(MAX_ROUNDS):
        if not plan.steps:
            break
        with constraints_file(plan.constraints) as constraints:
            failed = [s for s in plan.steps if not run_step(s, constraints, runner, environ)]
        if failed:
            break
        plan = install_plan.plan_install(probe())
    for note in plan.notes:
        print(f"{PREFIX} Note: {note}")
    fixes = [*(f"{s.what}: {s.fix}" for s in failed), *plan.problems]
    for fix in fixes:
        print(f"{PREFIX} FAILED {fix}")
    return 1 if fixes else 0


if __name__ == "__main__":
    sys.exit(install(argv=sys.argv[1:]))
