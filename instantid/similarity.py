"""How well generated images keep the identity: ArcFace cosine similarity.

The identity is the combined raw embedding of a FACES value; each generated
image is analysed with the same detector and recognizer (same retries as
face analysis) and its largest face is compared. Cosine similarity is scale
free, so raw and normalised embeddings give the same score.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .face_analysis import (
    choose_face,
    detect_with_retry,
    image_to_rgb_uint8,
    rgb_to_bgr,
)
from .face_models import FaceAnalyzer
from .faces import Faces, combine_embeddings

NO_FACE = float("nan")  # the score of an image with no detectable face


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two embeddings, in [-1, 1]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    if denominator == 0.0:
        raise ValueError("cosine similarity of a zero-length embedding is undefined.")
    return float(np.dot(a, b) / denominator)


def face_similarity(faces: Faces, images: torch.Tensor, analyzer: FaceAnalyzer, combine: str = "average") -> list[float]:
    """Per-image cosine similarity between ``faces``' identity and the largest face in each image.

    images: ``[B,H,W,C]`` float 0..1. Returns ``B`` floats; :data:`NO_FACE`
    (NaN) where an image has no detectable face.
    """
    if faces.model_pack != analyzer.pack:
        raise ValueError(
            f"the FACES value was made with the '{faces.model_pack}' pack but the analyzer is '{analyzer.pack}'; "
            "embeddings of different packs are not comparable. Load the same pack in both places."
        )
    identity = combine_embeddings(faces, combine)
    if images.ndim == 3:
        images = images.unsqueeze(0)
    scores = []
    for i in range(int(images.shape[0])):
        bgr = rgb_to_bgr(image_to_rgb_uint8(images[i]))
        detected, _ = detect_with_retry(analyzer, bgr)
        chosen = choose_face(detected, "largest")
        if chosen is None:
            scores.append(NO_FACE)
            continue
        scores.append(cosine_similarity(identity, analyzer.embed(bgr, chosen.keypoints)))
    return scores


def describe_scores(scores: list[float]) -> str:
    """One line per image, e.g. ``image 1: 0.873`` or ``image 2: no face``, plus the mean."""
    lines = [f"image {i + 1}: {'no face' if math.isnan(s) else f'{s:.3f}'}" for i, s in enumerate(scores)]
    found = [s for s in scores if not math.isnan(s)]
    lines.append(f"mean: {sum(found) / len(found):.3f}" if found else "mean: no face in any image")
    return "\n".join(lines)


def rank_by_similarity(scores: list[float], k: int) -> list[int]:
    """Indices of the ``k`` best images, best first.

    Higher score ranks first; images without a face (NaN) rank after every
    image with one; equal scores keep batch order (lower index first). ``k``
    larger than the batch returns every image.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1 (got {k}): it is how many of the best images to keep.")
    order = sorted(range(len(scores)), key=lambda i: (math.isnan(scores[i]), -scores[i] if not math.isnan(scores[i]) else 0.0, i))
    return order[:k]


def describe_ranking(scores: list[float], order: list[int]) -> str:
    """The kept images in rank order (``#1 image 3: 0.912``), then a line naming the images without a face."""
    lines = [f"#{rank + 1} image {i + 1}: {'no face' if math.isnan(scores[i]) else f'{scores[i]:.3f}'}"
             for rank, i in enumerate(order)]
    missing = [i + 1 for i, s in enumerate(scores) if math.isnan(s)]
    if missing:
        lines.append(f"no face found in image(s) {', '.join(map(str, missing))}: ranked last")
    return "\n".join(lines)
