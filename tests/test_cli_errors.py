"""The CLI's one top-level handler: bad input gives one clear message and exit 1, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hyperlora_ext import cli
from tests.encoders._photos import face_photo


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "alice.png"
    face_photo().save(path)
    return path


def lora(tmp_path: Path, photo: Path, *extra: str) -> list[str]:
    out = ["--out", str(tmp_path / "out" / "alice.safetensors")]
    return ["lora", "--ref", str(photo), "--models-dir", str(tmp_path / "models"), *out, *extra]


def assert_clean(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err
    return err


@pytest.mark.parametrize(
    ("device", "message"),
    [("bogus", "unknown device 'bogus'"), ("cuda:7x", "unknown device"), ("tpu", "unknown")],
)
def test_unknown_devices_are_one_line(tmp_path, photo, capsys, device, message):
    assert cli.main(lora(tmp_path, photo, "--device", device)) == 1
    assert_clean(capsys, message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only torch")
def test_cuda_on_a_cpu_only_torch_says_so(tmp_path, photo, capsys):
    assert cli.main(lora(tmp_path, photo, "--device", "cuda")) == 1
    assert_clean(capsys, "device 'cuda' is not available", "cpu")


def test_out_under_a_regular_file(tmp_path, photo, capsys):
    (tmp_path / "out").write_text("a file, not a folder")
    assert cli.main(lora(tmp_path, photo)) == 1
    assert_clean(capsys, "it is a file, not a folder")


def test_existing_card_is_refused_before_the_prediction(tmp_path, photo, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "alice.json").write_text("{}")
    # The models folder is empty: failing on the card proves the check runs before predicting.
    assert cli.main(lora(tmp_path, photo)) == 1
    assert_clean(capsys, "alice.json already exists")
    assert (tmp_path / "out" / "alice.json").read_text() == "{}"


def test_face_index_out_of_range_is_one_line(tmp_path, photo, capsys):
    assert cli.main(lora(tmp_path, photo, "--face", "index", "--face-index", "-1")) == 1
    assert_clean(capsys, "face_index")


def test_unexpected_errors_are_reported_as_bugs_with_the_details_saved(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(cli, "cmd_doctor", broken)
    assert cli.main(["doctor"]) == 1
    err = assert_clean(capsys, "internal error: ZeroDivisionError: boom, please report it")
    log = Path(err.split("the details are in ", 1)[1].split(";", 1)[0])
    assert "ZeroDivisionError" in log.read_text()


def test_debug_shows_the_traceback(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(cli, "cmd_doctor", broken)
    assert cli.main(["doctor", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error" in err


@pytest.mark.parametrize("command", ["lora", "download"])
def test_an_overlong_model_name_is_one_line(tmp_path, photo, capsys, command):
    from hyperlora_ext.models import ModelRoots

    ModelRoots.from_models_dir(tmp_path / "models").hyper_lora.mkdir(parents=True)
    name = ["--model", "m" * 300]  # longer than a file name may be: the file system refuses it
    args = lora(tmp_path, photo, *name) if command == "lora" else [command, *name]
    if command == "download":
        args += ["--models-dir", str(tmp_path / "models")]
    assert cli.main(args) == 1
    assert_clean(capsys, "longer than")


@pytest.mark.parametrize("out", ["", " ", ".", "..", "out/.."])
def test_an_out_path_without_a_file_name_is_a_usage_error(tmp_path, photo, capsys, out):
    args = ["lora", "--ref", str(photo), "--models-dir", str(tmp_path), "--out", out]
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    assert exit_.value.code == 2
    assert_clean(capsys, "names no file")
