"""Resampling with exact geometry: one affine matrix per warp, pixel centres at integer coordinates.

OpenCV's convention (and insightface's for keypoints): the point (x, y) is the
centre of pixel ``image[y, x]``, so a matrix that moves keypoints moves the
pixels under them the same way.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

DOWNSCALE_PREFILTER = 0.8  # shrinking below this scale is area-averaged first, so fine detail does not alias


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a ``[2,3]`` affine matrix to points ``[N,2]``."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """outer(inner(p)) as one ``[2,3]`` matrix."""
    return np.concatenate([outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]], axis=1)


def warp(src: np.ndarray, matrix: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_CUBIC,
         border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Resample ``src`` (``[h,w]`` or ``[h,w,C]`` float32) by ``matrix`` (src -> dst pixels) into a ``size`` image.

    When the warp shrinks below :data:`DOWNSCALE_PREFILTER`, ``src`` is first
    area-averaged to about the final scale (the exact resize map is composed
    into the matrix, so geometry is unchanged) to avoid aliasing.
    """
    matrix = np.asarray(matrix, np.float64)
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if scale < DOWNSCALE_PREFILTER:
        h, w = src.shape[:2]
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        src = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_AREA)
        # cv2.resize aligns pixel edges: resized x' comes from original (x' + 0.5) * w / nw - 0.5.
        back = np.array([[w / nw, 0, 0.5 * w / nw - 0.5], [0, h / nh, 0.5 * h / nh - 0.5]], dtype=np.float64)
        matrix = compose(matrix, back)
    inverse = cv2.invertAffineTransform(matrix)
    flags = interpolation | cv2.WARP_INVERSE_MAP
    squeeze = src.ndim == 3 and src.shape[2] == 1
    chunks = [src] if src.ndim == 2 or src.shape[2] <= 4 else [src[..., i : i + 4] for i in range(0, src.shape[2], 4)]
    out = [cv2.warpAffine(np.ascontiguousarray(c), inverse, (int(size[0]), int(size[1])), flags=flags, borderMode=border,
                          borderValue=0) for c in chunks]
    result = out[0] if len(out) == 1 else np.concatenate([o if o.ndim == 3 else o[..., None] for o in out], axis=2)
    return result[..., None] if squeeze else result


def value_range(src: np.ndarray, to_src: np.ndarray, size: tuple[int, int]) -> tuple[float, float]:
    """Min and max of ``src`` over the bounding box of a ``size`` image mapped into it by ``to_src`` (dst -> src)."""
    w, h = size
    corners = transform_points(to_src, [[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    (lo_x, lo_y), (hi_x, hi_y) = corners.min(0), corners.max(0)
    src_h, src_w = src.shape[:2]
    # 2 px more on each side: the cubic kernel reads two pixels around each sample (edge pixels repeat outside).
    x0, y0 = min(max(0, math.floor(lo_x) - 2), src_w - 1), min(max(0, math.floor(lo_y) - 2), src_h - 1)
    x1, y1 = max(min(src_w, math.ceil(hi_x) + 3), x0 + 1), max(min(src_h, math.ceil(hi_y) + 3), y0 + 1)
    block = src[y0:y1, x0:x1]
    return float(block.min()), float(block.max())
