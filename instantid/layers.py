"""The 70 SDXL cross-attention layers InstantID patches, and how the checkpoint numbers them.

The checkpoint numbers attention processors in diffusers order (down blocks,
then up blocks, then the mid block; attn1 takes the even numbers, attn2 the
odd ones). ComfyUI keys attn2 patches by (block, block id, transformer index),
and calls the SDXL middle block ``("middle", 0)``.
"""

from __future__ import annotations

AttnKey = tuple[str, int, int]

# (ComfyUI block, block id, transformer depth, channels), in checkpoint order.
_SDXL_GROUPS: tuple[tuple[str, int, int, int], ...] = (
    ("input", 4, 2, 640),
    ("input", 5, 2, 640),
    ("input", 7, 10, 1280),
    ("input", 8, 10, 1280),
    ("output", 0, 10, 1280),
    ("output", 1, 10, 1280),
    ("output", 2, 10, 1280),
    ("output", 3, 2, 640),
    ("output", 4, 2, 640),
    ("output", 5, 2, 640),
    ("middle", 0, 10, 1280),
)


def sdxl_attn2_layers() -> list[tuple[int, AttnKey, int]]:
    """[(checkpoint number n, ComfyUI attn2 key, SDXL channels)] for all 70 layers, n = 1, 3, ..., 139."""
    layers = []
    n = 1
    for block, block_id, depth, channels in _SDXL_GROUPS:
        for index in range(depth):
            layers.append((n, (block, block_id, index), channels))
            n += 2
    return layers


SDXL_ATTN2_LAYERS = sdxl_attn2_layers()
SDXL_ATTN2_KEYS: tuple[AttnKey, ...] = tuple(key for _, key, _ in SDXL_ATTN2_LAYERS)
assert len(SDXL_ATTN2_KEYS) == 70 and SDXL_ATTN2_LAYERS[-1][0] == 139
