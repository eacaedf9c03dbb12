"""Face regions at the generation size, and who goes where in a group photo.

A face region is an ellipse or a box around one face (its detection box and
keypoints), optionally grown and feathered, mapped onto the generation canvas
exactly as the keypoint image maps the face (``keypoints.place_keypoints``,
cover or contain). With one face this is the reference's region control: the
identity acts only inside the face region, the prompt everywhere.

Coordinates: canvas pixel (row i, column j) covers ``[j, j+1) x [i, i+1)`` and
is tested at its centre ``(j + 0.5, i + 0.5)``.

Region rules (the README repeats them):

- region box = the union of the face's detection box and its 5 keypoints,
  in source pixels; ``grow`` g scales its width and height by ``1 + g`` about
  its centre (0.5: half as wide and high again);
- ``ellipse`` is the ellipse inscribed in that box, ``box`` the box itself;
- ``feather`` f pixels: the region is 1, and the mask falls linearly to 0
  over f pixels outside it (measured along the axes; along rays from the
  centre for the ellipse);
- overlapping regions of several people, ``overlap="nearest"``: a pixel
  belongs to the person whose region is nearest, in units of each region's
  own size (normalised distance: ``max(|dx|/w, |dy|/h)`` for a box,
  ``sqrt((dx/w)^2 + (dy/h)^2)`` for an ellipse, w and h the half sizes;
  ties go to the lower identity number); every other mask is 0 there, so
  no two masks are ever non-zero at the same pixel. ``overlap="share"``
  keeps the masks as drawn: where they overlap, each identity acts at its
  own strength and their contributions add.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch

from .errors import InstantIDError
from .faces import FaceRecord, Faces
from .keypoints import draw_keypoints, place_keypoints

log = logging.getLogger(__name__)

SHAPES = ("ellipse", "box")
PLACEMENTS = ("cover", "contain")
OVERLAPS = ("nearest", "share")


class FaceCountError(InstantIDError, ValueError):
    """The group photo's faces and the identities given cannot be paired."""


@dataclass(frozen=True)
class Region:
    """One face region on the canvas, in canvas pixels, before feathering.

    cx, cy: centre. half_w, half_h: half width and half height (> 0).
    shape: ``"ellipse"`` or ``"box"``.
    """

    cx: float
    cy: float
    half_w: float
    half_h: float
    shape: str


def face_region(record: FaceRecord, width: int, height: int, placement: str = "cover", shape: str = "ellipse",
                grow: float = 0.0) -> Region:
    """The region of ``record`` on a ``width`` x ``height`` canvas (see the module rules).

    The centre and the two half-axis end points are mapped through
    ``place_keypoints`` itself, so a region can never drift from where the
    keypoint image puts the same face.
    """
    if shape not in SHAPES:
        raise ValueError(f"Unknown region shape {shape!r}; expected one of {SHAPES}.")
    if placement not in PLACEMENTS:
        raise ValueError(f"Unknown placement {placement!r} for a face region; expected one of {PLACEMENTS}.")
    if grow < 0:
        raise ValueError(f"grow must be 0 or more (a fraction of the face size); got {grow}.")
    kps = np.asarray(record.keypoints, dtype=np.float64).reshape(-1, 2)
    x1, y1, x2, y2 = (float(v) for v in record.bbox)
    x1, x2 = min(x1, float(kps[:, 0].min())), max(x2, float(kps[:, 0].max()))
    y1, y2 = min(y1, float(kps[:, 1].min())), max(y2, float(kps[:, 1].max()))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half_w, half_h = (x2 - x1) / 2 * (1 + grow), (y2 - y1) / 2 * (1 + grow)
    # place_keypoints maps exactly five points; the last two are padding.
    probe = np.array([[cx, cy], [cx + half_w, cy], [cx, cy + half_h], [cx, cy], [cx, cy]], dtype=np.float32)
    mapped = place_keypoints(dataclasses.replace(record, keypoints=probe), width, height, placement)
    return Region(cx=float(mapped[0, 0]), cy=float(mapped[0, 1]),
                  half_w=max(float(mapped[1, 0] - mapped[0, 0]), 0.5), half_h=max(float(mapped[2, 1] - mapped[0, 1]), 0.5),
                  shape=shape)


def _offsets(region: Region, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    xs = np.arange(int(width), dtype=np.float64) + 0.5
    ys = np.arange(int(height), dtype=np.float64) + 0.5
    return np.abs(xs[None, :] - region.cx), np.abs(ys[:, None] - region.cy)


def normalised_distance(region: Region, width: int, height: int) -> np.ndarray:
    """``[height, width]`` float64: <= 1 inside the region, in units of the region's own half sizes."""
    dx, dy = _offsets(region, width, height)
    if region.shape == "box":
        return np.maximum(dx / region.half_w, dy / region.half_h)
    return np.sqrt((dx / region.half_w) ** 2 + (dy / region.half_h) ** 2)


def region_mask(region: Region, width: int, height: int, feather: float = 0.0) -> np.ndarray:
    """``[height, width]`` float32 in 0..1: 1 inside, falling to 0 over ``feather`` pixels outside."""
    if feather < 0:
        raise ValueError(f"feather must be 0 or more pixels; got {feather}.")
    dx, dy = _offsets(region, width, height)
    if region.shape == "box":
        outside = np.maximum(dx - region.half_w, dy - region.half_h)
        if feather == 0:
            return (outside <= 0).astype(np.float32)
        return np.clip(1.0 - outside / feather, 0.0, 1.0).astype(np.float32)
    r = np.sqrt((dx / region.half_w) ** 2 + (dy / region.half_h) ** 2)
    if feather == 0:
        return (r <= 1).astype(np.float32)
    r_outer = np.sqrt((dx / (region.half_w + feather)) ** 2 + (dy / (region.half_h + feather)) ** 2)
    # Along a ray from the centre r and r_outer grow in proportion: this is linear from r = 1 to r_outer = 1.
    with np.errstate(divide="ignore", invalid="ignore"):
        ramp = (1.0 - r_outer) / (1.0 - r_outer / r)
    return np.where(r <= 1, 1.0, np.clip(np.nan_to_num(ramp), 0.0, 1.0)).astype(np.float32)


def people_masks(regions: list[Region], width: int, height: int, feather: float = 0.0, overlap: str = "nearest") -> torch.Tensor:
    """One mask per region, ``[N, height, width]`` float32, overlaps resolved by ``overlap`` (module rules)."""
    if overlap not in OVERLAPS:
        raise ValueError(f"Unknown overlap rule {overlap!r}; expected one of {OVERLAPS}.")
    if not regions:
        return torch.zeros((0, int(height), int(width)), dtype=torch.float32)
    masks = np.stack([region_mask(r, width, height, feather) for r in regions])
    if overlap == "nearest" and len(regions) > 1:
        owner = np.argmin(np.stack([normalised_distance(r, width, height) for r in regions]), axis=0)
        masks = masks * (owner[None] == np.arange(len(regions))[:, None, None])
    return torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))


def face_masks(faces: Faces, width: int, height: int, placement: str = "cover", shape: str = "box", grow: float = 0.0,
               feather: float = 0.0) -> torch.Tensor:
    """One region mask per frame of ``faces`` (all-zero where a frame has no face): ``[N, height, width]`` float32.

    Frames are independent (no overlap rule): each is the region of its own face.
    """
    out = torch.zeros((len(faces), int(height), int(width)), dtype=torch.float32)
    for i, record in enumerate(faces.frames):
        if record is not None:
            region = face_region(record, width, height, placement, shape, grow)
            out[i] = torch.from_numpy(region_mask(region, width, height, feather))
    return out


# ---------------------------------------------------------------- who goes where

ORDERS = ("left_to_right", "largest_first", "indices")
PERSON_COLOURS = ((0, 200, 255), (255, 160, 0), (120, 255, 80), (255, 80, 200), (255, 255, 0), (160, 120, 255))  # RGB


def parse_indices(text: str, face_count: int, identity_count: int) -> list[int]:
    """``"2, 0"`` -> ``[2, 0]``: identity i takes face number ``indices[i]`` (reading order, as on the preview)."""
    try:
        indices = [int(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError as exc:
        raise FaceCountError(f"face indices must be whole numbers separated by commas, like '1, 0'; got {text!r}.") from exc
    if len(indices) != identity_count:
        raise FaceCountError(
            f"face indices {text!r} list {len(indices)} face(s) for {identity_count} identit{'y' if identity_count == 1 else 'ies'}; "
            f"give one face number per identity, in identity order (the group photo has faces 0..{face_count - 1}, "
            "numbered on the preview)."
        )
    bad = [i for i in indices if not 0 <= i < face_count]
    if bad:
        raise FaceCountError(f"face indices {bad} do not exist: the group photo has {face_count} face(s), numbered 0..{face_count - 1} "
                             "in reading order (see the preview).")
    if len(set(indices)) != len(indices):
        raise FaceCountError(f"face indices {text!r} name a face twice; each face can take only one identity.")
    return indices


def assign_faces(group_faces: list[FaceRecord], identity_count: int, order: str, indices: str = "") -> list[int]:
    """For identity i, the number of the group-photo face it takes (``group_faces`` is in reading order).

    left_to_right: identity 0 takes the leftmost face (box centre x), and so on.
    largest_first: identity 0 takes the largest box, and so on (ties: reading order).
    indices: identity i takes face ``indices[i]``; only these faces are used.
    left_to_right and largest_first need exactly one identity per face.
    """
    if order not in ORDERS:
        raise ValueError(f"Unknown order {order!r}; expected one of {ORDERS}.")
    count = len(group_faces)
    if count == 0:
        raise FaceCountError("no face found in the group photo (also after retrying smaller detection sizes and padding). "
                             "Use a photo where every face is clearly visible, or lower the analyzer's detection size.")
    if order == "indices":
        return parse_indices(indices, count, identity_count)
    if count != identity_count:
        raise FaceCountError(
            f"the group photo has {count} face(s) but {identity_count} identit{'y was' if identity_count == 1 else 'ies were'} given. "
            "Give one identity per face (one frame each in the identities input, e.g. from 'InstantID Face Batch'), "
            f"or set order to 'indices' and list which faces to use, e.g. '{', '.join(str(i) for i in range(min(count, identity_count)))}'."
        )
    key = [float(f.bbox[0] + f.bbox[2]) if order == "left_to_right" else -f.area for f in group_faces]
    return sorted(range(count), key=lambda i: (key[i], i))


@dataclass(frozen=True)
class Person:
    """One identity placed on the canvas.

    identity: FACES with one frame, this person's reference face. face_number:
    which face of the group photo (reading order) they take the place of;
    pose: that face. keypoint_image: ``[1, H, W, 3]`` float 0..1, only this
    face's keypoints. mask: ``[H, W]`` float 0..1, this person's region.
    """

    identity: Faces
    face_number: int
    pose: FaceRecord
    region: Region
    keypoint_image: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class GroupLayout:
    """INSTANTID_GROUP: everyone's identity, pose and region at one generation size."""

    width: int
    height: int
    people: tuple[Person, ...]

    def keypoint_images(self) -> torch.Tensor:
        """``[N, H, W, 3]``, one image per person."""
        return torch.cat([p.keypoint_image for p in self.people])

    def masks(self) -> torch.Tensor:
        """``[N, H, W]``, one mask per person."""
        return torch.stack([p.mask for p in self.people])


def join_faces(parts: list[Faces]) -> Faces:
    """The frames of every FACES in ``parts``, in order, as one FACES (like an image batch, nothing resized).

    All parts must come from the same model pack (embeddings of different packs
    are not comparable). Weights are kept only when every part has them; the
    no-face policy is the common one, or ``error`` when they differ.
    """
    packs = sorted({p.model_pack for p in parts})
    if len(packs) > 1:
        raise FaceCountError(f"the faces to join come from different insightface packs ({', '.join(packs)}); analyse every "
                             "photo with the same Face Analyzer.")
    policies = {p.no_face_policy for p in parts}
    weights = None if any(p.weights is None for p in parts) else tuple(w for p in parts for w in p.weights)
    return Faces(frames=tuple(f for p in parts for f in p.frames), model_pack=packs[0] if packs else "antelopev2",
                 weights=weights, no_face_policy=policies.pop() if len(policies) == 1 else "error",
                 notes=tuple(n for p in parts for n in p.notes))


def identity_list(identities: Faces) -> list[Faces]:
    """One single-frame FACES per frame of ``identities`` (frame i = person i); an empty frame is an error."""
    missing = identities.missing_frames
    if missing:
        raise FaceCountError(
            f"identit{'y' if len(missing) == 1 else 'ies'} {', '.join(str(i) for i in missing)} of the identities input "
            "have no face (the reference photo's face was not found and its slot was kept empty). Use a reference photo "
            "with a clearly visible face for every person, or set that Face Analyze's no-face policy to 'error' to see which."
        )
    return [dataclasses.replace(identities, frames=(record,), weights=None, notes=()) for record in identities.frames]


def build_layout(group_faces: list[FaceRecord], identities: Faces, width: int, height: int, placement: str = "cover",
                 order: str = "left_to_right", indices: str = "", shape: str = "ellipse", grow: float = 0.5,
                 feather: float = 0.0, overlap: str = "nearest") -> GroupLayout:
    """Pair identities with the group photo's faces and draw each person's keypoints and mask at ``width`` x ``height``."""
    people_faces = identity_list(identities)
    chosen = assign_faces(group_faces, len(people_faces), order, indices)
    regions = [face_region(group_faces[n], width, height, placement, shape, grow) for n in chosen]
    masks = people_masks(regions, width, height, feather, overlap)
    people = []
    for i, (faces, n, region) in enumerate(zip(people_faces, chosen, regions, strict=True)):
        pose = group_faces[n]
        if not (0 <= region.cx < width and 0 <= region.cy < height):
            log.warning("InstantID group: face %d (identity %d) lies outside the %dx%d canvas with placement %r; "
                        "try placement 'contain'.", n, i, width, height, placement)
        drawn = draw_keypoints(place_keypoints(pose, width, height, placement), width, height)
        people.append(Person(identity=faces, face_number=n, pose=pose, region=region,
                             keypoint_image=torch.from_numpy(drawn.astype(np.float32) / 255.0)[None], mask=masks[i]))
    return GroupLayout(width=int(width), height=int(height), people=tuple(people))


def detect_group_faces(image: torch.Tensor, analyzer) -> tuple[list[FaceRecord], np.ndarray]:
    """Every face in one photo (``[H, W, C]`` or ``[1, H, W, C]``), in reading order, plus the photo as RGB uint8.

    Uses the analyzer's own detection (with its retries) and embeds every face,
    so each record is a complete FaceRecord.
    """
    from .face_analysis import detect_with_retry, image_to_rgb_uint8, reading_order, rgb_to_bgr

    if image.ndim == 4:
        if image.shape[0] != 1:
            raise FaceCountError(f"the group photo input has {image.shape[0]} images; give exactly one group photo.")
        image = image[0]
    rgb = image_to_rgb_uint8(image)
    bgr = rgb_to_bgr(rgb)
    detected, note = detect_with_retry(analyzer, bgr)
    if note:
        log.info("InstantID group photo: faces %s.", note)
    size = (int(rgb.shape[1]), int(rgb.shape[0]))
    return [FaceRecord(bbox=f.bbox.astype(np.float32), keypoints=f.keypoints.astype(np.float32),
                       embedding=analyzer.embed(bgr, f.keypoints), score=float(f.score), source_size=size)
            for f in reading_order(detected)], rgb


def draw_group_preview(rgb: np.ndarray, group_faces: list[FaceRecord], layout: GroupLayout) -> np.ndarray:
    """RGB uint8 copy of the group photo: every face boxed and numbered in reading order (the numbers
    ``indices`` uses); faces that took an identity in that person's colour with ``-> id i``, others grey."""
    import cv2

    canvas = rgb.copy()
    h, w = canvas.shape[:2]
    thick = max(1, round(min(h, w) / 256))
    font = max(0.4, min(h, w) / 640)
    taken = {p.face_number: i for i, p in enumerate(layout.people)}
    for n, face in enumerate(group_faces):
        person = taken.get(n)
        colour = (160, 160, 160) if person is None else PERSON_COLOURS[person % len(PERSON_COLOURS)]
        x1, y1, x2, y2 = (round(float(v)) for v in face.bbox)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thick)
        label = str(n) if person is None else f"{n} -> id {person}"
        cv2.putText(canvas, label, (x1 + 2, max(y1 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, font, colour, thick)
    return canvas
