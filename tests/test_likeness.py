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
