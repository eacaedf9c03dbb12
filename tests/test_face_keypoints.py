"""Keypoint images against an independent implementation of spec section 3, and keypoint placement."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from instantid import keypoints
from instantid.faces import FaceRecord, Faces

SPEC_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]


def spec_hint(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Spec section 3 written out again from its text, on a float canvas as the reference keeps it."""
    out = np.zeros((height, width, 3), dtype=np.float64)
    nose = points[2]
    for limb_point in (0, 1, 3, 4):  # limbs (0,2), (1,2), (3,2), (4,2) in that order
        p = points[limb_point]
        dx, dy = p[0] - nose[0], p[1] - nose[1]
        semi_major = int(math.sqrt(dx * dx + dy * dy) / 2)
        rotation = int(math.degrees(math.atan2(dy, dx)))
        centre = (int(np.mean([p[0], nose[0]])), int(np.mean([p[1], nose[1]])))
        outline = cv2.ellipse2Poly(centre, (semi_major, 4), rotation, 0, 360, 1)
        out = cv2.fillConvexPoly(out.copy(), outline, SPEC_COLOURS[limb_point])
    out = np.trunc(out * 0.6).astype(np.uint8)
    for i in range(5):
        out = cv2.circle(out.copy(), (int(points[i][0]), int(points[i][1])), 10, SPEC_COLOURS[i], -1)
    return out


def _random_face(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
    s = rng.uniform(30, 200)
    base = np.array([[-0.4, -0.3], [0.4, -0.3], [0.0, 0.1], [-0.3, 0.45], [0.3, 0.45]])
    angle = rng.uniform(-0.6, 0.6)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return (base @ rot.T) * s + [cx, cy] + rng.normal(0, 3, (5, 2))


@pytest.mark.parametrize(("width", "height"), [(1024, 1024), (832, 1216), (1216, 832), (513, 300)])
def test_draw_matches_the_spec_pixel_for_pixel(width, height):
    rng = np.random.default_rng(width * 7 + height)
    for _ in range(6):
        points = _random_face(rng, width, height)
        ours = keypoints.draw_keypoints(points, width, height)
        assert ours.dtype == np.uint8 and ours.shape == (height, width, 3)
        np.testing.assert_array_equal(ours, spec_hint(points, width, height))


def test_points_at_and_beyond_the_edges():
    points = np.array([[-5.0, 3.0], [60.0, -8.0], [20.0, 20.0], [-30.0, 70.0], [130.5, 99.9]])
    np.testing.assert_array_equal(keypoints.draw_keypoints(points, 128, 100), spec_hint(points, 128, 100))


def test_colours_and_dimmed_limbs():
    points = np.array([[100.0, 100.0], [300.0, 100.0], [200.0, 200.0], [120.0, 320.0], [280.0, 320.0]])
    img = keypoints.draw_keypoints(points, 400, 400)
    for (x, y), colour in zip(points.astype(int), SPEC_COLOURS, strict=True):
        assert tuple(img[y, x]) == colour
    assert tuple(img[150, 150]) == (153, 0, 0)  # middle of limb 0-2: red x 0.6, truncated
    assert tuple(img[150, 250]) == (0, 153, 0)
    assert tuple(img[5, 5]) == (0, 0, 0)
    assert tuple(img[100, 115]) == (0, 0, 0)  # radius 10 does not reach 15 px away along the row


def _record(source=(512, 512), bbox=(200, 150, 264, 230)) -> FaceRecord:
    pts = np.array([[219.2, 180.4], [244.8, 180.4], [232, 196.4], [222.4, 212.4], [241.6, 212.4]], np.float32)
    return FaceRecord(np.array(bbox, np.float32), pts, np.zeros(512, np.float32), 0.9, source)


def test_cover_is_a_plain_resize_when_aspects_match():
    rec = _record()
    np.testing.assert_allclose(keypoints.place_keypoints(rec, 1024, 1024, "cover"), rec.keypoints * 2, rtol=1e-6)


def test_cover_and_contain_with_another_aspect():
    rec = _record()
    cover = keypoints.place_keypoints(rec, 1024, 768, "cover")  # scale 2, 256 px cropped off top and bottom in total
    np.testing.assert_allclose(cover, rec.keypoints * 2 + [0, -128], rtol=1e-6)
    contain = keypoints.place_keypoints(rec, 1024, 768, "contain")  # scale 1.5, centred horizontally
    np.testing.assert_allclose(contain, rec.keypoints * 1.5 + [128, 0], rtol=1e-6)


def test_box_fits_the_face_keeping_its_aspect():
    rec = _record()  # face 64 x 80
    placed = keypoints.place_keypoints(rec, 1000, 1000, "box", (0.1, 0.2, 0.4, 0.4))  # 400 x 400 box at (100, 200)
    scale = 400 / 80
    expected = (rec.keypoints - [200, 150]) * scale + [100 + (400 - 64 * scale) / 2, 200]
    np.testing.assert_allclose(placed, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="needs a box"):
        keypoints.place_keypoints(rec, 100, 100, "box")


def test_keypoint_images_one_per_frame_black_when_no_face():
    rec = _record()
    images = keypoints.keypoint_images(Faces(frames=(rec, None)), 640, 480)
    assert images.shape == (2, 480, 640, 3) and images.dtype == torch.float32
    assert float(images[1].abs().sum()) == 0.0
    expected = keypoints.draw_keypoints(keypoints.place_keypoints(rec, 640, 480), 640, 480)
    np.testing.assert_array_equal((images[0].numpy() * 255).round().astype(np.uint8), expected)
