"""Advice on settings: the CLIP-layer warning is shown only when SDXL leaves CLIP's penultimate
layer (facts read from A1111 1.10.1 and Forge 2, see hyperlora_ext/advice.py); weight notes only
far outside the authors' range."""

from __future__ import annotations

import pytest

from hyperlora_ext.advice import clip_layer_warning, sdxl_clip_skip, weight_hint, weight_warning
from hyperlora_ext.facts import RECOMMENDED_WEIGHT, TYPICAL_WEIGHTS, WORKFLOW_WEIGHTS


@pytest.mark.parametrize("clip_skip", [1, 2, 3, 12])
def test_a1111_ignores_clip_skip_for_sdxl_unless_clip_skip_sdxl_is_on(clip_skip):
    assert sdxl_clip_skip("a1111", clip_skip, sdxl_clip_l_skip=False) == 2
    assert clip_layer_warning("a1111", clip_skip, sdxl_clip_l_skip=False) == ""
    assert sdxl_clip_skip("a1111", clip_skip, sdxl_clip_l_skip=True) == clip_skip


def test_a1111_default_clip_skip_1_gives_no_warning():
    # the old accordion said "CLIP skip is 1; 2 is recommended" here, which changes nothing
    assert clip_layer_warning("a1111", 1) == ""


@pytest.mark.parametrize("clip_skip", [1, 3, 4])
def test_a1111_with_clip_skip_sdxl_on_warns_unless_clip_skip_is_2(clip_skip):
    warning = clip_layer_warning("a1111", clip_skip, sdxl_clip_l_skip=True)
    assert f"Clip skip is {clip_skip}" in warning
    assert "'Clip skip' to 2" in warning and "'Clip skip SDXL' off" in warning
    assert clip_layer_warning("a1111", 2, sdxl_clip_l_skip=True) == ""


def test_a1111_clip_skip_1_with_the_option_on_names_the_last_layer():
    assert "its last layer" in clip_layer_warning("a1111", 1, sdxl_clip_l_skip=True)


@pytest.mark.parametrize("option", [False, True])  # Forge does not read sdxl_clip_l_skip
def test_forge_uses_at_least_clip_skip_2_and_warns_only_above(option):
    assert [sdxl_clip_skip("forge", skip, option) for skip in (1, 2, 3)] == [2, 2, 3]
    assert clip_layer_warning("forge", 1, option) == clip_layer_warning("forge", 2, option) == ""
    warning = clip_layer_warning("forge", 3, option)
    assert "Clip skip is 3" in warning and "layer 3 from the end" in warning
    assert "to 1 or 2" in warning


def test_unknown_host_is_an_error():
    with pytest.raises(ValueError, match="comfy"):
        sdxl_clip_skip("comfy", 2)  # type: ignore[arg-type]


@pytest.mark.parametrize("weight", [0, RECOMMENDED_WEIGHT, *TYPICAL_WEIGHTS, *WORKFLOW_WEIGHTS])
def test_weights_in_or_near_the_authors_range_and_off_get_no_note(weight):
    assert weight_warning(weight) == ""


@pytest.mark.parametrize(
    ("weight", "says"),
    [(0.3, "far below"), (1.3, "far above"), (1.5, "far above"), (-0.8, "negative")],
)
def test_weights_far_outside_get_a_note_with_the_authors_range(weight, says):
    note = weight_warning(weight)
    assert f"weight {weight:g} is" in note and says in note
    assert weight_hint() in note


def test_the_hint_states_both_ranges():
    hint = weight_hint()
    assert "0.75–0.85" in hint and "0.85–0.9" in hint
