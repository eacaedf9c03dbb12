"""Screenshot an example workflow in the real ComfyUI web UI, for the README.

    .venv/bin/python scripts/screenshot_workflow.py workflows/basic.json docs/basic_workflow.png

Starts a throw-away ComfyUI server with the pack, opens the page in Debian's
chromium through Playwright, loads the workflow and saves a PNG.
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_server import start_server, stop_server  # noqa: E402

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]


def main(workflow: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    base = tempfile.TemporaryDirectory(prefix="instantid-shot-")
    proc, url = start_server(Path(base.name))
    try:
        req = urllib.request.Request(url + "/settings", data=json.dumps({"Comfy.TutorialCompleted": True}).encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=LAUNCH_ARGS)
            page = browser.new_page(viewport={"width": 1800, "height": 1000})
            page.goto(url, wait_until="domcontentloaded", timeout=30_000)
            page.wait_for_function("() => window.app && window.app.vueAppReady && window.app.graph", timeout=60_000)
            page.evaluate("(wf) => app.loadGraphData(wf, true, true, null, {showMissingModelsDialog: false, showMissingNodesDialog: false})",
                          json.loads(workflow.read_text()))
            page.wait_for_timeout(1500)
            page.keyboard.press("Escape")
            page.evaluate("""() => {
                const nodes = app.graph._nodes;
                const minX = Math.min(...nodes.map((n) => n.pos[0])), minY = Math.min(...nodes.map((n) => n.pos[1] - 30));
                const maxX = Math.max(...nodes.map((n) => n.pos[0] + n.size[0]));
                const maxY = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
                const [w, h] = [app.canvas.canvas.clientWidth - 140, app.canvas.canvas.clientHeight - 120];
                const scale = Math.min(w / (maxX - minX), h / (maxY - minY), 1.0);
                app.canvas.ds.scale = scale;
                app.canvas.ds.offset = [90 / scale - minX, 90 / scale - minY];
                app.graph.setDirtyCanvas(true, true);
            }""")
            page.wait_for_timeout(800)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
            browser.close()
    finally:
        stop_server(proc)
        base.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
