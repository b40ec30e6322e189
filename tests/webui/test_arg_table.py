"""The argument model as the table: each field's label, infotext key, hint, widget and range are
declared once, and the infotext, its paste rules and the API's request model follow them."""

from __future__ import annotations

import pytest

from hyperlora_ext.arg_table import KEY_RULE, PREFIX
from hyperlora_ext.args import ArgumentError, HyperLoRAArgs
from hyperlora_ext.webui import api_models, infotext

SPECS = HyperLoRAArgs.specs()
EVERY_FIELD_SET = HyperLoRAArgs.from_dict(
    {
        "enabled": True, "images": ["a.png", "b.png"], "model": "tiny", "weight": 0.6,
        "trigger_words": False, "face": "index", "face_index": 2, "remove_background": False,
        "grayscale": True, "photo_weights": [1, 2], "mix": "alice:1, @photos:1",
        "slider": {"positive": "old", "negative": "young", "strength": 1}, "dtype": "bf16",
    }
)  # fmt: skip


def test_every_field_is_declared_with_unique_keys_in_the_webuis_key_shape():
    assert list(SPECS) == list(HyperLoRAArgs.field_names())
    keys = [spec.key for spec in SPECS.values() if spec.key]
    assert len(keys) == len(set(keys))
    assert all(KEY_RULE.fullmatch(key) and key.startswith(PREFIX) for key in keys)
    assert all(spec.label and len(spec.hint) > 10 for spec in SPECS.values())


def test_the_infotext_writes_each_field_under_its_declared_key():
    params: dict = {}
    infotext.write(params, EVERY_FIELD_SET, "abc", dtype=EVERY_FIELD_SET.dtype)
    written = {name for name, spec in SPECS.items() if spec.key in params}
    # the photos are never written; the saved identity is empty here (a mix is used instead)
    assert written == set(SPECS) - {"enabled", "images", "identity"}


def test_pasting_reads_each_declared_key_back():
    params: dict = {}
    infotext.write(params, EVERY_FIELD_SET, "abc", dtype=EVERY_FIELD_SET.dtype)
    values = {}
    for field, rule in infotext.paste_rules():
        values[field] = rule(params) if callable(rule) else params.get(rule)
    assert HyperLoRAArgs.from_dict(values) == EVERY_FIELD_SET.replace(images=())
    assert set(infotext.paste_field_names()) == {s.key for s in SPECS.values() if s.key}


def test_the_api_request_model_takes_hints_defaults_and_ranges_from_the_table():
    schema = api_models.json_schema(api_models.EncodeRequest)["properties"]
    defaults = api_models.defaults(api_models.EncodeRequest)
    shared = set(schema) & set(SPECS) - {"images"}  # the API's photos are base64 only: its own
    assert {"model", "face", "face_index", "photo_weights", "mix", "dtype"} <= shared
    for name in shared:
        spec = SPECS[name]
        assert schema[name]["description"] == spec.hint
        if spec.range:
            assert (schema[name]["minimum"], schema[name]["maximum"]) == spec.range
        if name not in ("photo_weights", "mix"):  # lists: null in the request, () in the model
            assert defaults[name] == getattr(HyperLoRAArgs(), name)


@pytest.mark.parametrize("name", [n for n, s in SPECS.items() if s.range])
def test_the_declared_range_is_the_range_the_parser_enforces(name):
    low, high = SPECS[name].range
    for inside in (low, high):
        assert getattr(HyperLoRAArgs.from_dict({name: inside}), name) == inside
    for outside in (low - 1, high + 1):
        with pytest.raises(ArgumentError) as caught:
            HyperLoRAArgs.from_dict({name: outside})
        assert caught.value.field == name
