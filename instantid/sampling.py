"""What a patch can only learn once sampling starts: which rows carry the identity, the window, the crop.

ComfyUI tells an attention patch or a ControlNet little about the batch it
computes. ``cond_or_uncond`` holds indices into whatever cond lists the guider
handed to ``calc_cond_batch`` (CFGGuider: [positive, negative]; DualCFGGuider:
[negative, middle, positive]; PerpNegGuider: [positive, negative, empty];
SAG's extra pass: [negative] alone), ``uuids`` names each chunk's cond, and a
ModelSampling node placed after Apply changes the sigmas. Two sampler wrappers
(``comfy.patcher_extension``) read the rest from the guider itself:

- OUTER_SAMPLE, once per sampling run: the guider's named conds (each cond's
  uuid gives its role) and the model sampling really used (start/end sigmas).
- CALC_COND_BATCH, once per model evaluation: the role of each cond list (by
  its first cond, since ComfyUI only appends copies of area conds), the crop of
  every area cond, and the sigma. It hands this down as a :class:`Step` in
  ``transformer_options``; patches read it once per model call.

The identity belongs to every cond except the unconditional ones: the guider's
``negative`` and PerpNeg's ``empty_negative_prompt`` (the baseline its
guidance is measured from, exactly like CFG's negative: with neg_scale 0,
PerpNeg is CFG with the empty prompt as negative). Without a Step (a patch
called outside a ComfyUI sampler, or a cond list the guider never named),
index 0 is the conditional one, as in CFGGuider.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import comfy.patcher_extension
import torch

RUN_KEY = "instantid_run"
STEP_KEY = "instantid_step"
WRAPPER_KEY = "instantid"
UNCOND_ROLES = frozenset({"negative", "empty_negative_prompt"})

Area = tuple[int, int, int, int]  # (height, width, y, x) in latent pixels, as ComfyUI's area conds


@dataclass(frozen=True)
class ChunkPlan:
    """Per chunk of one model call (chunk i = rows i*n .. i*n+n-1): identity on/off and the crop computed."""

    identity: tuple[bool, ...]
    areas: tuple[Area | None, ...]
    latent_hw: tuple[int, int] | None  # the whole latent; None when unknown (then no chunk is cropped)


class Run:
    """One sampling run: uuid -> role of every cond the guider named, and the model sampling it used."""

    def __init__(self, roles: dict, model_sampling) -> None:
        self.roles = roles
        self.model_sampling = model_sampling
        self._windows: dict[tuple[float, float], tuple[float, float]] = {}

    def window(self, start_at: float, end_at: float) -> tuple[float, float]:
        """(sigma_start, sigma_end) of a start/end fraction, with this run's model sampling (ComfyUI's pre_run rule)."""
        key = (start_at, end_at)
        hit = self._windows.get(key)
        if hit is None:
            hit = (float(self.model_sampling.percent_to_sigma(start_at)), float(self.model_sampling.percent_to_sigma(end_at)))
            self._windows[key] = hit
        return hit


def _crop(cond: dict, latent_hw: tuple[int, int]) -> Area | None:
    """The crop ``get_area_and_mult`` runs this cond on (ComfyUI 0.3.75's rule: clamp height/width to the latent)."""
    area = cond.get("area")
    if area is None or len(area) != 4 or isinstance(area[0], str):
        return None
    h, w, y, x = (int(v) for v in area)
    h, w = min(latent_hw[0] - y, h), min(latent_hw[1] - x, w)
    if (h, w, y, x) == (latent_hw[0], latent_hw[1], 0, 0):
        return None
    return h, w, y, x


class Step:
    """One ``calc_cond_batch`` call: identity per cond-list index, area per (index, uuid), the sigma."""

    def __init__(self, run: Run | None, conds: Sequence, latent_hw: tuple[int, int], sigma: float) -> None:
        self.run = run
        self.conds = conds
        self.sigma = sigma
        self.latent_hw = latent_hw
        self.identity = tuple(self._carries_identity(i, c) for i, c in enumerate(conds))
        self.areas = [{c.get("uuid"): _crop(c, latent_hw) for c in (cond_list or ()) if "area" in c} for cond_list in conds]
        self._last_uuids = None
        self._last_plan: ChunkPlan | None = None
        self.active: dict[int, bool] = {}  # id(face data) -> in its window at this sigma, decided once per step

    def _carries_identity(self, index: int, cond_list) -> bool:
        role = None
        if self.run is not None and cond_list:
            role = self.run.roles.get(cond_list[0].get("uuid"))
        if role is None:
            return index == 0
        return role not in UNCOND_ROLES

    def plan(self, cond_or_uncond: Sequence[int], uuids: Sequence | None) -> ChunkPlan:
        # The same uuids list reaches every layer of one model call: compute once per call.
        if uuids is not None and uuids is self._last_uuids:
            return self._last_plan
        uuids_ = uuids if uuids is not None and len(uuids) == len(cond_or_uncond) else [None] * len(cond_or_uncond)
        plan = ChunkPlan(identity=tuple(self.identity[i] if i < len(self.identity) else i == 0 for i in cond_or_uncond),
                         areas=tuple(self.areas[i].get(u) if i < len(self.areas) else None for i, u in zip(cond_or_uncond, uuids_, strict=True)),
                         latent_hw=self.latent_hw)
        self._last_uuids, self._last_plan = uuids, plan
        return plan


def chunk_plan(transformer_options: dict, chunks: int) -> ChunkPlan:
    """The plan of the model call ``transformer_options`` belongs to (attention ``extra_options`` work too)."""
    cond_or_uncond = transformer_options.get("cond_or_uncond") or [0] * chunks
    step: Step | None = transformer_options.get(STEP_KEY)
    if step is None:
        return ChunkPlan(identity=tuple(i == 0 for i in cond_or_uncond), areas=(None,) * len(cond_or_uncond), latent_hw=None)
    return step.plan(cond_or_uncond, transformer_options.get("uuids"))


def outer_sample_wrapper(executor, *args, **kwargs):
    """OUTER_SAMPLE: remember the guider's roles and model sampling for this run (in its per-run model_options copy)."""
    guider = executor.class_obj
    options = guider.model_options.setdefault("transformer_options", {})
    roles = {}
    for role, conds in (getattr(guider, "conds", None) or {}).items():
        for cond in conds or ():
            roles.setdefault(cond.get("uuid"), role)
    previous = options.get(RUN_KEY)
    options[RUN_KEY] = Run(roles, guider.model_patcher.get_model_object("model_sampling"))
    try:
        return executor(*args, **kwargs)
    finally:  # CFGGuider samples with a copy of its options; a guider that does not must not keep a stale run
        if previous is None:
            options.pop(RUN_KEY, None)
        else:
            options[RUN_KEY] = previous


def calc_cond_batch_wrapper(executor, model, conds, x_in, timestep, model_options):
    """CALC_COND_BATCH: hand a Step for this model evaluation down to the patches, in a copy of the options."""
    options = model_options.get("transformer_options", {})
    step = options.get(STEP_KEY)
    if step is None or step.conds is not conds:
        step = Step(options.get(RUN_KEY), conds, (int(x_in.shape[-2]), int(x_in.shape[-1])), float(timestep.flatten()[0]))
        model_options = {**model_options, "transformer_options": {**options, STEP_KEY: step}}
    return executor(model, conds, x_in, timestep, model_options)


WRAPPERS = {
    comfy.patcher_extension.WrappersMP.OUTER_SAMPLE: outer_sample_wrapper,
    comfy.patcher_extension.WrappersMP.CALC_COND_BATCH: calc_cond_batch_wrapper,
}


def add_wrappers(patcher) -> None:
    """Register the two wrappers on a ModelPatcher clone (once, however many InstantID patches it carries)."""
    for kind, wrapper in WRAPPERS.items():
        if wrapper not in patcher.get_wrappers(kind, WRAPPER_KEY):
            patcher.add_wrapper_with_key(kind, WRAPPER_KEY, wrapper)


def wrapper_hooks():
    """The same wrappers as a hook group a ControlNet can carry (``extra_hooks``), for conditioning whose model
    was not patched by the pack (IdentityNet without face attention)."""
    import comfy.hooks

    group = comfy.hooks.HookGroup()
    group.add(comfy.hooks.TransformerOptionsHook({"wrappers": {kind: {WRAPPER_KEY: [w]} for kind, w in WRAPPERS.items()}}))
    return group


def crop_to_area(image: torch.Tensor, area: Area | None, latent_hw: tuple[int, int] | None) -> torch.Tensor:
    """The part of a whole-image tensor ``[..., H, W]`` under a latent crop, at the tensor's own resolution."""
    if area is None or latent_hw is None:
        return image
    h, w, y, x = area
    height, width = image.shape[-2:]
    top, bottom = round(y * height / latent_hw[0]), round((y + h) * height / latent_hw[0])
    left, right = round(x * width / latent_hw[1]), round((x + w) * width / latent_hw[1])
    return image[..., top:max(bottom, top + 1), left:max(right, left + 1)]
