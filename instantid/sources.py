"""Where the files InstantID needs are published (spec section 11), for messages that name a missing
file together with its source. The example workflows carry the same facts as ``properties.models``.
"""

from __future__ import annotations

from dataclasses import dataclass

DOWNLOAD_COMMAND = "`python scripts/download_models.py` in the pack's folder, with the Python that runs ComfyUI"


@dataclass(frozen=True)
class Published:
    """name: the file (or pack folder) as ComfyUI lists it; url: the official download; folder: ComfyUI model folder."""

    name: str
    url: str
    folder: str


ADAPTER = Published("ip-adapter.bin", "https://huggingface.co/InstantX/InstantID/resolve/main/ip-adapter.bin", "instantid")
IDENTITYNET = Published(
    "instantid-controlnet.safetensors",
    "https://huggingface.co/InstantX/InstantID/resolve/main/ControlNetModel/diffusion_pytorch_model.safetensors",
    "controlnet",
)
ANTELOPEV2 = Published(
    "antelopev2", "https://github.com/deepinsight/insightface/releases/download/v0.7/antelopev2.zip", "insightface"
)


def adapter_hint(folder: str) -> str:
    return f"Get {ADAPTER.name} from {ADAPTER.url} into {folder}, or run {DOWNLOAD_COMMAND}."


def face_pack_hint(pack: str) -> str:
    if pack != ANTELOPEV2.name:
        return f"Get the '{pack}' pack from insightface's model releases."
    return (f"Download antelopev2.zip from {ANTELOPEV2.url} and unzip it into models/insightface/models/, "
            f"or run {DOWNLOAD_COMMAND}.")
