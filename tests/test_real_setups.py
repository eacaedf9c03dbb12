"""The setups people actually run, emulated on a CPU (spec/COMFYUI.md, "Real GPU setups you can reproduce on a CPU").

fp8 weight flags, partial (low-VRAM) loading, half-precision compute and the
adapter's one-off work per identity, each through the real nodes and
ComfyUI's real sampling code with the tiny real-topology models.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
from e2e_models import load_graph, run_v3
from model_fixtures import *  # noqa: F401,F403

import nodes as comfy_nodes

N = comfy_nodes.NODE_CLASS_MAPPINGS
FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2)


@pytest.fixture(scope="module")
def graph(base_dir):
    return load_graph(str(base_dir), 128, seed=1)


def face_with(embedding: np.ndarray, frames: int = 1):
    """FACES with ``frames`` copies of one face whose embedding is given (a new identity per embedding)."""
    from instantid.faces import FaceRecord, Faces

    kps = np.array([[38, 52], [90, 50], [64, 80], [44, 104], [86, 102]], np.float32)
    records = tuple(FaceRecord(bbox=np.array([20, 20, 108, 120], np.float32), keypoints=kps,
                               embedding=np.asarray(e, np.float32), score=0.9, source_size=(128, 128))
                    for e in (embedding if frames > 1 else [embedding]))
    return Faces(frames=records)


def random_embedding(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(512) * 20).astype(np.float32)


def apply(g, model=None, adapter=None, control_net=None, **overrides):
    args = dict(model=model or g["unet"], positive=g["positive"], negative=g["negative"], instantid=adapter or g["adapter"],
                control_net=control_net or g["control_net"], faces=g["faces"], ip_weight=0.8, cn_strength=0.8,
                start_at=0.0, end_at=1.0, combine="average", placement="cover")
    args.update(overrides)
    return run_v3("InstantIDApply", **args)


def sample(model, positive, negative, steps=1, seed=7):
    latent = N["EmptyLatentImage"]().generate(128, 128, 1)[0]
    return N["KSampler"]().sample(model, seed, steps, 5.0, "euler", "normal", positive, negative, latent)[0]["samples"]


@torch.no_grad()
def denoise_once(model, positive, negative, sigma: float = 3.0, seed: int = 11) -> torch.Tensor:
    """One CFG model call through ComfyUI's sampling code; returns the CFG'd denoised latent (fp32)."""
    import comfy.sample
    import comfy.samplers

    out = {}

    def one_call(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        out["denoised"] = model_k(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {})).float()
        return out["denoised"]

    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(seed))
    comfy.sample.sample_custom(model, noise, 5.0, comfy.samplers.KSAMPLER(one_call), torch.tensor([sigma, 0.0]),
                               positive, negative, torch.zeros_like(noise), disable_pbar=True, seed=seed)
    return out["denoised"]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b|."""
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


# ----------------------------------------------------------------------------
# fp8 weights (--fp8_e4m3fn-unet / --fp8_e5m2-unet)
# ----------------------------------------------------------------------------

@pytest.fixture(params=["e4m3fn", "e5m2"])
def fp8_flag(request):
    """The host started with --fp8_<kind>-unet: ComfyUI's unet_dtype() is then a float8 type for every model it loads."""
    import comfy.cli_args

    flag = f"fp8_{request.param}_unet"
    before = getattr(comfy.cli_args.args, flag)
    setattr(comfy.cli_args.args, flag, True)
    try:
        yield getattr(torch, f"float8_{request.param}")
    finally:
        setattr(comfy.cli_args.args, flag, before)


def test_fp8_flag_loads_applies_and_samples(graph, fp8_flag):
    import comfy.model_management as mm

    assert mm.unet_dtype() == fp8_flag, "the emulated flag is not in effect"
    models = graph["models"]
    adapter = run_v3("InstantIDLoader", instantid_file=models.adapter_name)[0]
    dtypes = {p.dtype for p in adapter.module.parameters()}
    assert not dtypes & set(FLOAT8), f"adapter weights stored in {dtypes}: LayerNorm/matmul do not run in float8"
    unet = N["UNETLoader"]().load_unet(models.unet_name, "default")[0]
    control_net = N["ControlNetLoader"]().load_controlnet(models.controlnet_name)[0]
    assert unet.model.get_dtype() == fp8_flag and control_net.control_model.dtype == fp8_flag

    pos, neg = graph["positive"], graph["negative"]
    plain = denoise_once(unet, pos, neg)
    out = denoise_once(*apply(graph, model=unet, adapter=adapter, control_net=control_net))
    # The same fp8 models with the adapter as loaded on an fp32 host: only the adapter's storage differs.
    same = denoise_once(*apply(graph, model=unet, adapter=graph["adapter"], control_net=control_net))
    sample(*apply(graph, model=unet, adapter=adapter, control_net=control_net))  # and a whole KSampler run

    assert torch.isfinite(out).all()
    assert relative(out, plain) > 0.1, "the identity had no effect"
    # The face K/V weights are kept in fp16 on such a host (half the RAM): the result may move by that
    # rounding (unit roundoff eps/2 per weight; 0.2 eps measured here), never by the identity's effect.
    assert relative(out, same) <= 2 * torch.finfo(torch.float16).eps


# ----------------------------------------------------------------------------
# Partial loading (--lowvram, --novram, a nearly full card)
# ----------------------------------------------------------------------------

def _spy(monkeypatch, owner, name: str, calls: list) -> None:
    original = getattr(owner, name)

    def spy(*args, **kwargs):
        calls.append((name, args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)


def test_apply_leaves_the_memory_manager_alone(graph, monkeypatch):
    """Apply computes the identity where the adapter's weights are: nothing is loaded, partly loaded or evicted
    for it, so no offload split can put its weights and inputs on different devices and the UNet stays put."""
    import comfy.model_management as mm
    import comfy.model_patcher

    calls: list = []
    for name in ("load_models_gpu", "free_memory", "unload_all_models"):
        _spy(monkeypatch, mm, name, calls)
    for name in ("load", "partially_load", "partially_unload"):
        _spy(monkeypatch, comfy.model_patcher.ModelPatcher, name, calls)
    faces = face_with(random_embedding(101))  # an identity not seen before: the adapter has to run
    apply(graph, faces=faces)
    run_v3("InstantIDApplyAttention", model=graph["unet"], instantid=graph["adapter"], faces=face_with(random_embedding(102)),
           weight=0.8, start_at=0.0, end_at=1.0, combine="average")
    assert [c[0] for c in calls] == [], "Apply asked ComfyUI's memory manager to move models"
    assert {p.device.type for p in graph["adapter"].module.parameters()} == {"cpu"}


class PartialLoads:
    """Every model ComfyUI loads for sampling gets at most ``budget`` bytes on the device, as on a nearly full card.

    load_models_gpu passes its lowvram budget to LoadedModel.model_load; on a GPU with --lowvram or too little
    free memory that budget is small and ComfyUI's own ModelPatcher.load leaves what does not fit on the
    offload device (comfy.ops layers then cast their weights at use; plain torch.nn layers do not). On a CPU the
    budget is always 0 (= everything), so the emulation caps it.
    """

    def __init__(self, monkeypatch, fraction: float) -> None:
        import comfy.model_management as mm

        self.loaded: list = []
        original = mm.LoadedModel.model_load
        fraction_ = fraction

        def model_load(loaded_model, lowvram_model_memory=0, force_patch_weights=False):
            budget = max(1, int(loaded_model.model.model_size() * fraction_))
            out = original(loaded_model, budget, force_patch_weights=force_patch_weights)
            self.loaded.append((loaded_model.model, bool(loaded_model.model.model.model_lowvram)))
            return out

        monkeypatch.setattr(mm.LoadedModel, "model_load", model_load)


def test_partially_loaded_models_sample_like_fully_loaded(graph, monkeypatch):
    from instantid.adapter import AdapterModule

    models = graph["models"]
    unet = N["UNETLoader"]().load_unet(models.unet_name, "default")[0]
    control_net = N["ControlNetLoader"]().load_controlnet(models.controlnet_name)[0]
    full = sample(*apply(graph, model=unet, control_net=control_net))

    partial = PartialLoads(monkeypatch, fraction=0.3)
    unet_low = N["UNETLoader"]().load_unet(models.unet_name, "default")[0]
    control_low = N["ControlNetLoader"]().load_controlnet(models.controlnet_name)[0]
    out = sample(*apply(graph, model=unet_low, control_net=control_low))

    assert any(low for m, low in partial.loaded if m.model is unet_low.model), "the UNet was not partly loaded"
    assert any(low for m, low in partial.loaded if m.model is control_low.control_model), "IdentityNet was not partly loaded"
    assert not any(isinstance(m.model, AdapterModule) for m, _ in partial.loaded), "the adapter went through the loader"
    torch.testing.assert_close(out, full, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------
# The adapter's work: once per identity, bounded
# ----------------------------------------------------------------------------

class ResamplerRuns:
    def __init__(self, adapter) -> None:
        self.count = 0
        self.handle = adapter.module.image_proj.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.count += int(args[0].shape[0])  # one per embedding row put through it

    def close(self) -> None:
        self.handle.remove()


def _face_kv(model) -> dict:
    return {key: patch.face.kv.per_layer[key]
            for key, patch in model.model_options["transformer_options"]["patches_replace"]["attn2"].items()}


def test_repeat_apply_reuses_tokens_and_face_kv(graph, tiny_adapter_sd):
    mask = torch.zeros(1, 128, 128)
    mask[:, 30:90, 30:90] = 1.0
    faces = face_with(random_embedding(201))
    runs = ResamplerRuns(graph["adapter"])
    try:
        first, _, _ = apply(graph, faces=faces)
        after_first = runs.count
        variants = [apply(graph, faces=faces, ip_weight=0.5)[0], apply(graph, faces=faces, start_at=0.2, end_at=0.7)[0],
                    apply(graph, faces=faces, mask=mask)[0], apply(graph, faces=faces, cn_strength=0.3)[0]]
        assert runs.count == after_first, "changing weight/start/end/mask ran the Resampler again"
    finally:
        runs.close()
    assert after_first >= 1
    kv = _face_kv(first)
    for model in variants:
        again = _face_kv(model)
        assert all(again[k][i] is kv[k][i] for k in kv for i in range(4)), "face K/V were projected again"
    # What is served is right: K/V = tokens @ W^T with the file's own weights (computed here, not by the pack).
    from instantid.layers import SDXL_ATTN2_LAYERS
    from instantid.pipeline import identity_tokens

    tokens = identity_tokens(graph["adapter"], faces, "average")
    for n, key, _ in SDXL_ATTN2_LAYERS[::7]:
        w_k = tiny_adapter_sd["ip_adapter"][f"{n}.to_k_ip.weight"]
        w_v = tiny_adapter_sd["ip_adapter"][f"{n}.to_v_ip.weight"]
        torch.testing.assert_close(kv[key][0], tokens.cond @ w_k.T, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(kv[key][1], tokens.cond @ w_v.T, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(kv[key][2], tokens.uncond @ w_k.T, rtol=1e-5, atol=1e-5)


def test_identity_cache_is_keyed_by_face_and_combine_and_bounded(graph):
    from instantid import adapter as adapter_module

    adapter = run_v3("InstantIDLoader", instantid_file=graph["models"].adapter_name)[0]  # its own, empty cache
    bound = adapter_module.IDENTITY_CACHE_ENTRIES
    runs = ResamplerRuns(adapter)

    def attention(faces, combine="average"):
        return run_v3("InstantIDApplyAttention", model=graph["unet"], instantid=adapter, faces=faces, weight=0.8,
                      start_at=0.0, end_at=1.0, combine=combine)[0]

    try:
        first = _face_kv(attention(face_with(random_embedding(300))))
        first_ref = weakref.ref(first[next(iter(first))][0])
        uncond = {k: (v[2], v[3]) for k, v in first.items()}
        for i in range(1, bound + 2):
            kv = _face_kv(attention(face_with(random_embedding(300 + i))))
            assert all(kv[k][2] is uncond[k][0] and kv[k][3] is uncond[k][1] for k in kv), "uncond K/V recomputed"
            assert adapter.cache_info()["entries"] <= bound
        assert adapter.cache_info()["bytes"] <= adapter.cache_info()["max_bytes"]
        del kv
        # Evicted and no longer used by any model: its memory is gone (no leak through a long-running server).
        values = first[next(iter(first))][0].clone()
        del first
        gc.collect()
        assert first_ref() is None, "an evicted identity is still held"
        count = runs.count
        again = _face_kv(attention(face_with(random_embedding(300))))
        assert runs.count == count + 1, "an evicted identity was not recomputed"
        torch.testing.assert_close(again[next(iter(again))][0], values, rtol=0, atol=0)

        # Two photos: 'average' and 'norm_average' are different identities, each cached on its own.
        pair = np.stack([random_embedding(400), random_embedding(401) * 3])
        two = face_with(pair, frames=2)
        avg = _face_kv(attention(two, "average"))
        norm = _face_kv(attention(two, "norm_average"))
        key = next(iter(avg))
        assert relative(avg[key][0], norm[key][0]) > 1e-3
        count = runs.count
        assert _face_kv(attention(two, "norm_average"))[key][0] is norm[key][0] and runs.count == count
    finally:
        runs.close()


def attention_only(graph, model, weight=0.8):
    return run_v3("InstantIDApplyAttention", model=model, instantid=graph["adapter"], faces=graph["faces"], weight=weight,
                  start_at=0.0, end_at=1.0, combine="average")[0]


# ----------------------------------------------------------------------------
# Half-precision compute (what a GPU runs: fp16 or bf16 weights and activations)
# ----------------------------------------------------------------------------

def load_computing_in(graph, dtype, monkeypatch):
    """The tiny UNet and IdentityNet stored and run in ``dtype``, as ComfyUI does on a GPU that supports it.

    On a CPU ComfyUI always picks fp32 compute (unet_manual_cast answers fp32); a GPU answers None
    (= compute in the stored dtype). The loaders are ComfyUI's own.
    """
    import comfy.controlnet
    import comfy.model_management as mm
    import comfy.sd
    import folder_paths

    models = graph["models"]
    with monkeypatch.context() as patch:
        patch.setattr(mm, "unet_manual_cast", lambda *args, **kwargs: None)
        unet = comfy.sd.load_diffusion_model(folder_paths.get_full_path_or_raise("diffusion_models", models.unet_name),
                                             model_options={"dtype": dtype})
        control_net = comfy.controlnet.load_controlnet(folder_paths.get_full_path_or_raise("controlnet", models.controlnet_name),
                                                       model_options={"dtype": dtype})
    assert unet.model.get_dtype() == dtype and unet.model.manual_cast_dtype is None
    assert control_net.control_model.dtype == dtype and control_net.manual_cast_dtype is None
    return unet, control_net


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_compute_matches_fp32(graph, dtype, monkeypatch):
    from instantid.attention import FaceAttentionPatch

    unet, control_net = load_computing_in(graph, dtype, monkeypatch)
    seen: set = set()
    original = FaceAttentionPatch.__call__

    def recording(self, q, k, v, extra_options):
        out = original(self, q, k, v, extra_options)
        seen.add((q.dtype, out.dtype))
        return out

    monkeypatch.setattr(FaceAttentionPatch, "__call__", recording)
    mask = torch.zeros(1, 128, 128)
    mask[:, 10:110, 20:120] = 1.0
    pos, neg = graph["positive"], graph["negative"]
    plain32 = denoise_once(graph["unet"], pos, neg)
    full32 = denoise_once(*apply(graph, mask=mask))
    attn32 = denoise_once(attention_only(graph, graph["unet"]), pos, neg)
    seen.clear()
    plain = denoise_once(unet, pos, neg)
    full = denoise_once(*apply(graph, model=unet, control_net=control_net, mask=mask))
    attn = denoise_once(attention_only(graph, unet), pos, neg)
    assert seen == {(dtype, dtype)}, f"face attention ran in {seen}, not {dtype}"
    assert torch.isfinite(full).all() and torch.isfinite(attn).all()
    # Tolerance from the dtype: ComfyUI's own plain UNet in this dtype lands ~10 eps (relative to the output's
    # max) from its fp32 result here (rounding through ~40 sequential blocks); InstantID adds a chain of
    # similar depth (IdentityNet, 70 face-attention branches), so 32 eps is ~3x the host's own error, while
    # a face that is dropped, sent to the wrong CFG rows or overflowing differs by the effect (~1000 eps).
    tol = 32 * torch.finfo(dtype).eps
    assert relative(plain, plain32) <= tol, "the yardstick itself moved: ComfyUI's plain UNet is off by more"
    assert relative(full, full32) <= tol and relative(attn, attn32) <= tol
    assert relative(full, plain) > 3 * tol and relative(attn, plain) > 3 * tol, "no identity effect beyond rounding"
