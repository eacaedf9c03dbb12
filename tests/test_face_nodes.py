"""The face nodes run through ComfyUI's own node execution (execution.get_output_data), in process."""
# ruff: noqa: F811  (pytest fixtures imported from face_fixtures are redefined as arguments)

from __future__ import annotations

import asyncio
import math
import os
import time

import execution
import folder_paths
import numpy as np
import pytest
from face_fixtures import blank_images, face_analyzer, face_pack_root, paint_face  # noqa: F401
from test_face_keypoints import spec_hint

import nodes as comfy_nodes
from instantid import face_models, face_store

FACE_NODE_IDS = [
    "InstantIDFaceAnalyzerLoader",
    "InstantIDFaceAnalyze",
    "InstantIDKeypointImage",
    "InstantIDSaveFaces",
    "InstantIDLoadFaces",
    "InstantIDFaceSimilarity",
]


def run_node(node_id: str, **inputs):
    """Execute one node the way ComfyUI's executor does; returns (outputs as lists, ui dict)."""
    cls = comfy_nodes.NODE_CLASS_MAPPINGS[node_id]
    hidden = {"prompt": {}, "extra_pnginfo": {}, "unique_id": "1"}
    output, ui, _, _ = asyncio.run(execution.get_output_data("test", "1", cls, {k: [v] for k, v in inputs.items()}, hidden_inputs=hidden))
    return output, ui


def test_face_nodes_registered_with_distinct_types():
    for node_id in FACE_NODE_IDS:
        assert node_id in comfy_nodes.NODE_CLASS_MAPPINGS
    analyze = comfy_nodes.NODE_CLASS_MAPPINGS["InstantIDFaceAnalyze"]
    info = analyze.GET_NODE_INFO_V1()
    assert info["output"] == ["INSTANTID_FACES", "IMAGE"]
    assert info["input"]["required"]["face_analyzer"][0] == "INSTANTID_FACE_ANALYZER"
    assert info["display_name"] == "InstantID Face Analyze"


def test_loader_lists_packs_and_loads(face_pack_root):
    loader = comfy_nodes.NODE_CLASS_MAPPINGS["InstantIDFaceAnalyzerLoader"]
    options = loader.define_schema().inputs[0].options
    assert options[0] == "antelopev2"
    (analyzer,), _ = run_node("InstantIDFaceAnalyzerLoader", model_pack="antelopev2", provider="CPU", det_size=512)
    assert isinstance(analyzer[0], face_models.FaceAnalyzer) and analyzer[0].det_size == 512


def test_loader_error_names_the_missing_pack():
    with pytest.raises(face_models.FaceModelsError, match="'buffalo_l' not found"):
        run_node("InstantIDFaceAnalyzerLoader", model_pack="buffalo_l", provider="CPU", det_size=640)


def test_analyze_keypoints_similarity_chain(face_analyzer):
    image = paint_face(blank_images(batch=2), 200, 150, 64, 80, frame=0)
    (faces, preview), _ = run_node(
        "InstantIDFaceAnalyze",
        face_analyzer=face_analyzer,
        image=image,
        face_choice="largest",
        face_index=0,
        no_face_policy="skip",
        weights="",
    )
    faces = faces[0]
    assert faces.missing_frames == [1] and preview[0].shape == (2, 512, 512, 3)

    (kps,), _ = run_node(
        "InstantIDKeypointImage",
        faces=faces,
        width=768,
        height=1024,
        placement="box",
        box_x=0.25,
        box_y=0.25,
        box_width=0.5,
        box_height=0.5,
    )
    assert kps[0].shape == (2, 1024, 768, 3)
    # Independently: the face's box fitted (aspect kept, centred) into the 384 x 512 box at (192, 256), then the
    # spec's drawing (tests/test_face_keypoints.py); the frame without a face stays black.
    record = faces.frames[0]
    x1, y1, x2, y2 = (float(v) for v in record.bbox)
    scale = min(384 / (x2 - x1), 512 / (y2 - y1))
    origin = np.array([192 + (384 - (x2 - x1) * scale) / 2, 256 + (512 - (y2 - y1) * scale) / 2])
    points = (np.asarray(record.keypoints, np.float64) - [x1, y1]) * scale + origin
    drawn = (kps[0].numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(drawn[0], spec_hint(points, 768, 1024))
    assert drawn[0].max() == 255 and drawn[1].max() == 0

    generated = paint_face(blank_images(batch=3), 300, 300, 64, 80, frame=0)  # same identity elsewhere
    paint_face(generated, 100, 100, 64, 80, frame=1, red=210, blue=230)  # another identity
    (scores, mean, report), ui = run_node(
        "InstantIDFaceSimilarity", face_analyzer=face_analyzer, faces=faces, images=generated, combine="average"
    )
    assert scores[0] > 0.99 and scores[1] < scores[0] and math.isnan(scores[2])
    assert mean[0] == pytest.approx((scores[0] + scores[1]) / 2)
    assert "image 3: no face" in report[0] and ui["text"][0] == report[0]


def test_save_then_load_face_nodes(face_analyzer):
    image = paint_face(blank_images(), 200, 150, 64, 80)
    (faces, _), _ = run_node(
        "InstantIDFaceAnalyze",
        face_analyzer=face_analyzer,
        image=image,
        face_choice="score",
        face_index=0,
        no_face_policy="error",
    )
    _, ui = run_node("InstantIDSaveFaces", faces=faces[0], name="alice", overwrite=True)
    assert "alice.safetensors" in ui["text"][0]
    folder = folder_paths.get_folder_paths(face_store.FOLDER_NAME)[0]
    assert os.path.isfile(os.path.join(folder, "alice.safetensors"))
    _, ui = run_node("InstantIDSaveFaces", faces=faces[0], name="alice", overwrite=False)
    assert "alice_2.safetensors" in ui["text"][0]

    load = comfy_nodes.NODE_CLASS_MAPPINGS["InstantIDLoadFaces"]
    assert "alice.safetensors" in load.define_schema().inputs[0].options
    before = load.fingerprint_inputs(face_file="alice.safetensors")
    (loaded,), _ = run_node("InstantIDLoadFaces", face_file="alice.safetensors")
    assert loaded[0].frames[0].embedding.tobytes() == faces[0].frames[0].embedding.tobytes()
    time.sleep(0.01)
    run_node("InstantIDSaveFaces", faces=faces[0], name="alice", overwrite=True)
    assert load.fingerprint_inputs(face_file="alice.safetensors") != before
    with pytest.raises(ValueError, match="without folders"):
        run_node("InstantIDSaveFaces", faces=faces[0], name="../escape", overwrite=True)


def test_similarity_refuses_faces_from_another_pack(face_analyzer):
    from instantid.faces import FaceRecord, Faces

    record = FaceRecord(np.zeros(4, np.float32), np.zeros((5, 2), np.float32), np.ones(512, np.float32), 0.9, (64, 64))
    with pytest.raises(ValueError, match="not comparable"):
        run_node(
            "InstantIDFaceSimilarity",
            face_analyzer=face_analyzer,
            faces=Faces(frames=(record,), model_pack="buffalo_l"),
            images=blank_images(),
            combine="average",
        )
