"""The FACES value: what face analysis found, frame by frame.

Face analysis produces it (``instantid.face_analysis``), saved-face files
round-trip it (``instantid.face_store``), and everything downstream reads it:
the Resampler takes :meth:`Faces.identity_embeddings`, keypoint images take
each record's ``keypoints``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EMBEDDING_DIM = 512
NUM_KEYPOINTS = 5


@dataclass(frozen=True)
class FaceRecord:
    """One detected face, in the pixel coordinates of its source image.

    bbox: float32 ``[4]`` as x1, y1, x2, y2 (pixels).
    keypoints: float32 ``[5, 2]`` as (x, y) pixels, in the order left eye,
        right eye, nose tip, left mouth corner, right mouth corner.
    embedding: float32 ``[512]``, the raw (unnormalised) ArcFace vector.
    score: detection confidence in [0, 1].
    source_size: (width, height) of the image the face was found in.
    """

    bbox: np.ndarray
    keypoints: np.ndarray
    embedding: np.ndarray = field(repr=False)
    score: float
    source_size: tuple[int, int]

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = (float(v) for v in self.bbox)
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


@dataclass(frozen=True)
class Faces:
    """FACES: one entry per analysed frame, ``None`` where no face was found.

    Frames are never dropped: a frame without a face keeps its slot so that
    batch positions stay aligned with the images they came from.

    model_pack: name of the insightface pack that made the embeddings
        (``"antelopev2"``); embeddings from different packs are not comparable.
    weights: optional per-frame weights used by the ``weighted`` combine mode.
    no_face_policy: what the analysis node was told to do about frames with no
        face: ``"error"``, ``"skip"`` (slot kept as ``None``) or
        ``"pass_through"`` (downstream nodes leave model and conditioning
        unchanged when no face at all was found, and log why).
    notes: human-readable remarks made during analysis (retries, skips).
    """

    frames: tuple[FaceRecord | None, ...]
    model_pack: str = "antelopev2"
    weights: tuple[float, ...] | None = None
    no_face_policy: str = "error"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def found(self) -> list[FaceRecord]:
        return [f for f in self.frames if f is not None]

    @property
    def missing_frames(self) -> list[int]:
        return [i for i, f in enumerate(self.frames) if f is None]

    def __len__(self) -> int:
        return len(self.frames)


COMBINE_MODES = ("average", "norm_average", "weighted")


class NoFaceError(ValueError):
    """Raised when an identity is needed but the FACES value holds no face."""


def combine_embeddings(faces: Faces, mode: str = "average") -> np.ndarray:
    """One identity vector from every face found, float32 ``[512]``.

    average: mean of the raw embeddings (the InstantID authors' advice).
    norm_average: each embedding L2-normalised, averaged, then rescaled to
        the mean norm of the inputs, so no single photo dominates by length.
    weighted: weighted mean with ``faces.weights`` (one weight per frame;
        frames without a face are ignored).
    """
    found = [(i, f) for i, f in enumerate(faces.frames) if f is not None]
    if not found:
        raise NoFaceError(
            "No face in the FACES input: every frame was analysed without a face. "
            "Use a photo where the face is clearly visible, or set the face "
            "analysis node's no-face policy to 'pass through'."
        )
    vectors = np.stack([f.embedding.astype(np.float32) for _, f in found])
    if mode == "average":
        return vectors.mean(axis=0)
    if mode == "norm_average":
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit = vectors / np.maximum(norms, 1e-12)
        mean_unit = unit.mean(axis=0)
        length = float(np.linalg.norm(mean_unit))
        return (mean_unit / max(length, 1e-12) * float(norms.mean())).astype(np.float32)
    if mode == "weighted":
        if faces.weights is None or len(faces.weights) != len(faces.frames):
            raise ValueError(
                f"combine mode 'weighted' needs one weight per frame ({len(faces.frames)} frames), "
                f"got {0 if faces.weights is None else len(faces.weights)}. "
                "Set the weights on the face analysis node, or use 'average'."
            )
        w = np.array([faces.weights[i] for i, _ in found], dtype=np.float32)
        if float(w.sum()) <= 0:
            raise ValueError("combine mode 'weighted': the weights of the frames with a face sum to 0.")
        return (vectors * w[:, None]).sum(axis=0) / w.sum()
    raise ValueError(f"Unknown combine mode {mode!r}; expected one of {COMBINE_MODES}.")
