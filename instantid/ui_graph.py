"""Editing a UI-format (LiteGraph, ``"version": 0.4``) workflow as plain JSON data: nodes, links, free space.

The web UI saves a graph as ``nodes`` (each with ``inputs`` ``[{name, type,
link}]`` and ``outputs`` ``[{name, type, links, slot_index}]``) and ``links``
``[id, origin_id, origin_slot, target_id, target_slot, type]``. Both ends of a
link are recorded twice (in the link and on the nodes); every edit here keeps
the two in step so that the frontend and ComfyUI read the same graph.

No ComfyUI import: the migration command runs without a host.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .errors import InstantIDError

TITLE_HEIGHT = 30  # drawn above ``pos``
GAP = 40  # free space kept around a node that is placed automatically
# Nodes that exist only in the web UI; a Reroute passes one link through unchanged.
REROUTE = "Reroute"


class WorkflowFormatError(InstantIDError, ValueError):
    """The file is not a UI-format workflow this command can edit; the message says what it is instead."""


@dataclass(frozen=True)
class Socket:
    name: str
    type: str


def node_size(node: dict) -> tuple[float, float]:
    """``size`` as saved: a list, or the ``{"0": w, "1": h}`` object older frontends wrote."""
    size = node.get("size") or [200, 100]
    if isinstance(size, dict):
        return float(size.get("0", 200)), float(size.get("1", 100))
    return float(size[0]), float(size[1])


def node_pos(node: dict) -> tuple[float, float]:
    pos = node.get("pos") or [0, 0]
    if isinstance(pos, dict):
        return float(pos.get("0", 0)), float(pos.get("1", 0))
    return float(pos[0]), float(pos[1])


class UIGraph:
    """A UI workflow being edited in place (the dict passed in is the one changed)."""

    def __init__(self, workflow: dict) -> None:
        check_ui_workflow(workflow)
        self.data = workflow
        self.nodes: dict[int, dict] = {n["id"]: n for n in workflow["nodes"]}
        self.links: dict[int, list] = {link[0]: link for link in workflow["links"]}

    # ------------------------------------------------------------ reading

    def input_link(self, node: dict, name: str) -> list | None:
        """The link into ``node``'s input ``name``, or ``None`` when that input is unconnected or absent."""
        for slot in node.get("inputs") or []:
            if slot["name"] == name and slot.get("link") is not None:
                return self.links.get(slot["link"])
        return None

    def output_links(self, node: dict, slot: int) -> list[list]:
        outputs = node.get("outputs") or []
        if slot >= len(outputs):
            return []
        return [self.links[i] for i in outputs[slot].get("links") or [] if i in self.links]

    def source(self, link: list) -> tuple[dict, int]:
        """The node and output slot a link really comes from, looking through Reroute nodes."""
        node, slot = self.nodes[link[1]], link[2]
        seen = set()
        while node["type"] == REROUTE and node["id"] not in seen:
            seen.add(node["id"])
            upstream = next((self.links.get(s["link"]) for s in node.get("inputs") or [] if s.get("link") is not None), None)
            if upstream is None:
                break
            node, slot = self.nodes[upstream[1]], upstream[2]
        return node, slot

    def consumers(self, node: dict, slot: int) -> list[tuple[dict, list]]:
        """(node, link) for every input fed by ``node``'s output ``slot``, looking through Reroute nodes."""
        found = []
        for link in self.output_links(node, slot):
            target = self.nodes[link[3]]
            if target["type"] == REROUTE:
                found += self.consumers(target, 0)
            else:
                found.append((target, link))
        return found

    # ------------------------------------------------------------ editing

    def new_node(self, kind: str, pos: tuple[float, float], size: tuple[float, float], inputs: list[Socket],
                 outputs: list[Socket], widgets_values: list, mode: int = 0) -> dict:
        node_id = max([self.data.get("last_node_id") or 0, *self.nodes]) + 1
        self.data["last_node_id"] = node_id
        node = {
            "id": node_id,
            "type": kind,
            "pos": [round(pos[0]), round(pos[1])],
            "size": [round(size[0]), round(size[1])],
            "flags": {},
            "order": len(self.nodes),
            "mode": mode,
            "inputs": [{"name": s.name, "type": s.type, "link": None} for s in inputs],
            "outputs": [{"name": s.name, "type": s.type, "links": [], "slot_index": i} for i, s in enumerate(outputs)],
            "properties": {"Node name for S&R": kind},
            "widgets_values": list(widgets_values),
        }
        self.data["nodes"].append(node)
        self.nodes[node_id] = node
        return node

    def connect(self, origin: dict, origin_slot: int, target: dict, input_name: str) -> list:
        """A new link from ``origin``'s output ``origin_slot`` into ``target``'s input ``input_name``."""
        link_id = max([self.data.get("last_link_id") or 0, *self.links]) + 1
        self.data["last_link_id"] = link_id
        slot = self._input_index(target, input_name)
        link = [link_id, origin["id"], origin_slot, target["id"], slot, origin["outputs"][origin_slot]["type"]]
        self.data["links"].append(link)
        self.links[link_id] = link
        self._add_to_output(origin, origin_slot, link_id)
        target["inputs"][slot]["link"] = link_id
        return link

    def retarget(self, link: list, target: dict, input_name: str) -> None:
        """Point an existing link at another input (of the same or another node)."""
        old = self.nodes.get(link[3])
        if old is not None:
            for slot in old.get("inputs") or []:
                if slot.get("link") == link[0]:
                    slot["link"] = None
        slot = self._input_index(target, input_name)
        target["inputs"][slot]["link"] = link[0]
        link[3], link[4] = target["id"], slot

    def reorigin(self, link: list, origin: dict, origin_slot: int) -> None:
        """Make an existing link start at another output."""
        old = self.nodes.get(link[1])
        if old is not None:
            for out in old.get("outputs") or []:
                if link[0] in (out.get("links") or []):
                    out["links"].remove(link[0])
        link[1], link[2] = origin["id"], origin_slot
        self._add_to_output(origin, origin_slot, link[0])
        link[5] = origin["outputs"][origin_slot]["type"]

    def remove_link(self, link: list) -> None:
        for node_id, key in ((link[1], "outputs"), (link[3], "inputs")):
            node = self.nodes.get(node_id)
            for slot in (node or {}).get(key) or []:
                if key == "outputs" and link[0] in (slot.get("links") or []):
                    slot["links"].remove(link[0])
                elif key == "inputs" and slot.get("link") == link[0]:
                    slot["link"] = None
        self.data["links"].remove(link)
        del self.links[link[0]]

    def retype_links(self) -> None:
        """Give every link the type of the output it starts at; Reroute nodes take the type of what they pass on."""
        for _ in range(len(self.nodes) + 1):
            changed = False
            for node in self.nodes.values():
                if node["type"] != REROUTE:
                    continue
                upstream = next((self.links.get(s["link"]) for s in node.get("inputs") or [] if s.get("link") is not None), None)
                if upstream is None:
                    continue
                kind = upstream[5]
                for slot in [*(node.get("inputs") or []), *(node.get("outputs") or [])]:
                    if slot.get("type") != kind:
                        slot["type"], changed = kind, True
            for link in self.links.values():
                origin = self.nodes.get(link[1])
                if origin and link[2] < len(origin.get("outputs") or []):
                    kind = origin["outputs"][link[2]]["type"]
                    if link[5] != kind:
                        link[5], changed = kind, True
            if not changed:
                return

    # ------------------------------------------------------------ placing

    def free_spot(self, near: tuple[float, float], size: tuple[float, float]) -> tuple[float, float]:
        """The position closest to ``near`` where a node of ``size`` overlaps no node (GAP px apart)."""
        boxes = []
        for node in self.nodes.values():
            (x, y), (w, h) = node_pos(node), node_size(node)
            boxes.append((x - GAP, y - TITLE_HEIGHT - GAP, x + w + GAP, y + h + GAP))
        width, height = size

        def free(x: float, y: float) -> bool:
            top = y - TITLE_HEIGHT
            return all(x + width <= bx0 or x >= bx1 or y + height <= by0 or top >= by1 for bx0, by0, bx1, by1 in boxes)

        step = GAP
        candidates = sorted(itertools.product(range(-40, 41), range(-40, 41)), key=lambda d: (d[0] ** 2 + d[1] ** 2, d))
        for dx, dy in candidates:
            x, y = near[0] + dx * step, near[1] + dy * step
            if free(x, y):
                return x, y
        bottom = max((b[3] for b in boxes), default=near[1])
        return near[0], bottom + TITLE_HEIGHT

    def overlapping(self, node: dict) -> list[dict]:
        """Nodes whose box (title bar included) overlaps ``node``'s."""
        (x, y), (w, h) = node_pos(node), node_size(node)
        found = []
        for other in self.nodes.values():
            if other is node:
                continue
            (ox, oy), (ow, oh) = node_pos(other), node_size(other)
            if x < ox + ow and ox < x + w and y - TITLE_HEIGHT < oy + oh and oy - TITLE_HEIGHT < y + h:
                found.append(other)
        return found

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _input_index(node: dict, name: str) -> int:
        for i, slot in enumerate(node.get("inputs") or []):
            if slot["name"] == name:
                return i
        raise KeyError(f"node {node['id']} ({node['type']}) has no input {name!r}")

    @staticmethod
    def _add_to_output(node: dict, slot: int, link_id: int) -> None:
        out = node["outputs"][slot]
        if out.get("links") is None:
            out["links"] = []
        if link_id not in out["links"]:
            out["links"].append(link_id)
        out["slot_index"] = slot


def check_ui_workflow(workflow: object) -> None:
    """Raise :class:`WorkflowFormatError` unless ``workflow`` is a UI-format graph with array links."""
    if not isinstance(workflow, dict):
        raise WorkflowFormatError(f"expected a workflow object (JSON with 'nodes' and 'links'), got {type(workflow).__name__}.")
    if "nodes" not in workflow and workflow and all(isinstance(v, dict) and "class_type" in v for v in workflow.values()):
        raise WorkflowFormatError(
            "this is an API-format prompt (node id -> class_type/inputs), which has no positions, groups or widgets to "
            "keep. Open the workflow in ComfyUI and save it (Workflow -> Save), then convert the saved .json file."
        )
    if not isinstance(workflow.get("nodes"), list) or not isinstance(workflow.get("links", []), list):
        raise WorkflowFormatError("not a ComfyUI UI workflow: it needs a 'nodes' list and a 'links' list.")
    workflow.setdefault("links", [])
    for link in workflow["links"]:
        if not (isinstance(link, list) and len(link) >= 6):
            raise WorkflowFormatError(
                "the links are not in the classic [id, origin, slot, target, slot, type] form (a newer save format). "
                "Load the file in ComfyUI 0.3.75 or newer and save it again, then convert that file."
            )
