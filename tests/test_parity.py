"""Exactness of the pack against an independent implementation of the spec (sections 4, 6, 7, 8).

The reference side never calls ``instantid`` for the maths: a Resampler
written here with einsum, a diffusers attention processor doing the
decoupled cross-attention on the diffusers UNet the tiny file was converted
from (mapped by checkpoint number n), and the diffusers ControlNetModel the
tiny IdentityNet came from, with the face tokens as its context. The pack
side loads the same weights from disk through ComfyUI's loaders, patches with
``instantid.pipeline`` and runs ONE denoising call with CFG through
ComfyUI's real sampling code.

Tolerance: fp32, max abs difference of the CFG'd denoised output <= 1e-5
times max(1, max|reference|) (the outputs are O(sigma), sigma ~ 1 here).
"""

from __future__ import annotations

import contextlib
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_fixtures import *  # noqa: F401,F403

log = logging.getLogger(__name__)

LATENT = 16  # 16x16 latent = 128x128 pixels
PIXELS = LATENT * 8
CFG = 5.0
TIMESTEP_INDEX = 500
TOL = 1e-5
RESULTS: dict[str, float] = {}


# ----------------------------------------------------------------------------
# Independent reference maths
# ----------------------------------------------------------------------------

def ref_resampler(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int = 20) -> torch.Tensor:
    """Spec section 4, written with einsum: x [B, N, 512] -> [B, 16, 2048]."""
    def ln(t, prefix):
        return F.layer_norm(t, (t.shape[-1],), sd[prefix + ".weight"], sd[prefix + ".bias"], eps=1e-5)

    b = x.shape[0]
    x = torch.einsum("bnd,ed->bne", x, sd["proj_in.weight"]) + sd["proj_in.bias"]
    lat = sd["latents"].expand(b, -1, -1)
    depth = len({k.split(".")[1] for k in sd if k.startswith("layers.")})
    for i in range(depth):
        p = f"layers.{i}."
        xn, ln_lat = ln(x, p + "0.norm1"), ln(lat, p + "0.norm2")
        q = torch.einsum("bqd,ed->bqe", ln_lat, sd[p + "0.to_q.weight"])
        kv = torch.einsum("bnd,ed->bne", torch.cat([xn, ln_lat], dim=1), sd[p + "0.to_kv.weight"])
        k, v = kv.chunk(2, dim=-1)
        dh = q.shape[-1] // heads
        q, k, v = (t.reshape(b, t.shape[1], heads, dh) for t in (q, k, v))
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
        attn = torch.softmax(scores.float(), dim=-1)
        o = torch.einsum("bhqk,bkhd->bqhd", attn, v).reshape(b, -1, heads * dh)
        lat = torch.einsum("bqe,de->bqd", o, sd[p + "0.to_out.weight"]) + lat
        h = F.gelu(torch.einsum("bqd,ed->bqe", ln(lat, p + "1.0"), sd[p + "1.1.weight"]))
        lat = torch.einsum("bqe,de->bqd", h, sd[p + "1.3.weight"]) + lat
    out = torch.einsum("bqd,ed->bqe", lat, sd["proj_out.weight"]) + sd["proj_out.bias"]
    return F.layer_norm(out, (out.shape[-1],), sd["norm_out.weight"], sd["norm_out.bias"], eps=1e-5)


class RefState:
    """What the reference processors read during one UNet call."""

    def __init__(self) -> None:
        self.face: torch.Tensor | None = None  # [B, 16, 2048]
        self.weight = 0.0
        self.mask: torch.Tensor | None = None  # [1, H, W] pixels
        self.latent_hw = (LATENT, LATENT)
        self.calls = 0


class RefFaceAttnProcessor:
    """Decoupled cross-attention (spec 6): text SDPA + w * SDPA over to_k_ip/to_v_ip(face), before to_out."""

    def __init__(self, state: RefState, k_ip: torch.Tensor, v_ip: torch.Tensor) -> None:
        self.state, self.k_ip, self.v_ip = state, k_ip, v_ip

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        assert attn.group_norm is None and attn.spatial_norm is None and not attn.residual_connection
        assert attn.rescale_output_factor == 1.0 and attention_mask is None
        b, n, _ = hidden_states.shape
        heads = attn.heads

        def split(t):
            return t.reshape(b, t.shape[1], heads, t.shape[-1] // heads).transpose(1, 2)

        q = split(attn.to_q(hidden_states))
        text = F.scaled_dot_product_attention(q, split(attn.to_k(encoder_hidden_states)), split(attn.to_v(encoder_hidden_states)))
        st = self.state
        if st.face is not None and st.weight != 0:
            st.calls += 1
            face = F.scaled_dot_product_attention(q, split(st.face @ self.k_ip.T), split(st.face @ self.v_ip.T))
            if st.mask is not None:
                h0, w0 = st.latent_hw
                f = int(round(math.sqrt(h0 * w0 / n)))
                small = F.interpolate(st.mask[:, None], size=(h0 // f, w0 // f), mode="nearest")
                face = face * small.reshape(small.shape[0], 1, n, 1)
            text = text + st.weight * face
        out = text.transpose(1, 2).reshape(b, n, -1)
        return attn.to_out[1](attn.to_out[0](out))


@contextlib.contextmanager
def face_processors(unet, kv: dict[str, torch.Tensor]):
    """Install RefFaceAttnProcessor on every attn2, numbered by the spec (down, up, mid; attn2 odd)."""
    import tiny_models

    state = RefState()
    before = dict(unet.attn_processors)
    procs = dict(before)
    for n, (name, _) in tiny_models.diffusers_attn2_by_n(unet).items():
        procs[name] = RefFaceAttnProcessor(state, kv[f"{n}.to_k_ip.weight"], kv[f"{n}.to_v_ip.weight"])
    assert sum(isinstance(p, RefFaceAttnProcessor) for p in procs.values()) == 70
    unet.set_attn_processor(procs)
    try:
        yield state
    finally:
        unet.set_attn_processor(before)


# ----------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------

def make_inputs(seed: int = 7):
    g = torch.Generator().manual_seed(seed)
    inputs = {
        "text_c": torch.randn(1, 77, 2048, generator=g), "pooled_c": torch.randn(1, 1280, generator=g),
        "text_u": torch.randn(1, 77, 2048, generator=g), "pooled_u": torch.randn(1, 1280, generator=g),
        "noise": torch.randn(1, 4, LATENT, LATENT, generator=g),
        "embedding": torch.randn(512, generator=g) * 1.2,
        "hint": torch.rand(1, PIXELS, PIXELS, 3, generator=g),
    }
    mask = torch.zeros(1, PIXELS, PIXELS)
    mask[:, 21:93, 37:111] = 1.0
    mask[:, 50:60, 0:20] = 0.5
    inputs["mask"] = mask
    return inputs


def make_faces(embedding: torch.Tensor):
    from instantid.faces import FaceRecord, Faces

    kps = np.array([[22, 26], [42, 26], [32, 38], [24, 48], [40, 48]], dtype=np.float32)
    rec = FaceRecord(bbox=np.array([12, 12, 52, 56], dtype=np.float32), keypoints=kps,
                     embedding=embedding.numpy().astype(np.float32), score=0.99, source_size=(64, 64))
    return Faces(frames=(rec,))


def conditioning(text, pooled):
    return [[text.clone(), {"pooled_output": pooled.clone(), "width": PIXELS, "height": PIXELS}]]


@torch.no_grad()
def comfy_denoise(model, positive, negative, noise, sigma) -> dict:
    """One CFG model call at sigmas[0] through comfy.sample.sample_custom; returns x and the CFG'd denoised."""
    import comfy.sample
    import comfy.samplers

    record = {}

    def one_call(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        denoised = model_k(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))
        record["x"], record["denoised"] = x.clone(), denoised.clone()
        return denoised

    sigmas = torch.tensor([sigma, 0.0])
    latent = torch.zeros_like(noise)
    comfy.sample.sample_custom(model, noise, CFG, comfy.samplers.KSAMPLER(one_call), sigmas, positive, negative,
                               latent, disable_pbar=True, seed=0)
    return record


def sigma_of(model) -> float:
    return float(model.get_model_object("model_sampling").sigmas[TIMESTEP_INDEX])


_REF_CACHE: dict = {}


def reference_denoise(unet, controlnet, adapter_sd, x, sigma, timestep, inp, *, weight=0.0, strength=0.0, mask=None, hint=None):
    """Cached :func:`_reference_denoise` (every case starts from the same x; asserted by the key)."""
    key = (tuple(x.shape), float(x.sum()), float(x.abs().sum()), sigma, weight, strength,
           None if mask is None else float(mask.sum()), None if hint is None else float((hint * torch.arange(hint.numel()).reshape(hint.shape)).sum()))
    if key not in _REF_CACHE:
        _REF_CACHE[key] = _reference_denoise(unet, controlnet, adapter_sd, x, sigma, timestep, inp,
                                             weight=weight, strength=strength, mask=mask, hint=hint)
    return _REF_CACHE[key]


@torch.no_grad()
def reference_eps(unet, controlnet, adapter_sd, x_in, timestep, text, pooled, tokens, *, weight=0.0, strength=0.0,
                  hint=None, mask=None, size=(PIXELS, PIXELS)):
    """eps of the independent pipeline for rows that share one text, one set of face tokens and one hint.

    x_in: the scaled latent ``[B, 4, h, w]`` the UNet sees (x / sqrt(sigma^2 + 1)); text ``[1, 77, 2048]``,
    pooled ``[1, 1280]``, tokens ``[1, 16, 2048]`` (face or Resampler(zeros)) are broadcast to B rows.
    hint: IMAGE ``[1, 8h, 8w, 3]`` for IdentityNet (with strength); mask: ``[1, 8h, 8w]`` pixels.
    size: (height, width) of the whole image, SDXL's size conditioning.
    """
    b = x_in.shape[0]
    t = torch.tensor([timestep] * b)
    time_ids = torch.tensor([[size[0], size[1], 0, 0, size[0], size[1]]], dtype=torch.float32).expand(b, -1)
    text, pooled, tokens = text.expand(b, -1, -1), pooled.expand(b, -1), tokens.expand(b, -1, -1)
    added = {"text_embeds": pooled, "time_ids": time_ids}
    extra = {}
    if strength:
        down, mid = controlnet(x_in, t, encoder_hidden_states=tokens, controlnet_cond=hint.movedim(-1, 1).expand(b, -1, -1, -1),
                               conditioning_scale=strength, added_cond_kwargs=added, return_dict=False)
        if mask is not None:
            def m(r):
                return r * F.interpolate(mask[:, None], size=r.shape[-2:], mode="bilinear", align_corners=False)
            down, mid = [m(r) for r in down], m(mid)
        extra = {"down_block_additional_residuals": tuple(down), "mid_block_additional_residual": mid}
    with face_processors(unet, adapter_sd["ip_adapter"]) as state:
        state.weight, state.mask, state.face = weight, mask, tokens
        state.latent_hw = tuple(x_in.shape[-2:])
        eps = unet(x_in, t, encoder_hidden_states=text, added_cond_kwargs=added, return_dict=False, **extra)[0]
        return eps, state.calls


def reference_tokens(adapter_sd, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(face tokens, Resampler(zeros)) from the independent Resampler, each ``[1, 16, 2048]``."""
    return ref_resampler(adapter_sd["image_proj"], embedding[None, None]), ref_resampler(adapter_sd["image_proj"], torch.zeros(1, 1, 512))


@torch.no_grad()
def _reference_denoise(unet, controlnet, adapter_sd, x, sigma, timestep, inp, *, weight=0.0, strength=0.0, mask=None,
                       hint=None):
    """The independent pipeline: eps for the cond and uncond rows, CFG, denoised = x - sigma * eps."""
    tok_c, tok_u = reference_tokens(adapter_sd, inp["embedding"])
    x_in = x / math.sqrt(sigma**2 + 1.0)
    hint = inp["hint"] if hint is None else hint
    kwargs = dict(weight=weight, strength=strength, hint=hint, mask=mask, size=(x.shape[-2] * 8, x.shape[-1] * 8))
    eps_c, calls_c = reference_eps(unet, controlnet, adapter_sd, x_in, timestep, inp["text_c"], inp["pooled_c"], tok_c, **kwargs)
    eps_u, calls_u = reference_eps(unet, controlnet, adapter_sd, x_in, timestep, inp["text_u"], inp["pooled_u"], tok_u, **kwargs)
    e = eps_u + CFG * (eps_c - eps_u)
    return x - sigma * e, calls_c + calls_u


def compare(name: str, got: torch.Tensor, want: torch.Tensor, tol: float = TOL) -> float:
    assert torch.isfinite(got).all() and torch.isfinite(want).all()
    got, want = got.detach(), want.detach()
    diff = float((got - want).abs().max())
    scale = max(1.0, float(want.abs().max()))
    RESULTS[name] = diff
    log.warning("parity %-24s max|diff| = %.3e (output scale %.3f)", name, diff, scale)
    print(f"parity {name}: max abs diff {diff:.3e}, output max {scale:.3f}")
    assert diff <= tol * scale, f"{name}: max abs diff {diff:.3e} > {tol:g} x {scale:.3f}"
    return diff


@pytest.fixture(scope="module")
def setup(tiny_sdxl, tiny_identitynet, tiny_adapter, diffusers_unet, diffusers_controlnet, tiny_adapter_sd):
    inp = make_inputs()
    sigma = sigma_of(tiny_sdxl)
    timestep = float(tiny_sdxl.get_model_object("model_sampling").timestep(torch.tensor(sigma)))
    return dict(model=tiny_sdxl, cn=tiny_identitynet, adapter=tiny_adapter, unet=diffusers_unet,
                controlnet=diffusers_controlnet, sd=tiny_adapter_sd, inp=inp, sigma=sigma, timestep=timestep,
                faces=make_faces(inp["embedding"]))


def plain_run(s):
    inp = s["inp"]
    return comfy_denoise(s["model"], conditioning(inp["text_c"], inp["pooled_c"]),
                         conditioning(inp["text_u"], inp["pooled_u"]), inp["noise"], s["sigma"])


@pytest.fixture(scope="module")
def unpatched(setup):
    return plain_run(setup)


# ----------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------

def test_resampler_matches_independent_implementation(tiny_adapter, tiny_adapter_sd):
    import tiny_models

    sd = tiny_adapter_sd["image_proj"]
    assert len(sd) == 51 and sum(v.numel() for v in sd.values()) == tiny_models.RESAMPLER_PARAMS
    emb = torch.randn(3, 512, generator=torch.Generator().manual_seed(3)) * 1.5
    tokens = tiny_adapter.identity_tokens(emb)
    want = ref_resampler(sd, emb[:, None, :])
    assert tokens.cond.shape == (3, 16, 2048) and tokens.uncond.shape == (1, 16, 2048)
    compare("resampler", tokens.cond, want)
    neg = ref_resampler(sd, torch.zeros(1, 1, 512))
    compare("resampler(zeros)", tokens.uncond, neg)
    assert float(tokens.uncond.abs().max()) > 0.1, "negative tokens must be Resampler(zeros), not zeros"


def test_unpatched_comfy_matches_diffusers(setup, unpatched):
    """Sanity: the converted tiny UNet in ComfyUI equals the diffusers one (no InstantID at all)."""
    want, _ = reference_denoise(setup["unet"], setup["controlnet"], setup["sd"], unpatched["x"], setup["sigma"],
                                setup["timestep"], setup["inp"])
    compare("unpatched", unpatched["denoised"], want)


def test_attention_only(setup, unpatched):
    from instantid import pipeline

    s = setup
    tokens = pipeline.identity_tokens(s["adapter"], s["faces"], "average")
    model = pipeline.face_attention_model(s["model"], s["adapter"], tokens, 0.8, 0.0, 1.0, None)
    got = plain_run(dict(s, model=model))
    torch.testing.assert_close(got["x"], unpatched["x"], rtol=0, atol=0)
    want, calls = reference_denoise(s["unet"], s["controlnet"], s["sd"], got["x"], s["sigma"], s["timestep"], s["inp"], weight=0.8)
    assert calls == 140  # 70 layers x (cond, uncond)
    compare("attention_only", got["denoised"], want)
    assert float((got["denoised"] - unpatched["denoised"]).abs().max()) > 1e-3, "face attention had no effect"


def test_attention_only_with_mask(setup):
    from instantid import pipeline

    s = setup
    mask = s["inp"]["mask"]
    tokens = pipeline.identity_tokens(s["adapter"], s["faces"], "average")
    model = pipeline.face_attention_model(s["model"], s["adapter"], tokens, 0.8, 0.0, 1.0, mask)
    got = plain_run(dict(s, model=model))
    want, _ = reference_denoise(s["unet"], s["controlnet"], s["sd"], got["x"], s["sigma"], s["timestep"], s["inp"],
                                weight=0.8, mask=mask)
    compare("attention_only_mask", got["denoised"], want)


def _full(s, ip_weight, strength, start=0.0, end=1.0, mask=None, hint="given", noise=None, positive_options=None, spy=None):
    from instantid import pipeline

    inp = s["inp"]
    positive = conditioning(inp["text_c"], inp["pooled_c"])
    positive[0][1].update(positive_options or {})
    model, pos, neg = pipeline.apply_instantid(
        s["model"], positive, conditioning(inp["text_u"], inp["pooled_u"]),
        s["adapter"], s["cn"], s["faces"], inp["hint"] if hint == "given" else hint, ip_weight, strength, start, end, mask)
    if spy is not None:
        model = model.clone()
        model.set_model_unet_function_wrapper(spy)
    return comfy_denoise(model, pos, neg, inp["noise"] if noise is None else noise, s["sigma"])


def test_full_attention_and_identitynet(setup, unpatched):
    s = setup
    got = _full(s, 0.8, 0.8)
    want, _ = reference_denoise(s["unet"], s["controlnet"], s["sd"], got["x"], s["sigma"], s["timestep"], s["inp"],
                                weight=0.8, strength=0.8)
    compare("full", got["denoised"], want)
    attn_only, _ = reference_denoise(s["unet"], s["controlnet"], s["sd"], got["x"], s["sigma"], s["timestep"], s["inp"], weight=0.8)
    assert float((want - attn_only).abs().max()) > 1e-3, "IdentityNet had no effect in the reference"


def test_full_with_mask(setup):
    s = setup
    mask = s["inp"]["mask"]
    got = _full(s, 0.8, 0.8, mask=mask)
    want, _ = reference_denoise(s["unet"], s["controlnet"], s["sd"], got["x"], s["sigma"], s["timestep"], s["inp"],
                                weight=0.8, strength=0.8, mask=mask)
    compare("full_mask", got["denoised"], want)
    unmasked, _ = reference_denoise(s["unet"], s["controlnet"], s["sd"], got["x"], s["sigma"], s["timestep"], s["inp"],
                                    weight=0.8, strength=0.8)
    assert float((want - unmasked).abs().max()) > 1e-3, "the mask changed nothing in the reference"


def test_weight_zero_equals_unpatched(setup, unpatched):
    got = _full(setup, 0.0, 0.0)
    compare("weight_0", got["denoised"], unpatched["denoised"], tol=1e-6)


def test_window_excluding_sigma_equals_unpatched(setup, unpatched):
    s = setup
    ms = s["model"].get_model_object("model_sampling")
    start = 0.85  # the window [0.85, 1.0] of the schedule: sigmas far below the one sampled here
    assert float(ms.percent_to_sigma(start)) < s["sigma"]
    got = _full(s, 0.8, 0.8, start=start, end=1.0)
    # Not bit-exact: with IdentityNet's (inactive) control on the conditioning ComfyUI may batch the
    # rows differently, which changes float rounding; relative 1e-5 still proves nothing was injected.
    compare("window_outside", got["denoised"], unpatched["denoised"])


def test_exactly_70_attn2_replacements_fire_per_forward(setup):
    from instantid import pipeline
    from instantid.layers import SDXL_ATTN2_KEYS

    s = setup
    tokens = pipeline.identity_tokens(s["adapter"], s["faces"], "average")
    patched = pipeline.face_attention_model(s["model"], s["adapter"], tokens, 0.8, 0.0, 1.0, None)
    attn2 = patched.model_options["transformer_options"]["patches_replace"]["attn2"]
    assert set(attn2) == set(SDXL_ATTN2_KEYS) and len(attn2) == 70
    assert all(("middle", 0, i) in attn2 for i in range(10))
    assert not any(k[0] == "middle" and k[1] != 0 for k in attn2)

    counts: dict = {}
    forwards = []

    def counting(fn, key):
        def wrapped(q, k, v, extra_options):
            counts[key] = counts.get(key, 0) + 1
            return fn(q, k, v, extra_options)
        return wrapped

    def unet_wrapper(apply_model, args):
        forwards.append(args["input"].shape[0])
        return apply_model(args["input"], args["timestep"], **args["c"])

    counted = patched.clone()
    for key, fn in attn2.items():
        counted.set_model_attn2_replace(counting(fn, key), *key)
    counted.set_model_unet_function_wrapper(unet_wrapper)
    run = plain_run(dict(s, model=counted))
    assert torch.isfinite(run["denoised"]).all()
    assert forwards, "the UNet never ran"
    assert set(counts) == set(SDXL_ATTN2_KEYS)
    assert all(c == len(forwards) for c in counts.values()), counts
    assert sum(counts.values()) == 70 * len(forwards)
    assert all(counts[("middle", 0, i)] == len(forwards) for i in range(10))


def test_full_with_latent_batch_of_two(setup):
    """Two latents: each CFG chunk has 2 rows; face, mask and hint apply to both rows of the right chunk."""
    s = setup
    mask = s["inp"]["mask"]
    noise = torch.cat([s["inp"]["noise"], torch.randn(1, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(99))])
    got = _full(s, 0.8, 0.8, mask=mask, noise=noise)
    assert got["x"].shape[0] == 2
    want, _ = reference_denoise(s["unet"], s["controlnet"], s["sd"], got["x"], s["sigma"], s["timestep"], s["inp"],
                                weight=0.8, strength=0.8, mask=mask)
    compare("full_batch2", got["denoised"], want)
    assert float((want[0] - want[1]).abs().max()) > 1e-3, "the two latents should differ"


def test_full_with_cond_first_batch_order(setup):
    """ComfyUI batches [uncond, cond] ([1, 0]) by default; a 'default' positive cond (hook nodes' SetDefault) makes it
    [0, 1]. Rows must follow the order, not assume it."""
    s = setup
    seen = []

    def spy(apply_model, args):
        seen.append(list(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    mask = s["inp"]["mask"]
    got = _full(s, 0.8, 0.8, mask=mask, positive_options={"default": True}, spy=spy)
    assert seen == [[0, 1]], seen
    want, _ = reference_denoise(s["unet"], s["controlnet"], s["sd"], got["x"], s["sigma"], s["timestep"], s["inp"],
                                weight=0.8, strength=0.8, mask=mask)
    compare("full_order_0_1", got["denoised"], want)


def test_full_with_keypoints_drawn_by_the_pack(setup):
    """No keypoint image: the pack draws the identity face's keypoints at the generation size. The reference draws
    them with the independent implementation of spec section 3 (tests/test_face_keypoints.py)."""
    from test_face_keypoints import spec_hint

    s = setup
    record = s["faces"].frames[0]
    scale = PIXELS / record.source_size[0]  # same aspect: 'cover' is a plain resize
    drawn = spec_hint(np.asarray(record.keypoints, np.float64) * scale, PIXELS, PIXELS)
    hint = torch.from_numpy(drawn.astype(np.float32) / 255.0)[None]
    assert float(hint.max()) == 1.0
    got = _full(s, 0.8, 0.8, hint=None)
    want, _ = reference_denoise(s["unet"], s["controlnet"], s["sd"], got["x"], s["sigma"], s["timestep"], s["inp"],
                                weight=0.8, strength=0.8, hint=hint)
    compare("full_drawn_keypoints", got["denoised"], want)
    given, _ = reference_denoise(s["unet"], s["controlnet"], s["sd"], got["x"], s["sigma"], s["timestep"], s["inp"],
                                 weight=0.8, strength=0.8)
    assert float((want - given).abs().max()) > 1e-3, "the drawn hint made no difference in the reference"
