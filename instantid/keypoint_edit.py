"""Keypoints users shape: the editor's value (validated), and rotate/scale/translate/mirror on FACES.

The editor's value is JSON text, coordinates normalised to the generation
canvas (0..1 of its width and height)::

    {"faces": [[[x, y], [x, y], [x, y], [x, y], [x, y]], ...]}

five points per face in the insightface order (left eye, right eye, nose tip,
left mouth corner, right mouth corner, "left" meaning image left). The same
text is the widget value in the saved workflow and in the API prompt; the
server checks it with :func:`parse_edited_keypoints` before anything runs.

Sequences (fill and temporal smoothing) are in ``keypoint_sequence``.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np

from . import keypoints
from .errors import InstantIDError
from .faces import NUM_KEYPOINTS, FaceRecord, Faces

MAX_FACES = 16
POINT_NAMES = ("left eye", "right eye", "nose tip", "left mouth corner", "right mouth corner")
# A horizontal mirror turns the image-left eye into the image-right one: swap labels so that point 0 stays
# the image-left eye, as the detector would report on a mirrored photo.
MIRROR_ORDER = (1, 0, 2, 4, 3)

# insightface's ArcFace alignment template (face_align.arcface_dst, 112x112 px): a frontal face.
_ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
DEFAULT_FACE_CENTRE = (0.5, 0.45)
DEFAULT_FACE_SIZE = 0.6  # the 112 px template spans this fraction of a square canvas


class KeypointValueError(InstantIDError, ValueError):
    """An edited keypoint value (editor widget or API prompt) is not a valid set of faces."""


def default_face(centre: tuple[float, float] = DEFAULT_FACE_CENTRE, size: float = DEFAULT_FACE_SIZE,
                 aspect: float = 1.0) -> list[list[float]]:
    """A frontal face (ArcFace template) centred at ``centre``, normalised for a canvas of width/height ``aspect``."""
    pts = (_ARCFACE_TEMPLATE - _ARCFACE_TEMPLATE.mean(axis=0)) / 112.0 * size
    pts[:, 0] /= max(aspect, 1e-6)
    pts += np.array(centre)
    return [[round(float(x), 6), round(float(y), 6)] for x, y in pts]


def format_edited_keypoints(faces: np.ndarray | list) -> str:
    """The editor's JSON text for normalised faces ``[F,5,2]`` (6 decimals: 0.001 px at 1000 px)."""
    arr = np.asarray(faces, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 2)
    return json.dumps({"faces": [[[round(float(x), 6), round(float(y), 6)] for x, y in face] for face in arr]},
                      separators=(",", ":"))


def default_value() -> str:
    return format_edited_keypoints([default_face()])


def hint_style() -> dict:
    """The drawing constants of ``keypoints`` for the browser editor (it never keeps its own copy)."""
    return {
        "colours": [list(c) for c in keypoints.COLOURS],
        "limbs": [list(pair) for pair in keypoints.LIMBS],
        "stick_width": keypoints.STICK_WIDTH,
        "point_radius": keypoints.POINT_RADIUS,
        "limb_dim": keypoints.LIMB_DIM,
        "point_names": list(POINT_NAMES),
        "mirror_order": list(MIRROR_ORDER),
        "max_faces": MAX_FACES,
        "default_face": default_face(),
    }


def _where(face: int, point: int | None = None) -> str:
    where = f"face {face + 1}"
    return where if point is None else f"{where} point {point + 1} ({POINT_NAMES[point]})"


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise KeypointValueError(f"{what} is {value!r}, not a number.")
    number = float(value)
    if not math.isfinite(number):
        raise KeypointValueError(f"{what} is {value!r}; coordinates must be finite numbers.")
    if not 0.0 <= number <= 1.0:
        raise KeypointValueError(
            f"{what} is {number:g}, outside 0..1: coordinates are fractions of the image width and height. "
            "Keep the point inside the canvas."
        )
    return number


def _parse_point(point, face: int, index: int) -> tuple[float, float]:
    where = _where(face, index)
    if not isinstance(point, (list, tuple)) or len(point) != 2:
        raise KeypointValueError(f"{where} is {point!r}; expected [x, y].")
    return _number(point[0], f"{where} x"), _number(point[1], f"{where} y")


def _parse_face(face, index: int) -> list[tuple[float, float]]:
    if not isinstance(face, (list, tuple)) or len(face) != NUM_KEYPOINTS:
        count = len(face) if isinstance(face, (list, tuple)) else "no"
        raise KeypointValueError(
            f"{_where(index)} has {count} points; each face needs exactly {NUM_KEYPOINTS} [x, y] points: "
            f"{', '.join(POINT_NAMES)}."
        )
    return [_parse_point(p, index, i) for i, p in enumerate(face)]


def parse_edited_keypoints(value) -> np.ndarray:
    """Check an editor value and return float64 ``[F,5,2]`` normalised points (F = 1..MAX_FACES).

    Raises KeypointValueError naming the face and point at fault and the fix.
    """
    example = '{"faces": [[[0.42, 0.4], [0.58, 0.4], [0.5, 0.5], [0.44, 0.6], [0.56, 0.6]]]}'
    if not isinstance(value, str):
        raise KeypointValueError(f"keypoints must be JSON text such as {example}; got a {type(value).__name__}. "
                                 "Through the API, send the value as a string (json.dumps of the object).")
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        # ComfyUI turns a non-string API value into str(value): a dict arrives as Python text with single quotes.
        python = " It looks like Python's text for a dict: send json.dumps(value)." if value.lstrip().startswith("{'") else ""
        raise KeypointValueError(f"keypoints is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                                 f"expected e.g. {example}.{python}") from None
    if not isinstance(data, dict) or "faces" not in data:
        raise KeypointValueError(f"keypoints must be an object with a 'faces' list, e.g. {example}.")
    unknown = sorted(set(data) - {"faces"})
    if unknown:
        raise KeypointValueError(f"keypoints has unknown field(s) {unknown}; only 'faces' is read.")
    faces = data["faces"]
    if not isinstance(faces, list) or not 1 <= len(faces) <= MAX_FACES:
        count = len(faces) if isinstance(faces, list) else "no list of"
        raise KeypointValueError(f"keypoints has {count} faces; 1 to {MAX_FACES} are needed. Add a face in the editor.")
    return np.array([_parse_face(face, i) for i, face in enumerate(faces)], dtype=np.float64)


def draw_edited(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """The hint for normalised faces ``[F,5,2]``: RGB uint8 ``[height, width, 3]``.

    Each face is drawn as ``keypoints.draw_keypoints`` draws it (points at
    ``x * width``, ``y * height`` pixels); several faces are combined by the
    per-pixel maximum, which equals drawing them one by one wherever they do
    not overlap.
    """
    canvas = np.zeros((int(height), int(width), 3), dtype=np.uint8)
    for face in np.asarray(points, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 2):
        np.maximum(canvas, keypoints.draw_keypoints(face * [width, height], width, height), out=canvas)
    return canvas


def normalised_faces(faces: Faces, width: int, height: int, placement: str = "cover") -> list[list[list[float]]]:
    """Each found face's keypoints as the editor holds them: placed on a ``width`` x ``height`` canvas as
    ``keypoints.place_keypoints`` places them, divided by the canvas size and clamped to 0..1 (a point that
    ``cover`` crops away sits on the edge)."""
    out = []
    for record in faces.found:
        placed = keypoints.place_keypoints(record, width, height, placement) / [width, height]
        out.append([[round(float(x), 6), round(float(y), 6)] for x, y in np.clip(placed, 0.0, 1.0)])
    return out


# ---------------------------------------------------------------- transforms of FACES


def similarity(points: np.ndarray, pivot: np.ndarray, rotate: float = 0.0, scale: float = 1.0,
               translate: tuple[float, float] = (0.0, 0.0), mirror: bool = False) -> np.ndarray:
    """Mirror (about the vertical line through ``pivot``, labels swapped), then rotate ``rotate`` degrees
    counter-clockwise as seen on screen (y points down, the ``cv2.getRotationMatrix2D`` convention) and scale
    about ``pivot``, then translate. ``points`` ``[5,2]`` pixels; returns a new array."""
    pts = np.asarray(points, dtype=np.float64).reshape(NUM_KEYPOINTS, 2) - pivot
    if mirror:
        pts = pts[list(MIRROR_ORDER)] * [-1.0, 1.0]
    theta = math.radians(rotate)
    c, s = math.cos(theta) * scale, math.sin(theta) * scale
    rotated = np.stack([c * pts[:, 0] + s * pts[:, 1], -s * pts[:, 0] + c * pts[:, 1]], axis=1)
    return rotated + pivot + np.asarray(translate, dtype=np.float64)


def transform_record(record: FaceRecord, rotate: float = 0.0, scale: float = 1.0, translate_x: float = 0.0,
                     translate_y: float = 0.0, mirror: bool = False) -> FaceRecord:
    """A new FaceRecord with its keypoints moved; the pivot is the mean of the five points.

    translate_x / translate_y: fractions of the source image's width / height.
    The box keeps its axes: its centre moves like a point, its size is scaled.
    Embedding, score and source size are unchanged (the identity stays the same).
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}.")
    pivot = np.asarray(record.keypoints, dtype=np.float64).mean(axis=0)
    src_w, src_h = (float(v) for v in record.source_size)
    shift = (translate_x * src_w, translate_y * src_h)
    kps = similarity(record.keypoints, pivot, rotate, scale, shift, mirror)
    x1, y1, x2, y2 = (float(v) for v in record.bbox)
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    if mirror:
        centre[0] = 2 * pivot[0] - centre[0]
    offset = centre - pivot
    theta = math.radians(rotate)
    c, s = math.cos(theta) * scale, math.sin(theta) * scale
    new_centre = pivot + [c * offset[0] + s * offset[1], -s * offset[0] + c * offset[1]] + shift
    half = np.array([x2 - x1, y2 - y1]) * scale / 2
    bbox = np.concatenate([new_centre - half, new_centre + half]).astype(np.float32)
    return replace(record, keypoints=kps.astype(np.float32), bbox=bbox)


def variation_draw(seed: int, index: int, random_rotate: float, random_scale: float,
                   random_translate: float) -> tuple[float, float, float, float]:
    """(rotate degrees, scale factor, dx, dy) for output frame ``index``: uniform in +-each amount.

    Each frame has its own generator seeded with (seed, index), so frame k's
    variation does not depend on how many frames are made, and no global
    random state is read or changed.
    """
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, int(index)])
    r, s, dx, dy = rng.uniform(-1.0, 1.0, size=4)
    return float(r * random_rotate), float(1.0 + s * random_scale), float(dx * random_translate), float(dy * random_translate)


def transform_faces(faces: Faces, rotate: float = 0.0, scale: float = 1.0, translate_x: float = 0.0,
                    translate_y: float = 0.0, mirror: bool = False, copies: int = 1, seed: int = 0,
                    random_rotate: float = 0.0, random_scale: float = 0.0, random_translate: float = 0.0) -> Faces:
    """FACES with every face transformed; ``copies`` output frames per input frame (frame-major), output
    frame k additionally varied by :func:`variation_draw` (seed, k). Empty slots stay empty."""
    if copies < 1:
        raise ValueError(f"copies must be at least 1, got {copies}.")
    if not 0 <= random_scale < 1:
        raise ValueError(f"random_scale must be in [0, 1), got {random_scale}.")
    frames: list[FaceRecord | None] = []
    weights: list[float] | None = [] if faces.weights is not None else None
    for i, record in enumerate(faces.frames):
        for _ in range(copies):
            k = len(frames)
            if weights is not None:
                weights.append(faces.weights[i])
            if record is None:
                frames.append(None)
                continue
            d_rot, d_scale, dx, dy = variation_draw(seed, k, random_rotate, random_scale, random_translate)
            frames.append(transform_record(record, rotate + d_rot, scale * d_scale, translate_x + dx, translate_y + dy, mirror))
    note = (f"keypoints transformed: rotate {rotate:g} deg, scale {scale:g}, translate ({translate_x:g}, {translate_y:g}), "
            f"mirror {'on' if mirror else 'off'}, {copies} cop{'y' if copies == 1 else 'ies'} per frame, seed {seed}")
    return replace(faces, frames=tuple(frames), weights=None if weights is None else tuple(weights),
                   notes=(*faces.notes, note))
