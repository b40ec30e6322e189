"""The one name check: plain entry names on Windows, macOS and Linux alike."""

from __future__ import annotations

import pytest

from hyperlora_ext.errors import InvalidNameError
from hyperlora_ext.models import ModelRoots, resolve_hyperlora
from hyperlora_ext.names import case_twin, check_name, child
from hyperlora_ext.store import check_name as check_identity_name

WINDOWS_BAD = [
    "CON",
    "con.txt",
    "nul.txt",
    "NUL.tar.gz",
    "Aux ",
    "com1",
    "COM¹",
    "lpt²",
    "conin$",
    "name.",
    "name ",
    "a|b",
    "a?b",
    "a*b",
    'a"b',
    "a<b",
    "a>b",
    "C:evil",
    "a\\b",
    "a/b",
    "x\x00y",
    "x\ty",
    "..",
    ".",
]


@pytest.mark.parametrize("name", WINDOWS_BAD)
def test_windows_file_name_rules_in_the_one_check(name):
    with pytest.raises(InvalidNameError, match=r"not usable|non-empty"):
        check_name(name)
    with pytest.raises(InvalidNameError):
        check_identity_name(name)


@pytest.mark.parametrize("name", ["alice", "Alice Smith (2024)", "console", "com10", "nul_face"])
def test_ordinary_names_pass(name):
    assert check_name(name) == name
    assert check_identity_name(name) == name


def test_long_names_are_refused_before_the_file_system_sees_them(tmp_path):
    roots = ModelRoots.from_models_dir(tmp_path)
    with pytest.raises(InvalidNameError, match="longer than"):
        resolve_hyperlora(roots, "m" * 300)
    with pytest.raises(InvalidNameError, match="longer than"):
        child(tmp_path, "é" * 150)  # 300 bytes in UTF-8


def test_case_twins_are_found():
    assert case_twin("ALICE", ["alice", "bob"]) == "alice"
    assert case_twin("alice", ["alice", "bob"]) is None


@pytest.mark.parametrize("name", ["victim.hyperlora", "victim.HyperLoRA", "victim.preview"])
def test_identity_names_whose_files_belong_to_another_identity_are_refused(name):
    with pytest.raises(InvalidNameError, match="reserved"):
        check_identity_name(name)
