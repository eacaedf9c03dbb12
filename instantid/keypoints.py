"""The keypoint image: IdentityNet's hint (spec section 3), drawn at the generation size."""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np
import torch

from .faces import FaceRecord, Faces, NoFaceError

log = logging.getLogger(__name__)

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


def pose_image(faces: Faces, width: int, height: int, placement: str = "cover") -> torch.Tensor:
    """IdentityNet's drawn hint: the keypoints of the first frame that has a face, float32 ``[1, height, width, 3]``.

    Frames without a face (no-face policy 'skip' or 'pass through') are passed over, so a FACES value whose
    first image had no face still gives the pose of the face it does hold, never a black hint.
    """
    record = next((f for f in faces.frames if f is not None), None)
    if record is None:
        raise NoFaceError(f"No face to draw keypoints from: all {len(faces)} frame(s) of the FACES input are without a face.")
    drawn = draw_keypoints(place_keypoints(record, width, height, placement), width, height)
    return torch.from_numpy(drawn.astype(np.float32) / 255.0)[None]


def pose_faces(identity: Faces, pose: Faces | None, node: str) -> Faces:
    """Whose keypoints IdentityNet draws: ``pose`` when given, else the identity's own faces.

    A ``pose`` without any face is an error naming the input, unless its analysis node was set to 'pass
    through': then, as that policy promises, it is as if no pose were connected (logged).
    """
    if pose is None:
        return identity
    if pose.found:
        return pose
    if pose.no_face_policy == "pass_through":
        log.warning("%s: the pose_faces input has no face (policy 'pass through'); the identity photo's keypoints are used.", node)
        return identity
    raise NoFaceError(
        f"{node}: the pose_faces input has no face in any of its {len(pose)} frame(s). Connect a photo with a clearly "
        "visible face, disconnect pose_faces to take the pose from the identity photo, or set the pose's face "
        "analysis node to 'pass through' to fall back to the identity's keypoints."
    )
