"""Custom ComfyUI socket types of the pack. Names are distinct from core's and other packs'
(FACE_ANALYSIS, cubiq's INSTANTID/FACEANALYSIS) so their outputs can't be wired into ours by mistake."""

from comfy_api.latest import io

Adapter = io.Custom("INSTANTID_ADAPTER")
Faces = io.Custom("INSTANTID_FACES")
FaceAnalyzer = io.Custom("INSTANTID_FACE_ANALYZER")
Crop = io.Custom("INSTANTID_CROP")  # face crop transforms, from InstantID Face Crop to InstantID Face Paste
Group = io.Custom("INSTANTID_GROUP")

CATEGORY = "InstantID"

COMBINE_TOOLTIP = (
    "How several reference faces become one identity. average: mean of the raw embeddings (the authors' advice). "
    "norm_average: each embedding normalised first, so no photo dominates, then rescaled to the mean length. "
    "weighted: uses the per-image weights set on the face analysis node."
)
PLACEMENT_TOOLTIP = (
    "Where the pose face's keypoints land when no keypoint image is given, drawn at the generation size. "
    "cover: as if the photo were resized to fill the image and centre-cropped (the reference when aspects match). "
    "contain: the whole photo fitted inside the image."
)


def choice_error(value: str | None, options: list[str], what: str, fix: str) -> bool | str:
    """``validate_inputs`` helper: ComfyUI 0.3.75 does not check V3 COMBO values against their options,
    so a file or folder name sent through the API (e.g. '../../etc/passwd') would otherwise reach ``execute``.

    None means the combo is driven by a link: ComfyUI validates before the upstream node has run, so the
    value is unknown here and ``require_choice`` checks it in ``execute``.
    """
    if value is None or value in options:
        return True
    return f"{value!r} is not {what} (available: {', '.join(options) or 'none'}). {fix}"


def require_choice(value: str, options: list[str], what: str, fix: str, error: type[Exception]) -> str:
    """``execute`` side of ``choice_error``: the same message, raised as ``error``, for values that came by a link."""
    problem = choice_error(value, options, what, fix)
    if problem is not True or value is None:
        raise error(problem if isinstance(problem, str) else f"No value for {what}. {fix}")
    return value
