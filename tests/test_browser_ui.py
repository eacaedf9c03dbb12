"""The first minutes in the real web UI, on a server without models, in headless Chromium at 1600x900.

Every template in workflows/ opens with every node in view (nothing under the sidebar, the top bar, the Run
button or the minimap), no two nodes overlapping, each title used once; a screenshot of each as opened is
kept (tests/artifacts/, or $INSTANTID_TEST_ARTIFACTS). The template browser lists the pack's workflows and
opens one, and the frontend's missing-models dialog then names every file with its source; the first
/prompt names every missing file of the pack at once. The node help panel shows the pack's page; the
Doctor's report is readable with its summary in view; the pack's socket types have colours.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest
from browser import chromium, new_page, only_node, screenshot, served
from workflow_view import WINDOW, open_workflow, view_problems

pytestmark = pytest.mark.server
PACK_DIR = Path(__file__).resolve().parent.parent
WORKFLOWS = PACK_DIR / "workflows"
TEMPLATES = sorted(WORKFLOWS.glob("*.json"))

# Published files the templates may name: file name as the loader lists it -> (download URL, model folder).
# InstantID's files: spec section 11 (InstantX/InstantID model repo; antelopev2 from the deepinsight/insightface
# v0.7 release). SDXL base: stabilityai's repo, as in ComfyUI's own templates (comfyui-workflow-templates).
# LCM-LoRA: latent-consistency/lcm-lora-sdxl, pytorch_lora_weights.safetensors saved under this name.
# Depth ControlNet: diffusers' controlnet-depth-sdxl-1.0-small as published in lllyasviel/sd_control_collection.
PUBLISHED = {
    "ip-adapter.bin": ("https://huggingface.co/InstantX/InstantID/resolve/main/ip-adapter.bin", "instantid"),
    "instantid-controlnet.safetensors": (
        "https://huggingface.co/InstantX/InstantID/resolve/main/ControlNetModel/diffusion_pytorch_model.safetensors",
        "controlnet"),
    "antelopev2": ("https://github.com/deepinsight/insightface/releases/download/v0.7/antelopev2.zip", "insightface"),
    "sd_xl_base_1.0.safetensors": (
        "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors",
        "checkpoints"),
    "lcm-lora-sdxl.safetensors": (
        "https://huggingface.co/latent-consistency/lcm-lora-sdxl/resolve/main/pytorch_lora_weights.safetensors", "loras"),
    "diffusers_xl_depth_small.safetensors": (
        "https://huggingface.co/lllyasviel/sd_control_collection/resolve/main/diffusers_xl_depth_small.safetensors",
        "controlnet"),
}
# Core's palette colours (frontend 1.32.9, dark theme) that the pack's sockets must not be confused with.
CORE_SLOT_COLORS = ["#FFD500", "#A8DADC", "#ad7452", "#FFA931", "#6EE7B7", "#64B5F6", "#FF9CF9", "#81C784",
                    "#B39DDB", "#C2FFAE", "#FF6E6E", "#B0B0B0", "#66FFFF", "#ECB4B4", "#CDFFCD", "#DCC274"]
PACK_TYPES = ["INSTANTID_ADAPTER", "INSTANTID_FACES", "INSTANTID_FACE_ANALYZER"]


def _loader_files(workflow: dict) -> list[tuple[dict, str]]:
    """(node, file name) for every loader node: the first widget value of a *Loader* node."""
    return [(n, n["widgets_values"][0]) for n in workflow["nodes"]
            if "Loader" in n["type"] and n.get("widgets_values") and isinstance(n["widgets_values"][0], str)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from server import Server

    with served(Server(tmp_path_factory.mktemp("ui-base"))) as srv:  # no models at all: what a new user has
        yield srv


@pytest.fixture(scope="module")
def browser(server):
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def page(server, browser):
    return new_page(browser, server.url, WINDOW)


# ---------------------------------------------------------------- templates: layout and saved view


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_template_opens_whole_and_uncluttered(page, path):
    workflow = json.loads(path.read_text())
    open_workflow(page, workflow, path.stem)
    screenshot(page, f"template_{path.stem}")
    problems = view_problems(page, workflow)
    assert not problems, f"{path.name} at {WINDOW['width']}x{WINDOW['height']}:\n  " + "\n  ".join(problems) + (
        "\nLay it out again: .venv/bin/python scripts/layout_workflows.py " + str(path.relative_to(PACK_DIR)))


def test_layout_check_sees_overlaps_hidden_nodes_and_a_missing_view(page):
    workflow = json.loads((WORKFLOWS / "basic.json").read_text())
    first, second, third = workflow["nodes"][:3]
    second["pos"] = [first["pos"][0] + 20, first["pos"][1] + 20]  # on top of the first
    third["pos"] = [first["pos"][0] + 5000, first["pos"][1]]  # far outside the view
    second["title"] = first.get("title") or "Same title"
    first["title"] = second["title"]
    open_workflow(page, workflow, "broken")
    problems = "\n".join(view_problems(page, workflow))
    assert f"node {first['id']} '{first['title']}' overlaps node {second['id']}" in problems, problems
    assert f"node {third['id']}" in problems and "outside the window" in problems, problems
    assert f"several nodes are titled '{first['title']}'" in problems, problems
    # Under the sidebar: move the view so the first column sits at the window's left edge.
    del workflow["extra"]["ds"]
    page.evaluate("() => { app.canvas.ds.offset = [0, 200]; app.canvas.ds.scale = 0.7; app.graph.setDirtyCanvas(true, true); }")
    problems = "\n".join(view_problems(page, workflow))
    assert "no saved view" in problems and "side-bar" in problems, problems


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_loaders_name_their_published_files(path):
    workflow = json.loads(path.read_text())
    loaders = _loader_files(workflow)
    assert loaders, f"{path.name} has no loader node"
    for node, name in loaders:
        assert name in PUBLISHED, f"{path.name}: node {node['id']} loads {name!r}, not a published file this test knows"
        url, folder = PUBLISHED[name]
        assert node["properties"].get("models") == [{"name": name, "url": url, "directory": folder}], (
            f"{path.name}: node {node['id']} ({node['type']}) properties.models")


def test_read_me_notes_point_to_the_download_script():
    for path in TEMPLATES:
        notes = [n["widgets_values"][0] for n in json.loads(path.read_text())["nodes"] if n["type"] in ("Note", "MarkdownNote")]
        assert notes, f"{path.name} has no read-me note"
        text = " ".join(notes)
        assert "python scripts/download_models.py" in text and "make models" not in text, f"{path.name}: {text}"


# ---------------------------------------------------------------- missing files, named at once


def _dialog_entries(page) -> list[str]:
    page.wait_for_selector(".comfy-missing-models", timeout=15_000)
    return page.evaluate("""() => Array.from(document.querySelectorAll('.comfy-missing-models [role=option]'),
                                             (e) => e.innerText.split('\\n')[0].trim())""")


def _close_dialogs(page) -> None:
    """Close whatever dialog is open (one a failed test left behind, too)."""
    for _ in range(3):
        if not page.evaluate("() => !!document.querySelector('.p-dialog-mask')"):
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    assert not page.evaluate("() => !!document.querySelector('.p-dialog-mask')"), "a dialog does not close"


def test_template_browser_lists_the_packs_workflows_and_opens_one_naming_every_missing_file(page):
    page.get_by_text("Templates", exact=True).first.click()
    page.get_by_text("comfyui-instantid", exact=True).first.click()  # under Extensions: the pack's folder name
    cards = page.locator("[data-testid^='template-workflow-']")
    cards.first.wait_for(timeout=15_000)
    listed = sorted(cards.evaluate_all("(els) => els.map((e) => e.dataset.testid.slice('template-workflow-'.length))"))
    assert listed == [p.stem for p in TEMPLATES]
    page.locator("[data-testid='template-workflow-basic']").click()
    entries = _dialog_entries(page)
    page.wait_for_timeout(500)  # the dialog fades in
    screenshot(page, "template_browser_basic_missing_models")
    workflow = json.loads((WORKFLOWS / "basic.json").read_text())
    expected = sorted(f"{PUBLISHED[name][1]} / {name}" for _, name in _loader_files(workflow))
    assert sorted(entries) == expected
    assert len(expected) == 4  # checkpoint, adapter, IdentityNet, antelopev2
    assert page.evaluate("() => app.graph._nodes.length") == len(workflow["nodes"])
    _close_dialogs(page)


def test_installed_files_are_not_reported_missing(server, page):
    models = server.base / "models"
    adapter = models / "instantid" / "ip-adapter.bin"
    pack = models / "insightface" / "models" / "antelopev2"
    made = [adapter, pack / "scrfd_10g_bnkps.onnx", pack / "glintr100.onnx"]
    try:
        for path in made:  # only their presence matters to both checks
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"0")
        assert server.get("/instantid/model_packs") == {"insightface": ["antelopev2"]}
        page.reload(wait_until="domcontentloaded")  # the frontend keeps the model lists it loaded
        page.wait_for_function("() => window.app && window.app.vueAppReady && window.app.graph", timeout=60_000)
        workflow = json.loads((WORKFLOWS / "basic.json").read_text())
        page.evaluate("(wf) => app.loadGraphData(wf, true, true, 'basic')", workflow)
        assert sorted(_dialog_entries(page)) == ["checkpoints / sd_xl_base_1.0.safetensors",
                                                 "controlnet / instantid-controlnet.safetensors"]
        _close_dialogs(page)
        # The analyzer loader keeps its entry: a saved copy still names antelopev2 for the next machine.
        saved = page.evaluate("() => app.graph.serialize()")
        analyzer = next(n for n in saved["nodes"] if n["type"] == "InstantIDFaceAnalyzerLoader")
        assert [m["name"] for m in analyzer["properties"]["models"]] == ["antelopev2"]
    finally:
        for path in made:
            path.unlink(missing_ok=True)


def test_first_prompt_names_every_missing_file_of_the_pack(server):
    prompt = json.loads((WORKFLOWS / "api" / "basic_api.json").read_text())
    status, body = server.post("/prompt", {"prompt": prompt})
    assert status == 400, body
    errors = {node_id: " ".join(e["details"] for e in err["errors"]) for node_id, err in body["node_errors"].items()}
    kinds = {node_id: prompt[node_id]["class_type"] for node_id in errors}
    by_kind = {kind: errors[node_id] for node_id, kind in kinds.items()}
    assert {"CheckpointLoaderSimple", "InstantIDLoader", "ControlNetLoader", "InstantIDFaceAnalyzerLoader"} <= set(by_kind)
    adapter = by_kind["InstantIDLoader"]
    assert PUBLISHED["ip-adapter.bin"][0] in adapter and str(server.base / "models" / "instantid") in adapter, adapter
    analyzer = by_kind["InstantIDFaceAnalyzerLoader"]
    for needed in ("scrfd_10g_bnkps.onnx", "glintr100.onnx", PUBLISHED["antelopev2"][0],
                   str(server.base / "models" / "insightface" / "models" / "antelopev2")):
        assert needed in analyzer, analyzer
    analyzer_errors = body["node_errors"][next(k for k, v in kinds.items() if v == "InstantIDFaceAnalyzerLoader")]["errors"]
    assert [e["extra_info"]["input_name"] for e in analyzer_errors] == ["model_pack"]  # said once, not per input


# ---------------------------------------------------------------- node help, Doctor report, socket colours


def test_node_help_panel_shows_the_packs_page(page):
    _close_dialogs(page)
    page.evaluate("""() => {
        app.graph.clear();
        const node = LiteGraph.createNode("InstantIDApply");
        node.pos = [500, 300];
        app.graph.add(node);
        app.canvas.ds.offset = [0, 0];
        app.canvas.ds.scale = 1;
        app.canvas.selectNode(node);
        app.graph.setDirtyCanvas(true, true);
    }""")
    page.get_by_test_id("info-button").click()
    panel = page.locator(".node-help-content")
    panel.get_by_role("heading", name="Example").wait_for(timeout=15_000)
    text = panel.inner_text()
    notes = (PACK_DIR / "docs" / "node_notes" / "InstantIDApply.md").read_text()
    assert "The one node most graphs need" in notes and "The one node most graphs need" in text
    assert "ip_weight" in text and "Inputs" in text
    served = {url: status for url, status in page.pack_responses.items() if "/docs/" in url}
    assert served and all(status == 200 for status in served.values()), served
    screenshot(page, "node_help_apply_instantid")
    page.locator(".node-library-tab-button").click()  # the help opened in the node library's sidebar: close it
    panel.wait_for(state="detached", timeout=10_000)


def _run_doctor(server, page) -> tuple[int, str]:
    _close_dialogs(page)
    node_id = only_node(page, "InstantIDDoctor", (300, 180))
    before = set(server.get("/history"))
    page.evaluate("() => app.queuePrompt(0)")
    deadline, entry = time.monotonic() + 60, None
    while time.monotonic() < deadline and entry is None:
        new = {k: v for k, v in server.get("/history").items() if k not in before}
        entry = next((v for v in new.values() if v.get("status", {}).get("completed") is not None), None)
        time.sleep(0.2)
    assert entry is not None and entry["status"]["status_str"] == "success", server.log_text()[-3000:]
    report = entry["outputs"][str(node_id)]["text"][0]
    page.wait_for_function("""(id) => {
        const w = app.graph.getNodeById(id)?.widgets?.find((w) => w.name === "instantid_report");
        return w && w.inputEl?.shadowRoot?.querySelector(".details");
    }""", arg=node_id, timeout=15_000)
    return node_id, report


def test_doctor_report_is_readable_with_its_summary_in_view(server, page):
    node_id, report = _run_doctor(server, page)
    problems = re.findall(r"^\[(error|warn)\]\s+([^:]+):", report, flags=re.M)
    errors = sum(status == "error" for status, _ in problems)
    assert errors >= 3, report  # no adapter, no IdentityNet, no antelopev2, no checkpoint on this server
    shown = page.evaluate("""(id) => {
        const root = app.graph.getNodeById(id).widgets.find((w) => w.name === "instantid_report").inputEl.shadowRoot;
        const box = (el) => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
        const details = root.querySelector(".details");
        const fix = Array.from(root.querySelectorAll(".finding.error .more")).find((e) => e.textContent.length > 120);
        const range = document.createRange();
        range.selectNodeContents(fix);
        const lines = Array.from(range.getClientRects(), (r) => [r.left, r.top]);
        const color = (sel) => root.querySelector(sel) ? getComputedStyle(root.querySelector(sel)).color : null;
        // Hit testing: is the panel, not something else (a sidebar, a dialog), on top of the whole summary?
        const host = root.host, summaryBox = box(root.querySelector(".summary"));
        let hidden = 0;
        for (let x = summaryBox[0] + 1; x < summaryBox[2]; x += 6) for (let y = summaryBox[1] + 1; y < summaryBox[3]; y += 6) {
            if (document.elementFromPoint(x, y) !== host) hidden += 1;
        }
        return {
            hidden, summary: summaryBox, report: box(root.querySelector(".report")),
            firstChild: root.querySelector(".report").firstElementChild.className,
            items: Array.from(root.querySelectorAll(".summary li"), (li) => [li.className, li.textContent]),
            counts: root.querySelector(".counts").textContent,
            fontSize: parseFloat(getComputedStyle(details).fontSize),
            colors: {error: color(".finding.error"), warn: color(".finding.warn"), ok: color(".finding.ok")},
            fixLeft: box(fix)[0], rowLeft: box(fix.closest(".finding"))[0], lines,
            detailsScroll: [details.scrollHeight, details.clientHeight],
        };
    }""", node_id)
    screenshot(page, "doctor_report")
    # The summary comes first and lies wholly inside the panel, which lies inside the window.
    assert shown["firstChild"] == "summary"
    left, top, right, bottom = shown["report"]
    s_left, s_top, s_right, s_bottom = shown["summary"]
    assert left <= s_left and top <= s_top and s_right <= right and s_bottom <= bottom, shown
    assert left >= 0 and top >= 0 and right <= WINDOW["width"] and bottom <= WINDOW["height"], shown
    assert shown["hidden"] == 0, f"{shown['hidden']} points of the summary are covered"
    assert shown["counts"].startswith(f"{errors} error"), shown["counts"]
    worst_first = [p for p in problems if p[0] == "error"] + [p for p in problems if p[0] == "warn"]
    assert [(cls, text.split(" ", 1)[1]) for cls, text in shown["items"]] == [(s, c.strip()) for s, c in worst_first]
    assert shown["fontSize"] >= 12
    rgb = {k: [int(v) for v in re.findall(r"\d+", c)[:3]] for k, c in shown["colors"].items() if c}
    red, green = rgb["error"], rgb["ok"]
    assert red[0] > red[1] + 60 and red[0] > red[2] + 60, shown["colors"]  # errors red
    assert green[1] > green[0] + 40 and green[1] > green[2] + 40, shown["colors"]  # fine green
    if "warn" in rgb:  # a machine without CUDA: torch is a warning
        yellow = rgb["warn"]
        assert yellow[0] > yellow[2] + 60 and yellow[1] > yellow[2] + 60, shown["colors"]  # warnings yellow
    # A wrapped fix line stays indented under its finding on every line.
    assert len({round(top) for _, top in shown["lines"]}) >= 2, shown["lines"]
    assert shown["fixLeft"] > shown["rowLeft"] + 10
    assert all(x >= shown["fixLeft"] - 0.5 for x, _ in shown["lines"]), shown["lines"]


def test_pack_sockets_have_their_own_colours(page):
    def colours():
        return page.evaluate("""(types) => types.map((t) => [app.canvas.default_connection_color_byType[t],
                                                           app.canvas.constructor.link_type_colors[t]])""", PACK_TYPES)

    def distinct(pairs):
        mine = [c for c, _ in pairs]
        assert all(c and c == link for c, link in pairs), pairs
        assert len(set(mine)) == len(mine)
        rgb = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in mine + CORE_SLOT_COLORS]
        for i in range(len(mine)):
            for j in range(len(rgb)):
                if i != j:
                    assert math.dist(rgb[i], rgb[j]) > 60, (mine[i], (mine + CORE_SLOT_COLORS)[j])
        return mine

    _close_dialogs(page)
    mine = distinct(colours())
    # The frontend resets slot colours when the palette changes: they must come back.
    page.evaluate("() => app.extensionManager.setting.set('Comfy.ColorPalette', 'light')")
    page.wait_for_timeout(300)
    assert distinct(colours()) == mine
    page.evaluate("() => app.extensionManager.setting.set('Comfy.ColorPalette', 'dark')")
    page.wait_for_timeout(300)
    assert distinct(colours()) == mine
    # And the canvas really draws them: the FACES output dot of a Face Analyze node.
    where = page.evaluate("""() => {
        app.graph.clear();
        const node = LiteGraph.createNode("InstantIDFaceAnalyze");
        node.pos = [600, 300];
        app.graph.add(node);
        app.canvas.ds.offset = [0, 0];
        app.canvas.ds.scale = 1;
        app.canvas.deselectAll?.();
        app.graph.setDirtyCanvas(true, true);
        app.canvas.draw(true, true);
        const slot = node.outputs.findIndex((o) => o.type === "INSTANTID_FACES");
        return app.canvas.ds.convertOffsetToCanvas(node.getOutputPos(slot));
    }""")
    page.wait_for_timeout(200)
    from io import BytesIO

    from PIL import Image

    x, y = round(where[0]), round(where[1])
    shot = Image.open(BytesIO(page.screenshot(clip={"x": x - 2, "y": y - 2, "width": 5, "height": 5}))).convert("RGB")
    expected = tuple(int(mine[1][i:i + 2], 16) for i in (1, 3, 5))
    drawn = shot.getpixel((2, 2))
    assert math.dist(drawn, expected) < 40, (drawn, expected)


def test_no_errors_from_the_pack_scripts(page):
    assert not page.pack_errors, "\n".join(page.pack_errors)
