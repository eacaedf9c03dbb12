"""The pack's browser side (js/instantid.js) in a real ComfyUI frontend, driven through headless Chromium.

A real server serves the real frontend (comfyui-frontend-package) with the pack
linked in as ``comfyui-instantid``. The page loads the extension, an InstantID
Doctor node is added and queued from the page, and its report must appear in the
read-only ``instantid_report`` widget without any error from the pack's script.
Chromium is Debian's (/usr/bin/chromium, see scripts/install_browser.sh);
Playwright never downloads a browser here.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

CHROMIUM = Path(os.environ.get("INSTANTID_CHROMIUM", "/usr/bin/chromium"))  # another browser build, or a missing one to check CI
# The pack's web folder is served under its folder name (WEB_DIRECTORY) and, from
# pyproject's [tool.comfy] web, under the project name too: errors from either count.
PACK_URLS = ("/extensions/comfyui-instantid/", "/extensions/instantid-faces/")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -r requirements-dev.txt)"
    if not CHROMIUM.exists():
        how = "run scripts/install_browser.sh" if shutil.which("apt-get") else "no apt-get here to install it"
        return f"{CHROMIUM} is missing ({how})"
    return None


def _from_pack(text: str) -> bool:
    return any(url in text for url in PACK_URLS)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    reason = _browser_missing()
    if reason:
        if os.environ.get("CI", "").lower() in ("true", "1"):  # CI must never go green without the browser check
            pytest.fail(f"CI=true and the browser test cannot run: {reason}")
        pytest.skip(f"browser test needs Chromium and Playwright: {reason}")
    from server import Server

    srv = Server(tmp_path_factory.mktemp("browser-base"))
    # Without this a first-run templates dialog covers the canvas.
    req = urllib.request.Request(srv.url + "/settings", data=json.dumps({"Comfy.TutorialCompleted": True}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:  # answers 200 with an empty body
        assert r.status == 200
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.pack_errors = []  # console errors and uncaught exceptions from the pack's own script
        page.pack_responses = {}  # url -> status of everything served from the pack's web directory

        def on_console(msg):
            where = msg.location.get("url", "") if msg.location else ""
            if msg.type == "error" and _from_pack(where + " " + msg.text):
                page.pack_errors.append(f"console: {msg.text} ({where})")

        def on_page_error(err):
            if _from_pack(f"{err} {err.stack}"):
                page.pack_errors.append(f"pageerror: {err}\n{err.stack}")

        def on_response(resp):
            if _from_pack(resp.url):
                page.pack_responses[resp.url] = resp.status

        page.on("console", on_console)
        page.on("pageerror", on_page_error)
        page.on("response", on_response)
        page.goto(server.url, wait_until="domcontentloaded", timeout=30_000)
        page.wait_for_function("() => window.app && window.app.vueAppReady && window.app.graph", timeout=30_000)
        yield page
        browser.close()


def test_extension_is_loaded(page):
    names = page.evaluate("() => Array.from(app.extensions, (e) => e.name)")
    assert names.count("instantid.faces") == 1, f"extension not registered exactly once; registered: {names}"
    served = {url.split("/extensions/", 1)[1]: status for url, status in page.pack_responses.items()}
    assert served == {"comfyui-instantid/instantid.js": 200}, f"js/ must be served once, under one address: {served}"


def test_doctor_report_shows_in_the_node(server, page, tmp_path):
    node_id = page.evaluate("""() => {
        app.graph.clear();
        const node = LiteGraph.createNode("InstantIDDoctor");
        node.pos = [300, 200];
        app.graph.add(node);
        app.canvas.ds.offset = [0, 0];
        app.canvas.ds.scale = 1;
        app.graph.setDirtyCanvas(true, true);
        return node.id;
    }""")

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
        return {value: w.value, readOnly: w.inputEl?.readOnly, visible: w.inputEl?.checkVisibility?.() ?? null,
                widgets: node.widgets.map((w) => w.name)};
    }""", node_id)
    assert shown["value"] == entry["outputs"][str(node_id)]["text"][0]
    assert shown["readOnly"] is True and shown["visible"] is True, shown
    assert shown["widgets"] == ["deep", "instantid_report"], shown

    # Still out of the prompt and the workflow after the widget exists.
    saved = page.evaluate("async () => { const p = await app.graphToPrompt(); return {output: p.output, workflow: p.workflow}; }")
    assert saved["output"][str(node_id)]["inputs"] == {"deep": False}, saved["output"]
    [doctor] = [n for n in saved["workflow"]["nodes"] if n["id"] == node_id]
    assert doctor["widgets_values"] == [False], doctor["widgets_values"]

    shot = tmp_path / "doctor_report.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 0

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
