"""Per-photo weights and mixing through the identity pipeline (tiny models, real loaders)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from hyperlora_ext.errors import ArgumentError
from hyperlora_ext.identity import IdentityOptions, IdentityPipeline
from tests.tiny_tree import MODEL, _photo

OPTIONS = IdentityOptions(MODEL)
DARK = Image.new("RGB", (320, 240), (20, 20, 20))


@pytest.fixture
def pipeline(roots) -> IdentityPipeline:
    return IdentityPipeline(roots, device="cpu", dtype=torch.float32)


def _equal(a, b) -> bool:
    return list(a.lora) == list(b.lora) and all(torch.equal(a.lora[k], b.lora[k]) for k in a.lora)


def test_equal_weights_are_the_plain_mean(pipeline):
    plain = pipeline.predict([_photo(), _photo(60)], OPTIONS)
    pipeline.cache.clear()
    equal = pipeline.predict([_photo(), _photo(60)], OPTIONS, weights=[2, 2])
    assert not equal.cache_hit and _equal(equal, plain)


def test_zero_weight_gives_the_one_photo_identity(pipeline):
    one = pipeline.predict([_photo()], OPTIONS)
    weighted = pipeline.predict([_photo(), _photo(60)], OPTIONS, weights=[1, 0])
    assert _equal(weighted, one) and weighted.digest == one.digest


def test_weights_change_the_identity_and_are_in_the_cache_key(pipeline):
    plain = pipeline.predict([_photo(), _photo(60)], OPTIONS)
    weighted = pipeline.predict([_photo(), _photo(60)], OPTIONS, weights=[3, 1])
    again = pipeline.predict([_photo(60), _photo()], OPTIONS, weights=[1, 3])  # same pairs
    assert not weighted.cache_hit and weighted.digest != plain.digest
    assert again.cache_hit and again.digest == weighted.digest


def test_weights_follow_their_photo_when_another_is_skipped(pipeline):
    one = pipeline.predict([_photo(60)], OPTIONS)
    skipped = pipeline.predict([_photo(), DARK, _photo(60)], OPTIONS, weights=[0, 5, 1])
    assert _equal(skipped, one) and skipped.warnings


def test_only_zero_weights_left_names_the_field(pipeline):
    with pytest.raises(ArgumentError, match="photo_weights") as caught:
        pipeline.predict([DARK, _photo()], OPTIONS, weights=[1, 0])
    assert caught.value.field == "photo_weights"


@pytest.mark.parametrize(
    "weights", [[1], [1, -2], [float("nan"), 1], [0, 0], [10**400, 1], [1, Fraction(10**400, 3)]]
)
def test_bad_weights_are_refused_before_any_work(pipeline, weights, monkeypatch):
    monkeypatch.setattr(pipeline, "_compute", lambda *a: pytest.fail("computed"))
    with pytest.raises(ArgumentError, match="photo_weights") as caught:
        pipeline.predict([_photo(), _photo(60)], OPTIONS, weights=weights)
    assert caught.value.field == "photo_weights"


@pytest.mark.parametrize("extreme", [[5e-324, 1e-323], [0.8e308, 1.6e308]])
def test_extreme_valid_weights_weigh_like_their_ratio(pipeline, extreme):
    """Weights are relative: 1:2 at the bottom or top of float's range is 1:2 (the tiny ones once
    failed as "embeddings cancel out", the huge ones summed to infinity)."""
    plain = pipeline.predict([_photo(), _photo(60)], OPTIONS, weights=[1, 2])
    weighted = pipeline.predict([_photo(), _photo(60)], OPTIONS, weights=extreme)
    for key in plain.lora:
        torch.testing.assert_close(weighted.lora[key], plain.lora[key], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(weighted.likeness_reference, plain.likeness_reference, atol=1e-6)


def test_result_keeps_the_pre_normalisation_tokens(pipeline):
    result = pipeline.predict([_photo()], OPTIONS)
    hit = pipeline.predict([_photo()], OPTIONS)
    assert result.tokens.dtype == torch.float32 and result.tokens.dim() == 2
    assert torch.equal(result.tokens, hit.tokens) and hit.tokens is not result.tokens


def test_mix_of_two_identities(pipeline):
    a = pipeline.predict([_photo()], OPTIONS)
    b = pipeline.predict([_photo(60)], OPTIONS)
    only_a = pipeline.mix([a.tokens, b.tokens], [1, 0], MODEL)
    assert _equal(only_a, a) and only_a.digest == a.digest
    mixed = pipeline.mix([a.tokens, b.tokens], [0.7, 0.3], MODEL)
    photos = pipeline.predict([_photo(), _photo(60)], OPTIONS, weights=[0.7, 0.3])
    for key in photos.lora:
        torch.testing.assert_close(mixed.lora[key], photos.lora[key], rtol=1e-4, atol=1e-6)
    assert mixed.tokens.shape == a.tokens.shape


def test_mix_errors_name_the_field(pipeline):
    a = pipeline.predict([_photo()], OPTIONS)
    with pytest.raises(ArgumentError, match=r"'mix'.*all weights are 0"):
        pipeline.mix([a.tokens], [0], MODEL)
    with pytest.raises(ArgumentError, match=r"'mix'.*another HyperLoRA model"):
        pipeline.mix([torch.zeros(3, 4)], [1], MODEL)


# ------------------------------------------- tokens that do not fit the model (issue 21)


def test_tokens_of_another_shape_name_the_identity(pipeline):
    a = pipeline.predict([_photo()], OPTIONS)
    other = torch.zeros(a.tokens.shape[0] + 8, a.tokens.shape[1])  # a bigger model's
    with pytest.raises(ArgumentError, match="identity 2 of the mix: its tokens are") as caught:
        pipeline.mix([a.tokens, other], [1, 1], MODEL)  # was torch.stack's RuntimeError
    assert caught.value.field == "mix" and "another HyperLoRA model" in str(caught.value)
    with pytest.raises(ArgumentError, match=r"'mix'.*bob: its tokens are \["):
        pipeline.mix([a.tokens, other], [1, 1], MODEL, labels=["alice", "bob"])


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (lambda t: torch.full_like(t, float("nan")), "hold NaN or infinite"),
        (lambda t: t.tolist(), "are not a float tensor"),
        (lambda t: t.to(torch.int64), "are not a float tensor"),
        (lambda t: t[None], "are \\[1, "),
    ],
)
def test_damaged_tokens_name_the_identity_not_the_model(pipeline, bad, match):
    a = pipeline.predict([_photo()], OPTIONS)
    with pytest.raises(ArgumentError, match=f"carol: its tokens {match}") as caught:
        pipeline.mix([a.tokens, bad(a.tokens)], [1, 1], MODEL, labels=["alice", "carol"])
    assert caught.value.field == "mix"


def test_a_rewritten_sidecar_of_another_shape_is_named_in_the_mix(pipeline, tmp_path):
    """The library path: a saved identity whose tokens file was rewritten (digest kept) with
    tokens of another model's shape is refused by name, not as a torch.stack RuntimeError."""
    from safetensors.torch import save_file

    from hyperlora_ext.store import IdentityStore

    store = IdentityStore(tmp_path / "Lora")
    for name, shift in (("alice", 0), ("bob", 60)):
        result = pipeline.predict([_photo(shift)], OPTIONS)
        store.save(name, result.lora, model=MODEL, photos=1, tokens=result.tokens)
    digest = store.record("bob").digest
    wider = torch.zeros(result.tokens.shape[0], result.tokens.shape[1] * 2)
    save_file({"tokens": wider}, str(store.tokens_path("bob")), metadata={"lora_digest": digest})
    names = ["alice", "bob"]
    with pytest.raises(ArgumentError, match=r"bob: its tokens are .*save it again") as caught:
        pipeline.mix([store.load_tokens(n) for n in names], [1, 1], MODEL, labels=names)
    assert caught.value.field == "mix"


def test_mix_labels_of_the_wrong_length_name_the_argument(pipeline):
    a = pipeline.predict([_photo()], OPTIONS)
    with pytest.raises(ArgumentError) as caught:
        pipeline.mix([a.tokens, a.tokens], [1, 1], MODEL, labels=["only one"])
    assert caught.value.field == "labels"
