"""InstantID in a graph with other packs: a foreign attn2 pack (both protocols), a foreign ControlNet, cached upstreams.

Runs in-process through the real nodes (see conftest.py); the foreign pack is tests/foreign_pack.py.
"""

from __future__ import annotations

import pytest
import torch
from e2e_models import load_graph, run_v3
from foreign_pack import (
    CALLS,
    ContextSpy,
    ForeignAttn2Patch,
    PlainForeignPatch,
    apply_depth_controlnet,
    apply_foreign,
    attn2_patches,
    extra_attention,
    extra_tokens,
    same,
    snapshot,
)

import nodes as comfy_nodes

N = comfy_nodes.NODE_CLASS_MAPPINGS
SIZE = 64


_v3 = run_v3


@pytest.fixture(scope="module")
def g(base_dir):
    graph = load_graph(str(base_dir), SIZE, seed=11)
    # A second, separate copy of the tiny SDXL ControlNet plays a depth ControlNet from another pack.
    depth = N["ControlNetLoader"]().load_controlnet(graph["models"].controlnet_name)[0]
    assert depth.control_model is not graph["control_net"].control_model
    depth_hint = torch.rand(1, SIZE, SIZE, 3, generator=graph["generator"])
    return dict(graph, identitynet=graph["control_net"], depth=depth, depth_hint=depth_hint)


def _attention(g, model, weight=0.8):
    return _v3("InstantIDApplyAttention", model=model, instantid=g["adapter"], faces=g["faces"], weight=weight,
               start_at=0.0, end_at=1.0, combine="average")[0]


def _apply(g, model, positive=None, negative=None):
    return _v3("InstantIDApply", model=model, positive=positive or g["positive"], negative=negative or g["negative"],
               instantid=g["adapter"], control_net=g["identitynet"], faces=g["faces"], ip_weight=0.8, cn_strength=0.8,
               start_at=0.0, end_at=1.0, combine="average", placement="cover")


def _sample(g, model, positive=None, negative=None, seed=5, steps=2, size=SIZE):
    latent = N["EmptyLatentImage"]().generate(size, size, 1)[0]
    return N["KSampler"]().sample(model, seed, steps, 5.0, "euler", "normal", positive or g["positive"],
                                  negative or g["negative"], latent)[0]["samples"]


def _differs(a, b, eps=1e-4) -> bool:
    return float((a - b).abs().max()) > eps


# ----------------------------------------------------------------------------
# (a) a foreign attn2 pack on the same 70 keys
# ----------------------------------------------------------------------------

KEY = ("middle", 0, 3)  # 128 wide, 2 heads in the tiny SDXL


def _layer_inputs():
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 16, 128, generator=gen)
    k = torch.randn(2, 77, 128, generator=gen)
    v = torch.randn(2, 77, 128, generator=gen)
    extra = {"n_heads": 2, "cond_or_uncond": [1, 0], "sigmas": torch.tensor([5.0, 5.0]),
             "original_shape": [2, 4, 16, 16], "block": ("middle", 0), "block_index": 3}
    return q, k, v, extra


@pytest.mark.parametrize("with_add", [True, False], ids=["with_add", "without_add"])
def test_layer_output_is_text_plus_face_plus_foreign(g, with_add):
    """At one layer, the composed patch equals the reference sum: text + w*face + foreign (foreign applied first)."""
    q, k, v, extra = _layer_inputs()
    ours_alone = attn2_patches(_attention(g, g["unet"]))[KEY](q, k, v, extra)  # text + w * face
    k_extra, v_extra = extra_tokens(128, 1, KEY)
    foreign = extra_attention(None, q, k, v, extra, k_extra, v_extra, 0.5)
    composed = attn2_patches(_attention(g, apply_foreign(g["unet"], with_add=with_add)))[KEY](q, k, v, extra)
    torch.testing.assert_close(composed, ours_alone + foreign, atol=1e-5, rtol=1e-5)
    assert _differs(composed, ours_alone) and _differs(foreign, 0 * foreign)


def test_layer_output_same_when_the_add_pack_comes_after(g):
    """IP-Adapter-style pack applied AFTER InstantID: it calls .add on our patch; the sum is the same as the other order."""
    q, k, v, extra = _layer_inputs()
    before = attn2_patches(_attention(g, apply_foreign(g["unet"])))[KEY](q, k, v, extra)
    after = attn2_patches(apply_foreign(_attention(g, g["unet"])))[KEY](q, k, v, extra)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_sampling_with_both_packs_in_either_order(g):
    plain = _sample(g, g["unet"])
    ours = _sample(g, _attention(g, g["unet"]))
    foreign = _sample(g, apply_foreign(g["unet"]))
    foreign_then_ours = _sample(g, _attention(g, apply_foreign(g["unet"])))
    ours_then_foreign = _sample(g, apply_foreign(_attention(g, g["unet"])))
    gap = float((ours_then_foreign - foreign_then_ours).abs().max())
    for alone in (plain, ours, foreign):
        for both in (foreign_then_ours, ours_then_foreign):
            # Each contribution moves the result far more than the order of the two does.
            assert float((both - alone).abs().max()) > 20 * gap + 1e-3
    # Addition commutes: only float summation order differs between the two orders (amplified by 2 random-net steps).
    assert gap < 1e-2 * float(foreign_then_ours.abs().max()), gap


def test_foreign_patch_objects_and_upstream_options_are_not_mutated(g):
    unet_before = snapshot(g["unet"].model_options)
    foreign_model = apply_foreign(g["unet"])
    foreign_before = snapshot(foreign_model.model_options)
    foreign_objects = dict(attn2_patches(foreign_model))
    model, positive, negative = _apply(g, foreign_model)
    _sample(g, model, positive, negative, steps=1)
    ours_before = snapshot(model.model_options)
    # The mutating protocol on top of ours: it .add()s to what it finds, which must be its own clone's copy.
    stacked = apply_foreign(model, weight=0.3, seed=2)
    _sample(g, stacked, positive, negative, steps=1)
    assert same(snapshot(foreign_model.model_options), foreign_before), "the foreign pack's model_options changed"
    assert same(snapshot(model.model_options), ours_before), "InstantID's output model changed under a later .add()"
    assert same(snapshot(g["unet"].model_options), unet_before)
    assert attn2_patches(foreign_model) == foreign_objects
    assert all(len(p.callback) == 1 for p in foreign_objects.values())
    ours_at_key = attn2_patches(stacked)[KEY]
    assert isinstance(ours_at_key.previous, ForeignAttn2Patch) and ours_at_key.previous is not foreign_objects[KEY]


def test_plain_foreign_pack_after_instantid_replaces_it_without_crashing(g):
    """A pack that overwrites keys (no .add, no composing) wins at those keys: documented, and no crash."""
    replaced = apply_foreign(_attention(g, g["unet"]), with_add=False)
    assert all(isinstance(p, PlainForeignPatch) for p in attn2_patches(replaced).values())
    assert torch.equal(_sample(g, replaced), _sample(g, apply_foreign(g["unet"], with_add=False)))


def test_subset_of_keys_composes_key_by_key(g):
    keys = [("input", 4, 0), ("middle", 0, 9), ("output", 2, 1)]
    model = _attention(g, apply_foreign(g["unet"], keys=keys))
    patches = attn2_patches(model)
    assert len(patches) == 70
    assert {k for k, p in patches.items() if p.previous is not None} == set(keys)


# ----------------------------------------------------------------------------
# (b) a foreign ControlNet before and after IdentityNet keeps the text context
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["depth_first", "identitynet_first"])
def test_foreign_controlnet_sees_text_and_identitynet_sees_face_tokens(g, order):
    pos, neg = g["positive"], g["negative"]
    if order == "depth_first":
        pos, neg = apply_depth_controlnet(pos, neg, g["depth"], g["depth_hint"])
        model, pos, neg = _apply(g, g["unet"], pos, neg)
    else:
        model, pos, neg = _apply(g, g["unet"], pos, neg)
        pos, neg = apply_depth_controlnet(pos, neg, g["depth"], g["depth_hint"])
    assert all("cross_attn_controlnet" not in d for _, d in pos + neg)
    with ContextSpy(g["depth"]) as depth_spy, ContextSpy(g["identitynet"]) as id_spy:
        _sample(g, model, pos, neg, steps=1)
    assert depth_spy.contexts and id_spy.contexts
    assert depth_spy.token_counts() == {77}, "the foreign ControlNet did not get the text context"
    assert id_spy.token_counts() == {16}, "IdentityNet did not get the 16 face tokens"
    text_rows = [g["positive"][0][0][0], g["negative"][0][0][0]]
    for context in depth_spy.contexts:
        for row in context:
            assert any(torch.equal(row, t) for t in text_rows)


# ----------------------------------------------------------------------------
# (c) cached upstream: the same objects run again and again
# ----------------------------------------------------------------------------

def test_ten_reruns_on_a_cached_upstream_are_identical_and_do_not_accumulate(g):
    from instantid.attention import FaceAttentionPatch

    upstream = apply_foreign(g["unet"])  # what ComfyUI's cache keeps and hands out again on every run
    upstream_before = snapshot(upstream.model_options)
    face_calls = []
    original = FaceAttentionPatch.__call__

    def counting(self, q, k, v, extra_options):
        face_calls.append(self.key)
        return original(self, q, k, v, extra_options)

    results, per_run = [], []
    FaceAttentionPatch.__call__ = counting
    try:
        for run in range(10):
            face_calls.clear()
            CALLS.clear()
            model, positive, negative = _apply(g, upstream)
            stacked = apply_foreign(model, weight=0.3, seed=2)  # a later .add() pack, as in IPAdapter-after-InstantID
            results.append(_sample(g, stacked, positive, negative, seed=5 + run % 2, steps=1))
            per_run.append((len(face_calls), CALLS["extra"]))
    finally:
        FaceAttentionPatch.__call__ = original
    assert per_run == [(70, 140)] * 10, per_run  # one forward: 70 face layers, 2 foreign contributions each
    assert all(torch.equal(r, results[run % 2]) for run, r in enumerate(results))
    assert _differs(results[0], results[1])
    assert same(snapshot(upstream.model_options), upstream_before)


# ----------------------------------------------------------------------------
# (d) an attention-backend pack (SageAttention-style override)
# ----------------------------------------------------------------------------

def _with_override(model, override):
    """What an attention-backend pack does in ComfyUI 0.3.75: put ``optimized_attention_override`` in the model's
    transformer_options; comfy/ldm/modules/attention.py (wrap_attn) then hands it every attention call that
    receives those transformer_options."""
    m = model.clone()
    m.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
    return m


def test_attention_backend_override_runs_for_text_and_face_branch_in_all_70_layers(g):
    import collections

    keys = collections.Counter()

    def counting(func, *args, **kwargs):
        keys[int(args[1].shape[1])] += 1  # key tokens: 77 text, 16 face, else self-attention
        return func(*args, **kwargs)

    forwards = []

    def unet_wrapper(apply_model, args):
        forwards.append(args["input"].shape[0])
        return apply_model(args["input"], args["timestep"], **args["c"])

    model, positive, negative = _apply(g, g["unet"])
    counted = _with_override(model, counting)
    counted.set_model_unet_function_wrapper(unet_wrapper)
    # 96 px: token grids of 144, 36 and 9, so 16 keys can only be the face tokens.
    _sample(g, counted, positive, negative, steps=1, size=96)
    assert len(forwards) == 1
    assert keys[77] == 70 and keys[16] == 70, dict(keys)


def test_override_that_drops_the_face_branch_equals_weight_zero(g):
    """The override really computes the face branch: one that returns zeros for it gives the ip_weight 0 image."""
    def no_face(func, *args, **kwargs):
        out = func(*args, **kwargs)
        return out * 0 if args[1].shape[1] == 16 else out

    def passthrough(func, *args, **kwargs):
        return func(*args, **kwargs)

    zero_model = _attention(g, g["unet"], weight=0.0)
    dropped = _sample(g, _with_override(_attention(g, g["unet"]), no_face), size=96)
    assert torch.equal(dropped, _sample(g, _with_override(zero_model, passthrough), size=96))
    assert _differs(dropped, _sample(g, _with_override(_attention(g, g["unet"]), passthrough), size=96))


def test_added_callbacks_and_window_read_the_sigma_once_per_step(g, monkeypatch):
    """A pack that .add()s to InstantID's patch (IP-Adapter protocol): deciding its sigma window must not read the
    sigma tensor in every layer (on a GPU each read is a device sync). Reads from the pack's code are counted."""
    import os
    import sys

    reads = []

    def counted(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            if os.path.basename(os.path.dirname(sys._getframe(1).f_code.co_filename)) == "instantid":
                reads.append(sys._getframe(1).f_code.co_name)
            return original(self, *args, **kwargs)
        return read

    forwards = []

    def unet_wrapper(apply_model, args):
        forwards.append(1)
        return apply_model(args["input"], args["timestep"], **args["c"])

    stacked = apply_foreign(_attention(g, g["unet"]), weight=0.3, seed=2)
    stacked.set_model_unet_function_wrapper(unet_wrapper)
    for name in ("__float__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    CALLS.clear()
    _sample(g, stacked, steps=2)
    monkeypatch.undo()
    assert len(forwards) == 2 and CALLS["extra"] == 70 * len(forwards)  # the added callback ran in every layer, every step
    assert len(reads) <= 2 * len(forwards), (len(reads), len(forwards), sorted(set(reads)))
