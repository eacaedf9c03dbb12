"""Several identities in one step (instantid.group), checked where the identities act: in each attn2 layer and in
each IdentityNet residual, during one real CFG denoising call through ComfyUI's sampling code with tiny models.

The tiny models make face similarity meaningless, so the claims are about tensors:

- attention: the group's attn2 output minus what the same layer gives with one identity fewer is that identity's
  contribution; it is exactly zero wherever its mask, nearest-downsampled to the layer's token grid, is zero;
- IdentityNet: each identity's residuals are exactly zero on every cell the bilinear downsampling of its mask reads
  only zeros for (the rule is written out independently in ``bilinear_taps``);
- inside its own region an identity gets exactly what it gets alone (the linear parts: attention outputs and
  residuals); three identities; the overlap rule; IdentityNet runs once per identity.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from model_fixtures import *  # noqa: F401,F403
from test_parity import comfy_denoise

from instantid import group, regions
from instantid.faces import FaceRecord, Faces
from instantid.keypoints import keypoint_images

W, H = 256, 128  # pixels; latent 32 x 16, attention grids 16 x 8 and 8 x 4 in the tiny SDXL
LATENT_W, LATENT_H = W // 8, H // 8
SIGMA = 3.0


# ---------------------------------------------------------------- inputs


def face_at(x, y, w, h, seed) -> FaceRecord:
    """A face at canvas pixels (x, y, w, h) of a W x H photo, with its own random identity."""
    kps = np.array([x, y], np.float32) + np.array([[0.3, 0.38], [0.7, 0.38], [0.5, 0.58], [0.35, 0.78], [0.65, 0.78]], np.float32) * [w, h]
    emb = torch.randn(512, generator=torch.Generator().manual_seed(seed)) * 1.2
    return FaceRecord(bbox=np.array([x, y, x + w, y + h], np.float32), keypoints=kps, embedding=emb.numpy(), score=0.9,
                      source_size=(W, H))


def person(face: FaceRecord, mask: torch.Tensor) -> regions.Person:
    faces = Faces(frames=(face,))
    return regions.Person(identity=faces, face_number=0, pose=face, region=regions.face_region(face, W, H),
                          keypoint_image=keypoint_images(faces, W, H), mask=mask)


def layout(*people: regions.Person) -> regions.GroupLayout:
    return regions.GroupLayout(width=W, height=H, people=tuple(people))


def halves():
    left, right = torch.zeros(H, W), torch.zeros(H, W)
    left[:, : W // 2] = 1.0
    right[:, W // 2 :] = 1.0
    return left, right


@pytest.fixture(scope="module")
def setup(tiny_sdxl, tiny_identitynet, tiny_adapter):
    g = torch.Generator().manual_seed(11)
    opts = {"width": W, "height": H}
    positive = [[torch.randn(1, 77, 2048, generator=g), {"pooled_output": torch.randn(1, 1280, generator=g), **opts}]]
    negative = [[torch.randn(1, 77, 2048, generator=g), {"pooled_output": torch.randn(1, 1280, generator=g), **opts}]]
    noise = torch.randn(1, 4, LATENT_H, LATENT_W, generator=g)
    a, b = face_at(40, 30, 60, 70, seed=1), face_at(160, 30, 60, 70, seed=2)
    return dict(model=tiny_sdxl, cn=tiny_identitynet, adapter=tiny_adapter, positive=positive, negative=negative, noise=noise,
                a=a, b=b)


def apply(s, lay, ip_weight=0.8, cn_strength=0.8):
    return group.apply_group(s["model"], s["positive"], s["negative"], s["adapter"], s["cn"], lay, ip_weight, cn_strength)


# ---------------------------------------------------------------- instruments


def attn2_patches(model) -> dict:
    return model.model_options["transformer_options"]["patches_replace"]["attn2"]


def capture(s, model, positive, negative) -> tuple[dict, dict]:
    """What the first model call of one CFG denoising step saw, instrumented without changing it:
    attention: key -> (q, k, v, extra_options, output) of each patched attn2 layer;
    control: the ControlNet residuals the UNet received, {'input': [...], 'middle': [...], 'output': [...]}."""
    attention: dict = {}
    control: dict = {}

    def recording(fn, key):
        def wrapped(q, k, v, extra_options):
            out = fn(q, k, v, extra_options)
            attention.setdefault(key, (q.clone(), k.clone(), v.clone(), dict(extra_options), out.clone()))
            return out
        return wrapped

    def unet_wrapper(apply_model, args):
        if not control and args["c"].get("control") is not None:
            # Copied: the UNet pops the residuals off these lists as it uses them.
            control.update({name: list(values) for name, values in args["c"]["control"].items()})
        return apply_model(args["input"], args["timestep"], **args["c"])

    rec = model.clone()
    for key, fn in attn2_patches(model).items():
        rec.set_model_attn2_replace(recording(fn, key), *key)
    rec.set_model_unet_function_wrapper(unet_wrapper)
    comfy_denoise(rec, positive, negative, s["noise"], SIGMA)
    return attention, control


def text_attention(q, k, v, extra_options):
    from comfy.ldm.modules.attention import optimized_attention

    return optimized_attention(q, k, v, extra_options["n_heads"])


def token_grid(tokens: int) -> tuple[int, int]:
    f = int(round(math.sqrt(LATENT_H * LATENT_W / tokens)))
    return LATENT_H // f, LATENT_W // f


def nearest_mask(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The mask value each attention token sees: PyTorch 'nearest' reads source pixel floor(i * in / out), per axis."""
    gh, gw = grid
    rows = np.floor(np.arange(gh) * (H / gh)).astype(int)
    cols = np.floor(np.arange(gw) * (W / gw)).astype(int)
    return mask[rows][:, cols].reshape(-1)


def bilinear_taps(n_in: int, n_out: int) -> list[list[int]]:
    """Source pixels that bilinear resizing (align_corners False, no antialias) reads with non-zero weight for each output
    cell: x = (i + 0.5) * n_in / n_out - 0.5, clamped at 0; pixels floor(x) and floor(x) + 1 (clamped), the second only if
    x is not a whole number. For a downscale by s that is the one or two pixels nearest the cell's centre."""
    taps = []
    for i in range(n_out):
        x = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        x0 = int(math.floor(x))
        taps.append([x0] if x == x0 else [x0, min(x0 + 1, n_in - 1)])
    return taps


def outside(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Cells of a residual grid where the bilinearly resized mask is zero: every pixel it reads there is zero."""
    ty, tx = bilinear_taps(H, grid[0]), bilinear_taps(W, grid[1])
    out = torch.zeros(grid, dtype=torch.bool)
    for i, rows in enumerate(ty):
        for j, cols in enumerate(tx):
            out[i, j] = bool((mask[rows][:, cols] == 0).all())
    return out


def residuals(control: dict) -> list[torch.Tensor]:
    return [r for name in ("input", "middle", "output") for r in control.get(name, []) if r is not None]


# ---------------------------------------------------------------- attention


def test_attention_contributions_stay_in_their_half_at_every_resolution(setup):
    s = setup
    left, right = halves()
    pa, pb = person(s["a"], left), person(s["b"], right)
    both, pos, neg = apply(s, layout(pa, pb))
    only_a, only_b = apply(s, layout(pa))[0], apply(s, layout(pb))[0]
    alone_a = apply(s, layout(person(s["a"], torch.ones(H, W))))[0]  # A with no limit at all
    alone_b = apply(s, layout(person(s["b"], torch.ones(H, W))))[0]
    seen, _ = capture(s, both, pos, neg)
    assert len(seen) == 70
    grids = set()
    for key, (q, k, v, opts, out) in seen.items():
        grid = token_grid(q.shape[1])
        grids.add(grid)
        in_left = nearest_mask(left, grid) == 1
        text = text_attention(q, k, v, opts)
        a_out = attn2_patches(only_a)[key](q, k, v, opts)
        b_out = attn2_patches(only_b)[key](q, k, v, opts)
        contrib_a, contrib_b = a_out - text, out - a_out  # A alone; what B adds on top of A
        contrib_b_alone, contrib_a_on_b = b_out - text, out - b_out
        assert float(contrib_a[:, ~in_left].abs().max()) == 0.0, f"{key}: A leaks into the right half"
        assert float(contrib_b[:, in_left].abs().max()) == 0.0, f"{key}: B leaks into the left half"
        assert float(contrib_b_alone[:, in_left].abs().max()) == 0.0 and float(contrib_a_on_b[:, ~in_left].abs().max()) == 0.0
        assert float(contrib_a[:, in_left].abs().max()) > 1e-4 and float(contrib_b[:, ~in_left].abs().max()) > 1e-4
        # Inside its own half each identity gets exactly what it gets alone, unmasked.
        assert torch.equal(out[:, in_left], attn2_patches(alone_a)[key](q, k, v, opts)[:, in_left])
        assert torch.equal(out[:, ~in_left], attn2_patches(alone_b)[key](q, k, v, opts)[:, ~in_left])
    assert grids == {(8, 16), (4, 8)}, grids  # both attention resolutions of the SDXL topology (latent /2 and /4)


# ---------------------------------------------------------------- IdentityNet


def test_identitynet_residuals_are_zero_outside_each_mask(setup):
    s = setup
    # Soft, irregular masks: feathered ellipses that overlap, split by the nearest rule.
    ra, rb = regions.face_region(s["a"], W, H, grow=0.8), regions.face_region(s["b"], W, H, grow=0.8)
    ma, mb = regions.people_masks([ra, rb], W, H, feather=12, overlap="nearest")
    assert float((ma > 0).float().mean()) > 0.1 and float(ma.max()) > 0 and bool(((ma > 0) & (ma < 1)).any())
    pa, pb = person(s["a"], ma), person(s["b"], mb)
    both = capture(s, *apply(s, layout(pa, pb)))[1]
    only_a, only_b = (capture(s, *apply(s, layout(p)))[1] for p in (pa, pb))
    alone_a = capture(s, *apply(s, layout(person(s["a"], torch.ones(H, W)))))[1]
    sizes = set()
    for r_both, r_a, r_b, r_alone in zip(residuals(both), residuals(only_a), residuals(only_b), residuals(alone_a), strict=True):
        grid = tuple(r_both.shape[-2:])
        sizes.add(grid)
        out_a, out_b = outside(ma, grid), outside(mb, grid)
        assert bool(out_a.any()) and bool((~out_a).any())
        assert float(r_a[..., out_a].abs().max()) == 0.0, f"{grid}: A's IdentityNet acts outside its mask"
        assert float(r_b[..., out_b].abs().max()) == 0.0, f"{grid}: B's IdentityNet acts outside its mask"
        assert float(r_a[..., ~out_a].abs().max()) > 1e-5
        # The group's residual is the sum; where only one identity reaches, it is that identity's exactly.
        torch.testing.assert_close(r_both, r_a + r_b, rtol=1e-6, atol=1e-7)
        assert torch.equal(r_both[..., out_b], r_a[..., out_b]) and torch.equal(r_both[..., out_a], r_b[..., out_a])
        # Where A's mask reads only ones, A's residual is what A's IdentityNet gives alone, unmasked.
        inner = torch.tensor([[bool((ma[ys][:, xs] == 1).all()) for xs in bilinear_taps(W, grid[1])]
                              for ys in bilinear_taps(H, grid[0])])
        if inner.any():
            torch.testing.assert_close(r_both[..., inner & out_b], r_alone[..., inner & out_b], rtol=1e-6, atol=0)
    assert {(16, 32), (8, 16), (4, 8)} <= sizes


def test_identitynet_runs_once_per_identity_with_its_own_tokens(setup):
    s = setup
    left, right = halves()
    calls = []
    hook = s["cn"].control_model.register_forward_hook(lambda mod, args, kwargs, out: calls.append(kwargs["context"]), with_kwargs=True)
    try:
        for people in ([person(s["a"], left)], [person(s["a"], left), person(s["b"], right)]):
            calls.clear()
            capture(s, *apply(s, layout(*people)))
            assert len(calls) == len(people), f"{len(people)} identities ran IdentityNet {len(calls)} times in one model call"
    finally:
        hook.remove()
    assert not torch.equal(calls[0], calls[1]), "both IdentityNet passes saw the same face tokens"


# ---------------------------------------------------------------- three people, overlaps


def test_three_identities(setup, tiny_adapter):
    s = setup
    faces = [face_at(10, 30, 50, 60, seed=1), face_at(100, 30, 50, 60, seed=2), face_at(190, 30, 50, 60, seed=3)]
    lay = regions.build_layout(faces, Faces(frames=tuple(faces)), W, H, "cover", "left_to_right", shape="ellipse", grow=0.6,
                               feather=8)
    assert len(lay.people) == 3
    model, pos, neg = apply(s, lay)
    passes = []
    hook = s["cn"].control_model.register_forward_hook(lambda *args: passes.append(1))
    try:
        seen, control = capture(s, model, pos, neg)
    finally:
        hook.remove()
    assert len(passes) == 3, f"three identities ran IdentityNet {len(passes)} times in one model call"
    singles = [apply(s, layout(p))[0] for p in lay.people]
    for key, (q, k, v, opts, out) in seen.items():
        text = text_attention(q, k, v, opts)
        total = text.clone()
        for p, single in zip(lay.people, singles, strict=True):
            contrib = attn2_patches(single)[key](q, k, v, opts) - text
            off = nearest_mask(p.mask, token_grid(q.shape[1])) == 0
            assert float(contrib[:, off].abs().max()) == 0.0, f"{key}: identity leaks outside its region"
            total = total + contrib
        torch.testing.assert_close(out, total, rtol=1e-5, atol=1e-6)
    for r in residuals(control):
        off_all = outside(lay.masks().amax(0), tuple(r.shape[-2:]))
        assert float(r[..., off_all].abs().max()) == 0.0


def test_overlap_rule_at_the_attention(setup):
    s = setup
    ra, rb = (regions.Region(cx=cx, cy=64.0, half_w=70.0, half_h=50.0, shape="box") for cx in (100.0, 156.0))
    for overlap in ("nearest", "share"):
        ma, mb = regions.people_masks([ra, rb], W, H, overlap=overlap)
        model, pos, neg = apply(s, layout(person(s["a"], ma), person(s["b"], mb)))
        only_a = apply(s, layout(person(s["a"], ma)))[0]
        key = ("input", 4, 0)
        q, k, v, opts, out = capture(s, model, pos, neg)[0][key]
        a_out = attn2_patches(only_a)[key](q, k, v, opts)
        acts_a = (a_out - text_attention(q, k, v, opts)).abs().amax(dim=(0, 2)) > 0
        acts_b = (out - a_out).abs().amax(dim=(0, 2)) > 0
        grid = token_grid(q.shape[1])
        both = (nearest_mask(ma, grid) > 0) & (nearest_mask(mb, grid) > 0)
        if overlap == "nearest":
            assert not bool((acts_a & acts_b).any()), "nearest: two identities act on the same token"
            assert not bool(both.any())
        else:
            assert bool(both.any()) and bool((acts_a & acts_b)[both].all()), "share: both identities act in the overlap"


def test_group_node_samples(setup):
    from e2e_models import run_v3

    s = setup
    left, right = halves()
    lay = layout(person(s["a"], left), person(s["b"], right))
    model, pos, neg = run_v3("InstantIDApplyGroup", model=s["model"], positive=s["positive"], negative=s["negative"],
                             instantid=s["adapter"], control_net=s["cn"], group=lay, ip_weight=0.8, cn_strength=0.8,
                             start_at=0.0, end_at=1.0)
    assert model is not s["model"] and "control" not in s["positive"][0][1]
    plain = comfy_denoise(s["model"], s["positive"], s["negative"], s["noise"], SIGMA)["denoised"]
    got = comfy_denoise(model, pos, neg, s["noise"], SIGMA)["denoised"]
    assert torch.isfinite(got).all() and float((got - plain).abs().max()) > 1e-3


def test_wrong_model_patches_nothing(setup, tiny_sd15, tiny_sd15_controlnet):
    from instantid.errors import ControlNetMismatchError, ModelMismatchError

    s = setup
    lay = layout(person(s["a"], halves()[0]))
    with pytest.raises(ModelMismatchError, match="SDXL models only"):
        group.apply_group(tiny_sd15, s["positive"], s["negative"], s["adapter"], s["cn"], lay, 0.8, 0.8)
    with pytest.raises(ControlNetMismatchError, match="SD1.5"):
        group.apply_group(s["model"], s["positive"], s["negative"], s["adapter"], tiny_sd15_controlnet, lay, 0.8, 0.8)
    assert "control" not in s["positive"][0][1]
