"""The short path on top of the split nodes: Apply InstantID from a photo, and the best of a batch by identity.

Both are compositions of engine arrows the split nodes already call (face
analysis, the Apply pipeline, face similarity); nothing is implemented twice.
"""

from __future__ import annotations

import math

import torch
from comfy_api.latest import io, ui

from ..instantid import face_analysis, pipeline, similarity
from .core_nodes import PLACEMENTS, _apply_inputs, _combine_input, _mask_input, _weight, _window
from .types import CATEGORY, PLACEMENT_TOOLTIP, FaceAnalyzer, Faces

# What "InstantID Face Analyze" does with its defaults: the largest face, the default retries, stop when none.
PHOTO_FACE_CHOICE = "largest"
PHOTO_NO_FACE_POLICY = "error"


def analyze_photo(analyzer, image: torch.Tensor):
    """The reference photo(s) through Face Analyze with its defaults; returns FACES."""
    faces, _ = face_analysis.analyze(image, analyzer, PHOTO_FACE_CHOICE, 0, PHOTO_NO_FACE_POLICY)
    return faces


class InstantIDApplyPhoto(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDApplyPhoto",
            display_name="Apply InstantID (photo)",
            category=CATEGORY,
            description="The quick path: takes the reference photo itself. Exactly 'InstantID Face Analyze' (largest face, "
            "default retries) followed by 'Apply InstantID'. Use the split nodes for face choice, no-face policies or saved faces.",
            inputs=[
                *_apply_inputs(),
                FaceAnalyzer.Input("face_analyzer", tooltip="From 'Load InstantID Face Analyzer'."),
                io.Image.Input("image", tooltip="The reference photo. A batch gives several references of the same person, "
                                                "combined into one identity (see combine). Every image needs a face."),
                _weight("ip_weight", 0.8, "Strength of the face attention (0.8 in every published example)."),
                _weight("cn_strength", 0.8, "Strength of IdentityNet (0.8 in the examples; 1.0 is the bare default).", 10.0),
                *_window(),
                _combine_input(),
                io.Image.Input("pose_image", optional=True,
                               tooltip="Optional photo whose largest face sets the head position and angle. "
                                       "Left empty, the pose of the reference face is used."),
                io.Combo.Input("placement", options=PLACEMENTS, default="cover", tooltip=PLACEMENT_TOOLTIP),
                _mask_input(),
            ],
            outputs=[io.Model.Output(display_name="model"),
                     io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative"),
                     Faces.Output(display_name="faces", tooltip="The analysed reference, e.g. for 'InstantID Best Of'.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, instantid, control_net, face_analyzer, image, ip_weight, cn_strength,
                start_at, end_at, combine, placement, pose_image=None, mask=None) -> io.NodeOutput:
        faces = analyze_photo(face_analyzer, image)
        pose = None if pose_image is None else analyze_photo(face_analyzer, pose_image)
        model, positive, negative = pipeline.apply_instantid(
            model, positive, negative, instantid, control_net, faces, None, ip_weight, cn_strength,
            start_at, end_at, mask, combine=combine, pose=pose, placement=placement)
        return io.NodeOutput(model, positive, negative, faces)


class InstantIDBestOf(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDBestOf",
            display_name="InstantID Best Of",
            category=CATEGORY,
            description="Keeps the k generated images that look most like the identity: each image's largest face is "
            "scored by ArcFace cosine similarity exactly as 'InstantID Face Similarity' does. Images without a face rank last; "
            "equal scores keep batch order.",
            is_output_node=True,
            inputs=[
                io.Image.Input("images", tooltip="The generated batch to choose from."),
                Faces.Input("faces", tooltip="The identity (all its faces are combined, see combine)."),
                FaceAnalyzer.Input("face_analyzer", tooltip="The same analyzer (model pack) that made the faces."),
                io.Int.Input("k", default=1, min=1, max=4096, tooltip="How many of the best images to keep. More than the "
                                                                       "batch keeps them all, sorted."),
                _combine_input(),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="The k best images, best first."),
                io.Int.Output(display_name="indices", is_output_list=True,
                              tooltip="Their positions in the input batch (0-based), best first."),
                io.Float.Output(display_name="scores", is_output_list=True,
                                tooltip="Their similarity scores (-1..1, higher is closer), best first; NaN where no face."),
                io.Boolean.Output(display_name="no_face", is_output_list=True,
                                  tooltip="One entry per INPUT image, in batch order: true where no face was found."),
            ],
        )

    @classmethod
    def execute(cls, images, faces, face_analyzer, k, combine) -> io.NodeOutput:
        scores = similarity.face_similarity(faces, images, face_analyzer, combine)
        order = similarity.rank_by_similarity(scores, k)
        report = similarity.describe_ranking(scores, order)
        no_face = [math.isnan(s) for s in scores]
        return io.NodeOutput(images[order], order, [scores[i] for i in order], no_face, ui=ui.PreviewText(report))


QUICK_NODES: list[type[io.ComfyNode]] = [InstantIDApplyPhoto, InstantIDBestOf]
