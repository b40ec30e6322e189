"""FaceAnalyzer on the fake antelopev2 pack: the real insightface code path, synthetic photos."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from hyperlora_ext.encoders import faces as faces_mod
from hyperlora_ext.encoders.faces import (
    DetectedFace,
    FaceAnalyzer,
    choose_face,
    default_providers,
    face_embedding,
    find_pack,
)
from hyperlora_ext.errors import ArgumentError, CheckpointError, ModelNotFoundError, NoFaceError
from tests.encoders._photos import DARK, face_photo

CPU = ["CPUExecutionProvider"]


def test_detects_the_bright_face_with_landmarks_and_keypoints(analyzer):
    (face,) = analyzer.detect(face_photo())
    assert face.box == pytest.approx((216, 96, 432, 392))
    assert face.score == pytest.approx(0.99)
    assert face.landmarks_106.shape == (106, 2) and face.landmarks_106.dtype == np.float32
    assert face.kps.shape == (5, 2)
    x1, y1, x2, y2 = face.box
    lm = face.landmarks_106
    assert (lm[:, 0] > x1 - 50).all() and (lm[:, 0] < x2 + 50).all()
    assert (lm[:, 1] > y1 - 50).all() and (lm[:, 1] < y2 + 50).all()


def test_dark_photo_has_no_face(analyzer):
    assert analyzer.detect(Image.new("RGB", (320, 240), DARK)) == []


def test_detection_falls_back_to_smaller_sizes(analyzer, monkeypatch):
    """The reference's 640 -> 512 -> 384 -> 256 order: stop at the first size that finds a face."""
    det = analyzer._load()["detection"]
    calls = []
    real = det.detect

    def detect(img, input_size=None, max_num=0, **kw):
        calls.append(input_size)
        if input_size[0] > 384:  # pretend the big sizes find nothing
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        return real(img, input_size=input_size, max_num=max_num, **kw)

    monkeypatch.setattr(det, "detect", detect)
    (face,) = analyzer.detect(face_photo())
    assert calls == [(640, 640), (512, 512), (384, 384)]
    assert face.box == pytest.approx((216, 96, 432, 392), abs=8)


def test_padding_retry_finds_a_face_touching_the_frame(border_analyzer):
    """A close-up whose face touches the border: missed at every size, found once padded."""
    close_up = face_photo((300, 360), faces=((-40, -30, 340, 400),))
    (face,) = border_analyzer.detect(close_up)
    x1, y1, x2, y2 = face.box
    assert x1 == pytest.approx(0, abs=8) and y1 == pytest.approx(0, abs=8)  # mapped back
    assert x2 == pytest.approx(300, abs=8) and y2 == pytest.approx(360, abs=8)
    assert (face.landmarks_106[:, 0].mean() - 150) ** 2 < 20**2
    # the photo itself, unpadded, really is missed by this detector
    bgr = np.ascontiguousarray(np.asarray(close_up)[:, :, ::-1])
    assert border_analyzer._detect_bgr(bgr, faces_mod.DETECT_SIZES) == []


def test_huge_photo_is_downscaled_and_results_mapped_back(analyzer, monkeypatch):
    small = analyzer.detect(face_photo())[0]
    monkeypatch.setattr(faces_mod, "MAX_DETECT_SIDE", 320)  # 640x480 now counts as huge
    seen = []
    real = analyzer._detect_bgr
    monkeypatch.setattr(
        analyzer, "_detect_bgr", lambda bgr, s: seen.append(bgr.shape) or real(bgr, s)
    )
    (big,) = analyzer.detect(face_photo())
    assert seen == [(240, 320, 3)]
    assert big.box == pytest.approx(small.box, abs=16)
    assert np.abs(big.landmarks_106 - small.landmarks_106).max() < 16
    assert np.abs(big.kps - small.kps).max() < 16


def test_embedding_is_normed_deterministic_and_face_dependent(analyzer):
    photo = face_photo()
    crop = photo.crop((100, 0, 540, 480))
    e1, e2 = analyzer.embedding(crop), analyzer.embedding(crop.copy())
    assert e1.shape == (512,) and e1.dtype == np.float32
    assert np.linalg.norm(e1) == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(e1, e2)
    other = face_photo(faces=((150, 60, 470, 420),)).crop((100, 0, 540, 480))
    assert float(e1 @ analyzer.embedding(other)) < 0.999


def test_embedding_without_a_face_uses_fallback_keypoints_or_raises(analyzer):
    dark = Image.new("RGB", (200, 200), DARK)
    with pytest.raises(NoFaceError, match="not found again"):
        analyzer.embedding(dark)
    kps = np.array([[70, 90], [130, 90], [100, 120], [75, 150], [125, 150]], np.float32)
    e = analyzer.embedding(dark, fallback_kps=kps)
    assert np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)


def _face(x1, y1, x2, y2, score) -> DetectedFace:
    return DetectedFace((x1, y1, x2, y2), score, np.zeros((106, 2), np.float32), np.zeros((5, 2)))


def test_choose_face_modes():
    faces = [_face(300, 0, 350, 50, 0.99), _face(0, 0, 200, 200, 0.7), _face(100, 0, 180, 90, 0.8)]
    assert choose_face(faces) == 1  # largest
    assert choose_face(faces, "best_score") == 0
    assert [choose_face(faces, "index", i) for i in range(3)] == [1, 2, 0]  # left to right
    for bad in (-1, 64, "²", 1.5, True):  # one range everywhere: 0..63
        with pytest.raises(ArgumentError, match="face_index"):
            choose_face(faces, "index", bad)
    with pytest.raises(NoFaceError, match=r"face number 3 .* only 3 face\(s\).* 0 to 2"):
        choose_face(faces, "index", 3)
    with pytest.raises(NoFaceError):
        choose_face([], "largest")
    with pytest.raises(ArgumentError, match="largest, index, best_score"):
        choose_face(faces, "biggest")


def test_two_faces_chosen_and_embedded(split_analyzer):
    two = face_photo(faces=((40, 100, 200, 300), (380, 140, 480, 260)))  # big left, small right
    faces = split_analyzer.detect(two)
    assert [f.score for f in faces] == pytest.approx([0.99, 0.95])  # insightface order
    left = faces[choose_face(faces, "largest")]
    right = faces[choose_face(faces, "best_score")]
    assert left.box[0] < 320 and right.box[0] >= 320 and right.score == pytest.approx(0.99)
    assert faces[choose_face(faces, "index", 1)].box == right.box
    with pytest.raises(NoFaceError):
        choose_face(faces, "index", 5)
    left_embedding, right_embedding = (face_embedding(split_analyzer, two, f) for f in faces[::-1])
    assert left_embedding.shape == right_embedding.shape == (512,)
    assert np.linalg.norm(left_embedding) == pytest.approx(1, abs=1e-5)
    assert not np.allclose(left_embedding, right_embedding)  # two different faces


def test_nested_pack_layout_and_root_forms(pack_root, tmp_path):
    nested = tmp_path / "insightface" / "models" / "antelopev2" / "antelopev2"
    shutil.copytree(pack_root / "models" / "antelopev2", nested)
    assert find_pack(tmp_path / "insightface") == nested
    assert find_pack(pack_root) == pack_root / "models" / "antelopev2"
    assert find_pack(pack_root / "models" / "antelopev2") == pack_root / "models" / "antelopev2"
    analyzer = FaceAnalyzer(tmp_path / "insightface", providers=CPU)
    assert not analyzer.loaded
    assert len(analyzer.detect(face_photo())) == 1
    assert analyzer.loaded
    analyzer.unload()
    assert not analyzer.loaded
    assert len(analyzer.detect(face_photo())) == 1  # loads again


def test_missing_pack_says_where_it_looked(tmp_path):
    analyzer = FaceAnalyzer(tmp_path / "nowhere", providers=CPU)
    with pytest.raises(ModelNotFoundError) as info:
        analyzer.detect(face_photo())
    msg = str(info.value)
    assert "antelopev2" in msg and str(tmp_path / "nowhere" / "models" / "antelopev2") in msg
    assert "unpack" in msg


def test_incomplete_pack_names_the_missing_model(pack_root, tmp_path):
    folder = tmp_path / "models" / "antelopev2"
    shutil.copytree(pack_root / "models" / "antelopev2", folder)
    (folder / "glintr100.onnx").unlink()
    with pytest.raises(ModelNotFoundError, match="recognition"):
        FaceAnalyzer(tmp_path, providers=CPU).detect(face_photo())


def test_broken_model_file_is_named(pack_root, tmp_path):
    folder = tmp_path / "models" / "antelopev2"
    shutil.copytree(pack_root / "models" / "antelopev2", folder)
    (folder / "2d106det.onnx").write_bytes(b"not onnx")
    with pytest.raises(CheckpointError, match=r"2d106det\.onnx could not be loaded"):
        FaceAnalyzer(tmp_path, providers=CPU).detect(face_photo())


def test_default_providers_prefer_cuda(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert default_providers() == ["CPUExecutionProvider"]
    monkeypatch.setattr(
        onnxruntime,
        "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    assert default_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_matches_insightface_face_analysis(pack_root, analyzer):
    """Same landmarks and embedding as insightface's own FaceAnalysis at det size 640."""
    import contextlib
    import io

    from insightface.app import FaceAnalysis

    with contextlib.redirect_stdout(io.StringIO()):
        app = FaceAnalysis(name="antelopev2", root=str(pack_root), providers=CPU)
        app.prepare(ctx_id=-1, det_size=(640, 640))
    photo = face_photo()
    ref = app.get(np.ascontiguousarray(np.asarray(photo)[:, :, ::-1]))[0]
    ours = analyzer.detect(photo)[0]
    assert np.array_equal(ours.landmarks_106, ref.landmark_2d_106.astype(np.float32))
    assert np.array_equal(ours.kps, ref.kps.astype(np.float32))
    crop = photo.crop((60, -40, 580, 480))
    ref_crop = app.get(np.ascontiguousarray(np.asarray(crop)[:, :, ::-1]))[0]
    assert np.allclose(analyzer.embedding(crop), ref_crop.normed_embedding, atol=1e-6)
