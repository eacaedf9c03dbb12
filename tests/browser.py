"""Shared set-up of the real-browser tests: Debian's chromium driven by Playwright, errors from the pack's
own web files collected, screenshots kept as test artifacts.

Under ``CI=true`` a missing browser fails the test (it must never pass by skipping there); elsewhere the
test is skipped with the reason. Screenshots go to ``$INSTANTID_TEST_ARTIFACTS`` or ``tests/artifacts/``
(ignored by git), kept after the run.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from workflow_view import LAUNCH_ARGS

CHROMIUM = Path("/usr/bin/chromium")
# The pack's web folder is served under its folder name (WEB_DIRECTORY) and, from
# pyproject's [tool.comfy] web, under the project name too: errors from either count.
PACK_URLS = ("/extensions/comfyui-instantid/", "/extensions/instantid-faces/")
ARTIFACTS = Path(os.environ.get("INSTANTID_TEST_ARTIFACTS") or Path(__file__).resolve().parent / "artifacts")


def browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -r requirements-dev.txt)"
    if not CHROMIUM.exists():
        how = "run scripts/install_browser.sh" if shutil.which("apt-get") else "no apt-get here to install it"
        return f"{CHROMIUM} is missing ({how})"
    return None


def require_browser() -> None:
    reason = browser_missing()
    if reason is None:
        return
    message = f"browser test needs Chromium and Playwright: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def from_pack(text: str) -> bool:
    return any(url in text for url in PACK_URLS)


def first_run_done(url: str) -> None:
    """Without this a first-run templates dialog covers the canvas."""
    req = urllib.request.Request(url + "/settings", data=json.dumps({"Comfy.TutorialCompleted": True}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:  # answers 200 with an empty body
        assert r.status == 200


@contextmanager
def served(srv) -> Iterator:
    """A started test server (tests/server.py) with the first-run dialogs off, stopped after the block however it ends."""
    try:
        first_run_done(srv.url)
        yield srv
    finally:
        srv.stop()


def new_page(browser, url: str, viewport: dict):
    """A page on ``url`` once the app is ready, recording the pack's errors (``page.pack_errors``) and what its
    web folder served (``page.pack_responses``: url -> status)."""
    page = browser.new_page(viewport=viewport)
    page.pack_errors = []
    page.pack_responses = {}

    def on_console(msg):
        where = msg.location.get("url", "") if msg.location else ""
        if msg.type == "error" and from_pack(where + " " + msg.text):
            page.pack_errors.append(f"console: {msg.text} ({where})")

    def on_page_error(err):
        if from_pack(f"{err} {err.stack}"):
            page.pack_errors.append(f"pageerror: {err}\n{err.stack}")

    def on_response(resp):
        if from_pack(resp.url):
            page.pack_responses[resp.url] = resp.status

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    page.on("response", on_response)
    page.goto(url, wait_until="domcontentloaded", timeout=60_000)
    page.wait_for_function("() => window.app && window.app.vueAppReady && window.app.graph", timeout=60_000)
    return page


def launch(pw):
    return pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium for the length of the block (a module fixture yields from inside it)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            yield browser
        finally:
            browser.close()


def only_node(page, node_type: str, pos: tuple[int, int]) -> int:
    """Clear the canvas, add one ``node_type`` node at ``pos`` with the view at the origin, unzoomed; its id."""
    return page.evaluate("""([type, pos]) => {
        app.graph.clear();
        const node = LiteGraph.createNode(type);
        node.pos = pos;
        app.graph.add(node);
        app.canvas.ds.offset = [0, 0];
        app.canvas.ds.scale = 1;
        app.graph.setDirtyCanvas(true, true);
        return node.id;
    }""", [node_type, list(pos)])


def screenshot(page, name: str, **kwargs) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), **kwargs)
    print(f"screenshot: {path}")
    return path
