"""The shared argument model: positional and named forms, validation naming the field."""

from __future__ import annotations

import pytest

from hyperlora_ext.args import ArgumentError, HyperLoRAArgs, add_trigger_words
from hyperlora_ext.errors import HyperLoRAError


def test_defaults_match_the_issue():
    args = HyperLoRAArgs()
    assert (args.enabled, args.weight, args.trigger_words, args.face) == (
        False,
        0.8,
        True,
        "largest",
    )
    assert (args.remove_background, args.grayscale, args.identity, args.images) == (
        True, False, "", ()
    )  # fmt: skip


def test_positional_and_named_forms_agree():
    positional = [True, ["a.png"], "fidelity", 0.5, False, "Best score", 1, False, True, ""]
    positional += ["2", "", "older", "younger", 0.4, "bf16"]  # photo weights, mix, slider, dtype
    named = dict(zip(HyperLoRAArgs.field_names(), positional, strict=True))
    assert HyperLoRAArgs.from_script_args(positional) == HyperLoRAArgs.from_script_args([named])
    assert HyperLoRAArgs.from_positional([True]) == HyperLoRAArgs(enabled=True)


def test_named_dict_ignores_the_api_padding_after_it():
    args = HyperLoRAArgs.from_script_args([{"enabled": True, "weight": 1.1}, None, "x", 0.8])
    assert args == HyperLoRAArgs(enabled=True, weight=1.1)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"weight": 1.6}, "weight"),
        ({"weight": "heavy"}, "weight"),
        ({"weight": float("nan")}, "weight"),
        ({"weight": True}, "weight"),
        ({"face": "smallest"}, "face"),
        ({"face_index": -1}, "face_index"),
        ({"face_index": 1.5}, "face_index"),
        ({"enabled": "yes"}, "enabled"),
        ({"model": 3}, "model"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_values_raise_naming_the_field(values, field):
    with pytest.raises(ArgumentError) as error:
        HyperLoRAArgs.from_dict(values)
    assert error.value.field == field and field in str(error.value)
    assert isinstance(error.value, HyperLoRAError)


def test_too_many_positions_is_an_error():
    with pytest.raises(ArgumentError):
        HyperLoRAArgs.from_positional([False] * (len(HyperLoRAArgs.field_names()) + 1))


def test_values_from_ui_and_infotext_are_normalised():
    class Upload:  # gradio 3.41 gr.File tempfile wrapper
        name = "/tmp/gradio/face.png"

    args = HyperLoRAArgs.from_dict(
        {
            "enabled": "True", "weight": "-0.25", "face": "Best score", "face_index": 2.0,
            "grayscale": "False", "images": [Upload(), ("pil-image", "caption"), "b64"],
        }
    )  # fmt: skip
    assert (args.enabled, args.weight, args.face, args.face_index) == (True, -0.25, "best_score", 2)
    assert args.grayscale is False
    assert args.images == ("/tmp/gradio/face.png", "pil-image", "b64")
    with pytest.raises(ArgumentError, match="'images': expected a list of photos, got str"):
        HyperLoRAArgs.from_dict({"images": "one-base64"})


def test_replace_validates_and_reports_changes():
    args = HyperLoRAArgs(enabled=True).replace(weight=0.3, grayscale=True)
    assert args.changed_from_default() == {"enabled": True, "weight": 0.3, "grayscale": True}
    with pytest.raises(ArgumentError):
        args.replace(weight=9)


def test_trigger_words_are_added_once():
    assert add_trigger_words("a man") == "fcsks fxhks fhyks, a man"
    assert add_trigger_words(add_trigger_words("a man")) == "fcsks fxhks fhyks, a man"


def test_photo_count_and_list_type_are_limited():
    from hyperlora_ext.facts import MAX_IMAGES

    assert len(HyperLoRAArgs(images=["b64"] * MAX_IMAGES).images) == MAX_IMAGES
    with pytest.raises(ArgumentError, match="'images': 17 images posted; at most 16 per request"):
        HyperLoRAArgs(images=["b64"] * 17)
    for bare in ("base64", b"bytes", {"image": "x"}, 5):
        with pytest.raises(ArgumentError, match="'images': expected a list of photos"):
            HyperLoRAArgs(images=bare)


def test_the_argument_model_does_no_file_io(tmp_path, monkeypatch):
    """Regression: photo sizes were looked up on the server's disk for any string a client sent
    (a remote client could learn whether a large file exists), on every ``replace``. The size
    limit is enforced where the bytes are read (see tests/encoders/test_images.py)."""
    import os

    from hyperlora_ext.facts import MAX_IMAGE_BYTES

    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (MAX_IMAGE_BYTES + 1))

    looked_up = []
    for name in ("isfile", "getsize", "exists"):
        real = getattr(os.path, name)
        monkeypatch.setattr(os.path, name, lambda *a, real=real: looked_up.append(a) or real(*a))
    args = HyperLoRAArgs(images=[str(big), big], mix=[{"images": [str(big)], "weight": 1}])
    assert args.replace(weight=0.5).images == (str(big), big)
    assert looked_up == []  # nothing on the server's disk was looked at


# ------------------------------------------------------------- advanced: weights, mix, slider


def test_photo_weights_as_list_or_text():
    images = ["a.png", "b.png", "c.png"]
    assert HyperLoRAArgs(images=images, photo_weights=[1, 0.5, 0]).photo_weights == (1, 0.5, 0)
    assert HyperLoRAArgs(images=images, photo_weights=" 1, 0.5 ,0 ").photo_weights == (1, 0.5, 0)
    assert HyperLoRAArgs(photo_weights="").photo_weights == ()


@pytest.mark.parametrize(
    ("values", "field", "match"),
    [
        ({"images": ["a", "b"], "photo_weights": [1]}, "photo_weights", "1 weight\\(s\\) for 2"),
        ({"photo_weights": [1, -1]}, "photo_weights", "outside"),
        ({"photo_weights": [0, 0]}, "photo_weights", "all weights are 0"),
        ({"photo_weights": "1, x"}, "photo_weights", "expected a number"),
        ({"photo_weights": [float("inf")]}, "photo_weights", "finite"),
        ({"photo_weights": {"a": 1}}, "photo_weights", "list of numbers"),
        ({"mix": [{"identity": "a", "weight": -1}]}, "mix.1.weight", "outside"),
        ({"mix": [{"identity": "a", "weight": 0}]}, "mix", "all weights are 0"),
        ({"mix": [{"identity": "a", "images": ["x"]}]}, "mix.1", "either"),
        ({"mix": [{"weight": 1}]}, "mix.1", "either"),
        ({"mix": [{"identity": "a", "colour": 1}]}, "mix.1.colour", "unknown"),
        ({"mix": "a:0.5, b:lots"}, "mix.2.weight", "expected a number"),
        ({"mix": "a", "identity": "b"}, "mix", "not both"),
        ({"slider": {"positive": "old"}}, "slider_negative", "both"),
        (
            {"slider": {"positive": "a", "negative": "b", "strength": 9}},
            "slider_strength",
            "outside",
        ),
        ({"slider": {"positive": "a", "size": 1}}, "slider.size", "unknown"),
        ({"slider": "old"}, "slider", "expected"),
        ({"slider_positive": 3, "slider_negative": "b"}, "slider_positive", "name"),
    ],
)
def test_advanced_fields_name_the_field(values, field, match):
    with pytest.raises(ArgumentError, match=match) as error:
        HyperLoRAArgs.from_dict(values)
    assert error.value.field == field


def test_mix_list_and_text_forms():
    from hyperlora_ext.args import IdentitySource, MixPart

    listed = HyperLoRAArgs.from_dict(
        {"mix": [{"identity": "alice", "weight": 0.7}, {"images": ["x.png"], "weight": 0.3}]}
    )
    assert listed.mix == (
        MixPart(IdentitySource(identity="alice"), 0.7),
        MixPart(IdentitySource(images=("x.png",)), 0.3),
    )
    text = HyperLoRAArgs(mix="alice:0.7, @photos:0.3, bob")
    assert text.mix == (
        MixPart(IdentitySource(identity="alice"), 0.7),
        MixPart(IdentitySource(photos=True), 0.3),
        MixPart(IdentitySource(identity="bob"), 1.0),
    )
    assert HyperLoRAArgs.from_dict(text.to_dict()) == text


def test_slider_named_form_is_the_flat_fields():
    from hyperlora_ext.args import IdentitySource

    args = HyperLoRAArgs.from_dict(
        {"slider": {"positive": "older", "negative": {"images": ["y.png"]}, "strength": "0.25"}}
    )
    assert args.slider_positive == IdentitySource(identity="older")
    assert args.slider_negative == IdentitySource(images=("y.png",))
    assert args.slider_strength == 0.25 and args.slider
    assert not HyperLoRAArgs(slider_positive="a", slider_negative="b", slider_strength=0).slider
    assert not HyperLoRAArgs().slider
