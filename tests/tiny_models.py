"""Tiny models with the REAL topologies, written in the REAL file layouts, loaded by the REAL loaders.

Everything here is deterministic (seeded) and cheap enough for a 2-core CPU:

- ``tiny_sdxl``: an SDXL-topology UNet (model_channels 32, channel_mult
  [1,2,4], context 2048, adm 2816, head size 64, SDXL's transformer depths so
  all 70 attn2 layers exist). Built as a diffusers ``UNet2DConditionModel``,
  randomised, converted to ComfyUI's key layout with ComfyUI's own map
  (``comfy.utils.unet_to_diffusers``), saved as safetensors under
  ``models/diffusion_models`` and loaded with ``comfy.sd.load_diffusion_model``
  once :func:`register_tiny_sdxl` has told ComfyUI about the size.
- ``tiny_identitynet``: the matching IdentityNet-topology ControlNet
  (diffusers ``ControlNetModel``, hint embedding [16,32,96,256]) randomised
  including the zero-initialised output convs, converted to ComfyUI's ldm
  ControlNet layout, loaded with ``comfy.controlnet.load_controlnet``.
- ``adapter``: ip-adapter.bin in the published layout with the REAL Resampler
  config and face K/V sized for the tiny UNet (64 / 128 channels), plus the
  flat safetensors re-pack.
- SD1.5-topology UNet / ControlNet and a plain IP-Adapter file for the
  wrong-model / wrong-file checks.

This module imports ComfyUI lazily (inside functions) except for
:func:`register_tiny_sdxl`, which needs only ``comfy.supported_models`` and is
also called by ``tests/host_pack`` inside a separate server process.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

SEED = 20240115

# ----------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------

SDXL_DIFFUSERS_CONFIG = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64, 128),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2, 10),
    # diffusers' attention_head_dim is the number of heads: 64 ch -> 1 x 64, 128 ch -> 2 x 64.
    attention_head_dim=(1, 1, 2),
    cross_attention_dim=2048,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    use_linear_projection=True,
    norm_num_groups=32,
)

# IdentityNet's topology: the UNet's encoder half, plus the hint embedding.
SDXL_CONTROLNET_CONFIG = {
    **{k: v for k, v in SDXL_DIFFUSERS_CONFIG.items() if k not in ("sample_size", "out_channels", "up_block_types")},
    "conditioning_embedding_out_channels": (16, 32, 96, 256),
}

# ComfyUI's view of the same UNet (the keys comfy.utils.unet_to_diffusers reads).
SDXL_COMFY_UNET_CONFIG = {
    "num_res_blocks": [2, 2, 2],
    "channel_mult": [1, 2, 4],
    "transformer_depth": [0, 0, 2, 2, 10, 10],
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "transformer_depth_middle": 10,
}

SD15_DIFFUSERS_CONFIG = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64, 128, 128),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=2,
    attention_head_dim=8,
    cross_attention_dim=768,
    norm_num_groups=32,
)

SD15_CONTROLNET_CONFIG = dict(
    in_channels=4,
    block_out_channels=(32, 64, 128, 128),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    layers_per_block=2,
    attention_head_dim=8,
    cross_attention_dim=768,
    norm_num_groups=32,
    conditioning_embedding_out_channels=(16, 32, 96, 256),
)

SD15_COMFY_UNET_CONFIG = {
    "num_res_blocks": [2, 2, 2, 2],
    "channel_mult": [1, 2, 4, 4],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "transformer_depth_middle": 1,
}

# The published Resampler (spec section 4).
RESAMPLER_CONFIG = dict(dim=1280, depth=4, dim_head=64, heads=20, num_queries=16, embedding_dim=512,
                        output_dim=2048, ff_mult=4)
RESAMPLER_PARAMS = 81_978_624


# ----------------------------------------------------------------------------
# Registering the tiny sizes with ComfyUI's model detection
# ----------------------------------------------------------------------------

def _tiny_classes():
    import comfy.supported_models as sm

    class TinySDXL(sm.SDXL):
        """SDXL with model_channels 32: only the size differs from the stock SDXL config."""

        unet_config = dict(sm.SDXL.unet_config, model_channels=32)

    class TinySD15(sm.SD15):
        """SD1.5 with model_channels 32 (8 heads, context 768), for wrong-model tests."""

        unet_config = dict(sm.SD15.unet_config, model_channels=32)

    TinySDXL.__name__ = TinySDXL.__qualname__ = "TinySDXL"
    TinySD15.__name__ = TinySD15.__qualname__ = "TinySD15"
    return TinySDXL, TinySD15


@functools.cache
def _classes():
    return _tiny_classes()


def register_tiny_sdxl():
    """Insert TinySDXL (and TinySD15) at the front of ``comfy.supported_models.models``; idempotent.

    Returns the TinySDXL class. Safe to call from any process that has ComfyUI
    importable (the in-process test host or a custom node inside a server).
    """
    import comfy.supported_models as sm

    tiny_sdxl, tiny_sd15 = _classes()
    present = {getattr(m, "__name__", "") for m in sm.models}
    for cls in (tiny_sd15, tiny_sdxl):
        if cls.__name__ not in present:
            sm.models.insert(0, cls)
    return tiny_sdxl


def __getattr__(name: str):
    """``tiny_models.TinySDXL`` / ``tiny_models.TinySD15``: built on first access (ComfyUI must be set up first)."""
    if name == "TinySDXL":
        return _classes()[0]
    if name == "TinySD15":
        return _classes()[1]
    raise AttributeError(name)


# ----------------------------------------------------------------------------
# Randomisation
# ----------------------------------------------------------------------------

@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int, gain: float = 1.0) -> torch.nn.Module:
    """Deterministic, non-trivial, well-scaled values for every parameter (zero-initialised ones included).

    Weights ~ N(0, gain/fan_in), biases ~ N(0, 0.05), norm scales ~ 1 + N(0, 0.1),
    norm shifts ~ N(0, 0.05). Ordered by parameter name so the result does not
    depend on module registration order.
    """
    params = dict(module.named_parameters())
    names = sorted(params)
    # One draw for everything, then sliced: much faster than a draw per tensor.
    z = torch.randn(sum(params[n].numel() for n in names), generator=torch.Generator().manual_seed(seed))
    offset = 0
    for name in names:
        p = params[name]
        values = z[offset:offset + p.numel()].view(p.shape)
        offset += p.numel()
        leaf = name.rsplit(".", 1)[-1]
        is_norm = any(s in name for s in ("norm", "ln_")) and p.ndim == 1
        if is_norm and leaf == "weight":
            p.copy_(values.mul(0.1).add_(1.0))
        elif p.ndim == 1:
            p.copy_(values.mul(0.05))
        else:
            p.copy_(values.mul((gain / p[0].numel()) ** 0.5))
    return module


# ----------------------------------------------------------------------------
# Key conversion (diffusers -> ComfyUI ldm layout)
# ----------------------------------------------------------------------------

def unet_to_comfy(sd: dict[str, torch.Tensor], comfy_config: dict) -> dict[str, torch.Tensor]:
    """diffusers UNet state dict -> ComfyUI (ldm) keys, using ComfyUI's own map; every key must map."""
    import comfy.utils

    mapping = comfy.utils.unet_to_diffusers(dict(comfy_config))  # {diffusers key: ldm key}
    out, left = {}, []
    for key, value in sd.items():
        if key in mapping:
            out[mapping[key]] = value.contiguous()
        else:
            left.append(key)
    if left:
        raise RuntimeError(f"unmapped diffusers UNet keys: {left[:8]} ({len(left)})")
    return out


def controlnet_to_comfy(sd: dict[str, torch.Tensor], comfy_config: dict) -> dict[str, torch.Tensor]:
    """diffusers ControlNetModel state dict -> ComfyUI's ldm ControlNet layout.

    UNet part through ComfyUI's map; ``controlnet_down_blocks.i`` -> ``zero_convs.i.0``;
    ``controlnet_mid_block`` -> ``middle_block_out.0``; the hint embedding's
    convs (``conv_in``, ``blocks.j``, ``conv_out``) -> ``input_hint_block.{0,2,4,...}``
    (the SiLUs sit at the odd positions).
    """
    import comfy.utils

    mapping = comfy.utils.unet_to_diffusers(dict(comfy_config))
    n_blocks = len({k.split(".")[2] for k in sd if k.startswith("controlnet_cond_embedding.blocks.")})
    out, left = {}, []
    for key, value in sd.items():
        parts = key.split(".")
        if key in mapping:
            new = mapping[key]
        elif parts[0] == "controlnet_down_blocks":
            new = f"zero_convs.{parts[1]}.0.{parts[2]}"
        elif parts[0] == "controlnet_mid_block":
            new = f"middle_block_out.0.{parts[1]}"
        elif parts[0] == "controlnet_cond_embedding":
            if parts[1] == "conv_in":
                index = 0
            elif parts[1] == "blocks":
                index = 2 * (int(parts[2]) + 1)
            elif parts[1] == "conv_out":
                index = 2 * (n_blocks + 1)
            else:
                left.append(key)
                continue
            new = f"input_hint_block.{index}.{parts[-1]}"
        else:
            left.append(key)
            continue
        out[new] = value.contiguous()
    if left:
        raise RuntimeError(f"unmapped diffusers ControlNet keys: {left[:8]} ({len(left)})")
    return out


# ----------------------------------------------------------------------------
# Builders (pure torch/diffusers: no ComfyUI state involved)
# ----------------------------------------------------------------------------

def build_diffusers_unet(config: dict, seed: int):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):  # skip diffusers' own (slow) init: every value is set by randomize_
        unet = UNet2DConditionModel(**config)
    return randomize_(unet.to_empty(device="cpu"), seed).eval().requires_grad_(False)


def build_diffusers_controlnet(config: dict, seed: int):
    from diffusers import ControlNetModel

    with torch.device("meta"):
        cn = ControlNetModel(**config)
    return randomize_(cn.to_empty(device="cpu"), seed).eval().requires_grad_(False)


def resampler_state_dict(seed: int = SEED + 3, cfg: dict = RESAMPLER_CONFIG) -> dict[str, torch.Tensor]:
    """The 51 ``image_proj`` tensors of a Resampler with ``cfg``, seeded random values, published key names."""
    g = torch.Generator().manual_seed(seed)
    dim, inner, out_dim = cfg["dim"], cfg["heads"] * cfg["dim_head"], cfg["output_dim"]
    ff = dim * cfg["ff_mult"]

    def w(o, i):
        return torch.randn(o, i, generator=g) / i**0.5

    def ln(d):
        return 1.0 + 0.1 * torch.randn(d, generator=g), 0.05 * torch.randn(d, generator=g)

    sd = {"latents": torch.randn(1, cfg["num_queries"], dim, generator=g) / dim**0.5,
          "proj_in.weight": w(dim, cfg["embedding_dim"]), "proj_in.bias": 0.05 * torch.randn(dim, generator=g)}
    for i in range(cfg["depth"]):
        p = f"layers.{i}."
        sd[p + "0.norm1.weight"], sd[p + "0.norm1.bias"] = ln(dim)
        sd[p + "0.norm2.weight"], sd[p + "0.norm2.bias"] = ln(dim)
        sd[p + "0.to_q.weight"] = w(inner, dim)
        sd[p + "0.to_kv.weight"] = w(2 * inner, dim)
        sd[p + "0.to_out.weight"] = w(dim, inner)
        sd[p + "1.0.weight"], sd[p + "1.0.bias"] = ln(dim)
        sd[p + "1.1.weight"] = w(ff, dim)
        sd[p + "1.3.weight"] = w(dim, ff)
    sd["proj_out.weight"] = w(out_dim, dim)
    sd["proj_out.bias"] = 0.05 * torch.randn(out_dim, generator=g)
    sd["norm_out.weight"], sd["norm_out.bias"] = ln(out_dim)
    return sd


def attn2_channels_by_n(unet) -> dict[int, int]:
    """Checkpoint number n -> attn2 inner width of a diffusers UNet, numbered down, up, mid (attn1 even, attn2 odd)."""
    return {n: proc_module.to_k.out_features for n, (_, proc_module) in diffusers_attn2_by_n(unet).items()}


def diffusers_attn2_by_n(unet) -> dict[int, tuple[str, torch.nn.Module]]:
    """{n: (processor name, Attention module)} for every attn2 of a diffusers UNet.

    Numbering fixed by the spec: down blocks, then up blocks, then the mid
    block; within a block by attention index, transformer index; attn1 even,
    attn2 odd. Sorted explicitly here instead of trusting dict order.
    """
    rank = {"down_blocks": 0, "up_blocks": 1, "mid_block": 2}
    entries = []
    for name, module in unet.named_modules():
        if not name.endswith(("attn1", "attn2")):
            continue
        parts = name.split(".")
        if parts[0] == "mid_block":  # mid_block.attentions.A.transformer_blocks.T.attnX
            sort_key = (rank["mid_block"], 0, int(parts[2]), int(parts[4]), parts[5])
        else:  # down_blocks.B.attentions.A.transformer_blocks.T.attnX
            sort_key = (rank[parts[0]], int(parts[1]), int(parts[3]), int(parts[5]), parts[6])
        entries.append((sort_key, name, module))
    entries.sort(key=lambda e: e[0])
    out = {}
    for n, (_, name, module) in enumerate(entries):
        if name.endswith("attn2"):
            assert n % 2 == 1, name
            out[n] = (name + ".processor", module)
    return out


def adapter_state_dict(kv_channels: dict[int, int], seed: int = SEED + 4,
                       resampler: dict | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """``{'image_proj': {...51}, 'ip_adapter': {'{n}.to_k_ip.weight': [C, 2048], ...}}``."""
    g = torch.Generator().manual_seed(seed)
    kv = {}
    for n in sorted(kv_channels):
        c = kv_channels[n]
        kv[f"{n}.to_k_ip.weight"] = torch.randn(c, 2048, generator=g) / 2048**0.5
        kv[f"{n}.to_v_ip.weight"] = torch.randn(c, 2048, generator=g) / 2048**0.5
    return {"image_proj": resampler if resampler is not None else resampler_state_dict(), "ip_adapter": kv}


def flat(sd: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {f"{part}.{k}": v for part, tensors in sd.items() for k, v in tensors.items()}


# ----------------------------------------------------------------------------
# The built set, written to disk once per process
# ----------------------------------------------------------------------------

@dataclass
class TinyFiles:
    root: Path
    sdxl_unet: Path
    sdxl_controlnet: Path
    sd15_unet: Path
    sd15_controlnet: Path
    adapter_bin: Path
    adapter_safetensors: Path
    ipadapter_plain: Path
    diffusers_unet: object
    diffusers_controlnet: object
    adapter_sd: dict


def _save_safetensors(sd: dict[str, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def plain_ipadapter_state_dict(seed: int = SEED + 5) -> dict[str, dict[str, torch.Tensor]]:
    """A plain (SDXL) IP-Adapter layout: image_proj = proj.weight/bias + norm.weight/bias, same ip_adapter keys."""
    g = torch.Generator().manual_seed(seed)
    proj = {"proj.weight": torch.randn(4 * 2048, 1280, generator=g) * 0.01, "proj.bias": torch.zeros(4 * 2048),
            "norm.weight": torch.ones(2048), "norm.bias": torch.zeros(2048)}
    kv = {}
    for n in range(1, 140, 2):
        kv[f"{n}.to_k_ip.weight"] = torch.randn(8, 2048, generator=g)
        kv[f"{n}.to_v_ip.weight"] = torch.randn(8, 2048, generator=g)
    return {"image_proj": proj, "ip_adapter": kv}


@functools.cache
def build_all(root: str) -> TinyFiles:
    """Build, randomise and write every tiny file under ``root``/models/...; cached per process and root."""
    base = Path(root)
    models = base / "models"
    unet = build_diffusers_unet(SDXL_DIFFUSERS_CONFIG, SEED)
    cn = build_diffusers_controlnet(SDXL_CONTROLNET_CONFIG, SEED + 1)
    sdxl_unet = _save_safetensors(unet_to_comfy(unet.state_dict(), SDXL_COMFY_UNET_CONFIG),
                                  models / "diffusion_models" / "tiny_sdxl_unet.safetensors")
    sdxl_cn = _save_safetensors(controlnet_to_comfy(cn.state_dict(), SDXL_COMFY_UNET_CONFIG),
                                models / "controlnet" / "tiny_identitynet.safetensors")
    sd15 = build_diffusers_unet(SD15_DIFFUSERS_CONFIG, SEED + 10)
    sd15_unet = _save_safetensors(unet_to_comfy(sd15.state_dict(), SD15_COMFY_UNET_CONFIG),
                                  models / "diffusion_models" / "tiny_sd15_unet.safetensors")
    sd15_cn_model = build_diffusers_controlnet(SD15_CONTROLNET_CONFIG, SEED + 11)
    sd15_cn = _save_safetensors(controlnet_to_comfy(sd15_cn_model.state_dict(), SD15_COMFY_UNET_CONFIG),
                                models / "controlnet" / "tiny_sd15_controlnet.safetensors")
    del sd15, sd15_cn_model

    adapter_sd = adapter_state_dict(attn2_channels_by_n(unet))
    adapter_dir = models / "instantid"
    adapter_dir.mkdir(parents=True, exist_ok=True)
    adapter_bin = adapter_dir / "ip-adapter.bin"
    torch.save(adapter_sd, str(adapter_bin))
    adapter_st = _save_safetensors(flat(adapter_sd), adapter_dir / "ip-adapter-flat.safetensors")
    plain = adapter_dir / "ip-adapter_sdxl_plain.bin"
    torch.save(plain_ipadapter_state_dict(), str(plain))
    return TinyFiles(root=base, sdxl_unet=sdxl_unet, sdxl_controlnet=sdxl_cn, sd15_unet=sd15_unet,
                     sd15_controlnet=sd15_cn, adapter_bin=adapter_bin, adapter_safetensors=adapter_st,
                     ipadapter_plain=plain, diffusers_unet=unet, diffusers_controlnet=cn, adapter_sd=adapter_sd)


# ----------------------------------------------------------------------------
# Loading through ComfyUI's loaders
# ----------------------------------------------------------------------------

def load_unet(path: os.PathLike):
    """comfy.sd.load_diffusion_model after registering the tiny configs; a ModelPatcher."""
    import comfy.sd

    register_tiny_sdxl()
    model = comfy.sd.load_diffusion_model(str(path))
    if model is None:
        raise RuntimeError(f"ComfyUI did not recognise {path}")
    return model


def load_controlnet(path: os.PathLike):
    import comfy.controlnet

    register_tiny_sdxl()
    cn = comfy.controlnet.load_controlnet(str(path))
    if cn is None:
        raise RuntimeError(f"ComfyUI did not recognise the ControlNet {path}")
    return cn
