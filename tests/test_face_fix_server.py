"""Face swap through the real server's API with bad inputs: each gives a clear node error or a documented
pass-through, and the server keeps serving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_workflows import with_test_models

pytestmark = pytest.mark.server
SWAP = Path(__file__).resolve().parent.parent / "workflows" / "api" / "face_swap_api.json"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from server import graph_server

    srv = graph_server(tmp_path_factory.mktemp("face-fix-server"))
    Image.fromarray(np.full((256, 256, 3), 38, dtype=np.uint8)).save(srv.base / "input" / "blank.png")
    yield srv
    srv.stop()


def _swap(server, **changes) -> dict:
    prompt = with_test_models(json.loads(SWAP.read_text()), server.models)
    by_title = {node["_meta"]["title"]: node for node in prompt.values() if "_meta" in node}
    for path, value in changes.items():
        title, name = path.split(".")
        by_title[title]["inputs"][name] = value
    return prompt


def _node_error(server, prompt: dict) -> str:
    entry = server.run_prompt(prompt, timeout=300)
    assert entry["status"]["status_str"] == "error", entry["status"]
    error = next(data for name, data in entry["status"]["messages"] if name == "execution_error")
    return f"{error['node_type']}: {error['exception_message']}"


def _saved(server, entry: dict) -> np.ndarray:
    assert entry["status"]["status_str"] == "success", (entry["status"], server.log_text()[-3000:])
    (image,) = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    with Image.open(server.base / "output" / image.get("subfolder", "") / image["filename"]) as img:
        return np.asarray(img.convert("RGB")).copy()


def test_no_face_in_the_photo_errors_or_passes_through(server):
    no_face = {"Photo to change (B).image": "blank.png", "Analyze photo B.no_face_policy": "skip"}
    message = _node_error(server, _swap(server, **no_face))
    assert message.startswith("InstantIDFaceCrop") and "nothing to crop" in message and "if_none" in message
    through = _saved(server, server.run_prompt(_swap(server, **no_face, **{"InstantID Face Crop.if_none": "pass_through"}), timeout=300))
    assert np.array_equal(through, np.full((256, 256, 3), 38, dtype=np.uint8)), "pass_through changed the photo"


def test_paste_into_an_image_of_another_size_is_refused_then_the_server_keeps_serving(server):
    prompt = _swap(server)
    prompt["resized"] = {"class_type": "ImageScale", "inputs": {"image": prompt[_id(prompt, "InstantID Face Paste")]["inputs"]["image"],
                                                                "upscale_method": "area", "width": 200, "height": 200, "crop": "disabled"}}
    prompt[_id(prompt, "InstantID Face Paste")]["inputs"]["image"] = ["resized", 0]
    message = _node_error(server, prompt)
    assert message.startswith("InstantIDFacePaste") and "made from 256x256 images" in message
    swapped = _saved(server, server.run_prompt(_swap(server), timeout=300))
    assert swapped.shape == (256, 256, 3)


def _id(prompt: dict, title: str) -> str:
    return next(k for k, node in prompt.items() if node.get("_meta", {}).get("title") == title)
