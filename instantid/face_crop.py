"""Face crops: from faces (or mask regions) in a picture to upright, padded crops at a generation size.

The crop keeps the exact transform, so a regenerated crop can be put back
(:mod:`instantid.face_paste`) and the face's keypoints can be moved into the
crop, where IdentityNet then draws them exactly on the face.

Coordinates: pixel centres sit at integer coordinates (OpenCV's and
insightface's convention), so the keypoint (x, y) and ``image[y, x]`` are the
same place. One affine matrix ``[2,3]`` maps source pixels to crop pixels::

    crop = s * R(-roll) @ (p - centre) + ((W - 1) / 2, (H - 1) / 2)

``centre`` is the face box centre, ``roll`` the angle of the eye line (0 when
roll correction is off), ``s`` the scale to the crop size ``W`` x ``H``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch

from .errors import InstantIDError
from .face_analysis import reading_order
from .faces import FaceRecord, Faces
from .warp import transform_points, value_range, warp

log = logging.getLogger(__name__)

CHOICES = ("largest", "index", "all")
RESIZE_MODES = ("area", "size")
NO_FACE_POLICIES = ("error", "pass_through")
MIN_FACE_PX = 32  # below this the 5 keypoints are a few pixels apart: roll and pose would be guesses
MASK_GROW = 1.4  # face mask ellipse: semi-axes = 1.4 x half the face box, so it passes through the box corners
MASK_SOFTNESS = 0.12  # width of the face mask's soft edge, as a fraction of the ellipse radius
MASK_BLUR = 0.02  # mask regions: Gaussian sigma of the soft edge, as a fraction of the crop's shorter side
PLACEHOLDER_SIZE = 64


class FaceCropError(InstantIDError, ValueError):
    """Inputs of the face crop or paste do not fit together (sizes, batches, empty regions)."""


@dataclass(frozen=True, eq=False)
class Region:
    """What to crop in one frame: a face (box and keypoints) or one connected area of a mask.

    bbox: float64 ``[4]`` x1, y1, x2, y2 in source pixels.
    keypoints: float64 ``[5,2]`` or ``None`` (mask regions have none).
    record: the face, carried into crop coordinates; ``None`` for mask regions.
    mask: bool ``[H,W]`` of the source (mask regions only).
    """

    frame: int
    bbox: np.ndarray
    keypoints: np.ndarray | None = None
    record: FaceRecord | None = None
    mask: np.ndarray | None = None

    @property
    def width(self) -> float:
        return float(self.bbox[2] - self.bbox[0])

    @property
    def height(self) -> float:
        return float(self.bbox[3] - self.bbox[1])

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def centre(self) -> np.ndarray:
        return np.array([(self.bbox[0] + self.bbox[2]) / 2, (self.bbox[1] + self.bbox[3]) / 2], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class CropTransform:
    """One crop: which frame, the source -> crop matrix, the crop size and its face-region mask.

    matrix: float64 ``[2,3]``, source pixels -> crop pixels (pixel centres at integers).
    size: (width, height) of the crop in pixels.
    face_mask: float32 ``[height, width]`` in 0..1, 0.5 on the face region's border.
    """

    frame: int
    matrix: np.ndarray
    size: tuple[int, int]
    roll_degrees: float
    face_mask: np.ndarray

    def inverse(self) -> np.ndarray:
        """Crop pixels -> source pixels, float64 ``[2,3]``."""
        return cv2.invertAffineTransform(self.matrix)


@dataclass(frozen=True, eq=False)
class FaceCrops:
    """CROP: every crop made from one image batch, in output order (frame by frame, faces in reading order).

    No transforms means nothing was found and the no-face policy was
    ``pass_through``: the paste returns its images unchanged.
    """

    transforms: tuple[CropTransform, ...]
    source_size: tuple[int, int]
    frame_count: int
    notes: tuple[str, ...] = ()

    @property
    def passes_through(self) -> bool:
        return not self.transforms


def check_finite(images: torch.Tensor, node: str, what: str, fix: str) -> None:
    """Raise FaceCropError naming the frames that hold NaN or infinite values."""
    pixels = images.detach().to("cpu", torch.float32).numpy()  # numpy's isfinite is ~10x faster than torch's on CPU
    finite = np.isfinite(pixels.reshape(pixels.shape[0], -1)).all(axis=1)
    if not finite.all():
        frames = ", ".join(str(i + 1) for i in np.flatnonzero(~finite))
        raise FaceCropError(f"{node}: {what} {frames} of {images.shape[0]} has pixel values that are NaN or infinite. Fix {fix}.")


# ---------------------------------------------------------------- regions


def _check_source(frame_count: int, what: str, count: int) -> None:
    if count != frame_count:
        raise FaceCropError(
            f"InstantID Face Crop: {what} has {count} frame(s) but the image batch has {frame_count}. "
            f"Give the {what} of the same images (one per image, in the same order)."
        )


def regions_from_faces(faces: Faces | list[list[FaceRecord]], frame_count: int, source_size: tuple[int, int]) -> list[list[Region]]:
    """Per frame, the faces to crop. FACES gives one face (or none) per frame; a list may give several."""
    frames = [[] if f is None else [f] for f in faces.frames] if isinstance(faces, Faces) else faces
    _check_source(frame_count, "FACES" if isinstance(faces, Faces) else "face list", len(frames))
    out = []
    for i, records in enumerate(frames):
        regions = []
        for record in records:
            if tuple(record.source_size) != tuple(source_size):
                raise FaceCropError(
                    f"InstantID Face Crop: the face of frame {i + 1} was found in a {record.source_size[0]}x{record.source_size[1]} "
                    f"image, but the image to crop is {source_size[0]}x{source_size[1]}. Analyse the same images you crop "
                    "(the faces input must come from those images, not from a resized copy)."
                )
            regions.append(Region(i, np.asarray(record.bbox, np.float64), np.asarray(record.keypoints, np.float64).reshape(5, 2), record))
        out.append(regions)
    return out


def choose_regions(regions: list[Region], choice: str, index: int = 0) -> list[Region]:
    """largest (box area), index (0-based, reading order like the face preview) or all (reading order)."""
    if choice not in CHOICES:
        raise ValueError(f"Unknown face choice {choice!r}; expected one of {CHOICES}.")
    if not regions:
        return []
    if choice == "largest":
        return [max(regions, key=lambda r: r.area)]
    ordered = reading_order(regions)
    if choice == "all":
        return ordered
    return [ordered[index]] if 0 <= index < len(ordered) else []


def regions_from_mask(mask: torch.Tensor, frame_count: int, source_size: tuple[int, int], choice: str,
                      index: int = 0) -> list[list[Region]]:
    """Per frame, the connected areas of ``mask >= 0.5`` (8-connected) chosen by ``choice``.

    mask: ``[H,W]`` or ``[M,H,W]`` with M 1 (used for every frame) or the batch size, at the image size.
    """
    masks = mask[None] if mask.ndim == 2 else mask
    if masks.ndim != 3:
        raise FaceCropError(f"InstantID Face Crop: the mask must be [H,W] or [B,H,W]; got shape {tuple(mask.shape)}.")
    if masks.shape[0] not in (1, frame_count):
        _check_source(frame_count, "mask", int(masks.shape[0]))
    width, height = source_size
    if tuple(masks.shape[1:]) != (height, width):
        raise FaceCropError(
            f"InstantID Face Crop: the mask is {masks.shape[2]}x{masks.shape[1]} but the image is {width}x{height}. "
            "Use a mask of the image's size (e.g. resize it with 'Upscale Image' on a mask converted to an image)."
        )
    binary = (masks.detach().to("cpu", torch.float32) >= 0.5).numpy()
    out = []
    for i in range(frame_count):
        frame_mask = binary[i if binary.shape[0] > 1 else 0].astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(frame_mask, connectivity=8)
        regions = []
        for label in range(1, count):
            x, y, w, h = (int(v) for v in stats[label, :4])
            box = np.array([x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5], dtype=np.float64)
            regions.append(Region(i, box, mask=labels == label))
        out.append(choose_regions(regions, choice, index))
    return out


def drop_small(regions: list[list[Region]], min_px: float = MIN_FACE_PX) -> tuple[list[list[Region]], list[str]]:
    """Leave out regions whose box is smaller than ``min_px`` on its longer side; notes say which."""
    kept, notes = [], []
    for frame in regions:
        keep = []
        for r in frame:
            if max(r.width, r.height) < min_px:
                notes.append(f"frame {r.frame + 1}: left out a {r.width:.0f}x{r.height:.0f} px region, smaller than {min_px} px")
            else:
                keep.append(r)
        kept.append(keep)
    return kept, notes


# ---------------------------------------------------------------- geometry


def roll_angle(keypoints: np.ndarray) -> float:
    """Angle (radians, image axes: x right, y down) of the eye line from keypoint 0 to keypoint 1."""
    (x0, y0), (x1, y1) = np.asarray(keypoints, np.float64)[:2]
    return math.atan2(y1 - y0, x1 - x0)


def upright_size(region: Region, angle: float) -> tuple[float, float]:
    """The face box's width and height once the face is turned upright: swapped near +-90 degrees."""
    if round(angle / (math.pi / 2)) % 2:
        return region.height, region.width
    return region.width, region.height


def output_size(aspect: float, mode: str, width: int, height: int) -> tuple[int, int]:
    """Crop size in pixels. size: exactly ``width`` x ``height``. area: about ``width * height`` pixels with
    the crops' own aspect ``aspect`` (w/h), each side a multiple of 8 (at least 64)."""
    if mode == "size":
        return int(width), int(height)
    if mode != "area":
        raise ValueError(f"Unknown resize mode {mode!r}; expected one of {RESIZE_MODES}.")
    area = float(width) * float(height)
    h = math.sqrt(area / aspect)
    return max(64, round(aspect * h / 8) * 8), max(64, round(h / 8) * 8)


def crop_matrix(centre: np.ndarray, angle: float, scale: float, size: tuple[int, int]) -> np.ndarray:
    """Source -> crop ``[2,3]``: rotate by -angle about ``centre``, scale, centre in a ``size`` crop."""
    c, s = math.cos(angle), math.sin(angle)
    linear = scale * np.array([[c, s], [-s, c]], dtype=np.float64)
    target = np.array([(size[0] - 1) / 2, (size[1] - 1) / 2], dtype=np.float64)
    return np.concatenate([linear, (target - linear @ centre)[:, None]], axis=1)


def _ellipse_mask(size: tuple[int, int], centre: np.ndarray, semi_axes: tuple[float, float]) -> np.ndarray:
    """Soft ellipse, 0.5 on the ellipse, smoothstep over :data:`MASK_SOFTNESS` of the radius."""
    w, h = size
    dx = ((np.arange(w, dtype=np.float32) - np.float32(centre[0])) / np.float32(semi_axes[0])) ** 2
    dy = ((np.arange(h, dtype=np.float32) - np.float32(centre[1])) / np.float32(semi_axes[1])) ** 2
    r = np.sqrt(dy[:, None] + dx[None, :])
    t = np.clip((1 + MASK_SOFTNESS / 2 - r) / MASK_SOFTNESS, 0, 1)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def _region_mask(region: Region, matrix: np.ndarray, size: tuple[int, int], scale: float, upright: tuple[float, float]) -> np.ndarray:
    if region.mask is None:
        centre = transform_points(matrix, region.centre[None])[0]
        axes = (max(upright[0] * scale * MASK_GROW / 2, 1.0), max(upright[1] * scale * MASK_GROW / 2, 1.0))
        return _ellipse_mask(size, centre, axes)
    moved = warp(region.mask.astype(np.float32), matrix, size, cv2.INTER_LINEAR, cv2.BORDER_CONSTANT)
    sigma = MASK_BLUR * min(size)
    return np.clip(cv2.GaussianBlur(moved, (0, 0), sigma), 0, 1).astype(np.float32)


def plan_crops(regions: list[list[Region]], source_size: tuple[int, int], padding: float = 1.0,
               roll_correction: bool = True, resize: str = "area", width: int = 1024, height: int = 1024,
               notes: tuple[str, ...] = ()) -> FaceCrops:
    """The crop transforms for every region, all at one size (an IMAGE batch has one size).

    Each region is padded by ``padding`` x its longer side on every side, turned
    upright (faces with keypoints, when ``roll_correction``), grown to the
    common aspect (never shrunk, so the face stays whole) and scaled to the
    crop size (see :func:`output_size`; ``area`` takes the regions' mean aspect).
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0 (a fraction of the face box); got {padding}.")
    flat = [r for frame in regions for r in frame]
    specs = []
    for region in flat:
        angle = roll_angle(region.keypoints) if roll_correction and region.keypoints is not None else 0.0
        upright = upright_size(region, angle)
        pad = padding * max(upright)
        specs.append((region, angle, upright, upright[0] + 2 * pad, upright[1] + 2 * pad))
    if not specs:
        return FaceCrops((), tuple(source_size), len(regions), tuple(notes))
    aspect = math.exp(sum(math.log(s[3] / s[4]) for s in specs) / len(specs))
    size = output_size(aspect, resize, width, height)
    transforms = []
    for region, angle, upright, rw, rh in specs:
        rw, rh = max(rw, rh * size[0] / size[1]), max(rh, rw * size[1] / size[0])
        scale = size[0] / rw
        matrix = crop_matrix(region.centre, angle, scale, size)
        transforms.append(CropTransform(region.frame, matrix, size, math.degrees(angle),
                                        _region_mask(region, matrix, size, scale, upright)))
    return FaceCrops(tuple(transforms), tuple(source_size), len(regions), tuple(notes))


# ---------------------------------------------------------------- outputs


def crop_images(images: torch.Tensor, crops: FaceCrops) -> torch.Tensor:
    """The crops as an IMAGE ``[N,H,W,C]`` (same dtype as ``images``); outside the image, edge pixels repeat."""
    frames = images.detach().to("cpu", torch.float32).numpy()
    out = np.empty((len(crops.transforms), crops.transforms[0].size[1], crops.transforms[0].size[0], frames.shape[-1]), np.float32)
    for i, t in enumerate(crops.transforms):
        src = frames[t.frame]
        out[i] = warp(src, t.matrix, t.size)
        # Cubic interpolation overshoots at hard edges: keep values inside the range of the source pixels used.
        lo, hi = value_range(src, cv2.invertAffineTransform(t.matrix), t.size)
        np.clip(out[i], lo, hi, out=out[i])
    return torch.from_numpy(out).to(images.dtype)


def crop_masks(crops: FaceCrops) -> torch.Tensor:
    """The face-region masks, MASK ``[N,H,W]`` in crop pixels."""
    return torch.from_numpy(np.stack([t.face_mask for t in crops.transforms]))


def faces_in_crops(regions: list[list[Region]], crops: FaceCrops, model_pack: str = "antelopev2",
                   policy: str = "error") -> Faces:
    """FACES with one slot per crop: the face moved into crop pixels (``source_size`` = crop size), or
    ``None`` for mask regions. The box keeps the face's upright size around its moved centre (exact
    without roll correction)."""
    flat = [r for frame in regions for r in frame]
    records: list[FaceRecord | None] = []
    for region, t in zip(flat, crops.transforms, strict=True):
        if region.record is None:
            records.append(None)
            continue
        scale = math.sqrt(abs(np.linalg.det(t.matrix[:, :2])))
        w, h = upright_size(region, math.radians(t.roll_degrees))
        cx, cy = transform_points(t.matrix, region.centre[None])[0]
        bbox = np.array([cx - w * scale / 2, cy - h * scale / 2, cx + w * scale / 2, cy + h * scale / 2], np.float32)
        records.append(replace(region.record, bbox=bbox, source_size=t.size,
                               keypoints=transform_points(t.matrix, region.keypoints).astype(np.float32)))
    return Faces(frames=tuple(records), model_pack=model_pack, no_face_policy=policy, notes=crops.notes)


def placeholder(images: torch.Tensor, notes: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor, Faces, FaceCrops]:
    """Pass-through outputs when nothing was found: one small black crop, an empty mask, FACES with no face
    (policy pass_through, so Apply InstantID leaves the model alone) and a CROP the paste ignores."""
    channels = int(images.shape[-1])
    size = PLACEHOLDER_SIZE
    crop = torch.zeros((1, size, size, channels), dtype=images.dtype)
    faces = Faces(frames=(None,), no_face_policy="pass_through", notes=notes)
    info = FaceCrops((), (int(images.shape[2]), int(images.shape[1])), int(images.shape[0]), notes)
    return crop, torch.zeros((1, size, size)), faces, info


def crop_faces(images: torch.Tensor, faces: Faces | None = None, analyzer=None, mask: torch.Tensor | None = None,
               choice: str = "largest", index: int = 0, padding: float = 1.0, roll_correction: bool = True,
               resize: str = "area", width: int = 1024, height: int = 1024,
               policy: str = "error") -> tuple[torch.Tensor, torch.Tensor, Faces, FaceCrops]:
    """Image batch -> (crops IMAGE ``[N,H,W,C]``, face masks MASK ``[N,H,W]``, FACES in crop pixels, CROP).

    Exactly one source says what to crop: ``faces`` (the face each frame's
    analysis chose), ``analyzer`` (detects itself; ``choice`` largest, index or
    all faces per frame) or ``mask`` (its connected areas, chosen the same way).
    Regions under :data:`MIN_FACE_PX` are left out. Nothing left: ``policy``
    ``error`` raises :class:`FaceCropError`, ``pass_through`` returns
    :func:`placeholder` outputs.
    """
    given = [name for name, value in (("faces", faces), ("face_analyzer", analyzer), ("mask", mask)) if value is not None]
    if len(given) != 1:
        raise FaceCropError(
            "InstantID Face Crop needs exactly one of faces, face_analyzer or mask to know what to crop; "
            f"got {', '.join(given) if given else 'none'}. Connect one (faces from 'InstantID Face Analyze' of these "
            "images, the analyzer to detect here, or a mask of the areas)."
        )
    if policy not in NO_FACE_POLICIES:
        raise ValueError(f"Unknown no-face policy {policy!r}; expected one of {NO_FACE_POLICIES}.")
    images = images[None] if images.ndim == 3 else images
    check_finite(images, "InstantID Face Crop", "image", "the node that made the image (a failed decode, an upscaler, a VAE in "
                 "the wrong precision)")
    frame_count, source_size = int(images.shape[0]), (int(images.shape[2]), int(images.shape[1]))
    model_pack = "antelopev2"
    if faces is not None:
        regions, model_pack = regions_from_faces(faces, frame_count, source_size), faces.model_pack
    elif analyzer is not None:
        from .face_analysis import find_faces

        regions = regions_from_faces(find_faces(images, analyzer, choice, index), frame_count, source_size)
        model_pack = analyzer.pack
    else:
        regions = regions_from_mask(mask, frame_count, source_size, choice, index)
    what = "mask area" if mask is not None else "face"
    notes = [f"frame {i + 1}: no {what}" for i, frame in enumerate(regions) if not frame]
    regions, small = drop_small(regions)
    notes += small
    if not any(regions):
        reason = "; ".join(notes) or f"no {what}"
        if policy == "error":
            raise FaceCropError(
                f"InstantID Face Crop: nothing to crop in {frame_count} image(s) ({reason}). Fix: use images with a visible "
                f"face of at least {MIN_FACE_PX} px (upscale small images first), check the face choice and index, draw "
                "the mask over the face, or set if_none to 'pass_through' to leave the images unchanged."
            )
        log.warning("InstantID Face Crop: nothing to crop (%s); passing the images through unchanged.", reason)
        return placeholder(images, tuple(notes))
    for note in notes:
        log.info("InstantID Face Crop: %s", note)
    plan = plan_crops(regions, source_size, padding, roll_correction, resize, width, height, tuple(notes))
    return crop_images(images, plan), crop_masks(plan), faces_in_crops(regions, plan, model_pack), plan
