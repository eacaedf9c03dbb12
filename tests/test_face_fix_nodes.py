"""Face Crop and Face Paste as ComfyUI runs them, and a face fix through each of ComfyUI's inpainting paths.

Tiny real models (tests/e2e_models.py): crop a face out of a photo, regenerate
it with Apply InstantID (identity from the reference face, pose from the face
in the crop) through InpaintModelConditioning, VAEEncodeForInpaint,
SetLatentNoiseMask or plain img2img, then paste it back.
"""

from __future__ import annotations

import asyncio
import math

import execution
import numpy as np
import pytest
import torch
from e2e_models import face_photo, load_graph, run_v3
from face_fixtures import blank_images

import nodes as comfy_nodes

N = comfy_nodes.NODE_CLASS_MAPPINGS
FACE_BOX = (64, 51, 192, 204)  # where face_photo() paints its face (x1, y1, x2, y2)


def run_node(node_id: str, **inputs):
    """Execute one node the way ComfyUI's executor does; returns its outputs (one list per output)."""
    hidden = {"prompt": {}, "extra_pnginfo": {}, "unique_id": "1"}
    output, _, _, _ = asyncio.run(execution.get_output_data("test", "1", N[node_id], {k: [v] for k, v in inputs.items()},
                                                            hidden_inputs=hidden))
    return [o[0] for o in output]


@pytest.fixture(scope="module")
def graph(base_dir):
    return load_graph(str(base_dir), 128, seed=3)


def _crop(image, **overrides):
    args = dict(image=image, face_choice="largest", face_index=0, padding=0.5, roll_correction=True, resize="size",
                width=128, height=128, if_none="error")
    args.update(overrides)
    return run_node("InstantIDFaceCrop", **args)


def _face_region(height=256, width=256):
    """Normalised radius of each pixel in the face-mask ellipse around FACE_BOX (semi-axes 0.7 x the box sides)."""
    x1, y1, x2, y2 = FACE_BOX
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.sqrt(((xs - (x1 + x2) / 2) / (0.7 * (x2 - x1))) ** 2 + ((ys - (y1 + y2) / 2) / (0.7 * (y2 - y1))) ** 2)


def test_schemas_use_the_crop_type():
    crop = N["InstantIDFaceCrop"].GET_NODE_INFO_V1()
    paste = N["InstantIDFacePaste"].GET_NODE_INFO_V1()
    assert crop["output"] == ["IMAGE", "MASK", "INSTANTID_FACES", "INSTANTID_CROP"]
    assert paste["input"]["required"]["crop"][0] == "INSTANTID_CROP" and paste["output"] == ["IMAGE"]
    assert set(crop["input"]["optional"]) == {"faces", "face_analyzer", "mask"}


def _sample(model, positive, negative, latent, denoise):
    return N["KSampler"]().sample(model, 5, 2, 4.0, "euler", "normal", positive, negative, latent, denoise=denoise)[0]


@pytest.mark.parametrize("path", ["InpaintModelConditioning", "VAEEncodeForInpaint", "SetLatentNoiseMask", "img2img"])
def test_face_fix_through_each_inpainting_path(graph, path):
    photo = face_photo()
    crops, mask, crop_faces, crop = _crop(photo, face_analyzer=graph["analyzer"])
    assert crops.shape == (1, 128, 128, 3) and crop_faces.frames[0].source_size == (128, 128)
    model, positive, negative = run_v3("InstantIDApply", model=graph["unet"], positive=graph["positive"], negative=graph["negative"],
                                       instantid=graph["adapter"], control_net=graph["control_net"], faces=graph["faces"],
                                       ip_weight=0.8, cn_strength=0.8, start_at=0.0, end_at=1.0, combine="average",
                                       placement="cover", pose_faces=crop_faces)
    vae, denoise = graph["vae"], 0.6
    if path == "InpaintModelConditioning":
        positive, negative, latent = N["InpaintModelConditioning"]().encode(positive, negative, crops, vae, mask, True)
    elif path == "VAEEncodeForInpaint":
        latent, denoise = N["VAEEncodeForInpaint"]().encode(vae, crops, mask, 6)[0], 1.0
    else:
        latent = N["VAEEncode"]().encode(vae, crops)[0]
        if path == "SetLatentNoiseMask":
            latent = N["SetLatentNoiseMask"]().set_mask(latent, mask)[0]
    samples = _sample(model, positive, negative, latent, denoise)
    fixed = N["VAEDecode"]().decode(vae, samples)[0]
    assert fixed.shape == crops.shape and torch.isfinite(fixed).all()
    (out,) = run_node("InstantIDFacePaste", image=photo, crops=fixed, crop=crop, feather=4, region="face", colour_match=False)
    assert out.shape == photo.shape and torch.isfinite(out).all()
    r = torch.from_numpy(_face_region())
    changed = (out != photo).any(-1)[0]
    assert not changed[r > 1.02].any(), "pixels outside the face region changed"
    assert changed[r < 0.9].float().mean() > 0.9, "the regenerated face was not pasted"


def test_pose_for_identitynet_is_the_face_in_the_crop(graph):
    """Apply InstantID draws pose_faces at the generation size; with the crop's faces that is the face in the crop."""
    from instantid import keypoints

    _, _, crop_faces, crop = _crop(face_photo(), face_analyzer=graph["analyzer"], width=96, height=160)
    record = crop_faces.frames[0]
    original = graph["faces"].frames[0]  # the same photo analysed directly
    m = crop.transforms[0].matrix
    expected = original.keypoints.astype(np.float64) @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(keypoints.place_keypoints(record, 96, 160, "cover"), expected, atol=1e-3)
    # Independently: the face box padded by half its longer side (the height) on each side is wider than
    # 96:160, so its width fills the crop's 96 px.
    x1, y1, x2, y2 = (float(v) for v in original.bbox)
    assert y2 - y1 > x2 - x1
    scale = 96 / ((x2 - x1) + 2 * 0.5 * (y2 - y1))
    eyes = record.keypoints[:2].astype(np.float64)
    assert math.isclose(np.linalg.norm(eyes[1] - eyes[0]), scale * np.linalg.norm(original.keypoints[1] - original.keypoints[0]),
                        rel_tol=1e-4)


def test_all_faces_of_a_batch_crop_and_paste_through_the_nodes(graph):
    from face_fixtures import paint_face

    images = paint_face(paint_face(blank_images(batch=2), 40, 70, 64, 80, frame=0), 300, 60, 64, 80, frame=0)
    paint_face(images, 170, 330, 72, 90, frame=1)
    crops, mask, faces, crop = _crop(images, face_analyzer=graph["analyzer"], face_choice="all")
    assert crops.shape[0] == mask.shape[0] == len(faces) == 3 and [t.frame for t in crop.transforms] == [0, 0, 1]
    (out,) = run_node("InstantIDFacePaste", image=images, crops=1 - crops, crop=crop, feather=2, region="whole_crop",
                      colour_match=False)
    for frame, (x, y) in ((0, (72, 110)), (0, (332, 100)), (1, (206, 375))):
        assert not torch.equal(out[frame, y, x], images[frame, y, x])
    assert torch.equal(out[0, 300:, :], images[0, 300:, :]) and torch.equal(out[1, :250], images[1, :250])


def test_no_face_passes_through_a_whole_fix_unchanged(graph):
    """if_none pass_through: a blank crop goes through Apply InstantID and the sampler; the paste returns the image."""
    image = blank_images(256, 256)
    crops, mask, faces, crop = _crop(image, face_analyzer=graph["analyzer"], if_none="pass_through")
    model, positive, negative = run_v3("InstantIDApply", model=graph["unet"], positive=graph["positive"], negative=graph["negative"],
                                       instantid=graph["adapter"], control_net=graph["control_net"], faces=faces,
                                       ip_weight=0.8, cn_strength=0.8, start_at=0.0, end_at=1.0, combine="average",
                                       placement="cover", pose_faces=faces)
    assert model is graph["unet"]
    latent = N["SetLatentNoiseMask"]().set_mask(N["VAEEncode"]().encode(graph["vae"], crops)[0], mask)[0]
    fixed = N["VAEDecode"]().decode(graph["vae"], _sample(model, positive, negative, latent, 0.5))[0]
    (out,) = run_node("InstantIDFacePaste", image=image, crops=fixed, crop=crop, feather=4, region="face", colour_match=True)
    assert torch.equal(out, image)
    with pytest.raises(Exception, match="nothing to crop"):
        _crop(image, face_analyzer=graph["analyzer"])
