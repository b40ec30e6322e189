"""``python -m hyperlora_ext likeness``: a table of file, faces and likeness; errors in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperlora_ext import cli
from tests import fake_antelopev2
from tests.encoders._photos import face_photo

ROUND = ((210, 90, 430, 390),)
TALL = ((150, 60, 330, 420),)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A models folder holding only the (synthetic) antelopev2 pack: likeness needs no more."""
    models = tmp_path_factory.mktemp("models")
    fake_antelopev2.build(models / "insightface" / "models" / "antelopev2")
    return models


def save(folder: Path, name: str, faces) -> str:
    path = folder / name
    face_photo(faces=faces).save(path)
    return str(path)


def run(models: Path, *args: str) -> int:
    return cli.main(["likeness", "--models-dir", str(models), *args])


def test_prints_one_row_per_image(models, tmp_path, capsys):
    ref = save(tmp_path, "ref.png", ROUND)
    same, other, blank = (
        save(tmp_path, "same.png", ROUND),
        save(tmp_path, "other.png", TALL),
        save(tmp_path, "blank.png", ()),
    )
    assert run(models, "--ref", ref, same, other, blank) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["file", "faces", "likeness"]
    rows = [line.split() for line in lines[1:]]
    assert [row[0] for row in rows] == [same, other, blank]
    assert rows[0][1:] == ["1", "1.00"]
    assert rows[1][1] == "1" and float(rows[1][2]) < 0.9
    assert rows[2][1:] == ["0", "no", "face"]


def test_several_references_are_averaged(models, tmp_path, capsys):
    refs = [save(tmp_path, "a.png", ROUND), save(tmp_path, "b.png", TALL)]
    image = save(tmp_path, "image.png", ROUND)
    assert run(models, "--ref", refs[0], image) == 0
    alone = float(capsys.readouterr().out.splitlines()[1].split()[2])
    assert run(models, "--ref", refs[0], "--ref", refs[1], image) == 0
    averaged = float(capsys.readouterr().out.splitlines()[1].split()[2])
    assert averaged < alone == 1.0


@pytest.mark.parametrize(
    ("problem", "message"),
    [("ref_no_face", "--ref"), ("missing_image", "missing.png"), ("no_models", "antelopev2")],
)
def test_errors_are_one_line_and_exit_1(models, tmp_path, capsys, problem, message):
    ref = save(tmp_path, "ref.png", ROUND if problem != "ref_no_face" else ())
    image = str(tmp_path / "missing.png") if problem == "missing_image" else ref
    where = tmp_path / "empty" if problem == "no_models" else models
    assert run(where, "--ref", ref, image) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ") and message in err
