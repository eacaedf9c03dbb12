"""Loading the InstantID adapter file and turning face embeddings into identity tokens.

The adapter has two parts (spec section 5): the Resampler (``image_proj``)
and 70 pairs of face key/value projections (``ip_adapter``, keys
``{n}.to_k_ip.weight`` / ``{n}.to_v_ip.weight`` for odd n). Every dimension
is read from the file, so a file for another model family, a truncated file
or a plain IP-Adapter file is caught here with a message naming what was
expected and what was found.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import torch
from torch import nn

from .errors import AdapterFileError
from .layers import SDXL_ATTN2_LAYERS, AttnKey
from .paths import ADAPTER_FOLDER, download_models_dir, folders_text
from .published import ADAPTER as PUBLISHED_ADAPTER
from .published import PublishedFile, download_hint, sha256_file
from .resampler import Resampler, ResamplerConfig

log = logging.getLogger(__name__)

DIM_HEAD = 64
_KV_KEY = re.compile(r"^(\d+)\.to_([kv])_ip\.weight$")
_REQUIRED_PROJ = ("latents", "proj_in.weight", "proj_in.bias", "proj_out.weight", "proj_out.bias",
                  "norm_out.weight", "norm_out.bias")


@dataclass(frozen=True)
class IdentityTokens:
    """Resampler output for one identity.

    cond: ``[F, Q, D]`` tokens of the face embedding(s), F = 1 or one per
        latent in the batch. uncond: ``[1, Q, D]`` = Resampler(zeros), what
        the reference feeds the unconditional CFG rows. float32, CPU.
    """

    cond: torch.Tensor
    uncond: torch.Tensor


@dataclass(frozen=True)
class FaceKV:
    """Face keys and values for every patched layer, computed once per Apply.

    per_layer[key] = (k_cond ``[F,Q,C]``, v_cond, k_uncond ``[1,Q,C]``, v_uncond), float32, CPU.
    """

    per_layer: dict[AttnKey, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


class AdapterModule(nn.Module):
    """Resampler + face K/V projections, with the published state-dict layout."""

    def __init__(self, config: ResamplerConfig, kv_shapes: dict[int, tuple[int, int]]) -> None:
        super().__init__()
        self.image_proj = Resampler(config)
        self.ip_adapter = nn.ModuleDict()
        for n, (out_features, in_features) in sorted(kv_shapes.items()):
            pair = nn.Module()
            pair.to_k_ip = nn.Linear(in_features, out_features, bias=False)
            pair.to_v_ip = nn.Linear(in_features, out_features, bias=False)
            self.ip_adapter[str(n)] = pair


def _describe(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(sorted(keys)[:limit])
    return shown + (f" ... ({len(keys)} keys)" if len(keys) > limit else "")


def split_state_dict(sd: dict[str, torch.Tensor], path: str) -> tuple[dict, dict]:
    """Return (image_proj, ip_adapter) sub-dicts from either published layout."""
    if "image_proj" in sd and "ip_adapter" in sd and isinstance(sd["image_proj"], dict):
        return sd["image_proj"], sd["ip_adapter"]
    proj = {k[len("image_proj."):]: v for k, v in sd.items() if k.startswith("image_proj.")}
    kv = {k[len("ip_adapter."):]: v for k, v in sd.items() if k.startswith("ip_adapter.")}
    if proj and kv:
        return proj, kv
    name = os.path.basename(path)
    if any(k.startswith(("input_blocks.", "controlnet_", "down_blocks.", "model.diffusion_model.")) for k in sd):
        kind = "a UNet or ControlNet checkpoint"
    else:
        kind = "not an InstantID adapter"
    raise AdapterFileError(
        f"{name} is {kind}: expected top-level 'image_proj' and 'ip_adapter' entries, found {_describe(list(sd))}. "
        "Put the InstantID adapter (ip-adapter.bin from InstantX/InstantID) in models/instantid; "
        "IdentityNet goes in models/controlnet."
    )


def derive_config(proj: dict[str, torch.Tensor], kv: dict[str, torch.Tensor], path: str) -> tuple[ResamplerConfig, dict[int, tuple[int, int]]]:
    """Read every dimension from the tensors; raise AdapterFileError on anything inconsistent."""
    name = os.path.basename(path)
    if "proj.weight" in proj or "proj.0.weight" in proj or "perceiver_resampler.proj_in.weight" in proj:
        raise AdapterFileError(
            f"{name} is a plain IP-Adapter / FaceID file (image_proj has {_describe(list(proj))}), not InstantID. "
            "Use it with an IP-Adapter pack; for InstantID download ip-adapter.bin from InstantX/InstantID."
        )
    missing = [k for k in _REQUIRED_PROJ if k not in proj]
    if missing:
        raise AdapterFileError(f"{name}: the Resampler (image_proj) lacks {', '.join(missing)}; the file is incomplete or not InstantID.")
    latents, proj_in, proj_out = proj["latents"], proj["proj_in.weight"], proj["proj_out.weight"]
    dim, embedding_dim = proj_in.shape
    depth = len({k.split(".")[1] for k in proj if k.startswith("layers.")})
    if depth == 0 or "layers.0.0.to_q.weight" not in proj or "layers.0.1.1.weight" not in proj:
        raise AdapterFileError(f"{name}: the Resampler has no attention/feed-forward layers; the file is incomplete.")
    inner = proj["layers.0.0.to_q.weight"].shape[0]
    if inner % DIM_HEAD:
        raise AdapterFileError(f"{name}: Resampler attention width {inner} is not a multiple of {DIM_HEAD}.")
    config = ResamplerConfig(
        dim=dim, depth=depth, dim_head=DIM_HEAD, heads=inner // DIM_HEAD,
        num_queries=latents.shape[1], embedding_dim=embedding_dim,
        output_dim=proj_out.shape[0], ff_mult=proj["layers.0.1.1.weight"].shape[0] // dim,
    )
    if embedding_dim != 512:
        raise AdapterFileError(
            f"{name}: the Resampler takes {embedding_dim}-d input; InstantID takes the 512-d insightface face embedding. "
            "This looks like an IP-Adapter Plus file (CLIP vision input); use it with an IP-Adapter pack."
        )
    kv_shapes: dict[int, tuple[int, int]] = {}
    for key, tensor in kv.items():
        match = _KV_KEY.match(key)
        if not match:
            raise AdapterFileError(f"{name}: unexpected ip_adapter key {key!r}; expected '{{n}}.to_k_ip.weight' / '{{n}}.to_v_ip.weight'.")
        n = int(match.group(1))
        shape = tuple(tensor.shape)
        if len(shape) != 2 or shape[1] != config.output_dim:
            raise AdapterFileError(f"{name}: {key} has shape {list(shape)}; expected [channels, {config.output_dim}] (the Resampler's output width).")
        if kv_shapes.setdefault(n, shape) != shape:
            raise AdapterFileError(f"{name}: to_k_ip and to_v_ip of layer {n} differ in shape ({list(kv_shapes[n])} vs {list(shape)}).")
    expected = [n for n, _, _ in SDXL_ATTN2_LAYERS]
    missing_kv = [f"{n}.to_{t}_ip.weight" for n in expected for t in "kv" if f"{n}.to_{t}_ip.weight" not in kv]
    if missing_kv or sorted(kv_shapes) != expected:
        found = sorted(kv_shapes)
        raise AdapterFileError(
            f"{name}: expected face K/V weights for the 70 SDXL cross-attention layers (n = 1, 3, ..., 139), "
            f"found {len(found)} layers ({found[:3]}...{found[-2:] if found else ''}); missing {_describe(missing_kv)}. "
            "The file is truncated or made for another model family (InstantID exists for SDXL only)."
        )
    return config, kv_shapes


class InstantIDAdapter:
    """A loaded adapter: the module under a ComfyUI ModelPatcher plus what the file said about itself.

    The weights sit on ComfyUI's offload device and are moved only by the
    memory manager (``load_models_gpu``), for the one-off projections done
    when a node applies InstantID; sampling never needs them.
    """

    def __init__(self, module: AdapterModule, config: ResamplerConfig, kv_shapes: dict[int, tuple[int, int]], path: str) -> None:
        import comfy.model_management as mm
        import comfy.model_patcher

        self.module = module
        self.config = config
        self.kv_shapes = kv_shapes
        self.path = path
        self.patcher = comfy.model_patcher.ModelPatcher(module, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def channels(self) -> dict[AttnKey, int]:
        """K/V output width per ComfyUI attn2 key."""
        return {key: self.kv_shapes[n][0] for n, key, _ in SDXL_ATTN2_LAYERS}

    def _loaded(self) -> tuple[AdapterModule, torch.device, torch.dtype]:
        import comfy.model_management as mm

        mm.load_models_gpu([self.patcher])
        device = self.patcher.load_device
        dtype = next(self.module.parameters()).dtype
        return self.module, device, dtype

    @torch.no_grad()
    def identity_tokens(self, embeddings: torch.Tensor) -> IdentityTokens:
        """Face embeddings ``[F, 512]`` (raw insightface vectors) -> IdentityTokens."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.config.embedding_dim:
            raise ValueError(f"identity_tokens expects [F, {self.config.embedding_dim}] embeddings, got {list(embeddings.shape)}")
        module, device, dtype = self._loaded()
        x = embeddings.to(device=device, dtype=dtype)[:, None, :]
        cond = module.image_proj(x)
        uncond = module.image_proj(torch.zeros_like(x[:1]))
        return IdentityTokens(cond=cond.float().cpu(), uncond=uncond.float().cpu())

    @torch.no_grad()
    def face_kv(self, tokens: IdentityTokens) -> FaceKV:
        """Project the tokens through every layer's to_k_ip / to_v_ip once."""
        module, device, dtype = self._loaded()
        cond = tokens.cond.to(device=device, dtype=dtype)
        uncond = tokens.uncond.to(device=device, dtype=dtype)
        per_layer = {}
        for n, key, _ in SDXL_ATTN2_LAYERS:
            pair = module.ip_adapter[str(n)]
            per_layer[key] = tuple(
                t.float().cpu() for t in (pair.to_k_ip(cond), pair.to_v_ip(cond), pair.to_k_ip(uncond), pair.to_v_ip(uncond))
            )
        return FaceKV(per_layer=per_layer)


def _is_pickle(path: str) -> bool:
    # comfy.utils.load_torch_file reads these two as safetensors and everything else with torch.load.
    return not path.lower().endswith((".safetensors", ".sft"))


def _check_published_pickle(path: str, size: int, file: PublishedFile) -> None:
    """A pickle with the published adapter's size must be the published adapter: hash it before unpickling anything."""
    if not _is_pickle(path) or size != file.size:
        return
    digest = sha256_file(path)  # remembered per unchanged file: a reload does not hash 1.7 GB again
    if digest != file.sha256:
        raise AdapterFileError(
            f"{os.path.basename(path)} has the size of the published {file.filename} ({file.size:,} bytes) but not its "
            f"sha256 ({digest}, published {file.sha256}): a damaged download or another file. It was not unpickled. "
            f"Delete {path} and download it again: {download_hint('adapter', download_models_dir())}."
        )


def read_adapter_file(path: str, published_file: PublishedFile = PUBLISHED_ADAPTER) -> dict[str, torch.Tensor]:
    """The raw state dict; pickles only with weights_only=True, and only after the published-size digest check.

    published_file: the size/sha256 a pickle is checked against (tests pass one for a file they built).
    Errors name the file, the folders ComfyUI searches and the fix.
    """
    import comfy.utils

    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise AdapterFileError(
            f"InstantID adapter not found: {path}. Put {published_file.filename} in {folders_text(ADAPTER_FOLDER)}: "
            f"{download_hint('adapter', download_models_dir())}, or download {published_file.url} by hand."
        )
    size = os.path.getsize(path)
    _check_published_pickle(path, size, published_file)
    try:
        return comfy.utils.load_torch_file(path, safe_load=True)
    except Exception as exc:  # the loaders raise many unrelated types for a bad file
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc) or "Unpickl" in type(exc).__name__ or "GLOBAL" in str(exc):
            raise AdapterFileError(
                f"{name} was refused: it is a pickle that contains code or objects, not just tensors "
                f"({text}). The real {published_file.filename} holds only tensors; re-download it from {published_file.url}."
            ) from exc
        raise AdapterFileError(
            f"{name} ({size:,} bytes) could not be read: {text}. The download is probably incomplete or the file is not "
            f"a model; the published {published_file.filename} is {published_file.size:,} bytes. "
            f"{download_hint('adapter', download_models_dir())}."
        ) from exc


def load_adapter(path: str) -> InstantIDAdapter:
    """Read, validate and wrap the adapter file (``.bin`` pickle or flat ``.safetensors``)."""
    sd = read_adapter_file(path)
    proj, kv = split_state_dict(sd, path)
    config, kv_shapes = derive_config(proj, kv, path)
    with torch.device("meta"):
        module = AdapterModule(config, kv_shapes)
    state = {f"image_proj.{k}": v for k, v in proj.items()}
    state.update({f"ip_adapter.{k}": v for k, v in kv.items()})
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise AdapterFileError(f"{os.path.basename(path)}: tensors do not fit the InstantID layout: {exc}") from exc
    import comfy.model_management as mm

    # The host's choice for diffusion weights: fp32 on CPU, fp16/bf16 on a GPU.
    module = module.to(dtype=mm.unet_dtype()).eval().requires_grad_(False)
    log.info("Loaded InstantID adapter %s: Resampler %s, %d face K/V pairs", os.path.basename(path), config, len(kv_shapes))
    return InstantIDAdapter(module, config, kv_shapes, path)
