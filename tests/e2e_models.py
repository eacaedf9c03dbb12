"""Every model a full InstantID graph needs, tiny and real-layout, written into ComfyUI's models folders.

Stock ComfyUI loaders (UNETLoader, ControlNetLoader, VAELoader 'taesdxl') and
the pack's loaders then find them by name, as they would a user's files.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from face_fixtures import blank_images, build_model_pack, paint_face
from PIL import Image
from tiny_models import build_all, randomize_, register_tiny_sdxl


@dataclass(frozen=True)
class GraphModels:
    base: Path
    unet_name: str
    controlnet_name: str
    sd15_unet_name: str
    sd15_controlnet_name: str
    adapter_name: str
    face_image: Path  # a PNG with one painted face, in <base>/input
    group_image: Path  # a PNG with two painted faces side by side, in <base>/input


def _write_taesdxl(models: Path) -> None:
    """Random TAESD-XL in ComfyUI's vae_approx layout: a real (tiny) VAE for decoding in graphs."""
    from comfy.taesd.taesd import TAESD
    from safetensors.torch import save_file

    taesd = TAESD()
    randomize_(taesd.taesd_encoder, seed=5, gain=0.5)
    randomize_(taesd.taesd_decoder, seed=6, gain=0.5)
    folder = models / "vae_approx"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in taesd.taesd_encoder.state_dict().items()}, str(folder / "taesdxl_encoder.safetensors"))
    save_file({k: v.contiguous() for k, v in taesd.taesd_decoder.state_dict().items()}, str(folder / "taesdxl_decoder.safetensors"))


def face_photo(height: int = 256, width: int = 256) -> torch.Tensor:
    """IMAGE [1,H,W,3] with one face the synthetic detector finds."""
    return paint_face(blank_images(height, width), width // 4, height // 5, width // 2, height * 3 // 5)


def group_photo(height: int = 256, width: int = 512) -> torch.Tensor:
    """IMAGE [1,H,W,3] with two faces side by side that the synthetic detector finds (sizes and gap within its limits)."""
    image = paint_face(blank_images(height, width), width * 5 // 32, height * 9 // 32, width * 9 // 64, height * 21 // 64)
    return paint_face(image, width * 5 // 8, height * 5 // 16, width // 8, height * 19 // 64, blue=230)


@functools.cache
def write_graph_models(base: str) -> GraphModels:
    base_path = Path(base)
    register_tiny_sdxl()
    files = build_all(base)
    models = base_path / "models"
    build_model_pack(models / "insightface")
    _write_taesdxl(models)
    photo = base_path / "input" / "face.png"
    photo.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((face_photo()[0].numpy() * 255).round().astype(np.uint8)).save(photo)
    group = base_path / "input" / "group.png"
    Image.fromarray((group_photo()[0].numpy() * 255).round().astype(np.uint8)).save(group)
    return GraphModels(base=base_path, unet_name=files.sdxl_unet.name, controlnet_name=files.sdxl_controlnet.name,
                       sd15_unet_name=files.sd15_unet.name, sd15_controlnet_name=files.sd15_controlnet.name,
                       adapter_name=files.adapter_bin.name, face_image=photo, group_image=group)


def run_v3(node_id: str, **inputs):
    """Execute one of the pack's V3 nodes in-process, as ComfyUI does; returns its outputs tuple."""
    import nodes as comfy_nodes

    return comfy_nodes.NODE_CLASS_MAPPINGS[node_id].execute(**inputs).args


def load_graph(base: str, size: int, seed: int) -> dict:
    """Every object of a basic InstantID graph, loaded through the real nodes, plus seeded text-free
    conditioning for a ``size`` x ``size`` image: unet, control_net, vae, adapter, analyzer, faces, positive, negative."""
    import nodes as comfy_nodes

    n = comfy_nodes.NODE_CLASS_MAPPINGS
    models = write_graph_models(base)
    analyzer = run_v3("InstantIDFaceAnalyzerLoader", model_pack="antelopev2", provider="CPU", det_size=640)[0]
    faces, _ = run_v3("InstantIDFaceAnalyze", face_analyzer=analyzer, image=face_photo(), face_choice="largest",
                      face_index=0, no_face_policy="error", weights="")
    gen = torch.Generator().manual_seed(seed)
    opts = {"width": size, "height": size}
    positive = [[torch.randn(1, 77, 2048, generator=gen), {"pooled_output": torch.randn(1, 1280, generator=gen), **opts}]]
    negative = [[torch.randn(1, 77, 2048, generator=gen), {"pooled_output": torch.randn(1, 1280, generator=gen), **opts}]]
    return dict(models=models, unet=n["UNETLoader"]().load_unet(models.unet_name, "default")[0],
                control_net=n["ControlNetLoader"]().load_controlnet(models.controlnet_name)[0],
                vae=n["VAELoader"]().load_vae("taesdxl")[0],
                adapter=run_v3("InstantIDLoader", instantid_file=models.adapter_name)[0],
                analyzer=analyzer, faces=faces, positive=positive, negative=negative, generator=gen)
