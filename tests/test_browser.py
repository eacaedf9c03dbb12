"""The pack's browser side (js/instantid.js) in a real ComfyUI frontend, driven through headless Chromium.

A real server serves the real frontend (comfyui-frontend-package) with the pack
linked in as ``comfyui-instantid``. The page loads the extension, an InstantID
Doctor node is added and queued from the page, and its report must appear in the
read-only ``instantid_report`` widget without any error from the pack's script.
Chromium is Debian's (/usr/bin/chromium, see scripts/install_browser.sh);
Playwright never downloads a browser here.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from browser import chromium, new_page, only_node, require_browser, screenshot, served

pytestmark = pytest.mark.server
JS_FILES = sorted(p.name for p in (Path(__file__).resolve().parent.parent / "js").glob("*.js"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    from server import Server

    with served(Server(tmp_path_factory.mktemp("browser-base"))) as srv:
        yield srv


@pytest.fixture(scope="module")
def page(server):
    with chromium() as browser:
        yield new_page(browser, server.url, {"width": 1280, "height": 800})


def test_extension_is_loaded(page):
    names = page.evaluate("() => Array.from(app.extensions, (e) => e.name)")
    for name in ("instantid.faces", "instantid.socketColors", "instantid.missingModels", "instantid.migrate"):
        assert names.count(name) == 1, f"extension {name} not registered exactly once; registered: {names}"
    served = {url.split("/extensions/", 1)[1]: status for url, status in page.pack_responses.items()
              if url.endswith(".js")}
    assert served == {f"comfyui-instantid/{name}": 200 for name in JS_FILES}, f"js/ must be served once, under one address: {served}"


def test_doctor_report_shows_in_the_node(server, page):
    node_id = only_node(page, "InstantIDDoctor", (300, 200))

    # The display widget must stay out of the API prompt and the saved workflow.
    saved = page.evaluate("async () => { const p = await app.graphToPrompt(); return {output: p.output, workflow: p.workflow}; }")
    assert saved["output"] == {str(node_id): {"inputs": {"deep": False}, "class_type": "InstantIDDoctor",
                                              "_meta": {"title": "InstantID Doctor"}}}, saved["output"]

    before = set(server.get("/history"))
    page.evaluate("() => app.queuePrompt(0)")
    deadline = time.monotonic() + 30
    entry = None
    while time.monotonic() < deadline and entry is None:
        new = {k: v for k, v in server.get("/history").items() if k not in before}
        entry = next((v for v in new.values() if v.get("status", {}).get("completed") is not None), None)
        time.sleep(0.2)
    assert entry is not None, f"the queued prompt did not finish; server log:\n{server.log_text()[-3000:]}"
    assert entry["status"]["status_str"] == "success", f"{entry['status']}\n{server.log_text()[-3000:]}"

    page.wait_for_function(
        """(id) => {
            const w = app.graph.getNodeById(id)?.widgets?.find((w) => w.name === "instantid_report");
            return w && String(w.value).includes("ComfyUI version");
        }""", arg=node_id, timeout=15_000)
    shown = page.evaluate("""(id) => {
        const node = app.graph.getNodeById(id);
        const w = node.widgets.find((w) => w.name === "instantid_report");
        return {value: w.value, text: w.inputEl?.shadowRoot?.textContent ?? "",
                editable: !!w.inputEl?.shadowRoot?.querySelector("textarea, input, [contenteditable=true]"),
                visible: w.inputEl?.checkVisibility?.() ?? null, widgets: node.widgets.map((w) => w.name)};
    }""", node_id)
    assert shown["value"] == entry["outputs"][str(node_id)]["text"][0]
    assert shown["editable"] is False and shown["visible"] is True, shown
    # Every finding of the report is shown (the panel regroups them, so compare the findings' texts).
    for line in shown["value"].splitlines():
        if line.startswith("["):
            assert line.split("]", 1)[1].strip() in " ".join(shown["text"].split()), line
    assert shown["widgets"] == ["deep", "instantid_report"], shown

    # Still out of the prompt and the workflow after the widget exists.
    saved = page.evaluate("async () => { const p = await app.graphToPrompt(); return {output: p.output, workflow: p.workflow}; }")
    assert saved["output"][str(node_id)]["inputs"] == {"deep": False}, saved["output"]
    [doctor] = [n for n in saved["workflow"]["nodes"] if n["id"] == node_id]
    assert doctor["widgets_values"] == [False], doctor["widgets_values"]

    assert screenshot(page, "doctor_report_1280").stat().st_size > 0

    # A saved workflow loads back with the right `deep` value (the report does not shift widgets_values).
    reloaded = page.evaluate("""async (id) => {
        app.graph.getNodeById(id).widgets.find((w) => w.name === "deep").value = true;
        const workflow = (await app.graphToPrompt()).workflow;
        await app.loadGraphData(workflow);
        const node = app.graph.getNodeById(id);
        return {widgets: node.widgets.map((w) => [w.name, w.value]), values: node.serialize().widgets_values};
    }""", node_id)
    assert reloaded == {"widgets": [["deep", True]], "values": [True]}, reloaded
    assert not page.pack_errors, "\n".join(page.pack_errors)


def test_no_errors_from_the_pack_script(page):
    assert not page.pack_errors, "\n".join(page.pack_errors)
