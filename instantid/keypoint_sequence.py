"""Keypoint tracks of video frames: fill frames without a face, smooth the jitter, measure it.

A FACES value from a batch of video frames has one slot per frame (``None``
where no face was found). Frame order is never changed and no frame is
dropped: output frame i always belongs to input frame i.

Filling (``fill_missing``): a frame without a face between two frames with
one gets the linear interpolation in time of their (smoothed) keypoints and
boxes; frames before the first face or after the last one copy the nearest
face (hold: extrapolating a motion past the clip's data could throw the face
off the canvas). The filled record borrows the embedding, score and source
size of the nearer neighbour (the earlier one on a tie).

Smoothing (``smooth_track``): every coordinate is replaced by a centred,
Gaussian-weighted local linear fit over the neighbouring frames (weights
``exp(-d^2 / 2 sigma^2)`` for ``|d| <= ceil(3 sigma)`` frames, a straight line
fitted by weighted least squares, read at the frame itself). Why this filter:
the whole clip is available, so a centred (zero-phase) filter adds no lag,
unlike the causal One-Euro filter made for live input; inside the clip it is
exactly a Gaussian blur of the track, and the local line keeps steady motion
unbiased at the first and last frames too, where a plain truncated Gaussian
would pull the face towards the middle of the clip. One parameter, sigma, in
frames. Only frames with a detected face enter the fit (smoothing runs
before filling), so filled frames never bias their neighbours.

Jitter (``jitter``): the RMS of the second difference of the keypoint
positions over consecutive frame triples, in pixels; a face moving at
constant speed has none.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .faces import NUM_KEYPOINTS, FaceRecord, Faces


def _track(faces: Faces) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame keypoints + box as float64 ``[N, 14]`` (NaN rows where no face) and the presence mask ``[N]``."""
    values = np.full((len(faces), NUM_KEYPOINTS * 2 + 4), np.nan)
    present = np.zeros(len(faces), dtype=bool)
    for i, record in enumerate(faces.frames):
        if record is not None:
            values[i] = np.concatenate([np.asarray(record.keypoints, np.float64).ravel(), np.asarray(record.bbox, np.float64)])
            present[i] = True
    return values, present


def fill_track(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Rows of ``values`` ``[N, D]`` not ``present`` interpolated linearly in time; ends hold the nearest row."""
    idx = np.flatnonzero(present)
    if idx.size == 0:
        raise ValueError("no frame has a face: nothing to fill from.")
    frames = np.arange(len(values))
    # np.interp holds the end values outside [first, last] found frame.
    return np.stack([np.interp(frames, idx, values[idx, d]) for d in range(values.shape[1])], axis=1)


def smooth_track(values: np.ndarray, present: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted local linear fit of each column of ``values`` ``[N, D]``, read at each present row.

    Only present rows are used and returned smoothed; other rows are returned unchanged.
    """
    out = values.copy()
    if sigma <= 0:
        return out
    reach = int(math.ceil(3 * sigma))
    idx = np.flatnonzero(present)
    for i in idx:
        near = idx[np.abs(idx - i) <= reach]
        d = (near - i).astype(np.float64)
        w = np.exp(-(d * d) / (2 * sigma * sigma))
        s0, s1, s2 = w.sum(), (w * d).sum(), (w * d * d).sum()
        y = values[near]
        t0, t1 = (w[:, None] * y).sum(axis=0), (w[:, None] * d[:, None] * y).sum(axis=0)
        det = s0 * s2 - s1 * s1
        # One usable neighbour (or all on one side at one distance): the line is undetermined; use the weighted mean.
        out[i] = (s2 * t0 - s1 * t1) / det if det > 1e-9 * s0 * s0 else t0 / s0
    return out


def jitter(points: np.ndarray) -> float:
    """RMS second difference (pixels) of a keypoint track ``[N, K, 2]`` (NaN frames skip their triples)."""
    pts = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    if len(pts) < 3:
        return 0.0
    second = pts[2:] - 2 * pts[1:-1] + pts[:-2]
    second = second[np.isfinite(second).all(axis=1)]
    return float(np.sqrt(np.mean(second ** 2))) if second.size else 0.0


def _nearest(present: np.ndarray, i: int) -> int:
    idx = np.flatnonzero(present)
    return int(idx[np.argmin(np.abs(idx - i))])  # argmin takes the first, i.e. earlier, on a tie


def sequence_faces(faces: Faces, sigma: float = 0.0, fill_missing: bool = True) -> Faces:
    """FACES of a frame sequence with empty frames filled (optional) and keypoints + boxes smoothed over time
    (``sigma`` frames, 0 = off). Frame count and order are kept."""
    values, present = _track(faces)
    if not present.any():
        return faces
    sizes = {tuple(r.source_size) for r in faces.found}
    if len(sizes) > 1:
        raise ValueError(f"the frames come from images of different sizes {sorted(sizes)}; a sequence needs the frames "
                         "of one video (one IMAGE batch).")
    # Smooth the detected frames first, then fill from the smoothed ones: a held or interpolated frame is not a
    # measurement and would bias the line fit of its neighbours.
    values = smooth_track(values, present, sigma)
    filled = present.copy()
    if fill_missing:
        values = fill_track(values, present)
        filled[:] = True
    frames: list[FaceRecord | None] = []
    for i in range(len(faces)):
        if not filled[i]:
            frames.append(None)
            continue
        donor = faces.frames[i] if present[i] else faces.frames[_nearest(present, i)]
        frames.append(replace(donor, keypoints=values[i, :10].reshape(NUM_KEYPOINTS, 2).astype(np.float32),
                              bbox=values[i, 10:].astype(np.float32)))
    notes = list(faces.notes)
    missing = np.flatnonzero(~present) + 1
    if fill_missing and missing.size:
        notes.append(f"frames without a face filled from their neighbours: {', '.join(map(str, missing))}")
    if sigma > 0:
        before = jitter(_track(faces)[0][:, :10])
        after = jitter(values[:, :10])
        notes.append(f"keypoints smoothed over time (Gaussian local-linear, sigma {sigma:g} frames): "
                     f"jitter {before:.2f} px -> {after:.2f} px")
    return replace(faces, frames=tuple(frames), notes=tuple(notes))
