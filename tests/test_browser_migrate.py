"""The "Convert cubiq InstantID nodes" menu command (js/migrate.js) in the real ComfyUI frontend, headless Chromium.

A cubiq workflow (tests/cubiq_graphs.py; its node types are not installed, so the
frontend keeps them as placeholders) is opened, the command is clicked in the
Edit menu, and the graph the page then shows must be the server's conversion of
what the page held, must run through the server with the tiny models, and the
pack's scripts must log no error. Recipe as in tests/test_browser.py.
"""

from __future__ import annotations

import cubiq_graphs
import pytest
from browser import chromium, new_page, require_browser, served
from test_workflows import check_api, with_test_models

from instantid.migrate import migrate_workflow

pytestmark = pytest.mark.server
MENU_LABEL = "Convert cubiq InstantID nodes"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    from server import graph_server

    with served(graph_server(tmp_path_factory.mktemp("browser-migrate"))) as srv:
        srv.object_info = srv.get("/object_info")
        yield srv


@pytest.fixture(scope="module")
def page(server):
    with chromium() as browser:
        yield new_page(browser, server.url, {"width": 1280, "height": 800})


def _graph_edges(workflow: dict) -> tuple[dict, set]:
    return ({n["id"]: n["type"] for n in workflow["nodes"]},
            {tuple(link[1:6]) for link in workflow["links"]})


def test_menu_command_converts_the_open_graph_and_it_runs(server, page, tmp_path):
    names = page.evaluate("() => Array.from(app.extensions, (e) => e.name)")
    assert names.count("instantid.migrate") == 1, names
    page.evaluate("async (wf) => { await app.loadGraphData(wf, true, true, null, {showMissingNodesDialog: false}); }",
                  cubiq_graphs.posed())
    held = page.evaluate("() => app.graph.serialize()")
    assert "ApplyInstantID" in {n["type"] for n in held["nodes"]}

    page.locator(".comfy-menu-button-wrapper").click()
    page.get_by_role("menuitem", name="Edit", exact=True).hover()
    item = page.get_by_role("menuitem", name=MENU_LABEL)
    assert item.count() == 1
    item.click()
    page.wait_for_function("() => app.graph.nodes.some((n) => n.type === 'InstantIDApply')", timeout=20_000)

    shown = page.evaluate("() => app.graph.serialize()")
    expected, report = migrate_workflow(held, ["CPU"])  # the test server's onnxruntime offers CPU
    assert _graph_edges(shown) == _graph_edges(expected)
    assert {n["id"]: n["widgets_values"] for n in shown["nodes"]} == {n["id"]: n["widgets_values"] for n in expected["nodes"]}
    assert {n["id"]: list(n["pos"]) for n in shown["nodes"]} == {n["id"]: list(n["pos"]) for n in expected["nodes"]}
    toast = page.locator(".p-toast-message").first
    toast.wait_for(timeout=10_000)
    assert f"converted {len(report.converted)} node(s)" in toast.inner_text()
    assert "pose photo" in toast.inner_text()

    shot = tmp_path / "migrated.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")

    prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
    run = with_test_models({k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}, server.models)
    check_api(run, server.object_info, files_present=True)
    entry = server.run_prompt(run, timeout=300)
    assert entry["status"]["status_str"] == "success", f"{entry['status']}\n{server.log_text()[-4000:]}"
    assert not page.pack_errors, "\n".join(page.pack_errors)


def test_nothing_to_convert_says_so_and_changes_nothing(page):
    before = page.evaluate("() => JSON.stringify(app.graph.serialize().nodes.map((n) => [n.id, n.type]))")
    page.evaluate("() => app.extensionManager.command.execute('InstantID.ConvertCubiqWorkflow')")
    page.get_by_text("nothing to convert").first.wait_for(timeout=10_000)
    assert page.evaluate("() => JSON.stringify(app.graph.serialize().nodes.map((n) => [n.id, n.type]))") == before
    assert not page.pack_errors, "\n".join(page.pack_errors)
