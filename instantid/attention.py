"""Decoupled face cross-attention in the 70 SDXL ``attn2`` layers (spec section 6).

Each patched layer computes
``SDPA(q, k_text, v_text) + w * SDPA(q, k_face, v_face)`` before the layer's
output projection. Rows of conditional conds see the face tokens, rows of the
negative (unconditional) ones Resampler(zeros); which is which, the window in
sigmas and the crop of area conds are learnt at sampling time (``sampling``).

Patch objects never mutate what they were given. A patch already present at
a key (another pack's, or an earlier InstantID) is kept as the text branch
and called, not modified, so contributions compose.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .adapter import FaceKV, InstantIDAdapter
from .errors import BatchMismatchError, ModelMismatchError
from .layers import SDXL_ATTN2_KEYS, AttnKey
from .sampling import STEP_KEY, ChunkPlan, Step, add_wrappers, chunk_plan, crop_to_area

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


def cfg_rows(cond: torch.Tensor, uncond: torch.Tensor, identity: Sequence[bool], rows: int) -> torch.Tensor:
    """Face data for every row of a batched model call: chunk i gets ``cond`` where ``identity[i]`` (see
    ``sampling.ChunkPlan``) and ``uncond`` elsewhere, each repeated to the chunk's batch by ``repeat_rows``."""
    per_chunk = rows // len(identity)
    return torch.cat([repeat_rows(cond if face else uncond, per_chunk, "face") for face in identity])


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


class FaceAttention:
    """Shared, read-only description of one InstantID application plus its per-device caches.

    weight: the ``w`` scalar. start_at/end_at: the window as fractions of the schedule; each sampling run turns
    them into sigmas with the model sampling it really uses (a ModelSampling node may follow Apply), as
    ComfyUI's ControlNet does in ``pre_run``. fallback_window: (sigma_start, sigma_end) from the model at Apply
    time, only for calls outside a ComfyUI sampler. mask: optional ``[M, H, W]`` float mask (1 = inject identity).
    """

    def __init__(self, kv: FaceKV, weight: float, start_at: float, end_at: float, fallback_window: tuple[float, float],
                 mask: torch.Tensor | None = None) -> None:
        self.kv = kv
        self.weight = weight
        self.start_at, self.end_at = start_at, end_at
        self.fallback_window = fallback_window
        self.mask = mask
        self._cache: dict = {}
        self._always_active = start_at <= 0.0 and end_at >= 1.0
        self._last_sigmas: torch.Tensor | None = None
        self._last_sigma = float("inf")

    def sigma(self, step: Step | None, sigmas: torch.Tensor | None) -> float:
        """This model call's sigma, read from the device once per step (the same tensor reaches all 70 layers)."""
        if step is not None:
            return step.sigma
        if sigmas is None:
            return float("inf")
        if sigmas is not self._last_sigmas:
            self._last_sigmas, self._last_sigma = sigmas, float(sigmas.detach().flatten()[0])
        return self._last_sigma

    def active(self, step: Step | None, sigmas: torch.Tensor | None) -> bool:
        """In the start/end window at this call's sigma; decided once per step."""
        if self._always_active:
            return True
        if step is None:
            start, end = self.fallback_window
            return sigmas is None or end <= self.sigma(None, sigmas) <= start
        hit = step.active.get(id(self))
        if hit is None:
            start, end = step.run.window(self.start_at, self.end_at) if step.run is not None else self.fallback_window
            hit = step.active[id(self)] = end <= step.sigma <= start
        return hit

    def batch_kv(self, key: AttnKey, identity: tuple[bool, ...], rows: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        cache_key = ("kv", key, identity, rows, device, dtype)
        hit = self._cache.get(cache_key)
        if hit is None:
            k_c, v_c, k_u, v_u = self.kv.per_layer[key]
            hit = (cfg_rows(k_c, k_u, identity, rows).to(device=device, dtype=dtype),
                   cfg_rows(v_c, v_u, identity, rows).to(device=device, dtype=dtype))
            self._cache[cache_key] = hit
        return hit

    def batch_mask(self, grid: tuple[int, int], plan: ChunkPlan, rows: int, device, dtype) -> torch.Tensor:
        """``[rows, tokens, 1]``: per chunk, the mask cut to the chunk's crop (area conds) and nearest-resized to the grid."""
        cache_key = ("mask", grid, plan.areas, plan.latent_hw, rows, device, dtype)
        hit = self._cache.get(cache_key)
        if hit is None:
            per_chunk = rows // len(plan.areas)
            parts = []
            for area in plan.areas:
                small = F.interpolate(crop_to_area(self.mask, area, plan.latent_hw)[:, None].float(), size=grid, mode="nearest")[:, 0]
                parts.append(repeat_rows(small.reshape(small.shape[0], -1, 1), per_chunk, "mask"))
            hit = torch.cat(parts).to(device=device, dtype=dtype)
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
        precision = extra_options.get("attn_precision")
        # transformer_options reach optimized_attention so that attention-backend overrides apply here too.
        if self.previous is not None:
            out = self.previous(q, k, v, extra_options)
        else:
            out = optimized_attention(q, k, v, heads, attn_precision=precision, transformer_options=extra_options)
        face = self.face
        step = extra_options.get(STEP_KEY)
        if face.active(step, extra_options.get("sigmas")):
            plan = chunk_plan(extra_options, 1)
            k_face, v_face = face.batch_kv(self.key, plan.identity, q.shape[0], q.device, q.dtype)
            face_out = optimized_attention(q, k_face, v_face, heads, attn_precision=precision, transformer_options=extra_options)
            if face.mask is not None:
                grid = _token_grid(extra_options, q.shape[1])
                face_out = face_out * face.batch_mask(grid, plan, q.shape[0], q.device, q.dtype)
            out = out + face.weight * face_out
        if self.added:
            out = self._run_added(out, q, k, v, extra_options, face.sigma(step, extra_options.get("sigmas")))
        return out

    def _run_added(self, out, q, k, v, extra_options, sigma: float):
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
    """A clone of ``model`` with face attention in all 70 SDXL attn2 layers; ``model`` is left untouched.

    The clone also carries the pack's sampler wrappers (``sampling.add_wrappers``): they tell the patch, at
    sampling time, which rows carry the identity, the window in sigmas and the crop of area conds.
    """
    check_model(model, adapter)
    sampling = model.get_model_object("model_sampling")
    face = FaceAttention(
        kv=kv, weight=float(weight), start_at=float(start_at), end_at=float(end_at),
        fallback_window=(float(sampling.percent_to_sigma(start_at)), float(sampling.percent_to_sigma(end_at))),
        mask=None if mask is None else (mask[None] if mask.ndim == 2 else mask).float().cpu(),
    )
    patched = model.clone()
    existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    for key in SDXL_ATTN2_KEYS:
        patched.set_model_attn2_replace(FaceAttentionPatch(face, key, existing.get(key)), *key)
    add_wrappers(patched)
    return patched
