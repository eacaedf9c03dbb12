"""Face nodes in a real ComfyUI server: the default models/insightface folder, /prompt, history, errors."""

from __future__ import annotations

import numpy as np
import pytest
from face_fixtures import blank_images, build_model_pack, paint_face
from PIL import Image

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from server import Server

    base = tmp_path_factory.mktemp("face-server-base")
    build_model_pack(base / "models" / "insightface")  # the classic layout in the default folder
    (base / "input").mkdir(exist_ok=True)
    face = paint_face(blank_images(), 200, 150, 64, 80)[0].numpy()
    Image.fromarray(np.round(face * 255).astype(np.uint8)).save(base / "input" / "face.png")
    Image.fromarray(np.round(blank_images()[0].numpy() * 255).astype(np.uint8)).save(base / "input" / "empty.png")
    srv = Server(base)
    yield srv
    srv.stop()


def _prompt(image: str, policy: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {
            "class_type": "InstantIDFaceAnalyzerLoader",
            "inputs": {"model_pack": "antelopev2", "provider": "CPU", "det_size": 640},
        },
        "3": {
            "class_type": "InstantIDFaceAnalyze",
            "inputs": {
                "face_analyzer": ["2", 0],
                "image": ["1", 0],
                "face_choice": "largest",
                "face_index": 0,
                "no_face_policy": policy,
                "weights": "",
            },
        },
        "4": {"class_type": "InstantIDSaveFaces", "inputs": {"faces": ["3", 0], "name": "server_face", "overwrite": True}},
        "5": {
            "class_type": "InstantIDFaceSimilarity",
            "inputs": {"face_analyzer": ["2", 0], "faces": ["3", 0], "images": ["1", 0], "combine": "average"},
        },
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
    }


def test_face_workflow_through_the_api(server):
    info = server.get("/object_info/InstantIDFaceAnalyzerLoader")["InstantIDFaceAnalyzerLoader"]
    assert "antelopev2" in info["input"]["required"]["model_pack"][1]["options"]
    entry = server.run_prompt(_prompt("face.png", "error"))
    assert entry["status"]["status_str"] == "success", entry["status"]
    text = entry["outputs"]["5"]["text"][0]
    assert text.startswith("image 1: 1.000") or text.startswith("image 1: 0.99"), text
    assert "server_face.safetensors" in entry["outputs"]["4"]["text"][0]
    assert (server.base / "models" / "instantid_faces" / "server_face.safetensors").is_file()
    assert entry["outputs"]["6"]["images"], "preview image missing"


def test_no_face_error_reaches_the_api_with_the_frame_number(server):
    entry = server.run_prompt(_prompt("empty.png", "error"))
    assert entry["status"]["status_str"] == "error"
    messages = str(entry["status"].get("messages"))
    assert "frame 1 of 1" in messages and "no_face_policy" in messages
