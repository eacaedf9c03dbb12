"""Thin nodes for keypoints users shape: the browser editor, transforms of FACES, video sequences.

The work is in ``instantid.keypoint_edit`` and ``instantid.keypoint_sequence``;
the editor's page side is ``js/keypoint_editor.js``.
"""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io, ui

from ..instantid import keypoint_edit, keypoint_sequence, keypoints
from .types import CATEGORY, Faces

log = logging.getLogger(__name__)

EDITOR_WIDGET = "INSTANTID_KEYPOINTS"  # the widget type js/keypoint_editor.js registers
STYLE_KEY = "instantid_hint_style"
INPUT_FACES_KEY = "instantid_input_faces"


class KeypointsInput(io.String.Input):
    """A STRING input (so the API takes plain JSON text and /prompt checks it like any string) whose schema
    also carries the engine's drawing constants; the page swaps the text box for the editor."""

    def as_dict(self) -> dict:
        return super().as_dict() | {STYLE_KEY: keypoint_edit.hint_style()}


def _size(name: str, tooltip: str) -> io.Int.Input:
    return io.Int.Input(name, default=1024, min=64, max=8192, step=8, tooltip=tooltip)


def _image(array) -> torch.Tensor:
    return torch.from_numpy(array).float().div(255.0)[None]


class InstantIDKeypointEditor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDKeypointEditor",
            display_name="InstantID Keypoint Editor",
            category=CATEGORY,
            description="Draw IdentityNet's pose by hand: drag the five points of each face on a canvas of the "
            "generation size. Outputs the keypoint image for image_kps.",
            inputs=[
                KeypointsInput(
                    "keypoints",
                    default=keypoint_edit.default_value(),
                    tooltip="The faces as JSON: {\"faces\": [[[x, y] x 5], ...]}, x and y as fractions (0..1) of the "
                    "width and height; points: left eye, right eye, nose tip, left mouth corner, right mouth corner "
                    f"(image left/right). 1 to {keypoint_edit.MAX_FACES} faces. Edited on the canvas in the web UI.",
                ),
                _size("width", "Generation width in pixels (use the latent's size): the canvas has this aspect and the "
                      "keypoint image this size."),
                _size("height", "Generation height in pixels."),
                Faces.Input("faces", optional=True,
                            tooltip="Optional starting point: after a run, the editor's 'from input' button loads these "
                            "faces' keypoints (placed as 'cover' on the canvas). Not used for the output otherwise."),
            ],
            outputs=[io.Image.Output(display_name="keypoint_image",
                                     tooltip="The hint drawn as IdentityNet expects it, at width x height; into image_kps.")],
        )

    @classmethod
    def validate_inputs(cls, keypoints: str | None) -> bool | str:
        if keypoints is None:  # driven by a link: checked in execute
            return True
        try:
            keypoint_edit.parse_edited_keypoints(keypoints)
        except keypoint_edit.KeypointValueError as exc:
            return f"InstantID Keypoint Editor: {exc}"
        return True

    @classmethod
    def execute(cls, keypoints: str, width: int, height: int, faces=None) -> io.NodeOutput:
        points = keypoint_edit.parse_edited_keypoints(keypoints)
        image = _image(keypoint_edit.draw_edited(points, width, height))
        shown = None
        if faces is not None:
            shown = {INPUT_FACES_KEY: keypoint_edit.normalised_faces(faces, width, height)}
        return io.NodeOutput(image, ui=shown)


class InstantIDKeypointTransform(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        def amount(name: str, default: float, lo: float, hi: float, step: float, tooltip: str) -> io.Float.Input:
            return io.Float.Input(name, default=default, min=lo, max=hi, step=step, tooltip=tooltip)

        return io.Schema(
            node_id="InstantIDKeypointTransform",
            display_name="InstantID Keypoint Transform",
            category=CATEGORY,
            description="Rotates (roll), scales, moves or mirrors each face's keypoints, optionally with seeded random "
            "variations for a batch. Identity (embedding) is unchanged.",
            inputs=[
                Faces.Input("faces", tooltip="Faces whose keypoints to transform (e.g. from InstantID Face Analyze)."),
                amount("rotate", 0.0, -180.0, 180.0, 0.5, "Roll in degrees about the face's centre (mean of its five "
                       "points); positive turns counter-clockwise on screen."),
                amount("scale", 1.0, 0.1, 10.0, 0.01, "Size factor about the face's centre."),
                amount("translate_x", 0.0, -1.0, 1.0, 0.005, "Move right by this fraction of the image width."),
                amount("translate_y", 0.0, -1.0, 1.0, 0.005, "Move down by this fraction of the image height."),
                io.Boolean.Input("mirror", default=False, tooltip="Mirror each face left-right about its centre (the face "
                                 "turns the other way; eye and mouth labels swap as a detector would see them)."),
                io.Int.Input("copies", default=1, min=1, max=4096, tooltip="Output frames per input frame, e.g. the batch "
                             "size: with random amounts each copy gets its own variation."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the random variations; output frame k always gets the same variation "
                             "for the same seed, whatever the number of copies."),
                amount("random_rotate", 0.0, 0.0, 180.0, 0.5, "Random extra roll, uniform within +- this many degrees."),
                amount("random_scale", 0.0, 0.0, 0.9, 0.01, "Random size change, uniform within +- this fraction."),
                amount("random_translate", 0.0, 0.0, 1.0, 0.005, "Random move, uniform within +- this fraction of the "
                       "image width (x) and height (y)."),
            ],
            outputs=[Faces.Output(display_name="faces")],
        )

    @classmethod
    def execute(cls, faces, rotate: float, scale: float, translate_x: float, translate_y: float, mirror: bool,
                copies: int, seed: int, random_rotate: float, random_scale: float, random_translate: float) -> io.NodeOutput:
        return io.NodeOutput(keypoint_edit.transform_faces(faces, rotate, scale, translate_x, translate_y, mirror, copies,
                                                           seed, random_rotate, random_scale, random_translate))


class InstantIDKeypointSequence(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDKeypointSequence",
            display_name="InstantID Keypoint Sequence",
            category=CATEGORY,
            description="One keypoint image per video frame, in frame order: frames without a face filled from their "
            "neighbours, jitter smoothed over time. Feed image_kps with a latent batch of the same length: frame i "
            "steers latent i.",
            inputs=[
                Faces.Input("faces", tooltip="FACES of the video frames (InstantID Face Analyze on the frame batch with "
                            "no_face_policy skip), one slot per frame."),
                _size("width", "Generation width in pixels (the latent's size)."),
                _size("height", "Generation height in pixels."),
                io.Combo.Input("placement", options=["cover", "contain"], default="cover",
                               tooltip="cover: frames scaled to fill the image, centre-cropped. contain: whole frame "
                               "fitted inside."),
                io.Float.Input("smoothing", default=1.5, min=0.0, max=10.0, step=0.1,
                               tooltip="Temporal smoothing strength: sigma in frames of a centred Gaussian-weighted "
                               "local line fit (no lag, steady motion kept). 0 = off. About 1-2 removes detector "
                               "jitter; larger values also soften quick head moves."),
                io.Boolean.Input("fill_missing", default=True,
                                 tooltip="Frames without a face get keypoints interpolated between the nearest frames "
                                 "with one (before the first / after the last face: held). Off: those frames stay "
                                 "black (no pose)."),
            ],
            outputs=[
                io.Image.Output(display_name="keypoint_images", tooltip="One hint per frame, [frames, height, width, 3]."),
                Faces.Output(display_name="faces", tooltip="The filled and smoothed faces, one slot per frame."),
            ],
        )

    @classmethod
    def execute(cls, faces, width: int, height: int, placement: str, smoothing: float, fill_missing: bool) -> io.NodeOutput:
        result = keypoint_sequence.sequence_faces(faces, smoothing, fill_missing)
        images = keypoints.keypoint_images(result, width, height, placement)
        added = result.notes[len(faces.notes):]
        for note in added:
            log.info("InstantID Keypoint Sequence: %s", note)
        report = f"{len(result)} frames, {len(faces.found)} with a detected face" + "".join(f"\n{n}" for n in added)
        return io.NodeOutput(images, result, ui=ui.PreviewText(report))


KEYPOINT_NODES: list[type[io.ComfyNode]] = [InstantIDKeypointEditor, InstantIDKeypointTransform, InstantIDKeypointSequence]
