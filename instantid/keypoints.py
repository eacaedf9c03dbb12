"""The keypoint image: IdentityNet's hint (spec section 3), drawn at the generation size."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from .faces import FaceRecord, Faces

PLACEMENTS = ("cover", "contain", "box")
COLOURS = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (255, 0, 255),
)  # RGB, by keypoint
LIMBS = (
    (0, 2),
    (1, 2),
    (3, 2),
    (4, 2),
)  # each limb takes the colour of its first (non-nose) point
STICK_WIDTH = 4  # pixels, not scaled with the canvas
POINT_RADIUS = 10  # pixels
LIMB_DIM = 0.6


def draw_keypoints(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Draw 5 keypoints (canvas pixels, ``[5,2]`` x,y) as the reference does.

    Returns RGB uint8 ``[height, width, 3]``: limbs as filled ellipse polygons
    (no anti-aliasing), the canvas dimmed by 0.6 with truncation, then full
    colour discs of radius 10.
    """
    points = np.asarray(points, dtype=np.float64).reshape(5, 2)
    canvas = np.zeros((int(height), int(width), 3), dtype=np.uint8)
    for a, b in LIMBS:
        (xa, ya), (xb, yb) = points[a], points[b]
        length = math.hypot(xa - xb, ya - yb)
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        centre = (int((xa + xb) / 2), int((ya + yb) / 2))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, COLOURS[a])
    canvas = (canvas * LIMB_DIM).astype(np.uint8)
    for (x, y), colour in zip(points, COLOURS, strict=True):
        cv2.circle(canvas, (int(x), int(y)), POINT_RADIUS, colour, -1)
    return canvas


def place_keypoints(
    record: FaceRecord,
    width: int,
    height: int,
    placement: str = "cover",
    box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """Map a face's keypoints from its source photo onto a ``width`` x ``height`` canvas.

    cover: the photo scaled to fill the canvas and centre-cropped (equals a
        plain resize when the aspects match: the reference's behaviour).
    contain: the whole photo scaled to fit inside the canvas, centred.
    box: the face's bbox scaled (aspect kept) to fit the box ``(x, y, w, h)``,
        given as fractions of the canvas, and centred in it.

    Returns float64 ``[5,2]`` canvas pixels.
    """
    points = np.asarray(record.keypoints, dtype=np.float64).reshape(5, 2)
    if placement in ("cover", "contain"):
        src_w, src_h = (float(v) for v in record.source_size)
        fit = max if placement == "cover" else min
        scale = fit(width / src_w, height / src_h)
        offset = np.array([(width - src_w * scale) / 2, (height - src_h * scale) / 2])
        return points * scale + offset
    if placement == "box":
        if box is None:
            raise ValueError("placement 'box' needs a box (x, y, w, h) as fractions of the canvas.")
        bx, by, bw, bh = (float(v) for v in box)
        if bw <= 0 or bh <= 0:
            raise ValueError(f"box width and height must be positive fractions; got {box}.")
        x1, y1, x2, y2 = (float(v) for v in record.bbox)
        face_w, face_h = max(x2 - x1, 1e-6), max(y2 - y1, 1e-6)
        target_w, target_h = bw * width, bh * height
        scale = min(target_w / face_w, target_h / face_h)
        origin = np.array(
            [
                bx * width + (target_w - face_w * scale) / 2,
                by * height + (target_h - face_h * scale) / 2,
            ]
        )
        return (points - np.array([x1, y1])) * scale + origin
    raise ValueError(f"Unknown keypoint placement {placement!r}; expected one of {PLACEMENTS}.")


def keypoint_images(
    faces: Faces,
    width: int,
    height: int,
    placement: str = "cover",
    box: tuple[float, float, float, float] | None = None,
) -> torch.Tensor:
    """One keypoint image per frame of ``faces``: float32 ``[N, height, width, 3]`` in 0..1.

    A frame without a face (``None`` slot) gives an all-black canvas, so the
    batch stays aligned with the frames (IdentityNet then sees no pose there).
    """
    frames = []
    for record in faces.frames:
        if record is None:
            frames.append(np.zeros((int(height), int(width), 3), dtype=np.uint8))
        else:
            frames.append(
                draw_keypoints(
                    place_keypoints(record, width, height, placement, box),
                    width,
                    height,
                )
            )
    if not frames:
        return torch.zeros((0, int(height), int(width), 3), dtype=torch.float32)
    return torch.from_numpy(np.stack(frames).astype(np.float32) / 255.0)
