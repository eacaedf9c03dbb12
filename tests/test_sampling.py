"""What only sampling reveals, through ComfyUI's real guiders and samplers on the tiny models: which rows carry the
identity (every core guider, SAG, the cfg-1 optimisation), the start/end window under a later ModelSampling node,
area conds (the UNet runs on a crop), and per-step work.

Every model evaluation is recorded chunk by chunk (a UNet function wrapper, ComfyUI's own hook for that) and each
chunk is recomputed with the independent diffusers implementation of tests/test_parity.py. Which conditioning a
chunk is comes from its text, and whether it must carry the face comes from the rule, written here once:
the positive and DualCFG's middle conditioning carry it; the negative and PerpNeg's empty prompt (the baseline
its guidance starts from, as CFG's negative) get Resampler(zeros).
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
import torch
from model_fixtures import *  # noqa: F401,F403
from test_parity import compare, make_faces, reference_eps, reference_tokens

import nodes as comfy_nodes


def _core_nodes() -> dict:
    """ComfyUI's node classes, including the comfy_extras ones (guiders, SAG, ModelSampling) that the in-process
    host does not register: imported from ComfyUI's own files."""
    from comfy_extras import nodes_custom_sampler, nodes_model_advanced, nodes_perpneg, nodes_sag

    found = dict(comfy_nodes.NODE_CLASS_MAPPINGS)
    found.update(nodes_model_advanced.NODE_CLASS_MAPPINGS)
    for module, names in ((nodes_custom_sampler, ("CFGGuider", "DualCFGGuider", "BasicGuider")),
                          (nodes_perpneg, ("PerpNegGuider",)), (nodes_sag, ("SelfAttentionGuidance",))):
        for name in names:
            found[name] = getattr(module, name)
    return found


N = _core_nodes()
PIXELS = 64
TIMESTEP_INDEX = 500
WEIGHT, STRENGTH = 0.8, 0.8
# name -> (carries the face, has IdentityNet): positive/negative come out of Apply, middle/empty do not.
EXPECTED = {"positive": (True, True), "negative": (False, True), "middle": (True, False), "empty": (False, False)}


def _conditioning(text, pooled, size):
    return [[text.clone(), {"pooled_output": pooled.clone(), "width": size, "height": size}]]


@pytest.fixture(scope="module")
def env(tiny_sdxl, tiny_identitynet, tiny_adapter, diffusers_unet, diffusers_controlnet, tiny_adapter_sd):
    g = torch.Generator().manual_seed(41)
    texts = {name: (torch.randn(1, 77, 2048, generator=g), torch.randn(1, 1280, generator=g)) for name in EXPECTED}
    embedding = torch.randn(512, generator=g) * 1.2
    hint = torch.rand(1, PIXELS, PIXELS, 3, generator=g)
    noise = torch.randn(1, 4, PIXELS // 8, PIXELS // 8, generator=g)
    sampling = tiny_sdxl.get_model_object("model_sampling")
    sigma = float(sampling.sigmas[TIMESTEP_INDEX])
    return dict(model=tiny_sdxl, cn=tiny_identitynet, adapter=tiny_adapter, unet=diffusers_unet, controlnet=diffusers_controlnet,
                sd=tiny_adapter_sd, texts=texts, faces=make_faces(embedding), tokens=reference_tokens(tiny_adapter_sd, embedding),
                hint=hint, noise=noise, sigma=sigma, ref_cache={})


class Chunks:
    """UNet function wrapper: records every model evaluation chunk by chunk (input, sigma, text, denoised output)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.orders: list[list[int]] = []

    def __call__(self, apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        n = len(args["cond_or_uncond"])
        self.orders.append(list(args["cond_or_uncond"]))
        for x, t, text, o in zip(args["input"].chunk(n), args["timestep"].chunk(n), args["c"]["c_crossattn"].chunk(n),
                                 out.chunk(n), strict=True):
            self.calls.append(dict(x=x.detach().clone(), sigma=float(t[0]), text=text[:1].detach().clone(), out=o.detach().clone()))
        return out


def _name_of(env, text) -> str:
    names = [name for name, (t, _) in env["texts"].items() if torch.equal(t, text)]
    assert len(names) == 1, "a chunk ran with a text the test did not make"
    return names[0]


def _reference(env, name, x, sigma, face, control, weight, strength, hint=None, mask=None, size=PIXELS):
    key = (name, face, control, weight, strength, tuple(x.shape), float(x.sum()), float(x.abs().sum()),
           None if mask is None else float(mask.sum()), None if hint is None else float(hint.sum()))
    if key not in env["ref_cache"]:
        text, pooled = env["texts"][name]
        timestep = float(env["model"].get_model_object("model_sampling").timestep(torch.tensor(sigma)))
        tok_c, tok_u = env["tokens"]
        eps, _ = reference_eps(env["unet"], env["controlnet"], env["sd"], x / math.sqrt(sigma**2 + 1.0), timestep, text, pooled,
                               tok_c if face else tok_u, weight=weight, strength=strength if control else 0.0,
                               hint=env["hint"] if hint is None else hint, mask=mask, size=(size, size))
        env["ref_cache"][key] = x - sigma * eps
    return env["ref_cache"][key]


def _one_evaluation(guider, env, noise=None):
    """guider.sample over sigmas [sigma, 0] with a sampler that evaluates the model once (the guider's own maths)."""
    import comfy.samplers

    def one_call(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        return model_k(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))

    noise = env["noise"] if noise is None else noise
    sigmas = torch.tensor([env["sigma"], 0.0])
    return guider.sample(noise, torch.zeros_like(noise), comfy.samplers.KSAMPLER(one_call), sigmas, seed=0)


def _apply(env, model=None, attention=True, identitynet=True):
    from instantid import pipeline

    pos = _conditioning(*env["texts"]["positive"], PIXELS)
    neg = _conditioning(*env["texts"]["negative"], PIXELS)
    model = model or env["model"]
    if attention and identitynet:
        return pipeline.apply_instantid(model, pos, neg, env["adapter"], env["cn"], env["faces"], env["hint"], WEIGHT, STRENGTH, 0.0, 1.0)
    if attention:
        return pipeline.apply_attention(model, env["adapter"], env["faces"], WEIGHT, 0.0, 1.0), pos, neg
    pos, neg = pipeline.apply_identitynet_only(pos, neg, env["cn"], env["adapter"], env["faces"], env["hint"], STRENGTH, 0.0, 1.0)
    return model, pos, neg


def _recorded(model, chunks: Chunks):
    m = model.clone()
    m.set_model_unet_function_wrapper(chunks)
    return m


def _check_chunks(env, chunks: Chunks, case: str, weight=WEIGHT, strength=STRENGTH) -> list[str]:
    names = []
    for i, chunk in enumerate(chunks.calls):
        name = _name_of(env, chunk["text"])
        face, control = EXPECTED[name]
        want = _reference(env, name, chunk["x"], chunk["sigma"], face, control, weight, strength)
        compare(f"{case}[{i}] {name}", chunk["out"], want)
        names.append(name)
    return names


def _guider(node_id: str, **inputs):
    return N[node_id].execute(**inputs).args[0]


GUIDER_CASES = {
    # case: (guider node, its inputs given (positive, negative, middle, empty), texts expected in the evaluations)
    "cfg": ("CFGGuider", lambda p, n, m, e: dict(positive=p, negative=n, cfg=5.0), ["negative", "positive"]),
    "cfg_1": ("CFGGuider", lambda p, n, m, e: dict(positive=p, negative=n, cfg=1.0), ["positive"]),
    "basic": ("BasicGuider", lambda p, n, m, e: dict(conditioning=p), ["positive"]),
    "dual_cfg": ("DualCFGGuider", lambda p, n, m, e: dict(cond1=p, cond2=m, negative=n, cfg_conds=5.0, cfg_cond2_negative=3.0,
                                                          style="regular"), ["middle", "negative", "positive"]),
    "dual_cfg_negative_dropped": ("DualCFGGuider", lambda p, n, m, e: dict(cond1=p, cond2=m, negative=n, cfg_conds=5.0,
                                                                           cfg_cond2_negative=1.0, style="regular"), ["middle", "positive"]),
    "dual_cfg_nested": ("DualCFGGuider", lambda p, n, m, e: dict(cond1=p, cond2=m, negative=n, cfg_conds=5.0, cfg_cond2_negative=1.0,
                                                                 style="nested"), ["middle", "negative", "positive"]),
    "perp_neg": ("PerpNegGuider", lambda p, n, m, e: dict(positive=p, negative=n, empty_conditioning=e, cfg=5.0, neg_scale=1.0),
                 ["empty", "negative", "positive"]),
}


@pytest.mark.parametrize("case", list(GUIDER_CASES))
def test_identity_follows_the_conditioning_in_every_core_guider(env, case):
    node_id, inputs, expected_names = GUIDER_CASES[case]
    model, pos, neg = _apply(env)
    chunks = Chunks()
    mid = _conditioning(*env["texts"]["middle"], PIXELS)
    empty = _conditioning(*env["texts"]["empty"], PIXELS)
    guider = _guider(node_id, model=_recorded(model, chunks), **inputs(pos, neg, mid, empty))
    out = _one_evaluation(guider, env)
    assert torch.isfinite(out).all()
    assert sorted(_check_chunks(env, chunks, case)) == expected_names


def test_perp_neg_without_its_negative_is_cfg_with_the_empty_prompt(env):
    """Why the empty prompt gets no face: with neg_scale 0 PerpNeg is CFG with the empty prompt as the negative
    (ComfyUI's maths), so the two must give the same result."""
    model, pos, neg = _apply(env)
    empty = _conditioning(*env["texts"]["empty"], PIXELS)
    perp = _one_evaluation(_guider("PerpNegGuider", model=model, positive=pos, negative=neg, empty_conditioning=empty, cfg=5.0,
                                   neg_scale=0.0), env)
    cfg = _one_evaluation(_guider("CFGGuider", model=model, positive=pos, negative=empty, cfg=5.0), env)
    compare("perp_neg_0 vs cfg", perp, cfg)


def test_the_rows_are_told_apart_by_the_reference(env):
    """The check above can fail: the face and Resampler(zeros) give clearly different chunks."""
    x = env["noise"] * env["sigma"]
    for name in ("positive", "negative"):
        with_face = _reference(env, name, x, env["sigma"], True, True, WEIGHT, STRENGTH)
        without = _reference(env, name, x, env["sigma"], False, True, WEIGHT, STRENGTH)
        assert float((with_face - without).abs().max()) > 1e-3


def test_self_attention_guidance_extra_pass_gets_no_face(env):
    """SAG runs the negative conditioning once more on a blurred input; that pass is unconditional too."""
    model, pos, neg = _apply(env)
    sag = N["SelfAttentionGuidance"].execute(model=model, scale=0.5, blur_sigma=2.0).args[0]
    chunks = Chunks()
    guider = _guider("CFGGuider", model=_recorded(sag, chunks), positive=pos, negative=neg, cfg=5.0)
    _one_evaluation(guider, env)
    names = _check_chunks(env, chunks, "sag")
    assert names.count("negative") == 2 and names.count("positive") == 1, names
    assert len(chunks.orders) == 2 and chunks.orders[1] == [0], chunks.orders  # SAG's pass: [negative] alone, index 0


@pytest.mark.parametrize("part", ["identitynet_only", "attention_only"])
def test_one_part_alone_follows_the_guider(env, part):
    """IdentityNet without the face attention (a plain model: the control brings the sampler wrappers itself),
    and face attention without IdentityNet, under DualCFG with the negative first in the batch."""
    model, pos, neg = _apply(env, attention=part == "attention_only", identitynet=part == "identitynet_only")
    chunks = Chunks()
    mid = _conditioning(*env["texts"]["middle"], PIXELS)
    guider = _guider("DualCFGGuider", model=_recorded(model, chunks), cond1=pos, cond2=mid, negative=neg, cfg_conds=5.0,
                     cfg_cond2_negative=3.0, style="regular")
    _one_evaluation(guider, env)
    weight, strength = (0.0, STRENGTH) if part == "identitynet_only" else (WEIGHT, 0.0)
    assert sorted(_check_chunks(env, chunks, part, weight=weight, strength=strength)) == ["middle", "negative", "positive"]


# ----------------------------------------------------------------------------
# Start/end under a ModelSampling node placed after Apply
# ----------------------------------------------------------------------------

class AttentionSpy:
    """An attention-backend override registered the way ComfyUI 0.3.75 supports it
    (``transformer_options["optimized_attention_override"]``); counts calls by number of key tokens."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def __call__(self, func, *args, **kwargs):
        k = args[1]
        self.counts[int(k.shape[1])] = self.counts.get(int(k.shape[1]), 0) + 1
        return func(*args, **kwargs)


def test_window_is_resolved_with_the_model_sampling_used_for_sampling(env):
    """ModelSamplingDiscrete (v-prediction, zsnr) after Apply moves every sigma. Attention and IdentityNet must both
    be on exactly at the steps ComfyUI's own rule gives with the sampled model: end <= sigma <= start."""
    import comfy.samplers

    start_at, end_at = 0.3, 0.8
    from instantid import pipeline

    apply_time = env["model"].get_model_object("model_sampling")

    pos = _conditioning(*env["texts"]["positive"], PIXELS)
    neg = _conditioning(*env["texts"]["negative"], PIXELS)
    model, pos, neg = pipeline.apply_instantid(env["model"], pos, neg, env["adapter"], env["cn"], env["faces"], env["hint"],
                                               WEIGHT, STRENGTH, start_at, end_at)
    final = N["ModelSamplingDiscrete"]().patch(model, "v_prediction", True)[0]
    sampling = final.get_model_object("model_sampling")
    old = [float(apply_time.percent_to_sigma(p)) for p in (start_at, end_at)]
    new = [float(sampling.percent_to_sigma(p)) for p in (start_at, end_at)]
    assert abs(old[0] - new[0]) > 0.5 and abs(old[1] - new[1]) > 0.01, (old, new)
    # Sigmas on both sides of every bound, old and new.
    bounds = sorted(old + new)
    sigmas = [bounds[-1] * 1.2] + [(a + b) / 2 for a, b in zip(bounds[1:], bounds[:-1], strict=True)][::-1] + [bounds[0] * 0.8]
    sigmas = sorted(sigmas, reverse=True)

    spy = AttentionSpy()
    recorded = final.clone()
    recorded.model_options["transformer_options"]["optimized_attention_override"] = spy
    control = env["cn"].control_model
    control_calls = []
    original = control.forward

    def counting(*args, **kwargs):
        control_calls.append(1)
        return original(*args, **kwargs)

    seen = []

    def each_sigma(model_k, x, sigmas_, extra_args=None, callback=None, disable=None):
        for s in sigmas_[:-1]:
            before = (spy.counts.get(16, 0), len(control_calls))
            model_k(x, s * x.new_ones([x.shape[0]]), **(extra_args or {}))
            seen.append((float(s), spy.counts.get(16, 0) > before[0], len(control_calls) > before[1]))
        return x

    guider = _guider("CFGGuider", model=recorded, positive=pos, negative=neg, cfg=5.0)
    control.forward = counting
    # 96 px: token grids of 144, 36 and 9, so 16 keys can only be the face tokens.
    noise = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(3))
    try:
        guider.sample(noise, torch.zeros_like(noise), comfy.samplers.KSAMPLER(each_sigma), torch.tensor(sigmas + [0.0]), seed=0)
    finally:
        del control.forward
    assert [s for s, _, _ in seen] == pytest.approx(sigmas)
    expected = [(s, new[1] <= s <= new[0], new[1] <= s <= new[0]) for s, _, _ in seen]
    assert seen == expected, f"(sigma, face attention on, IdentityNet on) per step; window {new}, apply-time window {old}"
    assert any(on for _, on, _ in expected) and not all(on for _, on, _ in expected)


# ----------------------------------------------------------------------------
# Area conds: the UNet runs on a crop
# ----------------------------------------------------------------------------

def test_area_cond_crops_mask_and_drawn_keypoints(env):
    """ConditioningSetArea: the positive runs on a crop of the latent (and ComfyUI adds a negative on the same crop).
    The face mask and the keypoints drawn at the generation size must be cut to that crop, not squeezed onto it."""
    from test_face_keypoints import spec_hint

    from instantid import pipeline

    size = 128
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(1, 4, size // 8, size // 8, generator=g)
    mask = torch.zeros(1, size, size)
    mask[:, 10:70, 40:120] = 1.0
    mask[:, 90:110, 0:50] = 0.5
    area_h, area_w, area_y, area_x = 64, 64, 16, 48  # pixels
    pos = _conditioning(*env["texts"]["positive"], size)
    neg = _conditioning(*env["texts"]["negative"], size)
    pos = N["ConditioningSetArea"]().append(pos, area_w, area_h, area_x, area_y, 1.0)[0]
    model, pos, neg = pipeline.apply_instantid(env["model"], pos, neg, env["adapter"], env["cn"], env["faces"], None,
                                               WEIGHT, STRENGTH, 0.0, 1.0, mask)
    chunks = Chunks()
    guider = _guider("CFGGuider", model=_recorded(model, chunks), positive=pos, negative=neg, cfg=5.0)
    _one_evaluation(guider, env, noise=noise)

    record = env["faces"].frames[0]
    drawn = spec_hint(np.asarray(record.keypoints, np.float64) * (size / record.source_size[0]), size, size)
    hint = torch.from_numpy(drawn.astype(np.float32) / 255.0)[None]
    crop = (slice(None), slice(area_y, area_y + area_h), slice(area_x, area_x + area_w))
    seen = []
    for i, chunk in enumerate(chunks.calls):
        name = _name_of(env, chunk["text"])
        cropped = tuple(chunk["x"].shape[-2:]) == (area_h // 8, area_w // 8)
        face, control = EXPECTED[name]
        want = _reference(env, name, chunk["x"], chunk["sigma"], face, control, WEIGHT, STRENGTH,
                          hint=hint[crop] if cropped else hint, mask=mask[crop] if cropped else mask, size=size)
        compare(f"area[{i}] {name}{' crop' if cropped else ''}", chunk["out"], want)
        seen.append((name, cropped))
    assert sorted(seen) == [("negative", False), ("negative", True), ("positive", True)], seen
    # The test can tell: the stretched mask and keypoints give another result.
    pos_chunk = next(c for c in chunks.calls if _name_of(env, c["text"]) == "positive")
    squeezed_mask = torch.nn.functional.interpolate(mask[:, None], size=(area_h, area_w), mode="nearest")[:, 0]
    stretched = _reference(env, "positive", pos_chunk["x"], pos_chunk["sigma"], True, True, WEIGHT, STRENGTH,
                           hint=hint[crop], mask=squeezed_mask, size=size)
    assert float((stretched - pos_chunk["out"]).abs().max()) > 1e-3


# ----------------------------------------------------------------------------
# Per-step work
# ----------------------------------------------------------------------------

def test_mask_is_resized_once_not_every_step(env, monkeypatch):
    """The face mask is resized to each resolution once per sampling run (cached), not in every step."""
    import comfy.samplers
    import torch.nn.functional as F

    from instantid import pipeline

    calls = []
    original = F.interpolate

    def counting(*args, **kwargs):
        caller = sys._getframe(1).f_code.co_filename
        if os.path.basename(os.path.dirname(caller)) == "instantid":
            calls.append(caller)
        return original(*args, **kwargs)

    mask = torch.ones(1, PIXELS, PIXELS)
    mask[:, :, : PIXELS // 2] = 0.3
    pos = _conditioning(*env["texts"]["positive"], PIXELS)
    neg = _conditioning(*env["texts"]["negative"], PIXELS)
    model, pos, neg = pipeline.apply_instantid(env["model"], pos, neg, env["adapter"], env["cn"], env["faces"], env["hint"],
                                               WEIGHT, STRENGTH, 0.0, 1.0, mask)
    per_step = []

    def steps(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        for s in sigmas[:-1]:
            before = len(calls)
            x = model_k(x, s * x.new_ones([x.shape[0]]), **(extra_args or {}))
            per_step.append(len(calls) - before)
        return x

    monkeypatch.setattr(F, "interpolate", counting)
    guider = _guider("CFGGuider", model=model, positive=pos, negative=neg, cfg=5.0)
    guider.sample(env["noise"], torch.zeros_like(env["noise"]), comfy.samplers.KSAMPLER(steps),
                  torch.tensor([env["sigma"], env["sigma"] * 0.7, env["sigma"] * 0.5, 0.0]), seed=0)
    assert per_step[0] > 0, "the mask was never resized (is the pack's interpolate still counted?)"
    assert per_step[1:] == [0, 0], per_step
