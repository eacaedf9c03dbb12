"""IdentityNet: an SDXL ControlNet whose cross-attention context is the face tokens (spec section 7).

The face tokens are scoped to the IdentityNet control object itself, not put
on the conditioning, so any other ControlNet chained before or after it keeps
seeing the text. Chaining follows ComfyUI's own ControlNetApplyAdvanced.
"""

from __future__ import annotations

import logging

import comfy.controlnet
import torch
import torch.nn.functional as F

from .adapter import IdentityTokens
from .attention import attn2_modules, cfg_rows, repeat_rows
from .errors import ControlNetMismatchError
from .faces import Faces

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

    tokens: IdentityTokens (cond rows get ``tokens.cond``, uncond rows ``tokens.uncond``).
    mask: optional ``[M, H, W]``; residuals are multiplied by it, bilinearly resized to each resolution.
    pose: optional FACES whose keypoints are drawn at the generation size when no hint image was given.
    """

    def __init__(self, inner, tokens: IdentityTokens, mask: torch.Tensor | None = None, pose: Faces | None = None,
                 placement: str = "cover") -> None:
        super().__init__()
        self.inner = inner
        self.tokens = tokens
        self.mask = mask
        self.pose = pose
        self.placement = placement
        self._drawn_size: tuple[int, int] | None = None

    def set_cond_hint(self, cond_hint, strength=1.0, timestep_percent_range=(0.0, 1.0), vae=None, extra_concat=[]):  # noqa: B006 - host signature
        super().set_cond_hint(cond_hint, strength, timestep_percent_range, vae, extra_concat)
        self.inner.set_cond_hint(cond_hint, strength, timestep_percent_range, vae, extra_concat)
        return self

    def _draw_hint(self, height: int, width: int) -> None:
        if self.pose is None or self._drawn_size == (height, width):
            return
        from .keypoints import keypoint_images

        hint = keypoint_images(self.pose, width, height, placement=self.placement)[:1]
        self.inner.cond_hint_original = hint.movedim(-1, 1)
        self.inner.cond_hint = None
        self._drawn_size = (height, width)

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        prev = None
        if self.previous_controlnet is not None:
            prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number, transformer_options)
        self._draw_hint(x_noisy.shape[-2] * self.inner.compression_ratio, x_noisy.shape[-1] * self.inner.compression_ratio)
        cond_or_uncond = transformer_options.get("cond_or_uncond") or [0] * batched_number
        face_cond = dict(cond)
        face_cond["crossattn_controlnet"] = cfg_rows(self.tokens.cond, self.tokens.uncond, cond_or_uncond, x_noisy.shape[0])
        own = self.inner.get_control(x_noisy, t, face_cond, batched_number, transformer_options)
        if own is None:
            return prev
        if self.mask is not None:
            own = self._masked(own, x_noisy.shape[0], len(cond_or_uncond))
        return _add_residuals(own, prev)

    def _masked(self, control: dict, rows: int, chunks: int) -> dict:
        out = {}
        for name, residuals in control.items():
            masked = []
            for r in residuals:
                if r is None:
                    masked.append(r)
                    continue
                m = F.interpolate(self.mask[:, None].to(r.device, torch.float32), size=r.shape[-2:], mode="bilinear", align_corners=False)
                m = repeat_rows(m, rows // chunks, "mask").repeat(chunks, 1, 1, 1)
                masked.append(r * m.to(r.dtype))
            out[name] = masked
        return out

    def pre_run(self, model, percent_to_timestep_function):
        super().pre_run(model, percent_to_timestep_function)
        self.inner.pre_run(model, percent_to_timestep_function)

    def cleanup(self):
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
                      pose: Faces | None = None, placement: str = "cover", vae=None):
    """New (positive, negative) with IdentityNet chained after any ControlNet already on them.

    hint: IMAGE ``[N, H, W, 3]`` keypoint image, or None to draw ``pose``'s
    keypoints at the generation size when sampling starts.
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
