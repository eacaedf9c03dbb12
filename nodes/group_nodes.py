"""Thin nodes for face-region masks and group photos; the work is in ``instantid.regions`` and ``instantid.group``."""

from __future__ import annotations

import numpy as np
import torch
from comfy_api.latest import io

from ..instantid import regions
from ..instantid.group import apply_group
from .core_nodes import _apply_inputs, _window
from .types import CATEGORY, FaceAnalyzer, Faces, Group

MAX_JOINED = 6

PLACEMENT_TOOLTIP = ("Where the faces land on the generation canvas, exactly as the keypoint image places them. cover: the photo "
                     "scaled to fill the image and centre-cropped. contain: the whole photo fitted inside.")
SHAPE_TOOLTIP = "ellipse: the ellipse inside the region box (follows a head). box: the region box itself (the reference's face box)."
FEATHER_TOOLTIP = "Soft edge in pixels: the region stays at full strength and fades to 0 over this many pixels outside it."


def _size_inputs() -> list:
    return [
        io.Int.Input("width", default=1024, min=64, max=8192, step=8,
                     tooltip="Generation width in pixels: the latent's size, so masks and keypoints line up with the image."),
        io.Int.Input("height", default=1024, min=64, max=8192, step=8, tooltip="Generation height in pixels."),
        io.Combo.Input("placement", options=list(regions.PLACEMENTS), default="cover", tooltip=PLACEMENT_TOOLTIP),
    ]


def _region_inputs(shape: str, grow: float, feather: int) -> list:
    return [
        io.Combo.Input("shape", options=list(regions.SHAPES), default=shape, tooltip=SHAPE_TOOLTIP),
        io.Float.Input("grow", default=grow, min=0.0, max=4.0, step=0.05,
                       tooltip="How much larger than the face box (box and keypoints) the region is, as a fraction of its size: "
                               "0 is the face box, 0.5 makes it 1.5 times as wide and high (head and hair)."),
        io.Int.Input("feather", default=feather, min=0, max=512, step=1, tooltip=FEATHER_TOOLTIP),
    ]


class InstantIDFaceMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDFaceMask",
            display_name="InstantID Face Mask",
            category=CATEGORY,
            description="A mask around each face at the generation size, placed like the keypoint image. Into Apply InstantID's "
                        "mask it gives the reference's region control: identity only in the face region, the prompt everywhere.",
            inputs=[
                Faces.Input("faces", tooltip="The face(s) whose region to mask: usually the pose photo's (or the identity photo's) FACES."),
                *_size_inputs(),
                *_region_inputs("box", 0.0, 0),
            ],
            outputs=[io.Mask.Output(display_name="mask", tooltip="One mask per frame of the faces input (empty where a frame has no face).")],
        )

    @classmethod
    def execute(cls, faces, width: int, height: int, placement: str, shape: str, grow: float, feather: int) -> io.NodeOutput:
        return io.NodeOutput(regions.face_masks(faces, width, height, placement, shape, grow, feather))


class InstantIDFaceBatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        extra = [Faces.Input(f"faces_{i}", optional=True, tooltip=f"Person {i} (optional): FACES from their reference photo.")
                 for i in range(3, MAX_JOINED + 1)]
        return io.Schema(
            node_id="InstantIDFaceBatch",
            display_name="InstantID Face Batch",
            category=CATEGORY,
            description="Joins FACES into one, frame after frame, like an image batch but nothing is resized or cropped. "
                        "For a group photo: one reference photo per person, in identity order.",
            inputs=[
                Faces.Input("faces_1", tooltip="Person 1 (identity 0): FACES from their reference photo."),
                Faces.Input("faces_2", tooltip="Person 2 (identity 1): FACES from their reference photo."),
                *extra,
            ],
            outputs=[Faces.Output(display_name="faces", tooltip="Every frame of the inputs, in input order.")],
        )

    @classmethod
    def execute(cls, faces_1, faces_2, **more) -> io.NodeOutput:
        parts = [faces_1, faces_2] + [more[f"faces_{i}"] for i in range(3, MAX_JOINED + 1) if more.get(f"faces_{i}") is not None]
        return io.NodeOutput(regions.join_faces(parts))


class InstantIDGroupLayout(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDGroupLayout",
            display_name="InstantID Group Layout",
            category=CATEGORY,
            description="Finds every face in a group photo and gives each identity one of them: its pose (keypoints) and its "
                        "region (mask) at the generation size. Feed the group into Apply InstantID Group.",
            inputs=[
                FaceAnalyzer.Input("face_analyzer", tooltip="From Load InstantID Face Analyzer."),
                io.Image.Input("group_photo", tooltip="One photo with the people's faces in the places and poses you want."),
                Faces.Input("identities", tooltip="One frame per person, in identity order: Face Analyze on a batch of reference "
                                                  "photos, or InstantID Face Batch joining one Face Analyze per person."),
                *_size_inputs(),
                io.Combo.Input("order", options=list(regions.ORDERS), default="left_to_right",
                               tooltip="Which face each identity takes. left_to_right: identity 0 the leftmost face. largest_first: "
                                       "identity 0 the largest face. indices: the face numbers listed below (needs no equal count)."),
                io.String.Input("indices", default="",
                                tooltip="For order 'indices': one face number per identity, comma separated (e.g. '2, 0'); faces are "
                                        "numbered in reading order on the preview."),
                *_region_inputs("ellipse", 0.5, 16),
                io.Combo.Input("overlap", options=list(regions.OVERLAPS), default="nearest",
                               tooltip="Where two regions overlap. nearest: each pixel belongs to one identity only, the nearest "
                                       "face's. share: both act there, their effects add."),
            ],
            outputs=[
                Group.Output(display_name="group", tooltip="Everyone's identity, keypoints and mask, for Apply InstantID Group."),
                io.Image.Output(display_name="keypoint_images", tooltip="One keypoint image per identity (only that person's face)."),
                io.Mask.Output(display_name="masks", tooltip="One region mask per identity."),
                io.Image.Output(display_name="preview", tooltip="The group photo with every face numbered and the identity it took."),
            ],
        )

    @classmethod
    def execute(cls, face_analyzer, group_photo, identities, width: int, height: int, placement: str, order: str, indices: str,
                shape: str, grow: float, feather: int, overlap: str) -> io.NodeOutput:
        group_faces, rgb = regions.detect_group_faces(group_photo, face_analyzer)
        layout = regions.build_layout(group_faces, identities, width, height, placement, order, indices, shape, grow, feather, overlap)
        preview = torch.from_numpy(regions.draw_group_preview(rgb, group_faces, layout).astype(np.float32) / 255.0)[None]
        return io.NodeOutput(layout, layout.keypoint_images(), layout.masks(), preview)


class InstantIDApplyGroup(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDApplyGroup",
            display_name="Apply InstantID Group",
            category=CATEGORY,
            description="Every identity of a group layout in one step: each person's face attention limited to their mask at every "
                        "attention resolution, and one IdentityNet pass per person with their own face tokens, keypoints and mask.",
            inputs=[
                *_apply_inputs("Positive prompt conditioning (never regionalised)."),
                Group.Input("group", tooltip="From 'InstantID Group Layout'."),
                io.Float.Input("ip_weight", default=0.8, min=0.0, max=3.0, step=0.01, tooltip="Strength of each person's face attention."),
                io.Float.Input("cn_strength", default=0.8, min=0.0, max=10.0, step=0.01,
                               tooltip="Strength of each person's IdentityNet. Each person costs one IdentityNet pass per step."),
                *_window(),
            ],
            outputs=[io.Model.Output(display_name="model"),
                     io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, model, positive, negative, instantid, control_net, group: regions.GroupLayout, ip_weight: float,
                cn_strength: float, start_at: float, end_at: float) -> io.NodeOutput:
        return io.NodeOutput(*apply_group(model, positive, negative, instantid, control_net, group, ip_weight, cn_strength, start_at, end_at))


GROUP_NODES: list[type[io.ComfyNode]] = [InstantIDFaceMask, InstantIDFaceBatch, InstantIDGroupLayout, InstantIDApplyGroup]
