"""The pack loads through ComfyUI's own loader and registers its nodes with tooltips on every input."""

from conftest import HOST_VERSION

import nodes as comfy_nodes

CORE_IDS = ["InstantIDLoader", "InstantIDApply", "InstantIDApplyAttention", "InstantIDApplyIdentityNet"]
# cubiq/ComfyUI_InstantID's node ids: both packs must be installable together.
CUBIQ_IDS = {"InstantIDModelLoader", "InstantIDFaceAnalysis", "FaceKeypointsPreprocessor", "ApplyInstantID",
             "ApplyInstantIDAdvanced", "InstantIDAttentionPatch", "ApplyInstantIDControlNet"}


def _ours():
    return {k: v for k, v in comfy_nodes.NODE_CLASS_MAPPINGS.items() if k.startswith("InstantID")}


def test_core_nodes_registered():
    assert HOST_VERSION
    ours = _ours()
    for node_id in CORE_IDS:
        assert node_id in ours, f"{node_id} not registered; have {sorted(ours)}"


def test_no_node_id_clashes_with_cubiq():
    assert not CUBIQ_IDS & set(_ours())


def test_every_input_has_a_tooltip():
    for node_id, cls in _ours().items():
        info = cls.GET_NODE_INFO_V1() if hasattr(cls, "GET_NODE_INFO_V1") else None
        schema = cls.define_schema()
        for inp in schema.inputs:
            assert inp.tooltip, f"{node_id}.{inp.id} has no tooltip"
        assert schema.display_name and schema.category == "InstantID", node_id
        assert info is None or info["name"] == node_id
