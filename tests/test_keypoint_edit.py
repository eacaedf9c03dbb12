"""Edited keypoints: the editor value's checks, its drawing, and rotate/scale/translate/mirror on FACES.

Expectations come from the spec (section 3 drawing, re-implemented in test_face_keypoints.spec_hint), from
OpenCV's own rotation matrix, or are worked out by hand here.
"""

from __future__ import annotations

import json
import math
import random

import cv2
import numpy as np
import pytest
import torch
from test_face_keypoints import spec_hint

from instantid import keypoint_edit as ke
from instantid.faces import FaceRecord, Faces

FACE = [[0.42, 0.40], [0.58, 0.40], [0.50, 0.50], [0.44, 0.60], [0.56, 0.60]]


def _value(*faces) -> str:
    return json.dumps({"faces": [list(f) for f in faces]})


def _record(kps, bbox=(100, 80, 180, 200), source=(400, 300), embedding_seed=0) -> FaceRecord:
    emb = np.random.default_rng(embedding_seed).normal(size=512).astype(np.float32)
    return FaceRecord(np.array(bbox, np.float32), np.array(kps, np.float32), emb, 0.9, source)


# ---------------------------------------------------------------- the editor value


def test_a_valid_value_parses_to_the_points():
    points = ke.parse_edited_keypoints(_value(FACE, [[0.0, 0.0], [1.0, 1.0], [0.5, 0.5], [0, 1], [1, 0]]))
    assert points.shape == (2, 5, 2) and points.dtype == np.float64
    np.testing.assert_array_equal(points[0], FACE)
    assert points[1, 3].tolist() == [0.0, 1.0]  # integers and the 0/1 edges are fine


def test_the_default_is_valid_and_a_frontal_face():
    points = ke.parse_edited_keypoints(ke.default_value())[0]
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = points
    assert lx < nx < rx and mlx < nx < mrx  # image-left points left of the nose
    assert max(ly, ry) < ny < min(mly, mry)  # eyes above the nose above the mouth
    assert abs(ly - ry) < 0.01 and abs((lx + rx) / 2 - 0.5) < 0.01  # level and centred


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"faces": [FACE]}, "send the value as a string"),
        ("{faces: []}", "not valid JSON"),
        ("[1, 2]", "object with a 'faces' list"),
        (json.dumps({"face": [FACE]}), "object with a 'faces' list"),
        (json.dumps({"faces": [FACE], "colour": "red"}), "unknown field"),
        (json.dumps({"faces": []}), "has 0 faces; 1 to 16"),
        (json.dumps({"faces": [FACE] * 17}), "has 17 faces; 1 to 16"),
        (json.dumps({"faces": [FACE[:4]]}), "face 1 has 4 points; each face needs exactly 5"),
        (json.dumps({"faces": [FACE, "nose"]}), "face 2 has no points"),
        (json.dumps({"faces": [[*FACE[:2], [0.5], *FACE[3:]]]}), "face 1 point 3 (nose tip) is [0.5]; expected [x, y]"),
        (json.dumps({"faces": [[*FACE[:2], ["0.5", 0.5], *FACE[3:]]]}), "point 3 (nose tip) x is '0.5', not a number"),
        (json.dumps({"faces": [[*FACE[:2], [True, 0.5], *FACE[3:]]]}), "x is True, not a number"),
        ('{"faces": [[[0.4, 0.4], [0.6, 0.4], [NaN, 0.5], [0.4, 0.6], [0.6, 0.6]]]}', "x is nan; coordinates must be finite"),
        ('{"faces": [[[0.4, 0.4], [0.6, 0.4], [0.5, Infinity], [0.4, 0.6], [0.6, 0.6]]]}', "y is inf"),
        (json.dumps({"faces": [FACE, [*FACE[:4], [1.2, 0.6]]]}), "face 2 point 5 (right mouth corner) x is 1.2, outside 0..1"),
        (json.dumps({"faces": [[[-0.01, 0.4], *FACE[1:]]]}), "face 1 point 1 (left eye) x is -0.01, outside 0..1"),
    ],
)
def test_bad_values_are_refused_with_what_and_where(value, message):
    with pytest.raises(ke.KeypointValueError) as err:
        ke.parse_edited_keypoints(value)
    assert message in str(err.value)


def test_format_round_trips_and_rounds_to_six_decimals():
    points = np.array([FACE]) + 1.23456789e-7
    text = ke.format_edited_keypoints(points)
    assert json.loads(text)["faces"][0][0] == [0.42, 0.4]
    np.testing.assert_allclose(ke.parse_edited_keypoints(text), points, atol=5e-7)


def test_hint_style_is_spec_section_3():
    style = ke.hint_style()
    assert style["colours"] == [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255]]
    assert style["limbs"] == [[0, 2], [1, 2], [3, 2], [4, 2]]
    assert (style["stick_width"], style["point_radius"], style["limb_dim"]) == (4, 10, 0.6)
    assert style["mirror_order"] == [1, 0, 2, 4, 3]
    json.dumps(style)  # goes to the page as JSON


# ---------------------------------------------------------------- drawing


@pytest.mark.parametrize(("width", "height"), [(1016, 1016), (832, 1216), (333, 200)])
def test_one_edited_face_is_drawn_as_the_spec_says(width, height):
    points = np.array([FACE])
    np.testing.assert_array_equal(ke.draw_edited(points, width, height), spec_hint(points[0] * [width, height], width, height))


def test_several_faces_combine_by_the_per_pixel_maximum():
    a = np.array(FACE)
    b = a * [0.5, 1.0] + [0.45, -0.1]  # overlaps a on purpose
    ours = ke.draw_edited(np.stack([a, b]), 400, 300)
    expected = np.maximum(spec_hint(a * [400, 300], 400, 300), spec_hint(b * [400, 300], 400, 300))
    np.testing.assert_array_equal(ours, expected)


def test_input_faces_are_normalised_as_cover_places_them():
    rec = _record([[120, 100], [160, 100], [140, 130], [125, 160], [155, 160]], source=(400, 300))
    faces = Faces(frames=(rec, None, _record([[0, 0], [399, 0], [200, 150], [0, 299], [399, 299]], source=(400, 300))))
    out = ke.normalised_faces(faces, 600, 600)  # cover: scale 2, 100 px cropped on each side
    assert len(out) == 2  # the empty frame is not a face
    expected = [[(x * 2 - 100) / 600, (y * 2) / 600] for x, y in rec.keypoints]
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    assert out[1][0] == [0.0, 0.0] and out[1][1][0] == 1.0  # cropped away: on the edge, never outside 0..1


# ---------------------------------------------------------------- transforms


def _cv2_similarity(points, pivot, degrees, scale):
    m = cv2.getRotationMatrix2D((float(pivot[0]), float(pivot[1])), degrees, scale)
    return np.asarray(points) @ m[:, :2].T + m[:, 2]


@pytest.mark.parametrize(("degrees", "scale"), [(30.0, 1.0), (-75.5, 1.7), (180.0, 0.4)])
def test_rotate_and_scale_match_opencv(degrees, scale):
    kps = np.array([[120, 100], [160, 104], [140, 130], [125, 160], [155, 161]], np.float64)
    rec = _record(kps)
    out = ke.transform_record(rec, rotate=degrees, scale=scale)
    np.testing.assert_allclose(out.keypoints, _cv2_similarity(kps, kps.mean(axis=0), degrees, scale), atol=1e-4)
    np.testing.assert_array_equal(out.embedding, rec.embedding)
    assert out.source_size == rec.source_size and out.score == rec.score


def test_positive_rotation_turns_counter_clockwise_on_screen():
    rec = _record([[100, 100], [140, 100], [120, 120], [105, 140], [135, 140]])
    out = ke.transform_record(rec, rotate=90)
    # The eye line points right (+40, 0); a quarter turn counter-clockwise on screen makes it point up (y down).
    np.testing.assert_allclose(out.keypoints[1] - out.keypoints[0], [0, -40], atol=1e-4)


def test_translate_is_a_fraction_of_the_source_image():
    rec = _record([[100, 100], [140, 100], [120, 120], [105, 140], [135, 140]], bbox=(90, 80, 150, 160), source=(400, 300))
    out = ke.transform_record(rec, translate_x=0.25, translate_y=-0.1)
    np.testing.assert_allclose(out.keypoints, rec.keypoints + [100, -30], atol=1e-5)
    np.testing.assert_allclose(out.bbox, [190, 50, 250, 130], atol=1e-5)


def test_mirror_flips_about_the_face_centre_and_swaps_left_and_right():
    kps = [[100, 100], [150, 110], [130, 130], [105, 150], [140, 155]]  # centre x = 125, y = 129
    rec = _record(kps, bbox=(90, 80, 170, 170))
    out = ke.transform_record(rec, mirror=True)
    # By hand: x -> 250 - x, then labels 0<->1 and 3<->4 swap so point 0 is again the image-left eye.
    expected = [[100, 110], [150, 100], [120, 130], [110, 155], [145, 150]]
    np.testing.assert_allclose(out.keypoints, expected, atol=1e-5)
    np.testing.assert_allclose(out.bbox, [80, 80, 160, 170], atol=1e-5)  # box centre 130 -> 120, size kept
    assert out.keypoints[0][0] < out.keypoints[1][0]


def test_scaled_box_keeps_its_centre_relative_to_the_face():
    rec = _record([[100, 100], [140, 100], [120, 120], [105, 140], [135, 140]], bbox=(80, 70, 160, 170))
    out = ke.transform_record(rec, scale=2.0)  # pivot (120, 120); box centre (120, 120) stays, size doubles
    np.testing.assert_allclose(out.bbox, [40, 20, 200, 220], atol=1e-5)


def _roll(record) -> float:
    (lx, ly), (rx, ry) = record.keypoints[0], record.keypoints[1]
    return math.degrees(math.atan2(-(ry - ly), rx - lx))  # counter-clockwise on screen is positive


def test_seeded_variations_are_reproducible_bounded_and_leave_global_rng_alone():
    base = _record([[100, 100], [140, 100], [120, 120], [105, 140], [135, 140]])
    faces = Faces(frames=(base, None), weights=(1.0, 0.5))
    np.random.seed(3)
    random.seed(3)
    torch.manual_seed(3)
    states = (np.random.get_state()[1].copy(), random.getstate(), torch.get_rng_state())
    out = ke.transform_faces(faces, copies=4, seed=7, random_rotate=20, random_scale=0.2, random_translate=0.1)
    assert np.array_equal(np.random.get_state()[1], states[0]) and random.getstate() == states[1]
    assert torch.equal(torch.get_rng_state(), states[2])
    assert len(out) == 8 and out.frames[4:] == (None,) * 4 and out.weights == (1.0,) * 4 + (0.5,) * 4
    rolls = [_roll(r) for r in out.frames[:4]]
    assert all(abs(r) <= 20 + 1e-3 for r in rolls) and len({round(r, 3) for r in rolls}) == 4
    for r in out.frames[:4]:
        size = np.linalg.norm(r.keypoints[1] - r.keypoints[0]) / 40
        assert 0.8 - 1e-6 <= size <= 1.2 + 1e-6
        shift = r.keypoints.mean(axis=0) - base.keypoints.mean(axis=0)
        assert abs(shift[0]) <= 40 + 1e-3 and abs(shift[1]) <= 30 + 1e-3  # 0.1 of 400 x 300
    again = ke.transform_faces(faces, copies=4, seed=7, random_rotate=20, random_scale=0.2, random_translate=0.1)
    assert all(np.array_equal(a.keypoints, b.keypoints) for a, b in zip(out.frames[:4], again.frames[:4], strict=True))
    # Frame k's variation does not depend on how many copies are made.
    fewer = ke.transform_faces(Faces(frames=(base,)), copies=2, seed=7, random_rotate=20, random_scale=0.2, random_translate=0.1)
    assert all(np.array_equal(a.keypoints, b.keypoints) for a, b in zip(out.frames[:2], fewer.frames, strict=True))
    other = ke.transform_faces(faces, copies=4, seed=8, random_rotate=20, random_scale=0.2, random_translate=0.1)
    assert not np.allclose(other.frames[0].keypoints, out.frames[0].keypoints)


def test_no_random_amount_gives_identical_copies_of_the_fixed_transform():
    base = _record([[100, 100], [140, 100], [120, 120], [105, 140], [135, 140]])
    out = ke.transform_faces(Faces(frames=(base,)), rotate=10, copies=3, seed=5)
    expected = _cv2_similarity(base.keypoints, base.keypoints.mean(axis=0), 10, 1.0)
    for record in out.frames:
        np.testing.assert_allclose(record.keypoints, expected, atol=1e-4)
    assert "rotate 10 deg" in out.notes[-1]
