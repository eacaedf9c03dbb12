"""Thin nodes for the adapter, the attention patch and IdentityNet; the work is in ``instantid``."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from ..instantid import pipeline, published
from ..instantid.adapter import load_adapter
from ..instantid.errors import AdapterFileError
from ..instantid.faces import COMBINE_MODES
from ..instantid.paths import ADAPTER_FOLDER, adapter_download_hint, folders_text
from .types import CATEGORY, COMBINE_TOOLTIP, PLACEMENT_TOOLTIP, Adapter, Faces, choice_error, require_choice

PLACEMENTS = ["cover", "contain"]


def _weight(name: str, default: float, tooltip: str, maximum: float = 3.0) -> io.Float.Input:
    return io.Float.Input(name, default=default, min=0.0, max=maximum, step=0.01, tooltip=tooltip)


def _apply_inputs(positive: str = "Positive prompt conditioning.") -> list:
    """The graph inputs every Apply node takes first: model, positive, negative, adapter, IdentityNet."""
    return [
        io.Model.Input("model", tooltip="An SDXL model. It is cloned, never modified."),
        io.Conditioning.Input("positive", tooltip=positive),
        io.Conditioning.Input("negative", tooltip="Negative prompt conditioning."),
        Adapter.Input("instantid", tooltip="From 'Load InstantID Adapter'."),
        io.ControlNet.Input("control_net", tooltip="IdentityNet, loaded with 'Load ControlNet Model' from models/controlnet."),
    ]


def _window() -> list:
    return [
        io.Float.Input("start_at", default=0.0, min=0.0, max=1.0, step=0.001,
                       tooltip="Fraction of the sampling schedule where identity injection starts (0 = first step)."),
        io.Float.Input("end_at", default=1.0, min=0.0, max=1.0, step=0.001,
                       tooltip="Fraction of the schedule where it stops (1 = last step). Ending early frees composition in late steps."),
    ]


def _mask_input() -> io.Mask.Input:
    return io.Mask.Input("mask", optional=True,
                         tooltip="Limits the identity (face attention and IdentityNet) to the white area, e.g. for two people. "
                                 "Resized to the image; never restricts the text prompt.")


def _faces_input() -> io.Custom:
    return Faces.Input("faces", tooltip="The identity: FACES from 'InstantID Face Analyze' or 'InstantID Load Face'.")


def _combine_input() -> io.Combo.Input:
    return io.Combo.Input("combine", options=list(COMBINE_MODES), default="average", tooltip=COMBINE_TOOLTIP)


def _pose_inputs() -> list:
    return [
        io.Image.Input("image_kps", optional=True,
                       tooltip="Keypoint image for IdentityNet (from 'InstantID Keypoint Image'). "
                               "Left empty, the identity face's keypoints are drawn at the generation size."),
        Faces.Input("pose_faces", optional=True,
                    tooltip="Take the pose (keypoints) from another photo's face instead of the identity photo "
                            "(its first image with a face). Without any face: an error, or with 'pass through' on "
                            "its Face Analyze node, the identity photo's keypoints."),
        io.Combo.Input("placement", options=PLACEMENTS, default="cover", tooltip=PLACEMENT_TOOLTIP),
    ]


class InstantIDLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDLoader",
            display_name="Load InstantID Adapter",
            category=CATEGORY,
            description="Loads the InstantID adapter (ip-adapter.bin: Resampler + face attention weights) from models/instantid.",
            inputs=[io.Combo.Input("instantid_file", options=folder_paths.get_filename_list(ADAPTER_FOLDER),
                                   tooltip="The InstantID adapter, usually ip-adapter.bin from InstantX/InstantID, in "
                                           "ComfyUI/models/instantid (or an 'instantid' entry of extra_model_paths.yaml).")],
            outputs=[Adapter.Output(display_name="instantid")],
        )

    @staticmethod
    def _choice() -> tuple[str, str]:
        return ("an adapter file in models/instantid",
                f"Pick one from the list; put {published.ADAPTER.filename} ({published.ADAPTER.url}) in "
                f"{folders_text(ADAPTER_FOLDER)}. {adapter_download_hint()}.")

    @classmethod
    def validate_inputs(cls, instantid_file: str | None) -> bool | str:
        return choice_error(instantid_file, folder_paths.get_filename_list(ADAPTER_FOLDER), *cls._choice())

    @classmethod
    def execute(cls, instantid_file: str) -> io.NodeOutput:
        require_choice(instantid_file, folder_paths.get_filename_list(ADAPTER_FOLDER), *cls._choice(), AdapterFileError)
        return io.NodeOutput(load_adapter(folder_paths.get_full_path_or_raise(ADAPTER_FOLDER, instantid_file)))


class InstantIDApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDApply",
            display_name="Apply InstantID",
            category=CATEGORY,
            description="Face attention in all 70 SDXL cross-attention layers plus IdentityNet driven by the face tokens.",
            inputs=[
                *_apply_inputs(),
                _faces_input(),
                _weight("ip_weight", 0.8, "Strength of the face attention (0.8 in every published example)."),
                _weight("cn_strength", 0.8, "Strength of IdentityNet (0.8 in the examples; 1.0 is the bare default).", 10.0),
                *_window(),
                _combine_input(),
                *_pose_inputs(),
                _mask_input(),
            ],
            outputs=[io.Model.Output(display_name="model"),
                     io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, model, positive, negative, instantid, control_net, faces, ip_weight, cn_strength, start_at, end_at,
                combine, placement, image_kps=None, pose_faces=None, mask=None) -> io.NodeOutput:
        return io.NodeOutput(*pipeline.apply_instantid(
            model, positive, negative, instantid, control_net, faces, image_kps, ip_weight, cn_strength,
            start_at, end_at, mask, combine=combine, pose=pose_faces, placement=placement))


class InstantIDApplyAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDApplyAttention",
            display_name="InstantID Attention Only",
            category=CATEGORY,
            description="Only the decoupled face cross-attention (no IdentityNet): identity without a fixed pose.",
            inputs=[
                io.Model.Input("model", tooltip="An SDXL model. It is cloned, never modified."),
                Adapter.Input("instantid", tooltip="From 'Load InstantID Adapter'."),
                _faces_input(),
                _weight("weight", 0.8, "Strength of the face attention."),
                *_window(),
                _combine_input(),
                _mask_input(),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, instantid, faces, weight, start_at, end_at, combine, mask=None) -> io.NodeOutput:
        return io.NodeOutput(pipeline.apply_attention(model, instantid, faces, weight, start_at, end_at, mask, combine))


class InstantIDApplyIdentityNet(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDApplyIdentityNet",
            display_name="InstantID IdentityNet Only",
            category=CATEGORY,
            description="Only IdentityNet: an SDXL ControlNet that sees the face tokens; chained after any ControlNet already on the conditioning, which keeps seeing the text.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="Positive prompt conditioning."),
                io.Conditioning.Input("negative", tooltip="Negative prompt conditioning."),
                io.ControlNet.Input("control_net", tooltip="IdentityNet, loaded with 'Load ControlNet Model'."),
                Adapter.Input("instantid", tooltip="From 'Load InstantID Adapter' (its Resampler makes the face tokens)."),
                _faces_input(),
                _weight("strength", 0.8, "IdentityNet strength.", 10.0),
                *_window(),
                _combine_input(),
                *_pose_inputs(),
                _mask_input(),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, positive, negative, control_net, instantid, faces, strength, start_at, end_at, combine, placement,
                image_kps=None, pose_faces=None, mask=None) -> io.NodeOutput:
        return io.NodeOutput(*pipeline.apply_identitynet_only(positive, negative, control_net, instantid, faces, image_kps,
                                                              strength, start_at, end_at, mask, combine, pose_faces, placement))


CORE_NODES = [InstantIDLoader, InstantIDApply, InstantIDApplyAttention, InstantIDApplyIdentityNet]
