"""Fuzzing the command line: random argument lists for the offline commands never print a
traceback or an "internal error"; they succeed, fail with one message (exit 1) or are refused by
argparse (exit 2)."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hyperlora_ext import cli
from tests.encoders._photos import face_photo

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values that broke parsers and file handling before: Windows paths and reserved names, traversal,
# superscript digits, overlong names, empty and control characters.
HOSTILE = [
    "",
    "-1",
    "²",
    "1e400",
    "..",
    "../x",
    "CON",
    "nul.txt",
    "C:\\Users\\a b\\x.safetensors",
    '"C:\\quoted"',
    "x" * 300,
    "a\x00b",
    "a\nb",
    "photo.png",
    "out/alice.safetensors",
    "missing.jpg",
    "not_an_image.txt",
]
FLAGS = {
    "doctor": ["--json", "--models-only", "--debug"],
    "lora": [
        "--ref",
        "--model",
        "--out",
        "--overwrite",
        "--style",
        "--face",
        "--face-index",
        "--keep-background",
        "--grayscale",
        "--clip",
        "--device",
        "--dtype",
    ],
}
ROOT_FLAGS = ["--models-dir", "--hyper-lora-dir", "--clip-vit-dir", "--insightface-dir"]
CHOICES = ["as-is", "sgm", "largest", "index", "auto", "fp16", "cpu", "cuda", "bogus", "fidelity"]


def argv_for(command: str) -> st.SearchStrategy[list[str]]:
    """Mostly well-formed options (a flag and a hostile value) so that argparse accepts the line
    and the command itself meets the value; some lone flags and stray values too."""
    value = st.sampled_from(HOSTILE + CHOICES) | st.text(max_size=12)
    flag = st.sampled_from(FLAGS[command] + ROOT_FLAGS)
    option = st.tuples(flag, value).map(list) | flag.map(lambda f: [f]) | value.map(lambda v: [v])
    start = st.sampled_from([[], ["--ref", "photo.png"]] if command == "lora" else [[]])
    options = st.lists(option, max_size=5).map(lambda chosen: [t for o in chosen for t in o])
    return st.tuples(start, options).map(lambda parts: [command, *parts[0], *parts[1]])


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(argv)
        except SystemExit as exit_:  # argparse: --help (0) or bad usage (2)
            code = exit_.code if isinstance(exit_.code, int) else 2
    return code, err.getvalue()


@pytest.fixture(scope="module")
def workdir():
    """A folder with one photo and a non-image; the models folder inside it is empty."""
    with tempfile.TemporaryDirectory() as folder:
        face_photo().save(Path(folder) / "photo.png")
        (Path(folder) / "not_an_image.txt").write_text("hello")
        yield Path(folder)


@SETTINGS
@given(argv=st.sampled_from(sorted(FLAGS)).flatmap(argv_for))
@example(argv=["lora", "--ref", "photo.png", "--device", "bogus"])  # cases that were tracebacks
@example(argv=["lora", "--ref", "photo.png", "--device", "cuda:0"])
@example(argv=["lora", "--ref", "photo.png", "--out", "not_an_image.txt/alice.safetensors"])
@example(argv=["lora", "--ref", "", "--out", ""])
@example(argv=["doctor", "--debug", "--models-dir", "x" * 300])  # a name too long for the OS
def test_random_command_lines_fail_cleanly(workdir, argv):
    previous = Path.cwd()
    os.environ["HYPERLORA_MODELS_DIR"] = str(workdir / "models")
    os.chdir(workdir)
    try:
        code, err = run_cli(argv)
    finally:
        os.chdir(previous)
        del os.environ["HYPERLORA_MODELS_DIR"]
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    assert "internal error" not in err, (argv, err)
