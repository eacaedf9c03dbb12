"""Group photos in ``make bench``: what each extra person costs per step, and how far one person's identity
reaches into another's region through the UNet's own layers.

``instantid.bench`` adds :func:`group_configs` to the configurations it times
(so they share its timing loop and FLOP count) and :func:`summary` /
:func:`bleed` to its results.

- cost: ``group_N`` is N people side by side (each their own identity,
  keypoints and ellipse mask from :mod:`instantid.regions`). One extra person =
  ``(group_3 - group_1) / 2``, compared with one IdentityNet pass
  (``full - attention`` of the same run) and with a plain step.
- bleed: identity B masked to the right half, added to identity A on the
  left. At the injection points B adds exactly 0 on the left (the tests prove
  it per layer and per residual); the UNet's convolutions and self-attention
  still carry some of B's effect across. Reported as the mean |change B makes|
  on the left half (and in the leftmost quarter) over the same on the right
  half, on the one-step denoised latent.
"""

from __future__ import annotations

import dataclasses

import numpy as np

PEOPLE = (1, 2, 3)


def _people_layout(count: int, width: int, height: int, seed: int = 0):
    """``count`` faces side by side on a ``width`` x ``height`` canvas, each with its own random identity."""
    from .faces import FaceRecord, Faces
    from .regions import build_layout

    rng = np.random.default_rng(seed)
    column = width / count
    faces = []
    for i in range(count):
        w, h = column * 0.45, height * 0.4
        x, y = column * i + (column - w) / 2, height * 0.2
        kps = np.array([x, y]) + np.array([[0.3, 0.38], [0.7, 0.38], [0.5, 0.58], [0.35, 0.78], [0.65, 0.78]]) * [w, h]
        faces.append(FaceRecord(bbox=np.array([x, y, x + w, y + h], np.float32), keypoints=kps.astype(np.float32),
                                embedding=(rng.standard_normal(512) * 20).astype(np.float32), score=0.9, source_size=(width, height)))
    return build_layout(faces, Faces(frames=tuple(faces)), width, height, "cover", "left_to_right", shape="ellipse", grow=0.5,
                        feather=16)


def group_configs(unet, control_net, adapter, positive, negative, latent: int) -> dict[str, tuple]:
    """{'group_1': (model, positive, negative), 'group_2': ..., 'group_3': ...} at ``latent * 8`` pixels square."""
    from .group import apply_group

    size = latent * 8
    return {f"group_{n}": apply_group(unet, positive, negative, adapter, control_net, _people_layout(n, size, size), 0.8, 0.8)
            for n in PEOPLE}


def summary(median: dict[str, float], flops: dict[str, float]) -> dict:
    """Per-extra-person numbers from the bench's medians and FLOP counts (both keyed by configuration name)."""
    first, last = PEOPLE[0], PEOPLE[-1]
    per_person = (median[f"group_{last}"] - median[f"group_{first}"]) / (last - first)
    identitynet = median["full"] - median["attention"]
    flops_per_person = (flops[f"group_{last}"] - flops[f"group_{first}"]) / (last - first)
    return {
        "group_step_seconds": {n: median[f"group_{n}"] for n in PEOPLE},
        "group_seconds_per_extra_person": per_person,
        "group_extra_person_vs_plain_step": per_person / median["plain"],
        "group_extra_person_vs_identitynet_pass": per_person / identitynet if identitynet > 0 else float("nan"),
        "group_flop_ratio_per_extra_person": flops_per_person / flops["plain"],
        "group_flop_ratio_identitynet_pass": (flops["full"] - flops["attention"]) / flops["plain"],
    }


def _denoised(model, positive, negative, latent: int):
    import comfy.sample
    import comfy.samplers
    import torch

    noise = torch.randn(1, 4, latent, latent, generator=torch.Generator().manual_seed(1))
    out = {}

    def one_call(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        out["denoised"] = model_k(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))
        return out["denoised"]

    with torch.no_grad():
        comfy.sample.sample_custom(model, noise, 5.0, comfy.samplers.KSAMPLER(one_call), torch.tensor([7.0, 0.0]), positive,
                                   negative, torch.zeros_like(noise), disable_pbar=True, seed=0)
    return out["denoised"]


def bleed(unet, control_net, adapter, positive, negative, latent: int) -> dict:
    """How much of identity B's effect (masked to the right half) shows on the left half of the denoised latent."""
    import torch

    from .group import apply_group
    from .regions import GroupLayout

    size = latent * 8
    two = _people_layout(2, size, size, seed=3)
    left, right = torch.zeros(size, size), torch.zeros(size, size)
    left[:, : size // 2], right[:, size // 2 :] = 1.0, 1.0
    a, b = dataclasses.replace(two.people[0], mask=left), dataclasses.replace(two.people[1], mask=right)
    only_a = apply_group(unet, positive, negative, adapter, control_net, GroupLayout(size, size, (a,)), 0.8, 0.8)
    both = apply_group(unet, positive, negative, adapter, control_net, GroupLayout(size, size, (a, b)), 0.8, 0.8)
    change = (_denoised(*both, latent) - _denoised(*only_a, latent)).abs()[0].mean(0)  # [h, w] latent cells
    half, quarter = latent // 2, latent // 4
    own = float(change[:, half:].mean())
    return {"group_bleed_left_half_vs_own_half": float(change[:, :half].mean()) / own,
            "group_bleed_left_quarter_vs_own_half": float(change[:, :quarter].mean()) / own}


def table_rows(r: dict) -> list[tuple[str, str]]:
    if "group_seconds_per_extra_person" not in r:
        return []
    steps = ", ".join(f"{n}: {s:.4f}" for n, s in r["group_step_seconds"].items())
    return [
        ("group step (s) by people", steps),
        ("each extra person", f"+{r['group_seconds_per_extra_person']:.4f} s/step = {r['group_extra_person_vs_plain_step']:.3f} plain steps "
                              f"= {r['group_extra_person_vs_identitynet_pass']:.2f} IdentityNet passes "
                              f"(FLOPs {r['group_flop_ratio_per_extra_person']:.3f} vs IdentityNet {r['group_flop_ratio_identitynet_pass']:.3f})"),
        ("bleed of B into A's half", f"{r['group_bleed_left_half_vs_own_half']:.3f} of its effect in its own half "
                                     f"({r['group_bleed_left_quarter_vs_own_half']:.3f} in the far quarter)"),
    ]
