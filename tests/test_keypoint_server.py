"""The keypoint editor's value through a real ComfyUI server: bad values are refused at /prompt validation with
a message naming the face, the point and the fix (nothing runs, the server keeps serving); good ones draw the hint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_face_keypoints import spec_hint

pytestmark = pytest.mark.server
FACE = [[0.42, 0.40], [0.58, 0.40], [0.50, 0.50], [0.44, 0.60], [0.56, 0.60]]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from server import Server

    srv = Server(tmp_path_factory.mktemp("keypoint-server"))
    yield srv
    srv.stop()


def _prompt(keypoints, width: int = 320, height: int = 200, prefix: str = "kp") -> dict:
    return {"e": {"class_type": "InstantIDKeypointEditor", "inputs": {"keypoints": keypoints, "width": width, "height": height}},
            "s": {"class_type": "SaveImage", "inputs": {"images": ["e", 0], "filename_prefix": prefix}}}


@pytest.mark.parametrize(
    ("keypoints", "message"),
    [
        (json.dumps({"faces": [[*FACE[:2], [1.5, 0.5], *FACE[3:]]]}), "face 1 point 3 (nose tip) x is 1.5, outside 0..1"),
        (json.dumps({"faces": [FACE, FACE[:3]]}), "face 2 has 3 points; each face needs exactly 5"),
        ('{"faces": [[[0.4, 0.4], [0.6, 0.4], [0.5, NaN], [0.4, 0.6], [0.6, 0.6]]]}', "face 1 point 3 (nose tip) y is nan"),
        (json.dumps({"faces": []}), "has 0 faces; 1 to 16 are needed"),
        ("not json", "keypoints is not valid JSON"),
        ({"faces": [FACE]}, "looks like Python's text for a dict: send json.dumps(value)"),
    ],
)
def test_bad_values_are_refused_before_anything_runs(server, keypoints, message):
    before = set(server.get("/history"))
    status, body = server.post("/prompt", {"prompt": _prompt(keypoints)})
    assert status == 400, body
    errors = body["node_errors"]["e"]["errors"]
    details = " ".join(e["details"] for e in errors)
    assert "InstantID Keypoint Editor" in details and message in details, errors
    assert set(server.get("/history")) == before  # nothing was queued


def test_a_good_value_draws_the_hint_and_the_server_kept_serving(server):
    faces = [FACE, [[x + 0.35, y] for x, y in FACE]]
    entry = server.run_prompt(_prompt(json.dumps({"faces": faces}), 320, 200, "kp_good"))
    assert entry["status"]["status_str"] == "success", entry["status"]
    [image] = entry["outputs"]["s"]["images"]
    with Image.open(server.base / "output" / image.get("subfolder", "") / image["filename"]) as img:
        drawn = np.asarray(img.convert("RGB"))
    expected = np.maximum(spec_hint(np.array(faces[0]) * [320, 200], 320, 200), spec_hint(np.array(faces[1]) * [320, 200], 320, 200))
    np.testing.assert_array_equal(drawn, expected)


def test_the_schema_exports_the_drawing_constants_and_a_plain_string(server):
    info = server.get("/object_info/InstantIDKeypointEditor")["InstantIDKeypointEditor"]
    kind, options = info["input"]["required"]["keypoints"]
    assert kind == "STRING"
    style = options["instantid_hint_style"]
    # Spec section 3, written out here.
    assert style["colours"] == [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255]]
    assert style["limbs"] == [[0, 2], [1, 2], [3, 2], [4, 2]]
    assert (style["stick_width"], style["point_radius"], style["limb_dim"]) == (4, 10, 0.6)
    assert info["output"] == ["IMAGE"]
