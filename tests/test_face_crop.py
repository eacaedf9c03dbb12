# ruff: noqa: F811  (pytest fixtures imported from face_fixtures are redefined as arguments)
"""Face crop and paste geometry (instantid.face_crop / face_paste), checked against expectations built here.

The round trip uses a smooth picture with steep gradients (about 7 grey levels
per pixel): resampling it twice costs well under 1 LSB, while a geometry error
of a quarter pixel costs more than 1 LSB, so the 1-LSB bound tests the
geometry. Keypoints are checked two ways: against the transform written out
from its definition, and against bright dots painted at the keypoints and
found again in the cropped pixels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from face_fixtures import blank_images, face_analyzer, face_pack_root, paint_face  # noqa: F401

from instantid import face_crop, face_paste, keypoints
from instantid.bench_face_crop import smooth_images
from instantid.face_crop import FaceCropError
from instantid.faces import FaceRecord, Faces
from instantid.warp import transform_points

LSB = 1 / 255
SIZE = 512
# Eyes, nose, mouth corners of an upright face, as fractions of the box side around its centre.
UPRIGHT = np.array([[-0.2, -0.12], [0.2, -0.12], [0.0, 0.08], [-0.15, 0.28], [0.15, 0.28]])



def face(cx: float, cy: float, side: float, roll_deg: float = 0.0, size: tuple[int, int] = (SIZE, SIZE)) -> FaceRecord:
    """A face record: square box of ``side`` around (cx, cy), keypoints of an upright face turned by ``roll_deg``."""
    t = math.radians(roll_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    points = (UPRIGHT * side) @ rot.T + [cx, cy]
    box = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)
    return FaceRecord(bbox=box, keypoints=points.astype(np.float32), embedding=np.ones(512, np.float32), score=0.9, source_size=size)


def expected_matrix(cx, cy, side, roll_deg, padding, out_w, out_h):
    """Source -> crop, written out from the definition: rotate by -roll about the box centre, scale the padded
    square (side * (1 + 2 padding), grown to the crop's aspect) to the crop, centre at ((W-1)/2, (H-1)/2)."""
    region = side * (1 + 2 * padding)
    region_w, region_h = max(region, region * out_w / out_h), max(region, region * out_h / out_w)
    s = out_w / region_w
    assert math.isclose(s, out_h / region_h)
    t = math.radians(roll_deg)
    a = s * np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
    return np.concatenate([a, (np.array([(out_w - 1) / 2, (out_h - 1) / 2]) - a @ [cx, cy])[:, None]], 1)


def apply(m, pts):
    return np.asarray(pts, np.float64) @ m[:2, :2].T + m[:, 2]


def ellipse_radius(cx, cy, side, roll_deg, height=SIZE, width=SIZE):
    """Normalised radius of every source pixel in the face-mask ellipse (semi-axes 0.7 x side, turned by roll)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    t = math.radians(roll_deg)
    u = (xs - cx) * math.cos(t) + (ys - cy) * math.sin(t)
    v = -(xs - cx) * math.sin(t) + (ys - cy) * math.cos(t)
    axis = 0.7 * side
    return np.sqrt((u / axis) ** 2 + (v / axis) ** 2), axis


def crop(images, faces, **kw):
    kw.setdefault("resize", "size")
    return face_crop.crop_faces(images, faces=faces, **kw)


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("roll", [0, 17, -45, 90, -90])
@pytest.mark.parametrize("side", [48, 200])  # the crop enlarges the face ~7x and ~1.7x
def test_crop_then_paste_of_an_unchanged_crop_returns_the_original(roll, side):
    images = smooth_images()
    cx, cy = 251.3, 262.8
    crops, _, _, info = crop(images, Faces((face(cx, cy, side, roll),)))
    out = face_paste.paste_faces(images, crops, info, feather=8)
    error = (out - images).abs().max().item()
    assert error <= LSB, f"round trip off by {error / LSB:.2f} LSB"
    r, axis = ellipse_radius(cx, cy, side, roll)
    outside = torch.from_numpy(r > 1 + 1.5 / axis)
    assert torch.equal(out[0][outside], images[0][outside]), "pixels outside the blended region changed"
    assert (out != images).any(), "nothing was pasted"


@pytest.mark.parametrize("out_size", [960, 256])  # 0.94x: plain resampling; 0.25x: area-averaged first
def test_round_trip_through_a_smaller_crop_loses_only_what_the_crop_cannot_hold(out_size):
    """A crop smaller than its region keeps detail only down to its own pixel size: on a picture without finer
    detail than that the round trip is exact within 1 LSB too."""
    images = smooth_images(periods=(360, 600))
    cx, cy = 250.5, 248.2
    crops, _, _, info = crop(images, Faces((face(cx, cy, 340, 12),)), padding=0.5, width=out_size, height=out_size)
    out = face_paste.paste_faces(images, crops, info, feather=8)
    assert (out - images).abs().max().item() <= LSB


def test_a_quarter_pixel_geometry_error_would_break_the_round_trip():
    """The 1-LSB bound is tight enough to see geometry errors: shift the paste by 0.25 px and it fails."""
    images = smooth_images()
    crops, _, _, info = crop(images, Faces((face(250, 250, 100, 30),)))
    t = info.transforms[0]
    moved = t.matrix.copy()
    moved[:, 2] += t.matrix[:, :2] @ [0.25, 0.0]  # the paste now reads the crop a quarter source pixel off
    shifted = face_crop.FaceCrops((face_crop.CropTransform(t.frame, moved, t.size, t.roll_degrees, t.face_mask),),
                                  info.source_size, info.frame_count)
    out = face_paste.paste_faces(images, crops, shifted, feather=8)
    assert (out - images).abs().max().item() > 1.2 * LSB


def test_paste_changes_exactly_the_face_region_and_keeps_dtype():
    images = smooth_images()
    cx, cy, side, roll = 240.0, 270.0, 90.0, -30.0
    crops, masks, _, info = crop(images, Faces((face(cx, cy, side, roll),)))
    before = images.clone()
    out = face_paste.paste_faces(images, 1 - crops, info, feather=6)
    assert torch.equal(images, before), "the input image was modified"
    assert out.dtype == images.dtype and out.shape == images.shape
    r, axis = ellipse_radius(cx, cy, side, roll)
    changed = (out != images).any(-1)[0].numpy()
    assert not changed[r > 1 + 1.5 / axis].any()
    assert changed[r < 1 - 1.5 / axis].all()
    half = face_paste.paste_faces(images.half(), (1 - crops).half(), info, feather=6)
    assert half.dtype == torch.float16 and torch.equal(half[0][torch.from_numpy(r > 1 + 1.5 / axis)],
                                                        images.half()[0][torch.from_numpy(r > 1 + 1.5 / axis)])
    # The crop node's mask marks the same ellipse, in crop pixels: 0.5 on its border.
    m = expected_matrix(cx, cy, side, roll, 1.0, 1024, 1024)
    centre = apply(m, [[cx, cy]])[0]
    border = centre + [0.7 * side * m[0, 0] / math.cos(math.radians(roll)), 0]
    assert masks[0, round(centre[1]), round(centre[0])] == 1.0
    assert abs(float(masks[0, round(border[1]), round(border[0])]) - 0.5) < 0.05


def test_feather_is_a_ramp_of_the_given_width_inside_the_region():
    images = smooth_images()
    crops, _, _, info = crop(images, Faces((face(256.5, 256.5, 64),)), padding=1.0, width=512, height=512)
    out = face_paste.paste_faces(images, torch.ones_like(crops), info, feather=10, region="whole_crop")
    # No roll: the crop spans 256.5 +- 96, pixel edges at 160.5 and 352.5, so pixels 161 .. 352 are inside.
    alpha = ((out - images) / (1 - images))[0, 256, :, 0].numpy()
    inside = np.arange(161, 353)
    d = np.minimum(inside - 160, 353 - inside)  # distance to the nearest pixel outside
    t = np.clip((d - 0.5) / 10, 0, 1)
    np.testing.assert_allclose(alpha[inside], t * t * (3 - 2 * t), atol=1e-4)
    assert torch.equal(out[0, :, :161], images[0, :, :161]) and torch.equal(out[0, :, 353:], images[0, :, 353:])
    assert (out[0, 200:300, 180:330] == 1.0).all()  # the core is the crop itself


def test_face_at_the_border_with_padding_beyond_the_image():
    images = smooth_images()
    record = face(20.0, 30.0, 80.0)  # box reaches 20 px past the left and 10 px past the top edge
    crops, _, faces, info = crop(images, Faces((record,)), padding=1.0)
    assert crops.shape == (1, 1024, 1024, 3) and torch.isfinite(crops).all()
    out = face_paste.paste_faces(images, crops, info, feather=8)
    assert (out - images).abs().max().item() <= LSB
    white = face_paste.paste_faces(images, torch.ones_like(crops), info, feather=8)
    # The image's own edge is no seam: the face is fully replaced up to it, not faded out towards it.
    assert (white[0, 0:40, 0] == 1.0).all() and (white[0, 0, 0:40] == 1.0).all()
    np.testing.assert_allclose(faces.frames[0].keypoints, apply(expected_matrix(20, 30, 80, 0, 1.0, 1024, 1024), record.keypoints),
                               atol=1e-3)


# ---------------------------------------------------------------- keypoints


@pytest.mark.parametrize("roll", [-90, -60, -5, 0, 33, 90])
def test_keypoints_in_the_crop_are_the_transformed_keypoints_and_the_eyes_are_level(roll):
    record = face(300.0, 210.0, 120.0, roll)
    _, _, faces, info = crop(smooth_images(), Faces((record,)), padding=0.75, width=896, height=1152)
    moved = faces.frames[0]
    expected = apply(expected_matrix(300, 210, 120, roll, 0.75, 896, 1152), record.keypoints)
    np.testing.assert_allclose(moved.keypoints, expected, atol=1e-3)
    assert moved.source_size == (896, 1152)
    (lx, ly), (rx, ry) = moved.keypoints[:2]
    assert abs(ly - ry) < 1e-3 and lx < rx, "roll not undone: the eye line is not horizontal, left eye on the left"
    assert info.transforms[0].roll_degrees == pytest.approx(roll, abs=1e-4)
    # IdentityNet draws pose_faces with placement 'cover' at the generation size: exactly these points.
    np.testing.assert_allclose(keypoints.place_keypoints(moved, 896, 1152, "cover"), expected, atol=1e-3)


@pytest.mark.parametrize("roll", [0, 25, -90])
def test_keypoints_sit_on_the_cropped_pixels(roll):
    """Dots painted at the keypoints are found in the crop where the moved keypoints say."""
    record = face(256.0, 250.0, 160.0, roll)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    dots = sum(np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 2.5**2)) for x, y in record.keypoints)
    images = torch.from_numpy(np.repeat(dots[None, ..., None], 3, -1).astype(np.float32))
    crops, _, faces, _ = crop(images, Faces((record,)))
    picture = crops[0, ..., 0].double().numpy()
    cys, cxs = np.mgrid[0 : picture.shape[0], 0 : picture.shape[1]].astype(np.float64)
    for x, y in faces.frames[0].keypoints:
        near = (cxs - x) ** 2 + (cys - y) ** 2 < 20**2
        w = picture * near
        found = np.array([(w * cxs).sum() / w.sum(), (w * cys).sum() / w.sum()])
        assert np.abs(found - [x, y]).max() < 0.1, f"dot at {found}, keypoint at {(x, y)}"


def test_sizes_area_mode_and_isotropic_scale():
    record = face(250, 250, 100)
    crops, _, faces, _ = face_crop.crop_faces(smooth_images(), faces=Faces((record,)), resize="area", width=1024, height=1024)
    h, w = crops.shape[1:3]
    assert w % 8 == 0 and h % 8 == 0 and abs(w * h / 1024**2 - 1) < 0.02
    crops, _, faces, _ = crop(smooth_images(), Faces((record,)), width=640, height=1152)
    assert crops.shape[1:3] == (1152, 640)
    src, dst = record.keypoints.astype(np.float64), faces.frames[0].keypoints.astype(np.float64)
    ratios = [np.linalg.norm(dst[i] - dst[j]) / np.linalg.norm(src[i] - src[j]) for i in range(5) for j in range(i + 1, 5)]
    assert max(ratios) - min(ratios) < 1e-4, "the face was stretched"


def test_a_crop_returned_at_another_size_of_the_same_aspect_pastes_back():
    images = smooth_images()
    crops, _, _, info = crop(images, Faces((face(250, 250, 60, 20),)), width=512, height=512)
    bigger = torch.nn.functional.interpolate(crops.movedim(-1, 1), size=(1024, 1024), mode="bicubic", align_corners=False).movedim(1, -1)
    out = face_paste.paste_faces(images, bigger, info, feather=8)
    assert (out - images).abs().max().item() <= LSB
    with pytest.raises(FaceCropError, match="another aspect ratio"):
        face_paste.paste_faces(images, crops[:, :, :400], info)


# ---------------------------------------------------------------- batches and several faces


def test_batch_of_frames_and_several_faces_per_frame():
    images = smooth_images(batch=3)
    per_frame = [[face(130, 150, 70, 10), face(380, 330, 90, -20)], [], [face(250, 250, 110)]]
    regions = face_crop.regions_from_faces(per_frame, 3, (SIZE, SIZE))
    info = face_crop.plan_crops(regions, (SIZE, SIZE), 1.0, True, "size", 512, 512)
    crops = face_crop.crop_images(images, info)
    assert [t.frame for t in info.transforms] == [0, 0, 2] and crops.shape == (3, 512, 512, 3)
    out = face_paste.paste_faces(images, crops, info, feather=6)
    assert (out - images).abs().max().item() <= LSB
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    painted = face_paste.paste_faces(images, colours[:, None, None, :].expand_as(crops).clone(), info, feather=2)
    assert torch.equal(painted[1], images[1]), "a frame without a face changed"
    for (cx, cy), frame, colour in (((130, 150), 0, colours[0]), ((380, 330), 0, colours[1]), ((250, 250), 2, colours[2])):
        assert torch.equal(painted[frame, cy, cx], colour)


def test_faces_from_analysis_crop_one_per_frame_and_skip_empty_frames(face_analyzer):
    from instantid import face_analysis

    images = paint_face(paint_face(blank_images(batch=3), 200, 150, 64, 80, frame=0), 100, 300, 72, 90, frame=2)
    faces, _ = face_analysis.analyze(images, face_analyzer, policy="skip")
    crops, masks, moved, info = face_crop.crop_faces(images, faces=faces, resize="size", width=256, height=256)
    assert [t.frame for t in info.transforms] == [0, 2] and crops.shape[0] == masks.shape[0] == len(moved) == 2
    assert any("frame 2: no face" in n for n in info.notes)
    out = face_paste.paste_faces(images, crops, info)
    assert torch.equal(out[1], images[1])


def test_analyzer_all_faces_in_reading_order(face_analyzer):
    images = paint_face(paint_face(paint_face(blank_images(), 300, 60, 64, 80), 40, 70, 64, 80), 170, 330, 64, 80)
    crops, _, moved, info = face_crop.crop_faces(images, analyzer=face_analyzer, choice="all", resize="size", width=128, height=128)
    assert crops.shape[0] == 3
    centres = [transform_points(t.inverse(), [[63.5, 63.5]])[0] for t in info.transforms]
    np.testing.assert_allclose(centres, [[72, 110], [332, 100], [202, 370]], atol=1.5)
    assert all(f is not None and f.embedding.shape == (512,) for f in moved.frames)
    _, _, _, one = face_crop.crop_faces(images, analyzer=face_analyzer, choice="index", index=1, resize="size", width=128, height=128)
    np.testing.assert_allclose(transform_points(one.transforms[0].inverse(), [[63.5, 63.5]])[0], [332, 100], atol=1.5)


def test_mask_areas_are_cropped_and_pasted():
    images = smooth_images()
    mask = torch.zeros(1, SIZE, SIZE)
    mask[0, 100:160, 50:130] = 1.0  # 80 x 60
    mask[0, 300:420, 300:400] = 1.0  # 100 x 120, the largest
    mask[0, 10:20, 450:460] = 1.0  # too small: left out
    crops, masks, faces, info = face_crop.crop_faces(images, mask=mask, choice="all", padding=0.5, resize="size", width=256, height=256)
    assert len(info.transforms) == 2 and faces.frames == (None, None)
    assert any("smaller than 32 px" in n for n in info.notes)
    out = face_paste.paste_faces(images, 1 - crops, info, feather=4, region="face")
    changed = (out != images).any(-1)[0]
    expected = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    expected[100:160, 50:130] = expected[300:420, 300:400] = True
    # The crop node's mask is the area softened by a blur (0.5 on straight edges, corners rounded by a few px).
    assert changed[104:156, 54:126].all() and changed[304:416, 304:396].all()
    assert changed[101:159, 70:110].all() and changed[330:390, 301:399].all()
    grown = torch.nn.functional.max_pool2d(expected[None].float(), 3, 1, 1)[0].bool()
    assert not (changed & ~grown).any(), "pixels more than 1 px outside the mask areas changed"
    _, _, _, largest = face_crop.crop_faces(images, mask=mask, choice="largest", resize="size", width=256, height=256)
    np.testing.assert_allclose(transform_points(largest.transforms[0].inverse(), [[127.5, 127.5]])[0], [349.5, 359.5])


def test_colour_matching_moves_the_pasted_colour_to_the_original():
    images = smooth_images()
    crops, _, _, info = crop(images, Faces((face(256, 256, 120),)), width=512, height=512)
    tinted = (crops * torch.tensor([0.6, 1.0, 1.0]) + torch.tensor([0.0, 0.25, 0.0])).clamp(0, 1)
    r, _ = ellipse_radius(256, 256, 120, 0)
    core = torch.from_numpy(r < 0.8)
    plain = face_paste.paste_faces(images, tinted, info, feather=4)
    matched = face_paste.paste_faces(images, tinted, info, feather=4, colour_match=True)
    target = images[0][core].mean(0)
    assert (plain[0][core].mean(0) - target).abs().max() > 0.15
    assert (matched[0][core].mean(0) - target).abs().max() < 0.02


# ---------------------------------------------------------------- bad inputs


def test_no_face_errors_or_passes_through(face_analyzer):
    images = blank_images(batch=2)
    with pytest.raises(FaceCropError, match="nothing to crop in 2 image"):
        face_crop.crop_faces(images, analyzer=face_analyzer)
    crops, masks, faces, info = face_crop.crop_faces(images, analyzer=face_analyzer, policy="pass_through")
    assert crops.shape == (1, 64, 64, 3) and not masks.any() and faces.found == [] and faces.no_face_policy == "pass_through"
    assert info.passes_through
    assert torch.equal(face_paste.paste_faces(images, torch.rand(1, 64, 64, 3), info), images)


def test_empty_mask_errors_or_passes_through():
    images = smooth_images()
    with pytest.raises(FaceCropError, match="no mask area"):
        face_crop.crop_faces(images, mask=torch.zeros(1, SIZE, SIZE))
    _, _, _, info = face_crop.crop_faces(images, mask=torch.zeros(SIZE, SIZE), policy="pass_through")
    assert info.passes_through


def test_faces_smaller_than_32_px_are_left_out_with_a_reason():
    images = smooth_images()
    with pytest.raises(FaceCropError, match=r"20x20 px region, smaller than 32 px"):
        crop(images, Faces((face(200, 200, 20),)))
    _, _, faces, info = crop(images, Faces((face(200, 200, 33),)))
    assert len(info.transforms) == 1


def test_crop_from_another_image_size_or_batch_is_refused():
    images = smooth_images()
    crops, _, _, info = crop(images, Faces((face(250, 250, 80),)))
    with pytest.raises(FaceCropError, match=r"made from 512x512 images"):
        face_paste.paste_faces(smooth_images(height=384), crops, info)
    with pytest.raises(FaceCropError, match=r"batch of 1 image"):
        face_paste.paste_faces(smooth_images(batch=2), crops, info)
    with pytest.raises(FaceCropError, match=r"holds 1 crop"):
        face_paste.paste_faces(images, torch.cat([crops, crops]), info)


def test_inputs_that_do_not_fit_are_refused():
    images = smooth_images()
    with pytest.raises(FaceCropError, match="found in a 512x512 image, but the image to crop is 512x384"):
        crop(smooth_images(height=384), Faces((face(250, 250, 80),)))
    with pytest.raises(FaceCropError, match="FACES has 1 frame"):
        crop(smooth_images(batch=2), Faces((face(250, 250, 80),)))
    with pytest.raises(FaceCropError, match="exactly one of faces, face_analyzer or mask"):
        face_crop.crop_faces(images)
    with pytest.raises(FaceCropError, match="exactly one of faces, face_analyzer or mask"):
        face_crop.crop_faces(images, faces=Faces((face(250, 250, 80),)), mask=torch.ones(1, SIZE, SIZE))
    with pytest.raises(FaceCropError, match="the mask is 256x256 but the image is 512x512"):
        face_crop.crop_faces(images, mask=torch.ones(1, 256, 256))


def test_nan_pixels_are_refused_naming_the_frame():
    images = smooth_images(batch=2)
    crops, _, _, info = crop(images, Faces((face(250, 250, 80), face(250, 250, 80))))
    broken = images.clone()
    broken[1, 5, 5, 0] = float("nan")
    with pytest.raises(FaceCropError, match="image 2 of 2 has pixel values that are NaN"):
        crop(broken, Faces((face(250, 250, 80), face(250, 250, 80))))
    crops[0, 3, 3, 1] = float("inf")
    with pytest.raises(FaceCropError, match="crop 1 of 2 has pixel values that are NaN or infinite.*fp16"):
        face_paste.paste_faces(images, crops, info)
