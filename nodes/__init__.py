"""Registers the pack's nodes with ComfyUI (V3 extension)."""

from __future__ import annotations

import logging

from comfy_api.latest import ComfyExtension, io

from ..instantid.paths import register_adapter_folder
from .core_nodes import CORE_NODES
from .doctor_node import DOCTOR_NODES
from .web_routes import register as register_web_routes

log = logging.getLogger(__name__)

register_adapter_folder()
register_web_routes()


def _face_nodes() -> list[type[io.ComfyNode]]:
    try:
        from .face_fix_nodes import FACE_FIX_NODES
        from .face_nodes import FACE_NODES
        from .quick_nodes import QUICK_NODES
    except ImportError as exc:  # a broken optional dependency must not take the core nodes down
        log.warning("InstantID face nodes unavailable: %s", exc)
        return []
    return [*FACE_NODES, *QUICK_NODES, *FACE_FIX_NODES]


def _keypoint_nodes() -> list[type[io.ComfyNode]]:
    try:
        from .keypoint_nodes import KEYPOINT_NODES
    except ImportError as exc:  # OpenCV missing or broken: the other nodes still load
        log.warning("InstantID keypoint editor nodes unavailable: %s", exc)
        return []
    return KEYPOINT_NODES


def _group_nodes() -> list[type[io.ComfyNode]]:
    try:
        from .group_nodes import GROUP_NODES
    except ImportError as exc:  # same optional dependencies as the face nodes (OpenCV)
        log.warning("InstantID group nodes unavailable: %s", exc)
        return []
    return GROUP_NODES


class InstantIDExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*CORE_NODES, *_face_nodes(), *_keypoint_nodes(), *_group_nodes(), *DOCTOR_NODES]


async def comfy_entrypoint() -> InstantIDExtension:
    return InstantIDExtension()
