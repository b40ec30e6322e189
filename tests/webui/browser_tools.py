"""Driving headless Chromium from the browser tests (a helper module, not a test module): where
node's playwright-core and Chromium are, why a test must skip, and running a node script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
NODE_MODULES = Path(os.environ.get("PLAYWRIGHT_NODE_MODULES", ARTIFACTS / "node" / "node_modules"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed (apt-get install -y nodejs npm)"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set CHROMIUM)"
    if not (NODE_MODULES / "playwright-core").is_dir():
        return (
            f"playwright-core not in {NODE_MODULES} "
            "(npm install --prefix test-artifacts/node playwright-core)"
        )
    return None


def run_script(script: str, *args: str, timeout: float) -> dict[str, Any]:
    """Run ``tests/webui/<script>`` with node; the JSON object it printed last."""
    run = subprocess.run(
        ["node", str(Path(__file__).with_name(script)), *args],
        env={**os.environ, "NODE_PATH": str(NODE_MODULES), "CHROMIUM": CHROMIUM},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert run.returncode == 0, f"{script} failed:\n{run.stderr[-3000:]}"
    return json.loads(run.stdout.strip().splitlines()[-1])
