"""The keypoint nodes through ComfyUI in-process: editor output and checks, transform and sequence nodes, and a
sequence's frame i steering latent i of a latent batch through real sampling (tiny models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from e2e_models import load_graph, run_v3
from test_face_keypoints import spec_hint

import nodes as comfy_nodes
from instantid.faces import FaceRecord, Faces

N = comfy_nodes.NODE_CLASS_MAPPINGS
FACE = [[0.42, 0.40], [0.58, 0.40], [0.50, 0.50], [0.44, 0.60], [0.56, 0.60]]


def _record(kps, source=(128, 128)) -> FaceRecord:
    kps = np.asarray(kps, np.float32)
    box = np.concatenate([kps.min(axis=0) - 8, kps.max(axis=0) + 8]).astype(np.float32)
    return FaceRecord(box, kps, np.random.default_rng(0).normal(size=512).astype(np.float32), 0.9, source)


def _as_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.numpy() * 255).round().astype(np.uint8)


def test_editor_draws_the_value_at_the_generation_size():
    value = json.dumps({"faces": [FACE, [[x + 0.3, y + 0.1] for x, y in FACE]]})
    (image,) = run_v3("InstantIDKeypointEditor", keypoints=value, width=640, height=480)
    assert image.shape == (1, 480, 640, 3) and image.dtype == torch.float32
    a, b = np.array(FACE) * [640, 480], (np.array(FACE) + [0.3, 0.1]) * [640, 480]
    np.testing.assert_array_equal(_as_uint8(image[0]), np.maximum(spec_hint(a, 640, 480), spec_hint(b, 640, 480)))


def test_editor_sends_the_input_faces_back_normalised():
    rec = _record([[60, 30], [90, 30], [75, 50], [65, 70], [85, 70]], source=(200, 100))
    out = N["InstantIDKeypointEditor"].execute(keypoints=json.dumps({"faces": [FACE]}), width=400, height=400,
                                               faces=Faces(frames=(None, rec)))
    shown = out.ui["instantid_input_faces"]
    # cover at 400 x 400 from 200 x 100: scale 4, 200 px cropped left and right (these points stay inside).
    expected = [[(x * 4 - 200) / 400, y * 4 / 400] for x, y in rec.keypoints]
    np.testing.assert_allclose(shown, [expected], atol=1e-6)
    assert "images" not in out.ui  # the hint is not a second saved image of the workflow
    assert N["InstantIDKeypointEditor"].execute(keypoints=json.dumps({"faces": [FACE]}), width=64, height=64).ui is None


def test_editor_checks_its_value_before_running():
    cls = N["InstantIDKeypointEditor"]
    assert cls.validate_inputs(keypoints=json.dumps({"faces": [FACE]})) is True
    assert cls.validate_inputs(keypoints=None) is True  # linked: checked in execute
    message = cls.validate_inputs(keypoints=json.dumps({"faces": [[*FACE[:4], [0.5, 1.5]]]}))
    assert message.startswith("InstantID Keypoint Editor: face 1 point 5 (right mouth corner) y is 1.5, outside 0..1")
    from instantid.keypoint_edit import KeypointValueError

    with pytest.raises(KeypointValueError, match="has 0 faces"):
        run_v3("InstantIDKeypointEditor", keypoints='{"faces": []}', width=64, height=64)


def test_editor_schema_carries_the_engine_drawing_constants():
    info = N["InstantIDKeypointEditor"].GET_NODE_INFO_V1()
    kind, options = info["input"]["required"]["keypoints"]
    assert kind == "STRING" and "widgetType" not in options  # the API sees a plain string
    style = options["instantid_hint_style"]
    from instantid import keypoints

    assert style["colours"] == [list(c) for c in keypoints.COLOURS] and style["limbs"] == [list(p) for p in keypoints.LIMBS]
    assert (style["stick_width"], style["point_radius"], style["limb_dim"]) == (keypoints.STICK_WIDTH, keypoints.POINT_RADIUS,
                                                                                keypoints.LIMB_DIM)


def test_transform_node_then_keypoint_image_gives_a_batch():
    faces = Faces(frames=(_record([[40, 40], [80, 40], [60, 60], [45, 80], [75, 80]]),))
    (out,) = run_v3("InstantIDKeypointTransform", faces=faces, rotate=0.0, scale=1.0, translate_x=0.0, translate_y=0.0,
                    mirror=True, copies=3, seed=1, random_rotate=15.0, random_scale=0.1, random_translate=0.05)
    assert len(out) == 3 and faces.frames[0].keypoints[0][0] == 40  # input untouched
    (images,) = run_v3("InstantIDKeypointImage", faces=out, width=128, height=128, placement="cover", box_x=0.25,
                       box_y=0.25, box_width=0.5, box_height=0.5)
    assert images.shape == (3, 128, 128, 3)
    assert not torch.equal(images[0], images[1]) and not torch.equal(images[1], images[2])


def test_sequence_node_one_image_per_frame_in_order():
    frames = (_record([[30, 40], [60, 40], [45, 60], [35, 80], [55, 80]]), None,
              _record([[70, 40], [100, 40], [85, 60], [75, 80], [95, 80]]))
    images, faces = run_v3("InstantIDKeypointSequence", faces=Faces(frames=frames), width=128, height=128,
                           placement="cover", smoothing=0.0, fill_missing=True)
    assert images.shape == (3, 128, 128, 3) and len(faces) == 3
    middle = (frames[0].keypoints + frames[2].keypoints) / 2  # the filled frame: half way
    for i, pts in enumerate((frames[0].keypoints, middle, frames[2].keypoints)):
        np.testing.assert_array_equal(_as_uint8(images[i]), spec_hint(pts, 128, 128))
    blank, _ = run_v3("InstantIDKeypointSequence", faces=Faces(frames=frames), width=128, height=128,
                      placement="cover", smoothing=0.0, fill_missing=False)
    assert float(blank[1].abs().sum()) == 0.0 and torch.equal(blank[2], images[2])


# ---------------------------------------------------------------- frame i -> latent i through sampling


@pytest.fixture(scope="module")
def graph(base_dir):
    return load_graph(str(base_dir), 128, seed=1)


def _sample(g, hints: torch.Tensor, batch_index: list[int]) -> torch.Tensor:
    model, positive, negative = run_v3(
        "InstantIDApply", model=g["unet"], positive=g["positive"], negative=g["negative"], instantid=g["adapter"],
        control_net=g["control_net"], faces=g["faces"], ip_weight=0.0, cn_strength=1.0, start_at=0.0, end_at=1.0,
        combine="average", placement="cover", image_kps=hints)
    latent = {"samples": torch.zeros(len(batch_index), 4, 8, 8), "batch_index": batch_index}  # 64 x 64 px: quick
    return N["KSampler"]().sample(model, 11, 1, 5.0, "euler", "normal", positive, negative, latent)[0]["samples"]


def test_frame_i_of_a_sequence_steers_latent_i(graph):
    frames = (_record([[20, 30], [50, 30], [35, 50], [25, 70], [45, 70]]), None,
              _record([[80, 70], [110, 70], [95, 90], [85, 110], [105, 110]]))
    hints, _ = run_v3("InstantIDKeypointSequence", faces=Faces(frames=frames), width=64, height=64,
                      placement="cover", smoothing=0.0, fill_missing=True)
    batch = _sample(graph, hints, [0, 1, 2])
    # Each latent of the batch equals a run of that latent alone (same noise: batch_index) with its own frame's hint,
    # and differs from a run with a neighbour's hint: hint i reached latent i, in both CFG halves.
    same = []
    for i in range(3):
        alone = _sample(graph, hints[i:i + 1], [i])[0]
        same.append((batch[i] - alone).abs().max().item())
        assert same[-1] < 1e-4 * max(1.0, alone.abs().max().item()), (i, same)
    wrong = _sample(graph, hints[2:3], [0])[0]  # latent 0 with the last frame's pose
    assert (batch[0] - wrong).abs().max().item() > 100 * max(*same, 1e-6)
