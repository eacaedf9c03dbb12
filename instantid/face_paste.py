"""Putting regenerated crops back: the inverse of each crop transform, blended with a feathered mask.

Only pixels inside the blended region change; every other pixel of the
images is returned bit for bit (the region is where the mask, moved back
into the image, is at least 0.5).
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np
import torch

from .face_crop import CropTransform, FaceCropError, FaceCrops, check_finite
from .warp import compose, transform_points, warp

log = logging.getLogger(__name__)

REGIONS = ("face", "whole_crop")
MAX_STD_RATIO = 2.0  # colour matching never stretches contrast more than this (a flat crop would explode)


def _check_images(images: torch.Tensor, crops: FaceCrops) -> None:
    width, height = crops.source_size
    if images.ndim != 4 or (int(images.shape[2]), int(images.shape[1])) != (width, height):
        shape = tuple(images.shape)
        raise FaceCropError(
            f"InstantID Face Paste: the CROP was made from {width}x{height} images, but the image input is {shape} "
            "([batch, height, width, channels]). Paste into the same images the crop node was given."
        )
    if int(images.shape[0]) != crops.frame_count:
        raise FaceCropError(
            f"InstantID Face Paste: the CROP was made from a batch of {crops.frame_count} image(s), the image input has "
            f"{images.shape[0]}. Paste into the same batch the crop node was given."
        )


def _crop_matrix_for(t: CropTransform, crop_size: tuple[int, int]) -> np.ndarray:
    """The transform for a crop that came back at another size (e.g. upscaled): same aspect, edges aligned."""
    if crop_size == t.size:
        return t.matrix
    sx, sy = crop_size[0] / t.size[0], crop_size[1] / t.size[1]
    if abs(sx / sy - 1) > 0.01:
        raise FaceCropError(
            f"InstantID Face Paste: a crop came back {crop_size[0]}x{crop_size[1]}, but it was cut at {t.size[0]}x{t.size[1]} "
            "(another aspect ratio). Paste the crops at the size the crop node made them (or scaled evenly)."
        )
    # Edges aligned: crop pixel x of the planned size is pixel (x + 0.5) * sx - 0.5 of the returned one.
    return compose(np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]], dtype=np.float64), t.matrix)


def _blend_masks(crops: FaceCrops, count: int, size: tuple[int, int], region: str, mask: torch.Tensor | None) -> list[np.ndarray]:
    """One mask per crop, in crop pixels of the crops' actual ``size``."""
    if mask is None:
        if region not in REGIONS:
            raise ValueError(f"Unknown paste region {region!r}; expected one of {REGIONS}.")
        if region == "whole_crop":
            return [np.ones((size[1], size[0]), np.float32)] * count
        masks = [t.face_mask for t in crops.transforms]
    else:
        given = (mask[None] if mask.ndim == 2 else mask).detach().to("cpu", torch.float32).numpy()
        if given.shape[0] not in (1, count):
            raise FaceCropError(f"InstantID Face Paste: the mask has {given.shape[0]} frame(s) for {count} crop(s); give one per crop, or one for all.")
        masks = [given[i if given.shape[0] > 1 else 0] for i in range(count)]
    return [m if (m.shape[1], m.shape[0]) == size else cv2.resize(m, size, interpolation=cv2.INTER_LINEAR) for m in masks]


def feather_alpha(inside: np.ndarray, feather: float, open_sides: tuple[bool, bool, bool, bool]) -> np.ndarray:
    """Blend weight: 0 outside ``inside`` (bool), rising smoothly to 1 at ``feather`` px from its border.

    open_sides (left, top, right, bottom): sides where the array ends at the
    image's own edge; the region is not feathered against those (there is no
    seam), only against its own border.
    """
    pads = [0 if side else 1 for side in open_sides]
    padded = cv2.copyMakeBorder(inside.astype(np.uint8), pads[1], pads[3], pads[0], pads[2], cv2.BORDER_CONSTANT, value=0)
    # cv2 treats everything beyond the array as inside, which is what the open sides need.
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    distance = distance[pads[1] : pads[1] + inside.shape[0], pads[0] : pads[0] + inside.shape[1]]
    t = np.clip((distance - 0.5) / max(feather, 1e-6), 0, 1)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def match_colour(pasted: np.ndarray, original: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Pixels ``[N,C]`` of the pasted crop with their colour (mean and spread per Lab channel, weighted by
    ``weight`` ``[N]``) moved to those of the original pixels ``[N,C]`` they replace."""
    total = float(weight.sum())
    if pasted.shape[-1] < 3 or total <= 0:
        return pasted
    w = (weight / total).astype(np.float32)

    def lab(rgb: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(np.ascontiguousarray(np.clip(rgb[:, None, :3], 0, 1)), cv2.COLOR_RGB2Lab)[:, 0]

    lab_p, lab_o = lab(pasted), lab(original)
    mean_p, mean_o = w @ lab_p, w @ lab_o
    std_p, std_o = np.sqrt(w @ (lab_p - mean_p) ** 2), np.sqrt(w @ (lab_o - mean_o) ** 2)
    ratio = np.clip(std_o / np.maximum(std_p, 1e-6), 1 / MAX_STD_RATIO, MAX_STD_RATIO)
    moved = cv2.cvtColor(((lab_p - mean_p) * ratio + mean_o).astype(np.float32)[:, None], cv2.COLOR_Lab2RGB)[:, 0]
    out = pasted.copy()
    out[:, :3] = np.clip(moved, 0, 1)
    return out


def paste_one(frame: np.ndarray, crop: np.ndarray, matrix: np.ndarray, mask: np.ndarray, feather: float,
              colour_match: bool) -> bool:
    """Blend one crop into ``frame`` (float32 ``[H,W,C]``, changed in place); False if no pixel changes.

    matrix: source -> crop pixels for this crop's actual size.
    """
    height, width = frame.shape[:2]
    ch, cw = crop.shape[:2]
    corners = np.array([[-0.5, -0.5], [cw - 0.5, -0.5], [cw - 0.5, ch - 0.5], [-0.5, ch - 0.5]])
    footprint = transform_points(cv2.invertAffineTransform(matrix), corners)
    x0, y0 = (max(0, math.floor(v)) for v in footprint.min(0))
    x1, y1 = min(width, math.ceil(footprint[:, 0].max()) + 1), min(height, math.ceil(footprint[:, 1].max()) + 1)
    if x1 <= x0 or y1 <= y0:
        return False
    size = (x1 - x0, y1 - y0)
    # crop -> block pixels: the inverse of (block -> source -> crop).
    to_block = cv2.invertAffineTransform(matrix @ np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], dtype=np.float64))
    moved_mask = warp(mask.astype(np.float32), to_block, size, cv2.INTER_LINEAR, cv2.BORDER_CONSTANT)
    if feather > 0:
        alpha = feather_alpha(moved_mask >= 0.5, feather, (x0 == 0, y0 == 0, x1 == width, y1 == height))
    else:
        alpha = np.clip(moved_mask, 0, 1)
    inside = alpha > 0
    if not inside.any():
        return False
    pasted = warp(crop, to_block, size)
    np.clip(pasted, float(crop.min()), float(crop.max()), out=pasted)
    block = frame[y0:y1, x0:x1]
    # Only pixels with a weight are read and written: all others keep their exact bits.
    a, original, new = alpha[inside], block[inside], pasted[inside]
    if colour_match:
        new = match_colour(new, original, a)
    block[inside] = original * (1 - a[:, None]) + new * a[:, None]
    return True


def paste_faces(images: torch.Tensor, crops: torch.Tensor, info: FaceCrops, feather: float = 12.0, region: str = "face",
                mask: torch.Tensor | None = None, colour_match: bool = False) -> torch.Tensor:
    """Paste each (regenerated) crop back into the frame it was cut from; returns a new IMAGE.

    images: ``[B,H,W,C]``, the batch the CROP ``info`` was made from.
    crops: ``[N,h,w,C]``, one per transform (any size of the same aspect).
    feather: blend width in image pixels, inside the region (0: use the mask's own softness).
    region: ``face`` (the crop node's face mask) or ``whole_crop``; a ``mask`` (crop pixels) overrides it.
    colour_match: match the pasted region's colour statistics to the original's first.
    """
    images = images[None] if images.ndim == 3 else images
    _check_images(images, info)
    if info.passes_through:
        log.warning("InstantID Face Paste: the crop node found nothing to crop; images returned unchanged.")
        return images
    count = len(info.transforms)
    if crops.ndim != 4 or int(crops.shape[0]) != count:
        raise FaceCropError(
            f"InstantID Face Paste: the CROP holds {count} crop(s), the crops input {tuple(crops.shape)}. Give the crops "
            "in the batch the crop node made (one image per crop, same order; no extra batch of variations)."
        )
    check_finite(crops, "InstantID Face Paste", "crop", "the VAE decode of the crops (an SDXL VAE in fp16 often gives NaN: "
                 "use an fp32 VAE or the fp16-fix VAE)")
    if crops.shape[-1] != images.shape[-1]:
        raise FaceCropError(f"InstantID Face Paste: the crops have {crops.shape[-1]} channels, the images {images.shape[-1]}.")
    size = (int(crops.shape[2]), int(crops.shape[1]))
    masks = _blend_masks(info, count, size, region, mask)
    crop_pixels = crops.detach().to("cpu", torch.float32).numpy()
    # A float32 copy to write into; untouched pixels convert back to the input dtype unchanged (float16/bfloat16
    # values are exact in float32).
    out = images.detach().to("cpu", torch.float32, copy=True)
    frames = out.numpy()
    for i, t in enumerate(info.transforms):
        paste_one(frames[t.frame], crop_pixels[i], _crop_matrix_for(t, size), masks[i], feather, colour_match)
    return out.to(images.device, images.dtype)
