"""Whole InstantID graphs through real ComfyUI nodes in-process: loaders -> face analysis -> Apply -> KSampler -> VAE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from e2e_models import load_graph, run_v3

import nodes as comfy_nodes

N = comfy_nodes.NODE_CLASS_MAPPINGS


_v3 = run_v3


@pytest.fixture(scope="module")
def graph(base_dir):
    return load_graph(str(base_dir), 128, seed=1)


def _apply(g, model=None, **overrides):
    args = dict(model=model or g["unet"], positive=g["positive"], negative=g["negative"], instantid=g["adapter"],
                control_net=g["control_net"], faces=g["faces"], ip_weight=0.8, cn_strength=0.8, start_at=0.0, end_at=1.0,
                combine="average", placement="cover")
    args.update(overrides)
    return _v3("InstantIDApply", **args)


def _sample(model, positive, negative, seed=7, steps=2):
    latent = N["EmptyLatentImage"]().generate(128, 128, 1)[0]
    return N["KSampler"]().sample(model, seed, steps, 5.0, "euler", "normal", positive, negative, latent)[0]["samples"]


def test_full_graph_samples_and_decodes(graph):
    model, positive, negative = _apply(graph)
    samples = _sample(model, positive, negative)
    image = N["VAEDecode"]().decode(graph["vae"], {"samples": samples})[0]
    assert samples.shape == (1, 4, 16, 16) and torch.isfinite(samples).all()
    assert image.shape == (1, 128, 128, 3) and torch.isfinite(image).all()


def test_identity_changes_the_result_and_zero_strength_does_not(graph):
    plain = _sample(graph["unet"], graph["positive"], graph["negative"])
    model, positive, negative = _apply(graph)
    with_id = _sample(model, positive, negative)
    assert (with_id - plain).abs().max() > 1e-3
    model0, positive0, negative0 = _apply(graph, ip_weight=0.0, cn_strength=0.0)
    assert torch.equal(_sample(model0, positive0, negative0), plain)


def test_same_seed_same_output_and_global_rng_untouched(graph):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    model, positive, negative = _apply(graph)
    assert torch.equal(torch.get_rng_state(), state), "Apply InstantID touched torch's global RNG"
    # KSampler itself reseeds the global RNG for its noise; InstantID must consume nothing beyond that.
    _sample(graph["unet"], graph["positive"], graph["negative"])
    after_plain = torch.get_rng_state()
    torch.set_rng_state(state)
    first = _sample(model, positive, negative)
    assert torch.equal(torch.get_rng_state(), after_plain), "sampling with InstantID consumed global randomness"
    again_model, again_pos, again_neg = _apply(graph)
    assert torch.equal(_sample(again_model, again_pos, again_neg), first)


def test_apply_does_not_mutate_inputs_and_rerun_does_not_accumulate(graph):
    import copy

    unet = graph["unet"]
    before_options = copy.deepcopy(unet.model_options)
    positive_before = [[t, dict(d)] for t, d in graph["positive"]]
    results = []
    for _ in range(3):
        model, positive, negative = _apply(graph)
        results.append(_sample(model, positive, negative))
    assert unet.model_options == before_options
    assert [d for _, d in graph["positive"]] == [d for _, d in positive_before]
    assert "control" not in graph["positive"][0][1]
    assert all(torch.equal(r, results[0]) for r in results)


def test_exactly_70_face_attention_calls_per_forward(graph):
    from instantid.attention import FaceAttentionPatch

    model, positive, negative = _apply(graph)
    calls = []
    original = FaceAttentionPatch.__call__

    def counting(self, q, k, v, extra_options):
        calls.append(self.key)
        return original(self, q, k, v, extra_options)

    FaceAttentionPatch.__call__ = counting
    try:
        _sample(model, positive, negative, steps=1)
    finally:
        FaceAttentionPatch.__call__ = original
    assert len(calls) == 70 and len(set(calls)) == 70
    assert {("middle", 0, i) for i in range(10)} <= set(calls)


def test_pass_through_policy_returns_inputs_unchanged(graph):
    blank = torch.full((1, 64, 64, 3), 0.15)
    faces, _ = _v3("InstantIDFaceAnalyze", face_analyzer=graph["analyzer"], image=blank, face_choice="largest",
                   face_index=0, no_face_policy="pass_through", weights="")
    model, positive, negative = _apply(graph, faces=faces)
    assert model is graph["unet"] and positive is graph["positive"] and negative is graph["negative"]
    from instantid.errors import InstantIDError

    faces_err, _ = _v3("InstantIDFaceAnalyze", face_analyzer=graph["analyzer"], image=blank, face_choice="largest",
                       face_index=0, no_face_policy="skip", weights="")
    with pytest.raises((InstantIDError, ValueError), match="no face"):
        _apply(graph, faces=faces_err)


def test_wrong_model_and_wrong_controlnet_are_refused_cleanly(graph):
    from instantid.errors import ControlNetMismatchError, ModelMismatchError

    sd15 = N["UNETLoader"]().load_unet(graph["models"].sd15_unet_name, "default")[0]
    with pytest.raises(ModelMismatchError, match="SDXL models only"):
        _apply(graph, model=sd15)
    sd15_cn = N["ControlNetLoader"]().load_controlnet(graph["models"].sd15_controlnet_name)[0]
    with pytest.raises(ControlNetMismatchError, match="768-wide"):
        _apply(graph, control_net=sd15_cn)
    assert "control" not in graph["positive"][0][1]


@pytest.mark.parametrize("weight_dtype", ["fp8_e4m3fn"])
def test_follows_the_model_dtype(graph, weight_dtype):
    """Weights stored in fp8 (manual cast to fp32 on a CPU): the face K/V follow the model's compute dtype.
    fp16/bf16 compute and both fp8 flags: tests/test_real_setups.py (UNETLoader has no 16-bit option)."""
    model = N["UNETLoader"]().load_unet(graph["models"].unet_name, weight_dtype)[0]
    assert model.model.get_dtype() == getattr(torch, weight_dtype.replace("fp8", "float8"))
    plain = _sample(model, graph["positive"], graph["negative"], steps=1)
    patched, positive, negative = _apply(graph, model=model)
    out = _sample(patched, positive, negative, steps=1)
    reference, rpos, rneg = _apply(graph)
    ref = _sample(reference, rpos, rneg, steps=1)
    assert torch.isfinite(out).all()
    assert (out - plain).abs().max() > 1e-3
    # Same maths as the fp32 model up to the storage precision of the weights.
    assert (out - ref).abs().max() < 0.25 * ref.abs().max()


class HintSpy:
    """Records the ``hint`` every forward of a ControlNet's control model receives."""

    def __init__(self, control_net) -> None:
        self.model = control_net.control_model
        self.original = self.model.forward
        self.hints: list[torch.Tensor] = []

        def spy(*args, **kwargs):
            self.hints.append(kwargs["hint"].detach().clone())
            return self.original(*args, **kwargs)

        self.model.forward = spy

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        del self.model.forward


def _drawn(record, size=128) -> np.ndarray:
    """The keypoint image of ``record`` at size x size, drawn by the independent spec implementation
    (same aspect as the photo: 'cover' is a plain resize)."""
    from test_face_keypoints import spec_hint

    return spec_hint(np.asarray(record.keypoints, np.float64) * (size / record.source_size[0]), size, size)


def _analyze(graph, image, policy):
    return _v3("InstantIDFaceAnalyze", face_analyzer=graph["analyzer"], image=image, face_choice="largest", face_index=0,
               no_face_policy=policy, weights="")[0]


def _hint_seen(graph, model, positive, negative) -> np.ndarray:
    with HintSpy(graph["control_net"]) as spy:
        _sample(model, positive, negative, steps=1)
    assert spy.hints, "IdentityNet never ran"
    return (spy.hints[0][0].movedim(0, -1).float() * 255).round().to(torch.uint8).numpy()


@pytest.mark.parametrize("policy", ["skip", "pass_through"])
def test_pose_is_drawn_from_the_first_frame_with_a_face(graph, policy):
    """Frame 0 has no face, frame 1 has one: IdentityNet gets frame 1's keypoints, not a black hint."""
    from e2e_models import face_photo

    images = torch.cat([torch.full((1, 256, 256, 3), 0.15), face_photo()])
    faces = _analyze(graph, images, policy)
    assert faces.missing_frames == [0]
    model, positive, negative = _apply(graph, faces=faces)
    expected = _drawn(faces.frames[1])
    assert expected.max() == 255
    np.testing.assert_array_equal(_hint_seen(graph, model, positive, negative), expected)


def test_pose_faces_without_a_face(graph):
    """pose_faces with no face: a clear error, or with its policy 'pass through', the identity's own keypoints."""
    from instantid.errors import InstantIDError

    blank = torch.full((1, 256, 256, 3), 0.15)
    with pytest.raises((InstantIDError, ValueError), match="pose_faces input has no face"):
        _apply(graph, pose_faces=_analyze(graph, blank, "skip"))
    model, positive, negative = _apply(graph, pose_faces=_analyze(graph, blank, "pass_through"))
    np.testing.assert_array_equal(_hint_seen(graph, model, positive, negative), _drawn(graph["faces"].frames[0]))
