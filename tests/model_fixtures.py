"""Session-scoped pytest fixtures for the tiny real-topology models (see ``tiny_models``).

Use from a test module with ``from model_fixtures import *  # noqa`` (or,
once the root conftest lists ``pytest_plugins = ["model_fixtures"]``, just by
name). Files are built once per session under the ComfyUI base directory the
test host uses, so ComfyUI's folder lookups (``diffusion_models``,
``controlnet``, ``instantid``) find them too.
"""

from __future__ import annotations

import functools

import pytest
import tiny_models

# Loads are cached per process as well, so a module that still star-imports these
# fixtures after the conftest lists this plugin (pytest then sees two session
# fixtures of the same name) gets the same objects instead of loading twice.
_load_unet = functools.cache(tiny_models.load_unet)
_load_controlnet = functools.cache(tiny_models.load_controlnet)


@functools.cache
def _load_adapter(path):
    from instantid.adapter import load_adapter

    return load_adapter(str(path))

__all__ = [
    "tiny_files", "tiny_sdxl", "tiny_identitynet", "tiny_sd15", "tiny_sd15_controlnet",
    "tiny_adapter", "tiny_adapter_sd", "diffusers_unet", "diffusers_controlnet",
]


@pytest.fixture(scope="session")
def tiny_files(base_dir) -> tiny_models.TinyFiles:
    """Paths of every tiny file plus the in-memory diffusers models they were made from."""
    tiny_models.register_tiny_sdxl()
    yield tiny_models.build_all(str(base_dir))
    # Drop the loaded models while ComfyUI is still intact (their finalisers need it).
    for cached in (_load_unet, _load_controlnet, _load_adapter):
        cached.cache_clear()


@pytest.fixture(scope="session")
def tiny_sdxl(tiny_files):
    """The tiny SDXL UNet as a ComfyUI ModelPatcher (comfy.sd.load_diffusion_model). Clone before changing."""
    return _load_unet(tiny_files.sdxl_unet)


@pytest.fixture(scope="session")
def tiny_identitynet(tiny_files):
    """The tiny IdentityNet-topology ControlNet (comfy.controlnet.load_controlnet, ldm layout)."""
    return _load_controlnet(tiny_files.sdxl_controlnet)


@pytest.fixture(scope="session")
def tiny_sd15(tiny_files):
    """A tiny SD1.5-topology UNet (context 768) as a ModelPatcher."""
    return _load_unet(tiny_files.sd15_unet)


@pytest.fixture(scope="session")
def tiny_sd15_controlnet(tiny_files):
    """A tiny SD1.5 ControlNet (context 768)."""
    return _load_controlnet(tiny_files.sd15_controlnet)


@pytest.fixture(scope="session")
def tiny_adapter(tiny_files):
    """instantid.adapter.load_adapter on the tiny ip-adapter.bin (real Resampler, K/V for the tiny UNet)."""
    return _load_adapter(tiny_files.adapter_bin)


@pytest.fixture(scope="session")
def tiny_adapter_sd(tiny_files) -> dict:
    """The adapter's nested state dict as saved: {'image_proj': {...}, 'ip_adapter': {...}}."""
    return tiny_files.adapter_sd


@pytest.fixture(scope="session")
def diffusers_unet(tiny_files):
    """The diffusers UNet2DConditionModel the tiny SDXL file was converted from (same weights)."""
    return tiny_files.diffusers_unet


@pytest.fixture(scope="session")
def diffusers_controlnet(tiny_files):
    """The diffusers ControlNetModel the tiny IdentityNet file was converted from (same weights)."""
    return tiny_files.diffusers_controlnet
