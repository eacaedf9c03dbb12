"""Face-region masks and identity assignment (instantid.regions) against geometry worked out by hand.

Every expected pixel range below comes from the module's stated rules (pixel
centres at j + 0.5, cover/contain as in spec section 3) computed in the test,
never from the code under test.
"""
# ruff: noqa: F811  (pytest fixtures imported from face_fixtures are redefined as arguments)

from __future__ import annotations

import numpy as np
import pytest
import torch
from face_fixtures import blank_images, expected_keypoints, face_analyzer, face_pack_root, paint_face  # noqa: F401

from instantid import regions
from instantid.errors import InstantIDError
from instantid.faces import FaceRecord, Faces


def record(bbox, source_size, kps=None, embedding_seed=0) -> FaceRecord:
    x1, y1, x2, y2 = bbox
    if kps is None:  # well inside the box, as real keypoints are
        kps = expected_keypoints(x1, y1, x2 - x1, y2 - y1)
    emb = np.random.default_rng(embedding_seed).standard_normal(512).astype(np.float32)
    return FaceRecord(bbox=np.array(bbox, np.float32), keypoints=np.asarray(kps, np.float32), embedding=emb, score=0.9,
                      source_size=source_size)


def ones_block(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of the non-zero pixels, half-open; asserts they form one full block."""
    rows = torch.nonzero(mask.sum(1)).flatten()
    cols = torch.nonzero(mask.sum(0)).flatten()
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    assert float(mask[r0:r1, c0:c1].min()) == 1.0 and float(mask.sum()) == (r1 - r0) * (c1 - c0)
    return r0, r1, c0, c1


# ---------------------------------------------------------------- masks


def test_box_mask_is_the_face_box_scaled_like_the_keypoints():
    # Source 200x100 onto 400x200: both placements are a plain x2 resize.
    face = Faces(frames=(record((20, 10, 60, 50), (200, 100)),))
    for placement in ("cover", "contain"):
        mask = regions.face_masks(face, 400, 200, placement, "box", 0.0, 0)
        assert mask.shape == (1, 200, 400)
        # Box (40, 20)-(120, 100): pixel centres 40.5 .. 119.5 and 20.5 .. 99.5 are inside.
        assert ones_block(mask[0]) == (20, 100, 40, 120)


def test_cover_and_contain_follow_the_keypoint_placement():
    face = Faces(frames=(record((20, 10, 60, 50), (200, 100)),))
    # contain into 200x200: scale 1, photo centred vertically (offset y 50) -> box (20, 60)-(60, 100).
    assert ones_block(regions.face_masks(face, 200, 200, "contain", "box")[0]) == (60, 100, 20, 60)
    # cover into 200x200: scale 2, centre-cropped horizontally (offset x -100) -> box (-60, 20)-(20, 100).
    assert ones_block(regions.face_masks(face, 200, 200, "cover", "box")[0]) == (20, 100, 0, 20)
    # The keypoint image of the same face, same placement, puts every keypoint inside that region.
    from instantid.keypoints import keypoint_images

    for placement in ("cover", "contain"):
        kp = keypoint_images(face, 200, 200, placement)[0]
        mask = regions.face_masks(face, 200, 200, placement, "box")[0]
        drawn = kp.amax(-1) > 0
        assert drawn.any()
        # The 10 px discs may spill past the box; their centres (the keypoints) may not.
        kps = face.frames[0].keypoints.astype(np.float64)
        scale, off = (2.0, np.array([-100.0, 0.0])) if placement == "cover" else (1.0, np.array([0.0, 50.0]))
        for x, y in kps * scale + off:
            if 0 <= x < 200:
                assert mask[int(y), int(x)] == 1.0


def test_region_box_includes_keypoints_outside_the_detection_box():
    kps = [[5, 30], [50, 30], [40, 40], [35, 55], [45, 55]]  # left eye 15 px left of the box (a profile face)
    face = Faces(frames=(record((20, 20, 60, 60), (100, 100), kps=kps),))
    assert ones_block(regions.face_masks(face, 100, 100, "cover", "box")[0]) == (20, 60, 5, 60)


def test_grow_scales_the_box_about_its_centre():
    face = Faces(frames=(record((40, 40, 80, 60), (200, 200)),))
    # Box 40x20 centred (60, 50); grow 0.5 -> 60x30: (30, 35)-(90, 65).
    assert ones_block(regions.face_masks(face, 200, 200, "cover", "box", grow=0.5)[0]) == (35, 65, 30, 90)


def test_ellipse_area_and_axes():
    region = regions.Region(cx=100.0, cy=60.0, half_w=40.0, half_h=25.0, shape="ellipse")
    mask = torch.from_numpy(regions.region_mask(region, 200, 120))
    assert abs(float(mask.sum()) - np.pi * 40 * 25) < 0.01 * np.pi * 40 * 25
    # On the centre lines: |x + 0.5 - 100| <= 40 is inside.
    row = mask[59]  # centre 59.5: dy 0.5, so the half-width shrinks by a factor sqrt(1 - (0.5/25)^2) ~ 0.9998
    assert row[60] == 1 and row[139] == 1 and row[59] == 0 and row[140] == 0
    # The ellipse is inside its box, and misses the box corners.
    box = torch.from_numpy(regions.region_mask(regions.Region(100.0, 60.0, 40.0, 25.0, "box"), 200, 120))
    assert bool((mask <= box).all()) and box[36, 61] == 1 and mask[36, 61] == 0


def test_feather_fades_linearly_outside_the_region():
    f = 10
    box = regions.Region(cx=50.0, cy=50.0, half_w=20.0, half_h=20.0, shape="box")
    m = regions.region_mask(box, 120, 100, feather=f)
    # Row 50 (centre 50.5, inside vertically); column 74 has centre 74.5: 4.5 px right of the edge at 70.
    assert m[50, 69] == 1.0 and m[50, 74] == pytest.approx(1 - 4.5 / f) and m[50, 80] == 0.0
    # Corners: the larger of the two outside distances decides.
    assert m[22, 74] == pytest.approx(1 - max(4.5, 7.5) / f)
    ell = regions.Region(cx=50.5, cy=50.5, half_w=20.0, half_h=10.0, shape="ellipse")
    e = regions.region_mask(ell, 120, 100, feather=f)
    # Along the axes the ramp is exactly f pixels wide: x centre 50.5 + 20 + 3 -> 0.7; y 50.5 + 10 + 6 -> 0.4.
    assert e[50, 73] == pytest.approx(0.7) and e[66, 50] == pytest.approx(0.4)
    assert e[50, 70] == 1.0 and e[50, 81] == 0.0
    assert float(e.max()) == 1.0 and float(e.min()) == 0.0


def test_overlap_nearest_gives_each_pixel_to_one_person():
    a = regions.Region(cx=40.5, cy=20.5, half_w=30.0, half_h=10.0, shape="box")
    b = regions.Region(cx=80.5, cy=20.5, half_w=30.0, half_h=10.0, shape="box")
    near = regions.people_masks([a, b], 128, 40, overlap="nearest")
    share = regions.people_masks([a, b], 128, 40, overlap="share")
    # Overlap: centres 50.5 .. 70.5. Column 59 (59.5): 19/30 from a, 21/30 from b -> a. Column 61 -> b.
    # Column 60 (60.5) is 20/30 from both: the tie goes to the lower identity number (a).
    assert (near[0, 20, 59], near[1, 20, 59]) == (1, 0)
    assert (near[0, 20, 61], near[1, 20, 61]) == (0, 1)
    assert (near[0, 20, 60], near[1, 20, 60]) == (1, 0)
    assert float((near[0] * near[1]).abs().max()) == 0.0
    assert torch.equal(near[0] + near[1], share.amax(0))  # nothing lost, nothing doubled
    assert (share[0, 20, 59], share[1, 20, 59]) == (1, 1)
    # With feathering, each mask keeps its soft edge only where it owns the pixels.
    soft = regions.people_masks([a, b], 128, 40, feather=8, overlap="nearest")
    assert float((soft[0] * soft[1]).abs().max()) == 0.0 and 0 < float(soft[1, 20, 115]) < 1


def test_face_masks_keep_empty_frames_empty():
    faces = Faces(frames=(record((20, 20, 40, 40), (100, 100)), None), no_face_policy="skip")
    mask = regions.face_masks(faces, 64, 64)
    assert mask.shape == (2, 64, 64) and float(mask[0].sum()) > 0 and float(mask[1].abs().sum()) == 0


def test_bad_settings_are_named():
    face = record((20, 20, 40, 40), (100, 100))
    with pytest.raises(ValueError, match="shape"):
        regions.face_region(face, 64, 64, shape="circle")
    with pytest.raises(ValueError, match="placement"):
        regions.face_region(face, 64, 64, placement="box")
    with pytest.raises(ValueError, match="grow"):
        regions.face_region(face, 64, 64, grow=-1)
    with pytest.raises(ValueError, match="overlap"):
        regions.people_masks([regions.face_region(face, 64, 64)], 64, 64, overlap="mix")


# ---------------------------------------------------------------- assignment


def _row_of_faces():
    # Reading order = left to right; sizes: middle largest, then right, then left.
    return [record((10, 40, 40, 80), (300, 120)), record((110, 30, 170, 100), (300, 120)), record((220, 35, 265, 95), (300, 120))]


def test_assignment_orders():
    faces = _row_of_faces()
    assert regions.assign_faces(faces, 3, "left_to_right") == [0, 1, 2]
    assert regions.assign_faces(list(reversed(faces)), 3, "left_to_right") == [2, 1, 0]
    assert regions.assign_faces(faces, 3, "largest_first") == [1, 2, 0]
    assert regions.assign_faces(faces, 2, "indices", "2, 0") == [2, 0]
    assert regions.assign_faces(faces, 1, "indices", "1") == [1]


@pytest.mark.parametrize(("count", "order", "indices", "message"), [
    (2, "left_to_right", "", "the group photo has 3 face\\(s\\) but 2 identities were given.*'indices'"),
    (4, "largest_first", "", "has 3 face\\(s\\) but 4 identities"),
    (2, "indices", "0", "list 1 face\\(s\\) for 2 identities"),
    (2, "indices", "0, 3", "face indices \\[3\\] do not exist: the group photo has 3 face"),
    (2, "indices", "1, 1", "name a face twice"),
    (2, "indices", "a, b", "whole numbers"),
])
def test_face_count_mismatch_is_a_clear_error(count, order, indices, message):
    with pytest.raises(regions.FaceCountError, match=message) as err:
        regions.assign_faces(_row_of_faces(), count, order, indices)
    assert isinstance(err.value, InstantIDError)


def test_no_face_in_the_group_photo():
    with pytest.raises(regions.FaceCountError, match="no face found in the group photo"):
        regions.assign_faces([], 2, "left_to_right")


def test_layout_pairs_identities_and_draws_each_persons_own_keypoints():
    faces = _row_of_faces()
    ids = Faces(frames=tuple(record((0, 0, 50, 50), (64, 64), embedding_seed=s) for s in (1, 2, 3)))
    layout = regions.build_layout(faces, ids, 600, 240, "cover", "largest_first", shape="box", grow=0.0, feather=0)
    assert [p.face_number for p in layout.people] == [1, 2, 0]
    for person, seed in zip(layout.people, (1, 2, 3), strict=True):
        assert np.array_equal(person.identity.frames[0].embedding, ids.frames[seed - 1].embedding)
        assert len(person.identity) == 1
    # Identity 0 took face 1, box (110, 30)-(170, 100) in a 300x120 photo, x2 on the canvas: (220, 60)-(340, 200).
    assert ones_block(layout.people[0].mask) == (60, 200, 220, 340)
    # Its keypoint image shows only that face: the left eye's red disc at 2 x the painted keypoint.
    kp = layout.people[0].keypoint_image[0]
    red = (kp[..., 0] > 0.99) & (kp[..., 1] < 0.01) & (kp[..., 2] < 0.01)
    ys, xs = torch.nonzero(red, as_tuple=True)
    want = expected_keypoints(110, 30, 60, 70)[0] * 2
    assert abs(float(xs.float().mean()) - want[0]) < 1.0 and abs(float(ys.float().mean()) - want[1]) < 1.0
    others = layout.people[1].mask + layout.people[2].mask
    assert float((kp.amax(-1) * others).sum()) == 0.0, "another person's keypoints were drawn into identity 0's image"
    assert layout.keypoint_images().shape == (3, 240, 600, 3) and layout.masks().shape == (3, 240, 600)


def test_identity_without_a_face_is_named():
    ids = Faces(frames=(record((0, 0, 50, 50), (64, 64)), None), no_face_policy="skip")
    with pytest.raises(regions.FaceCountError, match="identity 1 of the identities input"):
        regions.build_layout(_row_of_faces()[:2], ids, 128, 64)


def test_join_faces_keeps_frames_in_order_and_refuses_mixed_packs():
    a = Faces(frames=(record((0, 0, 10, 10), (20, 20), embedding_seed=1),), weights=(1.0,))
    b = Faces(frames=(record((0, 0, 10, 10), (30, 30), embedding_seed=2), None), weights=(0.5, 0.5), no_face_policy="skip")
    joined = regions.join_faces([a, b])
    assert joined.frames == a.frames + b.frames and joined.weights == (1.0, 0.5, 0.5)
    assert joined.no_face_policy == "error"  # differing policies: the strict one
    with pytest.raises(regions.FaceCountError, match="different insightface packs"):
        regions.join_faces([a, Faces(frames=a.frames, model_pack="buffalo_l")])


# ---------------------------------------------------------------- detection on a painted group photo


def group_photo(boxes, height=256, width=512):
    image = blank_images(height, width)
    for i, (x, y, w, h) in enumerate(boxes):
        paint_face(image, x, y, w, h, red=255 - 20 * i)
    return image


# Middle, left, right (painted out of order). At detection size 640 (x1.25) each is under the synthetic detector's
# 108 px limit and the gaps are over its 112 px minimum (tests/onnx_fixtures.py).
THREE = [(200, 90, 60, 76), (20, 80, 50, 64), (370, 70, 70, 84)]


def test_every_face_of_the_group_photo_is_found_in_reading_order(face_analyzer):
    faces, rgb = regions.detect_group_faces(group_photo(THREE), face_analyzer)
    assert rgb.shape == (256, 512, 3) and len(faces) == 3
    want = sorted(THREE)  # one row: reading order is left to right
    for face, (x, y, w, h) in zip(faces, want, strict=True):
        np.testing.assert_allclose(face.bbox, [x, y, x + w, y + h], atol=1.5)
        np.testing.assert_allclose(face.keypoints, expected_keypoints(x, y, w, h), atol=1.5)
        assert face.source_size == (512, 256) and face.embedding.shape == (512,)


def test_group_layout_node_and_its_errors(face_analyzer):
    from test_face_nodes import run_node

    photo = group_photo(THREE)
    refs = blank_images(128, 128, batch=3)
    for i in range(3):
        paint_face(refs, 40, 40, 20, 20, frame=i, blue=255 - 12 * i)
    (ids, _), _ = run_node("InstantIDFaceAnalyze", face_analyzer=face_analyzer, image=refs, face_choice="largest", face_index=0,
                         no_face_policy="error", weights="")
    args = dict(face_analyzer=face_analyzer, group_photo=photo, identities=ids[0], width=512, height=256, placement="cover",
                order="left_to_right", indices="", shape="ellipse", grow=0.5, feather=8, overlap="nearest")
    (group, kps, masks, preview), _ = run_node("InstantIDGroupLayout", **args)
    assert kps[0].shape == (3, 256, 512, 3) and masks[0].shape == (3, 256, 512) and preview[0].shape == (1, 256, 512, 3)
    # Left to right: identity i's mask is centred on the i-th face from the left.
    for i, (x, _, w, _) in enumerate(sorted(THREE)):
        cols = torch.nonzero(masks[0][i].sum(0)).flatten().float()
        assert abs(float(cols.mean()) - (x + w / 2)) < 3
    assert float((masks[0][0] * masks[0][1]).max()) == 0.0
    # Two identities for three faces: refused with the counts and the fix.
    two = Faces(frames=ids[0].frames[:2])
    with pytest.raises(regions.FaceCountError, match="has 3 face\\(s\\) but 2 identities were given"):
        run_node("InstantIDGroupLayout", **dict(args, identities=two))
    (group2, _, masks2, _), _ = run_node("InstantIDGroupLayout", **dict(args, identities=two, order="indices", indices="2, 0"))
    assert [p.face_number for p in group2[0].people] == [2, 0]
    with pytest.raises(regions.FaceCountError, match="exactly one group photo"):
        run_node("InstantIDGroupLayout", **dict(args, group_photo=torch.cat([photo, photo])))


def test_face_mask_node_gives_one_mask_per_frame(face_analyzer):
    from test_face_nodes import run_node

    image = paint_face(blank_images(256, 256), 64, 80, 64, 80)
    (faces, _), _ = run_node("InstantIDFaceAnalyze", face_analyzer=face_analyzer, image=image, face_choice="largest", face_index=0,
                           no_face_policy="error", weights="")
    (mask,), _ = run_node("InstantIDFaceMask", faces=faces[0], width=512, height=512, placement="cover", shape="box", grow=0.0, feather=0)
    # The painted box (64, 80)-(128, 160), x2 -> (128, 160)-(256, 320); the detector's box is within 1.5 px of it.
    r0, r1, c0, c1 = ones_block(mask[0][0])
    assert abs(r0 - 160) <= 3 and abs(r1 - 320) <= 3 and abs(c0 - 128) <= 3 and abs(c1 - 256) <= 3
