"""What a model file is, from its safetensors header alone (names, dtypes, shapes; no tensor is read).

Used by the doctor to find IdentityNet whatever the file is called: an SDXL
ControlNet is recognised by its tensors, in either layout ComfyUI loads
(diffusers, as InstantX publishes it, or ComfyUI's own ldm layout, with or
without a ``control_model.`` prefix).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

SDXL_CONTEXT = 2048  # text-context width of SDXL cross-attention; IdentityNet's face tokens have it too
SDXL_ADM = 2816  # pooled text (1280) + 6 size/crop embeddings (6 x 256): the input of SDXL's size embedding
HEADER_LIMIT = 200_000_000

# (diffusers, ldm) key of each part, without the optional "control_model." prefix.
_HINT_CONV = ("controlnet_cond_embedding.conv_in.weight", "input_hint_block.0.weight")
_ADM_LINEAR = ("add_embedding.linear_1.weight", "label_emb.0.0.weight")
_OUTPUTS = (("controlnet_down_blocks.", "controlnet_mid_block."), ("zero_convs.", "middle_block_out."))


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (names, dtypes, shapes); raises ValueError if broken or truncated."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > min(size - 8, HEADER_LIMIT):
            raise ValueError(f"header length {length:,} does not fit the file ({size:,} bytes): not safetensors, or truncated")
        try:
            header = json.loads(fh.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"the safetensors header is not valid JSON ({exc})") from exc
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + length + end > size:
        raise ValueError(f"truncated: the header promises {8 + length + end:,} bytes, the file has {size:,}")
    header.pop("__metadata__", None)
    return header


def cross_attention_width(header: dict) -> int | None:
    """Text-context width read from the first ``attn2.to_k.weight`` ([inner, context]); None if there is none."""
    for name in sorted(header):
        if name.endswith("attn2.to_k.weight"):
            return int(header[name]["shape"][1])
    return None


def _unprefixed(header: dict) -> dict:
    prefix = "control_model."
    if header and all(k.startswith(prefix) for k in header):
        return {k[len(prefix):]: v for k, v in header.items()}
    return header


def _input_width(header: dict, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        if key in header and len(header[key]["shape"]) >= 2:
            return int(header[key]["shape"][1])
    return None


@dataclass(frozen=True)
class ControlNetShape:
    """What the tensors say. hint_channels: input channels of the hint block's first conv (3 = an RGB image);
    context: cross-attention width; adm: input width of the size/class embedding (SDXL: 2816)."""

    is_controlnet: bool
    hint_channels: int | None
    context: int | None
    adm: int | None

    @property
    def can_be_identitynet(self) -> bool:
        """An SDXL ControlNet taking an RGB hint: IdentityNet's architecture (spec section 7)."""
        return self.is_controlnet and self.hint_channels == 3 and self.context == SDXL_CONTEXT and self.adm == SDXL_ADM

    def describe(self) -> str:
        if not self.is_controlnet:
            return "not a ControlNet (no controlnet_* / zero_convs output layers)"
        if self.context is None:
            return "a ControlNet without cross-attention (attn2) layers, so it cannot see the face tokens"
        if self.context != SDXL_CONTEXT:
            family = {768: "an SD1.5", 1024: "an SD2"}.get(self.context, f"a {self.context}-wide")
            return f"{family} ControlNet (cross-attention {self.context})"
        if self.hint_channels is None:
            return "an SDXL ControlNet without an image-hint block (a control-LoRA or another add-on)"
        if self.hint_channels != 3:
            return f"an SDXL ControlNet whose hint block takes {self.hint_channels} channels, not an RGB image"
        if self.adm != SDXL_ADM:
            return f"a ControlNet with {SDXL_CONTEXT}-wide cross-attention but no SDXL size embedding ({SDXL_ADM} inputs)"
        return f"an SDXL ControlNet ({SDXL_CONTEXT}-wide cross-attention, RGB hint block)"


def controlnet_shape(header: dict) -> ControlNetShape:
    """Classify a safetensors header as a ControlNet (or not) by its key names and shapes."""
    header = _unprefixed(header)
    outputs = any(k.startswith(prefixes) for prefixes in _OUTPUTS for k in header)
    return ControlNetShape(
        is_controlnet=outputs,
        hint_channels=_input_width(header, _HINT_CONV),
        context=cross_attention_width(header),
        adm=_input_width(header, _ADM_LINEAR),
    )


def is_sdxl_checkpoint(header: dict) -> bool:
    if any(k.startswith("conditioner.embedders.1.") for k in header):
        return True
    unet = {k: v for k, v in header.items() if k.startswith("model.diffusion_model.")}
    return cross_attention_width(unet) == SDXL_CONTEXT
