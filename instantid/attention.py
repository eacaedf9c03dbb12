"""Decoupled face cross-attention in the 70 SDXL ``attn2`` layers (spec section 6).

Each patched layer computes
``SDPA(q, k_text, v_text) + w * SDPA(q, k_face, v_face)`` before the layer's
output projection. Conditional CFG rows see the face tokens, unconditional
rows Resampler(zeros), matched row by row through ``cond_or_uncond``.

Patch objects never mutate what they were given. A patch already present at
a key (another pack's, or an earlier InstantID) is kept as the text branch
and called, not modified, so contributions compose.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .adapter import FaceKV, InstantIDAdapter
from .errors import BatchMismatchError, ModelMismatchError
from .layers import SDXL_ATTN2_KEYS, AttnKey

log = logging.getLogger(__name__)


def attn2_modules(diffusion_model: torch.nn.Module) -> dict[AttnKey, torch.nn.Module]:
    """Every cross-attention module of a ComfyUI UNet, keyed like ComfyUI's attn2 patches."""
    found: dict[AttnKey, torch.nn.Module] = {}
    groups = (("input", getattr(diffusion_model, "input_blocks", [])),
              ("middle", [getattr(diffusion_model, "middle_block", [])]),
              ("output", getattr(diffusion_model, "output_blocks", [])))
    for block, blocks in groups:
        for block_id, seq in enumerate(blocks):
            for layer in seq if isinstance(seq, torch.nn.Sequential) else []:
                for index, tb in enumerate(getattr(layer, "transformer_blocks", [])):
                    if getattr(tb, "attn2", None) is not None:
                        found[(block, block_id, index)] = tb.attn2
    return found


def check_model(model, adapter: InstantIDAdapter) -> None:
    """Raise ModelMismatchError unless ``model`` has the 70 SDXL attn2 layers the adapter was made for."""
    base = getattr(model, "model", None)
    family = type(getattr(base, "model_config", None)).__name__
    diffusion_model = getattr(base, "diffusion_model", None)
    if diffusion_model is None:
        raise ModelMismatchError(f"Apply InstantID needs a diffusion MODEL (from a checkpoint loader); got {type(model).__name__}.")
    layers = attn2_modules(diffusion_model)
    context_dims = {m.to_k.in_features for m in layers.values()}
    token_dim = adapter.config.output_dim
    if set(layers) != set(SDXL_ATTN2_KEYS) or context_dims != {token_dim}:
        raise ModelMismatchError(
            f"InstantID works with SDXL models only; this model ({family}) has {len(layers)} cross-attention layers "
            f"with context width {sorted(context_dims) or 'none'}, SDXL has 70 with width {token_dim}. "
            "Load an SDXL checkpoint (SDXL base, Juggernaut XL, RealVisXL, ...); SD1.5/SD2/SD3/Flux models cannot use InstantID."
        )
    for key, channels in adapter.channels.items():
        inner = layers[key].to_k.out_features
        if inner != channels:
            raise ModelMismatchError(
                f"{adapter.name} was made for a model whose layer {key} is {channels} wide; this model's is {inner}. "
                "The adapter and the checkpoint belong to different model families."
            )


def repeat_rows(t: torch.Tensor, rows: int, what: str) -> torch.Tensor:
    """Batch rule shared by faces and masks: 1 broadcasts, ``rows`` matches row by row, anything else is an error."""
    if t.shape[0] == rows:
        return t
    if t.shape[0] == 1:
        return t.expand(rows, *t.shape[1:])
    raise BatchMismatchError(
        f"{what} has batch {t.shape[0]} but the latent batch is {rows}. Give one {what} for the whole batch, "
        f"or exactly one per latent (batch {rows})."
    )


def cfg_rows(cond: torch.Tensor, uncond: torch.Tensor, cond_or_uncond: list[int], rows: int) -> torch.Tensor:
    """Face data for every row of a batched model call: chunk i gets ``cond`` or ``uncond`` as ComfyUI's
    ``cond_or_uncond[i]`` says (0 = conditional), each repeated to the chunk's batch by ``repeat_rows``."""
    per_chunk = rows // len(cond_or_uncond)
    return torch.cat([repeat_rows(cond if kind == 0 else uncond, per_chunk, "face") for kind in cond_or_uncond])


def _token_grid(extra_options: dict, tokens: int) -> tuple[int, int]:
    shape = extra_options.get("activations_shape")
    if shape is not None and shape[-1] * shape[-2] == tokens:
        return int(shape[-2]), int(shape[-1])
    h, w = extra_options["original_shape"][-2:]
    for factor in (1, 2, 4, 8, 16):
        gh, gw = -(-h // factor), -(-w // factor)
        if gh * gw == tokens:
            return gh, gw
    raise RuntimeError(f"cannot map {tokens} attention tokens onto the {h}x{w} latent")


@dataclass
class FaceAttention:
    """Shared, read-only description of one InstantID application plus its per-device caches.

    weight: the ``w`` scalar. sigma_start/sigma_end: the active window.
    mask: optional ``[M, H, W]`` float mask (1 = inject identity).
    """

    kv: FaceKV
    weight: float
    sigma_start: float
    sigma_end: float
    mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self._cache: dict = {}
        self._last_sigmas: torch.Tensor | None = None
        self._last_active = True
        self._always_active = self.sigma_start >= 1e8 and self.sigma_end <= 0.0

    def active(self, sigmas: torch.Tensor | None) -> bool:
        """Decided once per sampler step: the same sigma tensor reaches all 70 layers."""
        if self._always_active or sigmas is None:
            return True
        if sigmas is not self._last_sigmas:
            sigma = float(sigmas.max())
            self._last_sigmas = sigmas
            self._last_active = self.sigma_end <= sigma <= self.sigma_start
        return self._last_active

    def batch_kv(self, key: AttnKey, cond_or_uncond: list[int], rows: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        cache_key = ("kv", key, tuple(cond_or_uncond), rows, device, dtype)
        hit = self._cache.get(cache_key)
        if hit is None:
            k_c, v_c, k_u, v_u = self.kv.per_layer[key]
            hit = (cfg_rows(k_c, k_u, cond_or_uncond, rows).to(device=device, dtype=dtype),
                   cfg_rows(v_c, v_u, cond_or_uncond, rows).to(device=device, dtype=dtype))
            self._cache[cache_key] = hit
        return hit

    def batch_mask(self, grid: tuple[int, int], cond_or_uncond: list[int], rows: int, device, dtype) -> torch.Tensor:
        cache_key = ("mask", grid, len(cond_or_uncond), rows, device, dtype)
        hit = self._cache.get(cache_key)
        if hit is None:
            small = F.interpolate(self.mask[:, None].float(), size=grid, mode="nearest")[:, 0]
            small = repeat_rows(small.reshape(small.shape[0], -1, 1), rows // len(cond_or_uncond), "mask")
            hit = small.repeat(len(cond_or_uncond), 1, 1).to(device=device, dtype=dtype)
            self._cache[cache_key] = hit
        return hit

    def drop_device_caches(self) -> None:
        self._cache.clear()


class FaceAttentionPatch:
    """The attn2 replacement registered at one key; ``previous`` is what was there before (or None)."""

    def __init__(self, face: FaceAttention, key: AttnKey, previous=None, added: tuple = ()) -> None:
        self.face = face
        self.key = key
        self.previous = previous
        self.added = tuple(added)

    def add(self, callback, **kwargs) -> None:
        """The IP-Adapter family's chaining protocol: a pack applied after InstantID calls ``.add`` on what it finds.

        Its ``callback(out, q, k, v, extra_options, **kwargs)`` is added to this
        layer's output while ``sigma_end <= sigma <= sigma_start`` (from kwargs,
        as that protocol does). Those packs call this on their own clone's copy
        (ComfyUI deep-copies model_options on clone); the tuple is rebound, never
        appended to, so no other copy of this patch ever sees the addition.
        """
        self.added = (*self.added, (callback, kwargs))

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        from comfy.ldm.modules.attention import optimized_attention

        heads = extra_options["n_heads"]
        if self.previous is not None:
            out = self.previous(q, k, v, extra_options)
        else:
            out = optimized_attention(q, k, v, heads, attn_precision=extra_options.get("attn_precision"), transformer_options=extra_options)
        face = self.face
        if face.active(extra_options.get("sigmas")):
            cond_or_uncond = extra_options["cond_or_uncond"]
            k_face, v_face = face.batch_kv(self.key, cond_or_uncond, q.shape[0], q.device, q.dtype)
            face_out = optimized_attention(q, k_face, v_face, heads, attn_precision=extra_options.get("attn_precision"),
                                           transformer_options=extra_options)
            if face.mask is not None:
                grid = _token_grid(extra_options, q.shape[1])
                face_out = face_out * face.batch_mask(grid, cond_or_uncond, q.shape[0], q.device, q.dtype)
            out = out + face.weight * face_out
        if self.added:
            out = self._run_added(out, q, k, v, extra_options)
        return out

    def _run_added(self, out, q, k, v, extra_options):
        sigmas = extra_options.get("sigmas")
        sigma = float(sigmas.detach()[0]) if sigmas is not None else float("inf")
        for callback, kwargs in self.added:
            if kwargs.get("sigma_end", float("-inf")) <= sigma <= kwargs.get("sigma_start", float("inf")):
                out = out + callback(out, q, k, v, extra_options, **kwargs)
        return out.to(q.dtype)

    # ComfyUI deep-copies model_options on every clone: share the face data,
    # copy only what another pack could have put in ``previous``.
    def __deepcopy__(self, memo):
        return FaceAttentionPatch(self.face, self.key, copy.deepcopy(self.previous, memo), self.added)

    def to(self, device_or_dtype):
        """Called by ComfyUI when the UNet moves; dtype casts happen per call, caches follow the device."""
        if not isinstance(device_or_dtype, torch.dtype):
            self.face.drop_device_caches()
        if self.previous is not None and hasattr(self.previous, "to"):
            self.previous = self.previous.to(device_or_dtype)
        return self


def patch_model(model, adapter: InstantIDAdapter, kv: FaceKV, weight: float, start_at: float, end_at: float,
                mask: torch.Tensor | None = None):
    """A clone of ``model`` with face attention in all 70 SDXL attn2 layers; ``model`` is left untouched."""
    check_model(model, adapter)
    sampling = model.get_model_object("model_sampling")
    face = FaceAttention(
        kv=kv, weight=float(weight),
        sigma_start=float(sampling.percent_to_sigma(start_at)), sigma_end=float(sampling.percent_to_sigma(end_at)),
        mask=None if mask is None else (mask[None] if mask.ndim == 2 else mask).float().cpu(),
    )
    patched = model.clone()
    existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    for key in SDXL_ATTN2_KEYS:
        patched.set_model_attn2_replace(FaceAttentionPatch(face, key, existing.get(key)), *key)
    return patched
