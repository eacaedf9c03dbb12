"""Every example workflow against the real server: node types and widget values match /object_info,
the API-format ones run (tiny models substituted) and save an image of the right size.

A workflow that no longer matches the nodes (a renamed node, an input added or
removed, a combo option gone, a number out of range) fails here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.server
PACK_DIR = Path(__file__).resolve().parent.parent
WORKFLOWS = PACK_DIR / "workflows"

UI_FILES = sorted(WORKFLOWS.glob("*.json"))
API_FILES = sorted((WORKFLOWS / "api").glob("*_api.json"))

# Node types that exist only in the web UI (never sent to the server).
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
# Combo inputs listing the user's files: the examples name the published files, which the test server lacks.
FILE_INPUTS = {"ckpt_name", "control_net_name", "lora_name", "instantid_file", "unet_name", "vae_name", "image"}
FILE_EXTENSIONS = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".png", ".jpg", ".jpeg", ".webp")
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_CONTROLS = {"fixed", "increment", "decrement", "randomize"}
TEST_SIZE = 128
# Inputs that run face detection: tiny random models draw no face, so a generated image they look at gets one.
DETECTING = {("InstantIDFaceAnalyze", "image"), ("InstantIDFaceCrop", "image")}
# Workflows whose saved image is a loaded photo edited in place: it keeps the photo's size.
PHOTO_SIZED = {"face_swap_api.json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from server import graph_server

    srv = graph_server(tmp_path_factory.mktemp("workflow-server"))
    srv.object_info = srv.get("/object_info")
    yield srv
    srv.stop()


# ---------------------------------------------------------------- schema helpers


def _options(spec: list) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not _options(spec).get("forceInput")


def _inputs(info: dict) -> list[tuple[str, list, bool]]:
    """(name, spec, required) in the order the web UI creates widgets and sockets."""
    out = []
    for section in ("required", "optional"):
        for name in info.get("input_order", {}).get(section, []):
            out.append((name, info["input"][section][name], section == "required"))
    return out


def _combo_options(spec: list) -> list | None:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO":
        return _options(spec).get("options", [])
    return None


def check_widget_value(where: str, name: str, spec: list, value, files_present: bool = False) -> None:
    """files_present: file combos must name a file the server lists (true once the tiny models are substituted)."""
    opts = _options(spec)
    kind = spec[0]
    choices = _combo_options(spec)
    if choices is not None:
        if name in FILE_INPUTS and not files_present:
            assert isinstance(value, str) and value.lower().endswith(FILE_EXTENSIONS), f"{where}: {name}={value!r} is not a file name"
        else:
            assert value in choices, f"{where}: {name}={value!r} is not one of {choices}"
    elif kind == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {name}={value!r} is not an integer"
        assert opts.get("min", value) <= value <= opts.get("max", value), f"{where}: {name}={value} outside [{opts.get('min')}, {opts.get('max')}]"
    elif kind == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {name}={value!r} is not a number"
        assert opts.get("min", value) <= value <= opts.get("max", value), f"{where}: {name}={value} outside [{opts.get('min')}, {opts.get('max')}]"
    elif kind == "STRING":
        assert isinstance(value, str), f"{where}: {name}={value!r} is not a string"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: {name}={value!r} is not a boolean"


def ui_widget_values(where: str, info: dict, values: list) -> dict:
    """Check a UI node's widgets_values against the schema; return input name -> value."""
    named = {}
    rest = list(values)
    for name, spec, _ in _inputs(info):
        if not _is_widget(spec):
            continue
        assert rest, f"{where}: widgets_values ends before the widget {name!r} ({len(values)} values)"
        value = rest.pop(0)
        check_widget_value(where, name, spec, value)
        named[name] = value
        if _options(spec).get("control_after_generate"):
            assert rest and rest[0] in SEED_CONTROLS, f"{where}: {name} must be followed by a control_after_generate value"
            rest.pop(0)
        if _options(spec).get("image_upload"):
            assert rest and isinstance(rest[0], str), f"{where}: {name} must be followed by the upload widget's value"
            rest.pop(0)
    assert not rest, f"{where}: {len(rest)} widgets_values left over ({rest}); the node has fewer widgets now"
    return named


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """The API prompt the web UI would queue for a UI-format workflow (checking it on the way)."""
    links = {link[0]: link for link in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        kind = node["type"]
        if kind in FRONTEND_ONLY:
            continue
        where = f"node {node['id']} ({kind})"
        assert kind in object_info, f"{where}: no such node on the server"
        info = object_info[kind]
        inputs = ui_widget_values(where, info, node.get("widgets_values", []))
        sockets = {name: (spec, required) for name, spec, required in _inputs(info) if not _is_widget(spec)}
        for slot in node.get("inputs", []):
            name = slot["name"]
            if slot.get("widget"):  # a widget turned into a socket keeps its value entry
                assert name in inputs, f"{where}: socket for unknown widget {name!r}"
            else:
                assert name in sockets, f"{where}: input {name!r} no longer exists (inputs: {list(sockets)})"
            if slot.get("link") is None:
                continue
            _, origin, origin_slot, target, _, link_type = links[slot["link"]]
            assert target == node["id"], f"{where}: link {slot['link']} points elsewhere"
            origin_node = next(n for n in ui["nodes"] if n["id"] == origin)
            produced = object_info[origin_node["type"]]["output"][origin_slot]
            expected = sockets[name][0][0] if name in sockets else None
            assert link_type == produced, f"{where}: link into {name} says {link_type}, node {origin} gives {produced}"
            if expected is not None and expected != "*":
                assert produced == expected, f"{where}: {name} takes {expected}, gets {produced} from node {origin}"
            inputs[name] = [str(origin), origin_slot]
        for name, (_, required) in sockets.items():
            if required:
                assert name in inputs, f"{where}: required input {name!r} is not connected"
        prompt[str(node["id"])] = {"class_type": kind, "inputs": inputs}
    return prompt


def check_api(prompt: dict, object_info: dict, files_present: bool = False) -> None:
    for node_id, node in prompt.items():
        kind = node["class_type"]
        where = f"API node {node_id} ({kind})"
        assert kind in object_info, f"{where}: no such node on the server"
        schema = {name: (spec, required) for name, spec, required in _inputs(object_info[kind])}
        for name, value in node["inputs"].items():
            assert name in schema, f"{where}: input {name!r} no longer exists (inputs: {list(schema)})"
            spec = schema[name][0]
            if isinstance(value, list):
                assert value[0] in prompt, f"{where}: {name} links to missing node {value[0]}"
                produced = object_info[prompt[value[0]]["class_type"]]["output"][value[1]]
                assert spec[0] in (produced, "*"), f"{where}: {name} takes {spec[0]}, gets {produced}"
            else:
                assert _is_widget(spec), f"{where}: {name} is a socket but has a literal value"
                check_widget_value(where, name, spec, value, files_present)
        for name, (_, required) in schema.items():
            assert not required or name in node["inputs"], f"{where}: required input {name!r} missing"


# ---------------------------------------------------------------- substituting the tiny models


def with_test_models(prompt: dict, models) -> dict:
    """Rewrite a real-model API workflow for the tiny test models.

    CheckpointLoaderSimple -> UNETLoader (tiny SDXL) whose VAE output is taken over
    by a VAELoader('taesdxl'); CLIPTextEncode -> the text-free InstantIDTestConditioning
    (no text encoder can be downloaded here); files -> the tiny files; size 128, 2 steps. A LoadImage whose
    file name contains "group" gets a photo with two faces, any other the one-face photo.
    """
    prompt = copy.deepcopy(prompt)
    vae_for = {}
    seed = 0
    for node_id, node in list(prompt.items()):
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple":
            prompt[node_id] = {"class_type": "UNETLoader", "inputs": {"unet_name": models.unet_name, "weight_dtype": "default"}}
            vae_for[node_id] = f"{node_id}_vae"
            prompt[f"{node_id}_vae"] = {"class_type": "VAELoader", "inputs": {"vae_name": "taesdxl"}}
        elif kind == "CLIPTextEncode":
            seed += 1
            prompt[node_id] = {"class_type": "InstantIDTestConditioning", "inputs": {"seed": seed, "width": TEST_SIZE, "height": TEST_SIZE}}
        elif kind == "InstantIDLoader":
            inputs["instantid_file"] = models.adapter_name
        elif kind == "ControlNetLoader":
            inputs["control_net_name"] = models.controlnet_name
        elif kind == "LoadImage":
            inputs["image"] = (models.group_image if "group" in inputs["image"] else models.face_image).name
        elif kind in ("EmptyLatentImage", "InstantIDKeypointImage", "InstantIDKeypointEditor", "InstantIDFaceCrop",
                      "InstantIDGroupLayout", "InstantIDFaceMask"):
            inputs["width"] = inputs["height"] = TEST_SIZE
        elif kind == "KSampler":
            inputs["steps"] = 2
        elif kind in ("LoraLoaderModelOnly", "LoadImageMask", "CheckpointLoader"):
            raise AssertionError(f"{kind} has no tiny test model yet: extend with_test_models")
    _paint_face_into_generated_images(prompt, models)
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and value[0] in vae_for:
                if value[1] == 2:
                    node["inputs"][name] = [vae_for[value[0]], 0]
                else:
                    assert value[1] == 0, f"{node['class_type']}.{name} uses the checkpoint's CLIP outside CLIPTextEncode"
    return prompt


def _paint_face_into_generated_images(prompt: dict, models) -> None:
    """A VAEDecode whose image face detection looks at gets the test photo, at half the test size, composited into
    its centre (as a real SDXL would have drawn a small face there); everything that used the decoded image uses that."""
    decoders = {value[0] for node in prompt.values() for name, value in node["inputs"].items()
                if (node["class_type"], name) in DETECTING and isinstance(value, list) and prompt[value[0]]["class_type"] == "VAEDecode"}
    for decoder in sorted(decoders):
        face, small, composite = f"{decoder}_face", f"{decoder}_face_small", f"{decoder}_with_face"
        for node in prompt.values():
            for name, value in node["inputs"].items():
                if value == [decoder, 0]:
                    node["inputs"][name] = [composite, 0]
        prompt[face] = {"class_type": "LoadImage", "inputs": {"image": models.face_image.name}}
        prompt[small] = {"class_type": "ImageScale", "inputs": {"image": [face, 0], "upscale_method": "area", "width": TEST_SIZE // 2,
                                                                 "height": TEST_SIZE // 2, "crop": "disabled"}}
        prompt[composite] = {"class_type": "ImageCompositeMasked", "inputs": {"destination": [decoder, 0], "source": [small, 0],
                                                                              "x": TEST_SIZE // 4, "y": TEST_SIZE // 4, "resize_source": False}}


# ---------------------------------------------------------------- tests


def test_every_workflow_folder_is_complete():
    names = {p.stem for p in UI_FILES}
    assert {"quick_start", "basic", "posed", "extra_controlnet", "two_identities", "lcm_fast", "face_fix", "face_swap",
            "keypoint_editor", "group_photo"} <= names
    for path in UI_FILES:
        thumb = path.with_suffix(".jpg")  # the template browser asks for <name>.jpg
        assert thumb.is_file(), f"{path.name} has no thumbnail {thumb.name}"
        with Image.open(thumb) as img:
            assert img.format == "JPEG" and img.width >= 256
    for basic in ("quick_start", "basic", "posed", "face_fix", "face_swap", "keypoint_editor"):
        assert (WORKFLOWS / "api" / f"{basic}_api.json").is_file()


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_workflow_matches_the_server(server, path):
    ui = json.loads(path.read_text())
    assert ui.get("version") == 0.4 and ui["nodes"] and ui["links"]
    ids = [n["id"] for n in ui["nodes"]]
    assert len(ids) == len(set(ids)) and ui["last_node_id"] >= max(ids)
    assert ui["last_link_id"] >= max(link[0] for link in ui["links"])
    for link in ui["links"]:
        origin = next(n for n in ui["nodes"] if n["id"] == link[1])
        assert link[0] in origin["outputs"][link[2]]["links"], f"link {link[0]} missing from node {link[1]}'s outputs"
    prompt = ui_to_api(ui, server.object_info)
    assert any(n["class_type"] in ("InstantIDApply", "InstantIDApplyPhoto", "InstantIDApplyGroup") for n in prompt.values())
    assert any(n["class_type"] == "SaveImage" for n in prompt.values())


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_api_workflow_is_the_ui_workflow(server, path):
    api = json.loads(path.read_text())
    check_api(api, server.object_info)
    ui = json.loads((WORKFLOWS / (path.name[: -len("_api.json")] + ".json")).read_text())
    from_ui = ui_to_api(ui, server.object_info)
    assert {k: (v["class_type"], v["inputs"]) for k, v in api.items()} == {k: (v["class_type"], v["inputs"]) for k, v in from_ui.items()}


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_api_workflow_runs_with_the_tiny_models(server, path):
    prompt = with_test_models(json.loads(path.read_text()), server.models)
    check_api(prompt, server.object_info, files_present=True)
    entry = server.run_prompt(prompt, timeout=300)
    assert entry["status"]["status_str"] == "success", f"{entry['status']}\n{server.log_text()[-4000:]}"
    # Saved images only: a preview (e.g. of the keypoint hint) goes to temp/.
    images = [img for out in entry["outputs"].values() for img in out.get("images", []) if img.get("type") == "output"]
    assert len(images) == 1, entry["outputs"]
    saved = server.base / "output" / images[0].get("subfolder", "") / images[0]["filename"]
    expected = (TEST_SIZE, TEST_SIZE)
    if path.name in PHOTO_SIZED:
        with Image.open(server.models.face_image) as photo:
            expected = photo.size
    with Image.open(saved) as img:
        assert img.size == expected


def test_a_workflow_that_no_longer_matches_fails(server):
    ui = json.loads((WORKFLOWS / "basic.json").read_text())
    apply = next(n for n in ui["nodes"] if n["type"] == "InstantIDApply")
    apply["widgets_values"].append(0.5)  # a widget the node does not have
    with pytest.raises(AssertionError, match="left over"):
        ui_to_api(ui, server.object_info)
    apply["widgets_values"][:2] = [0.8, 99.0]  # cn_strength out of range
    with pytest.raises(AssertionError, match="outside"):
        ui_to_api(ui, server.object_info)
    api = json.loads((WORKFLOWS / "api" / "basic_api.json").read_text())
    next(n for n in api.values() if n["class_type"] == "InstantIDApply")["class_type"] = "ApplyInstantID"
    with pytest.raises(AssertionError, match="no such node"):
        check_api(api, server.object_info)
