"""Thin nodes for fixing faces in existing images: crop a face upright at generation size, paste it back.

The geometry is in ``instantid.face_crop`` / ``instantid.face_paste``.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..instantid import face_crop, face_paste
from .types import CATEGORY, Crop, FaceAnalyzer, Faces


class InstantIDFaceCrop(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDFaceCrop",
            display_name="InstantID Face Crop",
            category=CATEGORY,
            description="Cuts each chosen face out of an image batch, upright and padded, at a generation size; "
            "gives the face mask, the faces in crop pixels (for Apply InstantID's pose_faces) and the CROP to paste back.",
            inputs=[
                io.Image.Input("image", tooltip="The image(s) with the face(s) to fix or replace."),
                io.Combo.Input("face_choice", options=list(face_crop.CHOICES), default="largest",
                               tooltip="With face_analyzer or mask: which face (or mask area) per image. largest: biggest "
                                       "box. index: face_index in reading order (rows top to bottom, then left to right). "
                                       "all: every face, one crop each. With faces: the face the analysis chose."),
                io.Int.Input("face_index", default=0, min=0, max=63,
                             tooltip="Used when face_choice is index: 0 is the first face in reading order."),
                io.Float.Input("padding", default=1.0, min=0.0, max=4.0, step=0.05,
                               tooltip="Context around the face on every side, as a fraction of the face box's longer "
                                       "side (1.0: the crop is about 3 face boxes wide)."),
                io.Boolean.Input("roll_correction", default=True,
                                 tooltip="Turn the crop so the eye line is horizontal (SDXL draws upright faces best); "
                                         "the paste turns it back. Faces only, not mask areas."),
                io.Combo.Input("resize", options=list(face_crop.RESIZE_MODES), default="area",
                               tooltip="area: about width x height pixels with the crop's own aspect, sides multiples "
                                       "of 8. size: exactly width x height (the region grows to that aspect)."),
                io.Int.Input("width", default=1024, min=64, max=4096, step=8,
                             tooltip="Crop width in pixels (area mode: with height, the pixel count to aim for)."),
                io.Int.Input("height", default=1024, min=64, max=4096, step=8,
                             tooltip="Crop height in pixels (area mode: with width, the pixel count to aim for)."),
                io.Combo.Input("if_none", options=list(face_crop.NO_FACE_POLICIES), default="error",
                               tooltip=f"When no image has a face (or mask area) of at least {face_crop.MIN_FACE_PX} px. "
                                       "error: stop and say why. pass_through: output a small blank crop; Face Paste then "
                                       "returns the images unchanged and Apply InstantID leaves the model alone."),
                Faces.Input("faces", optional=True,
                            tooltip="Faces from 'InstantID Face Analyze' of these same images: one crop per image with a face."),
                FaceAnalyzer.Input("face_analyzer", optional=True,
                                   tooltip="Detect the faces here instead (needed for face_choice 'all'). Connect exactly "
                                           "one of faces, face_analyzer, mask."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Crop the white areas instead of detected faces (each connected area is one "
                                      "region; no roll correction, no keypoints)."),
            ],
            outputs=[
                io.Image.Output(display_name="crops", tooltip="One crop per face, all the same size."),
                io.Mask.Output(display_name="mask", tooltip="Feathered face region in crop pixels (0.5 on its border), "
                                                            "for inpainting nodes."),
                Faces.Output(display_name="faces", tooltip="The faces moved into crop pixels: wire into Apply InstantID's "
                                                           "pose_faces so the keypoints sit exactly on the face."),
                Crop.Output(display_name="crop", tooltip="The transforms, for InstantID Face Paste."),
            ],
        )

    @classmethod
    def execute(cls, image, face_choice: str, face_index: int, padding: float, roll_correction: bool, resize: str,
                width: int, height: int, if_none: str, faces=None, face_analyzer=None, mask=None) -> io.NodeOutput:
        return io.NodeOutput(*face_crop.crop_faces(
            image, faces=faces, analyzer=face_analyzer, mask=mask, choice=face_choice, index=face_index, padding=padding,
            roll_correction=roll_correction, resize=resize, width=width, height=height, policy=if_none))


class InstantIDFacePaste(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDFacePaste",
            display_name="InstantID Face Paste",
            category=CATEGORY,
            description="Puts regenerated crops back where InstantID Face Crop cut them (turned and scaled back), "
                        "blended with a feathered mask; pixels outside the blended region stay exactly as they were.",
            inputs=[
                io.Image.Input("image", tooltip="The same image(s) that went into InstantID Face Crop."),
                io.Image.Input("crops", tooltip="The regenerated crops (VAE Decode of the crop's sampling), one per crop."),
                Crop.Input("crop", tooltip="The crop output of InstantID Face Crop."),
                io.Int.Input("feather", default=12, min=0, max=256,
                             tooltip="Blend width in image pixels, inside the region. 0: use the mask's own soft edge."),
                io.Combo.Input("region", options=list(face_paste.REGIONS), default="face",
                               tooltip="What to paste. face: the face region (the crop node's mask). whole_crop: the "
                                       "entire crop. A mask input overrides this."),
                io.Boolean.Input("colour_match", default=False,
                                 tooltip="Match the pasted face's colour (mean and spread in Lab) to the original region "
                                         "first, e.g. when the new face's lighting differs."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Paste only the white area of this mask, in crop pixels (one per crop, or one for all)."),
            ],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, image, crops, crop, feather: int, region: str, colour_match: bool, mask=None) -> io.NodeOutput:
        return io.NodeOutput(face_paste.paste_faces(image, crops, crop, float(feather), region, mask, colour_match))


FACE_FIX_NODES: list[type[io.ComfyNode]] = [InstantIDFaceCrop, InstantIDFacePaste]
