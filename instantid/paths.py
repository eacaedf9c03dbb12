"""Model folders the pack registers with ComfyUI, keeping a user's extra_model_paths.yaml entries."""

from __future__ import annotations

import os

ADAPTER_FOLDER = "instantid"
ADAPTER_EXTENSIONS = {".bin", ".safetensors", ".pt", ".pth", ".ckpt"}


def register_folder(name: str, default_subdir: str, extensions: set[str]) -> None:
    """Add ``models/<default_subdir>`` under ``name``; entries from extra_model_paths.yaml stay (and come first if they did)."""
    import folder_paths

    default = os.path.join(folder_paths.models_dir, default_subdir)
    if name in folder_paths.folder_names_and_paths:
        paths, exts = folder_paths.folder_names_and_paths[name]
        if default not in paths:
            paths.append(default)
        folder_paths.folder_names_and_paths[name] = (paths, set(exts) | extensions)
    else:
        folder_paths.folder_names_and_paths[name] = ([default], set(extensions))


def register_adapter_folder() -> None:
    register_folder(ADAPTER_FOLDER, ADAPTER_FOLDER, ADAPTER_EXTENSIONS)
