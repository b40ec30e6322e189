"""The likeness score on the synthetic antelopev2 pack, through the identity pipeline."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hyperlora_ext.errors import HyperLoRAError, NoFaceError
from hyperlora_ext.identity import IdentityOptions, IdentityPipeline
from hyperlora_ext.likeness import Likeness, check_reference, cosine, reference_embedding
from hyperlora_ext.models import ModelRoots
from tests.encoders._photos import face_photo
from tests.tiny_tree import MODEL

ROUND = ((210, 90, 430, 390),)  # the default synthetic face
TALL = ((150, 60, 330, 420),)  # another face: narrower and taller


def test_a_reference_photo_scored_against_its_identity_is_one(pipeline):
    photo = face_photo(faces=ROUND)
    result = pipeline.predict([photo], IdentityOptions(MODEL))
    [score] = pipeline.likeness([photo], result.likeness_reference)
    assert score.faces == 1 and score.score == pytest.approx(1.0, abs=1e-6)
    assert score.text == "1.00"


def test_a_different_face_scores_lower(pipeline):
    result = pipeline.predict([face_photo(faces=ROUND)], IdentityOptions(MODEL))
    same, other = pipeline.likeness(
        [face_photo(faces=ROUND), face_photo(faces=TALL)], result.likeness_reference
    )
    assert other.faces == 1 and other.score < same.score - 0.1


def test_reference_is_the_normalised_mean_of_the_photos_embeddings(pipeline):
    photos = [face_photo(faces=ROUND), face_photo(faces=TALL)]
    both = pipeline.predict(photos, IdentityOptions(MODEL)).likeness_reference
    singles = [pipeline.predict([p], IdentityOptions(MODEL)).likeness_reference for p in photos]
    mean = (singles[0].astype(np.float64) + singles[1]) / 2
    np.testing.assert_allclose(both, mean / np.linalg.norm(mean), atol=1e-6)
    # each photo is closer to the two-photo identity than the other photo is to it
    scores = pipeline.likeness(photos, both)
    assert all(s.score > cosine(singles[0], singles[1]) for s in scores)


def test_reference_from_photos_needs_only_the_face_models(roots, tmp_path):
    photo = face_photo(faces=TALL)
    predicted = IdentityPipeline(roots).predict([photo], IdentityOptions(MODEL))
    no_hyperlora = replace(ModelRoots.from_models_dir(tmp_path), insightface=roots.insightface)
    reference = IdentityPipeline(no_hyperlora).reference_from_photos([photo])
    np.testing.assert_allclose(reference, predicted.likeness_reference, atol=1e-6)


def test_an_image_without_a_face_is_no_face_with_its_count(pipeline):
    reference = pipeline.reference_from_photos([face_photo()])
    blank = face_photo(faces=())
    [score] = pipeline.likeness([blank], reference, labels=["blank.png"])
    assert score == Likeness("blank.png", 0, None)
    assert score.text == "no face"
    assert score.to_dict() == {"image": "blank.png", "faces": 0, "likeness": None}


def test_a_reference_photo_without_a_face_is_an_error_naming_it(pipeline):
    with pytest.raises(NoFaceError, match=r"image 2: no face"):
        pipeline.reference_from_photos([face_photo(), face_photo(faces=())])


def test_scoring_reloads_face_models_that_were_released(pipeline):
    reference = pipeline.reference_from_photos([face_photo()])
    pipeline.unload()
    [score] = pipeline.likeness([face_photo()], reference)
    assert score.score == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    "value", [None, "x", [0.1] * 511, [0.0] * 512, [float("nan")] + [0.1] * 511, [[0.1] * 512] * 2]
)
def test_a_reference_that_is_not_an_embedding_is_refused(pipeline, value):
    assert check_reference(value) is None
    with pytest.raises(HyperLoRAError, match="512-number face embedding"):
        pipeline.likeness([face_photo()], value)


def test_reference_embedding_of_one_embedding_is_itself_normalised():
    vector = np.arange(1, 513, dtype=np.float32)
    np.testing.assert_allclose(
        reference_embedding(vector), vector / np.linalg.norm(vector), rtol=1e-6
    )
    with pytest.raises(NoFaceError):
        reference_embedding(np.zeros((0, 512)))


# ------------------------------------------------------------ hostile values (issue 21)


@pytest.mark.parametrize("broken", [np.zeros(512), np.full(512, np.nan), [np.inf] + [0.1] * 511])
def test_an_undefined_cosine_is_an_error_never_a_match(broken):
    reference = np.ones(512, np.float32) / np.sqrt(512)
    for a, b in ((broken, reference), (reference, broken)):
        with pytest.raises(HyperLoRAError, match=r"face recognition model .* damaged"):
            cosine(a, b)
    assert cosine(np.full(512, 1e300), reference) == pytest.approx(1.0)  # huge but finite
    with pytest.raises(HyperLoRAError, match="512 and 1024 numbers"):
        cosine(reference, np.ones((2, 512)))


@pytest.mark.parametrize("value", [0.0, np.nan])
def test_a_damaged_face_embedding_names_the_image(pipeline, monkeypatch, value):
    from hyperlora_ext.encoders import features

    reference = pipeline.reference_from_photos([face_photo()])
    real = features.bounded_embedding

    def broken(*args, **kwargs):
        found = real(*args, **kwargs)
        return (*found[:2], np.full_like(found[2], value))

    monkeypatch.setattr(features, "bounded_embedding", broken)
    with pytest.raises(HyperLoRAError, match=r"^out\.png: .*damaged"):
        pipeline.likeness([face_photo()], reference, labels=["out.png"])


def test_the_reference_of_damaged_embeddings_says_so():
    rows = np.ones((2, 512))
    rows[1, 7] = np.nan
    with pytest.raises(HyperLoRAError, match="damaged"):
        reference_embedding(rows)


def test_tiny_and_huge_relative_weights_weigh_like_their_ratio():
    rows = np.random.default_rng(1).standard_normal((2, 512))
    expected = reference_embedding(rows, [1, 2])
    for weights in ([5e-324, 1e-323], [0.8e308, 1.6e308]):
        np.testing.assert_allclose(reference_embedding(rows, weights), expected, atol=1e-6)
    np.testing.assert_allclose(reference_embedding(rows, [5e-324] * 2), reference_embedding(rows))


@pytest.mark.parametrize("labels", [["only one"], ["a", "b", "c"], "ab"])
def test_a_label_list_of_the_wrong_length_names_the_argument(pipeline, labels):
    from hyperlora_ext.errors import ArgumentError

    photos = [face_photo(), face_photo(faces=TALL)]
    reference = pipeline.reference_from_photos([face_photo()])
    calls = (
        lambda: pipeline.likeness(photos, reference, labels),
        lambda: pipeline.reference_from_photos(photos, labels),
        lambda: pipeline.predict(photos, IdentityOptions(MODEL), labels=labels),
    )
    for call in calls:
        with pytest.raises(ArgumentError, match=r"given for 2 image\(s\)") as caught:
            call()
        assert caught.value.field == "labels"


def test_default_labels_name_the_file_of_a_path(pipeline, tmp_path):
    face, blank = tmp_path / "alice.png", tmp_path / "empty room.png"
    face_photo().save(face)
    face_photo(faces=()).save(blank)
    result = pipeline.predict([str(face), blank], IdentityOptions(MODEL))
    assert result.warnings and result.warnings[0].startswith("image 2 (empty room.png): ")
    assert [r.label for r in result.reports] == ["image 1 (alice.png)", "image 2 (empty room.png)"]
    scores = pipeline.likeness([blank, face_photo()], result.likeness_reference)
    assert [s.label for s in scores] == ["image 1 (empty room.png)", "image 2"]
    with pytest.raises(NoFaceError, match=r"image 2 \(empty room\.png\): no face"):
        pipeline.reference_from_photos([face, blank])


@pytest.mark.parametrize("weights", [[1], [1, -1], [0, 0], [np.nan, 1]])
def test_reference_weights_are_checked_by_name(weights):
    from hyperlora_ext.errors import ArgumentError

    with pytest.raises(ArgumentError) as caught:
        reference_embedding(np.ones((2, 512)), weights)
    assert caught.value.field == "weights"
