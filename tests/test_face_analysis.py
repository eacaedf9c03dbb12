"""Face analysis with the real insightface 0.7.3 and synthetic ONNX models: choice, policies, retries, plumbing."""
# ruff: noqa: F811  (pytest fixtures imported from face_fixtures are redefined as arguments)

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from face_fixtures import (  # noqa: F401  (pytest fixtures)
    blank_images,
    expected_keypoints,
    face_analyzer,
    face_pack_root,
    paint_face,
    painted_faces,
)

from instantid import face_analysis
from instantid.face_models import DetectedFace


def _box(record):
    return np.asarray(record.bbox, dtype=np.float64)


def test_one_face_box_keypoints_embedding(painted_faces):
    image, faces = painted_faces
    assert len(faces) == 1 and faces.missing_frames == []
    face = faces.frames[0]
    np.testing.assert_allclose(_box(face), [200, 150, 264, 230], atol=1.5)
    np.testing.assert_allclose(face.keypoints, expected_keypoints(200, 150, 64, 80), atol=1.5)
    assert face.score == pytest.approx(0.95, abs=0.01)
    assert face.embedding.shape == (512,) and face.embedding.dtype == np.float32
    assert abs(float(np.linalg.norm(face.embedding)) - 1.0) > 0.1, "must be the raw embedding, not normed"
    assert face.source_size == (512, 512)
    assert faces.model_pack == "antelopev2" and faces.notes == ()


def test_preview_has_boxes_and_keypoints(face_analyzer):
    image = paint_face(blank_images(), 200, 150, 64, 80)
    _, preview = face_analysis.analyze(image, face_analyzer)
    assert preview.shape == (1, 512, 512, 3) and preview.dtype == torch.float32
    pixels = (preview[0].numpy() * 255).round().astype(np.uint8)
    # the chosen face's box is green; keypoint 0 (left eye) is red
    assert (pixels[150, 210:250] == [0, 255, 0]).all(axis=-1).any()
    x, y = expected_keypoints(200, 150, 64, 80)[0].round().astype(int)
    assert tuple(pixels[y, x]) == (255, 0, 0)
    # far from the face nothing changed
    np.testing.assert_array_equal(pixels[480, 480], np.round(image[0, 480, 480].numpy() * 255).astype(np.uint8))


def _three_faces() -> torch.Tensor:
    image = blank_images(640, 640)
    paint_face(image, 40, 40, 100, 100, green=60)  # A: largest, score ~0.71, row 1 left
    paint_face(image, 400, 60, 60, 60, green=0)  # B: best score 0.95, row 1 right
    paint_face(image, 60, 400, 80, 80, green=30)  # C: row 2
    return image


@pytest.mark.parametrize(
    ("choice", "index", "expected_x1"),
    [("largest", 0, 40), ("score", 0, 400), ("index", 0, 40), ("index", 1, 400), ("index", 2, 60)],
)
def test_choice_rules(face_analyzer, choice, index, expected_x1):
    faces, _ = face_analysis.analyze(_three_faces(), face_analyzer, choice=choice, index=index)
    assert _box(faces.frames[0])[0] == pytest.approx(expected_x1, abs=1.5)


def test_index_past_the_last_face_follows_the_policy(face_analyzer):
    with pytest.raises(face_analysis.NoFaceFoundError, match="only 3 face"):
        face_analysis.analyze(_three_faces(), face_analyzer, choice="index", index=3)
    faces, _ = face_analysis.analyze(_three_faces(), face_analyzer, choice="index", index=3, policy="skip")
    assert faces.frames == (None,)


def _det(x1, y1, x2, y2, score=0.9):
    return DetectedFace(np.array([x1, y1, x2, y2], np.float32), np.zeros((5, 2), np.float32), score)


def test_reading_order_rows_then_left_to_right():
    a = _det(300, 110, 360, 170)  # lower than b, but its centre is within b's height: same row
    b = _det(100, 90, 160, 150)
    c = _det(50, 300, 110, 360)  # below everything: next row
    d = _det(500, 100, 520, 125)  # small face, same row
    e = _det(400, 175, 420, 195)  # centre below the row's extent: own row
    assert face_analysis.reading_order([c, a, e, d, b]) == [b, a, d, e, c]


@pytest.mark.parametrize("policy", ["skip", "pass_through"])
def test_no_face_policies_keep_the_slot(face_analyzer, policy):
    faces, preview = face_analysis.analyze(blank_images(), face_analyzer, policy=policy)
    assert faces.frames == (None,) and faces.no_face_policy == policy
    assert "frame 1" in faces.notes[0] and "no face" in faces.notes[0]
    assert preview.shape == (1, 512, 512, 3)


def test_no_face_error_names_the_frame_and_the_fix(face_analyzer):
    images = paint_face(blank_images(batch=3), 200, 150, 64, 80, frame=0)
    paint_face(images, 200, 150, 64, 80, frame=2)
    with pytest.raises(face_analysis.NoFaceFoundError) as err:
        face_analysis.analyze(images, face_analyzer, policy="error")
    message = str(err.value)
    assert "frame 2 of 3" in message and "no_face_policy" in message


def test_batch_with_a_missing_face_in_the_middle_stays_aligned(face_analyzer):
    images = paint_face(blank_images(batch=3), 200, 150, 64, 80, frame=0)
    paint_face(images, 100, 300, 64, 80, frame=2)
    faces, preview = face_analysis.analyze(images, face_analyzer, policy="skip", weights="1, 0.5, 2")
    assert len(faces) == 3 and faces.missing_frames == [1]
    assert _box(faces.frames[2])[:2] == pytest.approx([100, 300], abs=1.5)
    assert faces.weights == (1.0, 0.5, 2.0)
    assert any("frame 2" in n for n in faces.notes)
    assert preview.shape[0] == 3


def test_tight_face_found_at_a_smaller_detection_size(face_analyzer):
    image = paint_face(blank_images(640, 640), 200, 200, 150, 150)  # too big for the detector at 640
    # insightface 0.7.3 leaves a dynamic detector's input_size None, 2.x sets a default: compare with what it was.
    detector_state = (face_analyzer.detector.input_size, getattr(face_analyzer.detector, "input_sizes", None))
    assert face_analyzer.detect(face_analysis.rgb_to_bgr(face_analysis.image_to_rgb_uint8(image[0]))) == []
    faces, _ = face_analysis.analyze(image, face_analyzer)
    np.testing.assert_allclose(_box(faces.frames[0]), [200, 200, 350, 350], atol=2.5)
    assert faces.notes == ("frame 1: found at detection size 448",)
    assert face_analyzer.det_size == 640, "shared state untouched"
    assert (face_analyzer.detector.input_size, getattr(face_analyzer.detector, "input_sizes", None)) == detector_state


def test_face_filling_the_frame_found_with_padding(face_analyzer):
    image = paint_face(blank_images(512, 512), 0, 0, 512, 512)
    faces, _ = face_analysis.analyze(image, face_analyzer)
    np.testing.assert_allclose(_box(faces.frames[0]), [0, 0, 512, 512], atol=4)
    np.testing.assert_allclose(faces.frames[0].keypoints, expected_keypoints(0, 0, 512, 512), atol=4)
    assert "padding" in faces.notes[0]


def test_rgba_gives_the_same_result_as_rgb(face_analyzer):
    rgb = paint_face(blank_images(), 200, 150, 64, 80)
    rgba = torch.cat([rgb, torch.rand(1, 512, 512, 1)], dim=-1)
    faces_rgb, prev_rgb = face_analysis.analyze(rgb, face_analyzer)
    faces_rgba, prev_rgba = face_analysis.analyze(rgba, face_analyzer)
    np.testing.assert_array_equal(faces_rgb.frames[0].embedding, faces_rgba.frames[0].embedding)
    assert prev_rgba.shape == (1, 512, 512, 3)
    torch.testing.assert_close(prev_rgb, prev_rgba)


def test_grayscale_is_read_as_three_equal_channels(face_analyzer):
    gray = torch.linspace(0, 1, 64 * 48).reshape(1, 48, 64, 1)
    rgb = face_analysis.image_to_rgb_uint8(gray[0])
    assert rgb.shape == (48, 64, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    faces, preview = face_analysis.analyze(gray, face_analyzer, policy="skip")
    assert faces.frames == (None,) and preview.shape == (1, 48, 64, 3)


def test_real_photo_plumbing_rgb_float_to_bgr_uint8(face_analyzer):
    """skimage's astronaut through the image plumbing: exact pixels, channel order, sizes, preview."""
    from skimage import data

    photo = data.astronaut()  # RGB uint8 [512,512,3]
    image = torch.from_numpy(photo.astype(np.float32) / 255.0)[None]
    np.testing.assert_array_equal(face_analysis.image_to_rgb_uint8(image[0]), photo)
    bgr = face_analysis.rgb_to_bgr(face_analysis.image_to_rgb_uint8(image[0]))
    np.testing.assert_array_equal(bgr, photo[..., ::-1])
    # A painted face whose red and blue differ: its embedding tells whether the analyzer saw BGR.
    paint_face(image, 300, 40, 64, 80, red=255, blue=210)
    faces, preview = face_analysis.analyze(image, face_analyzer)
    face = faces.frames[0]
    assert face.source_size == (512, 512)
    painted = face_analysis.image_to_rgb_uint8(image[0])
    right = face_analyzer.embed(face_analysis.rgb_to_bgr(painted), face.keypoints)
    wrong = face_analyzer.embed(np.ascontiguousarray(painted), face.keypoints)
    np.testing.assert_array_equal(face.embedding, right)
    assert not np.allclose(face.embedding, wrong)
    assert preview.shape == (1, 512, 512, 3)
    untouched = (preview[0, 500, 10].numpy() * 255).round()
    np.testing.assert_array_equal(untouched, photo[500, 10])


def test_weights_parsing():
    assert face_analysis.parse_weights("", 2) is None
    assert face_analysis.parse_weights(" 1, 0.25 ", 2) == (1.0, 0.25)
    with pytest.raises(ValueError, match="one weight per image"):
        face_analysis.parse_weights("1", 2)
    with pytest.raises(ValueError, match="numbers"):
        face_analysis.parse_weights("a, b", 2)


def test_threads_detecting_at_different_sizes_do_not_interfere(face_analyzer):
    small = face_analysis.rgb_to_bgr(face_analysis.image_to_rgb_uint8(paint_face(blank_images(), 200, 150, 64, 80)[0]))
    sizes = [640, 320, 448, 640, 320, 448] * 3
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda s: face_analyzer.detect(small, s), sizes))
    for found in results:
        assert len(found) == 1
        np.testing.assert_allclose(found[0].bbox, [200, 150, 264, 230], atol=2.5)


def test_one_detector_and_one_recognizer_run_per_face(face_analyzer, monkeypatch):
    counts = {"detector": 0, "recognizer": 0}
    for name in counts:
        session = getattr(face_analyzer, name).session
        original = session.run

        def counting(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(session, "run", counting)
    images = paint_face(blank_images(batch=4), 200, 150, 64, 80, frame=0)
    for frame in range(1, 4):
        paint_face(images, 200, 150, 64, 80, frame=frame)
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        face_analysis.analyze(images, face_analyzer)
        seconds.append((time.perf_counter() - start) / 4)
    assert counts == {"detector": 12, "recognizer": 12}
    assert statistics.median(seconds) < 1.0
