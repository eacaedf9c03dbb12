"""How cubiq/ComfyUI_InstantID's nodes and this pack's nodes look in a saved UI workflow.

A UI workflow stores a node's widget values by position (``widgets_values``)
and its sockets by name. The migration reads cubiq's values in cubiq's widget
order (with cubiq's defaults when an older save has fewer) and writes ours in
our widget order. The migration runs without ComfyUI, so our layouts are
written out here; tests/test_migrate.py checks them against the live
``/object_info`` so they cannot drift from the node schemas.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ui_graph import Socket


@dataclass(frozen=True)
class Layout:
    """Sockets (in the order the web UI lists them), widgets ``(name, default)`` in ``widgets_values`` order, outputs."""

    inputs: tuple[Socket, ...]
    widgets: tuple[tuple[str, object], ...]
    outputs: tuple[Socket, ...]

    def size(self, width: float = 320) -> tuple[float, float]:
        """Roughly the size the frontend draws: title, one row per socket pair, one per widget."""
        rows = max(len(self.inputs), len(self.outputs))
        return width, 64 + 24 * rows + 26 * len(self.widgets)


def _s(name: str, kind: str) -> Socket:
    return Socket(name, kind)


# ---------------------------------------------------------------- cubiq/ComfyUI_InstantID (facts from its InstantID.py)

_CUBIQ_APPLY_OUT = (_s("MODEL", "MODEL"), _s("positive", "CONDITIONING"), _s("negative", "CONDITIONING"))
CUBIQ: dict[str, Layout] = {
    "InstantIDModelLoader": Layout((), (("instantid_file", "ip-adapter.bin"),), (_s("INSTANTID", "INSTANTID"),)),
    "InstantIDFaceAnalysis": Layout((), (("provider", "CPU"),), (_s("FACEANALYSIS", "FACEANALYSIS"),)),
    "FaceKeypointsPreprocessor": Layout((_s("faceanalysis", "FACEANALYSIS"), _s("image", "IMAGE")), (), (_s("IMAGE", "IMAGE"),)),
    "ApplyInstantID": Layout(
        (),
        (("weight", 0.8), ("start_at", 0.0), ("end_at", 1.0)),
        _CUBIQ_APPLY_OUT,
    ),
    "ApplyInstantIDAdvanced": Layout(
        (),
        (("ip_weight", 0.8), ("cn_strength", 0.8), ("start_at", 0.0), ("end_at", 1.0), ("noise", 0.0), ("combine_embeds", "average")),
        _CUBIQ_APPLY_OUT,
    ),
    "InstantIDAttentionPatch": Layout(
        (),
        (("weight", 1.0), ("start_at", 0.0), ("end_at", 1.0), ("noise", 0.0)),
        (_s("MODEL", "MODEL"), _s("FACE_EMBEDS", "FACE_EMBEDS")),
    ),
    "ApplyInstantIDControlNet": Layout(
        (),
        (("strength", 1.0), ("start_at", 0.0), ("end_at", 1.0)),
        (_s("positive", "CONDITIONING"), _s("negative", "CONDITIONING")),
    ),
}
CUBIQ_LOADERS = ("InstantIDModelLoader", "InstantIDFaceAnalysis")
# Its basic Apply node always added this much noise to the negative face embedding (not shown as a widget).
CUBIQ_HIDDEN_NOISE = 0.35
CUBIQ_PROVIDERS = {"CPU": "CPU", "CUDA": "CUDA", "ROCM": "ROCm", "CoreML": "CoreML"}
CUBIQ_COMBINE = {"average": "average", "norm average": "norm_average"}

# ---------------------------------------------------------------- this pack (nodes/core_nodes.py, nodes/face_nodes.py)

ADAPTER, FACES, ANALYZER = "INSTANTID_ADAPTER", "INSTANTID_FACES", "INSTANTID_FACE_ANALYZER"
_WINDOW = (("start_at", 0.0), ("end_at", 1.0))
OURS: dict[str, Layout] = {
    "InstantIDLoader": Layout((), (("instantid_file", "ip-adapter.bin"),), (_s("instantid", ADAPTER),)),
    "InstantIDFaceAnalyzerLoader": Layout(
        (), (("model_pack", "antelopev2"), ("provider", "CPU"), ("det_size", 640)), (_s("face_analyzer", ANALYZER),)
    ),
    "InstantIDFaceAnalyze": Layout(
        (_s("face_analyzer", ANALYZER), _s("image", "IMAGE")),
        (("face_choice", "largest"), ("face_index", 0), ("no_face_policy", "error"), ("weights", "")),
        (_s("faces", FACES), _s("preview", "IMAGE")),
    ),
    "InstantIDKeypointImage": Layout(
        (_s("faces", FACES),),
        (("width", 1024), ("height", 1024), ("placement", "cover"), ("box_x", 0.25), ("box_y", 0.25), ("box_width", 0.5),
         ("box_height", 0.5)),
        (_s("keypoint_image", "IMAGE"),),
    ),
    "InstantIDApply": Layout(
        (_s("model", "MODEL"), _s("positive", "CONDITIONING"), _s("negative", "CONDITIONING"), _s("instantid", ADAPTER),
         _s("control_net", "CONTROL_NET"), _s("faces", FACES), _s("image_kps", "IMAGE"), _s("pose_faces", FACES),
         _s("mask", "MASK")),
        (("ip_weight", 0.8), ("cn_strength", 0.8), *_WINDOW, ("combine", "average"), ("placement", "cover")),
        (_s("model", "MODEL"), _s("positive", "CONDITIONING"), _s("negative", "CONDITIONING")),
    ),
    "InstantIDApplyAttention": Layout(
        (_s("model", "MODEL"), _s("instantid", ADAPTER), _s("faces", FACES), _s("mask", "MASK")),
        (("weight", 0.8), *_WINDOW, ("combine", "average")),
        (_s("model", "MODEL"),),
    ),
    "InstantIDApplyIdentityNet": Layout(
        (_s("positive", "CONDITIONING"), _s("negative", "CONDITIONING"), _s("control_net", "CONTROL_NET"),
         _s("instantid", ADAPTER), _s("faces", FACES), _s("image_kps", "IMAGE"), _s("pose_faces", FACES), _s("mask", "MASK")),
        (("strength", 0.8), *_WINDOW, ("combine", "average"), ("placement", "cover")),
        (_s("positive", "CONDITIONING"), _s("negative", "CONDITIONING")),
    ),
}
# (min, max) of our number widgets the migration writes.
RANGES: dict[str, tuple[float, float]] = {
    "ip_weight": (0.0, 3.0), "cn_strength": (0.0, 10.0), "weight": (0.0, 3.0), "strength": (0.0, 10.0),
    "start_at": (0.0, 1.0), "end_at": (0.0, 1.0), "width": (64, 8192), "height": (64, 8192),
}
WIDGET_TYPES = {"ip_weight": "FLOAT", "cn_strength": "FLOAT", "weight": "FLOAT", "strength": "FLOAT",
                "start_at": "FLOAT", "end_at": "FLOAT"}
DISPLAY = {
    "InstantIDLoader": "Load InstantID Adapter",
    "InstantIDFaceAnalyzerLoader": "Load InstantID Face Analyzer",
    "InstantIDFaceAnalyze": "InstantID Face Analyze",
    "InstantIDKeypointImage": "InstantID Keypoint Image",
    "InstantIDApply": "Apply InstantID",
    "InstantIDApplyAttention": "InstantID Attention Only",
    "InstantIDApplyIdentityNet": "InstantID IdentityNet Only",
}
