"""Find the ComfyUI that hosts the pack, in the order the tests and `make run` use.

1. ``INSTANTID_COMFYUI`` (a ComfyUI checkout with ``main.py``),
2. the ComfyUI around the pack (``<ComfyUI>/custom_nodes/<pack>``),
3. the pinned copy made by ``scripts/bootstrap.sh`` in ``.host/ComfyUI``.

Run as a script it prints the path (``--describe`` adds how it was found).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent
PINNED_HOST = PACK_DIR / ".host" / "ComfyUI"
ENV_VAR = "INSTANTID_COMFYUI"


def _is_comfyui(path: Path) -> bool:
    return (path / "main.py").is_file() and (path / "comfy").is_dir() and (path / "folder_paths.py").is_file()


def find_host() -> tuple[Path, str]:
    """Return (ComfyUI directory, how it was found); raise FileNotFoundError with the fix."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        path = Path(explicit).expanduser().resolve()
        if not _is_comfyui(path):
            raise FileNotFoundError(f"{ENV_VAR}={explicit} is not a ComfyUI checkout (no main.py / comfy/ there).")
        return path, f"${ENV_VAR}"
    if PACK_DIR.parent.name == "custom_nodes" and _is_comfyui(PACK_DIR.parent.parent):
        return PACK_DIR.parent.parent, "surrounding ComfyUI"
    if _is_comfyui(PINNED_HOST):
        return PINNED_HOST, "pinned ComfyUI from scripts/bootstrap.sh"
    raise FileNotFoundError(
        "No ComfyUI host found: the pack is not inside <ComfyUI>/custom_nodes/, "
        f"{ENV_VAR} is not set, and {PINNED_HOST} does not exist. Run `make env` (scripts/bootstrap.sh)."
    )


def host_version(path: Path) -> str:
    version_file = path / "comfyui_version.py"
    if version_file.is_file():
        match = re.search(r"__version__\s*=\s*[\"']([^\"']+)", version_file.read_text())
        if match:
            return match.group(1)
    return "unknown"


if __name__ == "__main__":
    host, how = find_host()
    if "--describe" in sys.argv:
        print(f"ComfyUI {host_version(host)} at {host} ({how})")
    else:
        print(host)
