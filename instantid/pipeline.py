"""The arrows a node calls: faces -> identity tokens -> patched model / IdentityNet conditioning."""

from __future__ import annotations

import logging

import numpy as np
import torch

from .adapter import FaceKV, IdentityTokens, InstantIDAdapter
from .attention import check_model, patch_model
from .faces import Faces, NoFaceError, combine_embeddings
from .identitynet import apply_identitynet, check_controlnet
from .keypoints import pose_faces

log = logging.getLogger(__name__)


def passes_through(faces: Faces, node: str) -> bool:
    """True when no face was found and the analysis node was told to pass through: the caller returns its inputs."""
    if faces.found:
        return False
    if faces.no_face_policy == "pass_through":
        log.warning("%s: no face in the FACES input (policy 'pass through'); model and conditioning are returned unchanged.", node)
        return True
    raise NoFaceError(
        f"{node}: no face in the FACES input ({len(faces)} frame(s) analysed, none with a face). "
        "Use a photo with a clearly visible face, lower the detection size on the face analysis node, "
        "or set its no-face policy to 'pass through'."
    )


def identity_tokens(adapter: InstantIDAdapter, faces: Faces, combine: str) -> IdentityTokens:
    """One identity from every face found (see ``combine_embeddings``), through the Resampler."""
    if faces.model_pack not in ("antelopev2",):
        log.warning("Face embeddings come from insightface pack %r; InstantID was trained on antelopev2.", faces.model_pack)
    embedding = combine_embeddings(faces, combine)
    return adapter.identity_tokens(torch.from_numpy(np.asarray(embedding, dtype=np.float32))[None])


def face_attention_model(model, adapter: InstantIDAdapter, tokens: IdentityTokens, weight: float,
                         start_at: float, end_at: float, mask: torch.Tensor | None):
    kv: FaceKV = adapter.face_kv(tokens)
    return patch_model(model, adapter, kv, weight, start_at, end_at, mask)


def apply_attention(model, adapter: InstantIDAdapter, faces: Faces, weight: float, start_at: float, end_at: float,
                    mask: torch.Tensor | None = None, combine: str = "average"):
    """Face attention only (no IdentityNet); the model is checked before the no-face policy is looked at."""
    check_model(model, adapter)
    if passes_through(faces, "InstantID Attention Only"):
        return model
    return face_attention_model(model, adapter, identity_tokens(adapter, faces, combine), weight, start_at, end_at, mask)


def apply_identitynet_only(positive, negative, control_net, adapter: InstantIDAdapter, faces: Faces,
                           keypoint_image: torch.Tensor | None, strength: float, start_at: float, end_at: float,
                           mask: torch.Tensor | None = None, combine: str = "average", pose: Faces | None = None,
                           placement: str = "cover"):
    """IdentityNet only; the ControlNet is checked before the no-face policy is looked at."""
    check_controlnet(control_net, adapter.config.output_dim)
    if passes_through(faces, "InstantID IdentityNet Only"):
        return positive, negative
    pose = None if keypoint_image is not None else pose_faces(faces, pose, "InstantID IdentityNet Only")
    return apply_identitynet(positive, negative, control_net, identity_tokens(adapter, faces, combine), keypoint_image,
                             strength, start_at, end_at, mask, pose=pose, placement=placement, bring_wrappers=True)


def apply_instantid(model, positive, negative, adapter: InstantIDAdapter, control_net, faces: Faces,
                    keypoint_image: torch.Tensor | None, ip_weight: float, cn_strength: float,
                    start_at: float, end_at: float, mask: torch.Tensor | None = None,
                    combine: str = "average", pose: Faces | None = None, placement: str = "cover"):
    """Attention patch + IdentityNet; everything is checked before anything is built, so a bad input patches nothing."""
    check_model(model, adapter)
    check_controlnet(control_net, adapter.config.output_dim)
    if passes_through(faces, "Apply InstantID"):
        return model, positive, negative
    pose = None if keypoint_image is not None else pose_faces(faces, pose, "Apply InstantID")
    tokens = identity_tokens(adapter, faces, combine)
    patched = face_attention_model(model, adapter, tokens, ip_weight, start_at, end_at, mask)
    positive, negative = apply_identitynet(positive, negative, control_net, tokens, keypoint_image, cn_strength,
                                           start_at, end_at, mask, pose=pose, placement=placement)
    return patched, positive, negative
