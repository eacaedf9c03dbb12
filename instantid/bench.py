"""What InstantID costs per denoising step, against plain SDXL and against the FLOP floor.

Run ``make bench`` (or ``python -m instantid.bench``) from the pack's folder.
It boots the ComfyUI host in-process, builds SDXL-topology models with
random weights (full SDXL width when memory allows, else the tiny test
topology), and times one CFG denoising call through ComfyUI's real sampling
code for: plain, attention patch, attention + IdentityNet; interleaved rounds
after warm-up, each ratio paired within its round, with its spread. Rounds in
which other processes took CPU are re-run or flagged (``bench_guard``).
Writes ``bench/results.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from . import bench_guard

PACK_DIR = Path(__file__).resolve().parent.parent


def _boot_host() -> None:
    sys.path.insert(0, str(PACK_DIR / "scripts"))
    from comfy_host import find_host

    host, _ = find_host()
    sys.path.insert(0, str(host))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args
    import torch

    comfy.cli_args.args.cpu = not torch.cuda.is_available()


def sdxl_unet_config(model_channels: int) -> dict:
    return {
        "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4,
        "model_channels": model_channels, "num_res_blocks": [2, 2, 2], "channel_mult": [1, 2, 4],
        "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_middle": 10,
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "context_dim": 2048,
        "num_head_channels": 64, "use_linear_in_transformer": True, "adm_in_channels": 2816,
        "num_classes": "sequential", "use_spatial_transformer": True, "legacy": False,
        "use_temporal_attention": False, "use_temporal_resblock": False,
    }


def _randomise(module, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
    return module


def build_unet(model_channels: int, dtype):
    """An SDXL-topology UNet with random weights as a ComfyUI ModelPatcher."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    model_config = comfy.supported_models.SDXL(sdxl_unet_config(model_channels))
    model_config.set_inference_dtype(dtype, None)
    base = model_config.get_model({}, device="cpu")
    _randomise(base.diffusion_model, 0).to(dtype)
    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def build_models(model_channels: int, dtype):
    """(unet ModelPatcher, IdentityNet ControlNet, InstantIDAdapter) with random weights, SDXL topology."""
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management as mm
    import comfy.ops

    from .adapter import AdapterModule, InstantIDAdapter
    from .layers import SDXL_ATTN2_LAYERS
    from .resampler import ResamplerConfig

    config = sdxl_unet_config(model_channels)
    unet = build_unet(model_channels, dtype)

    cn_config = {k: v for k, v in config.items() if k not in ("out_channels", "transformer_depth_output")}
    cn_model = comfy.cldm.cldm.ControlNet(hint_channels=3, operations=comfy.ops.disable_weight_init, dtype=dtype, device="cpu", **cn_config)
    _randomise(cn_model, 1).to(dtype)
    control_net = comfy.controlnet.ControlNet(cn_model, load_device=mm.get_torch_device())

    width = {640: model_channels * 2, 1280: model_channels * 4}
    kv_shapes = {n: (width[c], 2048) for n, _, c in SDXL_ATTN2_LAYERS}
    resampler = ResamplerConfig()
    module = _randomise(AdapterModule(resampler, kv_shapes), 2)
    return unet, control_net, module, resampler, kv_shapes, InstantIDAdapter


def _conditioning(latent: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    opts = {"width": latent * 8, "height": latent * 8}
    positive = [[torch.randn(1, 77, 2048, generator=gen), {"pooled_output": torch.randn(1, 1280, generator=gen), **opts}]]
    negative = [[torch.randn(1, 77, 2048, generator=gen), {"pooled_output": torch.randn(1, 1280, generator=gen), **opts}]]
    return positive, negative


def _timed_sampler(times: list[float]):
    import comfy.model_management as mm
    import comfy.samplers
    import torch

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def one_call(model, x, sigmas, extra_args=None, callback=None, disable=None):
        s = sigmas[0] * x.new_ones([x.shape[0]])
        sync()
        start = time.perf_counter()
        out = model(x, s, **(extra_args or {}))
        sync()
        times.append(time.perf_counter() - start)
        mm.throw_exception_if_processing_interrupted()
        return out

    return comfy.samplers.KSAMPLER(one_call)


def _denoise_once(model, positive, negative, latent: int, times: list[float]):
    import comfy.sample
    import torch

    noise = torch.randn(1, 4, latent, latent, generator=torch.Generator().manual_seed(0))
    sigmas = torch.tensor([7.0, 0.0])
    with torch.no_grad():
        return comfy.sample.sample_custom(model, noise, 5.0, _timed_sampler(times), sigmas, positive, negative,
                                          torch.zeros_like(noise), disable_pbar=True, seed=0)


def _faces():
    import numpy as np

    from .faces import FaceRecord, Faces

    rng = np.random.default_rng(0)
    kps = np.array([[38, 52], [90, 50], [64, 80], [44, 104], [86, 102]], dtype=np.float32)
    record = FaceRecord(bbox=np.array([20, 20, 108, 120], np.float32), keypoints=kps,
                        embedding=(rng.standard_normal(512) * 20).astype(np.float32), score=0.9, source_size=(128, 128))
    return Faces(frames=(record,))


def _tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def _patch_tensors(model) -> list:
    from .attention import FaceAttentionPatch

    out = []
    for patch in model.model_options["transformer_options"]["patches_replace"]["attn2"].values():
        if isinstance(patch, FaceAttentionPatch):
            out += [t for kv in patch.face.kv.per_layer.values() for t in kv]
            out += [t for v in patch.face._cache.values() for t in (v if isinstance(v, tuple) else (v,))]
    return out


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def face_analysis_numbers(runs: int = 5) -> dict:
    """Seconds per image and ONNX runs per face, with real antelopev2 when installed, else the synthetic test pack."""
    import torch

    from . import face_analysis, face_models

    source = "antelopev2 (real)"
    root = None
    try:
        analyzer = face_models.load_analyzer()
        image = torch.rand(1, 512, 512, 3)
    except Exception:
        tests = PACK_DIR / "tests"
        if not (tests / "face_fixtures.py").exists():
            return {"face_analysis_source": "none (no models, no test fixtures)"}
        sys.path.insert(0, str(tests))
        import face_fixtures

        root = Path(tempfile.mkdtemp(prefix="instantid-bench-faces-"))
        face_fixtures.build_model_pack(root)
        analyzer = face_models.load_analyzer(roots=[root])
        image = face_fixtures.paint_face(face_fixtures.blank_images(512, 512), 200, 150, 64, 80)
        source = "synthetic test models (tests/onnx_fixtures.py)"
    calls = {"n": 0}
    for model in (analyzer.detector, analyzer.recognizer):
        session = model.session
        original = session.run

        def counted(*args, _run=original, **kwargs):
            calls["n"] += 1
            return _run(*args, **kwargs)

        session.run = counted
    face_analysis.analyze(image, analyzer)  # warm-up
    calls["n"] = 0
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        faces, _ = face_analysis.analyze(image, analyzer, policy="skip")
        times.append(time.perf_counter() - start)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)
    found = max(1, len(faces.found))
    return {"face_analysis_seconds": statistics.median(times), "onnx_runs_per_face": calls["n"] / runs / found,
            "face_analysis_source": source}


def timed_call(model, positive, negative, latent: int):
    """A zero-argument call that denoises once and returns the seconds of the timed model call."""

    def call() -> float:
        times: list[float] = []
        _denoise_once(model, positive, negative, latent, times)
        return times[-1]

    return call


def run(size: str, rounds: int, latent: int, busy_threshold: float = bench_guard.DEFAULT_THRESHOLD_CORES,
        attempts: int = bench_guard.DEFAULT_ATTEMPTS) -> dict:
    import comfy.model_management as mm
    import psutil
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from . import bench_group, pipeline
    from .adapter import load_adapter

    if size == "auto":
        size = "full" if psutil.virtual_memory().available > 20 * 2**30 or torch.cuda.is_available() else "tiny"
    channels = 320 if size == "full" else 32
    on_gpu = torch.cuda.is_available()
    dtype = torch.float16 if on_gpu else torch.float32
    unet, control_net, module, resampler, kv_shapes, adapter_cls = build_models(channels, dtype)

    # Real file layout on disk, loaded through the real loader.
    tmp = Path(tempfile.mkdtemp(prefix="instantid-bench-"))
    path = tmp / "ip-adapter.bin"
    sd = module.state_dict()
    torch.save({"image_proj": {k[len("image_proj."):]: v for k, v in sd.items() if k.startswith("image_proj.")},
                "ip_adapter": {k[len("ip_adapter."):]: v for k, v in sd.items() if k.startswith("ip_adapter.")}}, path)
    del sd, module
    start = time.perf_counter()
    adapter = load_adapter(str(path))
    load_seconds = time.perf_counter() - start
    shutil.rmtree(tmp)

    faces = _faces()
    hint = torch.zeros(1, latent * 8, latent * 8, 3)
    positive, negative = _conditioning(latent, 0)
    apply_times = []
    for _ in range(4):
        start = time.perf_counter()
        full_model, full_pos, full_neg = pipeline.apply_instantid(unet, positive, negative, adapter, control_net, faces, hint,
                                                                 0.8, 0.8, 0.0, 1.0)
        apply_times.append(time.perf_counter() - start)
    attn_model = pipeline.face_attention_model(unet, adapter, pipeline.identity_tokens(adapter, faces, "average"), 0.8, 0.0, 1.0, None)
    configs = {"plain": (unet, positive, negative), "attention": (attn_model, positive, negative),
               "full": (full_model, full_pos, full_neg)}
    configs.update(bench_group.group_configs(unet, control_net, adapter, positive, negative, latent))

    for model, pos, neg in configs.values():  # warm-up
        _denoise_once(model, pos, neg, latent, [])
    calls = {name: timed_call(model, pos, neg, latent) for name, (model, pos, neg) in configs.items()}
    timing = bench_guard.summarize(bench_guard.timed_rounds(calls, rounds, threshold_cores=busy_threshold, max_attempts=attempts),
                                   base="plain", threshold_cores=busy_threshold)
    median = timing["seconds_median"]

    flops = {}
    for name, (model, pos, neg) in configs.items():
        counter = FlopCounterMode(display=False)
        with counter:
            _denoise_once(model, pos, neg, latent, [])
        flops[name] = counter.get_total_flops()

    gc.collect()
    rss_before = _rss()
    tensors_before = _tensor_bytes(_patch_tensors(full_model))
    clones = [full_model.clone() for _ in range(20)]
    gc.collect()
    clone_rss_growth = _rss() - rss_before
    clone_tensor_growth = _tensor_bytes([t for c in clones for t in _patch_tensors(c)]) - tensors_before

    results = {
        "device": torch.cuda.get_device_name(0) if on_gpu else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "torch": torch.__version__, "dtype": str(dtype).replace("torch.", ""),
        "topology": f"SDXL {'full width (model_channels 320)' if size == 'full' else 'tiny test width (model_channels 32)'}, all 70 attn2 layers",
        "latent": f"{latent}x{latent} ({latent * 8}x{latent * 8} px), CFG batch 2, 77 text tokens",
        "rounds": rounds,
        "step_seconds": median,
        # Paired per round (each against the plain call of the same round), median over the undisturbed rounds.
        "step_ratio_attention": timing["ratio_spread"]["attention"]["median"],
        "step_ratio_full": timing["ratio_spread"]["full"]["median"],
        "step_ratio_spread": timing["ratio_spread"],
        "busy_guard": {k: timing[k] for k in ("threshold_cores", "disturbed_rounds", "reruns", "rounds_used", "verdict")},
        "rounds_detail": timing["rounds_detail"],
        "flops": flops,
        "flop_ratio_attention": flops["attention"] / flops["plain"],
        "flop_ratio_full": flops["full"] / flops["plain"],
        "apply_seconds": statistics.median(apply_times[1:]),
        "load_seconds": load_seconds,
        "adapter_weight_bytes": sum(p.numel() * p.element_size() for p in adapter.module.parameters()),
        "adapter_weight_dtype": str(next(adapter.module.parameters()).dtype).replace("torch.", ""),
        "adapter_resident_during_sampling_bytes": _tensor_bytes(_patch_tensors(full_model)),
        "adapter_weights_on_device_during_sampling": any(p.device.type != "cpu" for p in adapter.module.parameters()) and mm.get_torch_device().type != "cpu",
        "clone_growth_rss_bytes": clone_rss_growth,
        "clone_growth_tensor_bytes": clone_tensor_growth,
    }
    results["step_overhead_vs_flops_full"] = results["step_ratio_full"] / results["flop_ratio_full"]
    results.update(face_analysis_numbers())
    results.update(bench_group.summary(median, flops))
    results.update(bench_group.bleed(unet, control_net, adapter, positive, negative, latent))
    return results


def _spread_text(spread: dict) -> str:
    return " / ".join(f"{spread[k]:.3f}" for k in ("min", "q1", "median", "q3", "max"))


def print_table(r: dict) -> None:
    rows = [
        ("device", r["device"]), ("topology", r["topology"]), ("latent", r["latent"]),
        ("plain step (s)", f"{r['step_seconds']['plain']:.4f}"),
        ("step_ratio_attention", f"{r['step_ratio_attention']:.3f}  (FLOP floor {r['flop_ratio_attention']:.4f})"),
        ("  per round min/q1/med/q3/max", _spread_text(r["step_ratio_spread"]["attention"])),
        ("step_ratio_full", f"{r['step_ratio_full']:.3f}  (FLOP floor {r['flop_ratio_full']:.3f})"),
        ("  per round min/q1/med/q3/max", _spread_text(r["step_ratio_spread"]["full"])),
        ("step_ratio_full / flop_ratio_full", f"{r['step_overhead_vs_flops_full']:.3f}"),
        ("busy machine guard", f"{r['busy_guard']['verdict']}; {r['busy_guard']['reruns']} re-run(s) (disturbed: other "
                               f"processes kept > {r['busy_guard']['threshold_cores']} cores busy during a call)"),
        ("apply_seconds (warm)", f"{r['apply_seconds']:.3f}"), ("load_seconds", f"{r['load_seconds']:.3f}"),
        ("adapter weights", f"{r['adapter_weight_bytes'] / 2**20:.1f} MiB {r['adapter_weight_dtype']}"),
        ("resident for sampling", f"{r['adapter_resident_during_sampling_bytes'] / 2**20:.2f} MiB (face K/V)"),
        ("growth after 20 clones", f"{r['clone_growth_tensor_bytes']} tensor bytes, {r['clone_growth_rss_bytes'] / 2**20:.2f} MiB RSS"),
        ("face analysis", f"{r.get('face_analysis_seconds', float('nan')):.4f} s/image, {r.get('onnx_runs_per_face', float('nan')):.1f} ONNX runs/face ({r.get('face_analysis_source')})"),
    ]
    from .bench_group import table_rows

    rows += table_rows(r)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if r["busy_guard"]["disturbed_rounds"]:
        print(f"WARNING: {r['busy_guard']['verdict']}. Stop other jobs and run `make bench` again for numbers to publish.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["auto", "full", "tiny"], default="auto")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latent", type=int, default=0, help="latent side (default: 128 on GPU = 1024 px, 32 on CPU)")
    parser.add_argument("--busy-threshold", type=float, default=bench_guard.DEFAULT_THRESHOLD_CORES,
                        help="cores other processes may keep busy during a timed call before its round is re-run")
    parser.add_argument("--attempts", type=int, default=bench_guard.DEFAULT_ATTEMPTS, help="runs of a disturbed round before it is flagged")
    parser.add_argument("--out", default=str(PACK_DIR / "bench" / "results.json"))
    args = parser.parse_args()
    _boot_host()
    import torch

    latent = args.latent or (128 if torch.cuda.is_available() else 32)
    results = run(args.size, args.rounds, latent, args.busy_threshold, args.attempts)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # keep what `make gpu-check` merged into the same file
        try:
            previous = json.loads(out.read_text())
        except json.JSONDecodeError:
            previous = {}
        if isinstance(previous, dict) and "gpu_check" in previous:
            results = {**results, "gpu_check": previous["gpu_check"]}
    out.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"written {out}")


if __name__ == "__main__":
    main()
