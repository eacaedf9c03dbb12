"""Lay the example workflows out so that each opens readable in a 1600x900 window.

    .venv/bin/python scripts/layout_workflows.py                      # every workflows/*.json
    .venv/bin/python scripts/layout_workflows.py workflows/posed.json # just this one
    .venv/bin/python scripts/layout_workflows.py --check              # report, write nothing

Starts a throw-away ComfyUI server with the pack, opens each workflow in
Debian's chromium (Playwright) and measures every node as the frontend sizes it
(``computeSize()``, and the rendered text of notes). Nodes are then placed in
columns that follow the links left to right (a node sits as close to its
consumers as the graph allows; nodes that could sit in several columns move to
where the tallest column gets shorter), stacked with gaps, and the saved view
(``extra.ds``) is chosen as the largest zoom at which, in the real page, no node
is under the sidebar, the top bar, the Run button or the minimap. The result is
checked in the page again (``workflow_view.view_problems``); the thumbnail the
template browser shows (``<name>.jpg``) is a screenshot of the workflow as it
opens. Only positions, sizes, ``extra.ds`` and the thumbnail change.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import urllib.request
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workflow_view as wv  # noqa: E402
from comfy_server import start_server, stop_server  # noqa: E402

PACK_DIR = Path(__file__).resolve().parent.parent
COLUMN_GAP = 70  # room for the links between columns
ROW_GAP = 40
TITLE = 30  # LiteGraph.NODE_TITLE_HEIGHT, checked against the page in measure()
VIEW_MARGIN = 10  # screen pixels kept free around every node
THUMBNAIL = (768, 480)
# Widths and body heights nodes get beyond the frontend's minimum: room for a prompt, an image preview, a note.
PREFERRED = {"CLIPTextEncode": (320, 110), "LoadImage": (260, 240), "SaveImage": (300, 300), "PreviewImage": (300, 300),
             "MarkdownNote": (400, 0), "Note": (400, 0)}
DEFAULT_WIDTH = 270

MEASURE_JS = """async ([noteWidths]) => {
    const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    const out = {title: LiteGraph.NODE_TITLE_HEIGHT, nodes: {}};
    for (const n of app.graph._nodes) out.nodes[n.id] = {min: Array.from(n.computeSize())};
    // Notes: the height their text needs at the width they will get.
    for (const n of app.graph._nodes) {
        const width = noteWidths[n.type];
        if (!width) continue;
        n.setSize([width, 1000]);
        app.canvas.ds.scale = 1;  // on screen, or the frontend hides its DOM widget
        app.canvas.ds.offset = [200 - n.pos[0], 200 - n.pos[1]];
        app.graph.setDirtyCanvas(true, true);
        await frame();
        const el = n.widgets[0].element ?? n.widgets[0].inputEl;
        const content = el.querySelector(".ProseMirror") ?? el;
        let needed;
        if (content === el) {  // a plain textarea: shrink it, then read how much it scrolls
            n.setSize([width, 80]);
            app.graph.setDirtyCanvas(true, true);
            await frame();
            needed = el.scrollHeight + (80 - el.clientHeight);
        } else {  // rendered markdown: where its last block ends
            const last = content.lastElementChild;
            const end = last ? last.offsetTop + last.offsetHeight + parseFloat(getComputedStyle(last).marginBottom) : 0;
            needed = end + (1000 - el.clientHeight);
        }
        out.nodes[n.id].min = [width, Math.ceil(needed) + 6];
    }
    return out;
}"""


# ---------------------------------------------------------------- layout (pure: graph + sizes -> positions)


def _edges(workflow: dict) -> tuple[dict, dict]:
    preds, succs = defaultdict(set), defaultdict(set)
    for _, origin, _, target, _, _ in workflow["links"]:
        preds[target].add(origin)
        succs[origin].add(target)
    return preds, succs


def _columns(ids: list[int], preds: dict, succs: dict, height: dict) -> dict[int, int]:
    """Column per node: as late as its consumers allow, then moved left where that shortens the tallest column."""
    order, seen = [], set()

    def visit(n):  # depth-first topological order
        if n in seen:
            return
        seen.add(n)
        for p in sorted(preds[n]):
            visit(p)
        order.append(n)

    for n in ids:
        visit(n)
    earliest = {}
    for n in order:
        earliest[n] = max((earliest[p] + 1 for p in preds[n]), default=0)
    col = {}
    for n in reversed(order):
        col[n] = min((col[s] - 1 for s in succs[n]), default=earliest[n])

    def totals():
        t = defaultdict(float)
        for n, c in col.items():
            t[c] += height[n] + ROW_GAP
        return t

    for _ in range(4 * len(ids)):  # each pass makes one improving move; stops when none is left
        t = totals()
        tallest = max(t.values())
        best = None
        for n in ids:
            if t[col[n]] < tallest:
                continue
            low = max((col[p] + 1 for p in preds[n]), default=0)
            high = min((col[s] - 1 for s in succs[n]), default=max(col.values()))
            for c in range(low, high + 1):
                if c == col[n]:
                    continue
                new_max = max(t[c] + height[n] + ROW_GAP, t[col[n]] - height[n] - ROW_GAP)
                if new_max < tallest and (best is None or new_max < best[0]):
                    best = (new_max, n, c)
        if best is None:
            break
        col[best[1]] = best[2]
    # A last node fed only by a lone node (VAE Decode -> Save Image) goes under it instead of into a column of its own.
    for n in ids:
        if succs[n] or len(preds[n]) != 1:
            continue
        (p,) = preds[n]
        if succs[p] == {n} and sum(c == col[p] for c in col.values()) == 1 and sum(c == col[n] for c in col.values()) == 1:
            col[n] = col[p]
    first = min(col.values())
    return {n: c - first for n, c in col.items()}


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default


def _order(col: dict, preds: dict, succs: dict, height: dict) -> dict[int, list[int]]:
    """Top-to-bottom order in each column: links as straight as a few barycentre sweeps make them.

    Starts from node id order, not from the current positions, so that laying a workflow out again changes nothing.
    """
    columns = defaultdict(list)
    for n in sorted(col):
        columns[col[n]].append(n)

    def centres():
        y = {}
        for nodes in columns.values():
            top = 0.0
            for n in nodes:
                y[n] = top + height[n] / 2
                top += height[n] + ROW_GAP
        return y

    last = max(columns)
    for _ in range(3):
        for c in range(1, last + 1):  # left to right: follow the inputs
            y = centres()
            columns[c].sort(key=lambda n: _mean([y[m] for m in preds[n]], y[n]))
        for c in range(last - 1, -1, -1):  # right to left: follow the consumers
            y = centres()
            columns[c].sort(key=lambda n: _mean([y[m] for m in succs[n]], y[n]))
    for c, nodes in columns.items():  # a node stacked under its own input (VAE Decode -> Save Image) stays under it
        columns[c] = sorted(nodes, key=lambda n: any(p in nodes for p in preds[n]))
    return columns


def layout(workflow: dict, sizes: dict[int, tuple[float, float]]) -> dict[int, tuple[list[float], list[float]]]:
    """New (pos, size) per node id. ``sizes``: body size per node (at least the frontend's computeSize)."""
    notes = [n["id"] for n in workflow["nodes"] if n["type"] in wv.NOTE_TYPES]
    ids = [n["id"] for n in workflow["nodes"] if n["id"] not in notes]
    preds, succs = _edges(workflow)
    height = {n: sizes[n][1] + TITLE for n in sizes}
    col = _columns(ids, preds, succs, height)
    columns = _order(col, preds, succs, height)
    # Notes (the read-me) go on top of the shortest of the first two columns: where reading starts.
    for note in notes:
        shortest = min((c for c in columns if c <= 1), key=lambda c: sum(height[n] + ROW_GAP for n in columns[c]))
        columns[shortest].insert(0, note)
    placed, x = {}, 0.0
    for c in sorted(columns):
        width = max(sizes[n][0] for n in columns[c])
        top = 0.0
        for n in columns[c]:
            placed[n] = ([round(x), round(top + TITLE)], [round(width), round(sizes[n][1])])
            top += height[n] + ROW_GAP
        x += width + COLUMN_GAP
    return placed


# ---------------------------------------------------------------- saved view


def covered_mask(page):
    """Window pixels (at a 4-px grid) where something other than the graph canvas is on top, with an empty graph."""
    import numpy as np

    step = 4
    flags = page.evaluate("""async ([step]) => {
        app.graph.clear();
        app.graph.setDirtyCanvas(true, true);
        await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));  // DOM widgets go
        const canvas = app.canvas.canvas, out = [];
        for (let y = 0; y < window.innerHeight; y += step) {
            const row = [];
            for (let x = 0; x < window.innerWidth; x += step) row.push(document.elementFromPoint(x, y) === canvas ? 0 : 1);
            out.push(row);
        }
        return out;
    }""", [step])
    return np.array(flags, dtype=np.int32), step


def fit_view(placed: dict, mask, step: int, lowest: float) -> dict:
    """The largest scale (<= 1) and an offset at which every node box, plus a margin, lies on uncovered canvas."""
    import numpy as np

    rows, cols = mask.shape
    integral = np.zeros((rows + 1, cols + 1), dtype=np.int64)
    integral[1:, 1:] = mask.cumsum(0).cumsum(1)
    boxes = [(pos[0], pos[1] - TITLE, size[0], size[1] + TITLE) for pos, size in placed.values()]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    free_cols = np.where(mask.sum(0) < rows)[0]
    centre_x = (free_cols.min() + free_cols.max()) * step / 2 if len(free_cols) else cols * step / 2
    for scale in np.arange(1.0, lowest - 1e-9, -0.01):
        width, height = (x1 - x0) * scale, (y1 - y0) * scale
        if width + 2 * VIEW_MARGIN > cols * step or height + 2 * VIEW_MARGIN > rows * step:
            continue
        # Candidate screen positions of the graph's top-left corner, on the mask grid.
        lefts = np.arange(VIEW_MARGIN, cols * step - width - VIEW_MARGIN, step)
        tops = np.arange(VIEW_MARGIN, rows * step - height - VIEW_MARGIN, step)
        ok = np.ones((len(tops), len(lefts)), dtype=bool)
        for bx, by, bw, bh in boxes:
            sx = lefts[None, :] + (bx - x0) * scale - VIEW_MARGIN
            sy = tops[:, None] + (by - y0) * scale - VIEW_MARGIN
            c0 = np.clip(np.floor(sx / step).astype(int), 0, cols)
            r0 = np.clip(np.floor(sy / step).astype(int), 0, rows)
            c1 = np.clip(np.ceil((sx + bw * scale + 2 * VIEW_MARGIN) / step).astype(int), 0, cols)
            r1 = np.clip(np.ceil((sy + bh * scale + 2 * VIEW_MARGIN) / step).astype(int), 0, rows)
            r0, r1 = np.broadcast_to(r0, ok.shape), np.broadcast_to(r1, ok.shape)
            c0, c1 = np.broadcast_to(c0, ok.shape), np.broadcast_to(c1, ok.shape)
            covered = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
            ok &= covered == 0
        if not ok.any():
            continue
        # Of the places that work, the one whose centre is nearest the middle of the free canvas.
        ty, tx = np.nonzero(ok)
        cx = lefts[tx] + width / 2
        cy = tops[ty] + height / 2
        best = np.argmin((cx - centre_x) ** 2 + (cy - rows * step / 2) ** 2 * 0.25)
        left, top = float(lefts[tx[best]]), float(tops[ty[best]])
        scale = round(float(scale), 2)
        return {"scale": scale, "offset": [round(left / scale - x0, 1), round(top / scale - y0, 1)]}
    raise SystemExit(f"the graph ({x1 - x0:.0f} x {y1 - y0:.0f}) does not fit a {cols * step}x{rows * step} window at a "
                     f"readable scale (>= {lowest:.2f}): make it smaller")


# ---------------------------------------------------------------- the page


def _thumbnail(page, path: Path) -> None:
    from PIL import Image

    m = wv.measure(page)
    ds_scale, (ox, oy) = m["scale"], m["offset"]
    xs = [(n["x"] + ox) * ds_scale for n in m["nodes"]] + [(n["x"] + n["w"] + ox) * ds_scale for n in m["nodes"]]
    ys = [(n["y"] + oy) * ds_scale for n in m["nodes"]] + [(n["y"] + n["h"] + oy) * ds_scale for n in m["nodes"]]
    pad = VIEW_MARGIN
    clip = {"x": max(min(xs) - pad, 0), "y": max(min(ys) - pad, 0)}
    clip["width"] = min(max(xs) + pad, wv.WINDOW["width"]) - clip["x"]
    clip["height"] = min(max(ys) + pad, wv.WINDOW["height"]) - clip["y"]
    hide = ".minimap-main-container"  # it may sit inside the graph's bounding box (never on a node)
    page.evaluate("(sel) => document.querySelectorAll(sel).forEach((e) => { e.style.visibility = 'hidden'; })", hide)
    shot = Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB")
    page.evaluate("(sel) => document.querySelectorAll(sel).forEach((e) => { e.style.visibility = ''; })", hide)
    shot.thumbnail(THUMBNAIL, Image.LANCZOS)
    canvas = Image.new("RGB", THUMBNAIL, shot.getpixel((2, 2)))
    canvas.paste(shot, ((THUMBNAIL[0] - shot.width) // 2, (THUMBNAIL[1] - shot.height) // 2))
    canvas.save(path, "JPEG", quality=88)


def lay_out_file(page, path: Path, write: bool) -> list[str]:
    workflow = json.loads(path.read_text())
    wv.open_workflow(page, workflow, path.stem)
    if not write:
        return wv.view_problems(page, workflow)
    note_widths = {t: PREFERRED[t][0] for t in wv.NOTE_TYPES}
    measured = page.evaluate(MEASURE_JS, [note_widths])
    assert measured["title"] == TITLE, f"the frontend's title height is {measured['title']}, not {TITLE}"
    sizes = {}
    for node in workflow["nodes"]:
        want_w, want_h = PREFERRED.get(node["type"], (DEFAULT_WIDTH, 0))
        min_w, min_h = measured["nodes"][str(node["id"])]["min"]
        sizes[node["id"]] = (max(min_w, want_w), max(min_h, want_h))
    placed = layout(workflow, sizes)
    mask, step = covered_mask(page)
    lowest = page.evaluate("() => app.canvas._lowQualityZoomThreshold") + 0.01
    for node in workflow["nodes"]:
        node["pos"], node["size"] = placed[node["id"]]
    workflow.setdefault("extra", {})["ds"] = fit_view(placed, mask, step, lowest)
    path.write_text(json.dumps(workflow, indent=1, ensure_ascii=False) + "\n")
    wv.open_workflow(page, workflow, path.stem)
    problems = wv.view_problems(page, workflow)
    if not problems:
        _thumbnail(page, path.with_suffix(".jpg"))
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="workflow files (default: every workflows/*.json)")
    parser.add_argument("--check", action="store_true", help="only report problems, change nothing")
    args = parser.parse_args()
    files = args.files or sorted((PACK_DIR / "workflows").glob("*.json"))
    from playwright.sync_api import sync_playwright

    failed = 0
    with tempfile.TemporaryDirectory(prefix="instantid-layout-") as base:
        proc, url = start_server(Path(base))
        try:
            req = urllib.request.Request(url + "/settings", data=json.dumps({"Comfy.TutorialCompleted": True}).encode(),
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=30).read()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=wv.LAUNCH_ARGS)
                page = browser.new_page(viewport=wv.WINDOW)
                page.goto(url, wait_until="domcontentloaded", timeout=60_000)
                page.wait_for_function("() => window.app && window.app.vueAppReady && window.app.graph", timeout=60_000)
                for path in files:
                    problems = lay_out_file(page, path, write=not args.check)
                    failed += bool(problems)
                    print(f"{path.name}: " + ("ok" if not problems else "\n  " + "\n  ".join(problems)), flush=True)
                browser.close()
        finally:
            stop_server(proc)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
