"""InstantID for ComfyUI: registration only; the engine is in instantid/, the nodes in nodes/."""

from .nodes import comfy_entrypoint

WEB_DIRECTORY = "./js"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
