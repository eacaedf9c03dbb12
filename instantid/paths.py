"""Model folders the pack registers with ComfyUI, keeping a user's extra_model_paths.yaml entries."""

from __future__ import annotations

import os
from pathlib import Path

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


def folder_list(name: str) -> list[str]:
    """The folders ComfyUI searches for ``name`` (extra_model_paths.yaml entries included), in its order."""
    import folder_paths

    if name == ADAPTER_FOLDER and name not in folder_paths.folder_names_and_paths:
        register_adapter_folder()
    if name not in folder_paths.folder_names_and_paths:
        return []
    return list(folder_paths.get_folder_paths(name))


def folders_text(name: str) -> str:
    """``folder_list`` for a message: the first folder, then the others it also searches."""
    folders = folder_list(name)
    if not folders:
        return f"models/{name} (not registered with ComfyUI)"
    return folders[0] + (f" (also searched: {', '.join(folders[1:])})" if len(folders) > 1 else "")


def download_models_dir() -> str | None:
    """The ``--models-dir`` the download script needs to reach this ComfyUI's models folder; None when its default is right.

    The script defaults to ``<ComfyUI>/models`` around the pack (or the dev host's
    ``.host/base/models``); a ComfyUI started with ``--base-directory`` keeps its models elsewhere.
    """
    try:
        import folder_paths
    except ImportError:  # the engine used without ComfyUI: the script's default is all there is
        return None

    pack = Path(__file__).resolve().parent.parent
    default = pack.parent.parent / "models" if pack.parent.name == "custom_nodes" else pack / ".host" / "base" / "models"
    actual = Path(folder_paths.models_dir)
    return None if actual.resolve() == default.resolve() else str(actual)


def adapter_download_hint() -> str:
    """The download script's command for the adapter, aimed at this ComfyUI's models folder."""
    from .published import download_hint

    return download_hint("adapter", download_models_dir())
