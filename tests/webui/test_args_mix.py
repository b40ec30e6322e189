"""The argument model's rules for mixes and sliders: their limits, their text form, and what it
reports as having no effect (issue 21)."""

from __future__ import annotations

import pytest

from hyperlora_ext.args import ArgumentError, HyperLoRAArgs, ignored
from hyperlora_ext.facts import MAX_IMAGES, MAX_MIX_PARTS, MAX_TOTAL_IMAGES


def field_of(values):
    with pytest.raises(ArgumentError) as caught:
        HyperLoRAArgs.from_dict(values)
    return caught.value.field, str(caught.value)


@pytest.mark.parametrize("text", [":0.5", "alice:1, :0.5", " : 2"])
def test_a_mix_text_without_a_name_is_an_error_not_an_identity_named_like_the_weight(text):
    field, message = field_of({"mix": text})
    assert field == "mix" and "names no identity" in message and "NAME:WEIGHT" in message


def test_a_mix_text_keeps_names_with_and_without_weights():
    parts = HyperLoRAArgs.from_dict({"mix": "alice, bob:0.5"}).mix
    assert [(p.source.identity, p.weight) for p in parts] == [("alice", 1.0), ("bob", 0.5)]


def test_the_known_fields_of_a_mix_part_include_weight():
    field, message = field_of({"mix": [{"identity": "alice", "wieght": 1}]})
    assert field == "mix.1.wieght"
    assert "known fields: identity, images, photo_weights, weight" in message


def test_a_slider_side_does_not_list_weight_among_its_fields():
    field, message = field_of({"slider_positive": {"identity": "a", "weight": 1}})
    assert field == "slider_positive.weight"
    assert message.endswith("known fields: identity, images, photo_weights")


@pytest.mark.parametrize("form", ["list", "text"])
def test_a_mix_has_a_bounded_number_of_parts(form):
    names = [f"id{n}" for n in range(MAX_MIX_PARTS + 1)]
    value = ", ".join(names) if form == "text" else [{"identity": n} for n in names]
    field, message = field_of({"mix": value})
    assert field == "mix" and f"at most {MAX_MIX_PARTS}" in message
    allowed = HyperLoRAArgs.from_dict({"mix": ", ".join(names[:MAX_MIX_PARTS])})
    assert len(allowed.mix) == MAX_MIX_PARTS


def test_a_thousand_parts_are_refused_before_each_is_parsed():
    field, _ = field_of({"mix": [object()] * 1000})  # parsing any part would fail differently
    assert field == "mix"


def test_the_photos_of_all_parts_and_slider_sides_are_bounded_together():
    full = {"images": ["p.png"] * MAX_IMAGES}
    parts = [{"images": ["p.png"] * MAX_IMAGES}] * (MAX_TOTAL_IMAGES // MAX_IMAGES + 1)
    field, message = field_of({"mix": [{"identity": "alice"}, *parts]})
    assert field == f"mix.{len(parts) + 1}.images" and f"at most {MAX_TOTAL_IMAGES}" in message
    slider = {"positive": full, "negative": full}
    field, _ = field_of({**full, "slider": slider, "slider_strength": 1})
    assert field == "slider_negative.images"
    HyperLoRAArgs.from_dict({"images": full["images"], "slider": {**slider, "negative": "bob"}})


@pytest.mark.parametrize("dtype", ["fp32", "BF16", " fp16 ", ""])
def test_dtype_takes_the_names_the_infotext_writes(dtype):
    assert HyperLoRAArgs.from_dict({"dtype": dtype}).dtype == dtype.strip().lower()


def test_an_unknown_dtype_names_the_field():
    field, message = field_of({"dtype": "fp8"})
    assert field == "dtype" and "fp32, bf16, fp16" in message


def test_settings_without_effect_are_reported():
    assert ignored(HyperLoRAArgs()) == []
    saved = HyperLoRAArgs.from_dict({"identity": "alice", "photo_weights": [1, 2]})
    assert [n[:25] for n in ignored(saved)] == ["photo weights are ignored"]
    lone = HyperLoRAArgs.from_dict({"slider_strength": 1.5})
    assert [n[:26] for n in ignored(lone)] == ["slider strength is ignored"]
    same = HyperLoRAArgs.from_dict({"slider": {"positive": "old", "negative": "old"}})
    assert any("'old' on both sides" in note for note in ignored(same))
    fine = HyperLoRAArgs.from_dict(
        {"identity": "alice", "slider": {"positive": "old", "negative": "young"}}
    )
    assert ignored(fine) == []
