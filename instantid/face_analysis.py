"""Image batch -> FACES: detect, choose one face per frame, embed it, draw a preview.

One ONNX detector run per frame when the face is found at the configured
detection size, plus one recognizer run for the chosen face; frames where
nothing is found are retried (smaller sizes, then padding) before the
no-face policy applies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import cv2
import numpy as np
import torch

from .errors import InstantIDError
from .face_models import DetectedFace, FaceAnalyzer
from .faces import FaceRecord, Faces

log = logging.getLogger(__name__)

CHOICES = ("largest", "index", "score")
POLICIES = ("error", "skip", "pass_through")
RETRY_SIZES = tuple(range(640, 191, -64))  # 640, 576, ..., 192
PAD_FRACTION = 0.5  # padding on each side, as a fraction of the image's longer side
KEYPOINT_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))


class NoFaceFoundError(InstantIDError, ValueError):
    """A frame has no usable face and the policy is ``error``."""


# ---------------------------------------------------------------- pixels


def image_to_rgb_uint8(image: torch.Tensor) -> np.ndarray:
    """One ComfyUI frame ``[H,W,C]`` float 0..1 (C = 1, 3 or 4) -> RGB uint8 ``[H,W,3]``.

    Grayscale is repeated to three channels; RGBA drops alpha (ComfyUI IMAGE
    alpha is not premultiplied, so the colour channels are already the picture).
    """
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an image frame [H,W,C] with C in 1, 3, 4; got shape {tuple(image.shape)}.")
    array = image.detach().to("cpu", torch.float32).clamp(0, 1).numpy()
    array = np.round(array * 255.0).astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


def rgb_to_bgr(rgb: np.ndarray) -> np.ndarray:
    """insightface takes BGR uint8 (OpenCV order)."""
    return np.ascontiguousarray(rgb[..., ::-1])


# ---------------------------------------------------------------- detection


def detect_with_retry(analyzer: FaceAnalyzer, bgr: np.ndarray) -> tuple[list[DetectedFace], str | None]:
    """Detect faces; if none, retry at smaller sizes, then with black padding.

    Order: the analyzer's size, each of 640, 576, ..., 192 below it, then the
    same sizes on the image padded by ``PAD_FRACTION`` of its longer side on
    every side. Stops at the first attempt that finds a face. Returns the faces
    (bbox and keypoints in the original image's pixels) and a note describing
    the retry that found them, or ``None`` when no retry was needed.
    """
    sizes = [analyzer.det_size] + [s for s in RETRY_SIZES if s < analyzer.det_size]
    for size in sizes:
        faces = analyzer.detect(bgr, size)
        if faces:
            return (
                faces,
                None if size == analyzer.det_size else f"found at detection size {size}",
            )
    pad = round(PAD_FRACTION * max(bgr.shape[:2]))
    padded = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    offset = np.array([pad, pad], dtype=np.float32)
    for size in sizes:
        faces = analyzer.detect(padded, size)
        if faces:
            moved = [
                DetectedFace(
                    bbox=f.bbox - np.tile(offset, 2),
                    keypoints=f.keypoints - offset,
                    score=f.score,
                )
                for f in faces
            ]
            return moved, f"found with {pad}px padding at detection size {size}"
    return [], None


def reading_order(faces: list[DetectedFace]) -> list[DetectedFace]:
    """Faces in reading order: rows top to bottom, each row left to right.

    Rule: faces are taken by box centre y; a face joins the current row when
    its centre y lies within the vertical extent (top to bottom of the boxes)
    of the faces already in that row, otherwise it starts a new row. Within a
    row, faces are ordered by box centre x.
    """
    rows: list[list[DetectedFace]] = []
    extent = (0.0, -1.0)
    for face in sorted(faces, key=lambda f: float(f.bbox[1] + f.bbox[3])):
        top, bottom = float(face.bbox[1]), float(face.bbox[3])
        centre = (top + bottom) / 2
        if rows and extent[0] <= centre <= extent[1]:
            rows[-1].append(face)
            extent = (min(extent[0], top), max(extent[1], bottom))
        else:
            rows.append([face])
            extent = (top, bottom)
    return [f for row in rows for f in sorted(row, key=lambda f: float(f.bbox[0] + f.bbox[2]))]


def choose_face(faces: list[DetectedFace], choice: str, index: int = 0) -> DetectedFace | None:
    """The face to use: ``largest`` bbox area (the reference), ``score`` (highest
    detection score) or ``index`` (0-based, in :func:`reading_order`). ``None``
    if there is no such face."""
    if not faces:
        return None
    if choice == "largest":
        return max(faces, key=lambda f: f.area)
    if choice == "score":
        return max(faces, key=lambda f: f.score)
    if choice == "index":
        ordered = reading_order(faces)
        return ordered[index] if 0 <= index < len(ordered) else None
    raise ValueError(f"Unknown face choice {choice!r}; expected one of {CHOICES}.")


def parse_weights(text: str | None, frame_count: int) -> tuple[float, ...] | None:
    """``"1, 0.5, 2"`` -> one weight per frame; empty -> ``None``."""
    if text is None or not text.strip():
        return None
    try:
        weights = tuple(float(part) for part in text.replace(";", ",").split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"weights must be numbers separated by commas, like '1.0, 0.5'; got {text!r}.") from exc
    if len(weights) != frame_count:
        raise ValueError(
            f"got {len(weights)} weight(s) for {frame_count} image(s); give exactly one weight per image "
            "in the batch, or leave weights empty."
        )
    if any(w < 0 for w in weights):
        raise ValueError(f"weights must not be negative; got {text!r}.")
    return weights


# ---------------------------------------------------------------- preview


def draw_preview(rgb: np.ndarray, faces: list[DetectedFace], chosen: DetectedFace | None) -> np.ndarray:
    """RGB uint8 copy with every face boxed and numbered in reading order (the
    number the ``index`` choice uses), the chosen face in green, others grey,
    and the 5 keypoints in the keypoint-image colours."""
    canvas = rgb.copy()
    h, w = canvas.shape[:2]
    thick = max(1, round(min(h, w) / 256))
    font = max(0.4, min(h, w) / 640)
    if not faces:
        cv2.putText(
            canvas,
            "no face",
            (8, int(24 * font) + 4),
            cv2.FONT_HERSHEY_SIMPLEX,
            font,
            (255, 0, 0),
            thick,
        )
        return canvas
    for number, face in enumerate(reading_order(faces)):
        colour = (0, 255, 0) if face is chosen else (160, 160, 160)
        x1, y1, x2, y2 = (round(float(v)) for v in face.bbox)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thick)
        cv2.putText(
            canvas,
            str(number),
            (x1 + 2, max(y1 - 4, 12)),
            cv2.FONT_HERSHEY_SIMPLEX,
            font,
            colour,
            thick,
        )
        for (x, y), kp_colour in zip(face.keypoints, KEYPOINT_COLOURS, strict=True):
            cv2.circle(canvas, (round(float(x)), round(float(y))), thick + 1, kp_colour, -1)
    return canvas


# ---------------------------------------------------------------- analysis


class _NoProgress:
    def __init__(self, total: int) -> None:
        self.total = total

    def update(self, value: int) -> None:
        pass


def _frame_hooks() -> tuple[Callable[[], None], Callable[[int], object]]:
    """ComfyUI's interrupt check and progress bar, or no-ops outside ComfyUI."""
    try:
        import comfy.model_management
        import comfy.utils
    except ImportError:
        return (lambda: None), _NoProgress
    return (
        comfy.model_management.throw_exception_if_processing_interrupted,
        comfy.utils.ProgressBar,
    )


def analyze(
    images: torch.Tensor,
    analyzer: FaceAnalyzer,
    choice: str = "largest",
    index: int = 0,
    policy: str = "error",
    weights: str | None = None,
) -> tuple[Faces, torch.Tensor]:
    """Analyse a ComfyUI image batch.

    images: ``[B,H,W,C]`` float 0..1 RGB (C = 1 grayscale or 4 RGBA also work).
    choice / index: which face per frame, see :func:`choose_face`.
    policy: a frame without a face (after retries) raises
        :class:`NoFaceFoundError` (``error``), or keeps a ``None`` slot with a
        note (``skip`` and ``pass_through``; the latter also tells downstream
        nodes to leave model and conditioning unchanged if no face was found).
    weights: optional comma-separated weight per frame, for the ``weighted``
        combine mode.

    Returns the FACES value (one slot per frame, never shifted) and a preview
    ``[B,H,W,3]`` float 0..1.
    """
    if choice not in CHOICES:
        raise ValueError(f"Unknown face choice {choice!r}; expected one of {CHOICES}.")
    if policy not in POLICIES:
        raise ValueError(f"Unknown no-face policy {policy!r}; expected one of {POLICIES}.")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    frame_count = int(images.shape[0])
    frame_weights = parse_weights(weights, frame_count)
    check_interrupted, progress_bar = _frame_hooks()
    progress = progress_bar(frame_count)

    records: list[FaceRecord | None] = []
    notes: list[str] = []
    previews: list[np.ndarray] = []
    for i in range(frame_count):
        check_interrupted()
        if not bool(torch.isfinite(images[i]).all()):
            bad = int((~torch.isfinite(images[i])).sum())
            raise ValueError(
                f"InstantID Face Analyze: frame {i + 1} of {frame_count} has {bad} pixel value(s) that are NaN or "
                "infinite (not finite), so it cannot be analysed. Fix the node that made this image (a failed decode, "
                "an upscaler or a VAE in the wrong precision); the no-face policy does not apply to broken images."
            )
        rgb = image_to_rgb_uint8(images[i])
        bgr = rgb_to_bgr(rgb)
        detected, retry_note = detect_with_retry(analyzer, bgr)
        chosen = choose_face(detected, choice, index)
        if retry_note:
            notes.append(f"frame {i + 1}: {retry_note}")
        if chosen is None:
            reason = (
                f"only {len(detected)} face(s) found, index {index} asked for"
                if detected
                else "no face found (also after retrying smaller detection sizes and padding)"
            )
            if policy == "error":
                raise NoFaceFoundError(
                    f"InstantID Face Analyze: frame {i + 1} of {frame_count}: {reason}. Fix: use a photo with a "
                    "clearly visible face, lower the analyzer's detection size, change the face choice, or set "
                    "no_face_policy to 'skip' or 'pass_through'."
                )
            notes.append(f"frame {i + 1}: {reason}; slot left empty ({policy})")
            log.warning(
                "InstantID Face Analyze: frame %d of %d: %s (%s).",
                i + 1,
                frame_count,
                reason,
                policy,
            )
            records.append(None)
        else:
            records.append(
                FaceRecord(
                    bbox=chosen.bbox.astype(np.float32),
                    keypoints=chosen.keypoints.astype(np.float32),
                    embedding=analyzer.embed(bgr, chosen.keypoints),
                    score=float(chosen.score),
                    source_size=(int(rgb.shape[1]), int(rgb.shape[0])),
                )
            )
        previews.append(draw_preview(rgb, detected, chosen))
        progress.update(1)

    faces = Faces(
        frames=tuple(records),
        model_pack=analyzer.pack,
        weights=frame_weights,
        no_face_policy=policy,
        notes=tuple(notes),
    )
    preview = torch.from_numpy(np.stack(previews).astype(np.float32) / 255.0)
    return faces, preview


def find_faces(images: torch.Tensor, analyzer: FaceAnalyzer, choice: str = "largest",
               index: int = 0) -> list[list[FaceRecord]]:
    """Every frame's chosen faces as records (box, keypoints, embedding), for nodes that work on faces in place.

    Unlike :func:`analyze` (one face per frame, the FACES contract), ``choice``
    may be ``all``: every face of the frame, in :func:`reading_order`.
    ``largest`` and ``index`` pick as in :func:`choose_face`. A frame without a
    (matching) face gives an empty list; the caller decides what that means.
    """
    if choice not in (*CHOICES, "all"):
        raise ValueError(f"Unknown face choice {choice!r}; expected one of {(*CHOICES, 'all')}.")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    check_interrupted, _ = _frame_hooks()
    out: list[list[FaceRecord]] = []
    for i in range(int(images.shape[0])):
        check_interrupted()
        rgb = image_to_rgb_uint8(images[i])
        bgr = rgb_to_bgr(rgb)
        detected, _ = detect_with_retry(analyzer, bgr)
        if choice == "all":
            picked = reading_order(detected)
        else:
            chosen = choose_face(detected, choice, index)
            picked = [] if chosen is None else [chosen]
        out.append([
            FaceRecord(bbox=f.bbox.astype(np.float32), keypoints=f.keypoints.astype(np.float32),
                       embedding=analyzer.embed(bgr, f.keypoints), score=float(f.score),
                       source_size=(int(rgb.shape[1]), int(rgb.shape[0])))
            for f in picked
        ])
    return out
