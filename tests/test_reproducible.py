"""Same photo, same model, same machine: the same identity in every fresh process."""

import json
import os
import subprocess
import sys
from pathlib import Path

from hyperlora_ext.engine.cpu_dtype import cpu_dtype, dtype_name
from hyperlora_ext.models import ModelRoots
from tests import fake_antelopev2
from tests.factories import write_tiny_clip, write_tiny_hyperlora

ROOT = Path(__file__).resolve().parents[1]
PREDICT = """
import json, sys
from hyperlora_ext.identity import IdentityOptions, IdentityPipeline
from hyperlora_ext.models import ModelRoots
from tests.encoders._photos import face_photo

pipeline = IdentityPipeline(ModelRoots.from_models_dir(sys.argv[1]))  # the automatic dtype
result = pipeline.predict([face_photo()], IdentityOptions("tiny"))
print(json.dumps({"digest": result.digest, "dtype": result.dtype}))
"""


def test_two_fresh_processes_give_the_same_lora(tmp_path):
    roots = ModelRoots.from_models_dir(tmp_path / "models")
    write_tiny_hyperlora(roots.hyper_lora / "tiny")
    write_tiny_clip(roots.clip_vit / "clip-vit-large-patch14")
    fake_antelopev2.build(roots.antelopev2)
    results = []
    for run in range(2):  # each with a fresh, empty cache folder, as after a restart
        env = dict(os.environ, PYTHONPATH=str(ROOT), HYPERLORA_CACHE_DIR=str(tmp_path / f"c{run}"))
        done = subprocess.run(
            [sys.executable, "-c", PREDICT, str(tmp_path / "models")],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert results[0] == results[1]
    assert results[0]["dtype"] == dtype_name(cpu_dtype())
