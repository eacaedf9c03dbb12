"""Keypoint sequences: frames without a face filled, jitter smoothed, frame order kept.

Jitter here is measured by the test's own code (RMS of the second difference of the keypoint positions over
consecutive frames, in pixels); the smoother is checked against numpy.polyfit doing the same weighted fit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from instantid import keypoint_sequence as ks
from instantid.faces import FaceRecord, Faces

TEMPLATE = np.array([[-20, -12], [20, -12], [0, 5], [-15, 22], [15, 22]], np.float64)
SOURCE = (640, 480)
MISSING = (0, 1, 17, 18, 19, 33, 59)
FRAMES = 60
NOISE = 2.0  # px, detector jitter of each coordinate


def truth(i: int) -> np.ndarray:
    """A face panning right 3 px/frame, bobbing 20 px and rolling +-10 degrees: smooth, known motion."""
    angle = math.radians(10 * math.sin(2 * math.pi * i / 60))
    rot = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    return TEMPLATE @ rot.T + [150 + 3 * i, 240 + 20 * math.sin(2 * math.pi * i / 40)]


def _record(kps: np.ndarray, i: int) -> FaceRecord:
    lo, hi = kps.min(axis=0) - 10, kps.max(axis=0) + 10
    emb = np.full(512, float(i), np.float32)  # tells which frame a record came from
    return FaceRecord(np.concatenate([lo, hi]).astype(np.float32), kps.astype(np.float32), emb, 0.9, SOURCE)


def shaky_faces(seed: int = 0, missing=MISSING) -> tuple[Faces, np.ndarray]:
    rng = np.random.default_rng(seed)
    exact = np.stack([truth(i) for i in range(FRAMES)])
    noisy = exact + rng.normal(0, NOISE, exact.shape)
    frames = tuple(None if i in missing else _record(noisy[i], i) for i in range(FRAMES))
    return Faces(frames=frames, no_face_policy="skip"), exact


def rms_second_difference(track: np.ndarray) -> float:
    """Independent jitter measure: track [N,5,2] with NaN frames; only triples of present frames count."""
    flat = track.reshape(len(track), -1)
    triples = [flat[i - 1] - 2 * flat[i] + flat[i + 1] for i in range(1, len(flat) - 1)]
    triples = [t for t in triples if np.isfinite(t).all()]
    return float(np.sqrt(np.mean(np.square(triples))))


def _points(faces: Faces) -> np.ndarray:
    return np.stack([np.full((5, 2), np.nan) if r is None else r.keypoints.astype(np.float64) for r in faces.frames])


def test_smoothing_removes_jitter_and_keeps_every_frame_in_order(capsys):
    faces, exact = shaky_faces()
    out = ks.sequence_faces(faces, sigma=1.5, fill_missing=True)
    assert len(out) == FRAMES and all(r is not None for r in out.frames)
    raw, smooth = _points(faces), _points(out)
    before, after = rms_second_difference(raw), rms_second_difference(smooth)
    present = [i for i in range(FRAMES) if i not in MISSING]
    error_before = float(np.sqrt(np.mean((raw[present] - exact[present]) ** 2)))
    error_after = float(np.sqrt(np.mean((smooth[present] - exact[present]) ** 2)))
    error_all = float(np.sqrt(np.mean((smooth - exact) ** 2)))
    truth_jitter = rms_second_difference(exact)
    with capsys.disabled():
        print(f"\njitter (RMS 2nd difference, px): noisy {before:.3f} -> smoothed {after:.3f} (true motion {truth_jitter:.3f}); "
              f"RMS error to truth on detected frames: {error_before:.3f} -> {error_after:.3f} px; "
              f"all {FRAMES} frames incl. {len(MISSING)} filled: {error_all:.3f} px")
    assert after < before / 4
    assert error_after < 0.6 * error_before
    # Frame i is frame i: the face pans 3 px per frame, so its centre must move right from each frame to the next
    # (frames 0-1 and 59 lie outside the first/last face and are held, so equal there), and every frame between
    # the first and the last face, filled ones included, sits on its own frame's true position.
    centre_x = smooth[:, :, 0].mean(axis=1)
    assert np.all(np.diff(centre_x[2:59]) > 1.0), np.diff(centre_x).round(2)
    assert np.all(np.diff(centre_x) >= -1e-3)
    per_frame = np.sqrt(((smooth - exact) ** 2).sum(axis=2).mean(axis=1))
    assert per_frame[2:59].max() < 3.0, per_frame.round(2)  # raw detections: 2.8 px RMS
    assert "jitter" in out.notes[-1] and "filled" in out.notes[-2]


def test_filling_interpolates_between_neighbours_and_holds_at_the_ends():
    faces, _ = shaky_faces()
    out = ks.sequence_faces(faces, sigma=0.0, fill_missing=True)
    k = {i: r.keypoints.astype(np.float64) for i, r in enumerate(faces.frames) if r is not None}
    got = _points(out)
    np.testing.assert_allclose(got[0], k[2], atol=1e-4)  # before the first face: held
    np.testing.assert_allclose(got[1], k[2], atol=1e-4)
    np.testing.assert_allclose(got[59], k[58], atol=1e-4)  # after the last: held
    for j, frac in ((17, 0.25), (18, 0.5), (19, 0.75)):
        np.testing.assert_allclose(got[j], k[16] + frac * (k[20] - k[16]), atol=1e-4)
    np.testing.assert_allclose(got[33], (k[32] + k[34]) / 2, atol=1e-4)
    for i in k:  # frames with a face are untouched without smoothing
        np.testing.assert_allclose(got[i], k[i], atol=1e-5)
    # A filled frame borrows the nearer neighbour's embedding; the earlier one on a tie.
    assert [float(out.frames[j].embedding[0]) for j in (0, 17, 18, 19, 33, 59)] == [2, 16, 16, 20, 32, 58]


def test_without_filling_empty_frames_stay_empty_and_in_place():
    faces, _ = shaky_faces()
    out = ks.sequence_faces(faces, sigma=1.5, fill_missing=False)
    assert len(out) == FRAMES
    assert [i for i, r in enumerate(out.frames) if r is None] == list(MISSING)
    assert all(float(r.embedding[0]) == i for i, r in enumerate(out.frames) if r is not None)


def _reference_fit(values: np.ndarray, present: np.ndarray, sigma: float) -> np.ndarray:
    """The same Gaussian-weighted straight-line fit, done by numpy.polyfit."""
    out = values.copy()
    idx = np.flatnonzero(present)
    for i in idx:
        near = idx[np.abs(idx - i) <= math.ceil(3 * sigma)]
        d = (near - i).astype(np.float64)
        w = np.exp(-(d ** 2) / (2 * sigma ** 2))
        for c in range(values.shape[1]):
            out[i, c] = np.polyval(np.polyfit(d, values[near, c], 1, w=np.sqrt(w)), 0.0)
    return out


@pytest.mark.parametrize("sigma", [0.7, 1.5, 3.0])
def test_smoother_is_the_gaussian_weighted_line_fit(sigma):
    rng = np.random.default_rng(int(sigma * 10))
    values = rng.normal(size=(40, 3)).cumsum(axis=0)
    present = rng.uniform(size=40) > 0.25
    present[[0, 39]] = True
    np.testing.assert_allclose(ks.smooth_track(values, present, sigma)[present], _reference_fit(values, present, sigma)[present],
                               atol=1e-9)


def test_steady_motion_passes_unchanged_up_to_the_last_frame():
    frames = np.arange(30, dtype=np.float64)
    values = np.stack([5 + 2.5 * frames, 100 - 0.5 * frames], axis=1)  # constant speed: nothing to smooth
    np.testing.assert_allclose(ks.smooth_track(values, np.ones(30, bool), 2.0), values, atol=1e-9)


def test_jitter_measure_agrees_with_the_tests_own():
    faces, exact = shaky_faces(seed=4)
    raw = _points(faces)
    assert ks.jitter(raw) == pytest.approx(rms_second_difference(raw), rel=1e-12)
    assert ks.jitter(exact) == pytest.approx(rms_second_difference(exact), rel=1e-12)


def test_no_face_at_all_and_mixed_sources():
    empty = Faces(frames=(None, None))
    assert ks.sequence_faces(empty, sigma=2.0) is empty
    faces, _ = shaky_faces()
    odd = faces.frames[2].__class__(faces.frames[2].bbox, faces.frames[2].keypoints, faces.frames[2].embedding, 0.9, (320, 240))
    mixed = Faces(frames=(*faces.frames[:3], odd))
    with pytest.raises(ValueError, match="images of different sizes"):
        ks.sequence_faces(mixed, sigma=1.0)
