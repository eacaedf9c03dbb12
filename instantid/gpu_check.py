"""Does InstantID run right and cheaply on this machine? ``make gpu-check`` / ``python -m instantid.gpu_check``.

Builds SDXL-topology models with random weights (full width on a GPU, the
tiny test width on a CPU or with ``--size tiny``) and, through ComfyUI's real
sampling code, measures:

- accuracy: one CFG call in fp16 and in bf16 against fp32, for plain SDXL and
  SDXL + InstantID (face attention + IdentityNet);
- speed and memory: one CFG step (1024x1024 on a GPU) for plain, attention and
  full, with the models fully loaded, partly loaded (what --lowvram or a nearly
  full card does) and with fp8 weights;
- the adapter: where its weights are after Apply, what a first and a repeated
  Apply cost, and whether Apply touched VRAM.

Merges its results into ``bench/results.json`` under ``"gpu_check"`` and
prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import statistics
import time
from pathlib import Path

from .bench import PACK_DIR, _boot_host, _conditioning, _denoise_once, _faces, _randomise, sdxl_unet_config

MODES = ("plain", "attention", "full")
LOWVRAM_FRACTION = 0.25  # share of each model's weights that fits on the "card" in the partial-loading rows


class Builder:
    """The same random SDXL-topology weights as UNet / IdentityNet / adapter in any storage and compute dtype."""

    def __init__(self, model_channels: int) -> None:
        import comfy.cldm.cldm
        import comfy.ops
        import comfy.supported_models
        import torch

        from .adapter import AdapterModule, adapter_from_state_dict
        from .layers import SDXL_ATTN2_LAYERS
        from .resampler import ResamplerConfig

        self.channels = model_channels
        self.unet_config = sdxl_unet_config(model_channels)
        self.cn_config = {k: v for k, v in self.unet_config.items() if k not in ("out_channels", "transformer_depth_output")}
        config = comfy.supported_models.SDXL(dict(self.unet_config))
        config.set_inference_dtype(torch.float32, None)
        self.unet_sd = _randomise(config.get_model({}, device="cpu").diffusion_model, 0).state_dict()
        cn = comfy.cldm.cldm.ControlNet(hint_channels=3, operations=comfy.ops.disable_weight_init, dtype=torch.float32,
                                        device="cpu", **self.cn_config)
        self.cn_sd = _randomise(cn, 1).state_dict()
        width = {640: model_channels * 2, 1280: model_channels * 4}
        module = _randomise(AdapterModule(ResamplerConfig(), {n: (width[c], 2048) for n, _, c in SDXL_ATTN2_LAYERS}), 2)
        self.adapter_sd = module.state_dict()
        self._adapter_from_state_dict = adapter_from_state_dict

    def adapter(self):
        """A freshly loaded adapter (empty identity cache), through the pack's own loading code."""
        return self._adapter_from_state_dict(dict(self.adapter_sd), "random ip-adapter.bin")

    def unet(self, weight_dtype, compute_dtype):
        import comfy.model_management as mm
        import comfy.model_patcher
        import comfy.supported_models

        config = comfy.supported_models.SDXL(dict(self.unet_config))
        config.set_inference_dtype(weight_dtype, None if compute_dtype == weight_dtype else compute_dtype)
        base = config.get_model({}, device="cpu")
        base.diffusion_model.load_state_dict(self.unet_sd)
        return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())

    def identitynet(self, weight_dtype, compute_dtype):
        import comfy.cldm.cldm
        import comfy.controlnet
        import comfy.model_management as mm
        import comfy.ops

        manual_cast = None if compute_dtype == weight_dtype else compute_dtype
        model = comfy.cldm.cldm.ControlNet(hint_channels=3, operations=comfy.ops.pick_operations(weight_dtype, manual_cast),
                                           dtype=weight_dtype, device="cpu", **self.cn_config)
        model.load_state_dict(self.cn_sd)
        return comfy.controlnet.ControlNet(model, load_device=mm.get_torch_device(), manual_cast_dtype=manual_cast)


@contextlib.contextmanager
def partial_loading(fraction: float, record: list):
    """Every model ComfyUI loads gets at most ``fraction`` of its weights on the device, as with --lowvram or a
    nearly full card: ComfyUI's own ModelPatcher.load then leaves the rest on the offload device."""
    import comfy.model_management as mm

    original = mm.LoadedModel.model_load

    def model_load(loaded_model, lowvram_model_memory=0, force_patch_weights=False):
        patcher = loaded_model.model
        budget = int(patcher.model_size() * fraction)
        extra = max(1, budget - patcher.loaded_size())  # load_models_gpu passes memory beyond what is loaded
        out = original(loaded_model, extra, force_patch_weights=force_patch_weights)
        record.append({"model": type(patcher.model).__name__, "partly_loaded": bool(patcher.model.model_lowvram),
                       "loaded_fraction": patcher.loaded_size() / max(1, patcher.model_size())})
        return out

    mm.LoadedModel.model_load = model_load
    try:
        yield record
    finally:
        mm.LoadedModel.model_load = original


def _release() -> None:
    import comfy.model_management as mm

    mm.unload_all_models()
    gc.collect()
    mm.soft_empty_cache()


def _cuda():
    import torch

    return torch.cuda if torch.cuda.is_available() else None


def _graph(unet, control_net, adapter, latent: int):
    """{mode: (model, positive, negative)} for plain, attention and full on the same inputs."""
    import torch

    from . import pipeline

    faces = _faces()
    positive, negative = _conditioning(latent, 0)
    hint = torch.zeros(1, latent * 8, latent * 8, 3)
    tokens = pipeline.identity_tokens(adapter, faces, "average")
    full = pipeline.apply_instantid(unet, positive, negative, adapter, control_net, faces, hint, 0.8, 0.8, 0.0, 1.0)
    return {"plain": (unet, positive, negative),
            "attention": (pipeline.face_attention_model(unet, adapter, tokens, 0.8, 0.0, 1.0, None), positive, negative),
            "full": full}


def _relative(a, b) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def accuracy(builder: Builder, adapter, latent: int) -> dict:
    """Relative max error (to max |fp32|) of one CFG call in fp16 and bf16, plain and full; eps for scale."""
    import torch

    out: dict = {}
    results = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        graph = _graph(builder.unet(dtype, dtype), builder.identitynet(dtype, dtype), adapter, latent)
        results[dtype] = {mode: _denoise_once(*graph[mode], latent, []).float().cpu() for mode in ("plain", "full")}
        del graph
        _release()
    for dtype, name in ((torch.float16, "fp16"), (torch.bfloat16, "bf16")):
        eps = torch.finfo(dtype).eps
        row = {mode: _relative(results[dtype][mode], results[torch.float32][mode]) for mode in ("plain", "full")}
        out[name] = {**row, "eps": eps, "plain_in_eps": row["plain"] / eps, "full_in_eps": row["full"] / eps,
                     "identity_effect": _relative(results[dtype]["full"], results[dtype]["plain"])}
    return out


def timing(builder: Builder, adapter, latent: int, rounds: int, weight_dtype, compute_dtype, lowvram: bool) -> dict:
    """Median seconds per CFG step and peak device memory for plain / attention / full."""
    cuda = _cuda()
    loads: list = []
    graph = _graph(builder.unet(weight_dtype, compute_dtype), builder.identitynet(weight_dtype, compute_dtype), adapter, latent)
    times = {mode: [] for mode in MODES}
    peaks = {}
    with partial_loading(LOWVRAM_FRACTION, loads) if lowvram else contextlib.nullcontext():
        for mode in MODES:
            _release()
            if cuda:
                cuda.reset_peak_memory_stats()
            _denoise_once(*graph[mode], latent, [])  # warm-up, and the load
            for _ in range(rounds):
                _denoise_once(*graph[mode], latent, times[mode])
            peaks[mode] = cuda.max_memory_allocated() if cuda else None
    del graph
    _release()
    median = {mode: statistics.median(t) for mode, t in times.items()}
    row = {"weights": str(weight_dtype).replace("torch.", ""), "compute": str(compute_dtype).replace("torch.", ""),
           "step_seconds": median, "peak_device_bytes": peaks,
           "ratio_attention": median["attention"] / median["plain"], "ratio_full": median["full"] / median["plain"]}
    if lowvram:
        row["loaded_fraction"] = LOWVRAM_FRACTION
        row["partly_loaded_models"] = sorted({r["model"] for r in loads if r["partly_loaded"]})
    return row


def adapter_residency(builder: Builder, latent: int, dtype, repeats: int = 5) -> dict:
    """Where the adapter is after Apply and a sampling step, and what a first and a repeated Apply cost
    (a fresh adapter: nothing cached yet)."""
    import comfy.model_management as mm
    import torch

    from . import pipeline
    from .adapter import AdapterModule

    cuda = _cuda()
    adapter = builder.adapter()
    unet, control_net = builder.unet(dtype, dtype), builder.identitynet(dtype, dtype)
    faces = _faces()
    positive, negative = _conditioning(latent, 0)
    hint = torch.zeros(1, latent * 8, latent * 8, 3)
    _release()
    before = cuda.memory_allocated() if cuda else None
    outputs = []

    def apply(weight: float) -> float:
        start = time.perf_counter()
        outputs.append(pipeline.apply_instantid(unet, positive, negative, adapter, control_net, faces, hint, weight, 0.8, 0.0, 1.0))
        return time.perf_counter() - start

    first = apply(0.8)
    added = (cuda.memory_allocated() - before) if cuda else None
    repeat = [apply(0.5 + 0.1 * i) for i in range(repeats)]
    _denoise_once(*outputs[-1], latent, [])
    result = {
        "weight_devices_after_sampling": sorted({p.device.type for p in adapter.module.parameters()}),
        "weight_dtypes": sorted({str(p.dtype).replace("torch.", "") for p in adapter.module.parameters()}),
        "weight_bytes": sum(p.numel() * p.element_size() for p in adapter.module.parameters()),
        "in_memory_manager": any(isinstance(getattr(m.model, "model", None), AdapterModule) for m in mm.current_loaded_models),
        "device_bytes_added_by_apply": added,
        "first_apply_seconds": first,
        "repeat_apply_seconds": statistics.median(repeat),
        "cached_identities": adapter.cache_info()["entries"],
    }
    outputs.clear()
    _release()
    return result


def run(size: str, latent: int, rounds: int) -> dict:
    import torch

    cuda = _cuda()
    if size == "auto":
        size = "full" if cuda else "tiny"
    channels = 320 if size == "full" else 32
    # What SDXL users run: fp16 on a GPU; fp32 on a CPU, where ComfyUI computes in fp32.
    compute = torch.float16 if cuda else torch.float32
    start = time.perf_counter()
    builder = Builder(channels)
    adapter = builder.adapter()
    results = {
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.machine()}), no GPU",
        "torch": torch.__version__,
        "topology": f"SDXL, all 70 attn2 layers, model_channels {channels} ({'full' if channels == 320 else 'tiny test'} width), random weights",
        "latent": f"{latent}x{latent} ({latent * 8}x{latent * 8} px), CFG batch 2, 77 text tokens",
        "rounds": rounds,
        "accuracy": accuracy(builder, adapter, latent),
        "steps": {
            "loaded": timing(builder, adapter, latent, rounds, compute, compute, lowvram=False),
            "partly_loaded": timing(builder, adapter, latent, rounds, compute, compute, lowvram=True),
            "fp8_weights": timing(builder, adapter, latent, rounds, torch.float8_e4m3fn, compute, lowvram=False),
        },
        "adapter": adapter_residency(builder, latent, compute),
    }
    results["seconds"] = time.perf_counter() - start
    return results


def _mib(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f} MiB"


def print_table(r: dict) -> None:
    lines = [f"device    {r['device']}  (torch {r['torch']})", f"topology  {r['topology']}", f"latent    {r['latent']}", ""]
    lines.append(f"{'accuracy vs fp32':<18}{'plain':>12}{'full':>12}{'full/eps':>10}{'effect':>10}")
    for name, row in r["accuracy"].items():
        lines.append(f"{name:<18}{row['plain']:>12.2e}{row['full']:>12.2e}{row['full_in_eps']:>10.1f}{row['identity_effect']:>10.3f}")
    lines += ["", f"{'steps':<15}{'weights':>14}{'plain s':>10}{'attn x':>8}{'full x':>8}{'peak plain':>12}{'peak full':>12}"]
    for name, row in r["steps"].items():
        lines.append(f"{name:<15}{row['weights']:>14}{row['step_seconds']['plain']:>10.4f}{row['ratio_attention']:>8.3f}"
                     f"{row['ratio_full']:>8.3f}{_mib(row['peak_device_bytes']['plain']):>12}{_mib(row['peak_device_bytes']['full']):>12}")
    a = r["adapter"]
    lines += ["", f"adapter   weights on {'/'.join(a['weight_devices_after_sampling'])} ({'/'.join(a['weight_dtypes'])}, {_mib(a['weight_bytes'])}), "
                  f"in ComfyUI's memory manager: {a['in_memory_manager']}, device memory added by Apply: {_mib(a['device_bytes_added_by_apply'])}",
              f"Apply     first {a['first_apply_seconds']:.3f} s, repeated {a['repeat_apply_seconds']:.4f} s"]
    print("\n".join(lines))


def write(results: dict, out: Path) -> None:
    """Merge into ``out`` under "gpu_check", keeping whatever else (make bench) wrote there."""
    existing = {}
    if out.exists():
        try:
            existing = json.loads(out.read_text())
        except json.JSONDecodeError:
            existing = {}
    if not isinstance(existing, dict):
        existing = {}
    existing["gpu_check"] = results
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(existing, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["auto", "full", "tiny"], default="auto", help="model width (auto: full on a GPU)")
    parser.add_argument("--latent", type=int, default=0, help="latent side (default: 128 = 1024 px on a GPU, 16 on a CPU)")
    parser.add_argument("--rounds", type=int, default=0, help="timed calls per configuration (default: 5 on a GPU, 2 on a CPU)")
    parser.add_argument("--out", default=str(PACK_DIR / "bench" / "results.json"))
    args = parser.parse_args()
    _boot_host()
    cuda = _cuda()
    results = run(args.size, args.latent or (128 if cuda else 16), args.rounds or (5 if cuda else 2))
    write(results, Path(args.out))
    print_table(results)
    print(f"written {args.out} (key 'gpu_check')")


if __name__ == "__main__":
    main()
