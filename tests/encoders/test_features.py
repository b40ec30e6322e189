"""Photos -> identity features: multi-image, per-photo reports, previews, building blocks."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from hyperlora_ext.encoders.clip_processor import clip_pixel_values
from hyperlora_ext.encoders.faces import FaceAnalyzer
from hyperlora_ext.encoders.features import bound_crop_work, extract_identity_features
from hyperlora_ext.encoders.preprocess import id_crops
from hyperlora_ext.errors import ModelNotFoundError, NoFaceError
from tests.encoders._photos import DARK, face_photo


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def test_multi_image_reports_every_photo_in_order(analyzer, tmp_path):
    alice = tmp_path / "alice.png"
    alice.write_bytes(_png(face_photo()))
    photos = [
        alice,
        Image.new("RGB", (320, 240), DARK),
        b"garbage",
        face_photo((500, 500), faces=((100, 80, 380, 420),)),
    ]
    feats = extract_identity_features(photos, analyzer)
    assert feats.usable == 2
    assert feats.id_embeds.shape == (2, 512) and feats.id_embeds.dtype == torch.float32
    assert feats.pixel_values.shape == (2, 3, 224, 224)
    assert torch.allclose(feats.id_embeds.norm(dim=1), torch.ones(2))
    r = feats.reports
    assert [x.label for x in r] == ["image 1 (alice.png)", "image 2", "image 3", "image 4"]
    assert [x.used for x in r] == [True, False, False, True]
    assert r[0].faces_found == 1 and r[0].chosen == 0 and r[0].score == pytest.approx(0.99)
    assert r[0].box == pytest.approx((216, 96, 432, 392))
    assert r[1].faces_found == 0 and "no face found" in r[1].reason
    assert "not a recognised image format" in r[2].reason and not r[2].reason.startswith("image")
    assert all(x.reason is None for x in (r[0], r[3]))
    assert r[0].preview.size == (512, 512) and r[0].preview.mode == "RGB"
    assert max(r[0].thumbnail.size) == 256 and r[1].preview is None
    feats.require_usable()  # does not raise


def test_features_equal_the_building_blocks(analyzer):
    photo = face_photo()
    feats = extract_identity_features([photo], analyzer, grayscale=True, remove_background=False)
    face = analyzer.detect(photo)[0]
    clip_face, arc = id_crops(photo, face.landmarks_106, remove_background=False, grayscale=True)
    assert torch.equal(feats.pixel_values[0:1], clip_pixel_values(clip_face))
    assert np.array_equal(feats.id_embeds[0].numpy(), analyzer.embedding(arc))
    assert feats.reports[0].preview.mode == "RGB"  # 3 channels even for grayscale


def test_nothing_usable_lists_every_reason(analyzer):
    feats = extract_identity_features(
        [Image.new("RGB", (64, 64), DARK), b""], analyzer, labels=["front.jpg", "side.jpg"]
    )
    assert feats.usable == 0 and feats.id_embeds.shape == (0, 512)
    assert feats.pixel_values.shape == (0, 3, 224, 224)
    with pytest.raises(NoFaceError) as info:
        feats.require_usable()
    msg = str(info.value)
    assert "- front.jpg: no face found" in msg and "- side.jpg: the file is empty" in msg
    assert msg != "No face detected!"
    with pytest.raises(NoFaceError, match="No reference photo"):
        extract_identity_features([], analyzer).require_usable()


def test_face_choice_and_index_errors_are_reported(split_analyzer):
    two = face_photo(faces=((40, 100, 200, 300), (380, 140, 480, 260)))
    largest = extract_identity_features([two], split_analyzer).reports[0]
    best = extract_identity_features([two], split_analyzer, face_choice="best_score").reports[0]
    assert largest.faces_found == best.faces_found == 2
    assert largest.box[0] < 320 <= best.box[0]
    bad = extract_identity_features([two], split_analyzer, face_choice="index", face_index=2)
    assert bad.usable == 0 and "face number 2" in bad.reports[0].reason


def test_missing_models_raise_instead_of_being_reported(tmp_path):
    with pytest.raises(ModelNotFoundError):
        extract_identity_features([face_photo()], FaceAnalyzer(tmp_path, ["CPUExecutionProvider"]))


def test_a_huge_close_up_is_used_with_bounded_crops(analyzer):
    # The face's ArcFace crop would be ~14000 px square (> 179 MP, Pillow's bomb limit).
    photo = face_photo((5000, 5000), ((100, 100, 4900, 4900),))
    features = extract_identity_features([face_photo(), photo], analyzer)
    assert features.usable == 2 and [r.used for r in features.reports] == [True, True]


def test_ordinary_photos_keep_the_reference_crops(analyzer):
    photo = face_photo()
    face = analyzer.detect(photo)[0]
    image, same = bound_crop_work(photo, face)
    assert image is photo and same is face
