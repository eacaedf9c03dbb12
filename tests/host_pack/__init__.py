"""Test-only custom node pack for the server tests.

Registers the tiny SDXL size with ComfyUI's model detection inside the server
process (so the stock UNet loader accepts the tiny test UNet) and provides a
text-free conditioning node, since no text encoder can be downloaded here, and a
node that drives a combo input through a link.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

_TESTS = Path(__file__).resolve().parent.parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from tiny_models import register_tiny_sdxl  # noqa: E402

register_tiny_sdxl()


class InstantIDTestConditioning:
    """Seeded random SDXL conditioning: cond [1,77,2048], pooled_output [1,1280], width/height."""

    CATEGORY = "testing"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's name
        return {"required": {
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
            "width": ("INT", {"default": 128, "min": 8, "max": 4096, "step": 8}),
            "height": ("INT", {"default": 128, "min": 8, "max": 4096, "step": 8}),
        }}

    def make(self, seed, width, height):
        g = torch.Generator().manual_seed(int(seed))
        cond = torch.randn(1, 77, 2048, generator=g)
        pooled = torch.randn(1, 1280, generator=g)
        return ([[cond, {"pooled_output": pooled, "width": int(width), "height": int(height)}]],)


class InstantIDTestChoice:
    """Outputs its text as a COMBO value: what a selector node of another pack (or a converted primitive) sends
    into a file/folder combo through a link, which ComfyUI validates before the value exists."""

    CATEGORY = "testing"
    RETURN_TYPES = ("COMBO",)
    FUNCTION = "choose"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's name
        return {"required": {"value": ("STRING", {"default": ""})}}

    def choose(self, value):
        return (value,)


NODE_CLASS_MAPPINGS = {"InstantIDTestConditioning": InstantIDTestConditioning, "InstantIDTestChoice": InstantIDTestChoice}
NODE_DISPLAY_NAME_MAPPINGS = {"InstantIDTestConditioning": "InstantID Test Conditioning (tests only)",
                              "InstantIDTestChoice": "InstantID Test Choice (tests only)"}
