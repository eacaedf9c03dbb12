"""Migration from cubiq/ComfyUI_InstantID: the converter on workflows written for the test (tests/cubiq_graphs.py),
the converted graphs against the live /object_info, run through a real server with the tiny models, the command
line, and the server route the web UI's menu command calls.

Expectations come from the README's migration table and cubiq's node definitions, written out by hand here.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import cubiq_graphs
import pytest
from test_workflows import _inputs, _is_widget, _options, check_api, ui_to_api, ui_widget_values, with_test_models

from instantid.migrate import WorkflowFormatError, migrate_workflow
from instantid.migrate_layouts import OURS, RANGES

PACK_DIR = Path(__file__).resolve().parent.parent
CUBIQ_TYPES = {"InstantIDModelLoader", "InstantIDFaceAnalysis", "FaceKeypointsPreprocessor", "ApplyInstantID",
               "ApplyInstantIDAdvanced", "InstantIDAttentionPatch", "ApplyInstantIDControlNet"}


def convert(name: str, providers=("CPU",)) -> tuple[dict, dict, object]:
    original = cubiq_graphs.ALL[name]()
    converted, report = migrate_workflow(original, None if providers is None else list(providers))
    return original, converted, report


def by_id(workflow: dict) -> dict[int, dict]:
    return {n["id"]: n for n in workflow["nodes"]}


def feeding(workflow: dict, node_id: int, input_name: str) -> tuple[dict, int] | None:
    """(origin node, slot) of the link into an input, looking through Reroute nodes (independent of the engine)."""
    nodes, links = by_id(workflow), {link[0]: link for link in workflow["links"]}
    slot = next((s for s in nodes[node_id].get("inputs", []) if s["name"] == input_name), None)
    if slot is None or slot.get("link") is None:
        return None
    link = links[slot["link"]]
    origin = nodes[link[1]]
    while origin["type"] == "Reroute":
        link = links[origin["inputs"][0]["link"]]
        origin = nodes[link[1]]
    return origin, link[2]


def assert_consistent(workflow: dict) -> None:
    """Both ends of every link agree with the nodes, and every link has its origin's output type."""
    nodes, links = by_id(workflow), {link[0]: link for link in workflow["links"]}
    assert len(links) == len(workflow["links"]), "duplicate link ids"
    assert workflow["last_node_id"] >= max(nodes) and workflow["last_link_id"] >= max(links)
    for link_id, origin, slot, target, target_slot, kind in workflow["links"]:
        assert link_id in nodes[origin]["outputs"][slot]["links"], f"link {link_id} missing on node {origin}"
        assert nodes[target]["inputs"][target_slot]["link"] == link_id, f"link {link_id} missing on node {target}"
        assert kind == nodes[origin]["outputs"][slot]["type"], f"link {link_id} says {kind}"
    for node in nodes.values():
        for slot in node.get("inputs") or []:
            assert slot.get("link") is None or slot["link"] in links, f"node {node['id']} input {slot['name']} dangles"
        for out in node.get("outputs") or []:
            for link_id in out.get("links") or []:
                assert links[link_id][1] == node["id"], f"node {node['id']} lists link {link_id} it does not start"


# ---------------------------------------------------------------- the converter on its own


def test_basic_graph_converts_to_face_analyze_plus_apply():
    original, converted, report = convert("basic")
    assert_consistent(converted)
    nodes = by_id(converted)
    assert nodes[10]["type"] == "InstantIDLoader" and nodes[10]["widgets_values"] == ["ip-adapter.bin"]
    assert nodes[11]["type"] == "InstantIDFaceAnalyzerLoader" and nodes[11]["widgets_values"] == ["antelopev2", "CPU", 640]
    apply = nodes[14]
    assert apply["type"] == "InstantIDApply"
    # weight -> ip_weight and cn_strength; start/end stay; combine average; placement cover.
    assert apply["widgets_values"] == [0.8, 0.8, 0, 1, "average", "cover"]
    face, _ = feeding(converted, 14, "faces")
    assert face["type"] == "InstantIDFaceAnalyze" and face["widgets_values"] == ["largest", 0, "error", ""]
    assert feeding(converted, face["id"], "image")[0]["type"] == "LoadImage"
    assert feeding(converted, face["id"], "face_analyzer")[0]["id"] == 11
    assert feeding(converted, 14, "instantid")[0]["id"] == 10
    for name, origin in (("model", 3), ("positive", 4), ("negative", 5), ("control_net", 12)):
        assert feeding(converted, 14, name)[0]["id"] == origin, name
    sampler = next(n for n in converted["nodes"] if n["type"] == "KSampler")
    assert [feeding(converted, sampler["id"], i) for i in ("model", "positive", "negative")] == [(apply, 0), (apply, 1), (apply, 2)]
    assert any("noise 0.35" in w for w in report.warnings)  # cubiq's hidden noise is named
    # Kept in place, the taller Apply node (9 sockets, 6 widgets) now reaches the latent node 420 px below its top.
    assert apply["pos"] == [1000, 200] and apply["size"][1] > 420
    assert any("node 14" in w and "overlaps node 6 (EmptyLatentImage)" in w for w in report.warnings), report.warnings


def test_positions_groups_view_and_other_nodes_are_kept():
    for name in cubiq_graphs.ALL:
        original, converted, _ = convert(name)
        old, new = by_id(original), by_id(converted)
        assert set(old) <= set(new), f"{name}: nodes lost"
        for node_id, node in old.items():
            assert new[node_id]["pos"] == node["pos"], f"{name}: node {node_id} moved"
            if node["type"] not in CUBIQ_TYPES | {"Reroute", "PrimitiveNode"}:  # these two pass links on
                assert new[node_id] == node, f"{name}: node {node_id} ({node['type']}) of another pack was changed"
        assert converted["groups"] == original["groups"] and converted["extra"] == original["extra"]
        added = [new[i] for i in set(new) - set(old)]
        for node in added:  # new nodes overlap nothing
            x, y = node["pos"]
            w, h = node["size"]
            for other in converted["nodes"]:
                if other is node:
                    continue
                ox, oy = other["pos"]
                size = other["size"]
                ow, oh = (size["0"], size["1"]) if isinstance(size, dict) else size
                assert x + w <= ox or ox + ow <= x or y + h <= oy - 30 or oy + oh <= y - 30, f"{name}: node {node['id']} overlaps {other['id']}"


def test_posed_graph_takes_the_pose_from_the_second_photo():
    _, converted, report = convert("posed", providers=None)
    assert_consistent(converted)
    nodes = by_id(converted)
    assert nodes[11]["widgets_values"] == ["antelopev2", "CUDA", 640]  # provider kept when no machine list is given
    assert nodes[15]["widgets_values"] == [0.85, 0.85, 0.0, 0.9, "average", "cover"]
    pose, _ = feeding(converted, 15, "pose_faces")
    assert pose["type"] == "InstantIDFaceAnalyze"
    assert feeding(converted, pose["id"], "image")[0]["widgets_values"][0] == "pose.jpg"
    assert feeding(converted, pose["id"], "face_analyzer")[0]["id"] == 11
    assert feeding(converted, 15, "image_kps") is None  # the photo is not a keypoint drawing


def test_provider_follows_what_onnxruntime_offers():
    _, converted, report = convert("posed", providers=["CPU"])
    assert by_id(converted)[11]["widgets_values"][1] == "CPU"
    assert any("provider CUDA" in w and "onnxruntime-gpu" in w for w in report.warnings)
    _, converted, _ = convert("split_nodes", providers=["CPU", "ROCm"])
    assert by_id(converted)[11]["widgets_values"][1] == "ROCm"  # cubiq spelled it ROCM


def test_advanced_node_maps_combine_modes_and_drops_noise():
    _, converted, report = convert("multi_id")
    assert_consistent(converted)
    nodes = by_id(converted)
    assert nodes[17]["widgets_values"] == [0.8, 0.8, 0.0, 1.0, "norm_average", "cover"]
    assert nodes[19]["widgets_values"] == [1.2, 0.5, 0.1, 0.9, "average", "cover"]  # concat has no equivalent
    assert any("node 17" in w and "noise 0.35" in w for w in report.warnings)
    assert any("node 19" in w and "concat" in w for w in report.warnings)
    assert feeding(converted, 17, "mask")[0]["type"] == "SolidMask" and feeding(converted, 19, "mask")[0]["type"] == "SolidMask"
    assert feeding(converted, 19, "model")[0]["id"] == 17
    # The second Face Analyze gets the analyzer through the Reroute, which now carries our type.
    face, _ = feeding(converted, 19, "faces")
    assert feeding(converted, face["id"], "face_analyzer")[0]["id"] == 11
    reroute = next(n for n in converted["nodes"] if n["type"] == "Reroute")
    assert reroute["outputs"][0]["type"] == "INSTANTID_FACE_ANALYZER"


def test_split_nodes_become_attention_only_identitynet_only_and_keypoint_image():
    _, converted, report = convert("split_nodes")
    assert_consistent(converted)
    nodes = by_id(converted)
    assert nodes[15]["type"] == "InstantIDApplyAttention" and nodes[15]["widgets_values"] == [0.9, 0.0, 1.0, "average"]
    assert nodes[17]["type"] == "InstantIDApplyIdentityNet" and nodes[17]["widgets_values"] == [0.7, 0.0, 0.8, "average", "cover"]
    assert nodes[16]["type"] == "InstantIDKeypointImage"
    assert nodes[16]["widgets_values"] == [896, 1152, "cover", 0.25, 0.25, 0.5, 0.5]  # the graph's latent size
    # FACE_EMBEDS is gone: IdentityNet takes the attention node's adapter and faces.
    assert feeding(converted, 17, "instantid")[0]["id"] == 10
    assert feeding(converted, 17, "faces") == feeding(converted, 15, "faces")
    assert feeding(converted, 17, "image_kps")[0]["id"] == 16
    assert feeding(converted, feeding(converted, 16, "faces")[0]["id"], "image")[0]["widgets_values"][0] == "pose.jpg"
    assert not [link for link in converted["links"] if link[5] == "FACE_EMBEDS"]
    assert any("node 15" in w and "noise 0.2" in w for w in report.warnings)


def test_linked_weight_drives_both_strengths():
    _, converted, _ = convert("primitive_weight")
    assert_consistent(converted)
    apply = by_id(converted)[14]
    widget_sockets = {s["name"]: s for s in apply["inputs"] if s.get("widget")}
    assert set(widget_sockets) == {"ip_weight", "cn_strength"}
    for name in widget_sockets:
        assert feeding(converted, 14, name)[0]["type"] == "PrimitiveNode", name


def test_unmappable_nodes_are_reported_and_nothing_is_lost():
    original, converted, report = convert("unmappable")
    assert_consistent(converted)
    old, new = by_id(original), by_id(converted)
    assert [k for k in report.kept if "node 15 InstantIDAttentionPatch" in k and "FaceEmbedsToFile" in k]
    assert [k for k in report.kept if "node 17 ApplyInstantIDControlNet" in k and "not connected" in k]
    for node_id in (15, 16, 17, 18):  # the kept cubiq nodes and the other packs' nodes, untouched
        assert new[node_id] == old[node_id], node_id
    for node_id in (10, 11):  # loaders stay for them ...
        assert new[node_id]["type"] == old[node_id]["type"]
    assert feeding(converted, 18, "analysis")[0]["id"] == 11 and feeding(converted, 15, "instantid")[0]["id"] == 10
    # ... and new loaders of ours feed the converted Apply node.
    assert feeding(converted, 14, "instantid")[0]["type"] == "InstantIDLoader"
    face, _ = feeding(converted, 14, "faces")
    assert feeding(converted, face["id"], "face_analyzer")[0]["type"] == "InstantIDFaceAnalyzerLoader"
    assert len(report.added) == 2 and "Not converted" in report.text()


def test_input_is_not_changed_and_a_second_run_changes_nothing():
    original = cubiq_graphs.multi_id()
    before = copy.deepcopy(original)
    converted, _ = migrate_workflow(original, ["CPU"])
    assert original == before
    again, report = migrate_workflow(converted, ["CPU"])
    assert again == converted and not report.converted and "nothing to convert" in report.text()


def test_api_format_and_other_files_are_refused_with_the_fix():
    api = json.loads((PACK_DIR / "workflows" / "api" / "basic_api.json").read_text())
    with pytest.raises(WorkflowFormatError, match="API-format.*Save"):
        migrate_workflow(api)
    with pytest.raises(WorkflowFormatError, match="nodes"):
        migrate_workflow({"hello": 1})
    with pytest.raises(WorkflowFormatError, match="links"):
        migrate_workflow({"nodes": [], "links": [{"id": 1}]})


def test_command_line_converts_without_comfyui(tmp_path):
    source, target = tmp_path / "old.json", tmp_path / "new.json"
    source.write_text(json.dumps(cubiq_graphs.unmappable()))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = ("import sys, runpy; sys.argv = ['migrate', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('instantid.migrate', run_name='__main__')\n"
             "finally:\n    host = sorted(m for m in sys.modules if m.split('.')[0] in ('comfy', 'folder_paths', 'nodes', 'server', 'torch'))\n"
             "    print('HOST MODULES', host)\n")
    result = subprocess.run([sys.executable, "-c", probe, str(source), str(target), "--keep-provider"], cwd=PACK_DIR,
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stdout + result.stderr  # 2: some cubiq nodes could not be converted
    assert "HOST MODULES []" in result.stdout, result.stdout
    assert "Not converted" in result.stdout and f"Wrote {target}" in result.stdout
    expected, _ = migrate_workflow(cubiq_graphs.unmappable(), None)
    assert json.loads(target.read_text()) == expected

    source.write_text(json.dumps(cubiq_graphs.basic()))
    ok = subprocess.run([sys.executable, "-m", "instantid.migrate", str(source), str(target)], cwd=PACK_DIR,
                        capture_output=True, text=True, timeout=120, env=env)
    assert ok.returncode == 0 and "Converted 3 node(s)" in ok.stdout, ok.stdout + ok.stderr
    source.write_text(json.dumps(json.loads((PACK_DIR / "workflows" / "api" / "basic_api.json").read_text())))
    bad = subprocess.run([sys.executable, "-m", "instantid.migrate", str(source), str(target)], cwd=PACK_DIR,
                         capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 1 and "API-format" in bad.stderr, bad.stderr


# ---------------------------------------------------------------- against the real server


def without_reroutes(workflow: dict) -> dict:
    """The graph as the web UI queues it: links through Reroute nodes go straight to their origin."""
    ui = copy.deepcopy(workflow)
    nodes = by_id(ui)
    for link in ui["links"]:
        while nodes[link[1]]["type"] == "Reroute":
            upstream = next(x for x in ui["links"] if x[0] == nodes[link[1]]["inputs"][0]["link"])
            link[1], link[2] = upstream[1], upstream[2]
    ui["links"] = [link for link in ui["links"] if nodes[link[3]]["type"] != "Reroute"]
    ui["nodes"] = [n for n in ui["nodes"] if n["type"] != "Reroute"]
    return ui


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from server import graph_server

    srv = graph_server(tmp_path_factory.mktemp("migrate-server"))
    srv.object_info = srv.get("/object_info")
    yield srv
    srv.stop()


@pytest.mark.server
def test_layouts_match_the_live_node_schemas(server):
    """The converter's copy of our node layouts (it runs without ComfyUI) equals what the server reports."""
    for kind, layout in OURS.items():
        info = server.object_info[kind]
        sockets = [(name, spec[0]) for name, spec, _ in _inputs(info) if not _is_widget(spec)]
        widgets = [(name, spec) for name, spec, _ in _inputs(info) if _is_widget(spec)]
        assert sockets == [(s.name, s.type) for s in layout.inputs], kind
        assert [name for name, _ in widgets] == [name for name, _ in layout.widgets], kind
        assert list(info["output"]) == [s.type for s in layout.outputs], kind
        for (name, spec), (_, default) in zip(widgets, layout.widgets, strict=True):
            if name not in ("instantid_file", "model_pack", "provider"):  # file lists / machine-dependent
                assert _options(spec).get("default") == default, f"{kind}.{name}"
            if name in RANGES:
                assert (_options(spec)["min"], _options(spec)["max"]) == RANGES[name], f"{kind}.{name}"


@pytest.mark.server
@pytest.mark.parametrize("name", sorted(cubiq_graphs.RUNNABLE))
def test_converted_workflow_validates_and_runs(server, name):
    _, converted, report = convert(name)
    assert not report.kept
    prompt = ui_to_api(without_reroutes(converted), server.object_info)  # every node and link against /object_info
    assert {n["class_type"] for n in prompt.values()} & CUBIQ_TYPES == set()
    run = with_test_models(prompt, server.models)
    check_api(run, server.object_info, files_present=True)
    entry = server.run_prompt(run, timeout=300)
    assert entry["status"]["status_str"] == "success", f"{entry['status']}\n{server.log_text()[-4000:]}"
    images = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    assert len(images) == 1, entry["outputs"]


@pytest.mark.server
def test_ipadapter_graph_keeps_the_other_pack_and_our_part_validates(server):
    original, converted, report = convert("ipadapter")
    assert not report.kept
    nodes = by_id(converted)
    other = {n["id"] for n in converted["nodes"] if n["type"] not in server.object_info and n["type"] != "Reroute"}
    assert {nodes[i]["type"] for i in other} == {"IPAdapterModelLoader", "IPAdapterAdvanced"}
    for node_id in other:
        assert nodes[node_id] == by_id(original)[node_id]
    assert feeding(converted, next(iter(i for i in other if nodes[i]["type"] == "IPAdapterAdvanced")), "model")[0]["type"] == "InstantIDApply"
    for node in converted["nodes"]:  # our nodes' widgets; incoming link types of every node the server knows
        if node["id"] in other:
            continue
        info = server.object_info[node["type"]]
        if node["type"] in OURS:
            ui_widget_values(f"node {node['id']}", info, node.get("widgets_values", []))
        specs = {name: spec for name, spec, _ in _inputs(info)}
        for slot in node.get("inputs") or []:
            origin = feeding(converted, node["id"], slot["name"])
            if origin and origin[0]["id"] not in other:
                assert server.object_info[origin[0]["type"]]["output"][origin[1]] == specs[slot["name"]][0], (node["id"], slot)


@pytest.mark.server
def test_server_route_converts_and_refuses_bad_input(server):
    status, body = server.post("/instantid/migrate", {"workflow": cubiq_graphs.split_nodes()})
    assert status == 200, body
    expected, report = migrate_workflow(cubiq_graphs.split_nodes(), ["CPU"])  # the server's onnxruntime offers CPU
    assert body["workflow"] == expected and body["report"] == report.as_dict() and body["text"] == report.text()
    status, body = server.post("/instantid/migrate", {"workflow": json.loads((PACK_DIR / "workflows/api/basic_api.json").read_text())})
    assert status == 400 and "API-format" in body["error"]
    status, body = server.post("/instantid/migrate", {"graph": {}})
    assert status == 400 and "workflow" in body["error"]
    req = urllib.request.Request(server.url + "/instantid/migrate", data=b"not json", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400
    assert "InstantIDApply" in server.get("/object_info")  # still serving
