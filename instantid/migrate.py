"""Convert a UI workflow made with cubiq/ComfyUI_InstantID to this pack's nodes.

    python -m instantid.migrate old.json new.json

Node types become ours (README, "Coming from cubiq/ComfyUI_InstantID"); an
Apply node that took the photo becomes InstantID Face Analyze + our Apply
node; widget values are mapped (weight -> ip_weight and cn_strength, combine
modes, out-of-range values clamped); links are rewired and retyped; node ids,
positions, groups and every node of other packs stay as they were. What has
no equivalent (cubiq's noise, ``concat``) is dropped with a warning, and a
cubiq node that cannot be converted is left untouched and named in the
report, so nothing is lost. Runs without ComfyUI; the web UI's menu command
calls the same function through a server route (nodes/migrate_route.py).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .migrate_layouts import (
    CUBIQ,
    CUBIQ_COMBINE,
    CUBIQ_HIDDEN_NOISE,
    CUBIQ_LOADERS,
    CUBIQ_PROVIDERS,
    DISPLAY,
    OURS,
    RANGES,
    WIDGET_TYPES,
)
from .ui_graph import UIGraph, WorkflowFormatError, node_pos, node_size

__all__ = ["MigrationReport", "WorkflowFormatError", "migrate_workflow", "main"]


@dataclass
class MigrationReport:
    """What the conversion did, in sentences a user can act on."""

    converted: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"converted": self.converted, "added": self.added, "warnings": self.warnings, "kept": self.kept}

    def text(self) -> str:
        if not (self.converted or self.kept):
            return "No cubiq/ComfyUI_InstantID nodes found: nothing to convert."
        parts = [f"Converted {len(self.converted)} node(s) from cubiq/ComfyUI_InstantID."]
        for title, items in (("Converted", self.converted), ("Added", self.added), ("Warnings", self.warnings),
                             ("Not converted (left as they were)", self.kept)):
            if items:
                parts.append(f"{title}:\n" + "\n".join(f"  - {item}" for item in items))
        return "\n".join(parts)


def migrate_workflow(workflow: dict, providers: list[str] | None = None) -> tuple[dict, MigrationReport]:
    """Return a converted copy of a UI workflow and the report; the input is not changed.

    providers: the onnxruntime providers the target machine offers (e.g. ``["CPU", "CUDA"]``); a cubiq provider
    not among them becomes CPU with a warning. ``None`` keeps the provider names as they are.
    """
    graph = UIGraph(copy.deepcopy(workflow))
    report = MigrationReport()
    _Migration(graph, report, providers).run()
    return graph.data, report


class _Migration:
    def __init__(self, graph: UIGraph, report: MigrationReport, providers: list[str] | None) -> None:
        self.g, self.report, self.providers = graph, report, providers
        self.attention_faces: dict[int, tuple[list | None, dict]] = {}  # attention node -> (its instantid link, Face Analyze)
        self.embeds_source: dict[int, int] = {}  # IdentityNet node -> the attention node its face_embeds come from

    # ------------------------------------------------------------ plan

    def run(self) -> None:
        cubiq = [n for n in list(self.g.nodes.values()) if n["type"] in CUBIQ]
        self._report_subgraphs()
        convertible = self._convertible(cubiq)
        for node in cubiq:
            if node["type"] in CUBIQ_LOADERS:
                self._loader(node, convertible)
        order = ("InstantIDAttentionPatch", "ApplyInstantIDControlNet", "ApplyInstantID", "ApplyInstantIDAdvanced",
                 "FaceKeypointsPreprocessor")
        for kind in order:
            for node in cubiq:
                if node["type"] == kind and node["id"] in convertible:
                    getattr(self, f"_convert_{kind}")(node)
        self.g.retype_links()
        for node in cubiq:  # positions are kept, but our nodes have more widgets than cubiq's: say where that collides
            if node["type"] in OURS and (hit := [o for o in self.g.overlapping(node) if o["type"] not in OURS]):
                self.report.warnings.append(
                    f"node {node['id']} ({DISPLAY[node['type']]}) is taller than cubiq's and now overlaps "
                    + ", ".join(f"node {o['id']} ({o['type']})" for o in hit) + ": drag it aside.")

    def _convertible(self, cubiq: list[dict]) -> set[int]:
        ids = {n["id"] for n in cubiq if n["type"] not in CUBIQ_LOADERS}
        for node in cubiq:
            if node["type"] != "InstantIDAttentionPatch":
                continue
            outside = [(t, link) for t, link in self.g.consumers(node, 1) if t["type"] != "ApplyInstantIDControlNet"]
            if outside:
                ids.discard(node["id"])
                target = outside[0][0]
                self.report.kept.append(
                    f"node {node['id']} InstantIDAttentionPatch: its FACE_EMBEDS output feeds node {target['id']} "
                    f"({target['type']}), which has no equivalent here; left as it is (it needs cubiq's pack)."
                )
        for node in cubiq:
            if node["type"] != "ApplyInstantIDControlNet":
                continue
            link = self.g.input_link(node, "face_embeds")
            source = self.g.source(link)[0] if link else None
            if source is not None and source["type"] == "InstantIDAttentionPatch" and source["id"] in ids:
                self.embeds_source[node["id"]] = source["id"]
            else:
                ids.discard(node["id"])
                why = "its face_embeds input is not connected" if source is None else (
                    f"its face_embeds come from node {source['id']} ({source['type']}), not from a converted "
                    "InstantIDAttentionPatch")
                self.report.kept.append(f"node {node['id']} ApplyInstantIDControlNet: {why}; left as it is "
                                        "(it needs cubiq's pack).")
        return ids

    def _report_subgraphs(self) -> None:
        for sub in (self.g.data.get("definitions") or {}).get("subgraphs") or []:
            kinds = sorted({n.get("type") for n in sub.get("nodes") or [] if n.get("type") in CUBIQ})
            if kinds:
                self.report.kept.append(f"subgraph {sub.get('name') or sub.get('id')}: {', '.join(kinds)} inside a subgraph "
                                        "are not converted; unpack the subgraph (right click -> Unpack) and convert again.")

    # ------------------------------------------------------------ loaders

    def _loader(self, node: dict, convertible: set[int]) -> None:
        old = node["type"]
        ours = "InstantIDLoader" if node["type"] == "InstantIDModelLoader" else "InstantIDFaceAnalyzerLoader"
        values = self._cubiq_values(node)
        if ours == "InstantIDLoader":  # noqa: SIM108 - _provider may add a warning: only call it for the analyzer
            widgets = [values["instantid_file"]]
        else:
            widgets = ["antelopev2", self._provider(node, values["provider"]), 640]
        direct = self.g.output_links(node, 0)
        ours_links = [link for link in direct if self._all_converted(link, convertible)]
        if len(ours_links) == len(direct):
            self._become(node, ours, widgets)
            self.report.converted.append(f"node {node['id']} {old} -> {_ours_name(ours)}")
            return
        if not ours_links:
            return  # feeds only nodes that stay cubiq's (already reported): keep it for them
        new = self._add(ours, node, widgets)
        for link in ours_links:
            self.g.reorigin(link, new, 0)
        self.report.added.append(
            f"node {new['id']} {_ours_name(ours)} beside node {node['id']} {node['type']}, which stays for the nodes "
            "that were not converted")

    def _all_converted(self, link: list, convertible: set[int]) -> bool:
        target = self.g.nodes[link[3]]
        if target["type"] == "Reroute":
            return all(t["id"] in convertible for t, _ in self.g.consumers(target, 0))
        return target["id"] in convertible

    def _provider(self, node: dict, provider: str) -> str:
        mapped = CUBIQ_PROVIDERS.get(provider, provider)
        if self.providers is not None and mapped not in self.providers:
            self.report.warnings.append(
                f"node {node['id']}: provider {provider} is not offered by this machine's onnxruntime "
                f"({', '.join(self.providers)}); set to CPU. For a GPU install onnxruntime-gpu (and uninstall onnxruntime).")
            return "CPU"
        return mapped

    # ------------------------------------------------------------ apply nodes

    def _convert_ApplyInstantID(self, node: dict) -> None:  # noqa: N802 - named after cubiq's node type
        values = self._cubiq_values(node)
        self.report.warnings.append(
            f"node {node['id']}: cubiq's Apply InstantID always added noise {CUBIQ_HIDDEN_NOISE} to the negative face "
            "embedding; not carried over (the negative here is the reference's Resampler(zeros)).")
        self._apply(node, values["weight"], values["weight"], values, "average", {"weight": ("ip_weight", "cn_strength")})

    def _convert_ApplyInstantIDAdvanced(self, node: dict) -> None:  # noqa: N802
        values = self._cubiq_values(node)
        self._noise(node, values["noise"])
        combine = CUBIQ_COMBINE.get(values["combine_embeds"])
        if combine is None:
            combine = "average"
            self.report.warnings.append(
                f"node {node['id']}: combine_embeds {values['combine_embeds']!r} has no equivalent (cubiq's concat gave "
                "IdentityNet only the first face); set to average, the authors' advice for several photos.")
        self._apply(node, values["ip_weight"], values["cn_strength"], values, combine,
                    {"ip_weight": ("ip_weight",), "cn_strength": ("cn_strength",)})

    def _apply(self, node: dict, ip_weight, cn_strength, values: dict, combine: str, widget_map: dict) -> None:
        old = node["type"]
        links = self._links_in(node)
        kps = links.pop("image_kps", None)
        analyzer, image = links.pop("insightface", None), links.pop("image", None)
        widgets = [self._clamp(node, "ip_weight", ip_weight), self._clamp(node, "cn_strength", cn_strength),
                   self._clamp(node, "start_at", values["start_at"]), self._clamp(node, "end_at", values["end_at"]),
                   combine, "cover"]
        self._become(node, "InstantIDApply", widgets)
        self._reconnect(node, links, widget_map)
        face = self._face_analyze(node, analyzer, image, "faces")
        added = [f"node {face['id']} {_ours_name('InstantIDFaceAnalyze')} (the photo)"]
        if kps is not None:
            source = self.g.source(kps)[0]
            if source["type"] in ("FaceKeypointsPreprocessor", "InstantIDKeypointImage"):
                self.g.retarget(kps, node, "image_kps")  # already a keypoint drawing
            else:
                # cubiq ran face detection on image_kps and drew that face's keypoints: here that is a
                # second Face Analyze on the pose photo, wired into pose_faces.
                pose = self._face_analyze(node, None, kps, "pose_faces", below=face)
                if analyzer is not None:  # the same analyzer as the identity photo
                    self.g.connect(self.g.nodes[analyzer[1]], analyzer[2], pose, "face_analyzer")
                added.append(f"node {pose['id']} {_ours_name('InstantIDFaceAnalyze')} (the pose photo, into pose_faces)")
        self.report.converted.append(f"node {node['id']} {old} -> {_ours_name('InstantIDApply')} + "
                                     + " + ".join(added))

    def _convert_InstantIDAttentionPatch(self, node: dict) -> None:  # noqa: N802
        values = self._cubiq_values(node)
        self._noise(node, values["noise"])
        links = self._links_in(node)
        analyzer, image = links.pop("insightface", None), links.pop("image", None)
        for link in self.g.output_links(node, 1):  # FACE_EMBEDS: the IdentityNet nodes take instantid + faces instead
            self.g.remove_link(link)
        widgets = [self._clamp(node, "weight", values["weight"]), self._clamp(node, "start_at", values["start_at"]),
                   self._clamp(node, "end_at", values["end_at"]), "average"]
        self._become(node, "InstantIDApplyAttention", widgets)
        self._reconnect(node, links, {"weight": ("weight",)})
        face = self._face_analyze(node, analyzer, image, "faces")
        self.attention_faces[node["id"]] = (self.g.input_link(node, "instantid"), face)
        self.report.converted.append(f"node {node['id']} InstantIDAttentionPatch -> {_ours_name('InstantIDApplyAttention')} + "
                                     f"node {face['id']} {_ours_name('InstantIDFaceAnalyze')}")

    def _convert_ApplyInstantIDControlNet(self, node: dict) -> None:  # noqa: N802
        values = self._cubiq_values(node)
        links = self._links_in(node)
        patch_id = self.embeds_source[node["id"]]
        embeds = links.pop("face_embeds", None)  # the attention node's conversion removed it unless a Reroute is between
        if embeds is not None:
            self.g.remove_link(embeds)
        widgets = [self._clamp(node, "strength", values["strength"]), self._clamp(node, "start_at", values["start_at"]),
                   self._clamp(node, "end_at", values["end_at"]), "average", "cover"]
        self._become(node, "InstantIDApplyIdentityNet", widgets)
        self._reconnect(node, links, {"strength": ("strength",)})
        instantid, face = self.attention_faces[patch_id]
        if instantid is not None:
            self.g.connect(self.g.nodes[instantid[1]], instantid[2], node, "instantid")
        self.g.connect(face, 0, node, "faces")
        self.report.converted.append(f"node {node['id']} ApplyInstantIDControlNet -> {_ours_name('InstantIDApplyIdentityNet')} "
                                     f"(instantid and faces from node {patch_id}'s inputs)")

    def _convert_FaceKeypointsPreprocessor(self, node: dict) -> None:  # noqa: N802
        links = self._links_in(node)
        width, height = self._generation_size(node)
        self._become(node, "InstantIDKeypointImage", [width, height, "cover", 0.25, 0.25, 0.5, 0.5])
        face = self._face_analyze(node, links.get("faceanalysis"), links.get("image"), "faces")
        self.report.converted.append(f"node {node['id']} FaceKeypointsPreprocessor -> {_ours_name('InstantIDKeypointImage')} "
                                     f"({width}x{height}) + node {face['id']} {_ours_name('InstantIDFaceAnalyze')}")

    # ------------------------------------------------------------ building blocks

    def _cubiq_values(self, node: dict) -> dict:
        layout = CUBIQ[node["type"]]
        saved = list(node.get("widgets_values") or [])
        if len(saved) != len(layout.widgets):
            self.report.warnings.append(
                f"node {node['id']} {node['type']}: {len(saved)} widget values saved, cubiq's node has "
                f"{len(layout.widgets)}; missing ones take cubiq's defaults.")
        return {name: saved[i] if i < len(saved) else default for i, (name, default) in enumerate(layout.widgets)}

    def _links_in(self, node: dict) -> dict[str, list]:
        return {slot["name"]: self.g.links[slot["link"]] for slot in node.get("inputs") or []
                if slot.get("link") is not None and slot["link"] in self.g.links}

    def _become(self, node: dict, kind: str, widgets: list) -> None:
        """Turn ``node`` into our ``kind`` in place: id, position, mode, colours, title stay; sockets are ours.
        Input links are detached (the caller reconnects them); output links stay on the same slot numbers."""
        for slot in node.get("inputs") or []:
            if slot.get("link") is not None and slot["link"] in self.g.links:
                self.g.links[slot["link"]][3] = None  # detached until reconnected
        layout = OURS[kind]
        old_outputs = node.get("outputs") or []
        node["type"] = kind
        node.setdefault("properties", {})["Node name for S&R"] = kind
        node["inputs"] = [{"name": s.name, "type": s.type, "link": None} for s in layout.inputs]
        node["outputs"] = [{"name": s.name, "type": s.type,
                            "links": list(old_outputs[i].get("links") or []) if i < len(old_outputs) else [],
                            "slot_index": i} for i, s in enumerate(layout.outputs)]
        node["widgets_values"] = widgets
        width, height = node_size(node)
        want = layout.size(max(width, 320))
        node["size"] = [round(want[0]), round(max(height, want[1]))]

    def _reconnect(self, node: dict, links: dict[str, list], widget_map: dict[str, tuple[str, ...]]) -> None:
        """Put the remaining input links back by name; a widget driven by a link (e.g. a primitive) drives ours."""
        names = {slot["name"] for slot in node["inputs"]}
        widget_map = {"start_at": ("start_at",), "end_at": ("end_at",), **widget_map}
        for name, link in links.items():
            if name in names:
                self.g.retarget(link, node, name)
            elif name in widget_map:
                for i, ours in enumerate(widget_map[name]):
                    node["inputs"].append({"name": ours, "type": WIDGET_TYPES[ours], "widget": {"name": ours}, "link": None})
                    if i == 0:
                        self.g.retarget(link, node, ours)
                    else:
                        self.g.connect(self.g.nodes[link[1]], link[2], node, ours)
            else:
                self.report.warnings.append(f"node {node['id']}: the link into {name!r} has no equivalent input; removed.")
                link[3] = node["id"]
                self.g.remove_link(link)

    def _face_analyze(self, near: dict, analyzer: list | None, image: list | None, into: str,
                      below: dict | None = None) -> dict:
        """A new InstantID Face Analyze fed by the given links, its faces wired into ``near``'s input ``into``."""
        layout = OURS["InstantIDFaceAnalyze"]
        size = layout.size()
        if below is not None:
            (x, y), (_, h) = node_pos(below), node_size(below)
            spot = self.g.free_spot((x, y + h + 70), size)
        else:
            (x, y) = node_pos(near)
            spot = self.g.free_spot((x - size[0] - 80, y), size)
        face = self.g.new_node("InstantIDFaceAnalyze", spot, size, list(layout.inputs), list(layout.outputs),
                               [default for _, default in layout.widgets], mode=near.get("mode", 0))
        if analyzer is not None:
            self.g.retarget(analyzer, face, "face_analyzer")
        elif below is None:  # a pose Face Analyze gets the identity's analyzer from the caller
            self.report.warnings.append(f"node {face['id']}: no face analyzer was connected to node {near['id']}; "
                                        "connect a Load InstantID Face Analyzer.")
        if image is not None:
            self.g.retarget(image, face, "image")
        else:
            self.report.warnings.append(f"node {near['id']}: its image input was not connected; connect the photo to "
                                        f"node {face['id']} (InstantID Face Analyze).")
        self.g.connect(face, 0, near, into)
        return face

    def _add(self, kind: str, beside: dict, widgets: list) -> dict:
        layout = OURS[kind]
        (x, y), (_, h) = node_pos(beside), node_size(beside)
        spot = self.g.free_spot((x, y + h + 70), layout.size())
        return self.g.new_node(kind, spot, layout.size(), list(layout.inputs), list(layout.outputs), widgets,
                               mode=beside.get("mode", 0))

    def _clamp(self, node: dict, name: str, value):
        low, high = RANGES[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return value  # linked or odd: left for the server's own check to name
        clamped = min(max(value, low), high)
        if clamped != value:
            self.report.warnings.append(f"node {node['id']}: {name} {value} is outside {low}..{high} here; set to {clamped}.")
        return clamped

    def _noise(self, node: dict, noise) -> None:
        if isinstance(noise, (int, float)) and noise > 0:
            self.report.warnings.append(
                f"node {node['id']}: noise {noise} dropped (cubiq reseeded torch's global RNG to add it to the negative "
                "face embedding); the negative here is the reference's Resampler(zeros).")

    def _generation_size(self, node: dict) -> tuple[int, int]:
        sizes = {(v[0], v[1]) for n in self.g.nodes.values() if n["type"] == "EmptyLatentImage"
                 and len(v := n.get("widgets_values") or []) >= 2 and all(isinstance(x, int) for x in v[:2])}
        if len(sizes) == 1:
            return next(iter(sizes))
        self.report.warnings.append(
            f"node {node['id']}: cubiq drew the keypoints at the pose photo's size; set the keypoint image to 1024x1024 "
            "(no single Empty Latent Image size in the graph): set width/height to your generation size.")
        return 1024, 1024


def _ours_name(kind: str) -> str:
    return f"{DISPLAY[kind]} ({kind})"


# ---------------------------------------------------------------- command line


def _machine_providers() -> list[str] | None:
    from .face_models import available_providers

    return available_providers()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m instantid.migrate",
        description="Convert a UI workflow (.json) that uses cubiq/ComfyUI_InstantID's nodes to this pack's nodes.")
    parser.add_argument("source", type=Path, help="the workflow saved from ComfyUI (UI format)")
    parser.add_argument("target", type=Path, help="where to write the converted workflow")
    parser.add_argument("--keep-provider", action="store_true",
                        help="keep cubiq's onnxruntime provider even if this Python's onnxruntime does not offer it")
    args = parser.parse_args(argv)
    try:
        workflow = json.loads(args.source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        sys.stderr.write(f"cannot read {args.source}: {exc}\n")
        return 1
    try:
        converted, report = migrate_workflow(workflow, None if args.keep_provider else _machine_providers())
    except WorkflowFormatError as exc:
        sys.stderr.write(f"{args.source}: {exc}\n")
        return 1
    args.target.write_text(json.dumps(converted, indent=2) + "\n", encoding="utf-8")
    sys.stdout.write(report.text() + f"\nWrote {args.target}\n")
    return 2 if report.kept else 0


if __name__ == "__main__":
    raise SystemExit(main())
