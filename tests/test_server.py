"""The pack inside a real ComfyUI server process: /object_info lists the nodes, an API-format workflow completes."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from server import graph_server

    srv = graph_server(tmp_path_factory.mktemp("server-base"))
    yield srv
    srv.stop()


def api_workflow(models, seed: int = 3, size: int = 128, ip_weight: float = 0.8) -> dict:
    """The basic InstantID graph in API format, with the tiny test models and a text-free conditioning node."""
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": models.unet_name, "weight_dtype": "default"}},
        "adapter": {"class_type": "InstantIDLoader", "inputs": {"instantid_file": models.adapter_name}},
        "cn": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": models.controlnet_name}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "taesdxl"}},
        "photo": {"class_type": "LoadImage", "inputs": {"image": models.face_image.name}},
        "analyzer": {"class_type": "InstantIDFaceAnalyzerLoader", "inputs": {"model_pack": "antelopev2", "provider": "CPU", "det_size": 640}},
        "faces": {"class_type": "InstantIDFaceAnalyze", "inputs": {"face_analyzer": ["analyzer", 0], "image": ["photo", 0],
                                                                    "face_choice": "largest", "face_index": 0,
                                                                    "no_face_policy": "error", "weights": ""}},
        "pos": {"class_type": "InstantIDTestConditioning", "inputs": {"seed": 1, "width": size, "height": size}},
        "neg": {"class_type": "InstantIDTestConditioning", "inputs": {"seed": 2, "width": size, "height": size}},
        "apply": {"class_type": "InstantIDApply", "inputs": {
            "model": ["unet", 0], "positive": ["pos", 0], "negative": ["neg", 0], "instantid": ["adapter", 0],
            "control_net": ["cn", 0], "faces": ["faces", 0], "ip_weight": ip_weight, "cn_strength": 0.8,
            "start_at": 0.0, "end_at": 1.0, "combine": "average", "placement": "cover"}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "sampler": {"class_type": "KSampler", "inputs": {
            "model": ["apply", 0], "positive": ["apply", 1], "negative": ["apply", 2], "latent_image": ["latent", 0],
            "seed": seed, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["vae", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": f"instantid_{seed}"}},
    }


def test_object_info_lists_the_nodes(server):
    info = server.get("/object_info")
    for node_id in ("InstantIDLoader", "InstantIDApply", "InstantIDApplyAttention", "InstantIDApplyIdentityNet"):
        assert node_id in info, f"{node_id} missing from /object_info; server log:\n{server.log_text()[-3000:]}"
    apply = info["InstantIDApply"]
    assert apply["output"] == ["MODEL", "CONDITIONING", "CONDITIONING"]
    required = apply["input"]["required"]
    assert required["ip_weight"][1]["default"] == 0.8 and required["cn_strength"][1]["default"] == 0.8
    assert required["instantid"][0] == "INSTANTID_ADAPTER"
    assert server.models.adapter_name in info["InstantIDLoader"]["input"]["required"]["instantid_file"][1]["options"]


def _output_image(server, entry: dict) -> Path:
    images = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    assert len(images) == 1, entry
    return server.base / "output" / images[0].get("subfolder", "") / images[0]["filename"]


def test_api_workflow_completes_with_image_of_the_right_size(server):
    entry = server.run_prompt(api_workflow(server.models))
    assert entry["status"]["status_str"] == "success", f"{entry['status']}\n{server.log_text()[-4000:]}"
    path = _output_image(server, entry)
    with Image.open(path) as img:
        assert img.size == (128, 128)


def test_bad_input_gives_a_node_error_and_the_server_keeps_serving(server):
    bad = api_workflow(server.models)
    bad["unet"]["inputs"]["unet_name"] = server.models.sd15_unet_name
    entry = server.run_prompt(bad)
    assert entry["status"]["status_str"] == "error"
    messages = str(entry["status"].get("messages"))
    assert "SDXL models only" in messages, messages
    good = server.run_prompt(api_workflow(server.models, seed=4))
    assert good["status"]["status_str"] == "success"


def _choice(value: str) -> dict:
    return {"class_type": "InstantIDTestChoice", "inputs": {"value": value}}


def test_file_and_folder_combos_driven_by_a_link(server):
    """A combo fed by a link reaches validate_inputs as None (ComfyUI validates before the upstream node ran): the
    prompt must be accepted and the value checked when the node runs."""
    linked = api_workflow(server.models, seed=5)
    linked["adapter_name"] = _choice(server.models.adapter_name)
    linked["pack_name"] = _choice("antelopev2")
    linked["adapter"]["inputs"]["instantid_file"] = ["adapter_name", 0]
    linked["analyzer"]["inputs"]["model_pack"] = ["pack_name", 0]
    entry = server.run_prompt(linked)
    assert entry["status"]["status_str"] == "success", f"{entry['status']}\n{server.log_text()[-4000:]}"


@pytest.mark.parametrize(("node", "field", "message"), [
    ("adapter", "instantid_file", "is not an adapter file in models/instantid"),
    ("analyzer", "model_pack", "is not an insightface model pack"),
    ("load_face", "face_file", "is not a saved face in models/instantid_faces"),
])
def test_a_linked_combo_with_a_wrong_name_fails_when_run_and_the_server_keeps_serving(server, node, field, message):
    bad = api_workflow(server.models, seed=6)
    bad["load_face"] = {"class_type": "InstantIDLoadFaces", "inputs": {"face_file": "x"}}
    bad["apply"]["inputs"]["faces"] = ["load_face", 0] if node == "load_face" else ["faces", 0]
    bad["wrong_name"] = _choice("../../etc/passwd")
    bad[node]["inputs"][field] = ["wrong_name", 0]
    if node != "load_face":
        del bad["load_face"]
    entry = server.run_prompt(bad)
    assert entry["status"]["status_str"] == "error"
    messages = str(entry["status"].get("messages"))
    assert "'../../etc/passwd'" in messages and message in messages, messages
    assert server.run_prompt(api_workflow(server.models, seed=7))["status"]["status_str"] == "success"
