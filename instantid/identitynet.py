"""IdentityNet: an SDXL ControlNet whose cross-attention context is the face tokens (spec section 7).

The face tokens are scoped to the IdentityNet control object itself, not put
on the conditioning, so any other ControlNet chained before or after it keeps
seeing the text. Chaining follows ComfyUI's own ControlNetApplyAdvanced.
"""

from __future__ import annotations

import logging

import comfy.controlnet
import comfy.utils
import torch
import torch.nn.functional as F

from .adapter import IdentityTokens
from .attention import attn2_modules, cfg_rows, repeat_rows
from .errors import ControlNetMismatchError
from .faces import Faces
from .sampling import ChunkPlan, chunk_plan, crop_to_area, wrapper_hooks

log = logging.getLogger(__name__)


def check_controlnet(control_net, token_dim: int) -> None:
    """Raise ControlNetMismatchError unless ``control_net`` is an SDXL ControlNet that can take the face tokens."""
    kind = type(control_net).__name__
    model = getattr(control_net, "control_model", None)
    if not isinstance(control_net, comfy.controlnet.ControlNet) or model is None:
        raise ControlNetMismatchError(
            f"The control_net input is a {kind}, not a ControlNet. Load IdentityNet "
            "(InstantX/InstantID ControlNetModel/diffusion_pytorch_model.safetensors) with 'Load ControlNet Model'."
        )
    widths = {m.to_k.in_features for m in attn2_modules(model).values()}
    if widths != {token_dim}:
        found = f"{sorted(widths)[0]}-wide" if len(widths) == 1 else ("no" if not widths else f"{sorted(widths)}-wide")
        family = {768: " (an SD1.5 ControlNet)", 1024: " (an SD2 ControlNet)"}.get(next(iter(widths), 0), "")
        raise ControlNetMismatchError(
            f"This ControlNet has {found} cross-attention{family}; IdentityNet is an SDXL ControlNet with "
            f"{token_dim}-wide cross-attention. Load IdentityNet (InstantX/InstantID "
            "ControlNetModel/diffusion_pytorch_model.safetensors) from models/controlnet."
        )


def _add_residuals(own: dict, prev: dict | None) -> dict:
    """Sum two ControlNet outputs entry by entry, as ComfyUI chains ControlNets."""
    if prev is None:
        return own
    out = {}
    for name in ("input", "middle", "output"):
        mine, theirs = list(own.get(name, [])), prev.get(name, [])
        for i, p in enumerate(theirs):
            if i >= len(mine):
                mine.append(p)
            elif p is not None:
                mine[i] = p if mine[i] is None else p + mine[i]
        out[name] = mine
    return out


class IdentityNetControl(comfy.controlnet.ControlBase):
    """ControlBase wrapper: runs an inner copy of the IdentityNet with the face tokens as context.

    tokens: IdentityTokens (rows of conditional conds get ``tokens.cond``, rows of the negative ``tokens.uncond``;
        which is which comes from ``sampling.chunk_plan``).
    mask: optional ``[M, H, W]``; residuals are multiplied by it, bilinearly resized to each resolution.
    pose: optional FACES whose first face's keypoints are drawn at the generation size when no hint image was given.
    The hint and the mask cover the whole image; a chunk computed on a crop (area conds) gets its part of them.
    """

    def __init__(self, inner, tokens: IdentityTokens, mask: torch.Tensor | None = None, pose: Faces | None = None,
                 placement: str = "cover") -> None:
        super().__init__()
        self.inner = inner
        self.tokens = tokens
        self.mask = mask
        self.pose = pose
        self.placement = placement
        self._cache: dict = {}  # per sampling run: drawn/resized hints, resized masks (by shape, crop and device)

    def set_cond_hint(self, cond_hint, strength=1.0, timestep_percent_range=(0.0, 1.0), vae=None, extra_concat=[]):  # noqa: B006 - host signature
        super().set_cond_hint(cond_hint, strength, timestep_percent_range, vae, extra_concat)
        self.inner.set_cond_hint(cond_hint, strength, timestep_percent_range, vae, extra_concat)
        return self

    def _whole_hint(self, height: int, width: int) -> torch.Tensor:
        """``[N, 3, height, width]``: the drawn pose, or the given hint resized as ComfyUI's ControlNet does."""
        key = ("hint", height, width)
        hit = self._cache.get(key)
        if hit is None:
            if self.pose is not None:
                from .keypoints import pose_image

                hit = pose_image(self.pose, width, height, self.placement).movedim(-1, 1)
            else:
                hit = comfy.utils.common_upscale(self.inner.cond_hint_original, width, height, self.inner.upscale_algorithm, "center")
            self._cache[key] = hit = self.inner.preprocess_image(hit)
        return hit

    def _hint_rows(self, x_noisy: torch.Tensor, plan: ChunkPlan, rows: int) -> torch.Tensor:
        """The hint for this call: whole, or cut to each chunk's crop, on the control model's device and dtype."""
        ratio = self.inner.compression_ratio
        latent_hw = plan.latent_hw or tuple(x_noisy.shape[-2:])
        dtype = self.inner.manual_cast_dtype or self.inner.control_model.dtype
        key = ("rows", plan.areas, latent_hw, rows, x_noisy.device, dtype)
        hit = self._cache.get(key)
        if hit is None:
            whole = self._whole_hint(latent_hw[0] * ratio, latent_hw[1] * ratio)
            if len(set(plan.areas)) == 1:  # one crop for all chunks: ComfyUI broadcasts the batch itself
                hit = crop_to_area(whole, plan.areas[0], latent_hw)
            else:
                per_chunk = rows // len(plan.areas)
                parts = [crop_to_area(whole, area, latent_hw) for area in plan.areas]
                hit = torch.cat([p.expand(per_chunk, -1, -1, -1) if p.shape[0] == 1
                                 else comfy.controlnet.broadcast_image_to(p, per_chunk, 1) for p in parts])
            self._cache[key] = hit = hit.to(device=x_noisy.device, dtype=dtype)
        return hit

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        prev = None
        if self.previous_controlnet is not None:
            prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number, transformer_options)
        plan = chunk_plan(transformer_options, batched_number)
        rows = x_noisy.shape[0]
        # Set before every call: the inner ControlNet keeps a hint whose size matches, and would stretch a whole-image
        # hint onto a crop.
        self.inner.cond_hint = hint = self._hint_rows(x_noisy, plan, rows)
        face_cond = dict(cond)
        face_cond["crossattn_controlnet"] = self._token_rows(plan, rows, hint.device, hint.dtype)
        own = self.inner.get_control(x_noisy, t, face_cond, batched_number, transformer_options)
        if own is None:
            return prev
        if self.mask is not None:
            own = self._masked(own, plan, rows)
        return _add_residuals(own, prev)

    def _mask_rows(self, shape: tuple[int, int], plan: ChunkPlan, rows: int, device, dtype) -> torch.Tensor:
        key = ("mask", shape, plan.areas, plan.latent_hw, rows, device, dtype)
        hit = self._cache.get(key)
        if hit is None:
            per_chunk = rows // len(plan.areas)
            parts = [repeat_rows(F.interpolate(crop_to_area(self.mask, area, plan.latent_hw)[:, None].to(torch.float32), size=shape,
                                               mode="bilinear", align_corners=False), per_chunk, "mask")
                     for area in plan.areas]
            self._cache[key] = hit = torch.cat(parts).to(device=device, dtype=dtype)
        return hit

    def _masked(self, control: dict, plan: ChunkPlan, rows: int) -> dict:
        return {name: [r if r is None else r * self._mask_rows(tuple(r.shape[-2:]), plan, rows, r.device, r.dtype) for r in residuals]
                for name, residuals in control.items()}

    def _token_rows(self, plan: ChunkPlan, rows: int, device, dtype) -> torch.Tensor:
        """IdentityNet's context for this call, kept on the control model's device (no copy per step)."""
        key = ("tokens", plan.identity, rows, device, dtype)
        hit = self._cache.get(key)
        if hit is None:
            self._cache[key] = hit = cfg_rows(self.tokens.cond, self.tokens.uncond, plan.identity, rows).to(device=device, dtype=dtype)
        return hit

    def pre_run(self, model, percent_to_timestep_function):
        super().pre_run(model, percent_to_timestep_function)
        self.inner.pre_run(model, percent_to_timestep_function)

    def cleanup(self):
        self._cache.clear()
        self.inner.cleanup()
        super().cleanup()

    def get_models(self):
        return super().get_models() + self.inner.get_models()

    def get_extra_hooks(self):
        return self.inner.get_extra_hooks() + super().get_extra_hooks()

    def inference_memory_requirements(self, dtype):
        return self.inner.inference_memory_requirements(dtype) + super().inference_memory_requirements(dtype)

    def copy(self):
        c = IdentityNetControl(self.inner.copy(), self.tokens, self.mask, self.pose, self.placement)
        self.copy_to(c)
        return c


def apply_identitynet(positive, negative, control_net, tokens: IdentityTokens, hint: torch.Tensor | None,
                      strength: float, start_at: float, end_at: float, mask: torch.Tensor | None = None,
                      pose: Faces | None = None, placement: str = "cover", vae=None, bring_wrappers: bool = False):
    """New (positive, negative) with IdentityNet chained after any ControlNet already on them.

    hint: IMAGE ``[N, H, W, 3]`` keypoint image, or None to draw ``pose``'s
    keypoints at the generation size when sampling starts.
    bring_wrappers: the model was not patched by the pack (IdentityNet alone), so the control carries the
    pack's sampler wrappers itself, as a hook group ComfyUI registers for ControlNets (``extra_hooks``).
    """
    check_controlnet(control_net, tokens.cond.shape[-1])
    if hint is None and pose is None:
        raise ValueError("IdentityNet needs a keypoint image or a FACES value to draw one from.")
    if strength == 0:
        return positive, negative
    mask = None if mask is None else (mask[None] if mask.ndim == 2 else mask).float().cpu()
    inner = control_net.copy()
    inner.set_previous_controlnet(None)
    placeholder = torch.zeros(1, 3, 8, 8) if hint is None else hint.movedim(-1, 1)
    template = IdentityNetControl(inner, tokens, mask, pose if hint is None else None, placement)
    template.set_cond_hint(placeholder, strength, (start_at, end_at), vae=vae)
    if bring_wrappers:
        template.extra_hooks = wrapper_hooks()
    made: dict = {}
    out = []
    for conditioning in (positive, negative):
        entries = []
        for embedding, options in conditioning:
            options = options.copy()
            prev = options.get("control", None)
            if prev not in made:
                made[prev] = template.copy().set_previous_controlnet(prev)
            options["control"] = made[prev]
            options["control_apply_to_uncond"] = False
            entries.append([embedding, options])
        out.append(entries)
    return out[0], out[1]
