"""How a workflow looks when it opens in the real web UI, measured in the page (Playwright).

Shared by ``scripts/layout_workflows.py`` (which lays the templates out) and
``tests/test_browser_templates.py`` (which fails when one is laid out badly).
Node boxes are the frontend's own: ``pos``/``size`` after the graph is
configured (the frontend grows a node to its ``computeSize()``), plus the
title bar above ``pos``. "Covered" means the browser's own hit testing
(``document.elementsFromPoint``) finds something other than the graph canvas
or a node's DOM widget on top at a point of the node: the sidebar, the top
bar, the Run button, the minimap, a banner, or the edge of the window.
"""

from __future__ import annotations

from dataclasses import dataclass

WINDOW = {"width": 1600, "height": 900}
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]
NOTE_TYPES = {"Note", "MarkdownNote"}
SAMPLE_STEP = 8  # screen pixels between the points tested on each node

# The frontend's own loader, as the template browser calls it, minus the dialogs (tested on their own).
OPEN_JS = """async ([wf, name]) => {
    await app.loadGraphData(wf, true, true, name, {showMissingModelsDialog: false, showMissingNodesDialog: false});
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
}"""

BOXES_JS = """() => {
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    return {
        scale: app.canvas.ds.scale, offset: Array.from(app.canvas.ds.offset),
        lowQualityBelow: app.canvas._lowQualityZoomThreshold ?? 0, lowQuality: !!app.canvas.low_quality,
        nodes: app.graph._nodes.map((n) => ({id: n.id, type: n.type, title: n.title,
            x: n.pos[0], y: n.pos[1] - title, w: n.size[0], h: n.size[1] + title,
            body: [n.size[0], n.size[1]], min: Array.from(n.computeSize())})),
    };
}"""

# For every node: points of its box (in screen pixels) where something other than the canvas or a DOM
# widget is on top, and what that is.
COVERED_JS = """([step]) => {
    const canvas = app.canvas.canvas;
    const [W, H] = [window.innerWidth, window.innerHeight];
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    const ds = app.canvas.ds;
    const describe = (el) => el ? `${el.tagName.toLowerCase()}.${String(el.className).split(" ").slice(0, 3).join(".")}` : "outside the window";
    const out = [];
    for (const n of app.graph._nodes) {
        const [x0, y0] = ds.convertOffsetToCanvas([n.pos[0], n.pos[1] - title]);
        const [x1, y1] = ds.convertOffsetToCanvas([n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
        const hits = {};
        let covered = 0, total = 0;
        const xs = [], ys = [];
        for (let x = x0; x < x1; x += step) xs.push(x);
        xs.push(x1 - 0.5);
        for (let y = y0; y < y1; y += step) ys.push(y);
        ys.push(y1 - 0.5);
        for (const x of xs) for (const y of ys) {
            total += 1;
            let top = null;
            if (x >= 0 && y >= 0 && x < W && y < H) {
                top = document.elementFromPoint(x, y);
                if (top === canvas || top?.closest?.(".dom-widget")) continue;
            }
            covered += 1;
            const what = describe(top);
            hits[what] = (hits[what] ?? 0) + 1;
        }
        out.push({id: n.id, title: n.title, screen: [x0, y0, x1 - x0, y1 - y0], covered, total, hits});
    }
    return out;
}"""


@dataclass(frozen=True)
class Box:
    id: int
    title: str
    x: float
    y: float
    w: float
    h: float

    def overlaps(self, other: Box, gap: float = 0.0) -> bool:
        """True when the boxes intersect, or come closer than ``gap``."""
        return (self.x < other.x + other.w + gap and other.x < self.x + self.w + gap
                and self.y < other.y + other.h + gap and other.y < self.y + self.h + gap)


def open_workflow(page, workflow: dict, name: str = "template") -> None:
    page.evaluate(OPEN_JS, [workflow, name])


def measure(page) -> dict:
    """The open graph: view (scale, offset, LOD threshold) and every node's box in graph units."""
    return page.evaluate(BOXES_JS)


def boxes(measured: dict) -> list[Box]:
    return [Box(n["id"], n["title"], n["x"], n["y"], n["w"], n["h"]) for n in measured["nodes"]]


def overlapping_pairs(node_boxes: list[Box], gap: float = 0.0) -> list[tuple[Box, Box]]:
    return [(a, b) for i, a in enumerate(node_boxes) for b in node_boxes[i + 1:] if a.overlaps(b, gap)]


def covered_nodes(page, step: int = SAMPLE_STEP) -> list[dict]:
    """Nodes of the open graph that are not fully visible in the window, with what covers them."""
    return [n for n in page.evaluate(COVERED_JS, [step]) if n["covered"]]


def duplicate_titles(measured: dict) -> list[str]:
    titles = [n["title"] for n in measured["nodes"]]
    return sorted({t for t in titles if titles.count(t) > 1})


def view_problems(page, workflow: dict) -> list[str]:
    """Everything wrong with how the open workflow looks at the current window size, as sentences."""
    measured = measure(page)
    problems = []
    if not isinstance(workflow.get("extra", {}).get("ds"), dict):
        problems.append("no saved view (extra.ds): the frontend opens it wherever fitView puts it")
    for a, b in overlapping_pairs(boxes(measured)):
        problems.append(f"node {a.id} '{a.title}' overlaps node {b.id} '{b.title}'")
    for title in duplicate_titles(measured):
        problems.append(f"several nodes are titled '{title}'")
    for n in covered_nodes(page):
        hits = ", ".join(f"{what} ({count})" for what, count in sorted(n["hits"].items(), key=lambda kv: -kv[1]))
        problems.append(f"node {n['id']} '{n['title']}' is not fully visible: {n['covered']} of {n['total']} "
                        f"sampled points hidden by {hits}")
    if measured["lowQuality"]:
        problems.append(f"opens at scale {measured['scale']:.2f}, below the {measured['lowQualityBelow']:.2f} at which "
                        "the frontend stops drawing text (low quality)")
    return problems
