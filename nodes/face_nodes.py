"""Thin nodes for face analysis, keypoint images, saved faces and similarity; the work is in ``instantid``.

Nothing here imports insightface or onnxruntime: the analyzer loader does, on
first use, so the pack loads (and saved faces work) without them.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

import folder_paths
from comfy_api.latest import io, ui

from ..instantid import face_analysis, face_models, face_store, keypoints, published, similarity
from ..instantid.faces import COMBINE_MODES
from ..instantid.paths import folders_text
from .types import CATEGORY, COMBINE_TOOLTIP, FaceAnalyzer, Faces, choice_error, require_choice

log = logging.getLogger(__name__)

face_models.register_folder()
face_store.register_folder()
if conflict := face_models.onnxruntime_conflict():  # metadata only: cheap, and users see it at startup
    log.warning("InstantID: %s", conflict)


def _pack_options() -> list[str]:
    found = sorted(face_models.find_packs())
    # antelopev2 is always offered so that choosing it explains where to put the files.
    return [face_models.DEFAULT_PACK] + [p for p in found if p != face_models.DEFAULT_PACK]


class InstantIDFaceAnalyzerLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDFaceAnalyzerLoader",
            display_name="Load InstantID Face Analyzer",
            category=CATEGORY,
            description="Loads insightface's face detector and ArcFace recognizer (only those two models).",
            inputs=[
                io.Combo.Input(
                    "model_pack",
                    options=_pack_options(),
                    default=face_models.DEFAULT_PACK,
                    tooltip="insightface model pack, a folder of .onnx files in models/insightface/models/<pack>/ "
                    "(or any insightface path in extra_model_paths.yaml). InstantID was trained with antelopev2: "
                    "scrfd_10g_bnkps.onnx + glintr100.onnx. Non-commercial research licence.",
                ),
                io.Combo.Input(
                    "provider",
                    options=face_models.available_providers(),
                    default="CPU",
                    tooltip="Where onnxruntime runs the models. Only providers your onnxruntime reports are listed; "
                    "CPU is always the fallback. GPU needs the onnxruntime-gpu package (not both builds).",
                ),
                io.Int.Input(
                    "det_size",
                    default=face_models.DEFAULT_DET_SIZE,
                    min=128,
                    max=1280,
                    step=32,
                    tooltip="Detection size in pixels (the image is fitted into a square of this size). 640 is the "
                    "reference. Frames with no face are retried at smaller sizes and with padding automatically.",
                ),
            ],
            outputs=[FaceAnalyzer.Output(display_name="face_analyzer")],
        )

    @staticmethod
    def _choice() -> tuple[str, str]:
        return ("an insightface model pack",
                f"Put the pack's .onnx files in <insightface folder>/models/<pack>/; the insightface folders are "
                f"{folders_text(face_models.FOLDER_NAME)}.")

    @classmethod
    def validate_inputs(cls, model_pack: str | None) -> bool | str:
        # Only model_pack: ComfyUI attributes the message to each argument named here (and range-checks
        # det_size itself only when it is not).
        verdict = choice_error(model_pack, _pack_options(), *cls._choice())
        if verdict is not True or model_pack is None:  # None: a link, checked in execute
            return verdict
        # Checked here, not only when the node runs, so that the first /prompt names this pack together
        # with every other missing file.
        try:
            face_models.locate_pack(model_pack)
        except face_models.FaceModelsError as exc:
            return f"{exc} {published.face_pack_source(model_pack)}".strip()
        return True

    @classmethod
    def execute(cls, model_pack: str, provider: str, det_size: int) -> io.NodeOutput:
        if not isinstance(model_pack, str) or Path(model_pack).name != model_pack or model_pack in ("", ".", ".."):
            # A path, not a pack name (it can come by a link): refused like validate_inputs does. A plain name
            # that is not installed goes on to load_analyzer, whose error lists every folder it searched.
            require_choice(model_pack, _pack_options(), *cls._choice(), face_models.FaceModelsError)
        return io.NodeOutput(face_models.load_analyzer(model_pack, provider, det_size))


class InstantIDFaceAnalyze(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDFaceAnalyze",
            display_name="InstantID Face Analyze",
            category=CATEGORY,
            description="Finds one face per image: box, 5 keypoints and the raw 512-d identity embedding.",
            inputs=[
                FaceAnalyzer.Input("face_analyzer", tooltip="From Load InstantID Face Analyzer."),
                io.Image.Input(
                    "image",
                    tooltip="Reference photo(s). A batch gives one face per image (several references of one "
                    "person are combined downstream). Grayscale and RGBA work too.",
                ),
                io.Combo.Input(
                    "face_choice",
                    options=list(face_analysis.CHOICES),
                    default="largest",
                    tooltip="Which face when an image has several. largest: biggest box (the reference). "
                    "index: face_index in reading order (rows top to bottom, then left to right; the preview "
                    "numbers faces in this order). score: the most confident detection.",
                ),
                io.Int.Input(
                    "face_index",
                    default=0,
                    min=0,
                    max=63,
                    tooltip="Used when face_choice is index: 0 is the first face in reading order (see the numbers on the preview).",
                ),
                io.Combo.Input(
                    "no_face_policy",
                    options=list(face_analysis.POLICIES),
                    default="error",
                    tooltip="When an image has no face (after retrying smaller detection sizes and padding). "
                    "error: stop with the frame number. skip: keep an empty slot for that image (frames never "
                    "shift) and go on. pass_through: like skip, and if no image has a face the InstantID nodes "
                    "return model and conditioning unchanged instead of failing.",
                ),
                io.String.Input(
                    "weights",
                    default="",
                    optional=True,
                    tooltip="Optional weight per image, comma separated (e.g. '1, 0.5, 0.5'), used by the "
                    "'weighted' combine mode. Leave empty for equal weights.",
                ),
            ],
            outputs=[
                Faces.Output(display_name="faces"),
                io.Image.Output(display_name="preview"),
            ],
        )

    @classmethod
    def execute(
        cls,
        face_analyzer,
        image,
        face_choice: str,
        face_index: int,
        no_face_policy: str,
        weights: str = "",
    ) -> io.NodeOutput:
        faces, preview = face_analysis.analyze(image, face_analyzer, face_choice, face_index, no_face_policy, weights or None)
        return io.NodeOutput(faces, preview)


class InstantIDKeypointImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        def fraction(name: str, default: float, tooltip: str) -> io.Float.Input:
            return io.Float.Input(name, default=default, min=0.0, max=1.0, step=0.01, tooltip=tooltip)

        return io.Schema(
            node_id="InstantIDKeypointImage",
            display_name="InstantID Keypoint Image",
            category=CATEGORY,
            description="Draws the face keypoints as IdentityNet's pose hint, at the generation size.",
            inputs=[
                Faces.Input(
                    "faces",
                    tooltip="Faces whose keypoints set the pose (may come from a different photo than the identity).",
                ),
                io.Int.Input(
                    "width",
                    default=1024,
                    min=64,
                    max=8192,
                    step=8,
                    tooltip="Generation width in pixels; use the latent's size so nothing is cropped.",
                ),
                io.Int.Input(
                    "height",
                    default=1024,
                    min=64,
                    max=8192,
                    step=8,
                    tooltip="Generation height in pixels.",
                ),
                io.Combo.Input(
                    "placement",
                    options=list(keypoints.PLACEMENTS),
                    default="cover",
                    tooltip="cover: photo scaled to fill the image, centre-cropped (the reference when aspects "
                    "match). contain: whole photo fitted inside. box: the face fitted into the box below.",
                ),
                fraction("box_x", 0.25, "placement box: left edge as a fraction of the width."),
                fraction("box_y", 0.25, "placement box: top edge as a fraction of the height."),
                fraction("box_width", 0.5, "placement box: width as a fraction of the image width."),
                fraction("box_height", 0.5, "placement box: height as a fraction of the image height."),
            ],
            outputs=[io.Image.Output(display_name="keypoint_image")],
        )

    @classmethod
    def execute(
        cls,
        faces,
        width: int,
        height: int,
        placement: str,
        box_x: float,
        box_y: float,
        box_width: float,
        box_height: float,
    ) -> io.NodeOutput:
        box = (box_x, box_y, box_width, box_height) if placement == "box" else None
        return io.NodeOutput(keypoints.keypoint_images(faces, width, height, placement, box))


_SAFE_NAME = re.compile(r"^[\w\-. ]+$")


def _save_target(name: str, overwrite: bool) -> Path:
    name = name.strip()
    if name.endswith(face_store.EXTENSION):
        name = name[: -len(face_store.EXTENSION)]
    if not name or not _SAFE_NAME.match(name) or name.startswith("."):
        raise ValueError(f"face file name {name!r} may only use letters, digits, spaces, '-', '_' and '.', without folders.")
    folder = Path(folder_paths.get_folder_paths(face_store.FOLDER_NAME)[0])
    target = folder / f"{name}{face_store.EXTENSION}"
    counter = 1
    while target.exists() and not overwrite:
        counter += 1
        target = folder / f"{name}_{counter}{face_store.EXTENSION}"
    return target


class InstantIDSaveFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDSaveFaces",
            display_name="InstantID Save Face",
            category=CATEGORY,
            description="Saves analysed faces (embeddings, keypoints, boxes) as a safetensors file in "
            "models/instantid_faces, to reuse without the photo or insightface.",
            is_output_node=True,
            inputs=[
                Faces.Input("faces", tooltip="Faces from InstantID Face Analyze (or a loaded face)."),
                io.String.Input(
                    "name",
                    default="face",
                    tooltip="File name without extension; saved as <name>.safetensors in the first "
                    "instantid_faces folder (default models/instantid_faces).",
                ),
                io.Boolean.Input(
                    "overwrite",
                    default=False,
                    tooltip="Replace an existing file of that name. Off: a number is appended instead.",
                ),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, faces, name: str, overwrite: bool) -> io.NodeOutput:
        path = face_store.save_faces(faces, _save_target(name, overwrite))
        log.info("InstantID: saved %d face frame(s) to %s", len(faces), path)
        return io.NodeOutput(ui=ui.PreviewText(f"saved {path.name} ({len(faces.found)} face(s))"))


class InstantIDLoadFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDLoadFaces",
            display_name="InstantID Load Face",
            category=CATEGORY,
            description="Loads a face saved with InstantID Save Face. Needs no insightface.",
            inputs=[
                io.Combo.Input(
                    "face_file",
                    options=folder_paths.get_filename_list(face_store.FOLDER_NAME),
                    tooltip="A .safetensors file in models/instantid_faces (or an instantid_faces path in "
                    "extra_model_paths.yaml). The file is checked before use.",
                ),
            ],
            outputs=[Faces.Output(display_name="faces")],
        )

    _CHOICE = ("a saved face in models/instantid_faces", "Save one with 'InstantID Save Face' first, or pick one from the list.")

    @classmethod
    def validate_inputs(cls, face_file: str | None) -> bool | str:
        return choice_error(face_file, folder_paths.get_filename_list(face_store.FOLDER_NAME), *cls._CHOICE)

    @classmethod
    def fingerprint_inputs(cls, face_file: str) -> str:
        path = folder_paths.get_full_path(face_store.FOLDER_NAME, face_file)
        if path is None:
            return f"missing:{face_file}"
        stat = os.stat(path)
        return f"{path}:{stat.st_mtime_ns}:{stat.st_size}"

    @classmethod
    def execute(cls, face_file: str) -> io.NodeOutput:
        require_choice(face_file, folder_paths.get_filename_list(face_store.FOLDER_NAME), *cls._CHOICE, face_store.FaceFileError)
        path = folder_paths.get_full_path(face_store.FOLDER_NAME, face_file)
        if path is None:
            folders = ", ".join(folder_paths.get_folder_paths(face_store.FOLDER_NAME))
            raise face_store.FaceFileError(f"saved face {face_file!r} not found in {folders}.")
        return io.NodeOutput(face_store.load_faces(path))


class InstantIDFaceSimilarity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDFaceSimilarity",
            display_name="InstantID Face Similarity",
            category=CATEGORY,
            description="Cosine similarity (ArcFace) between the identity and the largest face in each image.",
            is_output_node=True,
            inputs=[
                FaceAnalyzer.Input("face_analyzer", tooltip="The same analyzer (model pack) that made the faces."),
                Faces.Input("faces", tooltip="The identity to compare against (all its faces are combined)."),
                io.Image.Input("images", tooltip="Generated images to score, one score per image."),
                io.Combo.Input("combine", options=list(COMBINE_MODES), default="average", tooltip=COMBINE_TOOLTIP),
            ],
            outputs=[
                io.Float.Output(
                    display_name="scores",
                    is_output_list=True,
                    tooltip="One cosine similarity per image (-1..1, higher is closer); NaN where no face.",
                ),
                io.Float.Output(display_name="mean", tooltip="Mean over images with a face; NaN if none."),
                io.String.Output(display_name="report", tooltip="The scores as text."),
            ],
        )

    @classmethod
    def execute(cls, face_analyzer, faces, images, combine: str) -> io.NodeOutput:
        scores = similarity.face_similarity(faces, images, face_analyzer, combine)
        found = [s for s in scores if not math.isnan(s)]
        mean = sum(found) / len(found) if found else float("nan")
        report = similarity.describe_scores(scores)
        return io.NodeOutput(scores, mean, report, ui=ui.PreviewText(report))


FACE_NODES: list[type[io.ComfyNode]] = [
    InstantIDFaceAnalyzerLoader,
    InstantIDFaceAnalyze,
    InstantIDKeypointImage,
    InstantIDSaveFaces,
    InstantIDLoadFaces,
    InstantIDFaceSimilarity,
]
