"""Per-photo weights and identity mixing: the weighted mean at the reference's fusion point."""

from __future__ import annotations

import pytest
import torch

from hyperlora_ext.engine.fusion import check_weights, weighted_mean
from hyperlora_ext.engine.model import load_hyperlora
from hyperlora_ext.errors import ArgumentError
from tests.engine.test_model import _inputs, _max_error, reference_lora
from tests.factories import write_tiny_hyperlora


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_hyperlora(tmp_path_factory.mktemp("fusion") / "tiny")


@pytest.fixture(scope="module")
def model(folder):
    return load_hyperlora(folder, dtype=torch.float32)


def _bit_equal(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("weights", [[0.7, 0.2, 0.1], [1, 0, 3], [5, 1, 1]])
def test_weighted_fusion_matches_float64_reference(folder, model, weights):
    ids, clip = _inputs(3, seed=7)
    lora = model.predict_lora(ids, clip, weights=weights)
    assert _max_error(lora, reference_lora(folder, ids, clip, weights)) < 1e-5
    # and it is not the plain mean
    assert _max_error(lora, reference_lora(folder, ids, clip)) > 1e-3


def test_none_and_equal_weights_are_bit_equal_to_the_plain_mean(model):
    ids, clip = _inputs(3, seed=3)
    plain = model.predict_lora(ids, clip)
    assert _bit_equal(model.predict_lora(ids, clip, weights=[1, 1, 1]), plain)
    assert _bit_equal(model.predict_lora(ids, clip, weights=[2.5, 2.5, 2.5]), plain)
    assert _bit_equal(model.predict_lora(ids, clip, weights=torch.ones(3)), plain)


def test_zero_weight_gives_the_one_photo_identity(model):
    ids, clip = _inputs(2, seed=4)
    assert _bit_equal(
        model.predict_lora(ids, clip, weights=[1, 0]), model.predict_lora(ids[:1], clip[:1])
    )
    assert _bit_equal(
        model.predict_lora(ids, clip, weights=[0, 2]), model.predict_lora(ids[1:], clip[1:])
    )


def test_scale_of_the_weights_does_not_matter(model):
    ids, clip = _inputs(2, seed=5)
    a = model.predict_lora(ids, clip, weights=[3, 1])
    b = model.predict_lora(ids, clip, weights=[0.75, 0.25])
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_tokens_split_at_the_fusion_point(model):
    ids, clip = _inputs(2, seed=6)
    tokens = model.predict_tokens(ids, clip)
    config = model.resampler.config
    assert tokens.shape == (config.num_queries, config.output_dim) and tokens.dtype == torch.float32
    assert not torch.allclose(tokens.norm(dim=-1), torch.ones(config.num_queries))  # pre-norm
    assert _bit_equal(model.lora_from_tokens(tokens), model.predict_lora(ids, clip))


def test_mixing_identities_equals_weighting_their_photos(folder, model):
    """Identity A (2 photos) at 0.7 and B (1 photo) at 0.3 = photo weights 0.35, 0.35, 0.3."""
    ids, clip = _inputs(3, seed=8)
    a, b = model.predict_tokens(ids[:2], clip[:2]), model.predict_tokens(ids[2:], clip[2:])
    mixed = model.lora_from_tokens(weighted_mean(torch.stack([a, b]), [0.7, 0.3]))
    assert _max_error(mixed, reference_lora(folder, ids, clip, [0.35, 0.35, 0.3])) < 1e-5


def test_tokens_of_another_model_are_refused(model):
    with pytest.raises(ValueError, match="another HyperLoRA model"):
        model.lora_from_tokens(torch.zeros(3, 5))


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([1], "1 weight\\(s\\) given for 2"),
        ([1, -1], "weight 2 is -1.0"),
        ([1, float("nan")], "weight 2 is nan"),
        ([1, float("inf")], "weight 2 is inf"),
        ([0, 0], "all weights are 0"),
        ([1, "a"], "weight 2 is not a number"),
        ([True, 1], "weight 1 is not a number"),
        ("1,1", "expected a list"),
    ],
)
def test_bad_weights_name_the_field(model, weights, match):
    ids, clip = _inputs(2)
    with pytest.raises(ArgumentError, match=match) as caught:
        model.predict_lora(ids, clip, weights=weights)
    assert caught.value.field == "photo_weights"
    assert "photo_weights" in str(caught.value)


def test_check_weights_field_name():
    with pytest.raises(ArgumentError) as caught:
        check_weights([0], 1, field="mix")
    assert caught.value.field == "mix"
    assert check_weights(None, 3) is None
