"""The keypoint editor (js/keypoint_editor.js) in the real ComfyUI frontend, driven with the mouse in headless Chromium.

A real server with the tiny models serves the real frontend. The example workflow workflows/keypoint_editor.json
is opened as a user opens it; a point is dragged with the mouse; the 'Keypoint hint' preview is queued from the
page (with the editor's ancestors: the synthetic face analysis of face.png). The PNG the server wrote must have the
dragged point's disc centred on the pixel under the drop position, and equal the spec's drawing of the value the
page saved. Face operations are checked against numpy maths here; values round-trip through save, load and the API.
Under CI=true a missing browser fails the run instead of skipping it.
"""

from __future__ import annotations

import base64
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from browser import chromium, new_page, require_browser, screenshot, served
from PIL import Image
from test_face_keypoints import spec_hint

pytestmark = pytest.mark.server

PACK_DIR = Path(__file__).resolve().parent.parent
WORKFLOW = PACK_DIR / "workflows" / "keypoint_editor.json"
NOSE = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    from server import graph_server

    with served(graph_server(tmp_path_factory.mktemp("keypoint-editor"))) as srv:
        yield srv


@pytest.fixture(scope="module")
def page(server):
    with chromium() as browser:
        yield new_page(browser, server.url, {"width": 1600, "height": 1000})


# ---------------------------------------------------------------- page helpers


def open_workflow(page) -> dict:
    """Open the example as a user does, then look at the editor at 100 % zoom. Returns node ids."""
    ids = page.evaluate("""async (wf) => {
        await app.loadGraphData(wf, true, true, null, {showMissingModelsDialog: false, showMissingNodesDialog: false});
        const editor = app.graph._nodes.find((n) => n.type === "InstantIDKeypointEditor");
        const hint = app.graph._nodes.find((n) => n.title === "Keypoint hint");
        app.canvas.ds.scale = 1;
        app.canvas.ds.offset = [260 - editor.pos[0], 175 - editor.pos[1]];  // clear of the floating menus
        app.graph.setDirtyCanvas(true, true);
        return {editor: editor.id, hint: hint.id};
    }""", json.loads(WORKFLOW.read_text()))
    page.wait_for_function("""(id) => {
        const ed = app.graph.getNodeById(id)?.instantidEditor;
        const r = ed?.canvas.getBoundingClientRect();
        return r && r.width > 200 && r.height > 200 && ed.canvas.checkVisibility();
    }""", arg=ids["editor"], timeout=15_000)
    page.wait_for_timeout(300)  # let the DOM widget settle where the canvas drew it
    body = page.inner_text("body")
    assert "Invalid workflow" not in body, f"the frontend's schema check refused {WORKFLOW.name}: {body[:1500]}"
    return ids


def editor_state(page, node_id: int) -> dict:
    return page.evaluate("""(id) => {
        const node = app.graph.getNodeById(id);
        const ed = node.instantidEditor;
        const r = ed.canvas.getBoundingClientRect();
        return {value: node.widgets.find((w) => w.name === "keypoints").value, rect: [r.left, r.top, r.width, r.height],
                size: [node.widgets.find((w) => w.name === "width").value, node.widgets.find((w) => w.name === "height").value],
                selected: ed.selected};
    }""", node_id)


def faces_of(state: dict) -> np.ndarray:
    return np.array(json.loads(state["value"])["faces"], dtype=np.float64)


def to_client(state: dict, point) -> tuple[float, float]:
    left, top, width, height = state["rect"]
    return left + point[0] * width, top + point[1] * height


def drag(page, start, end, steps: int = 8, shift: bool = False) -> None:
    page.mouse.move(*start)
    if shift:
        page.keyboard.down("Shift")
    page.mouse.down()
    page.mouse.move(*end, steps=steps)
    page.mouse.up()
    if shift:
        page.keyboard.up("Shift")


def click_button(page, node_id: int, action: str) -> None:
    page.evaluate("""([id, action]) => app.graph.getNodeById(id).instantidEditor.root
        .querySelector(`button[data-action="${action}"]`).click()""", [node_id, action])


def queue_and_wait(page, server, targets: list[int], timeout: float = 180) -> dict:
    before = set(server.get("/history"))
    page.evaluate("(targets) => app.queuePrompt(0, 1, targets)", [str(t) for t in targets])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = {k: v for k, v in server.get("/history").items() if k not in before}
        done = [v for v in new.values() if v.get("status", {}).get("completed") is not None]
        if done:
            assert done[0]["status"]["status_str"] == "success", f"{done[0]['status']}\n{server.log_text()[-3000:]}"
            return done[0]
        time.sleep(0.25)
    raise AssertionError(f"queued prompt did not finish in {timeout:.0f}s; server log:\n{server.log_text()[-3000:]}")


def saved_image(server, image: dict) -> np.ndarray:
    path = server.base / image["type"] / image.get("subfolder", "") / image["filename"]
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def page_hint(page, faces, width: int, height: int, style: dict) -> np.ndarray:
    """The editor's own rendering of ``faces`` (normalised) at width x height, as RGB uint8."""
    encoded = page.evaluate("""async ([faces, W, H, style]) => {
        const mod = await import("/extensions/comfyui-instantid/keypoint_editor.js");
        const data = mod.hintImage(faces, [W, H], style).data;
        let text = "";
        for (let i = 0; i < data.length; i += 0x8000) text += String.fromCharCode(...data.subarray(i, i + 0x8000));
        return btoa(text);
    }""", [np.asarray(faces).tolist(), width, height, style])
    return np.frombuffer(base64.b64decode(encoded), np.uint8).reshape(height, width, 4)[:, :, :3]


def disc_centre(image: np.ndarray, colour) -> tuple[float, float]:
    """Centre of the pixels of exactly this colour: a full disc is symmetric about its centre pixel."""
    ys, xs = np.nonzero((image == np.array(colour, np.uint8)).all(axis=2))
    assert len(xs) > 200, f"no disc of colour {colour} in the hint"
    return float(xs.mean()), float(ys.mean())


# ---------------------------------------------------------------- tests


def test_dragged_point_lands_on_the_drop_pixel_of_the_server_hint(server, page):
    ids = open_workflow(page)
    state = editor_state(page, ids["editor"])
    W, H = state["size"]
    before = faces_of(state)
    left, top, width, height = state["rect"]
    # Drop on an integer screen position whose generation pixel is not on a rounding edge.
    drop = (round(left + 0.47 * width), round(top + 0.49 * height))  # the head turns to its left
    for _ in range(5):
        fx, fy = (drop[0] - left) / width * W, (drop[1] - top) / height * H
        if 0.01 < fx % 1 < 0.99 and 0.01 < fy % 1 < 0.99:
            break
        drop = (drop[0] + 1, drop[1] + 1)
    expected = (math.floor((drop[0] - left) / width * W), math.floor((drop[1] - top) / height * H))

    drag(page, to_client(state, before[0][NOSE]), drop)
    after = faces_of(editor_state(page, ids["editor"]))
    np.testing.assert_allclose(after[0][NOSE], [(drop[0] - left) / width, (drop[1] - top) / height], atol=1e-6)
    np.testing.assert_array_equal(np.delete(after[0], NOSE, axis=0), np.delete(before[0], NOSE, axis=0))

    # The value the workflow saves and the prompt sends is the dragged one.
    saved = page.evaluate("""async (id) => {
        const p = await app.graphToPrompt();
        return {workflow: p.workflow.nodes.find((n) => n.id === id).widgets_values, api: p.output[String(id)].inputs};
    }""", ids["editor"])
    value = editor_state(page, ids["editor"])["value"]
    assert saved["workflow"] == [value, W, H] and saved["api"]["keypoints"] == value

    entry = queue_and_wait(page, server, [ids["hint"]])
    [image_info] = entry["outputs"][str(ids["hint"])]["images"]
    hint = saved_image(server, image_info)
    assert hint.shape == (H, W, 3)
    centre = disc_centre(hint, (0, 0, 255))  # the nose disc: pure blue exists nowhere else
    error = math.hypot(centre[0] - expected[0], centre[1] - expected[1])
    print(f"\ndrag test: dropped at screen {drop} -> generation pixel {expected}; server disc centre {centre}; "
          f"pixel error {error:.3f} px (canvas {width:.0f} css px for {W} px)")
    assert error == 0.0
    np.testing.assert_array_equal(hint, spec_hint(after[0] * [W, H], W, H))

    # The page shows the very pixels the server made: its hint, from the server's drawing constants, rendered at
    # the generation size.
    style = page.evaluate("(id) => app.graph.getNodeById(id).instantidEditor.style", ids["editor"])
    drawn = page_hint(page, after, W, H, style)
    differ = int((drawn != hint).any(axis=2).sum())
    print(f"page hint vs server hint: {differ} of {W * H} pixels differ")
    assert differ == 0

    shot = screenshot(page, "keypoint_editor")
    assert shot.stat().st_size > 0
    assert not page.pack_errors, "\n".join(page.pack_errors)


def test_page_draws_the_engine_pixels_for_random_faces(server, page):
    """The editor's rasteriser against instantid/keypoints.py (the spec drawing) on many faces, sizes and angles."""
    style = server.get("/object_info/InstantIDKeypointEditor")["InstantIDKeypointEditor"]["input"]["required"]["keypoints"][1][
        "instantid_hint_style"]
    rng = np.random.default_rng(11)
    differ = total = 0
    for width, height in ((256, 192), (333, 200), (200, 300)):
        for _ in range(8):
            count = int(rng.integers(1, 3))
            centres = rng.uniform(0.25, 0.75, (count, 1, 2))
            faces = np.clip(centres + rng.normal(0, 0.12, (count, 5, 2)), 0.04, 0.96)
            drawn = page_hint(page, faces, width, height, style)
            expected = np.zeros((height, width, 3), np.uint8)
            for face in faces:
                expected = np.maximum(expected, spec_hint(face * [width, height], width, height))
            differ += int((drawn != expected).any(axis=2).sum())
            total += width * height
    print(f"\nrandom faces: page rendering differs from the engine in {differ} of {total} pixels")
    assert differ == 0


def test_face_operations_follow_the_geometry_and_undo_restores(server, page):
    ids = open_workflow(page)
    node = ids["editor"]
    start = faces_of(editor_state(page, node))
    W, H = editor_state(page, node)["size"]
    assert W == H  # square canvas: normalised and pixel geometry agree below

    def centre(face):
        return face.mean(axis=0)

    def rotated(face, degrees, scale=1.0):  # counter-clockwise on screen, y down
        t = math.radians(degrees)
        m = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]]) * scale
        return (face - centre(face)) @ m.T + centre(face)

    click_button(page, node, "rotate left")
    np.testing.assert_allclose(faces_of(editor_state(page, node))[0], rotated(start[0], 5), atol=2e-6)
    click_button(page, node, "larger")
    np.testing.assert_allclose(faces_of(editor_state(page, node))[0], rotated(start[0], 5, 1.1), atol=4e-6)
    click_button(page, node, "mirror")
    face = faces_of(editor_state(page, node))[0]
    turned = rotated(start[0], 5, 1.1)
    mirrored = np.stack([2 * centre(turned)[0] - turned[:, 0], turned[:, 1]], axis=1)[[1, 0, 2, 4, 3]]
    np.testing.assert_allclose(face, mirrored, atol=5e-6)
    assert face[0][0] < face[1][0]  # point 0 is still the image-left eye

    # Drag the face by its body (not on a disc): every point moves by the drag.
    state = editor_state(page, node)
    face = faces_of(state)[0]
    grab = (face[:2].mean(axis=0) + face[2]) / 2 + [0.0, -0.012]  # between the eyes and the nose, off the discs
    drop = to_client(state, grab + [0.1, 0.05])
    drag(page, to_client(state, grab), drop)
    moved = faces_of(editor_state(page, node))[0]
    shift = moved - face
    assert np.ptp(shift, axis=0).max() < 2e-6 and abs(shift[0][0] - 0.1) < 0.004 and abs(shift[0][1] - 0.05) < 0.004

    # Shift+drag turns and scales it: the shape stays similar (all distances scale by one factor).
    state = editor_state(page, node)
    grab = (moved[:2].mean(axis=0) + moved[2]) / 2 + [0.0, -0.012]
    drag(page, to_client(state, grab), to_client(state, grab + [0.03, -0.02]), shift=True)
    turned = faces_of(editor_state(page, node))[0]

    def distances(f):
        return np.array([np.linalg.norm(f[i] - f[j]) for i in range(5) for j in range(i + 1, 5)])

    ratio = distances(turned) / distances(moved)
    assert np.ptp(ratio) < 1e-4 and abs(ratio[0] - 1) > 0.01

    click_button(page, node, "add face")
    two = faces_of(editor_state(page, node))
    assert len(two) == 2 and editor_state(page, node)["selected"] == 1
    click_button(page, node, "remove face")
    assert len(faces_of(editor_state(page, node))) == 1
    for _ in range(7):  # remove, add, shift-drag, drag, mirror, larger, rotate
        click_button(page, node, "undo")
    np.testing.assert_array_equal(faces_of(editor_state(page, node)), start)

    # 'from input': once the graph ran, the faces of the connected FACES input come back to the page.
    entry = queue_and_wait(page, server, [ids["hint"]])
    sent = entry["outputs"][str(node)]["instantid_input_faces"]
    page.wait_for_function("""(id) => app.graph.getNodeById(id).instantidEditor.inputFaces?.length > 0""", arg=node)
    click_button(page, node, "use input faces")
    np.testing.assert_array_equal(faces_of(editor_state(page, node)), np.array(sent))
    click_button(page, node, "undo")
    np.testing.assert_array_equal(faces_of(editor_state(page, node)), start)
    assert not page.pack_errors, "\n".join(page.pack_errors)


def test_value_round_trips_through_save_load_and_the_api(server, page):
    ids = open_workflow(page)
    node = ids["editor"]
    state = editor_state(page, node)
    face = faces_of(state)[0]
    drag(page, to_client(state, face[0]), to_client(state, face[0] + [-0.05, 0.03]))
    value = editor_state(page, node)["value"]
    reloaded = page.evaluate("""async (id) => {
        const workflow = JSON.parse(JSON.stringify(app.graph.serialize()));
        app.graph.clear();
        await app.loadGraphData(workflow, true, true, null, {showMissingModelsDialog: false});
        const node = app.graph.getNodeById(id);
        return {value: node.widgets.find((w) => w.name === "keypoints").value, saved: node.serialize().widgets_values,
                prompt: (await app.graphToPrompt()).output[String(id)].inputs.keypoints};
    }""", node)
    assert reloaded["value"] == value and reloaded["saved"][0] == value and reloaded["prompt"] == value

    # The API takes the same text: an API-format prompt with it draws the same hint.
    prompt = {"e": {"class_type": "InstantIDKeypointEditor", "inputs": {"keypoints": value, "width": 320, "height": 240}},
              "s": {"class_type": "SaveImage", "inputs": {"images": ["e", 0], "filename_prefix": "kp_round_trip"}}}
    entry = server.run_prompt(prompt)
    [image] = entry["outputs"]["s"]["images"]
    np.testing.assert_array_equal(saved_image(server, image), spec_hint(faces_of({"value": value})[0] * [320, 240], 320, 240))


def test_no_errors_from_the_pack_script(page):
    assert not page.pack_errors, "\n".join(page.pack_errors)
