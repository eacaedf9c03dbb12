"""UI-format workflows as cubiq/ComfyUI_InstantID saves them, written for the migration tests.

Built from the facts of that pack's node definitions (node types, socket names
and order, widget order and defaults, output names) and of ComfyUI's core
nodes; no file of that repository is copied. Each builder returns a fresh
dict in the web UI's ``version 0.4`` format (links as arrays, ``size`` in the
``{"0": w, "1": h}`` form older frontends wrote, groups, a saved view).
"""

from __future__ import annotations

# type -> (inputs [(name, type)], outputs [(name, type)]). Widgets are given per node.
CUBIQ_NODES = {
    "InstantIDModelLoader": ([], [("INSTANTID", "INSTANTID")]),
    "InstantIDFaceAnalysis": ([], [("FACEANALYSIS", "FACEANALYSIS")]),
    "FaceKeypointsPreprocessor": ([("faceanalysis", "FACEANALYSIS"), ("image", "IMAGE")], [("IMAGE", "IMAGE")]),
    "ApplyInstantID": (
        [("instantid", "INSTANTID"), ("insightface", "FACEANALYSIS"), ("control_net", "CONTROL_NET"), ("image", "IMAGE"),
         ("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("image_kps", "IMAGE"), ("mask", "MASK")],
        [("MODEL", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
    ),
    "InstantIDAttentionPatch": (
        [("instantid", "INSTANTID"), ("insightface", "FACEANALYSIS"), ("image", "IMAGE"), ("model", "MODEL"), ("mask", "MASK")],
        [("MODEL", "MODEL"), ("FACE_EMBEDS", "FACE_EMBEDS")],
    ),
    "ApplyInstantIDControlNet": (
        [("face_embeds", "FACE_EMBEDS"), ("control_net", "CONTROL_NET"), ("image_kps", "IMAGE"), ("positive", "CONDITIONING"),
         ("negative", "CONDITIONING"), ("mask", "MASK")],
        [("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
    ),
}
CUBIQ_NODES["ApplyInstantIDAdvanced"] = CUBIQ_NODES["ApplyInstantID"]
CORE_NODES = {
    "CheckpointLoaderSimple": ([], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "ControlNetLoader": ([], [("CONTROL_NET", "CONTROL_NET")]),
    "EmptyLatentImage": ([], [("LATENT", "LATENT")]),
    "KSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT")],
                 [("LATENT", "LATENT")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "SaveImage": ([("images", "IMAGE")], []),
    "ControlNetApplyAdvanced": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("control_net", "CONTROL_NET"),
                                 ("image", "IMAGE"), ("vae", "VAE")], [("positive", "CONDITIONING"), ("negative", "CONDITIONING")]),
    "SolidMask": ([], [("MASK", "MASK")]),
    "CLIPVisionLoader": ([], [("CLIP_VISION", "CLIP_VISION")]),
    "Reroute": ([("", "*")], [("", "*")]),
    "PrimitiveNode": ([], [("FLOAT", "FLOAT")]),
}
# Nodes of other packs that show up next to cubiq's (ComfyUI_IPAdapter_plus's names; not installed in the tests).
OTHER_PACK_NODES = {
    "IPAdapterModelLoader": ([], [("IPADAPTER", "IPADAPTER")]),
    "IPAdapterAdvanced": ([("model", "MODEL"), ("ipadapter", "IPADAPTER"), ("image", "IMAGE"), ("image_negative", "IMAGE"),
                           ("attn_mask", "MASK"), ("clip_vision", "CLIP_VISION")], [("MODEL", "MODEL")]),
    "FaceEmbedsToFile": ([("face_embeds", "FACE_EMBEDS")], []),
    "FaceAnalysisInfo": ([("analysis", "FACEANALYSIS"), ("image", "IMAGE")], [("STRING", "STRING")]),
}
SIZES = {"ApplyInstantID": (315, 266), "ApplyInstantIDAdvanced": (315, 338), "KSampler": (315, 262), "LoadImage": (315, 314)}


class Graph:
    def __init__(self) -> None:
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    def add(self, kind: str, pos: tuple[int, int], widgets: list | None = None) -> int:
        inputs, outputs = {**CUBIQ_NODES, **CORE_NODES, **OTHER_PACK_NODES}[kind]
        node_id = len(self.nodes) + 3  # ids that are not list positions, as in real files
        w, h = SIZES.get(kind, (300, 100))
        node = {
            "id": node_id, "type": kind, "pos": list(pos), "size": {"0": w, "1": h}, "flags": {}, "order": len(self.nodes),
            "mode": 0,
            "inputs": [{"name": n, "type": t, "link": None} for n, t in inputs],
            "outputs": [{"name": n, "type": t, "links": [], "shape": 3, "slot_index": i} for i, (n, t) in enumerate(outputs)],
            "properties": {"Node name for S&R": kind},
        }
        if widgets is not None:
            node["widgets_values"] = list(widgets)
        if not node["inputs"]:
            del node["inputs"]
        self.nodes.append(node)
        return node_id

    def node(self, node_id: int) -> dict:
        return next(n for n in self.nodes if n["id"] == node_id)

    def link(self, origin: int, slot: int, target: int, name: str) -> int:
        link_id = 100 + len(self.links)
        src, dst = self.node(origin), self.node(target)
        index = next(i for i, s in enumerate(dst["inputs"]) if s["name"] == name)
        kind = src["outputs"][slot]["type"]
        if kind == "*":  # a Reroute passes on what it gets
            kind = self.links[-1][5] if dst["inputs"][index]["type"] == "*" else dst["inputs"][index]["type"]
        self.links.append([link_id, origin, slot, target, index, kind])
        src["outputs"][slot]["links"].append(link_id)
        dst["inputs"][index]["link"] = link_id
        return link_id

    def widget_input(self, target: int, name: str, kind: str = "FLOAT") -> None:
        """Turn a widget into a socket, as the web UI does before a primitive is wired to it."""
        self.node(target)["inputs"].append({"name": name, "type": kind, "link": None, "widget": {"name": name}})

    def data(self) -> dict:
        return {
            "last_node_id": max(n["id"] for n in self.nodes), "last_link_id": max([link[0] for link in self.links], default=0),
            "nodes": self.nodes, "links": self.links, "groups": self.groups, "config": {},
            "extra": {"ds": {"scale": 0.6, "offset": [40, 60]}}, "version": 0.4,
        }


def _base(g: Graph, width: int = 1016, height: int = 1016) -> dict:
    """Checkpoint, prompts, latent, sampler, decode, save: the part every example shares."""
    ids = {
        "ckpt": g.add("CheckpointLoaderSimple", (0, 500), ["sdxl/albedobase.safetensors"]),
        "pos": g.add("CLIPTextEncode", (400, 420), ["comic character, vibrant"]),
        "neg": g.add("CLIPTextEncode", (400, 620), ["photograph, deformed"]),
        "latent": g.add("EmptyLatentImage", (1000, 620), [width, height, 1]),
        "sampler": g.add("KSampler", (1400, 200), [1631591050, "fixed", 30, 4.5, "ddpm", "karras", 1]),
        "decode": g.add("VAEDecode", (1800, 200)),
        "save": g.add("SaveImage", (2100, 200), ["instantid"]),
    }
    g.link(ids["ckpt"], 1, ids["pos"], "clip")
    g.link(ids["ckpt"], 1, ids["neg"], "clip")
    g.link(ids["latent"], 0, ids["sampler"], "latent_image")
    g.link(ids["sampler"], 0, ids["decode"], "samples")
    g.link(ids["ckpt"], 2, ids["decode"], "vae")
    g.link(ids["decode"], 0, ids["save"], "images")
    return ids


def _loaders(g: Graph, provider: str = "CPU") -> dict:
    return {
        "instantid": g.add("InstantIDModelLoader", (400, 0), ["ip-adapter.bin"]),
        "analysis": g.add("InstantIDFaceAnalysis", (400, 130), [provider]),
        "cn": g.add("ControlNetLoader", (400, 260), ["instantid/diffusion_pytorch_model.safetensors"]),
        "face": g.add("LoadImage", (40, 0), ["face.jpg", "image"]),
    }


def _apply(g: Graph, base: dict, ld: dict, kind: str, widgets: list, pos=(1000, 200)) -> int:
    apply = g.add(kind, pos, widgets)
    g.link(ld["instantid"], 0, apply, "instantid")
    g.link(ld["analysis"], 0, apply, "insightface")
    g.link(ld["cn"], 0, apply, "control_net")
    g.link(ld["face"], 0, apply, "image")
    g.link(base["ckpt"], 0, apply, "model")
    g.link(base["pos"], 0, apply, "positive")
    g.link(base["neg"], 0, apply, "negative")
    return apply


def _to_sampler(g: Graph, base: dict, model: tuple[int, int], pos: tuple[int, int], neg: tuple[int, int]) -> None:
    g.link(*model, base["sampler"], "model")
    g.link(*pos, base["sampler"], "positive")
    g.link(*neg, base["sampler"], "negative")


def basic() -> dict:
    """Load model + face analysis + ControlNet -> Apply InstantID (weight 0.8) -> KSampler, with a group."""
    g = Graph()
    base, ld = _base(g), _loaders(g)
    apply = _apply(g, base, ld, "ApplyInstantID", [0.8, 0, 1])
    _to_sampler(g, base, (apply, 0), (apply, 1), (apply, 2))
    g.groups.append({"title": "InstantID", "bounding": [380, -80, 960, 420], "color": "#3f789e", "font_size": 24, "flags": {}})
    return g.data()


def posed() -> dict:
    """Apply InstantID with image_kps from a second photo (cubiq detects the face in it and draws its keypoints)."""
    g = Graph()
    base, ld = _base(g), _loaders(g, provider="CUDA")
    pose = g.add("LoadImage", (40, 400), ["pose.jpg", "image"])
    apply = _apply(g, base, ld, "ApplyInstantID", [0.85, 0.0, 0.9])
    g.link(pose, 0, apply, "image_kps")
    _to_sampler(g, base, (apply, 0), (apply, 1), (apply, 2))
    return g.data()


def depth() -> dict:
    """Apply InstantID (Advanced), then a depth ControlNet (core Apply ControlNet (Advanced)) on its conditioning."""
    g = Graph()
    base, ld = _base(g), _loaders(g)
    apply = _apply(g, base, ld, "ApplyInstantIDAdvanced", [0.8, 0.65, 0.0, 1.0, 0.0, "average"])
    depth_cn = g.add("ControlNetLoader", (1000, 700), ["control-lora-depth-rank256.safetensors"])
    depth_map = g.add("LoadImage", (600, 900), ["depth.png", "image"])
    apply_cn = g.add("ControlNetApplyAdvanced", (1400, 600), [0.4, 0.0, 0.35])
    g.link(apply, 1, apply_cn, "positive")
    g.link(apply, 2, apply_cn, "negative")
    g.link(depth_cn, 0, apply_cn, "control_net")
    g.link(depth_map, 0, apply_cn, "image")
    _to_sampler(g, base, (apply, 0), (apply_cn, 0), (apply_cn, 1))
    return g.data()


def multi_id() -> dict:
    """Two identities: two Apply InstantID (Advanced) chained, each limited by a mask, the second's analyzer through a
    Reroute."""
    g = Graph()
    base, ld = _base(g), _loaders(g)
    second_face = g.add("LoadImage", (40, 900), ["face2.jpg", "image"])
    left = g.add("SolidMask", (700, 900), [1.0, 508, 1016])
    right = g.add("SolidMask", (700, 1050), [1.0, 508, 1016])
    first = _apply(g, base, ld, "ApplyInstantIDAdvanced", [0.8, 0.8, 0.0, 1.0, 0.35, "norm average"])
    g.link(left, 0, first, "mask")
    reroute = g.add("Reroute", (800, 1250))
    g.link(ld["analysis"], 0, reroute, "")
    second = g.add("ApplyInstantIDAdvanced", (1000, 1400), [1.2, 0.5, 0.1, 0.9, 0.0, "concat"])
    g.link(ld["instantid"], 0, second, "instantid")
    g.link(reroute, 0, second, "insightface")
    g.link(ld["cn"], 0, second, "control_net")
    g.link(second_face, 0, second, "image")
    g.link(first, 0, second, "model")
    g.link(first, 1, second, "positive")
    g.link(first, 2, second, "negative")
    g.link(right, 0, second, "mask")
    _to_sampler(g, base, (second, 0), (second, 1), (second, 2))
    return g.data()


def ipadapter() -> dict:
    """Apply InstantID's MODEL through an IP-Adapter (ComfyUI_IPAdapter_plus nodes) into the sampler."""
    g = Graph()
    base, ld = _base(g), _loaders(g)
    apply = _apply(g, base, ld, "ApplyInstantID", [0.8, 0, 1])
    ip_loader = g.add("IPAdapterModelLoader", (1000, -400), ["ip-adapter-plus_sdxl_vit-h.safetensors"])
    vision = g.add("CLIPVisionLoader", (1000, -250), ["CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"])
    style = g.add("LoadImage", (600, -500), ["style.png", "image"])
    ip_apply = g.add("IPAdapterAdvanced", (1400, -300), [0.45, "linear", "concat", 0.0, 1.0, "V only"])
    g.link(apply, 0, ip_apply, "model")
    g.link(ip_loader, 0, ip_apply, "ipadapter")
    g.link(style, 0, ip_apply, "image")
    g.link(vision, 0, ip_apply, "clip_vision")
    _to_sampler(g, base, (ip_apply, 0), (apply, 1), (apply, 2))
    return g.data()


def split_nodes() -> dict:
    """cubiq's separate nodes: Patch Attention -> (FACE_EMBEDS) -> Apply ControlNet, whose keypoint image comes from
    Face Keypoints Preprocessor on a pose photo."""
    g = Graph()
    base, ld = _base(g, 896, 1152), _loaders(g, provider="ROCM")
    pose = g.add("LoadImage", (40, 400), ["pose.jpg", "image"])
    patch = g.add("InstantIDAttentionPatch", (1000, 0), [0.9, 0.0, 1.0, 0.2])
    g.link(ld["instantid"], 0, patch, "instantid")
    g.link(ld["analysis"], 0, patch, "insightface")
    g.link(ld["face"], 0, patch, "image")
    g.link(base["ckpt"], 0, patch, "model")
    kps = g.add("FaceKeypointsPreprocessor", (700, 400))
    g.link(ld["analysis"], 0, kps, "faceanalysis")
    g.link(pose, 0, kps, "image")
    cn = g.add("ApplyInstantIDControlNet", (1000, 400), [0.7, 0.0, 0.8])
    g.link(patch, 1, cn, "face_embeds")
    g.link(ld["cn"], 0, cn, "control_net")
    g.link(kps, 0, cn, "image_kps")
    g.link(base["pos"], 0, cn, "positive")
    g.link(base["neg"], 0, cn, "negative")
    _to_sampler(g, base, (patch, 0), (cn, 0), (cn, 1))
    return g.data()


def primitive_weight() -> dict:
    """The basic graph with Apply InstantID's weight driven by a primitive node (a widget turned into a socket)."""
    g = Graph()
    base, ld = _base(g), _loaders(g)
    apply = _apply(g, base, ld, "ApplyInstantID", [0.6, 0, 1])
    _to_sampler(g, base, (apply, 0), (apply, 1), (apply, 2))
    g.widget_input(apply, "weight")
    primitive = g.add("PrimitiveNode", (600, -200), [0.6, "fixed"])
    g.link(primitive, 0, apply, "weight")
    return g.data()


def unmappable() -> dict:
    """Cubiq nodes that cannot be converted: an attention patch whose FACE_EMBEDS feed another pack's node, an
    IdentityNet node with nothing on face_embeds, and a face analysis loader also used by another pack's node;
    next to them a basic Apply that can be converted."""
    g = Graph()
    base, ld = _base(g), _loaders(g)
    apply = _apply(g, base, ld, "ApplyInstantID", [0.8, 0, 1])
    _to_sampler(g, base, (apply, 0), (apply, 1), (apply, 2))
    patch = g.add("InstantIDAttentionPatch", (1000, 800), [1.0, 0.0, 1.0, 0.0])
    g.link(ld["instantid"], 0, patch, "instantid")
    g.link(ld["analysis"], 0, patch, "insightface")
    g.link(ld["face"], 0, patch, "image")
    g.link(base["ckpt"], 0, patch, "model")
    saver = g.add("FaceEmbedsToFile", (1400, 800), ["face.embeds"])
    g.link(patch, 1, saver, "face_embeds")
    orphan = g.add("ApplyInstantIDControlNet", (1000, 1100), [1.0, 0.0, 1.0])
    g.link(ld["cn"], 0, orphan, "control_net")
    g.link(base["pos"], 0, orphan, "positive")
    g.link(base["neg"], 0, orphan, "negative")
    info = g.add("FaceAnalysisInfo", (1400, 1100))
    g.link(ld["analysis"], 0, info, "analysis")
    g.link(ld["face"], 0, info, "image")
    return g.data()


# Graphs whose every node exists on the test server (core, this pack, the tiny-model host pack once migrated).
RUNNABLE = {"basic": basic, "posed": posed, "depth": depth, "multi_id": multi_id, "split_nodes": split_nodes}
ALL = {**RUNNABLE, "ipadapter": ipadapter, "primitive_weight": primitive_weight, "unmappable": unmappable}
